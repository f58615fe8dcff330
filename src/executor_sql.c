/*-------------------------------------------------------------------------
 *
 * executor_sql.c
 *	  Every statement the executor runs, as kept prepared plans: the claim,
 *	  the loads (steps, rate windows, events) and the three set-based
 *	  statements over arrays that apply a call's results.
 *
 * executor.c decides; this file reads what it decides on and writes what it
 * decided.  All statements are parameterised and schema-qualified; the
 * function's declaration pins search_path, so operators resolve to
 * pg_catalog's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "executor_private.h"

/* Kept plans, prepared on first use in a backend. */
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr claim_generic_plan = NULL;	/* one business due: see claim_fair */
static SPIPlanPtr claim_plan_before_0_3 = NULL;
static SPIPlanPtr claim_one_plan = NULL;
static SPIPlanPtr due_businesses_plan = NULL;
static SPIPlanPtr steps_plan = NULL;
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr rate_plan = NULL;
static SPIPlanPtr events_plan = NULL;
static SPIPlanPtr update_plan = NULL;
static SPIPlanPtr messages_plan = NULL;
static SPIPlanPtr log_plan = NULL;

/*
 * The claim.  Paused sequences' enrollments are left where they are.  The
 * context is built here, once per enrollment, in the shape render_template
 * documents.  search_path is pinned by the function's declaration.
 *
 * The customer, business and sequence rows are held FOR KEY SHARE, skipping
 * an enrollment whose row someone holds FOR UPDATE (an application's SELECT
 * ... FOR UPDATE, a tenant's DELETE in an open transaction): the foreign-key
 * checks of the messages and counters written later then find the lock
 * already taken and never wait on a tenant.  Such an enrollment stays
 * locked by this call, untouched, and is due again for the next one.
 *
 * The customer is probed by key, one enrollment at a time (the OFFSET 0
 * keeps the subquery from being flattened into a join): the planner,
 * taking each business's share as what may be claimed (the batch, 500),
 * hashed the claimed enrollments and read every customer of the
 * installation to find theirs, 50 ms a pass at 110k customers however few
 * were due, which held the sender's executor to a few passes a second.
 *
 * CLAIM_SQL's FROM is one of two: CLAIM_FAIR, a round of the fair claim
 * (exec_claim), or CLAIM_ONE, one enrollment for journey.simulate.
 */
#define CLAIM_SQL(VERSION_COLUMN, FROM) \
"SELECT k.id, k.business_id, k.sequence_id, k.customer_id," \
"       k.current_step_index, k.enrolled_at, k.trigger_event_id, k.next_run_at," \
"       k.meta, c.email, c.phone, COALESCE(c.timezone, b.timezone)," \
"       EXISTS (SELECT FROM journey.suppressions su" \
"                WHERE su.business_id = k.business_id" \
"                  AND su.channel = 'email' AND su.address = c.email)," \
"       EXISTS (SELECT FROM journey.suppressions su" \
"                WHERE su.business_id = k.business_id" \
"                  AND su.channel = 'sms' AND su.address = c.phone)," \
"       c.full_name, c.timezone, c.external_id, c.attributes," \
"       b.name, b.email, b.phone, b.google_review_url, b.timezone," \
"       k.sequence_version" \
"  FROM (" FROM(VERSION_COLUMN) ") k" \
"  CROSS JOIN LATERAL (SELECT c.* FROM journey.customers c" \
"   WHERE c.id = k.customer_id OFFSET 0) c" \
"  JOIN journey.businesses b ON b.id = k.business_id" \
"  JOIN journey.sequences s ON s.id = k.sequence_id" \
"   FOR KEY SHARE OF c, b, s SKIP LOCKED"

#define CLAIM_COLUMNS(VERSION_COLUMN) \
"SELECT e.id, e.business_id, e.sequence_id, e.customer_id," \
"       e.current_step_index, e.enrolled_at, e.trigger_event_id, e.meta," \
"       e.next_run_at, " VERSION_COLUMN \
"  FROM journey.sequence_enrollments e" \
" WHERE e.status = 'active' AND e.next_run_at <= $2" \
"   AND EXISTS (SELECT FROM journey.sequences s" \
"                WHERE s.id = e.sequence_id AND s.status = 'active')"

/*
 * One round of the fair claim: each business of $3 takes up to its share
 * ($4) of its own due enrollments, oldest first, after the key ($5, $6)
 * where the previous round left it ($1, the batch, is not used: the shares
 * add up to at most what is left of it); one index probe per business
 * (sequence_enrollments_business_due_idx), so no business's backlog is read
 * beyond its share.
 */
#define CLAIM_FAIR(VERSION_COLUMN) \
"  SELECT e.* FROM unnest($3::uuid[], $4::integer[], $5::timestamptz[], $6::uuid[])" \
"       AS q(business_id, share, after_at, after_id)" \
"  CROSS JOIN LATERAL (" CLAIM_COLUMNS(VERSION_COLUMN) \
"     AND e.business_id = q.business_id" \
"     AND (e.next_run_at, e.id) > (q.after_at, q.after_id)" \
"   ORDER BY e.next_run_at, e.id" \
"   LIMIT q.share" \
"     FOR UPDATE OF e SKIP LOCKED) e"

/* Enrollment $3, when due ($1 is 1). */
#define CLAIM_ONE(VERSION_COLUMN) \
CLAIM_COLUMNS(VERSION_COLUMN) " AND e.id = $3 LIMIT $1 FOR UPDATE OF e SKIP LOCKED"

static const char *claim_sql = CLAIM_SQL("e.sequence_version", CLAIM_FAIR);

/*
 * The same claim for a schema older than 0.3 (the new library runs before
 * ALTER EXTENSION UPDATE): every enrollment is on version 1, and there are
 * no step counters to add to.
 */
static const char *claim_sql_before_0_3 = CLAIM_SQL("1 AS sequence_version", CLAIM_FAIR);

/* One enrollment only: journey.simulate's (simulate.c). */
static const char *claim_one_sql = CLAIM_SQL("e.sequence_version", CLAIM_ONE);

/*
 * The businesses with due enrollments, the one with the oldest first: the
 * order in which the claim hands out what does not divide evenly.  One
 * index probe per business.
 */
static const char *due_businesses_sql =
"SELECT b.id FROM journey.businesses b"
" CROSS JOIN LATERAL (SELECT e.next_run_at FROM journey.sequence_enrollments e"
"   WHERE e.business_id = b.id AND e.status = 'active' AND e.next_run_at <= $1"
"   ORDER BY e.next_run_at LIMIT 1) d"
" ORDER BY d.next_run_at, b.id";

/* steps_sql's columns (1-based) */
typedef enum StepsCol
{
	STEPS_SEQUENCE_ID = 1,
	STEPS_BUSINESS_ID,
	STEPS_QUIET_START,
	STEPS_QUIET_END,
	STEPS_RATE_PER_HOUR,
	STEPS_RATE_PER_DAY,
	STEPS_STEP_INDEX,
	STEPS_KIND,
	STEPS_WAIT_MS,
	STEPS_PURPOSE,
	STEPS_MESSAGE_CONFIG,
	STEPS_BRANCH_CONFIG,
	STEPS_NEXT_STEP,
	STEPS_VERSION,
	STEPS_TEMPLATE_ID,
	STEPS_TEMPLATE_CHANNEL,
	STEPS_TEMPLATE_SUBJECT,
	STEPS_TEMPLATE_BODY
} StepsCol;

/*
 * The settings of the claimed enrollments' sequences and the steps of the
 * versions they are on ($1, $2: pairs of sequence and version), with the
 * templates' texts as they are now.
 */
static const char *steps_sql =
"SELECT s.id, s.business_id, s.quiet_hours_start, s.quiet_hours_end,"
"       s.rate_per_hour, s.rate_per_day,"
"       st.step_index, st.kind, st.wait_ms, st.message_purpose,"
"       st.message_config, st.branch_config, st.next_step_index,"
"       st.version, st.template_id, t.channel, t.subject, t.body"
"  FROM journey.sequences s"
"  LEFT JOIN (unnest($1::uuid[], $2::integer[]) AS w(sequence_id, version)"
"             JOIN journey.sequence_steps st ON st.sequence_id = w.sequence_id"
"              AND st.version = w.version)"
"    ON w.sequence_id = s.id"
"  LEFT JOIN journey.templates t ON t.id = st.template_id"
"   AND t.business_id = st.business_id"
" WHERE s.id = ANY ($1)"
" ORDER BY s.id, st.version, st.step_index";

/*
 * SKIP LOCKED: a sequence row someone else holds (another executor filling
 * the same window, update_sequence writing a new version, a tenant's open
 * UPDATE) is not waited for; its enrollments are left for a later call.
 */
static const char *lock_sql =
"SELECT s.id FROM journey.sequences s WHERE s.id = ANY ($1)"
" ORDER BY s.id FOR NO KEY UPDATE SKIP LOCKED";

static const char *rate_sql =
"SELECT m.sequence_id, m.send_after"
"  FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS w(business_id, sequence_id, since)"
"  JOIN journey.messages m ON m.business_id = w.business_id"
"   AND m.sequence_id = w.sequence_id AND m.send_after > w.since"
" WHERE m.status <> 'cancelled'"
" ORDER BY 1, 2";

static const char *events_sql =
"SELECT DISTINCT u.ord, ev.event_type"
"  FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::bigint[])"
"       WITH ORDINALITY AS u(business_id, customer_id, since, trigger_id, ord)"
"  JOIN journey.events ev ON ev.business_id = u.business_id"
"   AND ev.customer_id = u.customer_id AND ev.event_type = ANY ($5)"
"   AND ev.occurred_at >= u.since AND ev.occurred_at <= $6"
"   AND ev.id IS DISTINCT FROM u.trigger_id";

static const char *update_sql =
"UPDATE journey.sequence_enrollments e"
"   SET current_step_index = u.step, next_run_at = u.next_run_at,"
"       status = u.status, finished_at = u.finished_at,"
"       stop_reason = u.stop_reason, updated_at = now()"
"  FROM unnest($1::uuid[], $2::integer[], $3::timestamptz[], $4::text[],"
"              $5::timestamptz[], $6::text[])"
"       AS u(id, step, next_run_at, status, finished_at, stop_reason)"
" WHERE e.id = u.id";

static const char *messages_sql =
"INSERT INTO journey.messages (business_id, enrollment_id, sequence_id,"
"       step_index, customer_id, channel, message_purpose, to_address,"
"       subject, body, sequence_version, send_after)"
"SELECT u.*, $12"
"  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::integer[], $5::uuid[],"
"              $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],"
"              $11::integer[]) AS u"
"    ON CONFLICT (enrollment_id, step_index) DO NOTHING";

/*
 * messages_sql for the sender's own pass (journey_preclaim): each message
 * with an enabled provider goes in 'sending', claimed for the sender ($13,
 * lease $14 ms), while its provider's lane has room ($15/$16 list the
 * providers with a lane and their room, $17 is any other's) and the pass
 * has not claimed $18 yet; the rest go in 'queued' for the sender's
 * claim, as from any other caller.  The provider is the one the claim
 * would pick.  The executor's claim has just checked, in this
 * transaction, that the customer exists (it holds the row) and the address
 * is not suppressed: what the sender's claim checks again before sending
 * a message that waited in the queue.
 */
static const char *messages_preclaim_sql =
"WITH u AS ("
" SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::integer[], $5::uuid[],"
"                      $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],"
"                      $11::integer[]) WITH ORDINALITY"
"   AS u(business_id, enrollment_id, sequence_id, step_index, customer_id, channel,"
"        message_purpose, to_address, subject, body, sequence_version, ord)),"
" pick AS ("
" SELECT u.ord, p.id AS provider_id,"
"   row_number() OVER (PARTITION BY p.id ORDER BY u.ord) AS prn,"
"   row_number() OVER (ORDER BY u.ord) AS n"
"  FROM u CROSS JOIN LATERAL ("
"   SELECT p.id FROM journey.providers p"
"    WHERE p.enabled AND p.channel = u.channel"
"      AND (p.business_id = u.business_id OR p.business_id IS NULL)"
"    ORDER BY p.business_id NULLS LAST LIMIT 1) p"
"  WHERE $12 <= now()),"
" claimed AS ("
" SELECT k.ord FROM pick k"
"  WHERE k.n <= $18"
"    AND k.prn <= COALESCE((SELECT f.room"
"      FROM ROWS FROM (unnest($15::uuid[]), unnest($16::integer[])) AS f(pid, room)"
"     WHERE f.pid = k.provider_id), $17))"
"INSERT INTO journey.messages (business_id, enrollment_id, sequence_id,"
"       step_index, customer_id, channel, message_purpose, to_address,"
"       subject, body, sequence_version, send_after,"
"       status, attempts, claimed_by, lease_expires_at)"
"SELECT u.business_id, u.enrollment_id, u.sequence_id, u.step_index, u.customer_id,"
"       u.channel, u.message_purpose, u.to_address, u.subject, u.body,"
"       u.sequence_version, $12,"
"       CASE WHEN c.ord IS NULL THEN 'queued' ELSE 'sending' END,"
"       CASE WHEN c.ord IS NULL THEN 0 ELSE 1 END,"
"       CASE WHEN c.ord IS NOT NULL THEN $13 END,"
"       CASE WHEN c.ord IS NOT NULL THEN now() + $14 * interval '1 millisecond' END"
"  FROM u LEFT JOIN claimed c ON c.ord = u.ord"
" ORDER BY u.ord"
"    ON CONFLICT (enrollment_id, step_index) DO NOTHING"
" RETURNING id, status = 'sending'";

static const char *log_sql =
"INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index,"
"       outcome, detail, sequence_version, at)"
"SELECT u.*, $7"
"  FROM unnest($1::uuid[], $2::uuid[], $3::integer[], $4::text[], $5::text[],"
"              $6::integer[]) AS u";

static char *text_or_null(HeapTuple tup, TupleDesc desc, int col);

static void
run_plan(SPIPlanPtr plan, Datum *values, const char *nulls, int expected)
{
	int			rc = SPI_execute_plan(plan, values, nulls, false, 0);

	if (rc != expected)
		elog(ERROR, "journey executor statement failed: %s",
			 SPI_result_code_string(rc));
}

/* An array of uuid datums (pointers into tuples) */
static Datum
uuid_array(Datum *values, int n)
{
	return PointerGetDatum(construct_array(values, n, UUIDOID, UUID_LEN, false,
										   TYPALIGN_CHAR));
}

/* ---------- loading ---------- */

void
exec_load_sequences(ExecState *st)
{
	HASH_SEQ_STATUS hs;
	ExecSequence *seq;
	Datum	   *ids;
	Datum	   *versions;
	int			n = 0;
	int			npairs = 0;
	Oid			argtypes[2] = {UUIDARRAYOID, INT4ARRAYOID};
	Datum		args[2];
	SPITupleTable *tt;
	ExecSequence *cur = NULL;

	hash_seq_init(&hs, st->sequences);
	while ((seq = hash_seq_search(&hs)) != NULL)
		npairs += seq->nversions;
	ids = palloc(sizeof(Datum) * npairs);
	versions = palloc(sizeof(Datum) * npairs);
	hash_seq_init(&hs, st->sequences);
	while ((seq = hash_seq_search(&hs)) != NULL)
		for (int v = 0; v < seq->nversions; v++)
		{
			ids[n] = UUIDPGetDatum(&seq->id);
			versions[n++] = Int32GetDatum(seq->versions[v].version);
		}
	args[0] = uuid_array(ids, n);
	args[1] = PointerGetDatum(construct_array(versions, n, INT4OID, sizeof(int32), true,
											  TYPALIGN_INT));
	run_plan(journey_keep_plan(&steps_plan, steps_sql, 2, argtypes), args, NULL, SPI_OK_SELECT);
	tt = SPI_tuptable;

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = tt->vals[r];
		TupleDesc	desc = tt->tupdesc;
		bool		isnull;
		Datum		d;
		JourneyStep *step;
		ExecVersion *ver;
		char	   *kind;
		Jsonb	   *message_config;
		Jsonb	   *branch_config;

		d = SPI_getbinval(tup, desc, STEPS_SEQUENCE_ID, &isnull);
		if (cur == NULL || memcmp(&cur->id, DatumGetUUIDP(d), UUID_LEN) != 0)
		{
			Datum		qs;
			Datum		qe;
			bool		qs_null;
			bool		qe_null;

			cur = hash_search(st->sequences, DatumGetUUIDP(d), HASH_FIND, NULL);
			if (cur == NULL)
				elog(ERROR, "journey executor loaded a sequence it did not ask for");
			memcpy(&cur->business_id, DatumGetUUIDP(SPI_getbinval(tup, desc, STEPS_BUSINESS_ID, &isnull)),
				   UUID_LEN);
			qs = SPI_getbinval(tup, desc, STEPS_QUIET_START, &qs_null);
			qe = SPI_getbinval(tup, desc, STEPS_QUIET_END, &qe_null);
			cur->has_quiet = !qs_null && !qe_null &&
				DatumGetTimeADT(qs) != DatumGetTimeADT(qe);
			cur->quiet_start = qs_null ? 0 : DatumGetTimeADT(qs);
			cur->quiet_end = qe_null ? 0 : DatumGetTimeADT(qe);
			d = SPI_getbinval(tup, desc, STEPS_RATE_PER_HOUR, &isnull);
			cur->rate_per_hour = isnull ? 0 : DatumGetInt32(d);
			d = SPI_getbinval(tup, desc, STEPS_RATE_PER_DAY, &isnull);
			cur->rate_per_day = isnull ? 0 : DatumGetInt32(d);
		}

		d = SPI_getbinval(tup, desc, STEPS_STEP_INDEX, &isnull);
		if (isnull)
			continue;			/* a version without steps */
		ver = exec_find_version(cur, DatumGetInt32(SPI_getbinval(tup, desc, STEPS_VERSION, &isnull)));
		if (ver->nsteps == ver->capacity)
		{
			ver->capacity = ver->capacity ? ver->capacity * 2 : 8;
			ver->steps = ver->steps ?
				repalloc(ver->steps, sizeof(JourneyStep) * ver->capacity) :
				palloc(sizeof(JourneyStep) * ver->capacity);
		}
		step = &ver->steps[ver->nsteps++];
		memset(step, 0, sizeof(JourneyStep));
		step->step_index = DatumGetInt32(d);
		kind = TextDatumGetCString(SPI_getbinval(tup, desc, STEPS_KIND, &isnull));
		step->wait_ms = DatumGetInt64(SPI_getbinval(tup, desc, STEPS_WAIT_MS, &isnull));
		d = SPI_getbinval(tup, desc, STEPS_MESSAGE_CONFIG, &isnull);
		message_config = isnull ? NULL : DatumGetJsonbP(d);
		d = SPI_getbinval(tup, desc, STEPS_BRANCH_CONFIG, &isnull);
		branch_config = isnull ? NULL : DatumGetJsonbP(d);
		d = SPI_getbinval(tup, desc, STEPS_NEXT_STEP, &isnull);
		step->next_step = isnull ? STEP_FOLLOWING : DatumGetInt32(d);
		d = SPI_getbinval(tup, desc, STEPS_TEMPLATE_ID, &isnull);
		step->template_id = isnull ? NULL : DatumGetCString(DirectFunctionCall1(uuid_out, d));
		journey_step_compile(step, kind, message_config, branch_config);
		if (step->template_id)
			journey_step_compile_template(step, text_or_null(tup, desc, STEPS_TEMPLATE_CHANNEL),
										  text_or_null(tup, desc, STEPS_TEMPLATE_SUBJECT),
										  text_or_null(tup, desc, STEPS_TEMPLATE_BODY));
		/* The column is what the sequence's messages carry. */
		d = SPI_getbinval(tup, desc, STEPS_PURPOSE, &isnull);
		step->purpose = isnull ? NULL : TextDatumGetCString(d);
		if (step->kind == STEP_EMAIL || step->kind == STEP_SMS)
			cur->has_sends = true;
		if (step->cond && step->invalid == NULL)
			journey_condition_event_types(step->cond, &cur->event_types);
	}
}

/*
 * Locks the rate-limited sequences and loads the send times their windows
 * count.  The lock serialises the executors (the sender's and pg_cron's)
 * per sequence: the one that holds it reads a window that counts every
 * message the previous holder committed.  One it cannot take at once is
 * marked busy: its enrollments wait for the next call, untouched, and
 * every other sequence of the call goes on.
 */
void
exec_load_rate_windows(ExecState *st)
{
	HASH_SEQ_STATUS hs;
	ExecSequence *seq;
	int			nmax = hash_get_num_entries(st->sequences);
	Datum	   *biz = palloc(sizeof(Datum) * nmax);
	Datum	   *ids = palloc(sizeof(Datum) * nmax);
	Datum	   *since = palloc(sizeof(Datum) * nmax);
	int			n = 0;
	Oid			lock_types[1] = {UUIDARRAYOID};
	Oid			rate_types[3] = {UUIDARRAYOID, UUIDARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		args[3];
	SPITupleTable *tt;
	ExecSequence *cur = NULL;

	hash_seq_init(&hs, st->sequences);
	while ((seq = hash_seq_search(&hs)) != NULL)
	{
		if (seq->busy || !seq->has_sends ||
			(seq->rate_per_hour == 0 && seq->rate_per_day == 0))
			continue;
		seq->limited = true;
		seq->busy = true;		/* until the lock is ours */
		journey_rate_init(&seq->rate, seq->rate_per_hour, seq->rate_per_day);
		ids[n++] = UUIDPGetDatum(&seq->id);
	}
	if (n == 0)
		return;

	args[0] = uuid_array(ids, n);
	run_plan(journey_keep_plan(&lock_plan, lock_sql, 1, lock_types), args, NULL,
			 SPI_OK_SELECT);
	tt = SPI_tuptable;
	n = 0;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(tt->vals[r], tt->tupdesc, 1, &isnull);

		seq = hash_search(st->sequences, DatumGetUUIDP(id), HASH_FIND, NULL);
		seq->busy = false;
		biz[n] = UUIDPGetDatum(&seq->business_id);
		ids[n] = UUIDPGetDatum(&seq->id);
		since[n] = TimestampTzGetDatum(st->as_of -
									   (seq->rate_per_day ? USECS_PER_DAY : USECS_PER_HOUR));
		n++;
	}
	if (n == 0)
		return;

	args[0] = uuid_array(biz, n);
	args[1] = uuid_array(ids, n);
	args[2] = PointerGetDatum(construct_array(since, n, TIMESTAMPTZOID, sizeof(TimestampTz),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	run_plan(journey_keep_plan(&rate_plan, rate_sql, 3, rate_types), args, NULL, SPI_OK_SELECT);
	tt = SPI_tuptable;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(tt->vals[r], tt->tupdesc, 1, &isnull);

		if (cur == NULL || memcmp(&cur->id, DatumGetUUIDP(id), UUID_LEN) != 0)
			cur = hash_search(st->sequences, DatumGetUUIDP(id), HASH_FIND, NULL);
		journey_rate_add(&cur->rate,
						 DatumGetTimestampTz(SPI_getbinval(tt->vals[r], tt->tupdesc, 2,
														   &isnull)));
	}
	SPI_freetuptable(tt);
}

/* Finds, in one statement, which tested events each enrollment has had. */
void
exec_load_events(ExecState *st, ExecEnrollment *ens, int nens)
{
	List	   *types = NIL;
	HASH_SEQ_STATUS hs;
	ExecSequence *seq;
	int		   *which = palloc(sizeof(int) * nens);
	Datum	   *biz = palloc(sizeof(Datum) * nens);
	Datum	   *cust = palloc(sizeof(Datum) * nens);
	Datum	   *since = palloc(sizeof(Datum) * nens);
	Datum	   *trig = palloc(sizeof(Datum) * nens);
	bool	   *trig_null = palloc(sizeof(bool) * nens);
	Datum	   *type_datums;
	int			n = 0;
	int			i;
	int			dims[1];
	int			lbs[1] = {1};
	ListCell   *lc;
	Oid			argtypes[6] = {UUIDARRAYOID, UUIDARRAYOID, TIMESTAMPTZARRAYOID,
	INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID};
	Datum		args[6];
	SPITupleTable *tt;

	hash_seq_init(&hs, st->sequences);
	while ((seq = hash_seq_search(&hs)) != NULL)
	{
		foreach(lc, seq->event_types)
			journey_event_type_add(&types, lfirst(lc));
	}
	if (types == NIL)
		return;

	for (i = 0; i < nens; i++)
	{
		if (ens[i].seq->event_types == NIL)
			continue;
		which[n] = i;
		biz[n] = ens[i].business_id;
		cust[n] = ens[i].customer_id;
		since[n] = TimestampTzGetDatum(ens[i].enrolled_at);
		trig[n] = ens[i].trigger_event_id;
		trig_null[n] = ens[i].trigger_event_null;
		n++;
	}
	type_datums = palloc(sizeof(Datum) * list_length(types));
	i = 0;
	foreach(lc, types)
		type_datums[i++] = CStringGetTextDatum(lfirst(lc));

	dims[0] = n;
	args[0] = uuid_array(biz, n);
	args[1] = uuid_array(cust, n);
	args[2] = PointerGetDatum(construct_array(since, n, TIMESTAMPTZOID, sizeof(TimestampTz),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[3] = PointerGetDatum(construct_md_array(trig, trig_null, 1, dims, lbs, INT8OID,
												 sizeof(int64), FLOAT8PASSBYVAL,
												 TYPALIGN_DOUBLE));
	args[4] = PointerGetDatum(construct_array(type_datums, list_length(types), TEXTOID,
											  -1, false, TYPALIGN_INT));
	args[5] = TimestampTzGetDatum(st->as_of);
	run_plan(journey_keep_plan(&events_plan, events_sql, 6, argtypes), args, NULL, SPI_OK_SELECT);
	tt = SPI_tuptable;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		ord = DatumGetInt64(SPI_getbinval(tt->vals[r], tt->tupdesc, 1, &isnull));
		ExecEnrollment *en = &ens[which[ord - 1]];

		if (en->events == NULL)
			en->events = palloc(sizeof(char *) * list_length(types));
		en->events[en->nevents++] =
			TextDatumGetCString(SPI_getbinval(tt->vals[r], tt->tupdesc, 2, &isnull));
	}
}

static char *
text_or_null(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* ---------- applying ---------- */

JourneyPreclaim *journey_preclaim = NULL;

/*
 * The pass's messages, claimed for the sender as far as it has room
 * (messages_preclaim_sql); notes their ids for it to fetch and send once
 * the pass commits.  Only the first statement of a pass claims: the rooms
 * it was given are spent by then (an enrollment run again on its own,
 * after a failed batch, queues its message for the sender's claim).
 */
static void
insert_preclaimed(Datum *values, char *nulls)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[18] = {UUIDARRAYOID, UUIDARRAYOID, UUIDARRAYOID, INT4ARRAYOID,
		UUIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, INT4ARRAYOID, TIMESTAMPTZOID, TEXTOID, INT4OID, TEXTARRAYOID,
	INT4ARRAYOID, INT4OID, INT4OID};
	JourneyPreclaim *pc = journey_preclaim;
	MemoryContext old;

	values[12] = pc->token;
	values[13] = Int32GetDatum(pc->lease_ms);
	values[14] = pc->room_providers;
	values[15] = pc->rooms;
	values[16] = Int32GetDatum(pc->default_room);
	values[17] = Int32GetDatum(pc->total_room);
	memset(nulls + 12, ' ', 6);
	run_plan(journey_keep_plan(&plan, messages_preclaim_sql, 18, types), values, nulls,
			 SPI_OK_INSERT_RETURNING);

	old = MemoryContextSwitchTo(pc->cxt);
	pc->ids = palloc(sizeof(int64) * Max(1, SPI_processed));
	MemoryContextSwitchTo(old);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];

		if (DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull)))
			pc->ids[pc->n_ids++] =
				DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		else
			pc->left_queued = true;
	}
}

/*
 * The messages and the log go in before the enrollments change: their
 * foreign-key checks then find a single version of each enrollment row.
 */
void
exec_apply(ExecState *st)
{
	/* A batch's columns, then the statement's other arguments. */
	Datum		values[BATCH_MAX_COLS + 7];
	char		nulls[BATCH_MAX_COLS + 7];

	if (st->messages.n > 0)
	{
		Oid			types[12] = {UUIDARRAYOID, UUIDARRAYOID, UUIDARRAYOID, INT4ARRAYOID,
			UUIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, INT4ARRAYOID, TIMESTAMPTZOID};

		exec_batch_arrays(&st->messages, MSG_ENROLLMENT_ID, values, nulls);
		values[MSG_NCOLS] = TimestampTzGetDatum(st->as_of);
		nulls[MSG_NCOLS] = ' ';
		if (journey_preclaim != NULL && journey_preclaim->ids == NULL && st->schema_0_3)
			insert_preclaimed(values, nulls);
		else
		{
			run_plan(journey_keep_plan(&messages_plan, messages_sql, 12, types), values, nulls,
					 SPI_OK_INSERT);
			if (SPI_processed > 0 && journey_preclaim != NULL)
				journey_preclaim->left_queued = true;
		}
		if (SPI_processed > 0)
			journey_sender_wake_at_commit();
	}
	if (st->log.n > 0)
	{
		Oid			types[7] = {UUIDARRAYOID, UUIDARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, INT4ARRAYOID, TIMESTAMPTZOID};

		exec_batch_arrays(&st->log, LOG_ENROLLMENT_ID, values, nulls);
		values[6] = TimestampTzGetDatum(st->as_of);
		nulls[6] = ' ';
		run_plan(journey_keep_plan(&log_plan, log_sql, 7, types), values, nulls, SPI_OK_INSERT);
	}
	if (st->updates.n > 0)
	{
		Oid			types[6] = {UUIDARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID,
		TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID};

		exec_batch_arrays(&st->updates, UPD_ID, values, nulls);
		run_plan(journey_keep_plan(&update_plan, update_sql, 6, types), values, nulls,
				 SPI_OK_UPDATE);
	}
	exec_stats_apply(st);
}

/* ---------- the claim ---------- */

/* Compares two claimed enrollments: oldest due first, then first enrolled. */
static int
compare_due(const void *a, const void *b)
{
	const ExecEnrollment *x = a;
	const ExecEnrollment *y = b;

	if (x->next_run_at != y->next_run_at)
		return x->next_run_at < y->next_run_at ? -1 : 1;
	/* Deferred to the same moment: who enrolled first goes first. */
	if (x->enrolled_at != y->enrolled_at)
		return x->enrolled_at < y->enrolled_at ? -1 : 1;
	return memcmp(DatumGetUUIDP(x->id), DatumGetUUIDP(y->id), UUID_LEN);
}

/*
 * The entry of one version in seq->versions, added (empty) if missing.
 * Linear: an executor call sees a sequence on a few versions at most.
 */
ExecVersion *
exec_find_version(ExecSequence *seq, int32 version)
{
	ExecVersion *ver;

	for (int v = 0; v < seq->nversions; v++)
		if (seq->versions[v].version == version)
			return &seq->versions[v];
	if (seq->nversions == 0)
		seq->versions = palloc(sizeof(ExecVersion) * 4);
	else if ((seq->nversions & (seq->nversions - 1)) == 0 && seq->nversions >= 4)
		seq->versions = repalloc(seq->versions, sizeof(ExecVersion) * seq->nversions * 2);
	ver = &seq->versions[seq->nversions++];
	memset(ver, 0, sizeof(ExecVersion));
	ver->version = version;
	return ver;
}

/* A business in the fair claim: its share of a round and where it stands. */
typedef struct ClaimShare
{
	pg_uuid_t	business_id;	/* hash key */
	int32		share;			/* this round's; 0: none this round */
	int32		got;
	TimestampTz after_at;		/* the key of the last enrollment it got */
	pg_uuid_t	after_id;
} ClaimShare;

/*
 * Rounds of the fair claim at most: each gives what is left of the batch to
 * the businesses that used all of their share, so a few rounds fill it.
 */
#define CLAIM_MAX_ROUNDS 8

/* Runs one claim statement and adds its rows to tups. */
static void
claim_run(SPIPlanPtr plan, Datum *args, HeapTuple *tups, uint64 *ntups, ExecState *st)
{
	run_plan(plan, args, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	st->claim_desc = SPI_tuptable->tupdesc;
	for (uint64 r = 0; r < SPI_processed; r++)
		tups[(*ntups)++] = SPI_tuptable->vals[r];
}

/*
 * The fair claim: round-robin over the businesses with due work.  A round
 * splits what is left of the batch evenly among the businesses still in
 * play (the remainder, and the single slots when there are more businesses
 * than slots, to those that have waited longest), each taking its own
 * oldest first; a business that used all of its share stays in play for
 * the next round, one that did not is done.  One business alone gets the
 * whole batch; a tenant that back-dates a backlog gets its share, no more.
 * Reads are bounded by index probes: one per business, then its share.
 */
/*
 * one_business_plan, when not NULL: the claim's generic plan, for a round
 * in which a single business has due enrollments.  The claim is planned
 * for its arguments otherwise (1-2 ms a pass, more than running it at a
 * few enrollments a pass): the generic plan may walk the due index of all
 * businesses and filter, which costs nothing when only one has any due
 * and a scan of another's whole backlog when two do.
 */
static uint64
claim_fair(ExecState *st, SPIPlanPtr plan, SPIPlanPtr one_business_plan, int32 batch_size,
		   HeapTuple *tups)
{
	Oid			due_types[1] = {TIMESTAMPTZOID};
	Datum		due_args[1] = {TimestampTzGetDatum(st->as_of)};
	HASHCTL		hctl;
	HTAB	   *by_id;
	ClaimShare **play;
	ClaimShare **next;
	int			nplay;
	int32		left = batch_size;
	uint64		ntups = 0;
	pg_uuid_t	zero_id;

	run_plan(journey_keep_plan(&due_businesses_plan, due_businesses_sql, 1, due_types),
			 due_args, NULL, SPI_OK_SELECT);
	nplay = (int) SPI_processed;
	if (nplay == 0)
		return 0;
	memset(&zero_id, 0, sizeof(zero_id));
	hctl.keysize = UUID_LEN;
	hctl.entrysize = sizeof(ClaimShare);
	hctl.hcxt = CurrentMemoryContext;
	by_id = hash_create("journey executor claim shares", nplay, &hctl,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	play = palloc(sizeof(ClaimShare *) * nplay);
	next = palloc(sizeof(ClaimShare *) * nplay);
	for (int i = 0; i < nplay; i++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		ClaimShare *b = hash_search(by_id, DatumGetUUIDP(id), HASH_ENTER, NULL);

		b->after_at = DT_NOBEGIN;
		b->after_id = zero_id;
		play[i] = b;
	}
	SPI_freetuptable(SPI_tuptable);

	for (int round = 0; round < CLAIM_MAX_ROUNDS && left > 0 && nplay > 0; round++)
	{
		int			nshares = Min(nplay, left);
		Datum	   *ids = palloc(sizeof(Datum) * nshares);
		Datum	   *shares = palloc(sizeof(Datum) * nshares);
		Datum	   *after_at = palloc(sizeof(Datum) * nshares);
		Datum	   *after_id = palloc(sizeof(Datum) * nshares);
		Datum		args[6];
		uint64		from = ntups;
		int			nnext = 0;

		for (int i = 0; i < nplay; i++)
		{
			ClaimShare *b = play[i];

			b->got = 0;
			b->share = i < nshares ? left / nshares + (i < left % nshares) : 0;
			if (b->share == 0)
				continue;
			ids[i] = UUIDPGetDatum(&b->business_id);
			shares[i] = Int32GetDatum(b->share);
			after_at[i] = TimestampTzGetDatum(b->after_at);
			after_id[i] = UUIDPGetDatum(&b->after_id);
		}
		args[0] = Int64GetDatum(batch_size);
		args[1] = TimestampTzGetDatum(st->as_of);
		args[2] = uuid_array(ids, nshares);
		args[3] = PointerGetDatum(construct_array(shares, nshares, INT4OID, sizeof(int32),
												  true, TYPALIGN_INT));
		args[4] = PointerGetDatum(construct_array(after_at, nshares, TIMESTAMPTZOID,
												  sizeof(TimestampTz), FLOAT8PASSBYVAL,
												  TYPALIGN_DOUBLE));
		args[5] = uuid_array(after_id, nshares);
		claim_run(nplay == 1 && one_business_plan != NULL ? one_business_plan : plan,
				  args, tups, &ntups, st);

		for (uint64 r = from; r < ntups; r++)
		{
			bool		isnull;
			pg_uuid_t  *biz = DatumGetUUIDP(SPI_getbinval(tups[r], st->claim_desc,
														  CLAIM_BUSINESS_ID, &isnull));
			pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(tups[r], st->claim_desc,
														 CLAIM_ID, &isnull));
			TimestampTz at = DatumGetTimestampTz(SPI_getbinval(tups[r], st->claim_desc,
															   CLAIM_NEXT_RUN_AT, &isnull));
			ClaimShare *b = hash_search(by_id, biz, HASH_FIND, NULL);

			if (b == NULL)
				elog(ERROR, "journey executor claimed for a business it did not ask for");
			b->got++;
			if (at > b->after_at ||
				(at == b->after_at && memcmp(id, &b->after_id, UUID_LEN) > 0))
			{
				b->after_at = at;
				b->after_id = *id;
			}
		}
		left -= (int32) (ntups - from);

		/* Next: first those that had no share, then those that used theirs. */
		for (int i = nshares; i < nplay; i++)
			next[nnext++] = play[i];
		for (int i = 0; i < nshares; i++)
			if (play[i]->got == play[i]->share)
				next[nnext++] = play[i];
		memcpy(play, next, sizeof(ClaimShare *) * nnext);
		nplay = nnext;
	}
	return ntups;
}

uint64
exec_claim(ExecState *st, int32 batch_size, ExecEnrollment **ens_out)
{
	Oid			claim_types[6] = {INT8OID, TIMESTAMPTZOID, UUIDARRAYOID, INT4ARRAYOID,
	TIMESTAMPTZARRAYOID, UUIDARRAYOID};
	Oid			one_types[3] = {INT8OID, TIMESTAMPTZOID, UUIDOID};
	HeapTuple  *tups;
	uint64		nclaimed = 0;
	ExecEnrollment *ens;

	st->schema_0_3 = journey_schema_has_versions();
	*ens_out = NULL;
	if (st->only_enrollment != (Datum) 0)
	{
		Datum		args[3];

		args[0] = Int64GetDatum(1);
		args[1] = TimestampTzGetDatum(st->as_of);
		args[2] = st->only_enrollment;
		tups = palloc(sizeof(HeapTuple));
		claim_run(journey_keep_plan(&claim_one_plan, claim_one_sql, 3, one_types), args,
				  tups, &nclaimed, st);
	}
	else
	{
		tups = palloc(sizeof(HeapTuple) * batch_size);
		if (st->schema_0_3)
			nclaimed = claim_fair(st, journey_keep_plan(&claim_plan, claim_sql, 6, claim_types),
								  journey_keep_plan_opts(&claim_generic_plan, claim_sql, 6,
														 claim_types, CURSOR_OPT_GENERIC_PLAN),
								  batch_size, tups);
		else
			nclaimed = claim_fair(st, journey_keep_plan(&claim_plan_before_0_3,
														claim_sql_before_0_3, 6, claim_types),
								  NULL, batch_size, tups);
	}
	if (nclaimed == 0)
		return 0;

	ens = palloc0(sizeof(ExecEnrollment) * nclaimed);
	for (uint64 i = 0; i < nclaimed; i++)
	{
		HeapTuple	tup = tups[i];
		TupleDesc	desc = st->claim_desc;
		ExecEnrollment *en = &ens[i];
		bool		isnull;
		bool		found;

		en->id = SPI_getbinval(tup, desc, CLAIM_ID, &isnull);
		en->business_id = SPI_getbinval(tup, desc, CLAIM_BUSINESS_ID, &isnull);
		en->sequence_id = SPI_getbinval(tup, desc, CLAIM_SEQUENCE_ID, &isnull);
		en->customer_id = SPI_getbinval(tup, desc, CLAIM_CUSTOMER_ID, &isnull);
		en->step = DatumGetInt32(SPI_getbinval(tup, desc, CLAIM_STEP, &isnull));
		en->enrolled_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, CLAIM_ENROLLED_AT, &isnull));
		en->trigger_event_id = SPI_getbinval(tup, desc, CLAIM_TRIGGER_EVENT_ID, &en->trigger_event_null);
		en->next_run_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, CLAIM_NEXT_RUN_AT, &isnull));
		en->version = DatumGetInt32(SPI_getbinval(tup, desc, CLAIM_SEQUENCE_VERSION, &isnull));
		en->email = text_or_null(tup, desc, CLAIM_EMAIL);
		en->phone = text_or_null(tup, desc, CLAIM_PHONE);
		en->zone = text_or_null(tup, desc, CLAIM_ZONE);
		en->email_suppressed = DatumGetBool(SPI_getbinval(tup, desc, CLAIM_EMAIL_SUPPRESSED, &isnull));
		en->phone_suppressed = DatumGetBool(SPI_getbinval(tup, desc, CLAIM_PHONE_SUPPRESSED, &isnull));
		en->tup = tup;
		en->seq = hash_search(st->sequences, DatumGetUUIDP(en->sequence_id), HASH_ENTER,
							  &found);
		if (!found)
		{
			ExecSequence *seq = en->seq;
			pg_uuid_t	key = seq->id;

			memset(seq, 0, sizeof(ExecSequence));
			seq->id = key;
		}
		(void) exec_find_version(en->seq, en->version);
	}

	/* Oldest due first: the order rate limits hand out slots in. */
	qsort(ens, nclaimed, sizeof(ExecEnrollment), compare_due);
	*ens_out = ens;
	return nclaimed;
}
