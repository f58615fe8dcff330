/*-------------------------------------------------------------------------
 *
 * simulate.c
 *	  journey.simulate (SPEC section 11): what a journey would do to one
 *	  customer between p_from and p_until, with the given events at their
 *	  times, decided by the executor's own code and written nowhere.
 *
 * It does not re-implement a single rule.  Inside a subtransaction it puts
 * real rows where the executor and the events trigger look for them (the
 * customer when it is new, an enrollment at p_from, the draft's sequence),
 * then drives a virtual clock: at each moment that matters, the next event
 * (inserted into journey.events, so the trigger's exit events and
 * wait_until wake-ups run) or the enrollment's next_run_at (one executor
 * call on that enrollment alone, as of that moment), it reads the log rows
 * and the messages the executor wrote.  Quiet hours, the SMS window, rate
 * limits and frequency caps against the business's real messages,
 * suppressions, branches, templates: all are the executor's own decisions.
 * Then the subtransaction is rolled back, so no row survives.
 *
 * What a rollback cannot undo: identity counters (events, messages and log
 * ids drawn inside are skipped afterwards, as after any rolled-back insert),
 * and a sender woken at the caller's commit finds nothing new.  Ids of the
 * rows it creates are derived from the inputs, so the same inputs give the
 * same rows (a {"random": N} split depends on the enrollment id).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "executor_private.h"

PG_FUNCTION_INFO_V1(journey_simulate);
PG_FUNCTION_INFO_V1(journey_simulate_draft);

/* Bounds that keep one call's work small whatever it is given. */
#define SIM_MAX_EVENTS 1000
#define SIM_MAX_ROUNDS 2000

typedef struct SimEvent
{
	char	   *type;
	TimestampTz at;
	Jsonb	   *payload;
	int			order;			/* position in p_events: ties keep it */
} SimEvent;

typedef struct SimInput
{
	Datum		business_id;
	Datum		sequence_id;	/* 0 for a draft: created inside */
	Jsonb	   *definition;
	Jsonb	   *customer;
	TimestampTz from;
	TimestampTz until;
	int			nevents;
	SimEvent   *events;
} SimInput;

static void
sim_bad(const char *message, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s", message),
			 errhint("%s", hint)));
}

static char *
jsonb_string(JsonbContainer *obj, const char *key, bool *present, JsonbValue *v)
{
	*present = journey_container_get(obj, key, v);
	if (!*present || v->type == jbvNull)
		return NULL;
	if (v->type != jbvString)
		return "";				/* flags a wrong type to the caller */
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static int
compare_events(const void *a, const void *b)
{
	const SimEvent *x = a;
	const SimEvent *y = b;

	if (x->at != y->at)
		return x->at < y->at ? -1 : 1;
	return x->order - y->order;
}

/* Where the failing p_events element is, for errors from timestamptz_in. */
static void
event_error_context(void *arg)
{
	errcontext("p_events[%d].at", *(int *) arg);
}

static void
parse_events(Jsonb *events, SimInput *in)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n = 0;
	const char *hint = "Pass an array such as '[{\"type\": \"review_left\", \"at\": \"2027-01-15 10:00+00\", \"payload\": {}}]'.";

	if (!JB_ROOT_IS_ARRAY(events) || JB_ROOT_IS_SCALAR(events))
		sim_bad("p_events must be a JSON array", hint);
	if (JB_ROOT_COUNT(events) > SIM_MAX_EVENTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("p_events has %u events, more than %d", JB_ROOT_COUNT(events),
						SIM_MAX_EVENTS),
				 errhint("Simulate a shorter period, or fewer events.")));
	in->events = palloc0(sizeof(SimEvent) * Max(1, JB_ROOT_COUNT(events)));
	it = JsonbIteratorInit(&events->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		SimEvent   *ev;
		JsonbValue	f;
		bool		present;
		char	   *at;
		ErrorContextCallback cb;
		int			where;

		if (tok != WJB_ELEM)
			continue;
		ev = &in->events[n];
		ev->order = n;
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			sim_bad(psprintf("p_events[%d] must be an object", n), hint);
		ev->type = jsonb_string(v.val.binary.data, "type", &present, &f);
		if (ev->type == NULL || ev->type[0] == '\0' || strlen(ev->type) > 200)
			sim_bad(psprintf("p_events[%d].type must be an event type of 1 to 200 characters", n), hint);
		at = jsonb_string(v.val.binary.data, "at", &present, &f);
		if (at == NULL || at[0] == '\0')
			sim_bad(psprintf("p_events[%d].at must be a time as a string", n), hint);
		where = n;
		cb.callback = event_error_context;
		cb.arg = &where;
		cb.previous = error_context_stack;
		error_context_stack = &cb;
		ev->at = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(at),
														 ObjectIdGetDatum(InvalidOid),
														 Int32GetDatum(-1)));
		error_context_stack = cb.previous;
		if (TIMESTAMP_NOT_FINITE(ev->at) || ev->at < in->from || ev->at > in->until)
			sim_bad(psprintf("p_events[%d].at is outside p_from to p_until", n),
					"Give each event a time between p_from and p_until.");
		if (journey_container_get(v.val.binary.data, "payload", &f) && f.type != jbvNull)
		{
			if (f.type != jbvBinary || !JsonContainerIsObject(f.val.binary.data))
				sim_bad(psprintf("p_events[%d].payload must be an object", n), hint);
			ev->payload = JsonbValueToJsonb(&f);
		}
		else
			ev->payload = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
		n++;
	}
	in->nevents = n;
	qsort(in->events, n, sizeof(SimEvent), compare_events);
}

static void
check_customer(Jsonb *customer)
{
	static const char *const keys[] = {"id", "external_id", "full_name", "email", "phone",
	"timezone", "attributes", NULL};
	const char *hint = "Pass {\"id\": uuid} for an existing customer, or the fields ingest_event accepts (external_id, full_name, email, phone, timezone) and attributes.";
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;

	if (!JB_ROOT_IS_OBJECT(customer) || JB_ROOT_IS_SCALAR(customer))
		sim_bad("p_customer must be a JSON object", hint);
	it = JsonbIteratorInit(&customer->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			bool		known = false;

			key = pnstrdup(v.val.string.val, v.val.string.len);

			for (int i = 0; keys[i] != NULL; i++)
				known = known || strcmp(keys[i], key) == 0;
			if (!known)
				sim_bad(psprintf("p_customer has an unknown field \"%s\"", key), hint);
		}
		else if (tok == WJB_VALUE)
		{
			/* attributes is checked by its own query; the rest are strings */
			if (v.type != jbvString && v.type != jbvNull && v.type != jbvBinary)
				sim_bad("p_customer's fields must be strings (attributes an object)", hint);
			/* What ingest_event refuses, a simulation refuses alike. */
			if (v.type == jbvString && (strcmp(key, "email") == 0 || strcmp(key, "phone") == 0))
				journey_check_address(strcmp(key, "email") == 0 ? "customer.email" : "customer.phone",
									  pnstrdup(v.val.string.val, v.val.string.len));
		}
	}
}

/* Runs one statement with the SPI, raising on an unexpected result. */
static void
sim_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, int expect)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc != expect)
		elog(ERROR, "journey simulate statement failed: %s", SPI_result_code_string(rc));
}

/* The customer the simulation enrolls: found, or created inside. */
static Datum
sim_customer(SimInput *in)
{
	Oid			types[3] = {UUIDOID, JSONBOID, TIMESTAMPTZOID};
	Datum		values[3] = {in->business_id, JsonbPGetDatum(in->customer),
	TimestampTzGetDatum(in->from)};
	bool		isnull;
	JsonbValue	v;

	if (journey_container_get(&in->customer->root, "id", &v))
	{
		sim_exec("SELECT c.id FROM journey.customers c"
				 " WHERE c.business_id = $1 AND c.id::text = ($2 ->> 'id')",
				 2, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			sim_bad("p_customer names a customer that does not exist",
					"Pass the id of a customer of the journey's business, or the customer's fields.");
		return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	}
	if (journey_container_get(&in->customer->root, "attributes", &v) &&
		(v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data)))
		sim_bad("p_customer.attributes must be an object",
				"Pass attributes such as {\"plan\": \"gold\"}.");
	/* A known external_id is that customer, with the given fields applied. */
	sim_exec("UPDATE journey.customers c SET"
			 " full_name = coalesce($2 ->> 'full_name', c.full_name),"
			 " email = coalesce($2 ->> 'email', c.email),"
			 " phone = coalesce($2 ->> 'phone', c.phone),"
			 " timezone = coalesce($2 ->> 'timezone', c.timezone),"
			 " attributes = coalesce($2 -> 'attributes', c.attributes)"
			 " WHERE c.business_id = $1 AND c.external_id = ($2 ->> 'external_id')"
			 " RETURNING c.id", 2, types, values, NULL, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed > 0)
		return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!journey_container_get(&in->customer->root, "full_name", &v) || v.type != jbvString ||
		v.val.string.len == 0)
		sim_bad("p_customer needs a full_name for a new customer",
				"Give full_name, or {\"id\": uuid} for an existing customer.");
	sim_exec("INSERT INTO journey.customers (id, business_id, full_name, email, phone,"
			 " timezone, external_id, attributes)"
			 " SELECT md5('journey simulate customer' || $1::text || $2::text)::uuid, $1,"
			 " $2 ->> 'full_name', $2 ->> 'email', $2 ->> 'phone', $2 ->> 'timezone',"
			 " $2 ->> 'external_id', coalesce($2 -> 'attributes', '{}')"
			 " RETURNING id", 2, types, values, NULL, SPI_OK_INSERT_RETURNING);
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}

/* Enrolls the customer at p_from, as the trigger would; returns the id. */
static Datum
sim_enroll(SimInput *in, Datum customer_id)
{
	Oid			types[4] = {UUIDOID, UUIDOID, UUIDOID, TIMESTAMPTZOID};
	Datum		values[4] = {in->business_id, in->sequence_id, customer_id,
	TimestampTzGetDatum(in->from)};
	bool		isnull;

	/* The journey runs for the preview whatever its status. */
	sim_exec("UPDATE journey.sequences SET status = 'active'"
			 " WHERE id = $2 AND business_id = $1 AND status <> 'active'",
			 2, types, values, NULL, SPI_OK_UPDATE);
	/* The customer's real enrollment, if any, steps aside. */
	sim_exec("UPDATE journey.sequence_enrollments SET status = 'stopped', next_run_at = NULL,"
			 " stop_reason = 'simulation'"
			 " WHERE sequence_id = $2 AND customer_id = $3 AND status = 'active'",
			 3, types, values, NULL, SPI_OK_UPDATE);
	sim_exec("INSERT INTO journey.sequence_enrollments (id, business_id, sequence_id,"
			 " customer_id, sequence_version, current_step_index, next_run_at, last_event_at,"
			 " meta, enrolled_at)"
			 " SELECT md5('journey simulate enrollment' || $2::text || $3::text || $4::text)::uuid,"
			 " $1, $2, $3, s.version, 1,"
			 " $4 + coalesce(st.wait_ms, 0) * interval '1 millisecond', $4,"
			 " '{\"event\": {}}', $4"
			 " FROM journey.sequences s"
			 " LEFT JOIN journey.sequence_steps st ON st.sequence_id = s.id"
			 "  AND st.version = s.version AND st.step_index = 1"
			 " WHERE s.id = $2 RETURNING id", 4, types, values, NULL, SPI_OK_INSERT_RETURNING);
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}

/* Copies the log rows after last_id (with their messages) into the result. */
static int64
sim_collect(ReturnSetInfo *rsinfo, Datum enrollment_id, int64 last_id)
{
	Oid			types[2] = {UUIDOID, INT8OID};
	Datum		values[2] = {enrollment_id, Int64GetDatum(last_id)};

	sim_exec("SELECT l.id, l.at, l.step_index, l.outcome, l.detail,"
			 " m.channel, m.to_address, m.subject, m.body"
			 " FROM journey.enrollment_log l"
			 " LEFT JOIN journey.messages m ON l.outcome = 'queued'"
			 "  AND m.enrollment_id = l.enrollment_id AND m.step_index = l.step_index"
			 " WHERE l.enrollment_id = $1 AND l.id > $2 ORDER BY l.id",
			 2, types, values, NULL, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		Datum		row[8];
		bool		nulls[8];
		bool		isnull;

		last_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
											  1, &isnull));
		for (int c = 0; c < 8; c++)
			row[c] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c + 2,
								   &nulls[c]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
	}
	return last_id;
}

static void
sim_truncated(ReturnSetInfo *rsinfo, TimestampTz at)
{
	Datum		row[8] = {0};
	bool		nulls[8] = {false, true, false, false, true, true, true, true};

	row[0] = TimestampTzGetDatum(at);
	row[2] = CStringGetTextDatum("simulation_truncated");
	row[3] = CStringGetTextDatum(psprintf("stopped after %d rounds; simulate a shorter period",
										  SIM_MAX_ROUNDS));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
}

/* The virtual clock: events and executor calls in time order. */
static void
sim_run(SimInput *in, ReturnSetInfo *rsinfo)
{
	Oid			types[5] = {UUIDOID, TEXTOID, UUIDOID, JSONBOID, TIMESTAMPTZOID};
	Datum		values[5];
	Datum		customer_id = datumCopy(sim_customer(in), false, UUID_LEN);
	Datum		enrollment_id = datumCopy(sim_enroll(in, customer_id), false, UUID_LEN);
	int64		last_id = 0;
	int			next_event = 0;
	int			rounds;

	for (rounds = 0; rounds < SIM_MAX_ROUNDS; rounds++)
	{
		bool		isnull;
		bool		active;
		TimestampTz due = 0;

		values[0] = enrollment_id;
		sim_exec("SELECT status = 'active', next_run_at FROM journey.sequence_enrollments"
				 " WHERE id = $1", 1, types, values, NULL, SPI_OK_SELECT);
		active = SPI_processed == 1 &&
			DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (active)
			due = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 2, &isnull));
		if (!active)
			break;
		if (next_event < in->nevents && in->events[next_event].at <= due)
		{
			/* An event first, at a tie too: it is what the step may await. */
			SimEvent   *ev = &in->events[next_event++];

			values[0] = in->business_id;
			values[1] = CStringGetTextDatum(ev->type);
			values[2] = customer_id;
			values[3] = JsonbPGetDatum(ev->payload);
			values[4] = TimestampTzGetDatum(ev->at);
			sim_exec("INSERT INTO journey.events (business_id, event_type, customer_id, payload,"
					 " occurred_at) VALUES ($1, $2, $3, $4, $5)",
					 5, types, values, NULL, SPI_OK_INSERT);
		}
		else if (due <= in->until)
		{
			if (journey_executor_run(1, due, enrollment_id) == 0)
				break;			/* not claimable (its sequence row was deleted) */
		}
		else
			break;
		last_id = sim_collect(rsinfo, enrollment_id, last_id);
	}
	if (rounds == SIM_MAX_ROUNDS)
		sim_truncated(rsinfo, in->until);
}

static void
simulate(FunctionCallInfo fcinfo, SimInput *in, Jsonb *events)
{
	ReturnSetInfo *rsinfo;
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	JourneyUserSwitch saved;
	Oid			types[2] = {UUIDOID, JSONBOID};
	Datum		values[2];
	bool		isnull;

	if (TIMESTAMP_NOT_FINITE(in->from) || TIMESTAMP_NOT_FINITE(in->until))
		sim_bad("p_from and p_until must be finite times",
				"Pass real moments such as '2027-01-15 10:00+00'.");
	if (in->until < in->from)
		sim_bad("p_until is before p_from", "Pass a p_until at or after p_from.");
	check_customer(in->customer);
	parse_events(events, in);

	InitMaterializedSRF(fcinfo, 0);
	rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* Seen as the caller sees it: another business's ids are missing ones. */
	if (in->sequence_id != (Datum) 0)
	{
		values[0] = in->sequence_id;
		sim_exec("SELECT business_id FROM journey.sequences WHERE id = $1",
				 1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			sim_bad(psprintf("sequence %s does not exist",
							 DatumGetCString(DirectFunctionCall1(uuid_out, in->sequence_id))),
					"Pass the id returned by journey.create_sequence.");
		in->business_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										&isnull);
		in->business_id = datumCopy(in->business_id, false, UUID_LEN);
	}
	else
	{
		values[0] = in->business_id;
		sim_exec("SELECT 1 FROM journey.businesses WHERE id = $1",
				 1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
					 errmsg("business %s does not exist",
							DatumGetCString(DirectFunctionCall1(uuid_out, in->business_id))),
					 errhint("Create it with journey.create_business, or pass the id it returned.")));
	}
	journey_require_member(in->business_id);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		if (in->sequence_id == (Datum) 0)
		{
			/* The draft, validated exactly as create_sequence validates it. */
			values[0] = in->business_id;
			values[1] = JsonbPGetDatum(in->definition);
			sim_exec("SELECT journey.create_sequence($1, $2)", 2, types, values, NULL,
					 SPI_OK_SELECT);
			in->sequence_id = datumCopy(SPI_getbinval(SPI_tuptable->vals[0],
													  SPI_tuptable->tupdesc, 1, &isnull),
										false, UUID_LEN);
		}
		journey_become_owner(&saved);
		sim_run(in, rsinfo);
		journey_restore_user(&saved);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		PG_RE_THROW();
	}
	PG_END_TRY();
	/* Everything it wrote goes: only the rows in the tuplestore remain. */
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	SPI_finish();
}

static void
require_args(FunctionCallInfo fcinfo, int n, const char *const *names)
{
	for (int i = 0; i < n; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be null", names[i]),
					 errhint("Pass a value; p_events may be '[]'.")));
}

Datum
journey_simulate(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"p_sequence_id", "p_customer", "p_from", "p_until",
	"p_events"};
	SimInput	in;

	require_args(fcinfo, 5, names);
	memset(&in, 0, sizeof(in));
	in.sequence_id = PG_GETARG_DATUM(0);
	in.customer = PG_GETARG_JSONB_P(1);
	in.from = PG_GETARG_TIMESTAMPTZ(2);
	in.until = PG_GETARG_TIMESTAMPTZ(3);
	simulate(fcinfo, &in, PG_GETARG_JSONB_P(4));
	return (Datum) 0;
}

Datum
journey_simulate_draft(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"p_business_id", "p_definition", "p_customer", "p_from",
	"p_until", "p_events"};
	SimInput	in;

	require_args(fcinfo, 6, names);
	memset(&in, 0, sizeof(in));
	in.business_id = PG_GETARG_DATUM(0);
	in.definition = PG_GETARG_JSONB_P(1);
	in.customer = PG_GETARG_JSONB_P(2);
	in.from = PG_GETARG_TIMESTAMPTZ(3);
	in.until = PG_GETARG_TIMESTAMPTZ(4);
	simulate(fcinfo, &in, PG_GETARG_JSONB_P(5));
	return (Datum) 0;
}
