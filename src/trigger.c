/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  Trigger matching: the statement-level AFTER INSERT trigger on
 *	  journey.events, fired by ingest_event and by plain INSERTs alike.
 *
 * It works on the statement's transition table with set-based statements,
 * so one INSERT ... SELECT of 100k events costs a few queries, not 100k.
 * A first, read-only one says whether the statement carries exit or
 * awaited events at all; steps 1 and 2 run only for those that do:
 *
 *	1. exit events stop every active enrollment of their customer whose
 *	   sequence lists the event type in exit_event_types, cancelling the
 *	   enrollment's queued messages;
 *	2. awaited events make due at once every active enrollment of their
 *	   customer waiting at a wait_until step for that event type, and mark
 *	   it (meta.wait_until) so the executor takes the step's "then" arm;
 *	3. trigger events enroll their customer, as of occurred_at, in every
 *	   active sequence of the business with that trigger_event_type,
 *	   honouring reentry.  Within one statement, a customer is enrolled
 *	   once per sequence (by the earliest event), and not at all when the
 *	   same statement also carries a later exit event for that journey.
 *	   The enrollment row itself records when and by which event it began
 *	   (enrolled_at, trigger_event_id); the log holds what happened after.
 *
 * All run as the tables' owner: the inserting role passed the events'
 * own privilege and row-level checks, and the customer foreign key on
 * events guarantees every customer belongs to its event's business.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_match_events);

/*
 * Exit events of this statement, one row per (customer, type), restricted
 * to types some sequence of the business lists as an exit.  Probed per
 * event through the business's own sequences (sequences_trigger_idx leads
 * with business_id): what other businesses' sequences hold costs nothing.
 */
#define EXIT_EVENTS_CTE \
	"exit_events AS MATERIALIZED (" \
	" SELECT e.business_id, e.customer_id, e.event_type, max(e.occurred_at) AS last_at" \
	" FROM journey_new_events e" \
	" WHERE e.customer_id IS NOT NULL" \
	"   AND EXISTS (SELECT 1 FROM journey.sequences s" \
	"                WHERE s.business_id OPERATOR(pg_catalog.=) e.business_id" \
	"                  AND e.event_type OPERATOR(pg_catalog.=) ANY (s.exit_event_types))" \
	" GROUP BY e.business_id, e.customer_id, e.event_type)"

/*
 * Stops the enrollments and returns them as arrays.  Cancelling their
 * messages and logging happen in a later statement (see
 * journey_cancel_and_log_stops): only a new snapshot sees a message that an
 * executor, which held the enrollment's lock while this statement waited,
 * queued just before it committed.
 */
static const char *stop_sql =
"WITH " EXIT_EVENTS_CTE ","
" stopped AS ("
"  UPDATE journey.sequence_enrollments en SET status = 'stopped',"
"   stop_reason = 'exit_event:' || ex.event_type,"
"   finished_at = ex.last_at, last_event_at = ex.last_at, next_run_at = NULL"
"  FROM exit_events ex JOIN journey.sequences s"
"   ON s.business_id = ex.business_id"
"  AND ex.event_type = ANY (s.exit_event_types)"
"  WHERE en.business_id = ex.business_id"
"  AND en.customer_id = ex.customer_id"
"  AND en.sequence_id = s.id"
"  AND en.status = 'active'"
"  RETURNING en.id, en.business_id, en.current_step_index, en.stop_reason, en.finished_at)"
" " JOURNEY_STOPPED_ARRAYS_SELECT;

/*
 * The enrollment statement, with (EXITS) or without the statement's own
 * exit events: a customer is not enrolled by an event followed, in the
 * same statement, by an exit event of that journey.
 */
#define ENROLL_SQL(EXIT_EVENTS, NOT_EXITED) \
"WITH " EXIT_EVENTS \
" candidates AS (" \
"  SELECT DISTINCT ON (s.id, e.customer_id)" \
"   s.id AS sequence_id, s.business_id, e.customer_id, e.id AS event_id, e.event_type," \
"   e.occurred_at, e.payload, s.reentry, s.exit_event_types, s.version" \
"  FROM journey_new_events e" \
"  JOIN journey.sequences s ON s.business_id = e.business_id" \
"   AND s.trigger_event_type = e.event_type" \
"   AND s.status = 'active'" \
"  WHERE e.customer_id IS NOT NULL" \
"  ORDER BY s.id, e.customer_id, e.occurred_at, e.id)," \
" enrolled AS (" \
"  INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id," \
"   current_step_index, next_run_at, last_event_at, meta, enrolled_at, trigger_event_id," \
"   sequence_version)" \
"  SELECT c.business_id, c.sequence_id, c.customer_id, 1," \
"   c.occurred_at + (coalesce(st.wait_ms, 0)::float8" \
"    * interval '1 millisecond')," \
"   c.occurred_at, jsonb_build_object('event', c.payload), c.occurred_at, c.event_id," \
"   c.version" \
"  FROM candidates c" \
"  LEFT JOIN journey.sequence_steps st ON st.sequence_id = c.sequence_id" \
"   AND st.version = c.version AND st.step_index = 1" \
"  WHERE (c.reentry = 'after_exit' OR NOT EXISTS (" \
"    SELECT 1 FROM journey.sequence_enrollments x" \
"    WHERE x.business_id = c.business_id" \
"    AND x.customer_id = c.customer_id" \
"    AND x.sequence_id = c.sequence_id))" \
NOT_EXITED \
"  ON CONFLICT (sequence_id, customer_id) WHERE status = 'active' DO NOTHING" \
"  RETURNING 1)" \
" SELECT count(*) FROM enrolled"

static const char *enroll_sql = ENROLL_SQL(EXIT_EVENTS_CTE ",",
"  AND NOT EXISTS ("
"    SELECT 1 FROM exit_events ex"
"    WHERE ex.business_id = c.business_id"
"    AND ex.customer_id = c.customer_id"
"    AND ex.event_type = ANY (c.exit_event_types)"
"    AND ex.last_at >= c.occurred_at)");

/* The same for a statement that carries no exit event. */
static const char *enroll_no_exits_sql = ENROLL_SQL("", "");

/*
 * wait_until: the earliest awaited event of the statement per waiting
 * enrollment.  The marker records which step it arrived for and the
 * deadline it had to beat (the enrollment's next_run_at, set on arrival at
 * the step to arrival + timeout_ms), so the executor decides event_arrived
 * or timed_out from the row alone, whenever it runs.  An event that
 * occurred after the deadline leaves next_run_at alone: the timeout is due
 * first.  The step and version are checked again on the row being updated,
 * so an enrollment an executor moved on meanwhile is left alone.
 * The awaited steps come first, materialised: most events await nothing,
 * and joined the other way round the planner walked every active
 * enrollment of the business for each event (4 ms an event at 9k).
 */
static const char *wake_sql =
"WITH awaited AS MATERIALIZED ("
"  SELECT e.id AS event_id, e.occurred_at, e.business_id, e.customer_id,"
"         st.sequence_id, st.version, st.step_index"
"    FROM journey_new_events e"
"    JOIN journey.sequence_steps st"
"      ON st.business_id OPERATOR(pg_catalog.=) e.business_id"
"     AND st.kind OPERATOR(pg_catalog.=) 'wait_until'"
"     AND (st.branch_config OPERATOR(pg_catalog.->>) 'event') OPERATOR(pg_catalog.=) e.event_type"
"   WHERE e.customer_id IS NOT NULL)"
"UPDATE journey.sequence_enrollments en"
"   SET next_run_at = LEAST(en.next_run_at, w.occurred_at),"
"       meta = en.meta OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('wait_until',"
"        pg_catalog.jsonb_build_object('step', w.step_index, 'event_id', w.event_id,"
"         'occurred_at', w.occurred_at, 'timeout_at', en.next_run_at))"
"  FROM (SELECT DISTINCT ON (x.id) x.id, x.current_step_index AS step_index,"
"               x.sequence_version, a.event_id, a.occurred_at"
"          FROM awaited a"
"          JOIN journey.sequence_enrollments x"
"            ON x.sequence_id OPERATOR(pg_catalog.=) a.sequence_id"
"           AND x.customer_id OPERATOR(pg_catalog.=) a.customer_id"
"           AND x.status OPERATOR(pg_catalog.=) 'active'"
"           AND x.business_id OPERATOR(pg_catalog.=) a.business_id"
"           AND x.sequence_version OPERATOR(pg_catalog.=) a.version"
"           AND x.current_step_index OPERATOR(pg_catalog.=) a.step_index"
"         ORDER BY x.id, a.occurred_at, a.event_id) w"
" WHERE en.id OPERATOR(pg_catalog.=) w.id"
"   AND en.status OPERATOR(pg_catalog.=) 'active'"
"   AND en.current_step_index OPERATOR(pg_catalog.=) w.step_index"
"   AND en.sequence_version OPERATOR(pg_catalog.=) w.sequence_version"
"   AND ((en.meta OPERATOR(pg_catalog.#>>) '{wait_until,step}')::pg_catalog.int4"
"        IS DISTINCT FROM en.current_step_index)";

/*
 * Whether the statement carries exit events, and events some wait_until
 * step awaits.  Most carry neither, and the statements that act on them
 * cost even when they change nothing: each UPDATE opens every index of
 * sequence_enrollments, 20% of an ingest_event call.  This SELECT costs a
 * fraction of that.  Its snapshot is the one they would have had: a
 * sequence that gains an exit type meanwhile is the same race as one
 * changed just after the statement.
 */
static const char *gate_sql =
"SELECT EXISTS (SELECT 1 FROM journey_new_events e"
"                JOIN journey.sequences s"
"                  ON s.business_id OPERATOR(pg_catalog.=) e.business_id"
"                 AND e.event_type OPERATOR(pg_catalog.=) ANY (s.exit_event_types)"
"               WHERE e.customer_id IS NOT NULL),"
"       EXISTS (SELECT 1 FROM journey_new_events e"
"                JOIN journey.sequence_steps st"
"                  ON st.business_id OPERATOR(pg_catalog.=) e.business_id"
"                 AND st.kind OPERATOR(pg_catalog.=) 'wait_until'"
"                 AND (st.branch_config OPERATOR(pg_catalog.->>) 'event') OPERATOR(pg_catalog.=) e.event_type"
"               WHERE e.customer_id IS NOT NULL)";

static SPIPlanPtr gate_plan = NULL;
static SPIPlanPtr enroll_no_exits_plan = NULL;
static SPIPlanPtr stop_plan = NULL;
static SPIPlanPtr wake_plan = NULL;
static SPIPlanPtr enroll_plan = NULL;

Datum
journey_match_events(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	JourneyUserSwitch saved;
	int			rc;
	bool		has_exits;
	bool		has_awaited;
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		trigdata->tg_newtable == NULL)
		elog(ERROR, "journey_match_events must be an AFTER INSERT statement trigger with a NEW TABLE");
	/* A restored event already had its effects: they are in the dump. */
	if (journey_loading_dump())
		return PointerGetDatum(NULL);

	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_register_trigger_data(trigdata);
	if (rc != SPI_OK_TD_REGISTER)
		elog(ERROR, "registering the events transition table failed: %s", SPI_result_code_string(rc));

	/*
	 * Between installing a new library and ALTER EXTENSION UPDATE, the
	 * statements below name columns the old schema lacks.
	 */
	if (!journey_schema_has_versions())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("journey's schema is older than its library"),
				 errdetail("Events are matched to journeys by the installed library, which needs version 0.3 of the schema."),
				 errhint("Run ALTER EXTENSION journey UPDATE.")));
	rc = SPI_execute_plan(journey_keep_plan(&gate_plan, gate_sql, 0, NULL), NULL, NULL, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "looking for exit and awaited events failed: %s", SPI_result_code_string(rc));
	has_exits = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	has_awaited = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

	if (has_exits)
	{
		rc = SPI_execute_plan(journey_keep_plan(&stop_plan, stop_sql, 0, NULL), NULL, NULL, false, 0);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "stopping enrollments on exit events failed: %s", SPI_result_code_string(rc));
		journey_cancel_and_log_stops(SPI_tuptable);
	}
	if (has_awaited)
	{
		rc = SPI_execute_plan(journey_keep_plan(&wake_plan, wake_sql, 0, NULL), NULL, NULL,
							  false, 0);
		if (rc != SPI_OK_UPDATE)
			elog(ERROR, "waking enrollments that await events failed: %s",
				 SPI_result_code_string(rc));
		/* They are due now: the sender's executor runs them at commit. */
		if (SPI_processed > 0)
			journey_note_enrollment_due();
	}
	rc = has_exits ?
		SPI_execute_plan(journey_keep_plan(&enroll_plan, enroll_sql, 0, NULL), NULL, NULL, false, 0) :
		SPI_execute_plan(journey_keep_plan(&enroll_no_exits_plan, enroll_no_exits_sql, 0, NULL),
						 NULL, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "enrolling customers on trigger events failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) > 0)
			journey_note_enrollment_due();
	}

	SPI_finish();
	journey_restore_user(&saved);
	return PointerGetDatum(NULL);
}
