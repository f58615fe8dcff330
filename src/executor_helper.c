/*-------------------------------------------------------------------------
 *
 * executor_helper.c
 *	  A short-lived helper the sender starts for a burst of due enrollments:
 *	  it advances them on a core of its own while the sender delivers.
 *
 * The sender's loop does two jobs in one process, advancing enrollments
 * and delivering messages.  For events arriving one by one that costs
 * nothing, but a burst (100k enrollments made due by one import) kept the
 * sender busy 92% of the time for 19 s, against 11 s when a separate
 * session advanced them in a loop while the sender delivered.  So when a
 * pass of the sender's executor finds a full batch due, the sender starts
 * this helper (a dynamic background worker, if a slot is free): it calls
 * journey.advance_due_enrollments() batch after batch, one transaction
 * each, and exits once a batch comes back short; meanwhile the sender
 * runs no pass of its own and only delivers.  Its messages are queued for
 * the sender's claim, which their commit wakes.  A pg_cron job or any
 * other caller may advance at the same time: the function's FOR UPDATE
 * SKIP LOCKED claim splits the work.
 *
 * It never restarts: an error ends it (logged), and the sender's own
 * passes go on as before.  At most one helper per sender; none while
 * journey.executor_in_worker is off, and it leaves with the sender when
 * the database is about to be dropped or renamed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "journey.h"
#include "sender.h"

/* The helper of this sender, NULL while none was started. */
static BackgroundWorkerHandle *helper = NULL;
static bool warned_no_slot = false;

/*
 * Starts the helper unless one is running.  Called by the sender after a
 * pass that left more due.  No free background worker slot is not an
 * error: the sender's own passes do the work, as without a helper.
 */
void
journey_executor_helper_start(void)
{
	BackgroundWorker worker;
	JourneySenderArgs args;
	MemoryContext old;

	if (journey_executor_helper_running())
		return;
	/* The sender's own arguments: its slot, role and database. */
	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_main_arg = MyBgworkerEntry->bgw_main_arg;
	/* Its exit sets the sender's latch: the sender's passes resume. */
	worker.bgw_notify_pid = MyProcPid;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "journey");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "journey_executor_helper_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "journey executor helper for database %s", args.dbname);
	snprintf(worker.bgw_type, BGW_MAXLEN, "journey executor helper");
	memcpy(worker.bgw_extra, &args, sizeof(args));

	/* The handle must outlive the pass's memory. */
	old = MemoryContextSwitchTo(TopMemoryContext);
	if (!RegisterDynamicBackgroundWorker(&worker, &helper))
	{
		helper = NULL;
		if (!warned_no_slot)
			ereport(LOG,
					(errmsg("journey sender could not start an executor helper for database \"%s\"",
							args.dbname),
					 errdetail("No background worker slot is free; the sender advances the burst alone."),
					 errhint("Raise max_worker_processes.")));
		warned_no_slot = true;
	}
	else
		warned_no_slot = false;
	MemoryContextSwitchTo(old);
}

/*
 * While the helper runs, the sender leaves the burst to it and delivers:
 * its own passes beside the helper's took the sender's CPU from the
 * deliveries (a 100k burst drained in 13.7-15.3 s, against 12.2 s with
 * the work split between two processes).
 */
bool
journey_executor_helper_running(void)
{
	pid_t		pid;
	BgwHandleStatus status;

	if (helper == NULL)
		return false;
	status = GetBackgroundWorkerPid(helper, &pid);
	if (status == BGWH_STARTED || status == BGWH_NOT_YET_STARTED)
		return true;
	/* Gone: no more asking the postmaster's table every turn of the loop. */
	pfree(helper);
	helper = NULL;
	return false;
}

/*
 * One batch in a transaction of its own, as a pass of the sender's;
 * returns how many it advanced, or -1 when journey is not installed (any
 * more) or a table is busy.
 */
static int
advance_one_batch(int slot)
{
	int			advanced = -1;

	if (journey_executor_begin_pass())
	{
		journey_replan_if_grown();
		advanced = journey_executor_advance_batch(GetCurrentTransactionStartTimestamp());
	}
	journey_executor_end_pass();

	if (advanced > 0)
	{
		JourneySenderSlot *s = &journey_sender_shmem->slots[slot];

		/* executor_status() counts the helper's batches as its sender's. */
		SpinLockAcquire(&journey_sender_shmem->mutex);
		s->executor_passes++;
		s->executor_advanced += advanced;
		SpinLockRelease(&journey_sender_shmem->mutex);
	}
	return advanced;
}

void
journey_executor_helper_main(Datum main_arg)
{
	JourneySenderArgs args;
	int64		total = 0;
	int			advanced;

	journey_worker_connect(main_arg, &args, "journey executor helper");
	ereport(DEBUG1, (errmsg("journey executor helper started for database \"%s\"", args.dbname)));

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!journey_executor_in_worker || journey_sender_shmem->slots[args.slot].stop_requested)
			break;
		advanced = advance_one_batch(args.slot);
		if (advanced > 0)
			total += advanced;
		if (advanced < journey_executor_batch_size)
			break;
	}
	ereport(total > 0 ? LOG : DEBUG1,
			(errmsg("journey executor helper for database \"%s\" advanced " INT64_FORMAT " enrollments",
					args.dbname, total)));
	proc_exit(0);
}
