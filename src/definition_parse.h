/*-------------------------------------------------------------------------
 *
 * definition_parse.h
 *	  What the files of the definition grammar (definition.c,
 *	  definition_condition.c) share: where the parser is, and the checks
 *	  that report an error naming the step and field.  Private to them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOURNEY_DEFINITION_PARSE_H
#define JOURNEY_DEFINITION_PARSE_H

#include "definition.h"

#define FORMAT_HINT "The section \"Journey definitions\" of journey's README lists every field, its type and its allowed values."

/* Where the parser is, and where its first error goes. */
typedef struct Parser
{
	JourneyError *err;
	int			step;			/* 1-based; 0: the definition's top level */
	int			nsteps;			/* or STEPS_UNKNOWN */
} Parser;

/*
 * Each check returns true when the value is acceptable; else it records the
 * error in p->err and returns false, for the caller to return at once.
 */

/* Records an error at a field of the current step; returns false. */
extern bool def_fail(Parser *p, const char *field, const char *problem, const char *hint);

/* "a string", "an object", ...: what a value is, for messages. */
extern const char *def_type_name(JsonbValue *v);

extern bool def_is_object(JsonbValue *v);

/* Refuses any key of obj not listed in allowed (NULL-terminated). */
extern bool def_check_keys(Parser *p, Jsonb *obj, const char *const *allowed,
						   const char *prefix);

/* A string field into *out; NULL when absent (and not required). */
extern bool def_get_string(Parser *p, Jsonb *obj, const char *key, const char *field,
						   bool required, char **out);

/* definition_condition.c: a condition at the given nesting depth (1: the "if"). */
extern bool def_parse_condition(Parser *p, JsonbValue *v, const char *field, int depth,
								JourneyCondition **out);

#endif							/* JOURNEY_DEFINITION_PARSE_H */
