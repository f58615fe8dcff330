/*-------------------------------------------------------------------------
 *
 * worker_executor.c
 *	  The executor inside each sender (SPEC section 12): the wake-up at the
 *	  commit of a transaction that made enrollments due, the one step the
 *	  sender's loop takes to advance them, and journey.executor_status().
 *
 * With journey.executor_in_worker on, a sender runs
 * journey.advance_due_enrollments() for its database itself, so an event's
 * first message leaves within milliseconds instead of at pg_cron's next
 * minute.  It calls the function through SPI, exactly as pg_cron does: the
 * same claim (FOR UPDATE SKIP LOCKED) makes it safe beside a pg_cron job or
 * any other caller, and no enrollment is handled twice.
 *
 * A pass is one short transaction of its own, between the sender's other
 * work: the loop drives libcurl, writes results and claims messages, then
 * takes at most one executor batch (journey.executor_batch_size), so
 * requests in flight are read between batches and a burst of due
 * enrollments never holds the sender up for longer than one batch.  No
 * lock is waited on for long (lock_timeout), so an application's open
 * transaction cannot stall deliveries.
 *
 * A pass runs when a commit says enrollments became due (shmem.c's
 * commit callback sets a flag in the sender's slot and its latch; a rolled
 * back transaction sets nothing), at the earliest next_run_at of the
 * database (so quiet hours, rate limits and waits end on time), and at
 * least every journey.poll_interval_ms.
 *
 * A pass that finds a full batch due starts the sender's helper
 * (executor_helper.c), which advances the rest of the burst on another
 * core; the sender runs no pass while it does, and delivers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "journey.h"
#include "sender.h"

PG_FUNCTION_INFO_V1(journey_executor_status);

/* Longest wait for a lock inside a pass: far below any request's timeout. */
#define PASS_LOCK_TIMEOUT_MS 200
/* First pause after a failed pass; it doubles up to the poll interval. */
#define PASS_RETRY_MIN_MS 1000
/*
 * While requests are in flight, the least time between the end of one pass
 * and the start of the next.  No response is read while a pass runs (no
 * network I/O inside a transaction), so back-to-back passes would leave
 * the providers' caps idle: at 1,000 events/s, passes every turn of the
 * loop held deliveries to about 550/s, fewer than were enqueued.  With the
 * gap the loop turns many times between passes, each pass takes what came
 * due meanwhile in one batch, and an event waits at most this much longer.
 * An idle sender runs a pass at once.
 */
#define PASS_BUSY_GAP_MS 50
/*
 * The same while no request is in flight, unless the last pass left more
 * due (a full batch).  Events arriving one by one would otherwise get a
 * pass each: at 500 events/s a pass advanced 6 enrollments for a fixed
 * cost (a transaction, the claim's planning, seven statements) of about
 * 7 ms, 1.7 ms of the sender's CPU an event; with 10 ms, at 600 events/s
 * the passes still came 54 times a second, 11 enrollments each.  A first
 * event after a quiet spell still goes at once.
 */
#define PASS_IDLE_GAP_MS 20

/* ---------- the step the sender's loop takes ---------- */

static int	my_slot = -1;
static bool was_enabled = false;
static TimestampTz next_pass_at = 0;	/* 0: as soon as possible */
static int	retry_ms = PASS_RETRY_MIN_MS;
static SPIPlanPtr advance_plan = NULL;
static SPIPlanPtr next_run_plan = NULL;
static bool journey_installed = false;	/* as of the last journey_executor_begin_pass */
static TimestampTz last_pass_end = 0;
static bool last_pass_full = false;	/* it left more due */
static bool left_queued = false;	/* the last pass queued messages it did not claim */

void
journey_worker_executor_init(int slot)
{
	JourneySenderSlot *s = &journey_sender_shmem->slots[slot];

	my_slot = slot;
	/* A first pass at once: what became due while no sender ran. */
	next_pass_at = 0;
	was_enabled = journey_executor_in_worker;
	SpinLockAcquire(&journey_sender_shmem->mutex);
	s->enrollments_due = false;
	s->executor_enabled = journey_executor_in_worker;
	s->executor_wakeups = 0;
	s->executor_passes = 0;
	s->executor_advanced = 0;
	s->executor_last_pass_at = 0;
	s->executor_next_pass_at = 0;
	SpinLockRelease(&journey_sender_shmem->mutex);
}

/*
 * Takes the "enrollments became due" flag of this sender's slot, and says
 * whether the executor is on (committing backends wake it only then).
 */
static bool
take_due_flag(void)
{
	JourneySenderSlot *s = &journey_sender_shmem->slots[my_slot];
	bool		due;

	SpinLockAcquire(&journey_sender_shmem->mutex);
	due = s->enrollments_due;
	s->enrollments_due = false;
	s->executor_enabled = journey_executor_in_worker;
	SpinLockRelease(&journey_sender_shmem->mutex);
	return due;
}

static void
set_local(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * Opens the pass's transaction (the sender's, or its helper's batch).
 * False (transaction still open) when journey is not installed or a table
 * is busy (DROP EXTENSION, a VACUUM FULL): the pass is skipped rather than
 * queued behind it.
 */
bool
journey_executor_begin_pass(void)
{
	const char *tables[3] = {"sequence_enrollments", "messages", "enrollment_log"};
	Oid			nsp;
	int			i;
	char		timeout[16];

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "advancing due enrollments");
	set_local("search_path", "pg_catalog, pg_temp");
	snprintf(timeout, sizeof(timeout), "%d", PASS_LOCK_TIMEOUT_MS);
	set_local("lock_timeout", timeout);

	nsp = get_namespace_oid("journey", true);
	journey_installed = OidIsValid(nsp);
	if (!journey_installed)
		return false;
	for (i = 0; i < lengthof(tables); i++)
	{
		Oid			rel = get_relname_relid(tables[i], nsp);

		if (!OidIsValid(rel) || !ConditionalLockRelationOid(rel, RowExclusiveLock))
			return false;
	}
	return true;
}

void
journey_executor_end_pass(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * One call of journey.advance_due_enrollments() for up to
 * journey.executor_batch_size enrollments due at as_of, in the open pass;
 * returns how many it advanced.
 */
int
journey_executor_advance_batch(TimestampTz as_of)
{
	Oid			types[2] = {INT4OID, TIMESTAMPTZOID};
	Datum		args[2];
	bool		isnull;

	args[0] = Int32GetDatum(journey_executor_batch_size);
	args[1] = TimestampTzGetDatum(as_of);
	if (SPI_execute_plan(journey_keep_plan(&advance_plan,
										   "SELECT journey.advance_due_enrollments($1, $2)",
										   2, types),
						 args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "journey sender could not advance due enrollments");
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
									   &isnull));
}

/*
 * One batch: advances up to journey.executor_batch_size due enrollments at
 * the transaction's start time and plans the next pass.  Returns how many
 * it advanced.
 */
static int
run_pass(void)
{
	Oid			types[2] = {INT4OID, TIMESTAMPTZOID};
	Datum		args[2];
	TimestampTz as_of;
	TimestampTz poll_at;
	int			advanced = 0;
	bool		isnull;
	MemoryContext cxt = CurrentMemoryContext;
	JourneyPreclaim pc;

	left_queued = false;
	if (!journey_executor_begin_pass())
	{
		journey_executor_end_pass();
		/* Not installed: the poll.  Busy: shortly. */
		next_pass_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   journey_installed ? 100 : journey_poll_interval_ms);
		return 0;
	}
	as_of = GetCurrentTransactionStartTimestamp();
	poll_at = TimestampTzPlusMilliseconds(as_of, journey_poll_interval_ms);
	args[0] = Int32GetDatum(journey_executor_batch_size);
	args[1] = TimestampTzGetDatum(as_of);

	/*
	 * The pass's messages go out claimed for this sender, so that they
	 * leave after this one commit, without a claim of their own.
	 */
	memset(&pc, 0, sizeof(pc));
	pc.cxt = cxt;
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		if (journey_sender_preclaim_begin(&pc))
			journey_preclaim = &pc;
		MemoryContextSwitchTo(old);
	}
	PG_TRY();
	{
		advanced = journey_executor_advance_batch(as_of);
	}
	PG_FINALLY();
	{
		journey_preclaim = NULL;
	}
	PG_END_TRY();
	/* Without the claim (no room), what the pass queued waits for one. */
	left_queued = advanced > 0 && (pc.token == (Datum) 0 || pc.left_queued);
	journey_sender_preclaim_fetch(&pc);
	if (advanced >= journey_executor_batch_size)
		next_pass_at = 0;		/* more are due: the next turn of the loop */
	else
	{
		Datum		d;

		/*
		 * Caught up.  Those due by as_of and not taken belong to a paused
		 * sequence or to another caller: only later ones set the alarm.
		 */
		if (SPI_execute_plan(journey_keep_plan(&next_run_plan,
											   "SELECT min(next_run_at) FROM journey.sequence_enrollments"
											   " WHERE status = 'active' AND next_run_at > $2",
											   2, types),
							 args, NULL, false, 1) != SPI_OK_SELECT)	/* sees the pass's writes */
			elog(ERROR, "journey sender could not look up the next due enrollment");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		next_pass_at = isnull ? poll_at : Min(DatumGetTimestampTz(d), poll_at);
		/* Some were left because another transaction held their sequence. */
		if (journey_executor_left_locked)
			next_pass_at = Min(next_pass_at,
							   TimestampTzPlusMilliseconds(as_of, PASS_RETRY_MIN_MS));
	}
	journey_executor_end_pass();
	/* Committed: the network may have them now. */
	journey_sender_preclaim_start();
	return advanced;
}

/* When a pass planned for `at` may start: not straight after another. */
static TimestampTz
pass_start_at(TimestampTz at, bool sender_busy)
{
	if (sender_busy)
		at = Max(at, TimestampTzPlusMilliseconds(last_pass_end, PASS_BUSY_GAP_MS));
	else if (!last_pass_full)
		at = Max(at, TimestampTzPlusMilliseconds(last_pass_end, PASS_IDLE_GAP_MS));
	return at;
}

/*
 * Runs one executor pass when one is due.  Returns true when it may have
 * queued messages for the sender to claim (those it claimed are on their
 * way already).
 */
bool
journey_worker_executor_step(bool sender_busy)
{
	JourneySenderSlot *s = &journey_sender_shmem->slots[my_slot];
	bool		woken = take_due_flag();
	int			advanced = 0;
	MemoryContext cxt = CurrentMemoryContext;

	if (!journey_executor_in_worker)
	{
		was_enabled = false;
		return false;
	}
	if (!was_enabled || woken)
		next_pass_at = 0;		/* switched on, or a commit made some due */
	was_enabled = true;
	if (journey_executor_helper_running())
	{
		/* The helper takes what is due; a pass picks up after it. */
		next_pass_at = 0;
		return false;
	}
	if (pass_start_at(next_pass_at, sender_busy) > GetCurrentTimestamp())
		return false;

	PG_TRY();
	{
		advanced = run_pass();
		retry_ms = PASS_RETRY_MIN_MS;
	}
	PG_CATCH();
	{
		/* Logged, and tried again later: one bad pass never stops sending. */
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		HOLD_INTERRUPTS();
		edata = CopyErrorData();
		/* Another caller holds a lock (pg_cron's batch): its turn, not news. */
		if (edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE)
			elog(DEBUG1, "journey executor pass skipped: %s", edata->message);
		else
			EmitErrorReport();
		FreeErrorData(edata);
		journey_sender_preclaim_discard();
		AbortOutOfAnyTransaction();
		SPI_finish();
		FlushErrorState();
		RESUME_INTERRUPTS();
		pgstat_report_activity(STATE_IDLE, NULL);
		next_pass_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   Min(retry_ms, journey_poll_interval_ms));
		retry_ms = Min(retry_ms * 2, journey_poll_interval_ms);
	}
	PG_END_TRY();
	last_pass_end = GetCurrentTimestamp();
	last_pass_full = advanced >= journey_executor_batch_size;
	/* A burst: a helper takes batches on another core (executor_helper.c). */
	if (last_pass_full)
		journey_executor_helper_start();
	/* A failed pass's own messages were rolled back with it. */

	SpinLockAcquire(&journey_sender_shmem->mutex);
	s->executor_passes++;
	s->executor_advanced += advanced;
	s->executor_last_pass_at = GetCurrentTimestamp();
	s->executor_next_pass_at = next_pass_at;
	SpinLockRelease(&journey_sender_shmem->mutex);
	return left_queued;
}

/* Milliseconds until the next pass is due; -1 when none is planned. */
long
journey_worker_executor_wait_ms(bool sender_busy)
{
	TimestampTz now;
	TimestampTz at;

	if (!journey_executor_in_worker)
		return -1;
	if (!was_enabled)
		return 0;
	/* Its exit sets the latch. */
	if (journey_executor_helper_running())
		return -1;
	/* A commit made some due: step() will plan a pass at once. */
	at = journey_sender_shmem->slots[my_slot].enrollments_due ? 0 : next_pass_at;
	at = pass_start_at(at, sender_busy);
	now = GetCurrentTimestamp();
	return at > now ? (long) ((at - now) / 1000) + 1 : 0;
}

/* ---------- journey.executor_status() ---------- */

/* One row per running sender: what its executor did since it started. */
Datum
journey_executor_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (journey_sender_shmem == NULL)
		return (Datum) 0;
	for (i = 0; i < JOURNEY_MAX_SENDERS; i++)
	{
		JourneySenderSlot copy;
		Datum		values[8];
		bool		nulls[8] = {false};
		char	   *datname;

		SpinLockAcquire(&journey_sender_shmem->mutex);
		copy = journey_sender_shmem->slots[i];
		SpinLockRelease(&journey_sender_shmem->mutex);
		if (copy.pid == 0 || !OidIsValid(copy.dboid))
			continue;
		datname = get_database_name(copy.dboid);
		if (datname == NULL)
			continue;
		values[0] = DirectFunctionCall1(namein, CStringGetDatum(datname));
		values[1] = Int32GetDatum(copy.pid);
		values[2] = BoolGetDatum(copy.executor_enabled);
		values[3] = Int64GetDatum((int64) copy.executor_wakeups);
		values[4] = Int64GetDatum((int64) copy.executor_passes);
		values[5] = Int64GetDatum((int64) copy.executor_advanced);
		values[6] = TimestampTzGetDatum(copy.executor_last_pass_at);
		nulls[6] = copy.executor_last_pass_at == 0;
		values[7] = TimestampTzGetDatum(copy.executor_next_pass_at);
		/* Null: none planned (off), or at the loop's next turn (more due). */
		nulls[7] = !copy.executor_enabled || copy.executor_last_pass_at == 0 ||
			copy.executor_next_pass_at == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
