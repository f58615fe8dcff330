/*-------------------------------------------------------------------------
 *
 * definition.c
 *	  The grammar of a journey definition, read into the records of
 *	  definition.h.  create_sequence parses a whole definition with it
 *	  (journey_definition_parse, raising); the executor compiles each stored
 *	  step with the same functions (journey_step_compile, marking the step
 *	  invalid).  Since both read the same language, nothing create_sequence
 *	  accepts can fail to compile when it runs.
 *
 * Every check reports into a JourneyError and returns false, so the
 * executor needs no subtransaction to survive a bad step; the only errors
 * raised here are out of memory and the like.  Conditions have their own
 * file, definition_condition.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

#include "definition_parse.h"

/* A century: longer waits are typing mistakes, and would overflow times. */
#define MAX_WAIT_MS INT64CONST(3153600000000)

/* A target's upper bound when the number of steps is not known (executor). */
#define STEPS_UNKNOWN PG_INT32_MAX

#define TARGET_HINT "Give the index of a later step, or 0 to finish."
#define EXIT_TYPES_HINT "Give at most 50 event types, each a non-empty string of at most 200 characters, such as [\"review_left\"]."
#define TEMPLATE_ID_HINT "Pass the id returned by journey.create_template for this business."
#define ACYCLIC_HINT "Journeys are acyclic: a step can only lead forward, or to 0 (finish)."

/* The step kinds, by their stored names; the order of the hint. */
typedef struct StepKindInfo
{
	const char *name;
	StepKind	kind;
} StepKindInfo;

static const StepKindInfo step_kinds[] = {
	{"send_email", STEP_EMAIL},
	{"send_sms", STEP_SMS},
	{"wait", STEP_WAIT},
	{"branch", STEP_BRANCH},
	{"wait_until", STEP_WAIT_UNTIL},
};

/* Records an error at a field of the current step; returns false. */
bool
def_fail(Parser *p, const char *field, const char *problem, const char *hint)
{
	JourneyError *err = p->err;

	err->sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
	err->reason = psprintf("field \"%s\" %s", field, problem);
	err->message = p->step > 0 ?
		psprintf("invalid journey definition: step %d %s", p->step, err->reason) :
		psprintf("invalid journey definition: %s", err->reason);
	/* Where no rule-specific hint applies, point at the whole format. */
	err->hint = hint ? hint : FORMAT_HINT;
	return false;
}

const char *
journey_step_kind_name(StepKind kind)
{
	for (int i = 0; i < lengthof(step_kinds); i++)
		if (step_kinds[i].kind == kind)
			return step_kinds[i].name;
	elog(ERROR, "unrecognized journey step kind %d", (int) kind);
	return NULL;
}

static bool
step_kind_from_name(Parser *p, const char *name, StepKind *kind)
{
	StringInfoData hint;

	for (int i = 0; i < lengthof(step_kinds); i++)
		if (strcmp(step_kinds[i].name, name) == 0)
		{
			*kind = step_kinds[i].kind;
			return true;
		}
	initStringInfo(&hint);
	appendStringInfoString(&hint, "Step kinds: ");
	for (int i = 0; i < lengthof(step_kinds); i++)
		appendStringInfo(&hint, "%s%s", i ? ", " : "", step_kinds[i].name);
	appendStringInfoChar(&hint, '.');
	return def_fail(p, "kind", psprintf("is not a step kind: \"%s\"", name), hint.data);
}

const char *
def_type_name(JsonbValue *v)
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

bool
def_is_object(JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

/* Refuses any key of obj not listed in allowed. */
bool
def_check_keys(Parser *p, Jsonb *obj, const char *const *allowed, const char *prefix)
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
			return def_fail(p, psprintf("%s%s", prefix, key), "is not a known field",
						    psprintf("Known fields here: %s.", known.data));
		}
	}
	return true;
}

/* A string field into *out; NULL when absent (and not required). */
bool
def_get_string(Parser *p, Jsonb *obj, const char *key, const char *field, bool required,
		   char **out)
{
	JsonbValue *v = journey_jsonb_get(obj, key);

	*out = NULL;
	if (v == NULL || v->type == jbvNull)
	{
		if (required)
			return def_fail(p, field, "is required",
						    psprintf("Add \"%s\" with a non-empty string.", key));
		return true;
	}
	if (v->type != jbvString)
		return def_fail(p, field, psprintf("must be a string, not %s", def_type_name(v)),
					    psprintf("Write \"%s\" as a JSON string in double quotes.", key));
	if (v->val.string.len == 0 && required)
		return def_fail(p, field, "must not be empty",
					    psprintf("Give \"%s\" a non-empty string.", key));
	*out = pnstrdup(v->val.string.val, v->val.string.len);
	return true;
}

/* An integer-valued JSON number within [min, max]; *found false if absent. */
static bool
get_int64(Parser *p, Jsonb *obj, const char *key, const char *field,
		  int64 min, int64 max, const char *hint, bool *found, int64 *result)
{
	JsonbValue *v = journey_jsonb_get(obj, key);
	char	   *text;
	char	   *end;
	int64		value;

	*found = false;
	if (v == NULL)
		return true;
	if (v->type != jbvNumeric)
		return def_fail(p, field, psprintf("must be a number, not %s", def_type_name(v)), hint);
	text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	errno = 0;
	value = strtoi64(text, &end, 10);
	if (*end != '\0' || errno != 0)
	{
		/* 1e400 is written out in 401 digits: show it as the user wrote it. */
		if (strlen(text) > 32)
			text = numeric_out_sci(v->val.numeric, 3);
		return def_fail(p, field, psprintf("must be a whole number, not %s", text), hint);
	}
	if (value < min || value > max)
		return def_fail(p, field,
					    psprintf("must be between " INT64_FORMAT " and " INT64_FORMAT ", not %s",
							     min, max, text), hint);
	*found = true;
	*result = value;
	return true;
}

/* "HH:MM" with HH 00-23 and MM 00-59. */
static bool
get_clock(Parser *p, Jsonb *obj, const char *key, const char *field, char **out)
{
	char	   *s;

	if (!def_get_string(p, obj, key, field, true, &s))
		return false;
	if (strlen(s) != 5 || !isdigit((unsigned char) s[0]) || !isdigit((unsigned char) s[1]) ||
		s[2] != ':' || !isdigit((unsigned char) s[3]) || !isdigit((unsigned char) s[4]) ||
		atoi(s) > 23 || atoi(s + 3) > 59)
		return def_fail(p, field, psprintf("must be a time of day as HH:MM, not \"%s\"", s),
					    "Use 24-hour times such as \"21:00\" and \"08:00\".");
	*out = s;
	return true;
}

/* A step target: 0 (finish) or a step after the current one. */
static bool
check_target_value(Parser *p, const char *field, int64 target)
{
	if (target != 0 && p->step >= p->nsteps)
		return def_fail(p, field,
					    psprintf("must be 0 (finish): step %d is the last step, not " INT64_FORMAT,
							     p->step, target),
					    ACYCLIC_HINT);
	if ((target != 0 && target <= p->step) || target > p->nsteps)
	{
		if (p->nsteps == STEPS_UNKNOWN)
			return def_fail(p, field,
						    psprintf("must be 0 or a later step (after %d), not " INT64_FORMAT,
								     p->step, target),
						    ACYCLIC_HINT);
		return def_fail(p, field,
					    psprintf("must be 0 or a later step (%d to %d), not " INT64_FORMAT,
							     p->step + 1, p->nsteps, target),
					    ACYCLIC_HINT);
	}
	return true;
}

/* A target field into *target; STEP_FOLLOWING when absent (and not required). */
static bool
get_target(Parser *p, Jsonb *obj, const char *key, const char *field, bool required,
		   int32 *target)
{
	int64		value;
	bool		found;

	*target = STEP_FOLLOWING;
	if (!get_int64(p, obj, key, field, 0, PG_INT32_MAX, TARGET_HINT, &found, &value))
		return false;
	if (!found)
		return required ? def_fail(p, field, "is required", TARGET_HINT) : true;
	if (!check_target_value(p, field, value))
		return false;
	*target = (int32) value;
	return true;
}

/* One template of a step: parsed, and its paths ones the executor provides. */
static bool
compile_template(Parser *p, const char *source, const char *field, JourneyTemplate **out)
{
	char	   *where = psprintf("step %d field \"%s\"", p->step, field);

	*out = journey_template_compile(source, where, p->err);
	return *out != NULL && journey_template_paths_ok(*out, where, p->err);
}

/* ---------- a step's configuration, shared by both entry points ---------- */

/* A send step's message: {"purpose", "subject" (email), "body"}. */
static bool
compile_message(Parser *p, JourneyStep *st, Jsonb *msg)
{
	static const char *const email_keys[] = {"purpose", "subject", "body", NULL};
	static const char *const sms_keys[] = {"purpose", "body", NULL};
	bool		email = st->kind == STEP_EMAIL;
	char	   *source;

	static const char *const template_keys[] = {"purpose", NULL};

	st->message = msg;
	/* A template gives the texts; the message keeps only the purpose. */
	if (st->template_id != NULL)
	{
		if (msg == NULL)
			return true;
		if (journey_jsonb_get(msg, "subject") || journey_jsonb_get(msg, "body"))
			return def_fail(p, journey_jsonb_get(msg, "subject") ? "message.subject" : "message.body",
						"is not used with template_id",
						"The template gives the subject and body: remove them, or remove template_id.");
		return def_check_keys(p, msg, template_keys, "message.") &&
			def_get_string(p, msg, "purpose", "message.purpose", false, &st->purpose);
	}
	if (!def_check_keys(p, msg, email ? email_keys : sms_keys, "message.") ||
		!def_get_string(p, msg, "purpose", "message.purpose", false, &st->purpose))
		return false;
	if (email &&
		(!def_get_string(p, msg, "subject", "message.subject", true, &source) ||
		 !compile_template(p, source, "message.subject", &st->subject)))
		return false;
	return def_get_string(p, msg, "body", "message.body", true, &source) &&
		compile_template(p, source, "message.body", &st->body);
}

/* A branch's {"if": CONDITION, "then": INDEX, "else": INDEX}. */
static bool
compile_branch(Parser *p, JourneyStep *st, Jsonb *cfg)
{
	static const char *const branch_keys[] = {"if", "then", "else", NULL};
	JsonbValue *cond;

	st->branch = cfg;
	if (!def_check_keys(p, cfg, branch_keys, "branch_config."))
		return false;
	cond = journey_jsonb_get(cfg, "if");
	if (cond == NULL)
		return def_fail(p, "branch_config.if", "is required", NULL);
	if (!def_parse_condition(p, cond, "branch_config.if", 1, &st->cond) ||
		!get_target(p, cfg, "then", "branch_config.then", true, &st->then_step) ||
		!get_target(p, cfg, "else", "branch_config.else", true, &st->else_step))
		return false;
	st->cond_text = JsonbToCString(NULL, cond->val.binary.data, cond->val.binary.len);
	return true;
}

/*
 * A wait_until's {"event": TYPE, "then": INDEX, "else": INDEX}, stored in
 * branch_config (its timeout_ms is the step's wait_ms, so arriving sets
 * next_run_at = t + timeout_ms like any delay).  The fields are named as
 * the definition writes them, at the step's top level.
 */
static bool
compile_wait_until(Parser *p, JourneyStep *st, Jsonb *cfg)
{
	static const char *const wait_until_keys[] = {"event", "then", "else", NULL};

	st->branch = cfg;
	if (!def_check_keys(p, cfg, wait_until_keys, "") ||
		!def_get_string(p, cfg, "event", "event", true, &st->await_event))
		return false;
	if (strlen(st->await_event) > 200)
		return def_fail(p, "event", "must be at most 200 characters",
					"Give the event type as ingest_event receives it, such as \"review_left\".");
	if (!get_target(p, cfg, "then", "then", true, &st->then_step) ||
		!get_target(p, cfg, "else", "else", true, &st->else_step))
		return false;
	return true;
}

/* What a step of each kind needs besides kind, wait_ms and next. */
static bool
compile_step_config(Parser *p, JourneyStep *st, Jsonb *message, Jsonb *branch)
{
	switch (st->kind)
	{
		case STEP_EMAIL:
		case STEP_SMS:
			return compile_message(p, st, message);
		case STEP_BRANCH:
			return compile_branch(p, st, branch);
		case STEP_WAIT_UNTIL:
			return compile_wait_until(p, st, branch);
		case STEP_WAIT:
			return true;
	}
	elog(ERROR, "unrecognized journey step kind %d", (int) st->kind);
	return false;
}

/* ---------- the executor's entry point ---------- */

void
journey_step_compile(JourneyStep *step, const char *kind, Jsonb *message_config,
					 Jsonb *branch_config)
{
	JourneyError err;
	Parser		p = {&err, step->step_index, STEPS_UNKNOWN};
	bool		ok;

	ok = step_kind_from_name(&p, kind, &step->kind);
	if (ok && step->next_step != STEP_FOLLOWING)
		ok = check_target_value(&p, "next", step->next_step);
	if (ok && (step->kind == STEP_EMAIL || step->kind == STEP_SMS) &&
		step->template_id == NULL &&
		(message_config == NULL || !JB_ROOT_IS_OBJECT(message_config)))
		ok = def_fail(&p, "message", "must be an object", NULL);
	if (ok && (step->kind == STEP_BRANCH || step->kind == STEP_WAIT_UNTIL) &&
		(branch_config == NULL || !JB_ROOT_IS_OBJECT(branch_config)))
		ok = def_fail(&p, "branch_config", "must be an object", NULL);
	if (ok)
		ok = compile_step_config(&p, step, message_config, branch_config);
	if (!ok)
		step->invalid = err.reason;
}

void
journey_step_compile_template(JourneyStep *step, const char *channel,
							  const char *subject, const char *body)
{
	JourneyError err;
	Parser		p = {&err, step->step_index, STEPS_UNKNOWN};
	bool		email = step->kind == STEP_EMAIL;
	bool		ok = true;

	if (step->invalid != NULL)
		return;
	if (body == NULL)
		ok = def_fail(&p, "template_id", "names no template of the business", NULL);
	else if (strcmp(channel, email ? "email" : "sms") != 0)
		ok = def_fail(&p, "template_id", psprintf("names a %s template", channel), NULL);
	else if (email && subject == NULL)
		ok = def_fail(&p, "template_id", "names an email template without a subject", NULL);
	if (ok && email)
		ok = compile_template(&p, subject, "template.subject", &step->subject);
	if (ok)
		ok = compile_template(&p, body, "template.body", &step->body);
	if (!ok)
		step->invalid = err.reason;
}

/* ---------- create_sequence's entry point ---------- */

/* event, timeout_ms, then and else belong to wait_until alone. */
static bool
only_wait_until_keys(Parser *p, Jsonb *obj, const char *kind)
{
	static const char *const keys[] = {"event", "timeout_ms", "then", "else", NULL};

	for (int i = 0; keys[i] != NULL; i++)
		if (journey_jsonb_get(obj, keys[i]) != NULL)
			return def_fail(p, keys[i], psprintf("is not used by %s", kind),
						strcmp(kind, "branch") == 0 ?
						"A branch's targets go in branch_config.then and branch_config.else." :
						"Only a wait_until step has event, timeout_ms, then and else.");
	return true;
}

/*
 * {"kind": "wait_until", "event": TYPE, "timeout_ms": N, "then": INDEX,
 * "else": INDEX}: stored as wait_ms = timeout_ms and branch_config =
 * {"event", "then", "else"}, which the executor compiles with the same
 * compile_wait_until.
 */
static bool
parse_wait_until(Parser *p, Jsonb *obj, JourneyStep *st, JsonbValue *message,
				 JsonbValue *branch)
{
	static const char *const keys[] = {"event", "then", "else"};
	JsonbParseState *ps = NULL;
	JsonbValue *result;
	bool		found;

	if (message != NULL)
		return def_fail(p, "message", "is not used by wait_until", NULL);
	if (branch != NULL)
		return def_fail(p, "branch_config", "is not used by wait_until",
					"Give event, timeout_ms, then and else as fields of the step.");
	if (st->next_step != STEP_FOLLOWING)
		return def_fail(p, "next", "is not used by wait_until",
					"A wait_until goes where then (the event came) or else (the timeout) says.");
	if (journey_jsonb_get(obj, "wait_ms") != NULL)
		return def_fail(p, "wait_ms", "is not used by wait_until",
					"A wait_until waits at most timeout_ms; give that instead.");
	if (!get_int64(p, obj, "timeout_ms", "timeout_ms", 1, MAX_WAIT_MS,
				   "timeout_ms is how long to wait for the event in milliseconds, at least 1 and at most a century.",
				   &found, &st->wait_ms))
		return false;
	if (!found)
		return def_fail(p, "timeout_ms", "is required",
					"Give how long to wait for the event in milliseconds, such as 259200000 for three days.");

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < lengthof(keys); i++)
	{
		JsonbValue	k;
		JsonbValue *v = journey_jsonb_get(obj, keys[i]);

		if (v == NULL)
			continue;			/* compile_wait_until says it is required */
		k.type = jbvString;
		k.val.string.val = (char *) keys[i];
		k.val.string.len = strlen(keys[i]);
		pushJsonbValue(&ps, WJB_KEY, &k);
		pushJsonbValue(&ps, WJB_VALUE, v);
	}
	result = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return compile_wait_until(p, st, JsonbValueToJsonb(result));
}

/*
 * Whether uuid_in would accept s: 32 hex digits, a hyphen allowed after any
 * group of four, the whole optionally in braces.  Checked here so that a bad
 * id is a definition error (22023) rather than uuid_in's 22P02.
 */
static bool
is_uuid_text(const char *s)
{
	bool		braces = s[0] == '{';

	if (braces)
		s++;
	for (int i = 0; i < UUID_LEN; i++)
	{
		if (!isxdigit((unsigned char) s[0]) || !isxdigit((unsigned char) s[1]))
			return false;
		s += 2;
		if (s[0] == '-' && (i % 2) == 1 && i < UUID_LEN - 1)
			s++;
	}
	if (braces && *s++ != '}')
		return false;
	return *s == '\0';
}

/* Short and printable: safe to quote back in a message. */
static bool
is_printable_ascii(const char *s, size_t max)
{
	if (strlen(s) > max)
		return false;
	for (; *s; s++)
		if (*s < 0x20 || *s > 0x7e)
			return false;
	return true;
}

static bool
parse_step(Parser *p, JsonbValue *value, JourneyStep *st)
{
	static const char *const step_keys[] =
	{"kind", "wait_ms", "next", "message", "branch_config", "template_id",
	"event", "timeout_ms", "then", "else", NULL};
	Jsonb	   *obj;
	JsonbValue *message;
	JsonbValue *branch;
	char	   *kind;
	bool		found;

	st->step_index = p->step;
	if (!def_is_object(value))
		return def_fail(p, "step", psprintf("must be an object, not %s", def_type_name(value)), NULL);
	obj = JsonbValueToJsonb(value);
	if (!def_check_keys(p, obj, step_keys, "") ||
		!def_get_string(p, obj, "kind", "kind", true, &kind) ||
		!step_kind_from_name(p, kind, &st->kind) ||
		!get_int64(p, obj, "wait_ms", "wait_ms", 0, MAX_WAIT_MS,
				   "wait_ms is a delay in milliseconds, at least 0 and at most a century.",
				   &found, &st->wait_ms) ||
		!get_target(p, obj, "next", "next", false, &st->next_step) ||
		!def_get_string(p, obj, "template_id", "template_id", false, &st->template_id))
		return false;
	if (!found)
		st->wait_ms = 0;
	if (st->template_id)
	{
		if (!is_uuid_text(st->template_id))
			return def_fail(p, "template_id",
							is_printable_ascii(st->template_id, 64) ?
							psprintf("must be a template id (a uuid), not \"%s\"", st->template_id) :
							"must be a template id (a uuid)",
							TEMPLATE_ID_HINT);
		if (st->kind != STEP_EMAIL && st->kind != STEP_SMS)
			return def_fail(p, "template_id", psprintf("is not used by %s", kind),
						"Only send_email and send_sms steps name a template.");
	}

	message = journey_jsonb_get(obj, "message");
	branch = journey_jsonb_get(obj, "branch_config");
	switch (st->kind)
	{
		case STEP_EMAIL:
		case STEP_SMS:
			if ((message == NULL || message->type == jbvNull) && st->template_id)
				message = NULL;
			else if (message == NULL || message->type == jbvNull)
				return def_fail(p, "message", psprintf("is required for %s", kind),
							st->kind == STEP_EMAIL ?
							"Give {\"subject\": ..., \"body\": ...}." : "Give {\"body\": ...}.");
			else if (!def_is_object(message))
				return def_fail(p, "message",
							psprintf("must be an object, not %s", def_type_name(message)), NULL);
			if (branch != NULL)
				return def_fail(p, "branch_config", psprintf("is not used by %s", kind), NULL);
			break;
		case STEP_BRANCH:
			if (branch == NULL || branch->type == jbvNull)
				return def_fail(p, "branch_config", "is required for branch",
							    "Give {\"if\": CONDITION, \"then\": INDEX, \"else\": INDEX}.");
			if (!def_is_object(branch))
				return def_fail(p, "branch_config",
							    psprintf("must be an object, not %s", def_type_name(branch)), NULL);
			if (message != NULL)
				return def_fail(p, "message", "is not used by branch", NULL);
			if (st->next_step != STEP_FOLLOWING)
				return def_fail(p, "next", "is not used by branch",
							    "A branch goes where branch_config.then or branch_config.else says.");
			break;
		case STEP_WAIT:
			if (message != NULL)
				return def_fail(p, "message", "is not used by wait", NULL);
			if (branch != NULL)
				return def_fail(p, "branch_config", "is not used by wait", NULL);
			break;
		case STEP_WAIT_UNTIL:
			return parse_wait_until(p, obj, st, message, branch);
	}
	if (!only_wait_until_keys(p, obj, kind))
		return false;
	return compile_step_config(p, st,
							   message ? JsonbValueToJsonb(message) : NULL,
							   branch ? JsonbValueToJsonb(branch) : NULL);
}

static bool
parse_exit_event_types(Parser *p, JsonbValue *v, JourneyDefinition *def)
{
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;

	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		return def_fail(p, "exit_event_types", "must be an array of event types", EXIT_TYPES_HINT);
	/* The table's CHECK holds the same bounds; refusing here names the field. */
	if (JsonContainerSize(v->val.binary.data) > JOURNEY_EXIT_EVENT_TYPES_MAX)
		return def_fail(p, "exit_event_types",
						psprintf("has %u event types, more than %d",
								 JsonContainerSize(v->val.binary.data),
								 JOURNEY_EXIT_EVENT_TYPES_MAX),
						EXIT_TYPES_HINT);
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		char	   *type;

		if (tok != WJB_ELEM)
			continue;
		if (elem.type != jbvString || elem.val.string.len == 0)
			return def_fail(p, "exit_event_types", "must hold only non-empty strings",
							EXIT_TYPES_HINT);
		if (pg_mbstrlen_with_len(elem.val.string.val, elem.val.string.len) >
			JOURNEY_EVENT_TYPE_MAX)
			return def_fail(p, "exit_event_types",
							psprintf("holds an event type of %d characters, more than %d",
									 pg_mbstrlen_with_len(elem.val.string.val,
														  elem.val.string.len),
									 JOURNEY_EVENT_TYPE_MAX),
							EXIT_TYPES_HINT);
		type = pnstrdup(elem.val.string.val, elem.val.string.len);
		if (def->trigger_event_type && strcmp(type, def->trigger_event_type) == 0)
			return def_fail(p, "exit_event_types",
						    psprintf("lists \"%s\", which is also the trigger event type", type),
						    "An event cannot both start and end the same journey.");
		def->exit_event_types = lappend(def->exit_event_types, type);
	}
	return true;
}

/* rate_per_hour / rate_per_day: absent, the default; JSON null, unlimited. */
static bool
parse_rate(Parser *p, Jsonb *definition, const char *key, int32 dflt,
		   bool *isnull, int32 *rate)
{
	JsonbValue *v = journey_jsonb_get(definition, key);
	int64		value;
	bool		found;

	*isnull = v != NULL && v->type == jbvNull;
	*rate = dflt;
	if (*isnull)
		return true;
	if (!get_int64(p, definition, key, key, 1, PG_INT32_MAX,
				   "Give a positive number of messages, or null for no limit.", &found, &value))
		return false;
	if (found)
		*rate = (int32) value;
	return true;
}

static bool
parse_steps(Parser *p, JsonbValue *v, JourneyDefinition *def)
{
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;

	if (v == NULL || v->type == jbvNull)
		return def_fail(p, "steps", "is required", "Give an array of at least one step.");
	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data) ||
		JsonContainerSize(v->val.binary.data) == 0)
		return def_fail(p, "steps", "must be a non-empty array", NULL);
	def->nsteps = JsonContainerSize(v->val.binary.data);
	if (def->nsteps > JOURNEY_MAX_STEPS)
		return def_fail(p, "steps", psprintf("has %d steps, more than %d", def->nsteps,
										     JOURNEY_MAX_STEPS), NULL);
	def->steps = palloc0(sizeof(JourneyStep) * def->nsteps);
	p->nsteps = def->nsteps;
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		p->step++;
		if (!parse_step(p, &elem, &def->steps[p->step - 1]))
			return false;
	}
	p->step = 0;
	return true;
}

static bool
parse_definition(Parser *p, Jsonb *definition, JourneyDefinition *def)
{
	static const char *const top_keys[] =
	{"name", "description", "status", "trigger_event_type", "exit_event_types",
		"allow_manual_enroll", "reentry", "quiet_hours", "rate_per_hour", "rate_per_day",
	"steps", NULL};
	static const char *const quiet_keys[] = {"start", "end", NULL};
	JsonbValue *v;

	memset(def, 0, sizeof(JourneyDefinition));
	if (!JB_ROOT_IS_OBJECT(definition) || JB_ROOT_IS_SCALAR(definition))
	{
		p->err->sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
		p->err->message = p->err->reason = "journey definition must be a JSON object";
		p->err->hint = "Pass {\"name\": ..., \"steps\": [...]}.";
		return false;
	}
	if (!def_check_keys(p, definition, top_keys, "") ||
		!def_get_string(p, definition, "name", "name", true, &def->name) ||
		!def_get_string(p, definition, "description", "description", false, &def->description) ||
		!def_get_string(p, definition, "status", "status", false, &def->status))
		return false;
	if (def->status == NULL)
		def->status = "draft";
	else if (strcmp(def->status, "active") != 0 && strcmp(def->status, "paused") != 0 &&
			 strcmp(def->status, "draft") != 0)
		return def_fail(p, "status",
					    psprintf("must be active, paused or draft, not \"%s\"", def->status), NULL);

	if (!def_get_string(p, definition, "trigger_event_type", "trigger_event_type", false,
					    &def->trigger_event_type))
		return false;
	if (def->trigger_event_type && def->trigger_event_type[0] == '\0')
		return def_fail(p, "trigger_event_type", "must not be empty",
					    "Leave it out for a journey entered only by enroll_customer.");

	v = journey_jsonb_get(definition, "exit_event_types");
	if (v != NULL && v->type != jbvNull && !parse_exit_event_types(p, v, def))
		return false;

	v = journey_jsonb_get(definition, "allow_manual_enroll");
	if (v != NULL && v->type != jbvNull)
	{
		if (v->type != jbvBool)
			return def_fail(p, "allow_manual_enroll",
						    psprintf("must be a boolean, not %s", def_type_name(v)), NULL);
		def->allow_manual_enroll = v->val.boolean;
	}

	if (!def_get_string(p, definition, "reentry", "reentry", false, &def->reentry))
		return false;
	if (def->reentry == NULL)
		def->reentry = "after_exit";
	else if (strcmp(def->reentry, "never") != 0 && strcmp(def->reentry, "after_exit") != 0)
		return def_fail(p, "reentry",
					    psprintf("must be never or after_exit, not \"%s\"", def->reentry), NULL);

	v = journey_jsonb_get(definition, "quiet_hours");
	if (v != NULL && v->type != jbvNull)
	{
		Jsonb	   *quiet;

		if (!def_is_object(v))
			return def_fail(p, "quiet_hours", "must be an object",
						    "Give {\"start\": \"21:00\", \"end\": \"08:00\"}.");
		quiet = JsonbValueToJsonb(v);
		if (!def_check_keys(p, quiet, quiet_keys, "quiet_hours.") ||
			!get_clock(p, quiet, "start", "quiet_hours.start", &def->quiet_start) ||
			!get_clock(p, quiet, "end", "quiet_hours.end", &def->quiet_end))
			return false;
	}

	return parse_rate(p, definition, "rate_per_hour", 100, &def->rate_hour_null, &def->rate_hour) &&
		parse_rate(p, definition, "rate_per_day", 1000, &def->rate_day_null, &def->rate_day) &&
		parse_steps(p, journey_jsonb_get(definition, "steps"), def);
}

void
journey_definition_parse(Jsonb *definition, JourneyDefinition *def)
{
	JourneyError err;
	Parser		p = {&err, 0, 0};

	if (!parse_definition(&p, definition, def))
		journey_error_raise(&err);
}
