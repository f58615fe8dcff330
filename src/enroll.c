/*-------------------------------------------------------------------------
 *
 * enroll.c
 *	  Enrollment: enroll_customer (manual enrollment), stop_enrollment, and
 *	  the cancel-and-log of stopped enrollments that the events trigger and
 *	  the executor share.
 *
 * Each function checks the caller's membership of the business it
 * touches first, then works as the tables' owner (see tenant.c).
 * Enrollment by event happens in the events trigger (trigger.c); events
 * arrive through ingest_event (ingest.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "journey.h"

/* Statements of enroll_customer and stop_enrollment, planned once per backend. */
static SPIPlanPtr plan_enroll_sequence = NULL;
static SPIPlanPtr plan_enroll_customer_check = NULL;
static SPIPlanPtr plan_enroll_existing = NULL;
static SPIPlanPtr plan_enroll_insert = NULL;
static SPIPlanPtr plan_enroll_active_id = NULL;
static SPIPlanPtr plan_stop_lookup = NULL;
static SPIPlanPtr plan_stop = NULL;

PG_FUNCTION_INFO_V1(journey_enroll_customer);
PG_FUNCTION_INFO_V1(journey_stop_enrollment);

/*
 * Cancels the stopped enrollments' queued messages and logs each stop with
 * the number cancelled.
 */
static const char *cancel_and_log_sql =
"WITH stopped AS (SELECT * FROM ROWS FROM (unnest($1), unnest($2),"
" unnest($3), unnest($4), unnest($5))"
"  AS s(id, business_id, step_index, reason, at)),"
" cancelled AS ("
"  UPDATE journey.messages m SET status = 'cancelled',"
"   last_error = 'enrollment stopped: ' || s.reason"
"  FROM stopped s WHERE m.enrollment_id = s.id"
"  AND m.status = 'queued'"
"  RETURNING m.enrollment_id)"
" INSERT INTO journey.enrollment_log"
"  (business_id, enrollment_id, step_index, outcome, detail, at)"
" SELECT s.business_id, s.id, s.step_index, 'stopped',"
"  s.reason || coalesce(' (' || CAST(c.n AS pg_catalog.text)"
"   || ' queued message(s) cancelled)', ''), s.at"
" FROM stopped s LEFT JOIN (SELECT enrollment_id, count(*) AS n"
"  FROM cancelled GROUP BY enrollment_id) c"
"  ON c.enrollment_id = s.id";

static SPIPlanPtr cancel_and_log_plan = NULL;

void
journey_cancel_and_log_stops(SPITupleTable *stopped)
{
	Oid			types[5] = {UUIDARRAYOID, UUIDARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
	TIMESTAMPTZARRAYOID};
	Datum		values[5];
	char		nulls[5];
	bool		isnull;

	Assert(stopped->numvals == 1);
	(void) SPI_getbinval(stopped->vals[0], stopped->tupdesc, 1, &isnull);
	if (isnull)
		return;					/* nothing was stopped */
	for (int i = 0; i < 5; i++)
	{
		values[i] = SPI_getbinval(stopped->vals[0], stopped->tupdesc, i + 1, &isnull);
		nulls[i] = isnull ? 'n' : ' ';
	}

	if (journey_spi_kept(&cancel_and_log_plan, cancel_and_log_sql, 5, types,
						 values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "cancelling the stopped enrollments' messages failed");
}

/*
 * enroll_customer(p_sequence_id, p_customer_id, p_meta, p_as_of)
 */
Datum
journey_enroll_customer(PG_FUNCTION_ARGS)
{
	Datum		sequence_id;
	Datum		customer_id;
	Jsonb	   *meta;
	TimestampTz as_of;
	Datum		business_id;
	char	   *status;
	bool		allow_manual;
	char	   *reentry;
	int64		first_wait;
	bool		isnull;
	Datum		enrollment_id;
	JourneyUserSwitch saved;
	MemoryContext caller_cxt = CurrentMemoryContext;
	Oid			types[7] = {UUIDOID, UUIDOID, UUIDOID, JSONBOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	INT4OID};
	Datum		values[7];
	Datum		version;

	journey_require_arg(fcinfo, 0, "sequence id", "Pass the id returned by journey.create_sequence.");
	journey_require_arg(fcinfo, 1, "customer id", "Pass a journey.customers id.");
	journey_require_arg(fcinfo, 2, "enrollment meta", "Pass '{}' for no meta.");
	journey_require_arg(fcinfo, 3, "p_as_of", "Pass now() or an explicit time.");
	sequence_id = PG_GETARG_DATUM(0);
	customer_id = PG_GETARG_DATUM(1);
	meta = PG_GETARG_JSONB_P(2);
	as_of = PG_GETARG_TIMESTAMPTZ(3);
	journey_require_object(meta, "enrollment meta", "Pass an object such as '{\"source\": \"front desk\"}'.");
	journey_require_finite(as_of, "p_as_of");

	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	values[0] = sequence_id;
	if (journey_spi_kept(&plan_enroll_sequence, "SELECT s.business_id, s.status, s.allow_manual_enroll, s.reentry, "
							  "coalesce((SELECT st.wait_ms FROM journey.sequence_steps st "
							  "  WHERE st.sequence_id = s.id "
							  "  AND st.version = s.version "
							  "  AND st.step_index = 1), 0), s.version "
							  "FROM journey.sequences s WHERE s.id = $1",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "sequence look-up failed");
	if (SPI_processed == 0)
		journey_raise_missing("sequence", sequence_id,
							  "Pass the id returned by journey.create_sequence.");
	business_id = journey_spi_get_copy(0, 1, UUIDOID, &isnull, caller_cxt);
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	allow_manual = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	reentry = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
	first_wait = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	/* New enrollments take the newest version (update_sequence.c). */
	version = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull);

	/* The membership check runs as the caller, not as the owner. */
	journey_restore_user(&saved);
	journey_require_visible(business_id, "sequence", sequence_id,
							"Pass the id returned by journey.create_sequence.");
	journey_become_owner(&saved);

	/*
	 * One answer for a customer that does not exist and one of another
	 * business, so that the error tells nobody another tenant's ids.
	 */
	values[0] = customer_id;
	values[1] = business_id;
	if (journey_spi_kept(&plan_enroll_customer_check, "SELECT 1 FROM journey.customers WHERE id = $1 "
							  "AND business_id = $2",
							  2, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "customer look-up failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("customer %s is not a customer of business %s, the business of sequence %s",
						journey_uuid_text(customer_id), journey_uuid_text(business_id), journey_uuid_text(sequence_id)),
				 errhint("Enroll customers only in journeys of their own business; create the customer first, or enroll it through journey.ingest_event.")));

	if (strcmp(status, "active") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sequence %s is %s, not active", journey_uuid_text(sequence_id), status),
				 errhint("Activate it first: UPDATE journey.sequences SET status = 'active' WHERE id = '%s'.",
						 journey_uuid_text(sequence_id))));
	if (!allow_manual)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sequence %s does not allow manual enrollment", journey_uuid_text(sequence_id)),
				 errhint("Set allow_manual_enroll to true, or let its trigger event enroll customers.")));

	/* Idempotent: an active enrollment is the answer. */
	values[0] = sequence_id;
	values[1] = customer_id;
	if (journey_spi_kept(&plan_enroll_existing, "SELECT id, status = 'active' FROM journey.sequence_enrollments "
							  "WHERE business_id = $3 "
							  "AND customer_id = $2 "
							  "AND sequence_id = $1 "
							  "ORDER BY status = 'active' DESC LIMIT 1",
							  3, (Oid[]){UUIDOID, UUIDOID, UUIDOID},
							  (Datum[]){sequence_id, customer_id, business_id}, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "enrollment look-up failed");
	if (SPI_processed > 0)
	{
		bool		active = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

		if (active)
		{
			enrollment_id = journey_spi_get_copy(0, 1, UUIDOID, &isnull, caller_cxt);
			SPI_finish();
			journey_restore_user(&saved);
			PG_RETURN_DATUM(enrollment_id);
		}
		if (strcmp(reentry, "never") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("customer %s was enrolled in sequence %s before, and its reentry is never",
							journey_uuid_text(customer_id), journey_uuid_text(sequence_id)),
					 errhint("Set the sequence's reentry to after_exit to let customers enter again.")));
	}

	values[0] = business_id;
	values[1] = sequence_id;
	values[2] = customer_id;
	values[3] = JsonbPGetDatum(meta);
	values[4] = TimestampTzGetDatum(as_of);
	values[5] = TimestampTzGetDatum(journey_timestamp_add_ms(as_of, first_wait));
	values[6] = version;
	if (journey_spi_kept(&plan_enroll_insert, "INSERT INTO journey.sequence_enrollments "
							  "(business_id, sequence_id, customer_id, current_step_index, next_run_at, "
							  " meta, enrolled_at, sequence_version) "
							  "VALUES ($1, $2, $3, 1, $6, $4, $5, $7) "
							  "ON CONFLICT (sequence_id, customer_id) WHERE status = 'active' "
							  "DO NOTHING RETURNING id",
							  7, types, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "inserting the enrollment failed");
	if (SPI_processed > 0)
	{
		enrollment_id = journey_spi_get_copy(0, 1, UUIDOID, &isnull, caller_cxt);
		journey_note_enrollment_due();
	}
	else
	{
		/* A concurrent call enrolled the customer first: return its enrollment. */
		if (journey_spi_kept(&plan_enroll_active_id, "SELECT id FROM journey.sequence_enrollments "
								  "WHERE sequence_id = $2 "
								  "AND customer_id = $3 "
								  "AND status = 'active'",
								  3, types, values, NULL, false, 1) != SPI_OK_SELECT ||
			SPI_processed == 0)
			elog(ERROR, "concurrent enrollment vanished");
		enrollment_id = journey_spi_get_copy(0, 1, UUIDOID, &isnull, caller_cxt);
	}
	SPI_finish();
	journey_restore_user(&saved);
	PG_RETURN_DATUM(enrollment_id);
}

/*
 * stop_enrollment(p_enrollment_id, p_reason): stops an active enrollment
 * and cancels its queued messages.  Stopping one that already ended
 * changes nothing.
 */
Datum
journey_stop_enrollment(PG_FUNCTION_ARGS)
{
	Datum		enrollment_id;
	char	   *reason;
	Datum		business_id;
	JourneyUserSwitch saved;
	MemoryContext caller_cxt = CurrentMemoryContext;
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2];
	bool		isnull;

	journey_require_arg(fcinfo, 0, "enrollment id", "Pass a journey.sequence_enrollments id.");
	enrollment_id = PG_GETARG_DATUM(0);
	reason = PG_ARGISNULL(1) ? "manual" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (reason[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stop reason must not be empty"),
				 errhint("Say why, e.g. 'customer asked', or pass NULL for 'manual'.")));

	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = enrollment_id;
	values[1] = CStringGetTextDatum(reason);
	if (journey_spi_kept(&plan_stop_lookup, "SELECT business_id FROM journey.sequence_enrollments WHERE id = $1",
							  2, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "enrollment look-up failed");
	if (SPI_processed == 0)
		journey_raise_missing("enrollment", enrollment_id,
							  "Pass an id from journey.sequence_enrollments.");
	business_id = journey_spi_get_copy(0, 1, UUIDOID, &isnull, caller_cxt);
	journey_restore_user(&saved);
	journey_require_visible(business_id, "enrollment", enrollment_id,
							"Pass an id from journey.sequence_enrollments.");
	journey_become_owner(&saved);

	if (journey_spi_kept(&plan_stop, "WITH stopped AS ("
							  " UPDATE journey.sequence_enrollments SET status = 'stopped', stop_reason = $2,"
							  "  finished_at = now(), next_run_at = NULL"
							  " WHERE id = $1 AND status = 'active'"
							  " RETURNING id, business_id, current_step_index, stop_reason, finished_at) "
							  JOURNEY_STOPPED_ARRAYS_SELECT,
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "stopping the enrollment failed");
	journey_cancel_and_log_stops(SPI_tuptable);
	SPI_finish();
	journey_restore_user(&saved);
	PG_RETURN_VOID();
}
