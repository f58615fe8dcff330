/*-------------------------------------------------------------------------
 *
 * cron.c
 *	  pg_cron scheduling of the executor: schedule_executor and
 *	  unschedule_executor, and removal of the job when the extension is
 *	  dropped.
 *
 * pg_cron is optional: nothing here runs unless called, and the install
 * script schedules nothing.  The job is named journey-executor and runs
 * SELECT journey.advance_due_enrollments() in this database.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_schedule_executor);
PG_FUNCTION_INFO_V1(journey_unschedule_executor);
PG_FUNCTION_INFO_V1(journey_drop_cron_job);

#define EXECUTOR_JOB_NAME "journey-executor"
#define EXECUTOR_COMMAND "SELECT journey.advance_due_enrollments()"

static object_access_hook_type prev_object_access_hook = NULL;

static bool pg_cron_installed_here(void);

/* Unschedules this database's journey-executor job, where pg_cron is. */
static void
remove_executor_job(void)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	int			pinned = journey_pin_search_path();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (pg_cron_installed_here())
	{
		values[0] = CStringGetTextDatum(EXECUTOR_JOB_NAME);
		values[1] = CStringGetTextDatum(EXECUTOR_COMMAND);
		if (SPI_execute_with_args("SELECT cron.unschedule(jobid) FROM cron.job "
								  "WHERE jobname = $1 "
								  "AND command = $2",
								  2, types, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "removing the journey-executor job failed");
	}
	SPI_finish();
	journey_unpin_search_path(pinned);
}

static bool
pg_cron_installed_here(void)
{
	bool		installed;

	if (SPI_execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pg_extension look-up failed");
	installed = SPI_processed > 0;
	return installed;
}

static void
require_pg_cron(const char *schedule)
{
	const char *cron_db = GetConfigOption("cron.database_name", true, false);
	char	   *here = get_database_name(MyDatabaseId);

	if (pg_cron_installed_here())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("pg_cron is not installed in database \"%s\"", here),
			 cron_db && strcmp(cron_db, here) != 0 ?
			 errdetail("pg_cron runs its jobs from database \"%s\".", cron_db) :
			 errdetail("CREATE EXTENSION pg_cron where cron.database_name points, usually \"postgres\"."),
			 errhint("In pg_cron's database run: SELECT cron.schedule_in_database('%s', '%s', '%s', '%s');",
					 EXECUTOR_JOB_NAME, schedule ? schedule : "* * * * *", EXECUTOR_COMMAND, here)));
}

/*
 * pg_cron 1.4 runs a job over libpq at the host and port recorded when it
 * was scheduled (cron.host, this server's port), unless
 * cron.use_background_workers is on: then it runs the job in a background
 * worker of whichever server holds cron.job, and the job follows the data
 * through a restore into another cluster or port and a standby's
 * promotion.
 */
static void
warn_if_bound_to_port(void)
{
	const char *bgw = GetConfigOption("cron.use_background_workers", true, false);

	if (bgw == NULL || strcmp(bgw, "on") == 0)
		return;
	ereport(WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg("the journey-executor job is bound to this server's host and port"),
			 errdetail("With cron.use_background_workers off, pg_cron connects to the host and port recorded now; after a restore into another cluster or port, or a promotion, the job would run elsewhere or fail."),
			 errhint("Set cron.use_background_workers = on (and max_worker_processes to match), then restart the server.")));
}

/*
 * schedule_executor(p_schedule text default '* * * * *') returns bigint:
 * the pg_cron job id.  An earlier journey-executor job is replaced.
 */
Datum
journey_schedule_executor(PG_FUNCTION_ARGS)
{
	char	   *schedule;
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	bool		isnull;
	int64		jobid;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("schedule must not be null"),
				 errhint("Use cron format, e.g. '* * * * *' for every minute.")));
	schedule = text_to_cstring(PG_GETARG_TEXT_PP(0));

	/* pg_cron 1.4 has no sub-minute schedules; say so before it does. */
	if (strstr(schedule, "second") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid schedule \"%s\": the executor runs at most once a minute", schedule),
				 errhint("Use cron format, e.g. '* * * * *' for every minute, or call "
						 "journey.advance_due_enrollments() yourself more often.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	require_pg_cron(schedule);

	values[0] = CStringGetTextDatum(EXECUTOR_JOB_NAME);
	values[1] = CStringGetTextDatum(schedule);
	values[2] = CStringGetTextDatum(EXECUTOR_COMMAND);
	if (SPI_execute_with_args("SELECT cron.schedule($1, $2, $3)", 3, types, values, NULL, false, 0) !=
		SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "cron.schedule returned no job id");
	jobid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	warn_if_bound_to_port();
	PG_RETURN_INT64(jobid);
}

/*
 * unschedule_executor() returns boolean: whether there was a job to remove.
 */
Datum
journey_unschedule_executor(PG_FUNCTION_ARGS)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	bool		removed = false;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	require_pg_cron(NULL);
	values[0] = CStringGetTextDatum(EXECUTOR_JOB_NAME);
	if (SPI_execute_with_args("SELECT cron.unschedule(jobid) FROM cron.job "
							  "WHERE jobname = $1 "
							  "AND username = CURRENT_USER",
							  1, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "cron.unschedule failed");
	removed = SPI_processed > 0;
	SPI_finish();
	PG_RETURN_BOOL(removed);
}

/*
 * When the journey extension is dropped, its executor job goes with it, so
 * pg_cron does not fail every minute on a function that no longer exists.
 */
static void
journey_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					  int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access == OAT_DROP && classId == ExtensionRelationId &&
		objectId == get_extension_oid("journey", true))
		remove_executor_job();
}

/*
 * ddl_command_start event trigger for DROP EXTENSION (journey_drop_cron_job
 * in the install script): a session that never loaded the library has no
 * object access hook, so the extension's own event trigger removes the
 * job before the extension goes.  A DROP that fails rolls the removal back.
 */
Datum
journey_drop_cron_job(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata = (EventTriggerData *) fcinfo->context;
	DropStmt   *stmt;
	ListCell   *lc;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "journey_drop_cron_job must be called as an event trigger");
	if (!IsA(trigdata->parsetree, DropStmt))
		PG_RETURN_VOID();
	stmt = (DropStmt *) trigdata->parsetree;
	if (stmt->removeType != OBJECT_EXTENSION)
		PG_RETURN_VOID();
	foreach(lc, stmt->objects)
	{
		if (strcmp(strVal(lfirst(lc)), "journey") == 0)
		{
			remove_executor_job();
			break;
		}
	}
	PG_RETURN_VOID();
}

void
journey_cron_init(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = journey_object_access;
}
