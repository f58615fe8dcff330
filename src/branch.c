/*-------------------------------------------------------------------------
 *
 * branch.c
 *	  Branch conditions: parsing a branch step's condition tree once per
 *	  executor call and evaluating it for each enrollment.
 *
 * Conditions (SPEC section 4):
 *	 {"field": "customer.<col or attribute>", "op": OP, "value": V}
 *		OP is exists, eq, neq, gt, lt or in.  The field is looked up among
 *		the customer's columns, then its attributes.  A missing (null or
 *		empty-string) field: exists, eq, gt, lt and in are false, neq true.
 *		Numbers compare numerically (a string that reads as a number
 *		compares as one), strings compare by bytes, booleans by equality.
 *	 {"event": TYPE, "since": "enrollment"}
 *		The customer had an event of that type at or after enrolled_at and
 *		no later than p_as_of, the triggering event itself excepted.  The
 *		executor looks these up for the whole batch in one query and passes
 *		each enrollment's event types in.
 *	 {"random": PERCENT}
 *		A stable split: bucket = hash_bytes_extended(enrollment id's 16
 *		bytes, seed = the branch's step_index) mod 10000 (the same hash as
 *		SQL's uuid_hash_extended(id, step_index), read as unsigned); true
 *		when bucket < PERCENT * 100.  Re-running the same enrollment gives
 *		the same arm; two random branches of a journey split independently.
 *	 {"all": [...]} / {"any": [...]}
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/hashfn.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "journey.h"

typedef enum CondKind
{
	COND_FIELD,
	COND_EVENT,
	COND_RANDOM,
	COND_ALL,
	COND_ANY
} CondKind;

typedef enum CondOp
{
	OP_EXISTS,
	OP_EQ,
	OP_NEQ,
	OP_GT,
	OP_LT,
	OP_IN
} CondOp;

#define MAX_FIELD_SEGMENTS 8

struct JourneyCondition
{
	CondKind	kind;
	/* COND_FIELD */
	int			nsegments;
	char	   *segments[MAX_FIELD_SEGMENTS];	/* path below "customer." */
	CondOp		op;
	JsonbValue	value;			/* scalar, or jbvBinary array for "in" */
	/* COND_EVENT */
	char	   *event_type;
	/* COND_RANDOM: threshold in hundredths of a percent */
	int			threshold;
	/* COND_ALL, COND_ANY */
	int			nchildren;
	JourneyCondition **children;
};

static char *
value_cstring(JsonbValue *v)
{
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static JourneyCondition *
parse_condition(JsonbValue *v, const char **error)
{
	JourneyCondition *cond = palloc0(sizeof(JourneyCondition));
	JsonbContainer *c;
	JsonbValue	x;

	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
	{
		*error = "a condition must be a JSON object";
		return NULL;
	}
	c = v->val.binary.data;

	if (journey_container_get(c, "all", &x) || journey_container_get(c, "any", &x))
	{
		JsonbIterator *it;
		JsonbValue	elem;
		JsonbIteratorToken tok;

		cond->kind = journey_container_get(c, "all", &x) ? COND_ALL : COND_ANY;
		if (x.type != jbvBinary || !JsonContainerIsArray(x.val.binary.data))
		{
			*error = "\"all\" and \"any\" take an array of conditions";
			return NULL;
		}
		cond->children = palloc(sizeof(JourneyCondition *) *
								(JsonContainerSize(x.val.binary.data) + 1));
		it = JsonbIteratorInit(x.val.binary.data);
		while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
		{
			if (tok != WJB_ELEM)
				continue;
			cond->children[cond->nchildren] = parse_condition(&elem, error);
			if (cond->children[cond->nchildren] == NULL)
				return NULL;
			cond->nchildren++;
		}
		return cond;
	}

	if (journey_container_get(c, "event", &x))
	{
		JsonbValue	since;

		cond->kind = COND_EVENT;
		if (x.type != jbvString || x.val.string.len == 0)
		{
			*error = "\"event\" must be a non-empty event type";
			return NULL;
		}
		cond->event_type = value_cstring(&x);
		if (journey_container_get(c, "since", &since) &&
			(since.type != jbvString ||
			 since.val.string.len != strlen("enrollment") ||
			 strncmp(since.val.string.val, "enrollment", since.val.string.len) != 0))
		{
			*error = "\"since\" must be \"enrollment\"";
			return NULL;
		}
		return cond;
	}

	if (journey_container_get(c, "random", &x))
	{
		double		pct;

		cond->kind = COND_RANDOM;
		if (x.type != jbvNumeric)
		{
			*error = "\"random\" must be a percentage between 0 and 100";
			return NULL;
		}
		pct = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
												 NumericGetDatum(x.val.numeric)));
		if (isnan(pct) || pct < 0 || pct > 100)
		{
			*error = "\"random\" must be a percentage between 0 and 100";
			return NULL;
		}
		cond->threshold = (int) rint(pct * 100);
		return cond;
	}

	if (journey_container_get(c, "field", &x))
	{
		JsonbValue	op;
		char	   *path;
		char	   *p;
		char	   *seg;

		cond->kind = COND_FIELD;
		if (x.type != jbvString)
		{
			*error = "\"field\" must be a string such as \"customer.phone\"";
			return NULL;
		}
		path = value_cstring(&x);
		if (strncmp(path, "customer.", 9) != 0 || path[9] == '\0')
		{
			*error = "\"field\" must name a customer column or attribute, as \"customer.<name>\"";
			return NULL;
		}
		p = path + 9;
		while ((seg = strsep(&p, ".")) != NULL)
		{
			if (*seg == '\0' || cond->nsegments == MAX_FIELD_SEGMENTS)
			{
				*error = "\"field\" has an empty or too long path";
				return NULL;
			}
			cond->segments[cond->nsegments++] = seg;
		}
		if (!journey_container_get(c, "op", &op) || op.type != jbvString)
		{
			*error = "a field condition needs \"op\": exists, eq, neq, gt, lt or in";
			return NULL;
		}
#define OP_IS(name) (op.val.string.len == strlen(name) && \
					 strncmp(op.val.string.val, name, op.val.string.len) == 0)
		if (OP_IS("exists"))
			cond->op = OP_EXISTS;
		else if (OP_IS("eq"))
			cond->op = OP_EQ;
		else if (OP_IS("neq"))
			cond->op = OP_NEQ;
		else if (OP_IS("gt"))
			cond->op = OP_GT;
		else if (OP_IS("lt"))
			cond->op = OP_LT;
		else if (OP_IS("in"))
			cond->op = OP_IN;
		else
		{
			*error = "\"op\" must be exists, eq, neq, gt, lt or in";
			return NULL;
		}
#undef OP_IS
		if (cond->op == OP_EXISTS)
			return cond;
		if (!journey_container_get(c, "value", &cond->value))
		{
			*error = "a field condition with this op needs a \"value\"";
			return NULL;
		}
		if (cond->op == OP_IN &&
			(cond->value.type != jbvBinary ||
			 !JsonContainerIsArray(cond->value.val.binary.data)))
		{
			*error = "\"in\" needs an array \"value\"";
			return NULL;
		}
		if (cond->op != OP_IN && cond->value.type == jbvBinary)
		{
			*error = "\"value\" must be a string, number or boolean";
			return NULL;
		}
		return cond;
	}

	*error = "a condition needs \"field\", \"event\", \"random\", \"all\" or \"any\"";
	return NULL;
}

JourneyCondition *
journey_condition_parse(Jsonb *branch_config, JourneyBranchTargets *targets,
						const char **error)
{
	JsonbValue	x;
	JsonbContainer *root;

	*error = NULL;
	if (branch_config == NULL || !JB_ROOT_IS_OBJECT(branch_config))
	{
		*error = "branch_config must be an object {\"if\": ..., \"then\": N, \"else\": N}";
		return NULL;
	}
	root = &branch_config->root;
	if (!journey_container_get(root, "then", &x) || x.type != jbvNumeric)
	{
		*error = "branch_config needs a step number \"then\"";
		return NULL;
	}
	targets->then_step = DatumGetInt32(DirectFunctionCall1(numeric_int4,
														   NumericGetDatum(x.val.numeric)));
	if (!journey_container_get(root, "else", &x) || x.type != jbvNumeric)
	{
		*error = "branch_config needs a step number \"else\"";
		return NULL;
	}
	targets->else_step = DatumGetInt32(DirectFunctionCall1(numeric_int4,
														   NumericGetDatum(x.val.numeric)));
	if (!journey_container_get(root, "if", &x))
	{
		*error = "branch_config needs a condition \"if\"";
		return NULL;
	}
	return parse_condition(&x, error);
}

void
journey_condition_event_types(const JourneyCondition *cond, List **types)
{
	if (cond->kind == COND_EVENT)
	{
		ListCell   *lc;

		foreach(lc, *types)
			if (strcmp(lfirst(lc), cond->event_type) == 0)
				return;
		*types = lappend(*types, cond->event_type);
	}
	for (int i = 0; i < cond->nchildren; i++)
		journey_condition_event_types(cond->children[i], types);
}

/* ---------- evaluation ---------- */

/* A scalar as a double, when it is a number or a string reading as one. */
static bool
as_number(JsonbValue *v, double *result)
{
	if (v->type == jbvNumeric)
	{
		*result = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
													 NumericGetDatum(v->val.numeric)));
		return true;
	}
	if (v->type == jbvString && v->val.string.len > 0 && v->val.string.len < 64)
	{
		char		buf[64];
		char	   *end;

		memcpy(buf, v->val.string.val, v->val.string.len);
		buf[v->val.string.len] = '\0';
		*result = strtod(buf, &end);
		return *end == '\0' && !isnan(*result);
	}
	return false;
}

/* -1, 0, 1, or 2 when the two scalars cannot be ordered. */
static int
compare_scalars(JsonbValue *a, JsonbValue *b)
{
	double		x;
	double		y;

	if ((a->type == jbvNumeric || b->type == jbvNumeric) &&
		as_number(a, &x) && as_number(b, &y))
		return (x > y) - (x < y);
	if (a->type == jbvString && b->type == jbvString)
	{
		int			len = Min(a->val.string.len, b->val.string.len);
		int			r = memcmp(a->val.string.val, b->val.string.val, len);

		if (r == 0)
			r = a->val.string.len - b->val.string.len;
		return (r > 0) - (r < 0);
	}
	if (a->type == jbvBool && b->type == jbvBool)
		return a->val.boolean == b->val.boolean ? 0 : 2;
	return 2;
}

static bool
lookup_field(const JourneyCondition *cond, JsonbContainer *customer, JsonbValue *result)
{
	JsonbContainer *c = customer;
	JsonbValue	attrs;
	int			first = 0;

	/* A column (or "attributes.x" spelled out), else an attribute. */
	if (!journey_container_get(c, cond->segments[0], result) || result->type == jbvNull)
	{
		if (!journey_container_get(customer, "attributes", &attrs) || attrs.type != jbvBinary)
			return false;
		c = attrs.val.binary.data;
	}
	else
	{
		if (cond->nsegments == 1)
			goto found;
		if (result->type != jbvBinary)
			return false;
		c = result->val.binary.data;
		first = 1;
	}
	for (int i = first; i < cond->nsegments; i++)
	{
		if (!journey_container_get(c, cond->segments[i], result))
			return false;
		if (i < cond->nsegments - 1)
		{
			if (result->type != jbvBinary)
				return false;
			c = result->val.binary.data;
		}
	}
found:
	if (result->type == jbvNull)
		return false;
	if (result->type == jbvString && result->val.string.len == 0)
		return false;
	return true;
}

bool
journey_condition_eval(const JourneyCondition *cond, const JourneyBranchInput *in)
{
	switch (cond->kind)
	{
		case COND_ALL:
			for (int i = 0; i < cond->nchildren; i++)
				if (!journey_condition_eval(cond->children[i], in))
					return false;
			return true;
		case COND_ANY:
			for (int i = 0; i < cond->nchildren; i++)
				if (journey_condition_eval(cond->children[i], in))
					return true;
			return false;
		case COND_EVENT:
			for (int i = 0; i < in->nevents; i++)
				if (strcmp(in->events[i], cond->event_type) == 0)
					return true;
			return false;
		case COND_RANDOM:
			{
				uint64		h = hash_bytes_extended(in->enrollment_id->data,
													UUID_LEN,
													(uint64) in->step_index);

				return (int) (h % 10000) < cond->threshold;
			}
		case COND_FIELD:
			{
				JsonbValue	v;
				JsonbValue	value = cond->value;

				if (!lookup_field(cond, in->customer, &v))
					return cond->op == OP_NEQ;
				switch (cond->op)
				{
					case OP_EXISTS:
						return true;
					case OP_EQ:
						return compare_scalars(&v, &value) == 0;
					case OP_NEQ:
						return compare_scalars(&v, &value) != 0;
					case OP_GT:
						return compare_scalars(&v, &value) == 1;
					case OP_LT:
						return compare_scalars(&v, &value) == -1;
					case OP_IN:
						{
							JsonbIterator *it = JsonbIteratorInit(value.val.binary.data);
							JsonbValue	elem;
							JsonbIteratorToken tok;
							bool		found = false;

							while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
								if (tok == WJB_ELEM && !found &&
									compare_scalars(&v, &elem) == 0)
									found = true;
							return found;
						}
				}
			}
	}
	elog(ERROR, "unrecognized branch condition kind %d", (int) cond->kind);
	return false;
}
