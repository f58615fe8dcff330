/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  journey.purge: deletes what is old and no longer decides anything,
 *	  so events, enrollment_log and messages stop growing forever.
 *
 * What may go, older than p_as_of - p_older_than:
 *	- enrollment_log rows, except those of active enrollments (their
 *	  timeline is still being written);
 *	- terminal messages (sent, failed, cancelled), except those of active
 *	  enrollments; rate limits look back 24 hours, so p_older_than must be
 *	  at least a day;
 *	- events, except those of a customer with an active enrollment that
 *	  began at or before the event (branch conditions "event since
 *	  enrollment" read them).
 * What never goes: enrollments themselves (reentry = 'never' reads them,
 * so a customer enrolled before stays refused), suppressions, customers,
 * queued and sending messages.  An idempotency key lives as long as its
 * event: a webhook replayed more than p_older_than after its first
 * delivery is taken as new.
 *
 * Each statement deletes one batch of at most PURGE_BATCH rows, oldest
 * (lowest id) first, skipping rows another transaction holds (SKIP LOCKED), so purge
 * never waits on the executor, the sender or a tenant.  The function runs
 * in its caller's transaction: pg_cron runs each call as its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_purge);

#define PURGE_BATCH 10000

/*
 * One batch each: the next PURGE_BATCH rows after id $3, in id order, so a
 * batch starts where the last one ended instead of scanning again past
 * the rows this call already deleted (still there until it commits).
 * The rows are deleted by their ctid (a TID scan: the batch costs its own
 * rows, never a scan of the table), stable while the batch holds their
 * locks.  Each returns how many rows it deleted and the highest id.
 */
#define PURGE_BATCH_SQL(table, alias, condition) \
	"WITH d AS (DELETE FROM journey." table " WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY(" \
	" SELECT " alias ".ctid FROM journey." table " " alias \
	" WHERE " alias ".id OPERATOR(pg_catalog.>) $3 AND " condition \
	" ORDER BY " alias ".id LIMIT $2 FOR UPDATE OF " alias " SKIP LOCKED)) RETURNING id)" \
	" SELECT pg_catalog.count(*), pg_catalog.max(id) FROM d"

static const char *const purge_sql[] = {
	PURGE_BATCH_SQL("enrollment_log", "l",
					"l.at OPERATOR(pg_catalog.<) $1"
					" AND NOT EXISTS (SELECT 1 FROM journey.sequence_enrollments e"
					"  WHERE e.id OPERATOR(pg_catalog.=) l.enrollment_id"
					"    AND e.status OPERATOR(pg_catalog.=) 'active')"),
	PURGE_BATCH_SQL("messages", "m",
					"m.status IN ('sent', 'failed', 'cancelled')"
					" AND COALESCE(m.sent_at, m.send_after) OPERATOR(pg_catalog.<) $1"
					" AND NOT EXISTS (SELECT 1 FROM journey.sequence_enrollments e"
					"  WHERE e.id OPERATOR(pg_catalog.=) m.enrollment_id"
					"    AND e.status OPERATOR(pg_catalog.=) 'active')"),
	PURGE_BATCH_SQL("events", "v",
					"v.occurred_at OPERATOR(pg_catalog.<) $1"
					" AND NOT EXISTS (SELECT 1 FROM journey.sequence_enrollments e"
					"  WHERE e.business_id OPERATOR(pg_catalog.=) v.business_id"
					"    AND e.customer_id OPERATOR(pg_catalog.=) v.customer_id"
					"    AND e.status OPERATOR(pg_catalog.=) 'active'"
					"    AND e.enrolled_at OPERATOR(pg_catalog.<=) v.occurred_at)"),
};

#define N_PURGE (sizeof(purge_sql) / sizeof(purge_sql[0]))

static SPIPlanPtr purge_plans[N_PURGE];

/*
 * purge(p_older_than interval default '180 days', p_as_of timestamptz
 * default now()) returns bigint: how many rows it deleted.
 */
Datum
journey_purge(PG_FUNCTION_ARGS)
{
	Interval   *older_than;
	Interval	one_day = {0};
	TimestampTz as_of;
	Datum		cutoff;
	Oid			types[3] = {TIMESTAMPTZOID, INT4OID, INT8OID};
	Datum		values[3];
	JourneyUserSwitch saved;
	int64		deleted = 0;
	int			i;

	if (!journey_caller_bypasses_rls())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for journey.purge"),
				 errdetail("Retention applies to every business at once: only an administrator may run it."),
				 errhint("Run it as the extension's owner or a superuser, e.g. scheduled with pg_cron.")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("purge needs an age and a time"),
				 errhint("Call journey.purge('180 days') or journey.purge('180 days', now()).")));
	older_than = PG_GETARG_INTERVAL_P(0);
	as_of = PG_GETARG_TIMESTAMPTZ(1);
	one_day.day = 1;
	if (DatumGetBool(DirectFunctionCall2(interval_lt, IntervalPGetDatum(older_than),
										 IntervalPGetDatum(&one_day))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("purge keeps at least a day"),
				 errdetail("Rate limits count the messages of the last 24 hours; purging younger ones would let more through."),
				 errhint("Pass an interval of at least '1 day' (the default is '180 days'), and longer than any frequency cap.")));
	cutoff = DirectFunctionCall2(timestamptz_mi_interval, TimestampTzGetDatum(as_of),
								 IntervalPGetDatum(older_than));

	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = cutoff;
	values[1] = Int32GetDatum(PURGE_BATCH);
	for (i = 0; i < (int) N_PURGE; i++)
	{
		int64		last_id = 0;

		for (;;)
		{
			bool		isnull;
			int64		n;

			CHECK_FOR_INTERRUPTS();
			values[2] = Int64GetDatum(last_id);
			if (journey_spi_kept(&purge_plans[i], purge_sql[i], 3, types, values, NULL,
								 false, 1) != SPI_OK_SELECT)
				elog(ERROR, "purging failed");
			n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			deleted += n;
			if (n < PURGE_BATCH)
				break;
			last_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		}
	}
	SPI_finish();
	journey_restore_user(&saved);
	PG_RETURN_INT64(deleted);
}
