/*-------------------------------------------------------------------------
 *
 * sequence.c
 *	  create_sequence: validates a whole journey definition (the JSON a
 *	  journey builder posts) and writes the sequence and its steps, or
 *	  raises an error naming the offending step and field and writes
 *	  nothing.
 *
 * Validation happens entirely before the first write, so an error never
 * leaves a half-written journey behind even inside a caller's transaction
 * that goes on after catching it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/date.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_create_sequence);

#define MAX_STEPS 200
#define MAX_CONDITION_DEPTH 16
/* A century: longer waits are typing mistakes, and would overflow times. */
#define MAX_WAIT_MS INT64CONST(3153600000000)

typedef struct StepDef
{
	const char *kind;
	int64		wait_ms;
	int			next_step;		/* -1: the following step */
	char	   *purpose;
	Jsonb	   *message;		/* message_config, or NULL */
	Jsonb	   *branch;			/* branch_config, or NULL */
	char	   *template_id;
} StepDef;

typedef struct SequenceDef
{
	char	   *name;
	char	   *description;
	char	   *status;
	char	   *trigger_event_type;
	List	   *exit_event_types;
	bool		allow_manual_enroll;
	char	   *reentry;
	char	   *quiet_start;
	char	   *quiet_end;
	bool		rate_hour_null;
	int32		rate_hour;
	bool		rate_day_null;
	int32		rate_day;
	int			nsteps;
	StepDef    *steps;
} SequenceDef;

/* Where an error is: step 0 means the definition's top level. */
static void
definition_error(int step, const char *field, const char *problem, const char *hint)
{
	/* Where no rule-specific hint applies, point at the whole format. */
	if (hint == NULL)
		hint = "The section \"Journey definitions\" of journey's README lists every field, its type and its allowed values.";
	if (step > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid journey definition: step %d field \"%s\" %s",
						step, field, problem),
				 hint ? errhint("%s", hint) : 0));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid journey definition: field \"%s\" %s", field, problem),
			 hint ? errhint("%s", hint) : 0));
}

static const char *
jbv_type_name(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "an array" : "an object";
		default:
			return "a JSON value";
	}
}

/* Iterates an object's keys, refusing any not listed in allowed. */
static void
check_keys(Jsonb *obj, const char *const *allowed, int step, const char *prefix)
{
	JsonbIterator *it = JsonbIteratorInit(&obj->root);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		const char *const *a;
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		for (a = allowed; *a; a++)
			if (strcmp(*a, key) == 0)
				break;
		if (*a == NULL)
		{
			StringInfoData known;

			initStringInfo(&known);
			for (a = allowed; *a; a++)
				appendStringInfo(&known, "%s%s", a == allowed ? "" : ", ", *a);
			definition_error(step, psprintf("%s%s", prefix, key), "is not a known field",
							 psprintf("Known fields here: %s.", known.data));
		}
	}
}

static Jsonb *
value_to_jsonb(JsonbValue *v)
{
	return JsonbValueToJsonb(v);
}

static char *
get_string(Jsonb *obj, const char *key, int step, const char *field, bool required)
{
	JsonbValue *v = journey_jsonb_get(obj, key);

	if (v == NULL || v->type == jbvNull)
	{
		if (required)
			definition_error(step, field, "is required",
							 psprintf("Add \"%s\" with a non-empty string.", key));
		return NULL;
	}
	if (v->type != jbvString)
		definition_error(step, field, psprintf("must be a string, not %s", jbv_type_name(v)),
						 psprintf("Write \"%s\" as a JSON string in double quotes.", key));
	if (v->val.string.len == 0 && required)
		definition_error(step, field, "must not be empty",
						 psprintf("Give \"%s\" a non-empty string.", key));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* An integer-valued JSON number within [min, max]; returns false if absent. */
static bool
get_int64(Jsonb *obj, const char *key, int step, const char *field,
		  int64 min, int64 max, const char *hint, int64 *result)
{
	JsonbValue *v = journey_jsonb_get(obj, key);
	char	   *text;
	char	   *end;
	int64		value;

	if (v == NULL)
		return false;
	if (v->type != jbvNumeric)
		definition_error(step, field, psprintf("must be a number, not %s", jbv_type_name(v)), hint);
	text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	errno = 0;
	value = strtoi64(text, &end, 10);
	if (*end != '\0' || errno != 0)
		definition_error(step, field, psprintf("must be a whole number, not %s", text), hint);
	if (value < min || value > max)
		definition_error(step, field,
						 psprintf("must be between " INT64_FORMAT " and " INT64_FORMAT ", not %s",
								  min, max, text), hint);
	*result = value;
	return true;
}

/* "HH:MM" with HH 00-23 and MM 00-59. */
static char *
get_clock(Jsonb *obj, const char *key, const char *field)
{
	char	   *s = get_string(obj, key, 0, field, true);

	if (strlen(s) != 5 || !isdigit((unsigned char) s[0]) || !isdigit((unsigned char) s[1]) ||
		s[2] != ':' || !isdigit((unsigned char) s[3]) || !isdigit((unsigned char) s[4]) ||
		atoi(s) > 23 || atoi(s + 3) > 59)
		definition_error(0, field, psprintf("must be a time of day as HH:MM, not \"%s\"", s),
						 "Use 24-hour times such as \"21:00\" and \"08:00\".");
	return s;
}

static void
check_template(const char *source, int step, const char *field)
{
	char	   *where = psprintf("step %d field \"%s\"", step, field);
	JourneyTemplate *tmpl = journey_template_parse(source, where);

	journey_template_check_paths(tmpl, where);
}

/* A step target: 0 (finish) or a step after this one. */
static int
check_target(Jsonb *obj, const char *key, int step, const char *field, int nsteps, bool required)
{
	int64		target;

	if (!get_int64(obj, key, step, field, 0, PG_INT32_MAX,
				   "Give the index of a later step, or 0 to finish.", &target))
	{
		if (required)
			definition_error(step, field, "is required",
							 "Give the index of a later step, or 0 to finish.");
		return -1;
	}
	if (target != 0 && step >= nsteps)
		definition_error(step, field,
						 psprintf("must be 0 (finish): step %d is the last step, not " INT64_FORMAT,
								  step, target),
						 "Journeys are acyclic: a step can only lead forward, or to 0 (finish).");
	if ((target != 0 && target <= step) || target > nsteps)
		definition_error(step, field,
						 psprintf("must be 0 or a later step (%d to %d), not " INT64_FORMAT,
								  step + 1, nsteps, target),
						 "Journeys are acyclic: a step can only lead forward, or to 0 (finish).");
	return (int) target;
}

static void check_condition(JsonbValue *cond, int step, const char *field, int depth);

static void
check_condition_list(Jsonb *obj, const char *key, int step, const char *field, int depth)
{
	JsonbValue *list = journey_jsonb_get(obj, key);
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n = 0;

	if (list->type != jbvBinary || !JsonContainerIsArray(list->val.binary.data) ||
		JsonContainerSize(list->val.binary.data) == 0)
		definition_error(step, field, "must be a non-empty array of conditions", NULL);
	it = JsonbIteratorInit(list->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		check_condition(&v, step, psprintf("%s[%d]", field, n++), depth + 1);
	}
}

static void
check_condition(JsonbValue *cond, int step, const char *field, int depth)
{
	static const char *const field_keys[] = {"field", "op", "value", NULL};
	static const char *const event_keys[] = {"event", "since", NULL};
	static const char *const random_keys[] = {"random", NULL};
	static const char *const all_keys[] = {"all", NULL};
	static const char *const any_keys[] = {"any", NULL};
	static const char *const ops[] = {"exists", "eq", "neq", "gt", "lt", "in", NULL};
	const char *cond_hint =
		"A condition is {\"field\": \"customer.<name>\", \"op\": \"exists|eq|neq|gt|lt|in\", \"value\": ...}, "
		"{\"event\": TYPE, \"since\": \"enrollment\"}, {\"random\": PERCENT}, {\"all\": [...]} or {\"any\": [...]}.";
	Jsonb	   *obj;
	char	   *prefix;

	if (depth > MAX_CONDITION_DEPTH)
		definition_error(step, field, "nests conditions too deeply",
						 "Conditions nest at most 16 levels.");
	if (cond->type != jbvBinary || !JsonContainerIsObject(cond->val.binary.data))
		definition_error(step, field, psprintf("must be an object, not %s", jbv_type_name(cond)),
						 cond_hint);
	obj = value_to_jsonb(cond);
	prefix = psprintf("%s.", field);

	if (journey_jsonb_get(obj, "field"))
	{
		char	   *path = get_string(obj, "field", step, psprintf("%sfield", prefix), true);
		char	   *op = get_string(obj, "op", step, psprintf("%sop", prefix), true);
		JsonbValue *value = journey_jsonb_get(obj, "value");
		const char *const *o;

		check_keys(obj, field_keys, step, prefix);
		if (strncmp(path, "customer.", 9) != 0 || path[9] == '\0')
			definition_error(step, psprintf("%sfield", prefix),
							 psprintf("must name a customer field, not \"%s\"", path),
							 "Use customer.<column> (email, phone, timezone, full_name, ...) or customer.<attribute>.");
		for (o = ops; *o; o++)
			if (strcmp(*o, op) == 0)
				break;
		if (*o == NULL)
			definition_error(step, psprintf("%sop", prefix), psprintf("is not an operator: \"%s\"", op),
							 "Operators: exists, eq, neq, gt, lt, in.");
		if (strcmp(op, "exists") == 0)
		{
			if (value != NULL)
				definition_error(step, psprintf("%svalue", prefix), "is not used by \"exists\"",
								 "Remove \"value\".");
		}
		else if (value == NULL || value->type == jbvNull)
			definition_error(step, psprintf("%svalue", prefix), psprintf("is required by \"%s\"", op), NULL);
		else if (strcmp(op, "in") == 0)
		{
			if (value->type != jbvBinary || !JsonContainerIsArray(value->val.binary.data))
				definition_error(step, psprintf("%svalue", prefix), "must be an array for \"in\"", NULL);
		}
		else if (value->type == jbvBinary)
			definition_error(step, psprintf("%svalue", prefix),
							 psprintf("must be a string, number or boolean for \"%s\"", op), NULL);
		else if ((strcmp(op, "gt") == 0 || strcmp(op, "lt") == 0) && value->type == jbvBool)
			definition_error(step, psprintf("%svalue", prefix),
							 psprintf("must be a number or string for \"%s\"", op), NULL);
	}
	else if (journey_jsonb_get(obj, "event"))
	{
		char	   *since;

		check_keys(obj, event_keys, step, prefix);
		(void) get_string(obj, "event", step, psprintf("%sevent", prefix), true);
		since = get_string(obj, "since", step, psprintf("%ssince", prefix), false);
		if (since != NULL && strcmp(since, "enrollment") != 0)
			definition_error(step, psprintf("%ssince", prefix), psprintf("must be \"enrollment\", not \"%s\"", since),
							 NULL);
	}
	else if (journey_jsonb_get(obj, "random"))
	{
		JsonbValue *pct = journey_jsonb_get(obj, "random");
		double		percent;

		check_keys(obj, random_keys, step, prefix);
		if (pct->type != jbvNumeric)
			definition_error(step, psprintf("%srandom", prefix), "must be a percentage from 0 to 100", NULL);
		percent = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(pct->val.numeric)));
		if (percent < 0 || percent > 100)
			definition_error(step, psprintf("%srandom", prefix), "must be a percentage from 0 to 100", NULL);
	}
	else if (journey_jsonb_get(obj, "all"))
	{
		check_keys(obj, all_keys, step, prefix);
		check_condition_list(obj, "all", step, psprintf("%sall", prefix), depth);
	}
	else if (journey_jsonb_get(obj, "any"))
	{
		check_keys(obj, any_keys, step, prefix);
		check_condition_list(obj, "any", step, psprintf("%sany", prefix), depth);
	}
	else
		definition_error(step, field, "is not a condition", cond_hint);
}

static void
parse_step(JsonbValue *value, int step, int nsteps, StepDef *def)
{
	static const char *const step_keys[] =
	{"kind", "wait_ms", "next", "message", "branch_config", "template_id", NULL};
	static const char *const email_keys[] = {"purpose", "subject", "body", NULL};
	static const char *const sms_keys[] = {"purpose", "body", NULL};
	static const char *const branch_keys[] = {"if", "then", "else", NULL};
	Jsonb	   *obj;
	JsonbValue *message;
	JsonbValue *branch;
	int64		wait_ms = 0;

	if (value->type != jbvBinary || !JsonContainerIsObject(value->val.binary.data))
		definition_error(step, "step", psprintf("must be an object, not %s", jbv_type_name(value)), NULL);
	obj = value_to_jsonb(value);
	check_keys(obj, step_keys, step, "");

	def->kind = get_string(obj, "kind", step, "kind", true);
	if (strcmp(def->kind, "send_email") != 0 && strcmp(def->kind, "send_sms") != 0 &&
		strcmp(def->kind, "wait") != 0 && strcmp(def->kind, "branch") != 0)
		definition_error(step, "kind", psprintf("is not a step kind: \"%s\"", def->kind),
						 "Step kinds: send_email, send_sms, wait, branch.");

	(void) get_int64(obj, "wait_ms", step, "wait_ms", 0, MAX_WAIT_MS,
					 "wait_ms is a delay in milliseconds, at least 0 and at most a century.", &wait_ms);
	def->wait_ms = wait_ms;
	def->next_step = check_target(obj, "next", step, "next", nsteps, false);
	def->template_id = get_string(obj, "template_id", step, "template_id", false);
	if (def->template_id)
		(void) DirectFunctionCall1(uuid_in, CStringGetDatum(def->template_id));

	message = journey_jsonb_get(obj, "message");
	branch = journey_jsonb_get(obj, "branch_config");

	if (strncmp(def->kind, "send_", 5) == 0)
	{
		bool		email = strcmp(def->kind, "send_email") == 0;
		Jsonb	   *msg;

		if (message == NULL || message->type == jbvNull)
			definition_error(step, "message", psprintf("is required for %s", def->kind),
							 email ? "Give {\"subject\": ..., \"body\": ...}." : "Give {\"body\": ...}.");
		if (message->type != jbvBinary || !JsonContainerIsObject(message->val.binary.data))
			definition_error(step, "message", psprintf("must be an object, not %s", jbv_type_name(message)), NULL);
		if (branch != NULL)
			definition_error(step, "branch_config", psprintf("is not used by %s", def->kind), NULL);
		msg = value_to_jsonb(message);
		check_keys(msg, email ? email_keys : sms_keys, step, "message.");
		def->purpose = get_string(msg, "purpose", step, "message.purpose", false);
		if (email)
			check_template(get_string(msg, "subject", step, "message.subject", true),
						   step, "message.subject");
		check_template(get_string(msg, "body", step, "message.body", true), step, "message.body");
		def->message = msg;
	}
	else if (strcmp(def->kind, "branch") == 0)
	{
		Jsonb	   *cfg;

		if (branch == NULL || branch->type == jbvNull)
			definition_error(step, "branch_config", "is required for branch",
							 "Give {\"if\": CONDITION, \"then\": INDEX, \"else\": INDEX}.");
		if (branch->type != jbvBinary || !JsonContainerIsObject(branch->val.binary.data))
			definition_error(step, "branch_config", psprintf("must be an object, not %s", jbv_type_name(branch)), NULL);
		if (message != NULL)
			definition_error(step, "message", "is not used by branch", NULL);
		if (def->next_step >= 0)
			definition_error(step, "next", "is not used by branch",
							 "A branch goes where branch_config.then or branch_config.else says.");
		cfg = value_to_jsonb(branch);
		check_keys(cfg, branch_keys, step, "branch_config.");
		if (journey_jsonb_get(cfg, "if") == NULL)
			definition_error(step, "branch_config.if", "is required", NULL);
		check_condition(journey_jsonb_get(cfg, "if"), step, "branch_config.if", 1);
		(void) check_target(cfg, "then", step, "branch_config.then", nsteps, true);
		(void) check_target(cfg, "else", step, "branch_config.else", nsteps, true);
		def->branch = cfg;
	}
	else
	{
		if (message != NULL)
			definition_error(step, "message", "is not used by wait", NULL);
		if (branch != NULL)
			definition_error(step, "branch_config", "is not used by wait", NULL);
	}
}

static void
parse_definition(Jsonb *definition, SequenceDef *def)
{
	static const char *const top_keys[] =
	{"name", "description", "status", "trigger_event_type", "exit_event_types",
		"allow_manual_enroll", "reentry", "quiet_hours", "rate_per_hour", "rate_per_day",
	"steps", NULL};
	static const char *const quiet_keys[] = {"start", "end", NULL};
	JsonbValue *v;
	int64		rate;

	if (!JB_ROOT_IS_OBJECT(definition) || JB_ROOT_IS_SCALAR(definition))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("journey definition must be a JSON object"),
				 errhint("Pass {\"name\": ..., \"steps\": [...]}.")));
	check_keys(definition, top_keys, 0, "");

	def->name = get_string(definition, "name", 0, "name", true);
	def->description = get_string(definition, "description", 0, "description", false);

	def->status = get_string(definition, "status", 0, "status", false);
	if (def->status == NULL)
		def->status = "draft";
	else if (strcmp(def->status, "active") != 0 && strcmp(def->status, "paused") != 0 &&
			 strcmp(def->status, "draft") != 0)
		definition_error(0, "status", psprintf("must be active, paused or draft, not \"%s\"", def->status), NULL);

	def->trigger_event_type = get_string(definition, "trigger_event_type", 0, "trigger_event_type", false);
	if (def->trigger_event_type && def->trigger_event_type[0] == '\0')
		definition_error(0, "trigger_event_type", "must not be empty",
						 "Leave it out for a journey entered only by enroll_customer.");

	def->exit_event_types = NIL;
	v = journey_jsonb_get(definition, "exit_event_types");
	if (v != NULL && v->type != jbvNull)
	{
		JsonbIterator *it;
		JsonbValue	elem;
		JsonbIteratorToken tok;

		if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
			definition_error(0, "exit_event_types", "must be an array of event types", NULL);
		it = JsonbIteratorInit(v->val.binary.data);
		while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
		{
			char	   *type;

			if (tok != WJB_ELEM)
				continue;
			if (elem.type != jbvString || elem.val.string.len == 0)
				definition_error(0, "exit_event_types", "must hold only non-empty strings", NULL);
			type = pnstrdup(elem.val.string.val, elem.val.string.len);
			if (def->trigger_event_type && strcmp(type, def->trigger_event_type) == 0)
				definition_error(0, "exit_event_types",
								 psprintf("lists \"%s\", which is also the trigger event type", type),
								 "An event cannot both start and end the same journey.");
			def->exit_event_types = lappend(def->exit_event_types, type);
		}
	}

	v = journey_jsonb_get(definition, "allow_manual_enroll");
	def->allow_manual_enroll = false;
	if (v != NULL && v->type != jbvNull)
	{
		if (v->type != jbvBool)
			definition_error(0, "allow_manual_enroll", psprintf("must be a boolean, not %s", jbv_type_name(v)), NULL);
		def->allow_manual_enroll = v->val.boolean;
	}

	def->reentry = get_string(definition, "reentry", 0, "reentry", false);
	if (def->reentry == NULL)
		def->reentry = "after_exit";
	else if (strcmp(def->reentry, "never") != 0 && strcmp(def->reentry, "after_exit") != 0)
		definition_error(0, "reentry", psprintf("must be never or after_exit, not \"%s\"", def->reentry), NULL);

	def->quiet_start = def->quiet_end = NULL;
	v = journey_jsonb_get(definition, "quiet_hours");
	if (v != NULL && v->type != jbvNull)
	{
		Jsonb	   *quiet;

		if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
			definition_error(0, "quiet_hours", "must be an object",
							 "Give {\"start\": \"21:00\", \"end\": \"08:00\"}.");
		quiet = value_to_jsonb(v);
		check_keys(quiet, quiet_keys, 0, "quiet_hours.");
		def->quiet_start = get_clock(quiet, "start", "quiet_hours.start");
		def->quiet_end = get_clock(quiet, "end", "quiet_hours.end");
	}

	/* Absent: the default; JSON null: unlimited. */
	def->rate_hour_null = false;
	def->rate_hour = 100;
	v = journey_jsonb_get(definition, "rate_per_hour");
	if (v != NULL && v->type == jbvNull)
		def->rate_hour_null = true;
	else if (get_int64(definition, "rate_per_hour", 0, "rate_per_hour", 1, PG_INT32_MAX,
					   "Give a positive number of messages, or null for no limit.", &rate))
		def->rate_hour = (int32) rate;
	def->rate_day_null = false;
	def->rate_day = 1000;
	v = journey_jsonb_get(definition, "rate_per_day");
	if (v != NULL && v->type == jbvNull)
		def->rate_day_null = true;
	else if (get_int64(definition, "rate_per_day", 0, "rate_per_day", 1, PG_INT32_MAX,
					   "Give a positive number of messages, or null for no limit.", &rate))
		def->rate_day = (int32) rate;

	v = journey_jsonb_get(definition, "steps");
	if (v == NULL || v->type == jbvNull)
		definition_error(0, "steps", "is required", "Give an array of at least one step.");
	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data) ||
		JsonContainerSize(v->val.binary.data) == 0)
		definition_error(0, "steps", "must be a non-empty array", NULL);
	def->nsteps = JsonContainerSize(v->val.binary.data);
	if (def->nsteps > MAX_STEPS)
		definition_error(0, "steps", psprintf("has %d steps, more than %d", def->nsteps, MAX_STEPS), NULL);
	def->steps = palloc0(sizeof(StepDef) * def->nsteps);
	{
		JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
		JsonbValue	elem;
		JsonbIteratorToken tok;
		int			i = 0;

		while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
		{
			if (tok != WJB_ELEM)
				continue;
			parse_step(&elem, i + 1, def->nsteps, &def->steps[i]);
			i++;
		}
	}
}

static Datum
nullable_text(const char *s, char *nulls, int i)
{
	nulls[i] = s ? ' ' : 'n';
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

static Datum
write_sequence(Datum business_id, SequenceDef *def)
{
	Oid			seq_types[12] = {UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID,
	BOOLOID, TEXTOID, TIMEOID, TIMEOID, INT4OID, INT4OID};
	Datum		seq_values[12];
	char		seq_nulls[12];
	Oid			step_types[10] = {UUIDOID, UUIDOID, TEXTOID, INT4OID, INT8OID, UUIDOID,
	TEXTOID, JSONBOID, JSONBOID, INT4OID};
	Datum		step_values[10];
	char		step_nulls[10];
	Datum	   *exit_types;
	int			nexit = list_length(def->exit_event_types);
	ListCell   *lc;
	int			i = 0;
	bool		isnull;
	Datum		sequence_id;
	MemoryContext caller_cxt = CurrentMemoryContext;

	exit_types = palloc(sizeof(Datum) * (nexit + 1));
	foreach(lc, def->exit_event_types)
		exit_types[i++] = CStringGetTextDatum((char *) lfirst(lc));

	memset(seq_nulls, ' ', sizeof(seq_nulls));
	seq_values[0] = business_id;
	seq_values[1] = CStringGetTextDatum(def->name);
	seq_values[2] = nullable_text(def->description, seq_nulls, 2);
	seq_values[3] = CStringGetTextDatum(def->status);
	seq_values[4] = nullable_text(def->trigger_event_type, seq_nulls, 4);
	seq_values[5] = PointerGetDatum(construct_array(exit_types, nexit, TEXTOID, -1, false, TYPALIGN_INT));
	seq_values[6] = BoolGetDatum(def->allow_manual_enroll);
	seq_values[7] = CStringGetTextDatum(def->reentry);
	seq_values[8] = def->quiet_start ?
		DirectFunctionCall1(time_in, CStringGetDatum(def->quiet_start)) : (Datum) 0;
	seq_nulls[8] = def->quiet_start ? ' ' : 'n';
	seq_values[9] = def->quiet_end ?
		DirectFunctionCall1(time_in, CStringGetDatum(def->quiet_end)) : (Datum) 0;
	seq_nulls[9] = def->quiet_end ? ' ' : 'n';
	seq_values[10] = Int32GetDatum(def->rate_hour);
	seq_nulls[10] = def->rate_hour_null ? 'n' : ' ';
	seq_values[11] = Int32GetDatum(def->rate_day);
	seq_nulls[11] = def->rate_day_null ? 'n' : ' ';

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (SPI_execute_with_args("INSERT INTO journey.sequences (business_id, name, description, status, "
							  "trigger_event_type, exit_event_types, allow_manual_enroll, reentry, "
							  "quiet_hours_start, quiet_hours_end, rate_per_hour, rate_per_day) "
							  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
							  12, seq_types, seq_values, seq_nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "inserting the sequence failed");
	sequence_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	{
		MemoryContext spi_cxt = MemoryContextSwitchTo(caller_cxt);

		sequence_id = datumCopy(sequence_id, false, UUID_LEN);
		MemoryContextSwitchTo(spi_cxt);
	}

	for (i = 0; i < def->nsteps; i++)
	{
		StepDef    *st = &def->steps[i];

		memset(step_nulls, ' ', sizeof(step_nulls));
		step_values[0] = business_id;
		step_values[1] = sequence_id;
		step_values[2] = CStringGetTextDatum(st->kind);
		step_values[3] = Int32GetDatum(i + 1);
		step_values[4] = Int64GetDatum(st->wait_ms);
		step_values[5] = st->template_id ?
			DirectFunctionCall1(uuid_in, CStringGetDatum(st->template_id)) : (Datum) 0;
		step_nulls[5] = st->template_id ? ' ' : 'n';
		step_values[6] = nullable_text(st->purpose, step_nulls, 6);
		step_values[7] = st->message ? JsonbPGetDatum(st->message) :
			DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
		step_values[8] = st->branch ? JsonbPGetDatum(st->branch) : (Datum) 0;
		step_nulls[8] = st->branch ? ' ' : 'n';
		step_values[9] = Int32GetDatum(st->next_step);
		step_nulls[9] = st->next_step >= 0 ? ' ' : 'n';
		if (SPI_execute_with_args("INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, "
								  "step_index, wait_ms, template_id, message_purpose, message_config, "
								  "branch_config, next_step_index) "
								  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
								  10, step_types, step_values, step_nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "inserting step %d failed", i + 1);
	}
	SPI_finish();
	return sequence_id;
}

Datum
journey_create_sequence(PG_FUNCTION_ARGS)
{
	Datum		business_id;
	Jsonb	   *definition;
	SequenceDef def;
	JourneyUserSwitch saved;
	Datum		sequence_id;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("business id must not be null"),
				 errhint("Pass the id returned by journey.create_business.")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("journey definition must not be null"),
				 errhint("Pass {\"name\": ..., \"steps\": [...]}.")));
	business_id = PG_GETARG_DATUM(0);
	definition = PG_GETARG_JSONB_P(1);

	journey_require_member(business_id);
	parse_definition(definition, &def);

	journey_become_owner(&saved);
	journey_require_business_exists(business_id);
	sequence_id = write_sequence(business_id, &def);
	journey_restore_user(&saved);

	PG_RETURN_DATUM(sequence_id);
}
