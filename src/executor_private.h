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

/* The steps of one version of a sequence (update_sequence.c writes them). */
typedef struct ExecVersion
{
	int32		version;
	int			nsteps;
	int			capacity;
	JourneyStep *steps;			/* sorted by step_index */
} ExecVersion;

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
	bool		busy;			/* limited, but locked by another: not run */
	List	   *event_types;	/* tested by its branches */
	int			nversions;		/* those its claimed enrollments are on */
	ExecVersion *versions;
	JourneyRateWindow rate;
} ExecSequence;

typedef struct ExecEnrollment
{
	Datum		id;				/* uuid datums point into the claim tuples */
	Datum		business_id;
	Datum		customer_id;
	Datum		sequence_id;
	int32		step;
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
	int32		version;		/* sequence_version: whose steps it runs */
	int			nevents;
	char	  **events;
} ExecEnrollment;

/*
 * Column-wise rows bound for one set-based statement (executor.c fills
 * them; executor_sql.c binds them as arrays).
 */
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

/* The columns of ExecState.updates: the enrollments' new state. */
typedef enum UpdateCol
{
	UPD_ID,
	UPD_STEP,
	UPD_NEXT_RUN_AT,
	UPD_STATUS,
	UPD_FINISHED_AT,
	UPD_STOP_REASON,
	UPD_NCOLS
} UpdateCol;

/* The columns of ExecState.messages, in messages_sql's order. */
typedef enum MessageCol
{
	MSG_BUSINESS_ID,
	MSG_ENROLLMENT_ID,
	MSG_SEQUENCE_ID,
	MSG_STEP_INDEX,
	MSG_CUSTOMER_ID,
	MSG_CHANNEL,
	MSG_PURPOSE,
	MSG_TO_ADDRESS,
	MSG_SUBJECT,
	MSG_BODY,
	MSG_SEQUENCE_VERSION,
	MSG_NCOLS
} MessageCol;

/* The columns of ExecState.log. */
typedef enum LogCol
{
	LOG_BUSINESS_ID,
	LOG_ENROLLMENT_ID,
	LOG_STEP_INDEX,
	LOG_OUTCOME,
	LOG_DETAIL,
	LOG_SEQUENCE_VERSION,
	LOG_NCOLS
} LogCol;

/* Everything one call works with, in its own memory context. */
typedef struct ExecState
{
	TimestampTz as_of;
	HTAB	   *sequences;
	Batch		updates;		/* UpdateCol */
	Batch		messages;		/* MessageCol */
	Batch		log;			/* LogCol */
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

/* The claim's columns (1-based), in claim_sql's order. */
typedef enum ClaimCol
{
	CLAIM_ID = 1,
	CLAIM_BUSINESS_ID,
	CLAIM_SEQUENCE_ID,
	CLAIM_CUSTOMER_ID,
	CLAIM_STEP,
	CLAIM_ENROLLED_AT,
	CLAIM_TRIGGER_EVENT_ID,
	CLAIM_NEXT_RUN_AT,
	CLAIM_META,
	CLAIM_EMAIL,
	CLAIM_PHONE,
	CLAIM_ZONE,					/* the customer's time zone, else the business's */
	CLAIM_EMAIL_SUPPRESSED,
	CLAIM_PHONE_SUPPRESSED,
	/* the rest is read only for the template context */
	CLAIM_FULL_NAME,
	CLAIM_CUSTOMER_TZ,
	CLAIM_EXTERNAL_ID,
	CLAIM_ATTRIBUTES,
	CLAIM_BUSINESS_NAME,
	CLAIM_BUSINESS_EMAIL,
	CLAIM_BUSINESS_PHONE,
	CLAIM_BUSINESS_REVIEW_URL,
	CLAIM_BUSINESS_TZ,
	CLAIM_SEQUENCE_VERSION		/* whose steps the enrollment runs */
} ClaimCol;

/* The loaded version of a claimed enrollment's sequence, added if missing. */
extern ExecVersion *exec_find_version(ExecSequence *seq, int32 version);

/*
 * Sorts a batch's rows by the uuid in key_col (keeping the order of equal
 * keys) and fills values with one array datum per column.
 */
extern void exec_batch_arrays(Batch *b, int key_col, Datum *values, char *nulls);

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
