/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The sender's launcher: the static "journey launcher" worker, and the
 *	  hook that lets DROP DATABASE through.  The shared memory they use is
 *	  in shmem.c.
 *
 * The launcher connects to no database, so it never blocks one.  For each
 * database named in journey.database_name (a comma-separated list) that
 * exists, it starts a dynamic "journey sender" worker connected to it, and
 * starts it again when it exits.  A list changed at reload is followed:
 * senders of names no longer listed are stopped, new names get one.
 *
 * A sender connected to a database would make DROP DATABASE, ALTER
 * DATABASE RENAME and CREATE DATABASE ... TEMPLATE of it fail ("being
 * accessed by other users").  Every backend of a server with the library
 * preloaded runs the utility hook below, which asks that database's sender
 * to leave first; the launcher holds back from starting it again for a
 * while, and the command's own five-second wait covers the rest.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/varlena.h"

#include "journey.h"
#include "sender.h"

/* After a database's sender was asked to leave, how long to stay away. */
#define STOP_HOLDOFF_MS 10000
/* Shortest and longest pause before starting a sender that exited. */
#define RESTART_MIN_MS 1000
#define RESTART_MAX_MS 60000

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* The launcher's private view of each slot. */
typedef struct LauncherSlot
{
	char		dbname[NAMEDATALEN];	/* empty: unused */
	BackgroundWorkerHandle *handle;
	Oid			roleoid;		/* the role it was started as */
	TimestampTz started_at;
	TimestampTz restart_after;
	int			backoff_ms;
	bool		warned_missing;
} LauncherSlot;

static LauncherSlot lslots[JOURNEY_MAX_SENDERS];

/* Asks the sender of the database "name" to leave it. */
static void
stop_sender_for(const char *name)
{
	Oid			dboid;
	int			i;

	if (journey_sender_shmem == NULL || name == NULL)
		return;
	dboid = get_database_oid(name, true);
	/* Only for someone the command may succeed for: else a way to stall it. */
	if (!OidIsValid(dboid) || !pg_database_ownercheck(dboid, GetUserId()))
		return;
	SpinLockAcquire(&journey_sender_shmem->mutex);
	for (i = 0; i < JOURNEY_MAX_SENDERS; i++)
	{
		JourneySenderSlot *s = &journey_sender_shmem->slots[i];

		if (s->dboid == dboid)
		{
			s->stop_requested = true;
			s->stop_requested_at = GetCurrentTimestamp();
			if (s->latch)
				SetLatch(s->latch);
		}
	}
	SpinLockRelease(&journey_sender_shmem->mutex);
}

static void
journey_process_utility(PlannedStmt *pstmt, const char *queryString,
						bool readOnlyTree, ProcessUtilityContext context,
						ParamListInfo params, QueryEnvironment *queryEnv,
						DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsA(stmt, DropdbStmt))
		stop_sender_for(((DropdbStmt *) stmt)->dbname);
	else if (IsA(stmt, RenameStmt) &&
			 ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		stop_sender_for(((RenameStmt *) stmt)->subname);
	else if (IsA(stmt, CreatedbStmt))
	{
		ListCell   *lc;

		foreach(lc, ((CreatedbStmt *) stmt)->options)
		{
			DefElem    *d = lfirst(lc);

			if (strcmp(d->defname, "template") == 0 && d->arg)
				stop_sender_for(defGetString(d));
		}
	}

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

/* Called from _PG_init while shared_preload_libraries is processed. */
void
journey_sender_register(void)
{
	BackgroundWorker worker;

	journey_sender_shmem_register();
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = journey_process_utility;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "journey");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "journey_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "journey launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "journey launcher");
	RegisterBackgroundWorker(&worker);
}

static bool
start_sender(int i, Oid dboid, Oid roleoid)
{
	BackgroundWorker worker;
	JourneySenderArgs args;
	LauncherSlot *ls = &lslots[i];
	MemoryContext old;
	bool		registered;

	memset(&worker, 0, sizeof(worker));
	memset(&args, 0, sizeof(args));
	args.slot = i;
	args.roleoid = roleoid;
	strlcpy(args.dbname, ls->dbname, NAMEDATALEN);
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* The launcher restarts it, also after a crash. */
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = MyProcPid;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "journey");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "journey_sender_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "journey sender for database %s", ls->dbname);
	snprintf(worker.bgw_type, BGW_MAXLEN, "journey sender");
	memcpy(worker.bgw_extra, &args, sizeof(args));

	SpinLockAcquire(&journey_sender_shmem->mutex);
	journey_sender_shmem->slots[i].dboid = dboid;
	journey_sender_shmem->slots[i].stop_requested = false;
	SpinLockRelease(&journey_sender_shmem->mutex);

	/* The handle must outlive this pass's transaction. */
	old = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &ls->handle);
	MemoryContextSwitchTo(old);
	if (!registered)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start the journey sender for database \"%s\"",
						ls->dbname),
				 errhint("Raise max_worker_processes.")));
		ls->handle = NULL;
		return false;
	}
	ls->started_at = GetCurrentTimestamp();
	ls->roleoid = roleoid;
	return true;
}

/*
 * Looks a database or role up by name with a plain heap scan: before any
 * backend has written the shared relcache init file, a process connected to
 * no database cannot open the catalogs' indexes.
 */
static Oid
shared_catalog_oid(Oid relid, const char *name)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TableScanDesc scan = table_beginscan_catalog(rel, 0, NULL);
	HeapTuple	tup;
	Oid			result = InvalidOid;

	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		if (relid == DatabaseRelationId)
		{
			Form_pg_database d = (Form_pg_database) GETSTRUCT(tup);

			if (strcmp(NameStr(d->datname), name) == 0)
				result = d->oid;
		}
		else
		{
			Form_pg_authid a = (Form_pg_authid) GETSTRUCT(tup);

			if (strcmp(NameStr(a->rolname), name) == 0)
				result = a->oid;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return result;
}

static void
stop_slot(int i)
{
	LauncherSlot *ls = &lslots[i];

	if (ls->handle)
	{
		TerminateBackgroundWorker(ls->handle);
		pfree(ls->handle);
	}
	ls->handle = NULL;
	ls->dbname[0] = '\0';
	SpinLockAcquire(&journey_sender_shmem->mutex);
	journey_sender_shmem->slots[i].dboid = InvalidOid;
	SpinLockRelease(&journey_sender_shmem->mutex);
}

/*
 * One pass: matches the slots to journey.database_name and starts what
 * should run.  Returns the milliseconds until something is due.
 */
static long
launcher_pass(void)
{
	char	   *raw = pstrdup(journey_database_name);
	List	   *names = NIL;
	ListCell   *lc;
	Oid			roleoid = InvalidOid;
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms = journey_poll_interval_ms;
	int			i;

	/*
	 * A hot standby sends nothing (its tables are read-only, and the
	 * primary sends).  Look again each second: once promoted, it sends the
	 * outstanding outbox at once.
	 */
	if (RecoveryInProgress())
	{
		pfree(raw);
		return Min(wait_ms, 1000);
	}

	if (!SplitGUCList(raw, ',', &names))
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("journey.database_name is not a valid list of database names"),
				 errhint("Separate names with commas, for example 'app,app2'.")));
		names = NIL;
	}
	if (list_length(names) > JOURNEY_MAX_SENDERS)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("journey.database_name lists more than %d databases",
						JOURNEY_MAX_SENDERS),
				 errdetail("Only the first %d are served.", JOURNEY_MAX_SENDERS)));
		names = list_truncate(names, JOURNEY_MAX_SENDERS);
	}

	/* Stop the senders of databases no longer listed. */
	for (i = 0; i < JOURNEY_MAX_SENDERS; i++)
	{
		bool		listed = false;

		if (lslots[i].dbname[0] == '\0')
			continue;
		foreach(lc, names)
			listed |= strcmp(lslots[i].dbname, lfirst(lc)) == 0;
		if (!listed)
			stop_slot(i);
	}
	/* Give new names a slot. */
	foreach(lc, names)
	{
		const char *name = lfirst(lc);
		int			free_slot = -1;
		bool		found = false;

		for (i = 0; i < JOURNEY_MAX_SENDERS; i++)
		{
			if (strcmp(lslots[i].dbname, name) == 0)
				found = true;
			else if (lslots[i].dbname[0] == '\0' && free_slot < 0)
				free_slot = i;
		}
		if (!found && free_slot >= 0)
		{
			memset(&lslots[free_slot], 0, sizeof(LauncherSlot));
			strlcpy(lslots[free_slot].dbname, name, NAMEDATALEN);
			lslots[free_slot].backoff_ms = RESTART_MIN_MS;
		}
	}

	StartTransactionCommand();
	if (journey_worker_role[0] != '\0')
	{
		roleoid = shared_catalog_oid(AuthIdRelationId, journey_worker_role);
		if (!OidIsValid(roleoid))
		{
			ereport(WARNING,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("journey.worker_role \"%s\" does not exist", journey_worker_role),
					 errhint("Create the role, or set journey.worker_role to '' for the bootstrap superuser.")));
			CommitTransactionCommand();
			return wait_ms;
		}
	}

	for (i = 0; i < JOURNEY_MAX_SENDERS; i++)
	{
		LauncherSlot *ls = &lslots[i];
		pid_t		pid;
		Oid			dboid;
		TimestampTz stop_at;

		if (ls->dbname[0] == '\0')
			continue;
		if (ls->handle &&
			GetBackgroundWorkerPid(ls->handle, &pid) != BGWH_STOPPED)
		{
			/* journey.worker_role changed: stop it, it starts again below. */
			if (ls->roleoid != roleoid)
			{
				TerminateBackgroundWorker(ls->handle);
				wait_ms = Min(wait_ms, 100);
			}
			continue;
		}
		if (ls->handle)
		{
			/* It exited: back off if it did not last, else restart soon. */
			pfree(ls->handle);
			ls->handle = NULL;
			if (TimestampDifferenceExceeds(ls->started_at, now, RESTART_MAX_MS))
				ls->backoff_ms = RESTART_MIN_MS;
			else
				ls->backoff_ms = Min(ls->backoff_ms * 2, RESTART_MAX_MS);
			ls->restart_after = TimestampTzPlusMilliseconds(now, ls->backoff_ms);
		}
		SpinLockAcquire(&journey_sender_shmem->mutex);
		stop_at = journey_sender_shmem->slots[i].stop_requested ?
			journey_sender_shmem->slots[i].stop_requested_at : 0;
		SpinLockRelease(&journey_sender_shmem->mutex);
		if (stop_at != 0)
			ls->restart_after = Max(ls->restart_after,
									TimestampTzPlusMilliseconds(stop_at, STOP_HOLDOFF_MS));
		if (now < ls->restart_after)
		{
			wait_ms = Min(wait_ms, (long) ((ls->restart_after - now) / 1000) + 1);
			continue;
		}
		dboid = shared_catalog_oid(DatabaseRelationId, ls->dbname);
		if (!OidIsValid(dboid))
		{
			if (!ls->warned_missing)
				ereport(LOG,
						(errmsg("journey sender waits for database \"%s\" to exist",
								ls->dbname)));
			ls->warned_missing = true;
			continue;
		}
		ls->warned_missing = false;
		if (!start_sender(i, dboid, roleoid))
			ls->restart_after = TimestampTzPlusMilliseconds(now, RESTART_MAX_MS);
	}
	CommitTransactionCommand();
	return wait_ms;
}

void
journey_launcher_main(Datum main_arg)
{
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* Shared catalogs only: the launcher holds no database open. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("journey launcher");

	memset(lslots, 0, sizeof(lslots));
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "journey launcher loop",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		long		wait_ms;

		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		wait_ms = launcher_pass();
		MemoryContextSwitchTo(loop_cxt);
		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(wait_ms, 10), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
