/*-------------------------------------------------------------------------
 *
 * health.c
 *	  What an administrator watches: journey.sender_status() reads each
 *	  running sender's counters from shared memory, and
 *	  journey.warn_if_unserved() (called by CREATE EXTENSION) says when no
 *	  sender will ever drain this database's outbox.
 *
 * The sender writes its counters into its own slot under the slots'
 * spinlock, a few stores per claim or batch of results; nothing here
 * touches a table, so sender_status works even when the queue's tables
 * are locked.  The outbox itself is the journey.queue_stats view.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "journey.h"
#include "sender.h"

PG_FUNCTION_INFO_V1(journey_sender_status);
PG_FUNCTION_INFO_V1(journey_warn_if_unserved);

#define SENDER_STATUS_COLUMNS 9

void
journey_health_started(int slot)
{
	JourneySenderSlot *s = &journey_sender_shmem->slots[slot];

	SpinLockAcquire(&journey_sender_shmem->mutex);
	s->pid = MyProcPid;
	s->started_at = GetCurrentTimestamp();
	s->last_claim_at = 0;
	s->last_result_at = 0;
	s->in_flight = 0;
	s->sent = s->failed = s->retried = 0;
	SpinLockRelease(&journey_sender_shmem->mutex);
}

void
journey_health_claimed(int slot, int in_flight)
{
	JourneySenderSlot *s = &journey_sender_shmem->slots[slot];
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&journey_sender_shmem->mutex);
	s->last_claim_at = now;
	s->in_flight = in_flight;
	SpinLockRelease(&journey_sender_shmem->mutex);
}

void
journey_health_results(int slot, int in_flight, int64 sent, int64 failed, int64 retried)
{
	JourneySenderSlot *s = &journey_sender_shmem->slots[slot];
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&journey_sender_shmem->mutex);
	s->last_result_at = now;
	s->in_flight = in_flight;
	s->sent += sent;
	s->failed += failed;
	s->retried += retried;
	SpinLockRelease(&journey_sender_shmem->mutex);
}

static Datum
timestamp_or_null(TimestampTz t, bool *isnull)
{
	*isnull = (t == 0);
	return TimestampTzGetDatum(t);
}

/*
 * sender_status(): one row per running sender.  No rows where the library
 * was not preloaded (there is no sender then).
 */
Datum
journey_sender_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JourneySenderSlot copy[JOURNEY_MAX_SENDERS];
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (journey_sender_shmem == NULL)
		PG_RETURN_VOID();

	SpinLockAcquire(&journey_sender_shmem->mutex);
	memcpy(copy, journey_sender_shmem->slots, sizeof(copy));
	SpinLockRelease(&journey_sender_shmem->mutex);

	for (i = 0; i < JOURNEY_MAX_SENDERS; i++)
	{
		JourneySenderSlot *s = &copy[i];
		Datum		values[SENDER_STATUS_COLUMNS];
		bool		nulls[SENDER_STATUS_COLUMNS] = {0};
		char	   *datname;

		if (s->pid == 0 || !OidIsValid(s->dboid))
			continue;
		datname = get_database_name(s->dboid);
		if (datname == NULL)
			continue;			/* dropped under it: it is leaving */
		values[0] = DirectFunctionCall1(namein, CStringGetDatum(datname));
		values[1] = Int32GetDatum(s->pid);
		values[2] = timestamp_or_null(s->started_at, &nulls[2]);
		values[3] = timestamp_or_null(s->last_claim_at, &nulls[3]);
		values[4] = timestamp_or_null(s->last_result_at, &nulls[4]);
		values[5] = Int32GetDatum(s->in_flight);
		values[6] = Int64GetDatum(s->sent);
		values[7] = Int64GetDatum(s->failed);
		values[8] = Int64GetDatum(s->retried);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/* Whether journey.database_name lists this database. */
static bool
database_is_listed(const char *here)
{
	char	   *raw;
	List	   *names;
	ListCell   *lc;

	if (journey_database_name == NULL)
		return false;
	raw = pstrdup(journey_database_name);
	if (!SplitGUCList(raw, ',', &names))
		return false;
	foreach(lc, names)
	{
		if (strcmp((char *) lfirst(lc), here) == 0)
			return true;
	}
	return false;
}

/*
 * warn_if_unserved(): a WARNING, with the fix, when no sender serves this
 * database, so an outbox that will never drain is noticed at install.
 */
Datum
journey_warn_if_unserved(PG_FUNCTION_ARGS)
{
	char	   *here = get_database_name(MyDatabaseId);

	if (journey_sender_shmem == NULL)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no journey sender serves database \"%s\"", here),
				 errdetail("journey is not in shared_preload_libraries, so no sender runs on this server and messages stay queued."),
				 errhint("Set shared_preload_libraries = 'journey' (with pg_cron beside it if used) and journey.database_name to include '%s', then restart the server.",
						 here)));
	else if (!database_is_listed(here))
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no journey sender serves database \"%s\"", here),
				 errdetail("journey.database_name is \"%s\"; messages queued here stay queued.",
						   journey_database_name ? journey_database_name : ""),
				 errhint("Add the database to the list, e.g. ALTER SYSTEM SET journey.database_name = '%s%s%s'; then SELECT pg_reload_conf();",
						 journey_database_name ? journey_database_name : "",
						 journey_database_name && journey_database_name[0] ? "," : "",
						 here)));
	PG_RETURN_VOID();
}
