/*-------------------------------------------------------------------------
 *
 * definition_condition.c
 *	  The grammar of branch conditions, part of the definition grammar
 *	  (definition.c): parses a condition tree into the JourneyCondition
 *	  records branch.c evaluates, refusing what evaluation could not
 *	  handle (empty or over-long field paths, nesting past 16 levels,
 *	  percentages outside 0-100 however written).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "definition_parse.h"

#define FIELD_PATH_HINT "Use customer.<column> (email, phone, timezone, full_name, ...) or customer.<attribute>."

typedef struct CondOpInfo
{
	const char *name;
	CondOp		op;
} CondOpInfo;

static const CondOpInfo cond_ops[] = {
	{"exists", OP_EXISTS},
	{"eq", OP_EQ},
	{"neq", OP_NEQ},
	{"gt", OP_GT},
	{"lt", OP_LT},
	{"in", OP_IN},
};

#define COND_HINT \
	"A condition is {\"field\": \"customer.<name>\", \"op\": \"exists|eq|neq|gt|lt|in\", \"value\": ...}, " \
	"{\"event\": TYPE, \"since\": \"enrollment\"}, {\"random\": PERCENT}, {\"all\": [...]} or {\"any\": [...]}."

/* The path after "customer.", split into at most JOURNEY_MAX_FIELD_SEGMENTS parts. */
static bool
parse_field_path(Parser *p, char *path, const char *field, JourneyCondition *cond)
{
	char	   *rest;
	char	   *seg;

	if (strncmp(path, "customer.", 9) != 0 || path[9] == '\0')
		return def_fail(p, field, psprintf("must name a customer field, not \"%s\"", path),
					    FIELD_PATH_HINT);
	rest = pstrdup(path + 9);
	while ((seg = strsep(&rest, ".")) != NULL)
	{
		if (*seg == '\0')
			return def_fail(p, field, psprintf("has an empty part: \"%s\"", path),
						    "Write customer.<name>, or customer.<attribute>.<key> for a value "
						    "inside an attribute, with no empty parts between the dots.");
		if (cond->nsegments == JOURNEY_MAX_FIELD_SEGMENTS)
			return def_fail(p, field,
						    psprintf("has more than %d parts after \"customer.\": \"%s\"",
								     JOURNEY_MAX_FIELD_SEGMENTS, path),
						    "A field path reaches at most 8 levels into the customer.");
		cond->segments[cond->nsegments++] = seg;
	}
	return true;
}

static bool
parse_field_condition(Parser *p, Jsonb *obj, const char *prefix, JourneyCondition *cond)
{
	static const char *const field_keys[] = {"field", "op", "value", NULL};
	char	   *path_field = psprintf("%sfield", prefix);
	char	   *op_field = psprintf("%sop", prefix);
	char	   *value_field = psprintf("%svalue", prefix);
	char	   *path;
	char	   *op;
	JsonbValue *value;
	int			i;

	cond->kind = COND_FIELD;
	if (!def_get_string(p, obj, "field", path_field, true, &path) ||
		!def_get_string(p, obj, "op", op_field, true, &op))
		return false;
	value = journey_jsonb_get(obj, "value");
	if (!def_check_keys(p, obj, field_keys, prefix) ||
		!parse_field_path(p, path, path_field, cond))
		return false;
	for (i = 0; i < lengthof(cond_ops); i++)
		if (strcmp(cond_ops[i].name, op) == 0)
			break;
	if (i == lengthof(cond_ops))
		return def_fail(p, op_field, psprintf("is not an operator: \"%s\"", op),
					    "Operators: exists, eq, neq, gt, lt, in.");
	cond->op = cond_ops[i].op;

	if (cond->op == OP_EXISTS)
	{
		if (value != NULL)
			return def_fail(p, value_field, "is not used by \"exists\"", "Remove \"value\".");
		return true;
	}
	if (value == NULL || value->type == jbvNull)
		return def_fail(p, value_field, psprintf("is required by \"%s\"", op), NULL);
	if (cond->op == OP_IN)
	{
		if (value->type != jbvBinary || !JsonContainerIsArray(value->val.binary.data))
			return def_fail(p, value_field, "must be an array for \"in\"", NULL);
	}
	else if (value->type == jbvBinary)
		return def_fail(p, value_field,
					    psprintf("must be a string, number or boolean for \"%s\"", op), NULL);
	else if ((cond->op == OP_GT || cond->op == OP_LT) && value->type == jbvBool)
		return def_fail(p, value_field, psprintf("must be a number or string for \"%s\"", op),
					    NULL);
	cond->value = *value;
	return true;
}

static bool
parse_condition_list(Parser *p, Jsonb *obj, const char *key, const char *field, int depth,
					 JourneyCondition *cond)
{
	JsonbValue *list = journey_jsonb_get(obj, key);
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (list->type != jbvBinary || !JsonContainerIsArray(list->val.binary.data) ||
		JsonContainerSize(list->val.binary.data) == 0)
		return def_fail(p, field, "must be a non-empty array of conditions", NULL);
	cond->children = palloc(sizeof(JourneyCondition *) * JsonContainerSize(list->val.binary.data));
	it = JsonbIteratorInit(list->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		if (!def_parse_condition(p, &v, psprintf("%s[%d]", field, cond->nchildren), depth + 1,
							     &cond->children[cond->nchildren]))
			return false;
		cond->nchildren++;
	}
	return true;
}

bool
def_parse_condition(Parser *p, JsonbValue *v, const char *field, int depth,
					JourneyCondition **out)
{
	static const char *const event_keys[] = {"event", "since", NULL};
	static const char *const random_keys[] = {"random", NULL};
	static const char *const all_keys[] = {"all", NULL};
	static const char *const any_keys[] = {"any", NULL};
	JourneyCondition *cond = palloc0(sizeof(JourneyCondition));
	Jsonb	   *obj;
	char	   *prefix;

	*out = cond;
	if (depth > JOURNEY_MAX_CONDITION_DEPTH)
		return def_fail(p, field, "nests conditions too deeply", "Conditions nest at most 16 levels.");
	if (!def_is_object(v))
		return def_fail(p, field, psprintf("must be an object, not %s", def_type_name(v)), COND_HINT);
	obj = JsonbValueToJsonb(v);
	prefix = psprintf("%s.", field);

	if (journey_jsonb_get(obj, "field"))
		return parse_field_condition(p, obj, prefix, cond);
	if (journey_jsonb_get(obj, "event"))
	{
		char	   *since;

		cond->kind = COND_EVENT;
		if (!def_check_keys(p, obj, event_keys, prefix) ||
			!def_get_string(p, obj, "event", psprintf("%sevent", prefix), true, &cond->event_type) ||
			!def_get_string(p, obj, "since", psprintf("%ssince", prefix), false, &since))
			return false;
		if (since != NULL && strcmp(since, "enrollment") != 0)
			return def_fail(p, psprintf("%ssince", prefix),
						    psprintf("must be \"enrollment\", not \"%s\"", since), NULL);
		return true;
	}
	if (journey_jsonb_get(obj, "random"))
	{
		JsonbValue *pct = journey_jsonb_get(obj, "random");

		cond->kind = COND_RANDOM;
		if (!def_check_keys(p, obj, random_keys, prefix))
			return false;
		if (pct->type != jbvNumeric)
			return def_fail(p, psprintf("%srandom", prefix), "must be a percentage from 0 to 100", NULL);
		if (DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(pct->val.numeric),
											  NumericGetDatum(int64_to_numeric(0)))) < 0 ||
			DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(pct->val.numeric),
											  NumericGetDatum(int64_to_numeric(100)))) > 0)
			return def_fail(p, psprintf("%srandom", prefix), "must be a percentage from 0 to 100", NULL);
		cond->threshold = (int) rint(journey_numeric_to_double(pct->val.numeric) * 100);
		return true;
	}
	if (journey_jsonb_get(obj, "all"))
	{
		cond->kind = COND_ALL;
		return def_check_keys(p, obj, all_keys, prefix) &&
			parse_condition_list(p, obj, "all", psprintf("%sall", prefix), depth, cond);
	}
	if (journey_jsonb_get(obj, "any"))
	{
		cond->kind = COND_ANY;
		return def_check_keys(p, obj, any_keys, prefix) &&
			parse_condition_list(p, obj, "any", psprintf("%sany", prefix), depth, cond);
	}
	return def_fail(p, field, "is not a condition", COND_HINT);
}

void
journey_event_type_add(List **types, char *type)
{
	ListCell   *lc;

	foreach(lc, *types)
		if (strcmp(lfirst(lc), type) == 0)
			return;
	*types = lappend(*types, type);
}

void
journey_condition_event_types(const JourneyCondition *cond, List **types)
{
	if (cond->kind == COND_EVENT)
		journey_event_type_add(types, cond->event_type);
	for (int i = 0; i < cond->nchildren; i++)
		journey_condition_event_types(cond->children[i], types);
}

