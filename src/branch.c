/*-------------------------------------------------------------------------
 *
 * branch.c
 *	  Branch conditions: evaluating a branch step's condition tree (parsed
 *	  by definition.c once per executor call) for each enrollment.
 *
 * Conditions:
 *	 {"field": "customer.<col or attribute>", "op": OP, "value": V}
 *		OP is exists, eq, neq, gt, lt or in.  The field is looked up among
 *		the customer's columns, then its attributes.  A missing (null or
 *		empty-string) field: exists, eq, gt, lt and in are false, neq true.
 *		Numbers compare numerically, exactly and whatever their size (a
 *		string that reads as a number compares with a number as a double),
 *		strings compare by bytes, booleans by equality.
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

#include "definition.h"

/*
 * A string that reads as a number, as a double (beyond the range of doubles,
 * +-infinity).
 */
static bool
string_as_number(JsonbValue *v, double *result)
{
	char		buf[64];
	char	   *end;

	if (v->val.string.len == 0 || v->val.string.len >= sizeof(buf))
		return false;
	memcpy(buf, v->val.string.val, v->val.string.len);
	buf[v->val.string.len] = '\0';
	*result = strtod(buf, &end);
	return *end == '\0' && !isnan(*result);
}

/*
 * -1, 0, 1, or 2 when the two scalars cannot be ordered.  Two numbers
 * compare exactly, whatever their size; a number and a string that reads as
 * one compare as doubles.  Never raises.
 */
static int
compare_scalars(JsonbValue *a, JsonbValue *b)
{
	double		x;
	double		y;

	if (a->type == jbvNumeric && b->type == jbvNumeric)
	{
		int			r = DatumGetInt32(DirectFunctionCall2(numeric_cmp,
														  NumericGetDatum(a->val.numeric),
														  NumericGetDatum(b->val.numeric)));

		return (r > 0) - (r < 0);
	}
	if (a->type == jbvNumeric && b->type == jbvString && string_as_number(b, &y))
	{
		x = journey_numeric_to_double(a->val.numeric);
		return (x > y) - (x < y);
	}
	if (a->type == jbvString && b->type == jbvNumeric && string_as_number(a, &x))
	{
		y = journey_numeric_to_double(b->val.numeric);
		return (x > y) - (x < y);
	}
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
