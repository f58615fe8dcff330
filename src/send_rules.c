/*-------------------------------------------------------------------------
 *
 * send_rules.c
 *	  Two rules of a send step added in 0.3 (SPEC section 4), called by the
 *	  executor between suppressions and rate limits:
 *	  - frequency caps: businesses.frequency_caps maps a message purpose to
 *	    an interval; a customer gets at most one message of that purpose,
 *	    from any journey of the business, per interval;
 *	  - the SMS window (journey.sms_window, default 08:00-21:00): an SMS
 *	    goes out only inside it, in the recipient's local time.
 *	  Also the caps' validator (for the CHECK constraint) and
 *	  journey.set_frequency_caps, and the GUCs of opt-outs.
 *
 * A cap looks at the customer's messages of that purpose, and at those
 * this executor call has decided to queue but not yet written (two
 * journeys triggered by one event run in the same call).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "journey.h"
#include "optout.h"

#define CAPS_MAX_ENTRIES	100
#define CAPS_MAX_PURPOSE	200

char	   *journey_sms_window = NULL;
static TimeADT sms_window_start;
static TimeADT sms_window_end;
static bool sms_window_on = false;

PG_FUNCTION_INFO_V1(journey_frequency_caps_valid);
PG_FUNCTION_INFO_V1(journey_set_frequency_caps);

/* ---------------------------------------------------------------- GUCs */

/* "HH:MM" into *t; false when it is not a time of day. */
static bool
parse_hhmm(const char *s, int len, TimeADT *t)
{
	int			h;
	int			m;

	if (len != 5 || s[2] != ':' || !isdigit((unsigned char) s[0]) ||
		!isdigit((unsigned char) s[1]) || !isdigit((unsigned char) s[3]) ||
		!isdigit((unsigned char) s[4]))
		return false;
	h = (s[0] - '0') * 10 + (s[1] - '0');
	m = (s[3] - '0') * 10 + (s[4] - '0');
	if (h > 23 || m > 59)
		return false;
	*t = ((int64) h * MINS_PER_HOUR + m) * USECS_PER_MINUTE;
	return true;
}

static bool
parse_window(const char *s, TimeADT *start, TimeADT *end)
{
	const char *dash = strchr(s, '-');

	return dash != NULL && parse_hhmm(s, dash - s, start) &&
		parse_hhmm(dash + 1, strlen(dash + 1), end) && *start != *end;
}

static bool
check_sms_window(char **newval, void **extra, GucSource source)
{
	TimeADT		s;
	TimeADT		e;

	if (*newval == NULL || (*newval)[0] == '\0' || parse_window(*newval, &s, &e))
		return true;
	GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
	GUC_check_errdetail("journey.sms_window is \"HH:MM-HH:MM\" (local time of the recipient), e.g. \"08:00-21:00\", or '' for none.");
	return false;
}

static void
assign_sms_window(const char *newval, void *extra)
{
	sms_window_on = newval != NULL && newval[0] != '\0' &&
		parse_window(newval, &sms_window_start, &sms_window_end);
}

static bool
check_unsubscribe_url(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;

	if (v == NULL || v[0] == '\0')
		return true;
	if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0)
	{
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errdetail("journey.unsubscribe_url must be an http:// or https:// URL.");
		return false;
	}
	for (const char *p = v; *p; p++)
		if ((unsigned char) *p <= ' ' || *p == 0x7f || *p == '<' || *p == '>' || *p == '"')
		{
			GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
			GUC_check_errdetail("journey.unsubscribe_url may not contain spaces, control characters, <, > or \".");
			return false;
		}
	return true;
}

void
journey_optout_define_gucs(void)
{
	DefineCustomStringVariable("journey.unsubscribe_url",
							   "Base URL of the one-click unsubscribe link (List-Unsubscribe, {{unsubscribe_url}}).",
							   "journey appends ?token=... ; empty: emails carry no unsubscribe link.",
							   &journey_unsubscribe_url,
							   "",
							   PGC_SUSET, 0,
							   check_unsubscribe_url, NULL, NULL);
	DefineCustomStringVariable("journey.sms_window",
							   "Local hours of the recipient in which an SMS may be sent, as HH:MM-HH:MM.",
							   "An SMS due outside it waits for its next start; empty: no window.",
							   &journey_sms_window,
							   "08:00-21:00",
							   PGC_SUSET, 0,
							   check_sms_window, assign_sms_window, NULL);
}

/* ---------------------------------------------------------- SMS window */

bool
journey_sms_window_defer(TimestampTz t, struct pg_tz *tz, TimestampTz *run_at)
{
	if (!sms_window_on)
		return false;
	/* Outside [start, end) is a quiet window [end, start). */
	return journey_quiet_hours_end(t, tz, sms_window_end, sms_window_start, run_at);
}

/* ------------------------------------------------------ frequency caps */

/* A positive interval, parsed as interval_in would, without raising. */
static bool
positive_interval(const char *s, Interval *span)
{
	char		workbuf[256];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	int			dterr;
	struct pg_itm_in itm_in;
	Interval	zero = {0};

	if (strlen(s) >= sizeof(workbuf) / 2)
		return false;
	memset(&itm_in, 0, sizeof(itm_in));
	dterr = ParseDateTime(s, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf);
	if (dterr == 0)
		dterr = DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE, &dtype, &itm_in);
	if (dterr == DTERR_BAD_FORMAT)
	{
		char	   *copy = pstrdup(s);

		memset(&itm_in, 0, sizeof(itm_in));
		dterr = DecodeISO8601Interval(copy, &dtype, &itm_in);
	}
	if (dterr != 0 || dtype != DTK_DELTA || itmin2interval(&itm_in, span) != 0)
		return false;
	return DatumGetBool(DirectFunctionCall2(interval_gt, IntervalPGetDatum(span),
											IntervalPGetDatum(&zero)));
}

/* NULL when caps is valid, else what is wrong with it. */
static char *
caps_problem(Jsonb *caps)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n = 0;
	char	   *key = NULL;

	if (!JB_ROOT_IS_OBJECT(caps) || JB_ROOT_IS_SCALAR(caps))
		return pstrdup("frequency_caps must be a JSON object");
	it = JsonbIteratorInit(&caps->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			if (++n > CAPS_MAX_ENTRIES)
				return psprintf("frequency_caps has more than %d purposes", CAPS_MAX_ENTRIES);
			if (v.val.string.len == 0 || v.val.string.len > CAPS_MAX_PURPOSE)
				return psprintf("a purpose in frequency_caps must be 1 to %d characters",
								CAPS_MAX_PURPOSE);
		}
		else if (tok == WJB_VALUE)
		{
			Interval	span;
			char	   *s;

			if (v.type != jbvString)
				return psprintf("frequency_caps.%s is not an interval string", key);
			s = pnstrdup(v.val.string.val, v.val.string.len);
			if (!positive_interval(s, &span))
				return psprintf("frequency_caps.%s is not an interval > 0", key);
		}
	}
	return NULL;
}

Datum
journey_frequency_caps_valid(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(caps_problem(PG_GETARG_JSONB_P(0)) == NULL);
}

Datum
journey_set_frequency_caps(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		business_id;
	Jsonb	   *caps;
	char	   *problem;
	Oid			types[2] = {UUIDOID, JSONBOID};
	Datum		values[2];
	JourneyUserSwitch saved;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("business id and caps must not be null"),
				 errhint("Pass '{}' for no caps.")));
	business_id = PG_GETARG_DATUM(0);
	caps = PG_GETARG_JSONB_P(1);
	problem = caps_problem(caps);
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid frequency caps"),
				 errdetail("%s.", problem),
				 errhint("Map each message purpose to an interval > 0, e.g. {\"review_request\": \"30 days\"}.")));
	journey_require_member(business_id);
	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	journey_require_business_exists(business_id);
	values[0] = business_id;
	values[1] = JsonbPGetDatum(caps);
	if (journey_spi_kept(&plan, "UPDATE journey.businesses SET frequency_caps = $2"
						 " WHERE id OPERATOR(pg_catalog.=) $1",
						 2, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update frequency caps");
	SPI_finish();
	journey_restore_user(&saved);
	PG_RETURN_VOID();
}

/* Messages this executor call decided to queue, not yet written. */
typedef struct PendingSend
{
	pg_uuid_t	business_id;
	pg_uuid_t	customer_id;
	char	   *purpose;
	TimestampTz at;
} PendingSend;

static List *pending = NIL;

/* Businesses known to have no caps at all, so their sends cost no query. */
static List *uncapped = NIL;
static LocalTransactionId pending_lxid = InvalidLocalTransactionId;
static TimestampTz pending_statement = 0;

/* The lists belong to one executor call: one top-level statement. */
static void
pending_reset_if_stale(void)
{
	if (pending_lxid != MyProc->lxid ||
		pending_statement != GetCurrentStatementStartTimestamp())
	{
		pending = NIL;
		uncapped = NIL;
		pending_lxid = MyProc->lxid;
		pending_statement = GetCurrentStatementStartTimestamp();
	}
}

static bool
known_uncapped(Datum business_id)
{
	ListCell   *lc;

	foreach(lc, uncapped)
		if (memcmp(lfirst(lc), DatumGetUUIDP(business_id), sizeof(pg_uuid_t)) == 0)
			return true;
	return false;
}

static void
note_uncapped(Datum business_id)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	memcpy(id, DatumGetUUIDP(business_id), sizeof(pg_uuid_t));
	uncapped = lappend(uncapped, id);
	MemoryContextSwitchTo(old);
}

void
journey_frequency_cap_note(Datum business_id, Datum customer_id, const char *purpose,
						   TimestampTz at)
{
	MemoryContext old;
	PendingSend *p;

	if (purpose == NULL)
		return;
	pending_reset_if_stale();
	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc(sizeof(PendingSend));
	memcpy(&p->business_id, DatumGetUUIDP(business_id), sizeof(pg_uuid_t));
	memcpy(&p->customer_id, DatumGetUUIDP(customer_id), sizeof(pg_uuid_t));
	p->purpose = pstrdup(purpose);
	p->at = at;
	pending = lappend(pending, p);
	MemoryContextSwitchTo(old);
}

static const char *cap_sql =
"SELECT b.frequency_caps OPERATOR(pg_catalog.->>) $3,"
"       (SELECT m.id FROM journey.messages m"
"         WHERE m.business_id OPERATOR(pg_catalog.=) $1 AND m.customer_id OPERATOR(pg_catalog.=) $2"
"           AND m.message_purpose OPERATOR(pg_catalog.=) ($3)"
"           AND m.status OPERATOR(pg_catalog.<>) 'cancelled'"
"           AND m.send_after OPERATOR(pg_catalog.>) ($4 OPERATOR(pg_catalog.-)"
"               (b.frequency_caps OPERATOR(pg_catalog.->>) $3)::interval)"
"           AND m.send_after OPERATOR(pg_catalog.<=) $4"
"         ORDER BY m.send_after DESC LIMIT 1),"
"       (b.frequency_caps OPERATOR(pg_catalog.->>) $3)::interval"
"  FROM journey.businesses b"
" WHERE b.id OPERATOR(pg_catalog.=) $1"
"   AND b.frequency_caps OPERATOR(pg_catalog.?) $3";

static const char *has_caps_sql =
"SELECT 1 FROM journey.businesses b WHERE b.id OPERATOR(pg_catalog.=) $1"
"   AND b.frequency_caps OPERATOR(pg_catalog.<>) '{}'::jsonb";

bool
journey_frequency_cap_hit(Datum business_id, Datum customer_id, const char *purpose,
						  TimestampTz run_at, char **detail)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr has_caps_plan = NULL;
	Oid			types[4] = {UUIDOID, UUIDOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[4];
	bool		isnull;
	char	   *cap;
	Datum		span;
	ListCell   *lc;

	if (purpose == NULL)
		return false;
	/* Most businesses set no caps: one look per business and executor call. */
	pending_reset_if_stale();
	if (known_uncapped(business_id))
		return false;
	if (journey_spi_kept(&has_caps_plan, has_caps_sql, 1, types, &business_id, NULL,
						 true, 1) != SPI_OK_SELECT)
		elog(ERROR, "frequency cap look-up failed");
	if (SPI_processed == 0)
	{
		note_uncapped(business_id);
		return false;
	}
	values[0] = business_id;
	values[1] = customer_id;
	values[2] = CStringGetTextDatum(purpose);
	values[3] = TimestampTzGetDatum(run_at);
	if (journey_spi_kept(&plan, cap_sql, 4, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "frequency cap look-up failed");
	if (SPI_processed == 0)
		return false;			/* no cap for this purpose */
	cap = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
	{
		*detail = psprintf("%s message #%s lies within the frequency cap of %s",
						   purpose,
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
						   cap);
		return true;
	}

	span = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	pending_reset_if_stale();
	foreach(lc, pending)
	{
		PendingSend *p = lfirst(lc);
		TimestampTz since = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
																	TimestampTzGetDatum(run_at),
																	span));

		if (memcmp(&p->business_id, DatumGetUUIDP(business_id), sizeof(pg_uuid_t)) == 0 &&
			memcmp(&p->customer_id, DatumGetUUIDP(customer_id), sizeof(pg_uuid_t)) == 0 &&
			strcmp(p->purpose, purpose) == 0 && p->at > since && p->at <= run_at)
		{
			*detail = psprintf("a %s message queued earlier in this run lies within the frequency cap of %s",
							   purpose, cap);
			return true;
		}
	}
	return false;
}
