/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  The executor's side of journey.step_stats: counts, per call, how many
 *	  enrollments arrived at each step and how many sends each step skipped
 *	  or deferred, and adds them to journey.step_counters in one statement.
 *
 * Those are the funnel numbers no base table holds exactly (a wait step
 * leaves no log row, an enrollment keeps only the step it is at now), and
 * counting them while deciding costs a hash increment per decision instead
 * of a scan of the log per read.  The rest of the funnel (messages and
 * where enrollments stand) is read live from its tables by the views.
 *
 * The counts are written in the call's own transaction, so they commit or
 * roll back with the decisions they count.  Each backend adds to its own
 * shard of a counter row: concurrent executors never wait on each other's
 * counter rows, and the views sum the shards.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "executor_private.h"

/* Shards per counter row: enough that concurrent executors rarely share. */
#define STATS_SHARDS 16

typedef struct StepCountKey
{
	pg_uuid_t	sequence_id;
	int32		version;
	int32		step_index;
} StepCountKey;

typedef struct StepCountEntry
{
	StepCountKey key;
	Datum		business_id;
	int64		counts[3];		/* by StepCount */
} StepCountEntry;

static const char *counters_sql =
"INSERT INTO journey.step_counters AS k (business_id, sequence_id, version, step_index,"
"       shard, reached, skipped, deferred)"
"SELECT u.business_id, u.sequence_id, u.version, u.step_index, $8,"
"       u.reached, u.skipped, u.deferred"
"  FROM unnest($1::uuid[], $2::uuid[], $3::integer[], $4::integer[], $5::bigint[],"
"              $6::bigint[], $7::bigint[])"
"       AS u(business_id, sequence_id, version, step_index, reached, skipped, deferred)"
" ORDER BY u.sequence_id, u.version, u.step_index"
"    ON CONFLICT (sequence_id, version, step_index, shard) DO UPDATE"
"   SET reached = k.reached + excluded.reached,"
"       skipped = k.skipped + excluded.skipped,"
"       deferred = k.deferred + excluded.deferred";

static SPIPlanPtr counters_plan = NULL;

void
exec_stats_count(ExecState *st, ExecEnrollment *en, int32 step, StepCount what)
{
	StepCountKey key;
	StepCountEntry *entry;
	bool		found;

	if (step <= 0)
		return;
	if (st->step_counts == NULL)
	{
		HASHCTL		hctl;

		hctl.keysize = sizeof(StepCountKey);
		hctl.entrysize = sizeof(StepCountEntry);
		/* The call's context: scratch is reset after every enrollment. */
		hctl.hcxt = MemoryContextGetParent(st->scratch);
		st->step_counts = hash_create("journey step counts", 64, &hctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	memcpy(&key.sequence_id, DatumGetUUIDP(en->sequence_id), UUID_LEN);
	key.version = en->version;
	key.step_index = step;
	entry = hash_search(st->step_counts, &key, HASH_ENTER, &found);
	if (!found)
	{
		memset(entry->counts, 0, sizeof(entry->counts));
		entry->business_id = en->business_id;	/* points into the claim rows */
	}
	entry->counts[what]++;
}

void
exec_stats_apply(ExecState *st)
{
	HASH_SEQ_STATUS hs;
	StepCountEntry *entry;
	int			n;
	int			i = 0;
	Datum	   *cols[7];
	Oid			types[8] = {UUIDARRAYOID, UUIDARRAYOID, INT4ARRAYOID, INT4ARRAYOID,
	INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT4OID};
	Datum		args[8];
	int			rc;

	if (st->step_counts == NULL || (n = hash_get_num_entries(st->step_counts)) == 0 ||
		!st->schema_0_3)
		return;
	for (int c = 0; c < 7; c++)
		cols[c] = palloc(sizeof(Datum) * n);
	hash_seq_init(&hs, st->step_counts);
	while ((entry = hash_seq_search(&hs)) != NULL)
	{
		cols[0][i] = entry->business_id;
		cols[1][i] = UUIDPGetDatum(&entry->key.sequence_id);
		cols[2][i] = Int32GetDatum(entry->key.version);
		cols[3][i] = Int32GetDatum(entry->key.step_index);
		for (int c = 0; c < 3; c++)
			cols[4 + c][i] = Int64GetDatum(entry->counts[c]);
		i++;
	}
	args[0] = PointerGetDatum(construct_array(cols[0], n, UUIDOID, UUID_LEN, false,
											  TYPALIGN_CHAR));
	args[1] = PointerGetDatum(construct_array(cols[1], n, UUIDOID, UUID_LEN, false,
											  TYPALIGN_CHAR));
	for (int c = 2; c < 4; c++)
		args[c] = PointerGetDatum(construct_array(cols[c], n, INT4OID, sizeof(int32), true,
												  TYPALIGN_INT));
	for (int c = 4; c < 7; c++)
		args[c] = PointerGetDatum(construct_array(cols[c], n, INT8OID, sizeof(int64),
												  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[7] = Int32GetDatum(MyProcPid % STATS_SHARDS);
	rc = SPI_execute_plan(journey_keep_plan(&counters_plan, counters_sql, 8, types),
						  args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "journey executor could not add to step_counters: %s",
			 SPI_result_code_string(rc));
	exec_stats_discard(st);
}

void
exec_stats_discard(ExecState *st)
{
	if (st->step_counts != NULL)
		hash_destroy(st->step_counts);
	st->step_counts = NULL;
}
