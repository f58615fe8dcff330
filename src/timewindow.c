/*-------------------------------------------------------------------------
 *
 * timewindow.c
 *	  Time windows and rate limits: quiet hours in the recipient's zone and
 *	  the rolling per-sequence send limits.
 *
 * Both are pure computations on timestamps; executor.c feeds them the
 * recipient's zone, the sequence's settings and the send times it loaded
 * from journey.messages, and applies the results.
 *
 * Quiet hours are a daily window [start, end) of local wall-clock time,
 * crossing midnight when start > end.  A send due inside it is deferred to
 * the window's end on the right local day, converted back to an instant
 * with the zone's rules of that day, so the deferral is DST-correct.
 *
 * A rate window counts the send_after of a sequence's messages in the
 * half-open interval (t - length, t].  A message at m stops counting at
 * m + length, which is therefore the moment its slot frees.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "datatype/timestamp.h"
#include "pgtime.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "journey.h"

/* Local wall-clock fields of t in tz; raises 22008 for out-of-range. */
static void
local_fields(TimestampTz t, pg_tz *tz, struct pg_tm *tm, fsec_t *fsec)
{
	int			tzoff;

	if (timestamp2tm(t, &tzoff, tm, fsec, NULL, tz) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
}

bool
journey_quiet_hours_end(TimestampTz t, pg_tz *tz, TimeADT start, TimeADT end,
						TimestampTz *window_end)
{
	struct pg_tm tm;
	fsec_t		fsec;
	TimeADT		tod;
	bool		inside;
	bool		next_day = false;
	int			jd;
	int			tzoff;
	Timestamp	local_end;

	if (start == end)
		return false;
	local_fields(t, tz, &tm, &fsec);
	tod = ((((int64) tm.tm_hour * MINS_PER_HOUR) + tm.tm_min) * SECS_PER_MINUTE +
		   tm.tm_sec) * USECS_PER_SEC + fsec;

	if (start < end)
		inside = tod >= start && tod < end;
	else
	{
		/* Crossing midnight: the evening part ends on the following day. */
		inside = tod >= start || tod < end;
		next_day = tod >= start;
	}
	if (!inside)
		return false;

	jd = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) + (next_day ? 1 : 0);
	j2date(jd, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	tm.tm_hour = end / USECS_PER_HOUR;
	tm.tm_min = (end / USECS_PER_MINUTE) % MINS_PER_HOUR;
	tm.tm_sec = (end / USECS_PER_SEC) % SECS_PER_MINUTE;
	fsec = end % USECS_PER_SEC;
	tm.tm_isdst = -1;

	/*
	 * The offset in force at that local time on that day, not the current
	 * one: the window may end on the other side of a DST change.  A local
	 * time the change skips resolves as Postgres resolves it for input.
	 */
	tzoff = DetermineTimeZoneOffset(&tm, tz);
	if (tm2timestamp(&tm, fsec, &tzoff, &local_end) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	*window_end = (TimestampTz) local_end;
	return true;
}

void
journey_format_local(StringInfo out, TimestampTz t, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;

	local_fields(t, tz, &tm, &fsec);
	appendStringInfo(out, "%04d-%02d-%02d %02d:%02d",
					 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min);
	if (tm.tm_sec != 0 || fsec != 0)
		appendStringInfo(out, ":%02d", tm.tm_sec);
}

void
journey_format_time(StringInfo out, TimeADT t)
{
	appendStringInfo(out, "%02d:%02d",
					 (int) (t / USECS_PER_HOUR),
					 (int) ((t / USECS_PER_MINUTE) % MINS_PER_HOUR));
	if (t % USECS_PER_MINUTE != 0)
		appendStringInfo(out, ":%02d", (int) ((t / USECS_PER_SEC) % SECS_PER_MINUTE));
}

/* ---------- rate windows ---------- */

void
journey_rate_init(JourneyRateWindow *w, int32 per_hour, int32 per_day)
{
	w->per_hour = per_hour;
	w->per_day = per_day;
	w->ntimes = 0;
	w->capacity = 16;
	w->times = palloc(sizeof(TimestampTz) * w->capacity);
}

/* Index of the first time > t. */
static int
upper_bound(const JourneyRateWindow *w, TimestampTz t)
{
	int			lo = 0;
	int			hi = w->ntimes;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (w->times[mid] <= t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void
journey_rate_add(JourneyRateWindow *w, TimestampTz t)
{
	int			pos;

	if (w->ntimes == w->capacity)
	{
		w->capacity *= 2;
		w->times = repalloc(w->times, sizeof(TimestampTz) * w->capacity);
	}
	/* Sends are mostly appended in order: the common case moves nothing. */
	pos = upper_bound(w, t);
	if (pos < w->ntimes)
		memmove(&w->times[pos + 1], &w->times[pos],
				sizeof(TimestampTz) * (w->ntimes - pos));
	w->times[pos] = t;
	w->ntimes++;
}

/*
 * When the window of the given length ending at t holds limit or more
 * sends, returns true with *free_at the first moment it holds limit - 1,
 * and *count what it holds at t.
 */
static bool
window_full(const JourneyRateWindow *w, TimestampTz t, int64 length_us,
			int32 limit, TimestampTz *free_at, int *count)
{
	int			lo;
	int			n;

	if (limit <= 0)
		return false;
	lo = upper_bound(w, t - length_us);
	n = upper_bound(w, t) - lo;
	if (n < limit)
		return false;
	*count = n;
	*free_at = w->times[lo + (n - limit)] + length_us;
	return true;
}

bool
journey_rate_defer(const JourneyRateWindow *w, TimestampTz t,
				   TimestampTz *run_at, JourneyRateHit *hit)
{
	TimestampTz at = t;
	bool		moved;

	memset(hit, 0, sizeof(JourneyRateHit));

	/*
	 * Move to the first moment both windows have a free slot; each move goes
	 * strictly forward, past at least one counted send, so this ends.
	 */
	do
	{
		TimestampTz free_at;
		int			n;

		moved = false;
		if (window_full(w, at, USECS_PER_HOUR, w->per_hour, &free_at, &n))
		{
			if (!hit->hour)
				hit->hour_count = n;
			hit->hour = true;
			at = free_at;
			moved = true;
		}
		if (window_full(w, at, USECS_PER_DAY, w->per_day, &free_at, &n))
		{
			if (!hit->day)
				hit->day_count = n;
			hit->day = true;
			at = free_at;
			moved = true;
		}
	} while (moved);

	*run_at = at;
	return hit->hour || hit->day;
}
