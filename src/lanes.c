/*-------------------------------------------------------------------------
 *
 * lanes.c
 *	  The sender's lane per provider: which claimed messages may start a
 *	  request now, and how many more each provider may be claimed for.
 *
 * journey.max_concurrency_per_provider caps the requests in flight to one
 * provider, so that a slow or hanging provider holds up no other.  If a
 * claim could take no more than that free room, every durable commit would
 * move at most that many messages, and one fast provider would be held to
 * a fraction of what the sender can do.  So a provider that answers
 * quickly is claimed for several rounds ahead: the messages beyond its cap
 * wait here, claimed, and start as its requests finish.  Only a provider
 * that has answered quickly is: a new one, or one whose last request was
 * slow, gets no more than its cap, so a hanging endpoint never fills the
 * sender with messages it cannot start.
 *
 * No claimed message may outlive its lease before its result is written,
 * or another pass could send it again.  A provider is claimed for at most
 * `rounds` times its cap, where `rounds` requests of http_timeout_ms each
 * fit in the lease with one to spare; even if every one of them hangs to
 * the time limit, the last starts in time.  A message that would still
 * start too late (a stalled database, a reload that shortened the lease)
 * is handed back for a retry instead of being sent.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "journey.h"
#include "sender.h"

/* A request that takes longer marks its provider slow... */
#define SLOW_REQUEST_MS 1000
/* ...for this long: it gets its cap and no more until then. */
#define SLOW_MEMORY_MS 60000
/* An idle lane is forgotten after this long (with what it proved). */
#define IDLE_MEMORY_MS 60000
/* Time a request needs beyond http_timeout_ms to have its result written. */
#define RESULT_MARGIN_MS 1000

typedef struct Lane
{
	char		provider_id[UUID_LEN * 2 + 5];
	int			in_flight;		/* requests started and not finished */
	int			n_waiting;		/* claimed, waiting for a free request */
	int			max_waiting;
	JourneyMessage **waiting;	/* oldest first, from `head` on */
	int			head;
	bool		answers_quickly;	/* its last request took under SLOW_REQUEST_MS */
	bool		filled;			/* reached its limit since it last asked for a claim */
	TimestampTz slow_until;
	TimestampTz last_used;
} Lane;

/* A few dozen providers at most: a list searched in order. */
static Lane *lanes = NULL;
static int	n_lanes = 0;
static int	max_lanes = 0;
static int	total_waiting = 0;
static int	next_lane = 0;		/* where the turn-taking of start goes on */

static int
rounds(void)
{
	int			r = (journey_lease_ms - journey_http_timeout_ms) / Max(1, journey_http_timeout_ms);

	return Max(1, r);
}

/* The most a lane may hold, in flight and waiting together. */
static int
lane_limit(const Lane *l, TimestampTz now)
{
	if (!l->answers_quickly || now < l->slow_until)
		return journey_max_concurrency_per_provider;
	return journey_max_concurrency_per_provider * rounds();
}

static Lane *
lane_of(const char *provider_id)
{
	for (int i = 0; i < n_lanes; i++)
		if (strcmp(lanes[i].provider_id, provider_id) == 0)
			return &lanes[i];
	if (n_lanes == max_lanes)
	{
		max_lanes = Max(16, max_lanes * 2);
		lanes = lanes == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(Lane) * max_lanes)
			: repalloc(lanes, sizeof(Lane) * max_lanes);
	}
	memset(&lanes[n_lanes], 0, sizeof(Lane));
	strlcpy(lanes[n_lanes].provider_id, provider_id, sizeof(lanes[n_lanes].provider_id));
	return &lanes[n_lanes++];
}

/* Drops the lanes with nothing in them and nothing to remember. */
static void
compact(TimestampTz now)
{
	int			j = 0;

	for (int i = 0; i < n_lanes; i++)
	{
		if (lanes[i].in_flight == 0 && lanes[i].n_waiting == 0 &&
			now >= TimestampTzPlusMilliseconds(lanes[i].last_used, IDLE_MEMORY_MS))
		{
			if (lanes[i].waiting)
				pfree(lanes[i].waiting);
			continue;
		}
		lanes[j++] = lanes[i];
	}
	n_lanes = j;
	if (next_lane >= n_lanes)
		next_lane = 0;
}

/* A claimed message joins its provider's line. */
void
journey_lanes_add(JourneyMessage *msg, TimestampTz claimed_at)
{
	Lane	   *l = lane_of(msg->provider_id);

	msg->claimed_at = claimed_at;
	if (l->head > 0 && l->head + l->n_waiting == l->max_waiting)
	{
		memmove(l->waiting, l->waiting + l->head, sizeof(JourneyMessage *) * l->n_waiting);
		l->head = 0;
	}
	if (l->n_waiting == l->max_waiting)
	{
		l->max_waiting = Max(16, l->max_waiting * 2);
		l->waiting = l->waiting == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(JourneyMessage *) * l->max_waiting)
			: repalloc(l->waiting, sizeof(JourneyMessage *) * l->max_waiting);
	}
	l->waiting[l->head + l->n_waiting++] = msg;
	total_waiting++;
	if (l->in_flight + l->n_waiting >= lane_limit(l, claimed_at))
		l->filled = true;
}

/*
 * The next message whose provider has a free request, or NULL: the lanes
 * take turns, and the total stays within journey.max_concurrency.  The
 * message counts as in flight from here on.  *too_late is set for one
 * whose lease no longer leaves time for its request: the caller hands it
 * back unsent.
 */
JourneyMessage *
journey_lanes_next(bool *too_late)
{
	TimestampTz now = GetCurrentTimestamp();

	*too_late = false;
	if (total_waiting == 0 || journey_transport_in_flight() >= journey_max_concurrency)
		return NULL;
	for (int k = 0; k < n_lanes; k++)
	{
		Lane	   *l = &lanes[(next_lane + k) % n_lanes];
		JourneyMessage *msg;

		if (l->n_waiting == 0 || l->in_flight >= journey_max_concurrency_per_provider)
			continue;
		msg = l->waiting[l->head++];
		if (--l->n_waiting == 0)
			l->head = 0;
		total_waiting--;
		l->in_flight++;
		next_lane = (next_lane + k + 1) % n_lanes;
		msg->started_at = now;
		*too_late = now > TimestampTzPlusMilliseconds(msg->claimed_at,
													  journey_lease_ms - journey_http_timeout_ms -
													  RESULT_MARGIN_MS);
		return msg;
	}
	return NULL;
}

/*
 * How little a lane that was full may hold before it is claimed for
 * again.  A lane claimed ahead waits until a quarter of its limit is
 * left, but never less than one round of requests, so its provider stays
 * at its cap while the claim runs: each commit then moves about three
 * quarters of the limit (60 messages at the defaults; with half, 40, and
 * the claim's fixed cost per commit made W4 some 20% slower).  A lane at
 * its cap alone (a new or slow provider) waits for half of it, so that a
 * slow provider is not left with a few requests in flight.
 */
static int
refill_below(int limit)
{
	if (limit > journey_max_concurrency_per_provider)
		return Max(journey_max_concurrency_per_provider, limit / 4);
	return limit / 2;
}

/*
 * A request ends, or never started (requested = false: it tells nothing
 * of how the provider answers).  Returns true when its provider had been
 * full (since the last time this said so) and is now down to
 * refill_below: time to claim for it, in a batch rather than one message
 * per finished request.  The lane remembers having been full: a lane
 * rarely goes from full to refill_below in one finished request.
 */
bool
journey_lanes_done(JourneyMessage *msg, bool requested)
{
	TimestampTz now = GetCurrentTimestamp();
	Lane	   *l = lane_of(msg->provider_id);
	int			limit;
	bool		refill;

	l->in_flight--;
	l->last_used = now;
	if (requested)
	{
		l->answers_quickly = now <= TimestampTzPlusMilliseconds(msg->started_at, SLOW_REQUEST_MS);
		if (!l->answers_quickly)
			l->slow_until = TimestampTzPlusMilliseconds(now, SLOW_MEMORY_MS);
	}
	limit = lane_limit(l, now);
	refill = l->filled && l->in_flight + l->n_waiting <= refill_below(limit);
	if (refill)
		l->filled = false;
	if (l->in_flight == 0 && l->n_waiting == 0)
		compact(now);
	return refill;
}

/*
 * How many more messages the sender may claim, all lanes together: what
 * it holds claimed and unfinished (in flight or waiting) stays within
 * twice journey.max_concurrency, which bounds its memory.
 */
int
journey_lanes_claim_room(void)
{
	return 2 * journey_max_concurrency - journey_transport_in_flight() - total_waiting;
}

/*
 * The claim's room arguments: the providers with a lane, how many more
 * each may be claimed for, and the room of any other provider (not yet
 * seen to answer quickly: its cap).
 */
void
journey_lanes_room_args(Datum *args)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum	   *ids = palloc(sizeof(Datum) * Max(1, n_lanes));
	Datum	   *rooms = palloc(sizeof(Datum) * Max(1, n_lanes));
	int			dims[1] = {n_lanes};
	int			lbs[1] = {1};

	for (int i = 0; i < n_lanes; i++)
	{
		ids[i] = CStringGetTextDatum(lanes[i].provider_id);
		rooms[i] = Int32GetDatum(Max(0, lane_limit(&lanes[i], now) -
									 lanes[i].in_flight - lanes[i].n_waiting));
	}
	/* Outside a transaction too: no catalog look-up, the types are known. */
	args[0] = PointerGetDatum(construct_md_array(ids, NULL, 1, dims, lbs, TEXTOID,
												 -1, false, TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(rooms, n_lanes, INT4OID, sizeof(int32), true,
											  TYPALIGN_INT));
	args[2] = Int32GetDatum(journey_max_concurrency_per_provider);
}
