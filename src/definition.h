/*-------------------------------------------------------------------------
 *
 * definition.h
 *	  The journey definition as typed records: a definition's settings, its
 *	  steps (kind, delay, targets, compiled templates, parsed condition).
 *
 * One grammar (definition.c) reads them, through two entry points:
 * create_sequence parses a whole definition and raises an error naming the
 * step, the field and a hint; the executor compiles each stored step and,
 * on the same error, marks the step invalid and goes on.  Whatever
 * create_sequence accepts, the executor can run.
 *
 * Adding a step kind: a StepKind value, a row in definition.c's step_kinds
 * table, its fields in JourneyStep, and a case in each switch on the kind
 * (definition.c's compile_step_config and parse_step, executor.c's
 * run_enrollment).
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOURNEY_DEFINITION_H
#define JOURNEY_DEFINITION_H

#include "journey.h"

#define JOURNEY_MAX_STEPS 200
#define JOURNEY_MAX_CONDITION_DEPTH 16
/* Parts of a condition's field path after "customer.". */
#define JOURNEY_MAX_FIELD_SEGMENTS 8

/* A step's next_step when next_step_index is null: the following step. */
#define STEP_FOLLOWING (-1)

typedef enum StepKind
{
	STEP_WAIT,
	STEP_EMAIL,
	STEP_SMS,
	STEP_BRANCH,
	STEP_WAIT_UNTIL
} StepKind;

/* ---------- conditions (evaluated by branch.c) ---------- */

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

typedef struct JourneyCondition JourneyCondition;

struct JourneyCondition
{
	CondKind	kind;
	/* COND_FIELD */
	int			nsegments;
	char	   *segments[JOURNEY_MAX_FIELD_SEGMENTS];	/* path below "customer." */
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

/* ---------- steps and definitions ---------- */

typedef struct JourneyStep
{
	int32		step_index;
	StepKind	kind;
	int64		wait_ms;
	int32		next_step;		/* STEP_FOLLOWING, 0 (finish) or an index */
	char	   *template_id;
	/* send steps */
	char	   *purpose;
	Jsonb	   *message;		/* message_config as written */
	JourneyTemplate *subject;	/* send_email only */
	JourneyTemplate *body;
	/* branch */
	Jsonb	   *branch;			/* branch_config as written */
	JourneyCondition *cond;
	int32		then_step;		/* 0: finish; wait_until: when the event came */
	int32		else_step;		/* wait_until: at the timeout */
	/* wait_until: the awaited event type (timeout_ms is stored as wait_ms) */
	char	   *await_event;
	char	   *cond_text;		/* the "if" as JSON, for the log */
	/* executor: why the step cannot run, else NULL */
	char	   *invalid;
} JourneyStep;

typedef struct JourneyDefinition
{
	char	   *name;
	char	   *description;
	char	   *status;
	char	   *trigger_event_type;
	List	   *exit_event_types;
	bool		allow_manual_enroll;
	char	   *reentry;
	char	   *quiet_start;	/* "HH:MM", or NULL */
	char	   *quiet_end;
	bool		rate_hour_null;
	int32		rate_hour;
	bool		rate_day_null;
	int32		rate_day;
	int			nsteps;
	JourneyStep *steps;			/* steps[i].step_index = i + 1 */
} JourneyDefinition;

/*
 * create_sequence's entry point: parses a whole definition into *def, or
 * raises 22023 naming the step and field, with a hint.
 */
extern void journey_definition_parse(Jsonb *definition, JourneyDefinition *def);

/*
 * The executor's entry point: compiles a stored step (step_index, wait_ms
 * and next_step already set) of the given kind name from its
 * message_config and branch_config.  What create_sequence would refuse
 * sets step->invalid to the reason instead of raising.
 */
extern void journey_step_compile(JourneyStep *step, const char *kind,
								 Jsonb *message_config, Jsonb *branch_config);

/*
 * The executor's entry point for a step naming a template (template_id set
 * before journey_step_compile): compiles the template's texts as they are
 * now into step->subject and step->body.  body NULL: no such template.
 * What cannot be sent sets step->invalid.
 */
extern void journey_step_compile_template(JourneyStep *step, const char *channel,
										  const char *subject, const char *body);

/* The stored name of a step kind ("send_email", ...). */
extern const char *journey_step_kind_name(StepKind kind);

/* Adds type to *types (a List of char *) unless it is there already. */
extern void journey_event_type_add(List **types, char *type);

/* Adds the event types the condition tests to *types, once each. */
extern void journey_condition_event_types(const JourneyCondition *cond, List **types);

/* ---------- branch.c: evaluation ---------- */

/* What a condition is evaluated against for one enrollment. */
typedef struct JourneyBranchInput
{
	JsonbContainer *customer;	/* the context's "customer" object */
	const pg_uuid_t *enrollment_id;
	int32		step_index;
	int			nevents;
	char	  **events;			/* event types seen since enrollment */
} JourneyBranchInput;

/* Never raises: every value a condition or a customer holds compares. */
extern bool journey_condition_eval(const JourneyCondition *cond,
								   const JourneyBranchInput *in);

#endif							/* JOURNEY_DEFINITION_H */
