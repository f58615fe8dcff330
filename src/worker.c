/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The sender background worker: claims due messages, hands them to the
 *	  transport and writes back each result.
 *
 * One loop, in worker_spi's shape: wait on the latch, libcurl's sockets and
 * timers at once; collect finished requests; write their results in one
 * short transaction; claim more in another.  No transaction is open while
 * a request is in flight, and no lock outlives the transaction that took
 * it.  A claim marks messages 'sending' with a lease and the server's
 * system identifier in claimed_by, and counts the attempt.  A sender that
 * starts puts back every message its server's earlier sender left
 * 'sending' (it died: a crash, kill -9, an immediate shutdown), so they
 * go out again within seconds, under the same idempotency key, first and
 * one at a time.  A message that keeps killing the sender runs out of
 * attempts that way and fails alone.
 *
 * Each turn of the loop may also take one executor batch for the database
 * (worker_executor.c), in a transaction of its own between the others.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "journey.h"
#include "sender.h"
#include "optout.h"

static int	my_slot = -1;
static char claim_token[32];	/* this server's system identifier */
static char probation_token[48];	/* the same for the probation lane */
static bool reclaim_own = true; /* first claim puts back a dead sender's rows */
static bool need_claim = true;
static TimestampTz next_poll = 0;
static TimestampTz next_due = 0;	/* earliest retry or lease expiry; 0 none */
static bool warned_no_provider = false;
static TimestampTz marks_retry_at = 0;	/* review marks left on locked rows */
/* Messages taken back after a crash, sent one at a time (see below). */
static Datum probation = (Datum) 0;	/* bigint[] in TopMemoryContext */
static Datum empty_ids = (Datum) 0;	/* an empty bigint[], likewise */

static int64 probation_in_flight = 0;	/* the one message of that lane, 0 none */
/* The last claim took some: the queue may hold more (see the main loop). */
static bool claim_found_some = false;

static MemoryContext loop_cxt;
static MemoryContext results_cxt;
static MemoryContext requests_cxt;
static JourneyResult *results;
static int	n_results = 0;
static int	max_results = 0;

static SPIPlanPtr claim_plan;
static SPIPlanPtr claim_ids_plan;
static SPIPlanPtr reclaim_own_plan;
static SPIPlanPtr reclaim_expired_plan;
static SPIPlanPtr requeue_refunded_plan;
static SPIPlanPtr next_due_plan;
static SPIPlanPtr no_provider_plan;
static SPIPlanPtr apply_marks_plan;
static SPIPlanPtr result_plan;
static SPIPlanPtr cancel_unsendable_plan;
static SPIPlanPtr installation_plan;
static char installation_id[64];	/* journey.installation's id, as of the claim */

/*
 * A CTE "locked" of the rows of journey.messages whose ids the CTE `ids`
 * lists, locked by primary key, skipping rows someone holds, with their
 * status as of the lock: callers check it there, not in this WHERE.  A
 * status condition here lets the planner walk a status index (with
 * statistics taken while the queue was empty, the whole queue) with the
 * ids as a filter: 60 ms of a claim at 70k queued; 200 ms with
 * "id IN (SELECT id FROM ...)".  A row another sender took meanwhile is
 * locked in its new version and then left out by the caller's check.
 */
#define LOCKED_BY_KEY(ids) \
" locked AS MATERIALIZED (" \
" SELECT m.id, m.status FROM journey.messages m" \
"  WHERE m.id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT id FROM " ids "))" \
"  FOR UPDATE OF m SKIP LOCKED)"

/* The provider that sends message m: its business's own for the channel, else the default. */
#define PROVIDER_OF(m) \
"   SELECT p.id, p.kind, p.endpoint, p.from_address, p.credentials, p.settings" \
"    FROM journey.providers p" \
"   WHERE p.enabled AND p.channel OPERATOR(pg_catalog.=) " m ".channel" \
"     AND (p.business_id OPERATOR(pg_catalog.=) " m ".business_id OR p.business_id IS NULL)" \
"   ORDER BY p.business_id NULLS LAST LIMIT 1"

/*
 * What a claimed message's request needs (ClaimColumn, in its order): the
 * message's columns from m, its provider's from p (with p.provider_id).
 */
#define CLAIM_OUTPUT(m, p) \
m ".id, " m ".attempts, " m ".business_id::text, " m ".customer_id::text," \
"   " m ".enrollment_id::text, " m ".sequence_id::text, " m ".step_index::text, " m ".channel," \
"   " m ".message_purpose, " m ".to_address, " m ".subject, " m ".body, " p ".kind, " p ".endpoint," \
"   " p ".from_address, " p ".credentials, " p ".settings::text," \
"   CASE WHEN " m ".channel OPERATOR(pg_catalog.=) 'email'" \
"     THEN journey.unsubscribe_link(" m ".business_id, " m ".channel, " m ".to_address) END," \
"   " p ".provider_id::text"

/*
 * Claims up to $1 due messages that have a provider; "extra" narrows the
 * choice.  Fair: each business offers its oldest $1 due messages (one
 * index probe per business, so one business's backlog is never all there
 * is to see), businesses take turns (brn), and a provider gets no more
 * than its room: $5/$6 list the providers with a lane and how many more
 * each may be claimed for (lanes.c), $7 is the room of any other.
 * Messages someone holds locked are skipped, and so is a message whose
 * address was suppressed or whose customer was deleted since it was
 * queued (cancel_unsendable_sql cancels those among the oldest; the
 * others wait for it, unsent).  Those two probes are outer joins on the
 * tables' keys, not "x IS NULL OR EXISTS (...)": the planner made that a
 * hashed subplan, a scan of every customer of the installation per claim.
 * The picked rows are locked by key (LOCKED_BY_KEY).  The UPDATE names
 * no other relation: "UPDATE ... FROM pick" would make each updated row
 * carry a copy of its pick row (the whole-row reference EvalPlanQual
 * needs, with the provider's credentials and settings), 7% of the
 * sender's CPU in a W4 drain.  The provider's columns are joined to the
 * updated rows afterwards instead.
 */
#define CLAIM_SQL(extra) \
"WITH cand AS (" \
" SELECT m.id, m.business_id, m.channel, m.send_after FROM journey.businesses b" \
"  CROSS JOIN LATERAL (" \
"   SELECT m.id, m.business_id, m.channel, m.send_after FROM journey.messages m" \
"     LEFT JOIN journey.customers k" \
"       ON k.business_id OPERATOR(pg_catalog.=) m.business_id" \
"      AND k.id OPERATOR(pg_catalog.=) m.customer_id" \
"     LEFT JOIN journey.suppressions s" \
"       ON s.business_id OPERATOR(pg_catalog.=) m.business_id" \
"      AND s.channel OPERATOR(pg_catalog.=) m.channel" \
"      AND s.address OPERATOR(pg_catalog.=) m.to_address" \
"    WHERE m.business_id OPERATOR(pg_catalog.=) b.id" \
"      AND m.status OPERATOR(pg_catalog.=) 'queued' " extra \
"      AND m.send_after OPERATOR(pg_catalog.<=) pg_catalog.now()" \
"      AND s.address IS NULL" \
"      AND (m.customer_id IS NULL OR k.id IS NOT NULL)" \
"    ORDER BY m.send_after LIMIT $1) m)," \
" due AS (" \
" SELECT c.id, c.send_after, p.id AS provider_id, p.kind, p.endpoint, p.from_address," \
"   p.credentials, p.settings," \
"   pg_catalog.row_number() OVER (PARTITION BY p.id ORDER BY c.send_after, c.id) AS prn," \
"   pg_catalog.row_number() OVER (PARTITION BY c.business_id ORDER BY c.send_after, c.id) AS brn" \
"  FROM cand c" \
"  CROSS JOIN LATERAL (" PROVIDER_OF("c") ") p)," \
" pick AS (" \
" SELECT d.* FROM due d" \
"  WHERE d.prn OPERATOR(pg_catalog.<=) COALESCE((SELECT f.room" \
"      FROM ROWS FROM (pg_catalog.unnest($5::uuid[]), pg_catalog.unnest($6::integer[])) AS f(pid, room)" \
"     WHERE f.pid OPERATOR(pg_catalog.=) d.provider_id), $7)" \
"  ORDER BY d.brn, d.send_after LIMIT $1)," \
LOCKED_BY_KEY("pick") "," \
" upd AS (" \
" UPDATE journey.messages m" \
"    SET status = 'sending', attempts = m.attempts + 1," \
"        claimed_by = $2," \
"        lease_expires_at = pg_catalog.now() OPERATOR(pg_catalog.+)" \
"          ($3 OPERATOR(pg_catalog.*) interval '1 millisecond')" \
"  WHERE m.id OPERATOR(pg_catalog.=) ANY (ARRAY(" \
"    SELECT id FROM locked WHERE status OPERATOR(pg_catalog.=) 'queued'))" \
" RETURNING m.id, m.attempts, m.business_id, m.customer_id, m.enrollment_id," \
"   m.sequence_id, m.step_index, m.channel, m.message_purpose, m.to_address," \
"   m.subject, m.body)" \
" SELECT " CLAIM_OUTPUT("u", "p") \
"  FROM upd u JOIN pick p ON p.id OPERATOR(pg_catalog.=) u.id" \
" ORDER BY p.brn, p.send_after"

/* The batch claim leaves the messages on probation ($4) to their own lane. */
static const char *claim_sql =
CLAIM_SQL(" AND m.id OPERATOR(pg_catalog.<>) ALL ($4)");

/* The same, among the messages $4 only (those taken back after a crash). */
static const char *claim_ids_sql =
CLAIM_SQL(" AND m.id = ANY ($4)");

/* The columns of CLAIM_SQL's RETURNING list, in its order (SPI counts from 1). */
typedef enum ClaimColumn
{
	CLAIM_ID = 1,
	CLAIM_ATTEMPTS,
	CLAIM_BUSINESS_ID,
	CLAIM_CUSTOMER_ID,
	CLAIM_ENROLLMENT_ID,
	CLAIM_SEQUENCE_ID,
	CLAIM_STEP_INDEX,
	CLAIM_CHANNEL,
	CLAIM_PURPOSE,
	CLAIM_TO_ADDRESS,
	CLAIM_SUBJECT,
	CLAIM_BODY,
	CLAIM_KIND,
	CLAIM_ENDPOINT,
	CLAIM_FROM_ADDRESS,
	CLAIM_CREDENTIALS,
	CLAIM_SETTINGS,
	CLAIM_UNSUBSCRIBE_URL,
	CLAIM_PROVIDER_ID,
	CLAIM_NCOLUMNS = CLAIM_PROVIDER_ID
} ClaimColumn;


/*
 * Puts messages left 'sending' back in the queue: those this server's sender
 * held when it died ($1 = claimed_by), or those whose lease ran out.  One
 * whose attempts are used up fails instead: it may be what killed a sender.
 */
#define RECLAIM_SET \
" SET status = CASE WHEN attempts OPERATOR(pg_catalog.>=) $2 THEN 'failed' ELSE 'queued' END," \
"     last_error = CASE WHEN attempts OPERATOR(pg_catalog.>=) $2" \
"       THEN 'sender stopped during the last allowed attempt (' OPERATOR(pg_catalog.||) CAST(attempts AS pg_catalog.text) OPERATOR(pg_catalog.||) ' attempts); the provider may have received it'" \
"       ELSE COALESCE(last_error, 'sender stopped during delivery; sent again') END," \
"     lease_expires_at = NULL, claimed_by = NULL"

/* Rows someone holds locked are left for the next pass: never wait. */
/*
 * The same for this server's dead sender ($1), which claimed in two lanes:
 * batches ($1) and the probation lane ($1 || '/probation', see
 * claim_and_send).  When a probation message was in flight the crash is
 * blamed on it: the batch messages get their attempt back and go back to
 * the queue as any other.  Otherwise every message in flight is a suspect.
 * Returns how many were put back and the suspects to put on probation.
 */
static const char *reclaim_own_sql =
"WITH held AS (SELECT id, claimed_by FROM journey.messages"
"   WHERE status OPERATOR(pg_catalog.=) 'sending'"
"     AND (claimed_by OPERATOR(pg_catalog.=) $1"
"          OR claimed_by OPERATOR(pg_catalog.=) ($1 OPERATOR(pg_catalog.||) '/probation'))"
"   FOR UPDATE SKIP LOCKED),"
" blame AS (SELECT h.id, (h.claimed_by OPERATOR(pg_catalog.<>) $1"
"     OR NOT EXISTS (SELECT 1 FROM held p WHERE p.claimed_by OPERATOR(pg_catalog.<>) $1)) AS suspect"
"   FROM held h),"
" refund AS (UPDATE journey.messages m"
"    SET attempts = m.attempts OPERATOR(pg_catalog.-) 1"
"   FROM blame b WHERE m.id OPERATOR(pg_catalog.=) b.id AND NOT b.suspect"
"   RETURNING m.id),"
" r AS (UPDATE journey.messages" RECLAIM_SET
" WHERE id IN (SELECT id FROM blame WHERE suspect)"
" RETURNING id, status)"
" SELECT (SELECT pg_catalog.count(*) FROM held),"
"   (SELECT pg_catalog.array_agg(id) FILTER (WHERE status OPERATOR(pg_catalog.=) 'queued') FROM r),"
"   (SELECT pg_catalog.count(*) FROM refund)";

/* What refund left 'sending': a second statement sees its update. */
static const char *requeue_refunded_sql =
"UPDATE journey.messages" RECLAIM_SET
" WHERE id IN (SELECT id FROM journey.messages"
"   WHERE status OPERATOR(pg_catalog.=) 'sending' AND claimed_by OPERATOR(pg_catalog.=) $1"
"   FOR UPDATE SKIP LOCKED)";

static const char *reclaim_expired_sql =
"UPDATE journey.messages" RECLAIM_SET
" WHERE id IN (SELECT id FROM journey.messages"
"   WHERE status OPERATOR(pg_catalog.=) 'sending'"
"     AND lease_expires_at OPERATOR(pg_catalog.<) pg_catalog.now()"
"   FOR UPDATE SKIP LOCKED)";
/* Its columns: how many were put back, the ids to put on probation, and
 * how many batch messages got their attempt back. */
#define RECLAIM_COUNT 1
#define RECLAIM_QUEUED_IDS 2
#define RECLAIM_REFUNDED 3

static const char *next_due_sql =
"SELECT LEAST("
" (SELECT min(send_after) FROM journey.messages"
"   WHERE status = 'queued' AND send_after > now()),"
" (SELECT min(lease_expires_at) FROM journey.messages"
"   WHERE status = 'sending'))";

static const char *no_provider_sql =
"SELECT count(*), string_agg(DISTINCT channel, ', ')"
" FROM (SELECT m.channel FROM journey.messages m"
"  WHERE m.status = 'queued'"
"    AND m.send_after <= now()"
"    AND NOT EXISTS (SELECT 1 FROM journey.providers p"
"      WHERE p.enabled AND p.channel = m.channel"
"        AND (p.business_id = m.business_id OR p.business_id IS NULL))"
"  LIMIT 100000) s";

/*
 * A result's place in the arrays ($1 the ids, $2-$5 their values), found
 * by id: "UPDATE ... FROM unnest(...)" would make each updated row carry
 * a copy of its result row for EvalPlanQual, and the planner, taking the
 * results for a few rows, joined them by a nested loop that scanned them
 * once per message.  A batch has a few dozen results.
 */
#define RESULT_AT "pg_catalog.array_position($1, m.id)"

/*
 * Writes results to the messages this sender still holds and no one else
 * has locked (SKIP LOCKED: an application's transaction on a message never
 * stalls the sender); returns the ids it had to skip, whose results are
 * kept and written at a later pass.  A sent review request is recorded in
 * review_request_marks, applied to its customer by apply_marks_sql.
 */
static const char *result_sql =
"WITH mine AS ("
" SELECT m.id FROM journey.messages m"
"  WHERE m.id OPERATOR(pg_catalog.=) ANY ($1) AND m.status OPERATOR(pg_catalog.=) 'sending'"
"    AND pg_catalog.split_part(m.claimed_by, '/', 1) OPERATOR(pg_catalog.=) $6"
"  FOR UPDATE OF m SKIP LOCKED),"
" upd AS ("
" UPDATE journey.messages m"
"    SET status = $2[" RESULT_AT "],"
"        last_error = COALESCE($3[" RESULT_AT "], m.last_error),"
"        provider_message_id = COALESCE($4[" RESULT_AT "], m.provider_message_id),"
"        sent_at = CASE WHEN $2[" RESULT_AT "] = 'sent' THEN now() END,"
"        send_after = CASE WHEN $2[" RESULT_AT "] = 'queued'"
"          THEN now() + ($5[" RESULT_AT "] * interval '1 millisecond')"
"          ELSE m.send_after END,"
"        lease_expires_at = NULL, claimed_by = NULL"
"  WHERE m.id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT id FROM mine))"
" RETURNING m.id, m.business_id, m.customer_id, m.status, m.message_purpose, m.sent_at),"
" marks AS ("
" INSERT INTO journey.review_request_marks (message_id, business_id, customer_id, sent_at)"
" SELECT u.id, u.business_id, u.customer_id, u.sent_at FROM upd u"
"  WHERE u.status OPERATOR(pg_catalog.=) 'sent'"
"    AND u.message_purpose OPERATOR(pg_catalog.=) 'review_request'"
"    AND u.customer_id IS NOT NULL"
" ON CONFLICT DO NOTHING)"
" SELECT r.id FROM pg_catalog.unnest($1) AS r(id)"
"  WHERE r.id NOT IN (SELECT id FROM upd)"
"    AND EXISTS (SELECT 1 FROM journey.messages m"
"      WHERE m.id OPERATOR(pg_catalog.=) r.id AND m.status OPERATOR(pg_catalog.=) 'sending'"
"        AND pg_catalog.split_part(m.claimed_by, '/', 1) OPERATOR(pg_catalog.=) $6)";

/*
 * Sets last_review_request_at from the recorded sends, on customer rows no
 * one holds locked; the others keep their marks for a later pass.  Marks
 * of customers since deleted go too.  Returns how many marks are left.
 */
static const char *apply_marks_sql =
"WITH k AS ("
" SELECT customer_id, business_id, pg_catalog.max(sent_at) AS sent_at"
"   FROM journey.review_request_marks GROUP BY customer_id, business_id),"
" c AS ("
" SELECT c.id, k.sent_at FROM journey.customers c JOIN k"
"     ON c.id OPERATOR(pg_catalog.=) k.customer_id AND c.business_id OPERATOR(pg_catalog.=) k.business_id"
"  FOR UPDATE OF c SKIP LOCKED),"
" u AS ("
" UPDATE journey.customers t"
"    SET last_review_request_at = GREATEST(t.last_review_request_at, c.sent_at)"
"   FROM c WHERE t.id OPERATOR(pg_catalog.=) c.id"
" RETURNING t.id, c.sent_at),"
" d AS ("
" DELETE FROM journey.review_request_marks m"
"  WHERE EXISTS (SELECT 1 FROM u WHERE u.id OPERATOR(pg_catalog.=) m.customer_id"
"                  AND m.sent_at OPERATOR(pg_catalog.<=) u.sent_at)"
"     OR NOT EXISTS (SELECT 1 FROM journey.customers x"
"                  WHERE x.id OPERATOR(pg_catalog.=) m.customer_id)"
" RETURNING 1)"
" SELECT (SELECT pg_catalog.count(*) FROM journey.review_request_marks)"
"   OPERATOR(pg_catalog.-) (SELECT pg_catalog.count(*) FROM d)";
/*
 * Before a claim: among the messages it is about to take, cancels those
 * whose address was suppressed or whose customer was deleted since they
 * were queued, saying why.  Only those are locked (LOCKED_BY_KEY);
 * locking all the oldest doubled the row locks each message costs the
 * sender.
 */
static const char *cancel_unsendable_sql =
"WITH unsendable AS ("
" SELECT q.id, (q.customer_id IS NOT NULL AND c.id IS NULL) AS customer_gone"
"   FROM (SELECT id, business_id, customer_id, channel, to_address"
"           FROM journey.messages"
"          WHERE status = 'queued' AND send_after <= now()"
"          ORDER BY send_after LIMIT $1) q"
"   LEFT JOIN journey.customers c"
"     ON c.business_id = q.business_id AND c.id = q.customer_id"
"   LEFT JOIN journey.suppressions s"
"     ON s.business_id = q.business_id AND s.channel = q.channel"
"    AND s.address = q.to_address"
"  WHERE (q.customer_id IS NOT NULL AND c.id IS NULL) OR s.address IS NOT NULL),"
LOCKED_BY_KEY("unsendable")
" UPDATE journey.messages m SET status = 'cancelled',"
"  last_error = CASE WHEN u.customer_gone"
"   THEN 'cancelled before sending: the customer no longer exists'"
"   ELSE 'cancelled before sending: ' || m.channel ||"
"     ' address suppressed since the message was queued' END"
" FROM unsendable u"
" WHERE m.id = u.id"
"   AND m.id IN (SELECT id FROM locked WHERE status = 'queued')";

/* The oldest row, should a data-only restore with triggers off add one. */
static const char *installation_sql =
"SELECT id::text FROM journey.installation ORDER BY created_at LIMIT 1";

static void
prepare_plans(void)
{
	Oid			claim_types[7] = {INT4OID, TEXTOID, INT4OID, INT8ARRAYOID,
	TEXTARRAYOID, INT4ARRAYOID, INT4OID};
	Oid			reclaim_types[2] = {TEXTOID, INT4OID};
	Oid			result_types[6] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, INT8ARRAYOID, TEXTOID};

	/* The last one prepared says they all are. */
	if (result_plan != NULL)
		return;
	journey_keep_plan(&claim_plan, claim_sql, 7, claim_types);
	journey_keep_plan(&claim_ids_plan, claim_ids_sql, 7, claim_types);
	journey_keep_plan(&reclaim_own_plan, reclaim_own_sql, 2, reclaim_types);
	journey_keep_plan(&reclaim_expired_plan, reclaim_expired_sql, 2, reclaim_types);
	journey_keep_plan(&requeue_refunded_plan, requeue_refunded_sql, 2, reclaim_types);
	journey_keep_plan(&next_due_plan, next_due_sql, 0, NULL);
	journey_keep_plan(&no_provider_plan, no_provider_sql, 0, NULL);
	journey_keep_plan(&apply_marks_plan, apply_marks_sql, 0, NULL);
	journey_keep_plan(&result_plan, result_sql, 6, result_types);
	journey_keep_plan(&cancel_unsendable_plan, cancel_unsendable_sql, 1, claim_types);
	journey_keep_plan(&installation_plan, installation_sql, 0, NULL);
}

/*
 * Opens a short transaction and locks the tables the sender writes,
 * without waiting: DROP EXTENSION or anything else holding them goes
 * first, the sender tries again shortly.  Returns false (transaction still
 * open) when journey is not installed or a table is busy.
 */
static bool journey_installed = true;
static Oid	messages_relid = InvalidOid;	/* as of the last begin_work */

/* Below the default deadlock_timeout (1 s). */
#define SENDER_LOCK_TIMEOUT "500ms"

static bool
begin_work(const char *activity)
{
	Oid			nsp;
	const char *tables[4] = {"messages", "providers", "customers", "review_request_marks"};
	int			i;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
	/*
	 * The tables below are only tried, but a statement may lock others
	 * (suppressions, businesses, the installation row) as it goes.  Giving
	 * up on those before deadlock_timeout means a DROP EXTENSION waiting
	 * for this transaction is never the one a deadlock is resolved
	 * against; the pass is simply tried again.
	 */
	(void) set_config_option("lock_timeout", SENDER_LOCK_TIMEOUT, PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);

	nsp = get_namespace_oid("journey", true);
	journey_installed = OidIsValid(nsp);
	for (i = 0; journey_installed && i < lengthof(tables); i++)
	{
		Oid			rel = get_relname_relid(tables[i], nsp);

		journey_installed = OidIsValid(rel);
		if (i == 0)
			messages_relid = rel;
		if (journey_installed && !ConditionalLockRelationOid(rel, RowExclusiveLock))
			return false;
	}
	if (!journey_installed)
		return false;
	journey_replan_if_grown();
	prepare_plans();
	return true;
}

static void
end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

static char *
col_text(HeapTuple tup, TupleDesc desc, int col)
{
	return SPI_getvalue(tup, desc, col);
}

/* Exponential backoff with "equal jitter": half fixed, half random. */
static int64
backoff_ms(int attempts)
{
	int64		d = journey_retry_base_ms;
	int			i;

	for (i = 1; i < attempts && d < journey_retry_max_ms; i++)
		d *= 2;
	d = Min(d, (int64) journey_retry_max_ms);
	return d / 2 + (int64) pg_prng_uint64_range(&pg_global_prng_state, 0, d - d / 2);
}

/*
 * Results are written in batches: at once when a claim is due (the same
 * commit covers both) or nothing else is in flight, otherwise once the
 * oldest has waited RESULTS_GATHER_MS or journey.max_concurrency of them
 * are waiting.  Writing each as it came would cost one durable commit per
 * message while a provider is at its cap; the claim that goes with a
 * write takes as many as were written, so half of max_concurrency (32 at
 * the defaults) made some 44 messages a commit, and W4 about 20% slower
 * than with 64.
 */
#define RESULTS_GATHER_MS 20
static TimestampTz results_first_at = 0;
static bool room_to_claim(void);

static bool
results_due(void)
{
	return (need_claim && room_to_claim()) ||
		journey_transport_in_flight() == 0 ||
		n_results >= Max(journey_max_concurrency_per_provider, journey_max_concurrency) ||
		GetCurrentTimestamp() >= TimestampTzPlusMilliseconds(results_first_at, RESULTS_GATHER_MS);
}

static void
add_result(JourneyResult *r)
{
	MemoryContext old = MemoryContextSwitchTo(results_cxt);

	if (n_results == 0)
		results_first_at = GetCurrentTimestamp();
	if (n_results == max_results)
	{
		max_results = Max(64, max_results * 2);
		results = results == NULL ? palloc(sizeof(JourneyResult) * max_results)
			: repalloc(results, sizeof(JourneyResult) * max_results);
	}
	results[n_results] = *r;
	results[n_results].error = r->error ? pstrdup(r->error) : NULL;
	results[n_results].provider_message_id =
		r->provider_message_id ? pstrdup(r->provider_message_id) : NULL;
	n_results++;
	MemoryContextSwitchTo(old);
}

/* A request ends, or never started: its provider's room grows. */
static void
request_done(JourneyMessage *msg, bool requested)
{
	if (msg->id == probation_in_flight)
	{
		probation_in_flight = 0;
		need_claim = true;		/* the lane's next one */
	}
	if (journey_lanes_done(msg, requested))
		need_claim = true;
}

/*
 * Starts the requests of the claimed messages whose provider has room
 * (lanes.c decides which).  Never in a transaction: this is the network.
 */
static void
start_waiting(void)
{
	JourneyMessage *msg;
	bool		too_late;

	while ((msg = journey_lanes_next(&too_late)) != NULL)
	{
		char	   *error = NULL;
		MemoryContext cxt = GetMemoryChunkContext(msg);
		JourneyRequest *req = NULL;

		if (too_late)
		{
			JourneyResult r = {msg->relid, msg->id, msg->attempts, JOURNEY_RETRY,
				"waited past its lease for a free request to its provider; queued again, unsent",
			NULL, 0};

			add_result(&r);
		}
		else if ((req = journey_request_build(msg, cxt, &error)) == NULL)
		{
			JourneyResult r = {msg->relid, msg->id, msg->attempts,
			JOURNEY_FAILED, error, NULL, -1};

			add_result(&r);
		}
		if (req == NULL)
		{
			request_done(msg, false);
			MemoryContextDelete(cxt);
			continue;
		}
		journey_transport_start(req);
	}
}

/* Takes every finished request off the transport as a result to write. */
static void
collect_results(void)
{
	JourneyRequest *req;
	CURLcode	rc;
	long		status;

	while ((req = journey_transport_next_done(&rc, &status)) != NULL)
	{
		JourneyResult r;

		journey_request_classify(req, rc, status, &r);
		add_result(&r);
		request_done(req->msg, true);
		journey_transport_release(req);
	}
	start_waiting();
}

static Datum
make_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	/* Outside a transaction: no catalog look-up, the two types are known. */
	if (elemtype == INT8OID)
		return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, INT8OID,
												  sizeof(int64), FLOAT8PASSBYVAL,
												  TYPALIGN_DOUBLE));
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, TEXTOID,
											  -1, false, TYPALIGN_INT));
}

/*
 * Drops the results once the transaction that wrote them has committed,
 * but those whose message someone else held locked: they are written at a
 * later pass.
 */
static void
forget_results(void)
{
	int			n_held = 0;
	JourneyResult *held;

	for (int i = 0; i < n_results; i++)
		n_held += results[i].held ? 1 : 0;
	held = n_held > 0 ? MemoryContextAlloc(loop_cxt, sizeof(JourneyResult) * n_held) : NULL;
	n_held = 0;
	for (int i = 0; i < n_results; i++)
		if (results[i].held)
		{
			held[n_held] = results[i];
			held[n_held].error = results[i].error ? MemoryContextStrdup(loop_cxt, results[i].error) : NULL;
			held[n_held].provider_message_id = results[i].provider_message_id ?
				MemoryContextStrdup(loop_cxt, results[i].provider_message_id) : NULL;
			n_held++;
		}
	n_results = 0;
	max_results = 0;
	results = NULL;
	MemoryContextReset(results_cxt);
	for (int i = 0; i < n_held; i++)
	{
		held[i].held = false;
		add_result(&held[i]);
	}
	if (n_held > 0)
		next_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 200);
}

/*
 * Applies recorded review requests to the customers no one holds locked;
 * with some left, looks again in a second.
 */
static void
apply_review_marks(void)
{
	bool		isnull;
	int64		left;

	if (SPI_execute_plan(apply_marks_plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "journey sender could not apply review request times");
	left = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (left > 0)
		marks_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
	else
		marks_retry_at = 0;
}

/*
 * Writes the collected results in one transaction (durably: the commit is
 * synchronous).  On an error they stay in memory and are tried again.
 * With keep_open, a successful write leaves its transaction open and
 * returns true: the caller claims the next messages in it and commits both
 * at once, one WAL flush instead of two, then calls forget_results().
 */
static bool
write_results(bool keep_open)
{
	int			n = 0;
	Datum	   *ids = palloc(sizeof(Datum) * n_results);
	Datum	   *statuses = palloc(sizeof(Datum) * n_results);
	Datum	   *errs = palloc(sizeof(Datum) * n_results);
	bool	   *err_nulls = palloc(sizeof(bool) * n_results);
	Datum	   *pmids = palloc(sizeof(Datum) * n_results);
	bool	   *pmid_nulls = palloc(sizeof(bool) * n_results);
	Datum	   *delays = palloc(sizeof(Datum) * n_results);
	bool	   *no_nulls = palloc0(sizeof(bool) * n_results);
	const char **status_of = palloc0(sizeof(char *) * n_results);
	Datum		args[6];
	int			i;
	int64		n_sent = 0,
				n_failed = 0,
				n_retried = 0;
	MemoryContext cxt = CurrentMemoryContext;

	if (!begin_work("writing delivery results"))
	{
		end_work();
		if (journey_installed)
		{
			/* Tables busy: keep the results, try again shortly. */
			next_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 100);
			return false;
		}
		/* journey was dropped while they were in flight: nothing to update. */
		forget_results();
		return false;
	}
	MemoryContextSwitchTo(cxt);
	for (i = 0; i < n_results; i++)
	{
		JourneyResult *r = &results[i];
		const char *status;
		char	   *err = r->error;
		int64		delay = 0;

		/* Claimed from a journey.messages since dropped and created again. */
		if (r->relid != messages_relid)
			continue;
		if (r->outcome == JOURNEY_RETRY && r->attempts >= journey_max_attempts)
		{
			err = psprintf("gave up after %d attempts: %s", r->attempts, r->error);
			status = "failed";
		}
		else if (r->outcome == JOURNEY_RETRY)
		{
			delay = r->retry_after_ms >= 0 ? r->retry_after_ms : backoff_ms(r->attempts);
			status = "queued";
			need_claim = true;	/* look at the queue again when it is due */
		}
		else
			status = r->outcome == JOURNEY_SENT ? "sent" : "failed";
		status_of[i] = status;
		ids[n] = Int64GetDatum(r->id);
		statuses[n] = CStringGetTextDatum(status);
		err_nulls[n] = err == NULL;
		errs[n] = err ? CStringGetTextDatum(err) : (Datum) 0;
		pmid_nulls[n] = r->provider_message_id == NULL;
		pmids[n] = r->provider_message_id ? CStringGetTextDatum(r->provider_message_id) : (Datum) 0;
		delays[n] = Int64GetDatum(delay);
		n++;
	}
	args[0] = make_array(ids, no_nulls, n, INT8OID);
	args[1] = make_array(statuses, no_nulls, n, TEXTOID);
	args[2] = make_array(errs, err_nulls, n, TEXTOID);
	args[3] = make_array(pmids, pmid_nulls, n, TEXTOID);
	args[4] = make_array(delays, no_nulls, n, INT8OID);
	args[5] = CStringGetTextDatum(claim_token);

	if (n > 0)
	{
		if (SPI_execute_plan(result_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "journey sender could not write results");
		for (uint64 k = 0; k < SPI_processed; k++)
		{
			bool		isnull;
			int64		held_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k],
															  SPI_tuptable->tupdesc, 1, &isnull));

			for (i = 0; i < n_results; i++)
				if (results[i].id == held_id && results[i].relid == messages_relid)
					results[i].held = true;
		}
		apply_review_marks();
	}
	/* A held result counts when it is written. */
	for (i = 0; i < n_results; i++)
	{
		if (status_of[i] == NULL || results[i].held)
			continue;
		if (status_of[i][0] == 's')
			n_sent++;
		else if (status_of[i][0] == 'f')
			n_failed++;
		else
			n_retried++;
	}
	journey_health_results(my_slot, journey_transport_in_flight(), n_sent, n_failed, n_retried);
	/* Callbacks that overtook these results; refusals for good. */
	if (n > 0)
		journey_apply_early_deliveries(args[0]);
	for (i = 0; i < n_results; i++)
		if (results[i].suppress_reason && !results[i].held && results[i].relid == messages_relid)
			journey_suppress_message_address(results[i].id, results[i].suppress_reason);
	if (keep_open)
		return true;
	end_work();
	forget_results();
	return false;
}

static JourneyMessage *
message_from_tuple(HeapTuple tup, TupleDesc desc)
{
	JourneyMessage *m = palloc0(sizeof(JourneyMessage));
	bool		isnull;

	Assert(desc->natts == CLAIM_NCOLUMNS);
	m->relid = messages_relid;
	m->id = DatumGetInt64(SPI_getbinval(tup, desc, CLAIM_ID, &isnull));
	m->attempts = DatumGetInt32(SPI_getbinval(tup, desc, CLAIM_ATTEMPTS, &isnull));
	m->business_id = col_text(tup, desc, CLAIM_BUSINESS_ID);
	m->customer_id = col_text(tup, desc, CLAIM_CUSTOMER_ID);
	m->enrollment_id = col_text(tup, desc, CLAIM_ENROLLMENT_ID);
	m->sequence_id = col_text(tup, desc, CLAIM_SEQUENCE_ID);
	m->step_index = col_text(tup, desc, CLAIM_STEP_INDEX);
	m->channel = col_text(tup, desc, CLAIM_CHANNEL);
	m->purpose = col_text(tup, desc, CLAIM_PURPOSE);
	m->to_address = col_text(tup, desc, CLAIM_TO_ADDRESS);
	m->subject = col_text(tup, desc, CLAIM_SUBJECT);
	m->body = col_text(tup, desc, CLAIM_BODY);
	m->kind = col_text(tup, desc, CLAIM_KIND);
	m->endpoint = col_text(tup, desc, CLAIM_ENDPOINT);
	m->from_address = col_text(tup, desc, CLAIM_FROM_ADDRESS);
	m->credentials = col_text(tup, desc, CLAIM_CREDENTIALS);
	m->settings = col_text(tup, desc, CLAIM_SETTINGS);
	m->provider_id = col_text(tup, desc, CLAIM_PROVIDER_ID);
	m->idempotency_key = psprintf("%s-" INT64_FORMAT, installation_id, m->id);
	m->unsubscribe_url = col_text(tup, desc, CLAIM_UNSUBSCRIBE_URL);
	return m;
}

/* Warns once when due messages wait because no provider serves them. */
static void
check_no_provider(void)
{
	bool		isnull;
	int64		count;

	if (SPI_execute_plan(no_provider_plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "journey sender could not count messages without a provider");
	count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (count > 0 && !warned_no_provider)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("journey messages are waiting: no provider is configured for them"),
				 errdetail("%lld due message(s) on channel(s) %s have no enabled provider of their business and no default one.",
						   (long long) count,
						   col_text(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2)),
				 errhint("Insert a row into journey.providers for the channel; the messages stay queued until then.")));
	warned_no_provider = count > 0;
}

/* Copies the claimed rows out of SPI, each into its request's context. */
static void
keep_claimed(JourneyMessage ***msgs, uint64 *got)
{
	MemoryContext old = MemoryContextSwitchTo(loop_cxt);
	uint64		n = SPI_processed;

	if (n == 0)
	{
		MemoryContextSwitchTo(old);
		return;
	}
	*msgs = *msgs == NULL ? palloc(sizeof(JourneyMessage *) * n)
		: repalloc(*msgs, sizeof(JourneyMessage *) * (*got + n));
	for (uint64 i = 0; i < n; i++)
	{
		MemoryContextSwitchTo(AllocSetContextCreate(requests_cxt, "journey request",
													ALLOCSET_SMALL_SIZES));
		(*msgs)[*got + i] = message_from_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc);
	}
	*got += n;
	MemoryContextSwitchTo(old);
}

/*
 * Committed claimed messages join their providers' lanes, and the requests
 * that have room start.  Never in a transaction: this is the network.
 */
static void
hand_to_lanes(JourneyMessage **msgs, uint64 n, TimestampTz claimed_at)
{
	for (uint64 i = 0; i < n; i++)
		journey_lanes_add(msgs[i], claimed_at);
	start_waiting();
	if (n > 0)
		journey_health_claimed(my_slot, journey_transport_in_flight());
}

/*
 * Claims due messages up to the free capacity, commits, then starts their
 * requests.  The claim's commit is durable, like every other: the attempt
 * it counts is what stops a message that crashes the sender from being
 * tried forever.
 *
 * in_xact: write_results has begun the transaction (and written in it);
 * the claim joins it and the commit below covers both.
 */
/*
 * The installation id that, joined to the message id, makes the
 * idempotency key.  Without the row (an administrator deleted it), this
 * server's system identifier and the database's OID stand in: still
 * unique to this database.
 */
static void
read_installation_id(void)
{
	if (SPI_execute_plan(installation_plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "journey sender could not read journey.installation");
	if (SPI_processed > 0)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		strlcpy(installation_id, TextDatumGetCString(d), sizeof(installation_id));
	}
	else
		snprintf(installation_id, sizeof(installation_id), "%s.%u", claim_token, MyDatabaseId);
}

static void
claim_and_send(bool in_xact)
{
	/*
	 * What the sender holds is bounded by the lanes (lanes.c); requests in
	 * flight by journey.max_concurrency as they start, not here: a claim
	 * held to the free requests would move fewer messages per commit.
	 */
	int			want = Min(journey_batch_size, journey_lanes_claim_room());
	TimestampTz now = GetCurrentTimestamp();
	bool		poll = now >= next_poll;
	Datum		args[7];
	JourneyMessage **msgs = NULL;
	uint64		got = 0;
	TimestampTz due = 0;

	need_claim = false;
	if (in_xact)
		pgstat_report_activity(STATE_RUNNING, "writing delivery results and claiming messages");
	else if (!begin_work("claiming messages"))
	{
		end_work();
		/* Busy tables: try again shortly.  No journey: wait for a wake-up. */
		need_claim = false;
		next_poll = TimestampTzPlusMilliseconds(now, journey_poll_interval_ms);
		if (journey_installed)
			next_due = TimestampTzPlusMilliseconds(now, 200);
		return;
	}

	args[0] = CStringGetTextDatum(claim_token);
	args[1] = Int32GetDatum(journey_max_attempts);
	if (reclaim_own)
	{
		bool		isnull;
		bool		ids_null;
		int64		n;
		int64		refunded;
		Datum		ids;

		if (SPI_execute_plan(reclaim_own_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "journey sender could not reclaim its messages");
		n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										RECLAIM_COUNT, &isnull));
		refunded = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											   RECLAIM_REFUNDED, &isnull));
		ids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
							RECLAIM_QUEUED_IDS, &ids_null);
		/*
		 * One of them may be what killed the last sender.  Send them one
		 * at a time in a lane of their own, so that a crash counts an
		 * attempt against that message alone and it fails by itself
		 * instead of taking a whole batch with it.
		 */
		if (!ids_null)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			probation = datumCopy(ids, false, -1);
			MemoryContextSwitchTo(old);
		}
		if (refunded > 0 &&
			SPI_execute_plan(requeue_refunded_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "journey sender could not reclaim its messages");

		if (n > 0)
			ereport(LOG,
					(errmsg("journey sender put back " INT64_FORMAT " message(s) an earlier sender left unfinished", n),
					 errdetail("The ones that may have stopped it are sent again one at a time, beside the rest.")));
		reclaim_own = false;
	}
	if (SPI_execute_plan(reclaim_expired_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "journey sender could not reclaim expired leases");

	/*
	 * The rest of the queue first: after the claim, nothing may fail and
	 * leave the claimed messages' memory behind.
	 */
	if (poll)
	{
		check_no_provider();
		next_poll = TimestampTzPlusMilliseconds(now, journey_poll_interval_ms);
	}
	if (SPI_execute_plan(next_due_plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "journey sender could not look up the next due message");
	else
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		due = isnull ? 0 : DatumGetTimestampTz(d);
	}

	if (marks_retry_at != 0 && now >= marks_retry_at)
		apply_review_marks();

	args[0] = Int32GetDatum(want);
	if (SPI_execute_plan(cancel_unsendable_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "journey sender could not cancel unsendable messages");
	read_installation_id();

	/*
	 * Messages taken back after a crash have a lane of their own, one in
	 * flight at a time (a crash then counts an attempt against that
	 * message alone, so one that kills the sender fails by itself), beside
	 * the batches of everything else, which never wait for them.
	 */
	args[0] = Int32GetDatum(want);
	args[1] = CStringGetTextDatum(claim_token);
	args[2] = Int32GetDatum(journey_lease_ms);
	args[3] = probation != (Datum) 0 ? probation : empty_ids;
	journey_lanes_room_args(&args[4]);
	if (probation != (Datum) 0 && probation_in_flight == 0 && want > 0)
	{
		args[0] = Int32GetDatum(1);
		args[1] = CStringGetTextDatum(probation_token);
		if (SPI_execute_plan(claim_ids_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "journey sender could not claim messages");
		if (SPI_processed == 0)
		{
			/* All of them done (or not due yet): they join the batches. */
			pfree(DatumGetPointer(probation));
			probation = (Datum) 0;
			args[3] = empty_ids;
		}
		else
		{
			keep_claimed(&msgs, &got);
			probation_in_flight = msgs[0]->id;
			want--;
		}
		args[1] = CStringGetTextDatum(claim_token);
	}
	if (want > 0)
	{
		args[0] = Int32GetDatum(want);
		if (SPI_execute_plan(claim_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "journey sender could not claim messages");
		if ((int) SPI_processed == want)
			need_claim = true;	/* there may be more */
		else
			next_due = due;
		claim_found_some = SPI_processed > 0;
		keep_claimed(&msgs, &got);
	}
	end_work();
	/* The results written in this transaction are durable now. */
	if (in_xact)
		forget_results();

	/* Committed: now, and only now, the network. */
	hand_to_lanes(msgs, got, now);
}

/* ---------- what the sender's own executor pass claims ---------- */

/*
 * The messages a pass claimed (JourneyPreclaim), read back in the pass's
 * transaction with what their requests need: the claim's columns.  The
 * provider is picked as the claim picks it; one gone meanwhile (disabled
 * by a commit between the two statements) puts its messages back in the
 * queue, their attempt unspent.
 */
static const char *preclaimed_sql =
"WITH f AS ("
" SELECT m.id, m.attempts, m.business_id, m.customer_id, m.enrollment_id, m.sequence_id,"
"   m.step_index, m.channel, m.message_purpose, m.to_address, m.subject, m.body,"
"   p.id AS provider_id, p.kind, p.endpoint, p.from_address, p.credentials, p.settings"
"  FROM journey.messages m"
"  LEFT JOIN LATERAL (" PROVIDER_OF("m") ") p ON true"
" WHERE m.id OPERATOR(pg_catalog.=) ANY ($1)"
"   AND m.status OPERATOR(pg_catalog.=) 'sending'"
"   AND m.claimed_by OPERATOR(pg_catalog.=) $2),"
" back AS ("
" UPDATE journey.messages m"
"    SET status = 'queued', attempts = m.attempts OPERATOR(pg_catalog.-) 1,"
"        claimed_by = NULL, lease_expires_at = NULL"
"  WHERE m.id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT id FROM f WHERE provider_id IS NULL)))"
" SELECT " CLAIM_OUTPUT("f", "f")
"  FROM f WHERE f.provider_id IS NOT NULL ORDER BY f.id";

static SPIPlanPtr preclaimed_plan = NULL;
static JourneyMessage **preclaimed = NULL;	/* read back, not started yet */
static uint64 n_preclaimed = 0;

/*
 * Fills in what the coming executor pass may claim: the room of the lanes,
 * as a claim would take it.  False when it may claim nothing: no room,
 * or a dead sender's messages not taken back yet (their claimed_by is this
 * server's too, so the first claim must see only theirs).
 */
bool
journey_sender_preclaim_begin(JourneyPreclaim *pc)
{
	Datum		room[3];

	if (reclaim_own || !journey_installed)
		return false;
	pc->total_room = Min(journey_batch_size, journey_lanes_claim_room());
	if (pc->total_room <= 0)
		return false;
	journey_lanes_room_args(room);
	pc->token = CStringGetTextDatum(claim_token);
	pc->lease_ms = journey_lease_ms;
	pc->room_providers = room[0];
	pc->rooms = room[1];
	pc->default_room = DatumGetInt32(room[2]);
	return true;
}

/* In the pass's transaction, after the executor: reads back what it claimed. */
void
journey_sender_preclaim_fetch(JourneyPreclaim *pc)
{
	Oid			types[2] = {INT8ARRAYOID, TEXTOID};
	Datum		args[2];
	Datum	   *elems;

	n_preclaimed = 0;
	preclaimed = NULL;
	if (pc->n_ids == 0)
		return;
	read_installation_id();
	elems = palloc(sizeof(Datum) * pc->n_ids);
	for (int i = 0; i < pc->n_ids; i++)
		elems[i] = Int64GetDatum(pc->ids[i]);
	args[0] = PointerGetDatum(construct_array(elems, pc->n_ids, INT8OID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = pc->token;
	if (SPI_execute_plan(journey_keep_plan(&preclaimed_plan, preclaimed_sql, 2, types),
						 args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "journey sender could not read the messages its executor claimed");
	keep_claimed(&preclaimed, &n_preclaimed);
}

/* Committed: the claimed messages go to their lanes, as a claim's do. */
void
journey_sender_preclaim_start(void)
{
	hand_to_lanes(preclaimed, n_preclaimed, GetCurrentTimestamp());
	n_preclaimed = 0;
	preclaimed = NULL;
}

/* The pass failed: what it read back was rolled back with it. */
void
journey_sender_preclaim_discard(void)
{
	for (uint64 i = 0; i < n_preclaimed; i++)
		MemoryContextDelete(GetMemoryChunkContext(preclaimed[i]));
	n_preclaimed = 0;
	preclaimed = NULL;
}

/*
 * Whether a wake-up asks for a claim: not one that only made enrollments
 * due, for the executor (shmem.c sets the two flags), whose pass claims
 * what it queues; a claim then found nothing, 250 times a second at 600
 * events/s.  Anything else that sets the latch (a reload, a signal)
 * claims, as before.
 */
static bool
woken_for_messages(void)
{
	JourneySenderSlot *s = &journey_sender_shmem->slots[my_slot];
	bool		queued;
	bool		due;

	SpinLockAcquire(&journey_sender_shmem->mutex);
	queued = s->messages_queued;
	s->messages_queued = false;
	due = s->enrollments_due;
	SpinLockRelease(&journey_sender_shmem->mutex);
	return queued || !due || !journey_executor_in_worker;
}

/*
 * Whether there is room for a claim: none in flight, or half the capacity
 * free, so a busy sender claims in batches instead of one by one.
 */
static bool
room_to_claim(void)
{
	int			n = journey_transport_in_flight();

	if (journey_lanes_claim_room() <= 0)
		return false;
	if (probation != (Datum) 0 && probation_in_flight == 0 && n < journey_max_concurrency)
		return true;
	return n == 0 || journey_max_concurrency - n >= Max(1, journey_max_concurrency / 2);
}

/* Requests in flight or results to write: the executor paces its passes. */
static bool
sender_busy(void)
{
	return journey_transport_in_flight() > 0 || n_results > 0;
}

static long
wait_timeout(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		t;
	long		curl_t = journey_transport_timeout_ms();
	long		executor_t = journey_worker_executor_wait_ms(sender_busy());
	bool		room = room_to_claim();

	if (need_claim && room)
		return 0;
	t = next_poll > now ? (long) ((next_poll - now) / 1000) + 1 : 0;
	if (curl_t >= 0)
		t = Min(t, curl_t);
	if (next_due != 0 && room)
		t = Min(t, next_due > now ? (long) ((next_due - now) / 1000) + 1 : 0);
	if (marks_retry_at != 0)
		t = Min(t, marks_retry_at > now ? (long) ((marks_retry_at - now) / 1000) + 1 : 0);
	if (n_results > 0)
		t = Min(t, RESULTS_GATHER_MS);
	if (executor_t >= 0)
		t = Min(t, executor_t);
	return t;
}

/* Logs an error of one pass, cleans up, and lets the loop go on. */
static void
recover_from_error(void)
{
	HOLD_INTERRUPTS();
	EmitErrorReport();
	AbortOutOfAnyTransaction();
	SPI_finish();
	FlushErrorState();
	RESUME_INTERRUPTS();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * The start of the sender and of its executor helper: their arguments,
 * signals, the connection as the sender's role, and the session settings
 * both run under.
 */
void
journey_worker_connect(Datum main_arg, JourneySenderArgs *args, const char *appname)
{
	memcpy(args, MyBgworkerEntry->bgw_extra, sizeof(*args));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(main_arg), args->roleoid, 0);
	pgstat_report_appname(appname);
	/* No declaration pins it for a worker: pinned for the worker's life. */
	SetConfigOption("search_path", JOURNEY_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);
	/*
	 * Every statement here touches a few hundred rows at most, but the
	 * planner's estimates grow with the tables (a claim over 37k customers
	 * was costed past jit_above_cost): compiling it took 84 ms of a 114 ms
	 * claim, 86% of the claim's time under load.
	 */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
}

void
journey_sender_main(Datum main_arg)
{
	JourneySenderArgs args;
	WaitEventSet *wes;

	journey_worker_connect(main_arg, &args, "journey sender");
	my_slot = args.slot;

	journey_sender_attach(my_slot);
	journey_health_started(my_slot);

	snprintf(claim_token, sizeof(claim_token), UINT64_FORMAT, GetSystemIdentifier());
	snprintf(probation_token, sizeof(probation_token), "%s/probation", claim_token);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "journey sender loop",
									 ALLOCSET_DEFAULT_SIZES);
	results_cxt = AllocSetContextCreate(TopMemoryContext, "journey sender results",
										ALLOCSET_DEFAULT_SIZES);
	requests_cxt = AllocSetContextCreate(TopMemoryContext, "journey sender requests",
										 ALLOCSET_DEFAULT_SIZES);
	journey_transport_init();
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		empty_ids = PointerGetDatum(construct_empty_array(INT8OID));
		MemoryContextSwitchTo(old);
	}
	journey_worker_executor_init(my_slot);

	wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, journey_transport_fd(), NULL, NULL);

	if (journey_lease_ms <= journey_http_timeout_ms)
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("journey.lease_ms (%d) is not longer than journey.http_timeout_ms (%d)",
						journey_lease_ms, journey_http_timeout_ms),
				 errhint("A lease shorter than a request lets a message be sent twice.")));
	ereport(LOG, (errmsg("journey sender started for database \"%s\"", args.dbname)));

	for (;;)
	{
		WaitEvent	events[3];
		int			n;
		int			i;

		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);
		n = WaitEventSetWait(wes, wait_timeout(), events, lengthof(events),
							 PG_WAIT_EXTENSION);
		for (i = 0; i < n; i++)
			if (events[i].events & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				if (woken_for_messages())
					need_claim = true;
			}
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			journey_transport_configure();
			need_claim = true;
			next_poll = 0;		/* the interval may have changed */
		}
		if (journey_sender_shmem->slots[my_slot].stop_requested)
		{
			ereport(LOG,
					(errmsg("journey sender leaves database \"%s\" so it can be dropped or renamed",
							args.dbname)));
			proc_exit(0);
		}

		journey_transport_drive();
		collect_results();
		if (GetCurrentTimestamp() >= next_poll ||
			(next_due != 0 && GetCurrentTimestamp() >= next_due) ||
			(marks_retry_at != 0 && GetCurrentTimestamp() >= marks_retry_at))
		{
			need_claim = true;
			next_due = 0;
		}

		/*
		 * One executor batch at most, before the claim: the lanes have
		 * room now that the finished requests left them, and the pass's
		 * messages take it (journey_preclaim) and leave at its commit; a
		 * claim first would fill the lanes from the queue instead.  What
		 * the pass queued unclaimed is claimed below.
		 */
		if (journey_worker_executor_step(sender_busy()))
			need_claim = true;

		PG_TRY();
		{
			if (n_results > 0 && results_due())
			{
				/*
				 * A provider claimed for several rounds ahead is rarely
				 * "half free": claim with every write while the queue
				 * gave something, so one commit moves both.
				 */
				bool		claim = (need_claim || claim_found_some) && room_to_claim();

				/* The claim commits the results too, then forgets them. */
				if (write_results(claim))
					claim_and_send(true);
			}
			else if (n_results == 0 && need_claim && room_to_claim())
				claim_and_send(false);
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(loop_cxt);
			recover_from_error();
			/* Don't spin on a persistent error. */
			need_claim = false;
			next_due = 0;
			next_poll = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
		}
		PG_END_TRY();
	}
}
