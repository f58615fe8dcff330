/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  Trigger matching: the statement-level AFTER INSERT trigger on
 *	  journey.events, fired by ingest_event and by plain INSERTs alike.
 *
 * It works on the statement's transition table with two set-based
 * statements, so one INSERT ... SELECT of 100k events costs two queries,
 * not 100k:
 *
 *	1. exit events stop every active enrollment of their customer whose
 *	   sequence lists the event type in exit_event_types, cancelling the
 *	   enrollment's queued messages;
 *	2. trigger events enroll their customer, as of occurred_at, in every
 *	   active sequence of the business with that trigger_event_type,
 *	   honouring reentry.  Within one statement, a customer is enrolled
 *	   once per sequence (by the earliest event), and not at all when the
 *	   same statement also carries a later exit event for that journey.
 *	   The enrollment row itself records when and by which event it began
 *	   (enrolled_at, trigger_event_id); the log holds what happened after.
 *
 * Both run as the tables' owner: the inserting role passed the events'
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
	" SELECT e.business_id, e.customer_id, e.event_type, pg_catalog.max(e.occurred_at) AS last_at" \
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
"   stop_reason = 'exit_event:' OPERATOR(pg_catalog.||) ex.event_type,"
"   finished_at = ex.last_at, last_event_at = ex.last_at, next_run_at = NULL"
"  FROM exit_events ex JOIN journey.sequences s"
"   ON s.business_id OPERATOR(pg_catalog.=) ex.business_id"
"  AND ex.event_type OPERATOR(pg_catalog.=) ANY (s.exit_event_types)"
"  WHERE en.business_id OPERATOR(pg_catalog.=) ex.business_id"
"  AND en.customer_id OPERATOR(pg_catalog.=) ex.customer_id"
"  AND en.sequence_id OPERATOR(pg_catalog.=) s.id"
"  AND en.status OPERATOR(pg_catalog.=) 'active'"
"  RETURNING en.id, en.business_id, en.current_step_index, en.stop_reason, en.finished_at)"
" " JOURNEY_STOPPED_ARRAYS_SELECT;

static const char *enroll_sql =
"WITH " EXIT_EVENTS_CTE ","
" candidates AS ("
"  SELECT DISTINCT ON (s.id, e.customer_id)"
"   s.id AS sequence_id, s.business_id, e.customer_id, e.id AS event_id, e.event_type,"
"   e.occurred_at, e.payload, s.reentry, s.exit_event_types"
"  FROM journey_new_events e"
"  JOIN journey.sequences s ON s.business_id OPERATOR(pg_catalog.=) e.business_id"
"   AND s.trigger_event_type OPERATOR(pg_catalog.=) e.event_type"
"   AND s.status OPERATOR(pg_catalog.=) 'active'"
"  WHERE e.customer_id IS NOT NULL"
"  ORDER BY s.id, e.customer_id, e.occurred_at, e.id),"
" enrolled AS ("
"  INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id,"
"   current_step_index, next_run_at, last_event_at, meta, enrolled_at, trigger_event_id)"
"  SELECT c.business_id, c.sequence_id, c.customer_id, 1,"
"   c.occurred_at OPERATOR(pg_catalog.+) (coalesce(st.wait_ms, 0)::pg_catalog.float8"
"    OPERATOR(pg_catalog.*) interval '1 millisecond'),"
"   c.occurred_at, pg_catalog.jsonb_build_object('event', c.payload), c.occurred_at, c.event_id"
"  FROM candidates c"
"  LEFT JOIN journey.sequence_steps st ON st.sequence_id OPERATOR(pg_catalog.=) c.sequence_id"
"   AND st.step_index OPERATOR(pg_catalog.=) 1"
"  WHERE (c.reentry OPERATOR(pg_catalog.=) 'after_exit' OR NOT EXISTS ("
"    SELECT 1 FROM journey.sequence_enrollments x"
"    WHERE x.business_id OPERATOR(pg_catalog.=) c.business_id"
"    AND x.customer_id OPERATOR(pg_catalog.=) c.customer_id"
"    AND x.sequence_id OPERATOR(pg_catalog.=) c.sequence_id))"
"  AND NOT EXISTS ("
"    SELECT 1 FROM exit_events ex"
"    WHERE ex.business_id OPERATOR(pg_catalog.=) c.business_id"
"    AND ex.customer_id OPERATOR(pg_catalog.=) c.customer_id"
"    AND ex.event_type OPERATOR(pg_catalog.=) ANY (c.exit_event_types)"
"    AND ex.last_at OPERATOR(pg_catalog.>=) c.occurred_at)"
"  ON CONFLICT (sequence_id, customer_id) WHERE status OPERATOR(pg_catalog.=) 'active' DO NOTHING"
"  RETURNING 1)"
" SELECT pg_catalog.count(*) FROM enrolled";

static SPIPlanPtr stop_plan = NULL;
static SPIPlanPtr enroll_plan = NULL;

Datum
journey_match_events(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	JourneyUserSwitch saved;
	int			rc;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		trigdata->tg_newtable == NULL)
		elog(ERROR, "journey_match_events must be an AFTER INSERT statement trigger with a NEW TABLE");

	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_register_trigger_data(trigdata);
	if (rc != SPI_OK_TD_REGISTER)
		elog(ERROR, "registering the events transition table failed: %s", SPI_result_code_string(rc));

	rc = SPI_execute_plan(journey_keep_plan(&stop_plan, stop_sql, 0, NULL), NULL, NULL, false, 0);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "stopping enrollments on exit events failed: %s", SPI_result_code_string(rc));
	journey_cancel_and_log_stops(SPI_tuptable);
	rc = SPI_execute_plan(journey_keep_plan(&enroll_plan, enroll_sql, 0, NULL), NULL, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "enrolling customers on trigger events failed: %s", SPI_result_code_string(rc));

	SPI_finish();
	journey_restore_user(&saved);
	return PointerGetDatum(NULL);
}
