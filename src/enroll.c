/*-------------------------------------------------------------------------
 *
 * enroll.c
 *	  Enrollment API: enroll_customer (manual enrollment), ingest_event
 *	  (what webhooks call: resolves the customer, records the event once
 *	  per idempotency key) and stop_enrollment.
 *
 * Each function checks the caller's membership of the business it
 * touches first, then works as the tables' owner (see tenant.c).  Trigger
 * matching for ingested events happens in the events trigger (trigger.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/lock.h"

#include "journey.h"

/* Statements of the API functions, planned once per backend (journey_spi_kept). */
static SPIPlanPtr plan_business_exists = NULL;
static SPIPlanPtr plan_insert_log = NULL;
static SPIPlanPtr plan_enroll_sequence = NULL;
static SPIPlanPtr plan_enroll_customer_check = NULL;
static SPIPlanPtr plan_enroll_existing = NULL;
static SPIPlanPtr plan_enroll_insert = NULL;
static SPIPlanPtr plan_enroll_active_id = NULL;
static SPIPlanPtr plan_customer_by_id = NULL;
static SPIPlanPtr plan_customer_by_external_id = NULL;
static SPIPlanPtr plan_customer_update = NULL;
static SPIPlanPtr plan_customer_upsert = NULL;
static SPIPlanPtr plan_event_by_key = NULL;
/* Run before and after the insert; one text, so one plan serves both. */
static const char *event_by_key_sql =
"SELECT id FROM journey.events WHERE business_id OPERATOR(pg_catalog.=) $1 "
"AND idempotency_key OPERATOR(pg_catalog.=) $5";
static SPIPlanPtr plan_event_insert = NULL;
static SPIPlanPtr plan_stop_lookup = NULL;
static SPIPlanPtr plan_stop = NULL;

PG_FUNCTION_INFO_V1(journey_enroll_customer);
PG_FUNCTION_INFO_V1(journey_ingest_event);
PG_FUNCTION_INFO_V1(journey_stop_enrollment);

static void
require_arg(FunctionCallInfo fcinfo, int argno, const char *name, const char *hint)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name),
				 errhint("%s", hint)));
}

static void
require_finite(TimestampTz ts, const char *name)
{
	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a finite time", name),
				 errhint("Pass a real moment such as now() or '2026-01-15 09:00+00'.")));
}

static void
require_object(Jsonb *value, const char *name, const char *hint)
{
	if (!JB_ROOT_IS_OBJECT(value) || JB_ROOT_IS_SCALAR(value))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", name),
				 errhint("%s", hint)));
}

static char *
uuid_text(Datum id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, id));
}

/* Copies a by-reference SPI result out of the SPI memory context. */
static Datum
spi_get_copy(int row, int col, Oid type, bool *isnull, MemoryContext cxt)
{
	Datum		value = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
	MemoryContext old;
	int16		typlen;
	bool		typbyval;

	if (*isnull)
		return (Datum) 0;
	get_typlenbyval(type, &typlen, &typbyval);
	old = MemoryContextSwitchTo(cxt);
	value = datumCopy(value, typbyval, typlen);
	MemoryContextSwitchTo(old);
	return value;
}

void
journey_require_business_exists(Datum business_id)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {business_id};
	bool		exists;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (journey_spi_kept(&plan_business_exists, "SELECT 1 FROM journey.businesses WHERE id OPERATOR(pg_catalog.=) $1",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "business look-up failed");
	exists = SPI_processed > 0;
	SPI_finish();
	if (!exists)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("business %s does not exist", uuid_text(business_id)),
				 errhint("Create it with journey.create_business, or pass the id it returned.")));
}

void
journey_log_decision(Datum business_id, Datum enrollment_id,
					 int step_index, bool step_is_null,
					 const char *outcome, const char *detail,
					 TimestampTz at)
{
	Oid			types[6] = {UUIDOID, UUIDOID, INT4OID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = business_id;
	values[1] = enrollment_id;
	values[2] = Int32GetDatum(step_index);
	nulls[2] = step_is_null ? 'n' : ' ';
	values[3] = CStringGetTextDatum(outcome);
	values[4] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
	nulls[4] = detail ? ' ' : 'n';
	values[5] = TimestampTzGetDatum(at);
	if (journey_spi_kept(&plan_insert_log, "INSERT INTO journey.enrollment_log "
							  "(business_id, enrollment_id, step_index, outcome, detail, at) "
							  "VALUES ($1, $2, $3, $4, $5, $6)",
							  6, types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "writing the enrollment log failed");
}

/*
 * Cancels the stopped enrollments' queued messages and logs each stop with
 * the number cancelled.
 */
static const char *cancel_and_log_sql =
"WITH stopped AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
" pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5))"
"  AS s(id, business_id, step_index, reason, at)),"
" cancelled AS ("
"  UPDATE journey.messages m SET status = 'cancelled',"
"   last_error = 'enrollment stopped: ' OPERATOR(pg_catalog.||) s.reason"
"  FROM stopped s WHERE m.enrollment_id OPERATOR(pg_catalog.=) s.id"
"  AND m.status OPERATOR(pg_catalog.=) 'queued'"
"  RETURNING m.enrollment_id)"
" INSERT INTO journey.enrollment_log"
"  (business_id, enrollment_id, step_index, outcome, detail, at)"
" SELECT s.business_id, s.id, s.step_index, 'stopped',"
"  s.reason OPERATOR(pg_catalog.||) coalesce(' (' OPERATOR(pg_catalog.||) c.n"
"   OPERATOR(pg_catalog.||) ' queued message(s) cancelled)', ''), s.at"
" FROM stopped s LEFT JOIN (SELECT enrollment_id, pg_catalog.count(*) AS n"
"  FROM cancelled GROUP BY enrollment_id) c"
"  ON c.enrollment_id OPERATOR(pg_catalog.=) s.id";

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
	Oid			types[6] = {UUIDOID, UUIDOID, UUIDOID, JSONBOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		values[6];

	require_arg(fcinfo, 0, "sequence id", "Pass the id returned by journey.create_sequence.");
	require_arg(fcinfo, 1, "customer id", "Pass a journey.customers id.");
	require_arg(fcinfo, 2, "enrollment meta", "Pass '{}' for no meta.");
	require_arg(fcinfo, 3, "p_as_of", "Pass now() or an explicit time.");
	sequence_id = PG_GETARG_DATUM(0);
	customer_id = PG_GETARG_DATUM(1);
	meta = PG_GETARG_JSONB_P(2);
	as_of = PG_GETARG_TIMESTAMPTZ(3);
	require_object(meta, "enrollment meta", "Pass an object such as '{\"source\": \"front desk\"}'.");
	require_finite(as_of, "p_as_of");

	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	values[0] = sequence_id;
	if (journey_spi_kept(&plan_enroll_sequence, "SELECT s.business_id, s.status, s.allow_manual_enroll, s.reentry, "
							  "coalesce((SELECT st.wait_ms FROM journey.sequence_steps st "
							  "  WHERE st.sequence_id OPERATOR(pg_catalog.=) s.id "
							  "  AND st.step_index OPERATOR(pg_catalog.=) 1), 0) "
							  "FROM journey.sequences s WHERE s.id OPERATOR(pg_catalog.=) $1",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "sequence look-up failed");
	if (SPI_processed == 0)
		journey_raise_missing("sequence", sequence_id,
							  "Pass the id returned by journey.create_sequence.");
	business_id = spi_get_copy(0, 1, UUIDOID, &isnull, caller_cxt);
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	allow_manual = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	reentry = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
	first_wait = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));

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
	if (journey_spi_kept(&plan_enroll_customer_check, "SELECT 1 FROM journey.customers WHERE id OPERATOR(pg_catalog.=) $1 "
							  "AND business_id OPERATOR(pg_catalog.=) $2",
							  2, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "customer look-up failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("customer %s is not a customer of business %s, the business of sequence %s",
						uuid_text(customer_id), uuid_text(business_id), uuid_text(sequence_id)),
				 errhint("Enroll customers only in journeys of their own business; create the customer first, or enroll it through journey.ingest_event.")));

	if (strcmp(status, "active") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sequence %s is %s, not active", uuid_text(sequence_id), status),
				 errhint("Activate it first: UPDATE journey.sequences SET status = 'active' WHERE id = '%s'.",
						 uuid_text(sequence_id))));
	if (!allow_manual)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sequence %s does not allow manual enrollment", uuid_text(sequence_id)),
				 errhint("Set allow_manual_enroll to true, or let its trigger event enroll customers.")));

	/* Idempotent: an active enrollment is the answer. */
	values[0] = sequence_id;
	values[1] = customer_id;
	if (journey_spi_kept(&plan_enroll_existing, "SELECT id, status OPERATOR(pg_catalog.=) 'active' FROM journey.sequence_enrollments "
							  "WHERE business_id OPERATOR(pg_catalog.=) $3 "
							  "AND customer_id OPERATOR(pg_catalog.=) $2 "
							  "AND sequence_id OPERATOR(pg_catalog.=) $1 "
							  "ORDER BY status OPERATOR(pg_catalog.=) 'active' DESC LIMIT 1",
							  3, (Oid[]){UUIDOID, UUIDOID, UUIDOID},
							  (Datum[]){sequence_id, customer_id, business_id}, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "enrollment look-up failed");
	if (SPI_processed > 0)
	{
		bool		active = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

		if (active)
		{
			enrollment_id = spi_get_copy(0, 1, UUIDOID, &isnull, caller_cxt);
			SPI_finish();
			journey_restore_user(&saved);
			PG_RETURN_DATUM(enrollment_id);
		}
		if (strcmp(reentry, "never") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("customer %s was enrolled in sequence %s before, and its reentry is never",
							uuid_text(customer_id), uuid_text(sequence_id)),
					 errhint("Set the sequence's reentry to after_exit to let customers enter again.")));
	}

	values[0] = business_id;
	values[1] = sequence_id;
	values[2] = customer_id;
	values[3] = JsonbPGetDatum(meta);
	values[4] = TimestampTzGetDatum(as_of);
	values[5] = TimestampTzGetDatum(journey_timestamp_add_ms(as_of, first_wait));
	if (journey_spi_kept(&plan_enroll_insert, "INSERT INTO journey.sequence_enrollments "
							  "(business_id, sequence_id, customer_id, current_step_index, next_run_at, "
							  " meta, enrolled_at) "
							  "VALUES ($1, $2, $3, 1, $6, $4, $5) "
							  "ON CONFLICT (sequence_id, customer_id) WHERE status OPERATOR(pg_catalog.=) 'active' "
							  "DO NOTHING RETURNING id",
							  6, types, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "inserting the enrollment failed");
	if (SPI_processed > 0)
		enrollment_id = spi_get_copy(0, 1, UUIDOID, &isnull, caller_cxt);
	else
	{
		/* A concurrent call enrolled the customer first: return its enrollment. */
		if (journey_spi_kept(&plan_enroll_active_id, "SELECT id FROM journey.sequence_enrollments "
								  "WHERE sequence_id OPERATOR(pg_catalog.=) $2 "
								  "AND customer_id OPERATOR(pg_catalog.=) $3 "
								  "AND status OPERATOR(pg_catalog.=) 'active'",
								  3, types, values, NULL, false, 1) != SPI_OK_SELECT ||
			SPI_processed == 0)
			elog(ERROR, "concurrent enrollment vanished");
		enrollment_id = spi_get_copy(0, 1, UUIDOID, &isnull, caller_cxt);
	}
	SPI_finish();
	journey_restore_user(&saved);
	PG_RETURN_DATUM(enrollment_id);
}

/*
 * Finds or creates the customer an ingested event is about.  {"id": ...}
 * names an existing customer; {"external_id": ...} finds one by the id the
 * business's own system uses, creating it when missing.  Fields given
 * (full_name, email, phone, timezone, attributes) update the customer;
 * attributes are merged key by key.
 */
static Datum
resolve_customer(Datum business_id, Jsonb *customer, MemoryContext cxt)
{
	static const char *const fields[] = {"id", "external_id", "full_name", "email", "phone",
	"timezone", "attributes", NULL};
	JsonbIterator *it = JsonbIteratorInit(&customer->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *id = journey_jsonb_get_text(customer, "id");
	char	   *external_id = journey_jsonb_get_text(customer, "external_id");
	JsonbValue *attributes = journey_jsonb_get(customer, "attributes");
	Oid			types[9] = {UUIDOID, UUIDOID, TEXTOID, BOOLOID, TEXTOID, BOOLOID, TEXTOID,
	BOOLOID, TEXTOID};
	Datum		values[9];
	char		nulls[9];
	bool		isnull;
	Datum		customer_id;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		const char *const *f;

		if (tok != WJB_KEY)
			continue;
		for (f = fields; *f; f++)
			if (strlen(*f) == v.val.string.len && strncmp(*f, v.val.string.val, v.val.string.len) == 0)
				break;
		if (*f == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown customer field \"%.*s\"", v.val.string.len, v.val.string.val),
					 errhint("Customer fields: id, external_id, full_name, email, phone, timezone, attributes.")));
	}
	if (id == NULL && external_id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("customer needs an \"id\" or an \"external_id\""),
				 errhint("Pass {\"id\": \"<uuid>\"} or {\"external_id\": \"C-42\", \"full_name\": \"Ada Lovelace\"}.")));
	if (attributes != NULL && attributes->type != jbvNull &&
		(attributes->type != jbvBinary || !JsonContainerIsObject(attributes->val.binary.data)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("customer attributes must be a JSON object"),
				 errhint("Pass {\"attributes\": {\"plan\": \"gold\"}}.")));
	if (journey_jsonb_get(customer, "full_name") != NULL &&
		(journey_jsonb_get_text(customer, "full_name") == NULL ||
		 journey_jsonb_get_text(customer, "full_name")[0] == '\0'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("customer full_name must not be empty"),
				 errhint("Give the customer's name, or leave full_name out to keep the current one.")));

	memset(nulls, ' ', sizeof(nulls));
	values[0] = business_id;
	if (id != NULL)
		values[1] = DirectFunctionCall1(uuid_in, CStringGetDatum(id));
	else
		nulls[1] = 'n';
	values[2] = external_id ? CStringGetTextDatum(external_id) : (Datum) 0;
	nulls[2] = external_id ? ' ' : 'n';

	/*
	 * Look the customer up first: an update must not need full_name.  A
	 * customer of another business gets the answer a missing one gets, so
	 * the error tells nobody another tenant's ids.
	 */
	if (journey_spi_kept(id != NULL ? &plan_customer_by_id : &plan_customer_by_external_id, id != NULL ?
							  "SELECT id FROM journey.customers WHERE business_id OPERATOR(pg_catalog.=) $1 "
							  "AND id OPERATOR(pg_catalog.=) $2" :
							  "SELECT id FROM journey.customers WHERE business_id OPERATOR(pg_catalog.=) $1 "
							  "AND external_id OPERATOR(pg_catalog.=) $3",
							  3, types, values, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "customer look-up failed");
	if (SPI_processed == 0 && id != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("customer %s is not a customer of business %s", id, uuid_text(business_id)),
				 errhint("Pass the id of one of its customers, or {\"external_id\": ..., \"full_name\": ...} to create customers as events arrive.")));

	/* (given, value) pairs: a field not given keeps its value. */
	{
		const char *names[4] = {"full_name", "email", "phone", "timezone"};
		Datum		upd_values[10];
		char		upd_nulls[10];
		Oid			upd_types[10] = {UUIDOID, TEXTOID, BOOLOID, TEXTOID, BOOLOID, TEXTOID,
		BOOLOID, TEXTOID, BOOLOID, TEXTOID};
		Jsonb	   *attrs = (attributes && attributes->type != jbvNull) ?
		JsonbValueToJsonb(attributes) : NULL;
		Datum		attr_values[2];
		char		attr_nulls[2] = {' ', ' '};

		memset(upd_nulls, ' ', sizeof(upd_nulls));
		upd_values[0] = business_id;
		upd_values[1] = values[2];
		upd_nulls[1] = nulls[2];
		for (int i = 0; i < 4; i++)
		{
			char	   *text = journey_jsonb_get_text(customer, names[i]);

			if (i == 1 || i == 2)
				journey_check_address(i == 1 ? "customer.email" : "customer.phone", text);

			upd_values[2 + i * 2] = BoolGetDatum(journey_jsonb_get(customer, names[i]) != NULL);
			upd_values[3 + i * 2] = text ? CStringGetTextDatum(text) : (Datum) 0;
			upd_nulls[3 + i * 2] = text ? ' ' : 'n';
		}
		attr_values[0] = attrs ? JsonbPGetDatum(attrs) : (Datum) 0;
		attr_nulls[0] = attrs ? ' ' : 'n';

		if (SPI_processed > 0)
		{
			Datum		existing = spi_get_copy(0, 1, UUIDOID, &isnull, cxt);
			Oid			t[11];
			Datum		vals[11];
			char		nls[11];

			memcpy(t, upd_types, sizeof(upd_types));
			memcpy(vals, upd_values, sizeof(upd_values));
			memcpy(nls, upd_nulls, sizeof(upd_nulls));
			t[0] = UUIDOID;
			vals[0] = existing;
			t[10] = JSONBOID;
			vals[10] = attr_values[0];
			nls[10] = attr_nulls[0];
			if (journey_spi_kept(&plan_customer_update, "UPDATE journey.customers SET "
									  "full_name = CASE WHEN $3 THEN $4 ELSE full_name END, "
									  "email = CASE WHEN $5 THEN $6 ELSE email END, "
									  "phone = CASE WHEN $7 THEN $8 ELSE phone END, "
									  "timezone = CASE WHEN $9 THEN $10 ELSE timezone END, "
									  "attributes = CASE WHEN $11 IS NULL THEN attributes "
									  "  ELSE attributes OPERATOR(pg_catalog.||) $11 END "
									  "WHERE id OPERATOR(pg_catalog.=) $1 "
									  "AND ($3 OR $5 OR $7 OR $9 OR $11 IS NOT NULL)",
									  11, t, vals, nls, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "updating the customer failed");
			return existing;
		}

		if (!DatumGetBool(upd_values[2]) || upd_nulls[3] == 'n')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("customer with external_id \"%s\" does not exist and no full_name was given",
							external_id),
					 errhint("Include \"full_name\" so journey can create the customer.")));
		{
			Oid			t[7] = {UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID};
			Datum		vals[7];
			char		nls[7];

			vals[0] = business_id;
			nls[0] = ' ';
			vals[1] = upd_values[1];
			nls[1] = upd_nulls[1];
			for (int i = 0; i < 4; i++)
			{
				vals[2 + i] = upd_values[3 + i * 2];
				nls[2 + i] = upd_nulls[3 + i * 2];
			}
			vals[6] = attr_values[0];
			nls[6] = attr_nulls[0];

			/*
			 * Two events about a new customer may race; the loser updates
			 * the winner's row instead of failing on the unique key.
			 */
			if (journey_spi_kept(&plan_customer_upsert, "INSERT INTO journey.customers AS c "
									  "(business_id, external_id, full_name, email, phone, timezone, attributes, created_by) "
									  "VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, '{}'), 'ingest_event') "
									  "ON CONFLICT (business_id, external_id) DO UPDATE SET "
									  "full_name = EXCLUDED.full_name, "
									  "email = coalesce(EXCLUDED.email, c.email), "
									  "phone = coalesce(EXCLUDED.phone, c.phone), "
									  "timezone = coalesce(EXCLUDED.timezone, c.timezone), "
									  "attributes = c.attributes OPERATOR(pg_catalog.||) EXCLUDED.attributes "
									  "RETURNING id",
									  7, t, vals, nls, false, 0) != SPI_OK_INSERT_RETURNING)
				elog(ERROR, "creating the customer failed");
			customer_id = spi_get_copy(0, 1, UUIDOID, &isnull, cxt);
		}
	}
	return customer_id;
}

/*
 * The advisory-lock space of idempotency keys: the fourth field of the
 * lock tag, which pg_advisory_lock uses only with 1 and 2, so these locks
 * never meet an application's own advisory locks.
 */
#define JOURNEY_IDEMPOTENCY_LOCK_SPACE 0x6A6F

/*
 * Serialises ingest_event calls carrying the same (business, key) until
 * the first one's transaction ends.  Without it, two racing deliveries
 * both miss the key, both create or update the customer, and only then
 * meet at the events unique key: the loser would return the winner's id
 * but leave its own changes to the customer behind.  Distinct keys that
 * hash alike merely wait for each other.
 */
static void
lock_idempotency_key(Datum business_id, text *key)
{
	pg_uuid_t  *uuid = DatumGetUUIDP(business_id);
	uint64		hash;
	LOCKTAG		tag;

	hash = hash_bytes_extended((const unsigned char *) VARDATA_ANY(key),
							   VARSIZE_ANY_EXHDR(key), 0);
	hash = hash_bytes_extended(uuid->data, UUID_LEN, hash);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (hash >> 32), (uint32) hash,
						 JOURNEY_IDEMPOTENCY_LOCK_SPACE);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * ingest_event(p_business_id, p_event_type, p_customer, p_payload,
 *				p_idempotency_key, p_occurred_at)
 */
Datum
journey_ingest_event(PG_FUNCTION_ARGS)
{
	Datum		business_id;
	char	   *event_type;
	Jsonb	   *customer = NULL;
	Jsonb	   *payload;
	TimestampTz occurred_at;
	JourneyUserSwitch saved;
	MemoryContext caller_cxt = CurrentMemoryContext;
	Oid			types[6] = {UUIDOID, TEXTOID, UUIDOID, JSONBOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int64		event_id;

	require_arg(fcinfo, 0, "business id", "Pass the id returned by journey.create_business.");
	require_arg(fcinfo, 1, "event type", "Pass a type such as 'invoice_paid'.");
	require_arg(fcinfo, 3, "event payload", "Pass '{}' for no payload.");
	require_arg(fcinfo, 5, "p_occurred_at", "Pass now() or the time the event happened.");
	business_id = PG_GETARG_DATUM(0);
	event_type = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(2))
		customer = PG_GETARG_JSONB_P(2);
	payload = PG_GETARG_JSONB_P(3);
	occurred_at = PG_GETARG_TIMESTAMPTZ(5);

	if (event_type[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event type must not be empty"),
				 errhint("Pass a type such as 'invoice_paid'.")));
	if (customer != NULL)
		require_object(customer, "customer", "Pass {\"id\": \"<uuid>\"} or {\"external_id\": ..., \"full_name\": ...}.");
	require_object(payload, "event payload", "Pass an object such as '{\"invoice\": \"INV-7\"}'.");
	require_finite(occurred_at, "p_occurred_at");
	if (!PG_ARGISNULL(4) && VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(4)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency key must not be empty"),
				 errhint("Pass the sender's delivery id, or NULL for none.")));

	journey_require_member(business_id);
	journey_become_owner(&saved);
	journey_require_business_exists(business_id);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	values[0] = business_id;
	values[1] = CStringGetTextDatum(event_type);
	if (!PG_ARGISNULL(4))
		values[4] = PG_GETARG_DATUM(4);
	else
		nulls[4] = 'n';

	/*
	 * A repeated key changes nothing, the customer included, also when the
	 * deliveries race: the look-up runs once any earlier holder of the key
	 * has committed, with a new snapshot (read_only = false) that sees it.
	 */
	if (nulls[4] != 'n')
	{
		/*
		 * The plan takes the insert's six parameters; those not set yet go
		 * as nulls, so that nothing that copies every parameter reads an
		 * uninitialised Datum.
		 */
		char		lookup_nulls[6] = {' ', ' ', 'n', 'n', ' ', 'n'};

		values[2] = values[3] = values[5] = (Datum) 0;
		lock_idempotency_key(business_id, PG_GETARG_TEXT_PP(4));
		if (journey_spi_kept(&plan_event_by_key, event_by_key_sql,
								  6, types, values, lookup_nulls, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "event look-up failed");
		if (SPI_processed > 0)
		{
			event_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			SPI_finish();
			journey_restore_user(&saved);
			PG_RETURN_INT64(event_id);
		}
	}

	if (customer != NULL)
		values[2] = resolve_customer(business_id, customer, caller_cxt);
	else
		nulls[2] = 'n';
	values[3] = JsonbPGetDatum(payload);
	values[5] = TimestampTzGetDatum(occurred_at);

	/*
	 * ON CONFLICT waits for a concurrent insert of the same key and then
	 * does nothing, so racing webhooks never see a unique violation; the
	 * loser reads the winner's id below.
	 */
	if (journey_spi_kept(&plan_event_insert, "INSERT INTO journey.events "
							  "(business_id, event_type, customer_id, payload, idempotency_key, occurred_at) "
							  "VALUES ($1, $2, $3, $4, $5, $6) "
							  "ON CONFLICT (business_id, idempotency_key) DO NOTHING RETURNING id",
							  6, types, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "inserting the event failed");
	if (SPI_processed == 0)
	{
		if (journey_spi_kept(&plan_event_by_key, event_by_key_sql,
								  6, types, values, nulls, false, 1) != SPI_OK_SELECT ||
			SPI_processed == 0)
			elog(ERROR, "concurrently ingested event vanished");
	}
	event_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	journey_restore_user(&saved);
	PG_RETURN_INT64(event_id);
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

	require_arg(fcinfo, 0, "enrollment id", "Pass a journey.sequence_enrollments id.");
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
	if (journey_spi_kept(&plan_stop_lookup, "SELECT business_id FROM journey.sequence_enrollments WHERE id OPERATOR(pg_catalog.=) $1",
							  2, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "enrollment look-up failed");
	if (SPI_processed == 0)
		journey_raise_missing("enrollment", enrollment_id,
							  "Pass an id from journey.sequence_enrollments.");
	business_id = spi_get_copy(0, 1, UUIDOID, &isnull, caller_cxt);
	journey_restore_user(&saved);
	journey_require_visible(business_id, "enrollment", enrollment_id,
							"Pass an id from journey.sequence_enrollments.");
	journey_become_owner(&saved);

	if (journey_spi_kept(&plan_stop, "WITH stopped AS ("
							  " UPDATE journey.sequence_enrollments SET status = 'stopped', stop_reason = $2,"
							  "  finished_at = pg_catalog.now(), next_run_at = NULL"
							  " WHERE id OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.=) 'active'"
							  " RETURNING id, business_id, current_step_index, stop_reason, finished_at) "
							  JOURNEY_STOPPED_ARRAYS_SELECT,
							  2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "stopping the enrollment failed");
	journey_cancel_and_log_stops(SPI_tuptable);
	SPI_finish();
	journey_restore_user(&saved);
	PG_RETURN_VOID();
}
