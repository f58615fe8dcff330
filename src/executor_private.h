/*-------------------------------------------------------------------------
 *
 * executor_private.h
 *	  What the executor's two files share: executor.c takes the decisions in
 *	  memory, executor_sql.c runs every statement (claim, loads, results).
 *	  Private to them; the rest of journey sees only journey.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOURNEY_EXECUTOR_H
#define JOURNEY_EXECUTOR_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "utils/hsearch.h"

#include "definition.h"

typedef struct ExecSequence
{
	pg_uuid_t	id;				/* hash key */
	pg_uuid_t	business_id;
	TimeADT		quiet_start;
	TimeADT		quiet_end;
	bool		has_quiet;
	int32		rate_per_hour;	/* 0: unlimited */
	int32		rate_per_day;
	bool		has_sends;
	bool		limited;		/* has sends and a limit: windows loaded */
	List	   *event_types;	/* tested by its branches */
	int			nsteps;
	JourneyStep *steps;			/* sorted by step_index */
	JourneyRateWindow rate;
} ExecSequence;

typedef struct ExecEnrollment
{
	Datum		id;				/* uuid datums point into the claim tuples */
	Datum		business_id;
	Datum		customer_id;
	Datum		sequence_id;
	int32		step;
	int32		version;		/* sequence_version: the steps it runs */
	TimestampTz enrolled_at;
	Datum		trigger_event_id;
	bool		trigger_event_null;
	TimestampTz next_run_at;
	char	   *email;
	char	   *phone;
	char	   *zone;
	bool		email_suppressed;
	bool		phone_suppressed;
	HeapTuple	tup;			/* the claim row: the context's columns */
	Jsonb	   *ctx;			/* built on first use */
	ExecSequence *seq;
	int			nevents;
	char	  **events;
} ExecEnrollment;

/* Column-wise rows bound for one set-based statement. */
#define BATCH_MAX_COLS 11
typedef struct Batch
{
	int			ncols;
	Oid			types[BATCH_MAX_COLS];
	int			n;
	int			capacity;
	Datum	   *values[BATCH_MAX_COLS];
	bool	   *nulls[BATCH_MAX_COLS];
} Batch;

/* Everything one call works with, in its own memory context. */
typedef struct ExecState
{
	TimestampTz as_of;
	HTAB	   *sequences;
	Batch		updates;		/* id, step, next_run_at, status, finished_at, stop_reason */
	Batch		messages;		/* business_id .. body (10 columns) */
	Batch		log;			/* business_id, enrollment_id, step_index, outcome, detail */
	HTAB	   *step_counts;	/* the step_counters this call adds to (stats.c) */
	bool		schema_0_3;		/* versions and step_counters exist */
	Datum		only_enrollment;	/* a uuid: claim just that one (simulate) */
	Datum		t_active;
	Datum		t_finished;
	Datum		t_stopped;
	Datum		t_email;
	Datum		t_sms;
	TupleDesc	claim_desc;
	MemoryContext scratch;		/* reset after each enrollment */
	int32		running_step;	/* the step being run (0: writing), for an error's log */
	StringInfoData buf;			/* details */
	StringInfoData subject;		/* rendering, reused */
	StringInfoData body;
} ExecState;

/* Claim columns (1-based) read after the claim, for the template context. */
#define CLAIM_META			9
#define CLAIM_FULL_NAME		15
#define CLAIM_CUSTOMER_TZ	16
#define CLAIM_EXTERNAL_ID	17
#define CLAIM_ATTRIBUTES	18
#define CLAIM_BUSINESS_NAME	19	/* then its email, phone, review url, zone */
#define CLAIM_SEQUENCE_VERSION 24

extern void exec_batch_init(Batch *b, int ncols, const Oid *types);
extern int	exec_batch_add(Batch *b);

static inline void
exec_batch_set(Batch *b, int row, int col, Datum value)
{
	b->values[col][row] = value;
	b->nulls[col][row] = false;
}

/*
 * Claims up to batch_size due enrollments as of st->as_of, filling *ens
 * (pointing into the claim's rows, valid until SPI_finish) and entering
 * their sequences in st->sequences.  Returns how many it claimed.
 */
extern uint64 exec_claim(ExecState *st, int32 batch_size, ExecEnrollment **ens);

/* Loads the steps of st->sequences, compiling each (definition.c). */
extern void exec_load_sequences(ExecState *st);

/* Locks the rate-limited sequences and loads their rolling windows. */
extern void exec_load_rate_windows(ExecState *st);

/* Finds which tested event types each enrollment has had since enrolling. */
extern void exec_load_events(ExecState *st, ExecEnrollment *ens, int nens);

/* Writes the messages, the log and the enrollments' new state. */
extern void exec_apply(ExecState *st);

/* What journey.step_counters counts (stats.c). */
typedef enum StepCount
{
	COUNT_REACHED,
	COUNT_SKIPPED,
	COUNT_DEFERRED
} StepCount;

/* Counts one arrival, skip or deferral of en at step, in memory. */
extern void exec_stats_count(ExecState *st, ExecEnrollment *en, int32 step, StepCount what);

/* Forgets the counts not applied yet (their decisions were undone). */
extern void exec_stats_discard(ExecState *st);

/* Adds the call's counts to journey.step_counters: one statement. */
extern void exec_stats_apply(ExecState *st);

/*
 * One executor call at as_of, on up to batch_size due enrollments, or on
 * the one enrollment only_enrollment (a uuid datum; 0 for all): the body of
 * advance_due_enrollments, which journey.simulate also runs.  Returns how
 * many enrollments it handled.
 */
extern int32 journey_executor_run(int32 batch_size, TimestampTz as_of, Datum only_enrollment);

#endif							/* JOURNEY_EXECUTOR_H */
