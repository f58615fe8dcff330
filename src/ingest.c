/*-------------------------------------------------------------------------
 *
 * ingest.c
 *	  ingest_event, what webhooks call: resolves (finds, creates or
 *	  updates) the customer an event is about and records the event once
 *	  per idempotency key, serialising racing deliveries of one key.
 *
 * The function checks the caller's membership of the business first, then
 * works as the tables' owner (see tenant.c).  What an event starts or
 * stops is decided by the events trigger (trigger.c), which fires on the
 * insert made here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "journey.h"

/* Statements of ingest_event, planned once per backend (journey_spi_kept). */
static SPIPlanPtr plan_customer_by_id = NULL;
static SPIPlanPtr plan_customer_by_external_id = NULL;
static SPIPlanPtr plan_customer_update = NULL;
static SPIPlanPtr plan_customer_upsert = NULL;
static SPIPlanPtr plan_event_by_key = NULL;
/* Run before and after the insert; one text, so one plan serves both. */
static const char *event_by_key_sql =
"SELECT id FROM journey.events WHERE business_id = $1 "
"AND idempotency_key = $5";
static SPIPlanPtr plan_event_insert = NULL;

PG_FUNCTION_INFO_V1(journey_ingest_event);

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
							  "SELECT id FROM journey.customers WHERE business_id = $1 "
							  "AND id = $2" :
							  "SELECT id FROM journey.customers WHERE business_id = $1 "
							  "AND external_id = $3",
							  3, types, values, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "customer look-up failed");
	if (SPI_processed == 0 && id != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("customer %s is not a customer of business %s", id, journey_uuid_text(business_id)),
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
			Datum		existing = journey_spi_get_copy(0, 1, UUIDOID, &isnull, cxt);
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
									  "  ELSE attributes || $11 END "
									  "WHERE id = $1 "
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
									  "attributes = c.attributes || EXCLUDED.attributes "
									  "RETURNING id",
									  7, t, vals, nls, false, 0) != SPI_OK_INSERT_RETURNING)
				elog(ERROR, "creating the customer failed");
			customer_id = journey_spi_get_copy(0, 1, UUIDOID, &isnull, cxt);
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
	/*
	 * Every parameter is set before each statement, also those it does not
	 * reference: SPI hands the whole array on, and an extension copying
	 * parameters must never read garbage.
	 */
	Datum		values[6] = {0, 0, 0, 0, 0, 0};
	char		nulls[6] = {'n', 'n', 'n', 'n', 'n', 'n'};
	bool		isnull;
	int64		event_id;

	journey_require_arg(fcinfo, 0, "business id", "Pass the id returned by journey.create_business.");
	journey_require_arg(fcinfo, 1, "event type", "Pass a type such as 'invoice_paid'.");
	journey_require_arg(fcinfo, 3, "event payload", "Pass '{}' for no payload.");
	journey_require_arg(fcinfo, 5, "p_occurred_at", "Pass now() or the time the event happened.");
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
		journey_require_object(customer, "customer", "Pass {\"id\": \"<uuid>\"} or {\"external_id\": ..., \"full_name\": ...}.");
	journey_require_object(payload, "event payload", "Pass an object such as '{\"invoice\": \"INV-7\"}'.");
	journey_require_finite(occurred_at, "p_occurred_at");
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
	/* A webhook's pooled session keeps its plans as long as the sender. */
	journey_replan_if_grown();

	values[0] = business_id;
	nulls[0] = ' ';
	values[1] = CStringGetTextDatum(event_type);
	nulls[1] = ' ';
	if (!PG_ARGISNULL(4))
	{
		values[4] = PG_GETARG_DATUM(4);
		nulls[4] = ' ';
	}

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
	{
		values[2] = resolve_customer(business_id, customer, caller_cxt);
		nulls[2] = ' ';
	}
	values[3] = JsonbPGetDatum(payload);
	nulls[3] = ' ';
	values[5] = TimestampTzGetDatum(occurred_at);
	nulls[5] = ' ';

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
