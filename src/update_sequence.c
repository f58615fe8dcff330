/*-------------------------------------------------------------------------
 *
 * update_sequence.c
 *	  update_sequence: a new version of a live journey.  The definition is
 *	  parsed by definition.c exactly as create_sequence parses it; its steps
 *	  are written under sequences.version + 1 beside the earlier versions'
 *	  (which stay, for the enrollments pinned to them and for history), the
 *	  settings replace the old ones, and the active enrollments are kept on
 *	  their version, moved to the new one or exited (SPEC section 10).
 *
 * Locks, in this order, so no cycle can form with the executor (which
 * holds claimed enrollments and then locks rate-limited sequences) or the
 * events trigger (which inserts enrollments holding the sequence KEY SHARE):
 *	 1. a transaction advisory lock on the sequence: update_sequence calls on
 *		one sequence run one after the other, each reading the version the
 *		previous one wrote;
 *	 2. the active enrollments (move, exit), waiting for an executor that
 *		holds some of them to commit; the executor skips the locked ones;
 *	 3. last, the sequence row, by the UPDATE of its settings and version.
 * Everything is one statement's work in the caller's transaction: an error
 * (a bad definition, an enrollment standing where the new version has no
 * step) writes nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "definition.h"
#include "sequence.h"

PG_FUNCTION_INFO_V1(journey_update_sequence);

/* The advisory lock space of update_sequence: "jv" (journey versions). */
#define UPDATE_LOCK_CLASS 0x6a76

typedef enum InFlight
{
	IN_FLIGHT_KEEP,
	IN_FLIGHT_MOVE,
	IN_FLIGHT_EXIT
} InFlight;

static InFlight
parse_in_flight(const char *mode)
{
	if (strcmp(mode, "keep") == 0)
		return IN_FLIGHT_KEEP;
	if (strcmp(mode, "move") == 0)
		return IN_FLIGHT_MOVE;
	if (strcmp(mode, "exit") == 0)
		return IN_FLIGHT_EXIT;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("p_in_flight must be keep, move or exit, not \"%s\"", mode),
			 errhint("keep: active enrollments finish on their version; move: they go on on the new one "
					 "at the same step; exit: they stop.")));
	return IN_FLIGHT_KEEP;
}

static void
sequence_missing(Datum sequence_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("sequence %s does not exist",
					 DatumGetCString(DirectFunctionCall1(uuid_out, sequence_id))),
			 errhint("Pass the id returned by journey.create_sequence.")));
}

/*
 * The sequence's business, looked up as the caller: row-level security
 * hides another business's sequence, which then answers exactly as a
 * missing one.
 */
static Datum
visible_sequence_business(Datum sequence_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {sequence_id};
	Datum		business_id;
	bool		isnull;
	MemoryContext caller_cxt = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (journey_spi_kept(&plan, "SELECT s.business_id FROM journey.sequences s "
						 "WHERE s.id OPERATOR(pg_catalog.=) $1",
						 1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "sequence look-up failed");
	if (SPI_processed == 0)
		sequence_missing(sequence_id);
	business_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	{
		MemoryContext spi_cxt = MemoryContextSwitchTo(caller_cxt);
		pg_uuid_t  *copy = palloc(sizeof(pg_uuid_t));

		memcpy(copy, DatumGetUUIDP(business_id), UUID_LEN);
		business_id = UUIDPGetDatum(copy);
		MemoryContextSwitchTo(spi_cxt);
	}
	SPI_finish();
	return business_id;
}

/* Serialises update_sequence calls on one sequence (lock 1 above). */
static void
lock_sequence_updates(Datum sequence_id)
{
	const unsigned char *b = DatumGetUUIDP(sequence_id)->data;
	uint32		key = 0;

	for (int i = 0; i < UUID_LEN; i++)
		key = key * 31 + b[i];
	(void) DirectFunctionCall2(pg_advisory_xact_lock_int4,
							   Int32GetDatum(UPDATE_LOCK_CLASS), Int32GetDatum((int32) key));
}

static int32
current_version(Datum sequence_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {sequence_id};
	bool		isnull;

	if (journey_spi_kept(&plan, "SELECT s.version FROM journey.sequences s "
						 "WHERE s.id OPERATOR(pg_catalog.=) $1",
						 1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "sequence look-up failed");
	if (SPI_processed == 0)
		sequence_missing(sequence_id);	/* deleted meanwhile */
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Moves every active enrollment to the new version at its step, logging
 * each; refuses with 55000 when some stand past the new version's last
 * step (the error undoes the moves with everything else).  The UPDATE
 * waits for an executor holding some of them and then sees their newest
 * step; only update_sequence changes sequence_version, and the advisory
 * lock orders those calls, so the snapshot's old.sequence_version is the
 * version each row is moved from.
 */
static void
move_enrollments(Datum sequence_id, int32 version, int32 nsteps)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[3] = {UUIDOID, INT4OID, INT4OID};
	Datum		values[3] = {sequence_id, Int32GetDatum(version), Int32GetDatum(nsteps)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	int64		nlost;

	if (journey_spi_kept(&plan,
						 "WITH moved AS ("
						 "  UPDATE journey.sequence_enrollments e SET sequence_version = $2"
						 "    FROM journey.sequence_enrollments old"
						 "   WHERE old.id OPERATOR(pg_catalog.=) e.id"
						 "     AND old.sequence_id OPERATOR(pg_catalog.=) $1"
						 "     AND e.sequence_id OPERATOR(pg_catalog.=) $1"
						 "     AND e.status OPERATOR(pg_catalog.=) 'active'"
						 "  RETURNING e.id, e.business_id, e.current_step_index,"
						 "            old.sequence_version AS from_version),"
						 " logged AS ("
						 "  INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index,"
						 "         outcome, detail, at, sequence_version)"
						 "  SELECT m.business_id, m.id, m.current_step_index, 'moved',"
						 "         pg_catalog.format('moved by update_sequence from version %s to version %s at step %s',"
						 "                           m.from_version, $2, m.current_step_index),"
						 "         pg_catalog.now(), $2"
						 "    FROM moved m)"
						 "SELECT pg_catalog.count(*) FILTER (WHERE m.current_step_index OPERATOR(pg_catalog.>) $3),"
						 "       pg_catalog.string_agg(DISTINCT m.current_step_index::text, ', ')"
						 "         FILTER (WHERE m.current_step_index OPERATOR(pg_catalog.>) $3)"
						 "  FROM moved m",
						 3, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "moving the enrollments failed");
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	nlost = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	if (nlost > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot move " INT64_FORMAT " active enrollment%s at step %s: version %d has %d step%s",
						nlost, nlost == 1 ? "" : "s", SPI_getvalue(tup, desc, 2),
						version, nsteps, nsteps == 1 ? "" : "s"),
				 errdetail("Nothing was written."),
				 errhint("Keep those steps in the new definition, or pass p_in_flight 'keep' "
						 "(they finish on their version) or 'exit' (they stop).")));
}

/* Stops every active enrollment (sequence_updated), cancelling its messages. */
static void
exit_enrollments(Datum sequence_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {sequence_id};

	if (journey_spi_kept(&plan,
						 "WITH stopped AS ("
						 "  UPDATE journey.sequence_enrollments SET status = 'stopped',"
						 "         stop_reason = 'sequence_updated', finished_at = pg_catalog.now(),"
						 "         next_run_at = NULL"
						 "   WHERE sequence_id OPERATOR(pg_catalog.=) $1"
						 "     AND status OPERATOR(pg_catalog.=) 'active'"
						 "  RETURNING id, business_id, current_step_index, stop_reason, finished_at) "
						 JOURNEY_STOPPED_ARRAYS_SELECT,
						 1, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "stopping the enrollments failed");
	journey_cancel_and_log_stops(SPI_tuptable);
}

/* The new settings and version, on the sequence row (lock 3 above). */
static void
write_settings(Datum sequence_id, int32 version, JourneyDefinition *def)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2 + JOURNEY_SETTINGS_NARGS];
	Datum		values[2 + JOURNEY_SETTINGS_NARGS];
	char		nulls[2 + JOURNEY_SETTINGS_NARGS];

	types[0] = UUIDOID;
	types[1] = INT4OID;
	memcpy(types + 2, journey_settings_types, sizeof(journey_settings_types));
	values[0] = sequence_id;
	values[1] = Int32GetDatum(version);
	nulls[0] = nulls[1] = ' ';
	journey_sequence_settings(def, values + 2, nulls + 2);
	if (journey_spi_kept(&plan,
						 "UPDATE journey.sequences SET version = $2, name = $3, description = $4,"
						 "       status = $5, trigger_event_type = $6, exit_event_types = $7,"
						 "       allow_manual_enroll = $8, reentry = $9, quiet_hours_start = $10,"
						 "       quiet_hours_end = $11, rate_per_hour = $12, rate_per_day = $13"
						 " WHERE id OPERATOR(pg_catalog.=) $1",
						 2 + JOURNEY_SETTINGS_NARGS, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "updating the sequence failed");
}

Datum
journey_update_sequence(PG_FUNCTION_ARGS)
{
	Datum		sequence_id;
	Datum		business_id;
	Jsonb	   *definition;
	InFlight	in_flight;
	JourneyDefinition def;
	JourneyUserSwitch saved;
	int32		version;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("sequence id must not be null"),
				 errhint("Pass the id returned by journey.create_sequence.")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("journey definition must not be null"),
				 errhint("Pass {\"name\": ..., \"steps\": [...]}.")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("p_in_flight must not be null"),
				 errhint("Pass keep, move or exit.")));
	sequence_id = PG_GETARG_DATUM(0);
	definition = PG_GETARG_JSONB_P(1);
	in_flight = parse_in_flight(text_to_cstring(PG_GETARG_TEXT_PP(2)));

	business_id = visible_sequence_business(sequence_id);
	journey_require_member(business_id);
	journey_definition_parse(definition, &def);

	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	lock_sequence_updates(sequence_id);
	version = current_version(sequence_id) + 1;
	journey_check_step_templates(business_id, &def);
	journey_write_steps(business_id, sequence_id, version, &def);
	if (in_flight == IN_FLIGHT_MOVE)
		move_enrollments(sequence_id, version, def.nsteps);
	else if (in_flight == IN_FLIGHT_EXIT)
		exit_enrollments(sequence_id);
	write_settings(sequence_id, version, &def);
	/* Moved steps, a journey made active: the sender's executor looks again at commit. */
	journey_note_enrollment_due();
	SPI_finish();
	journey_restore_user(&saved);

	PG_RETURN_INT32(version);
}
