/*-------------------------------------------------------------------------
 *
 * sequence.c
 *	  create_sequence: writes a journey definition (the JSON a journey
 *	  builder posts) as a sequence and its steps.  definition.c parses and
 *	  validates it, raising an error that names the offending step and
 *	  field, before the first write: an error never leaves a half-written
 *	  journey behind, even inside a caller's transaction that goes on after
 *	  catching it.  update_sequence (update_sequence.c) writes later
 *	  versions with the same pieces.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/date.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

#include "definition.h"
#include "sequence.h"

PG_FUNCTION_INFO_V1(journey_create_sequence);

static Datum
nullable_text(const char *s, char *nulls, int i)
{
	nulls[i] = s ? ' ' : 'n';
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

/*
 * An HH:MM clock as a time value.  time_in reads three arguments: with
 * DirectFunctionCall1 its typmod would be whatever lay on the stack
 * (valgrind saw it), so the typmod goes explicitly as -1 (none).
 */
static Datum
clock_datum(const char *clock)
{
	return DirectFunctionCall3(time_in, CStringGetDatum(clock),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

/*
 * The sequence's settings from a definition, as the 11 parameters
 * $2..$12 of the statements below (name .. rate_per_day).
 */
void
journey_sequence_settings(JourneyDefinition *def, Datum *values, char *nulls)
{
	Datum	   *exit_types;
	int			nexit = list_length(def->exit_event_types);
	ListCell   *lc;
	int			i = 0;

	exit_types = palloc(sizeof(Datum) * (nexit + 1));
	foreach(lc, def->exit_event_types)
		exit_types[i++] = CStringGetTextDatum((char *) lfirst(lc));

	memset(nulls, ' ', JOURNEY_SETTINGS_NARGS);
	values[0] = CStringGetTextDatum(def->name);
	values[1] = nullable_text(def->description, nulls, 1);
	values[2] = CStringGetTextDatum(def->status);
	values[3] = nullable_text(def->trigger_event_type, nulls, 3);
	values[4] = PointerGetDatum(construct_array(exit_types, nexit, TEXTOID, -1, false, TYPALIGN_INT));
	values[5] = BoolGetDatum(def->allow_manual_enroll);
	values[6] = CStringGetTextDatum(def->reentry);
	values[7] = def->quiet_start ? clock_datum(def->quiet_start) : (Datum) 0;
	nulls[7] = def->quiet_start ? ' ' : 'n';
	values[8] = def->quiet_end ? clock_datum(def->quiet_end) : (Datum) 0;
	nulls[8] = def->quiet_end ? ' ' : 'n';
	values[9] = Int32GetDatum(def->rate_hour);
	nulls[9] = def->rate_hour_null ? 'n' : ' ';
	values[10] = Int32GetDatum(def->rate_day);
	nulls[10] = def->rate_day_null ? 'n' : ' ';
}

const Oid	journey_settings_types[JOURNEY_SETTINGS_NARGS] = {
	TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID,
	BOOLOID, TEXTOID, TIMEOID, TIMEOID, INT4OID, INT4OID
};

/*
 * A step naming a template must name one of the sequence's business, of
 * the step's channel.  Another business's template answers exactly as a
 * missing one.  Runs inside the caller's SPI connection, as the owner.
 */
void
journey_check_step_templates(Datum business_id, JourneyDefinition *def)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {UUIDOID, UUIDOID};

	for (int i = 0; i < def->nsteps; i++)
	{
		JourneyStep *st = &def->steps[i];
		Datum		values[2];
		const char *want = st->kind == STEP_EMAIL ? "email" : "sms";
		char	   *channel;

		if (st->template_id == NULL)
			continue;
		values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(st->template_id));
		values[1] = business_id;
		if (journey_spi_kept(&plan, "SELECT t.channel FROM journey.templates t "
							 "WHERE t.id OPERATOR(pg_catalog.=) $1 "
							 "AND t.business_id OPERATOR(pg_catalog.=) $2",
							 2, types, values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "template look-up failed");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid journey definition: step %d field \"template_id\" names no template: %s",
							i + 1, st->template_id),
					 errhint("Pass the id returned by journey.create_template for this business.")));
		channel = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (strcmp(channel, want) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid journey definition: step %d field \"template_id\" names a template of channel %s, not %s",
							i + 1, channel, want),
					 errhint("A %s step needs a template of channel %s.",
							 journey_step_kind_name(st->kind), want)));
	}
}

/* Writes the steps of def as version `version` of the sequence (in SPI). */
void
journey_write_steps(Datum business_id, Datum sequence_id, int32 version,
					JourneyDefinition *def)
{
	static SPIPlanPtr plan = NULL;
	Oid			step_types[11] = {UUIDOID, UUIDOID, TEXTOID, INT4OID, INT8OID, UUIDOID,
	TEXTOID, JSONBOID, JSONBOID, INT4OID, INT4OID};
	Datum		step_values[11];
	char		step_nulls[11];

	for (int i = 0; i < def->nsteps; i++)
	{
		JourneyStep *st = &def->steps[i];

		memset(step_nulls, ' ', sizeof(step_nulls));
		step_values[0] = business_id;
		step_values[1] = sequence_id;
		step_values[2] = CStringGetTextDatum(journey_step_kind_name(st->kind));
		step_values[3] = Int32GetDatum(i + 1);
		step_values[4] = Int64GetDatum(st->wait_ms);
		step_values[5] = st->template_id ?
			DirectFunctionCall1(uuid_in, CStringGetDatum(st->template_id)) : (Datum) 0;
		step_nulls[5] = st->template_id ? ' ' : 'n';
		step_values[6] = nullable_text(st->purpose, step_nulls, 6);
		step_values[7] = st->message ? JsonbPGetDatum(st->message) :
			DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
		step_values[8] = st->branch ? JsonbPGetDatum(st->branch) : (Datum) 0;
		step_nulls[8] = st->branch ? ' ' : 'n';
		step_values[9] = Int32GetDatum(st->next_step);
		step_nulls[9] = st->next_step >= 0 ? ' ' : 'n';
		step_values[10] = Int32GetDatum(version);
		if (journey_spi_kept(&plan, "INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, "
							 "step_index, wait_ms, template_id, message_purpose, message_config, "
							 "branch_config, next_step_index, version) "
							 "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
							 11, step_types, step_values, step_nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "inserting step %d failed", i + 1);
	}
}

static Datum
write_sequence(Datum business_id, JourneyDefinition *def)
{
	Oid			seq_types[1 + JOURNEY_SETTINGS_NARGS];
	Datum		seq_values[1 + JOURNEY_SETTINGS_NARGS];
	char		seq_nulls[1 + JOURNEY_SETTINGS_NARGS];
	bool		isnull;
	Datum		sequence_id;
	MemoryContext caller_cxt = CurrentMemoryContext;

	seq_types[0] = UUIDOID;
	memcpy(seq_types + 1, journey_settings_types, sizeof(journey_settings_types));
	seq_values[0] = business_id;
	seq_nulls[0] = ' ';
	journey_sequence_settings(def, seq_values + 1, seq_nulls + 1);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	journey_check_step_templates(business_id, def);
	if (SPI_execute_with_args("INSERT INTO journey.sequences (business_id, name, description, status, "
							  "trigger_event_type, exit_event_types, allow_manual_enroll, reentry, "
							  "quiet_hours_start, quiet_hours_end, rate_per_hour, rate_per_day) "
							  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
							  12, seq_types, seq_values, seq_nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "inserting the sequence failed");
	sequence_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	{
		MemoryContext spi_cxt = MemoryContextSwitchTo(caller_cxt);

		sequence_id = datumCopy(sequence_id, false, UUID_LEN);
		MemoryContextSwitchTo(spi_cxt);
	}
	journey_write_steps(business_id, sequence_id, 1, def);
	SPI_finish();
	return sequence_id;
}

Datum
journey_create_sequence(PG_FUNCTION_ARGS)
{
	Datum		business_id;
	Jsonb	   *definition;
	JourneyDefinition def;
	JourneyUserSwitch saved;
	Datum		sequence_id;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("business id must not be null"),
				 errhint("Pass the id returned by journey.create_business.")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("journey definition must not be null"),
				 errhint("Pass {\"name\": ..., \"steps\": [...]}.")));
	business_id = PG_GETARG_DATUM(0);
	definition = PG_GETARG_JSONB_P(1);

	journey_require_member(business_id);
	journey_definition_parse(definition, &def);

	journey_become_owner(&saved);
	journey_require_business_exists(business_id);
	sequence_id = write_sequence(business_id, &def);
	journey_restore_user(&saved);

	PG_RETURN_DATUM(sequence_id);
}
