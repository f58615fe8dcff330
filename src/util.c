/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Small helpers shared by the journey modules: jsonb access, time zone
 *	  validation, timestamp arithmetic, and the updated_at trigger.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "common/int.h"
#include "executor/spi.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "pgtime.h"
#include "catalog/pg_type.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "access/relation.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_check_timezone);
PG_FUNCTION_INFO_V1(journey_touch_updated_at);
PG_FUNCTION_INFO_V1(journey_exit_event_types_are_valid);

static Oid	cached_schema_oid = InvalidOid;

Oid
journey_schema_oid(void)
{
	/* Re-check: the extension may have been dropped and created again. */
	if (!OidIsValid(cached_schema_oid) ||
		get_namespace_name(cached_schema_oid) == NULL)
		cached_schema_oid = get_namespace_oid("journey", false);
	return cached_schema_oid;
}

/*
 * Whether the installed schema has 0.3's versions (and with them the step
 * counters): false while a newer library runs on an older schema, between
 * the library's upgrade and ALTER EXTENSION UPDATE.  A catalog cache look-up.
 */
bool
journey_schema_has_versions(void)
{
	Oid			rel = get_relname_relid("sequence_enrollments", journey_schema_oid());

	return OidIsValid(rel) && get_attnum(rel, "sequence_version") != InvalidAttrNumber;
}

bool
journey_container_get(JsonbContainer *container, const char *key, JsonbValue *result)
{
	JsonbValue	k;
	JsonbValue *found;

	if (container == NULL || !JsonContainerIsObject(container))
		return false;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	found = findJsonbValueFromContainer(container, JB_FOBJECT, &k);
	if (found == NULL)
		return false;
	*result = *found;
	pfree(found);
	return true;
}

JsonbValue *
journey_jsonb_get(Jsonb *obj, const char *key)
{
	JsonbValue	value;

	if (obj == NULL || !journey_container_get(&obj->root, key, &value))
		return NULL;
	return memcpy(palloc(sizeof(JsonbValue)), &value, sizeof(JsonbValue));
}

void
journey_append_value_text(StringInfo out, JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			appendStringInfoString(out, "null");
			break;
		case jbvString:
			appendBinaryStringInfo(out, v->val.string.val, v->val.string.len);
			break;
		case jbvNumeric:
			appendStringInfoString(out,
								   DatumGetCString(DirectFunctionCall1(numeric_out,
																	   NumericGetDatum(v->val.numeric))));
			break;
		case jbvBool:
			appendStringInfoString(out, v->val.boolean ? "true" : "false");
			break;
		default:
			(void) JsonbToCString(out, v->val.binary.data, v->val.binary.len);
			break;
	}
}

char *
journey_jsonb_get_text(Jsonb *obj, const char *key)
{
	JsonbValue *v = journey_jsonb_get(obj, key);
	StringInfoData text;

	if (v == NULL || v->type == jbvNull)
		return NULL;
	initStringInfo(&text);
	journey_append_value_text(&text, v);
	return text.data;
}

double
journey_numeric_to_double(Numeric n)
{
	char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n)));

	/* strtod saturates where float8in would raise 22003. */
	return strtod(text, NULL);
}

void
journey_error_raise(const JourneyError *err)
{
	ereport(ERROR,
			(errcode(err->sqlstate),
			 errmsg_internal("%s", err->message),
			 err->hint ? errhint("%s", err->hint) : 0));
}

bool
journey_timezone_is_valid(const char *name)
{
	/*
	 * The same test SET timezone applies, less the numeric offsets ("+05",
	 * "-3"): a recipient's zone must follow daylight saving rules, which a
	 * bare offset silently ignores.
	 */
	pg_tz	   *tz;
	const char *canonical;
	char		path[MAXPGPATH];
	struct stat st;

	if (name == NULL || name[0] == '\0' || strlen(name) >= TZ_STRLEN_MAX)
		return false;
	if (strchr("+-0123456789", name[0]) != NULL)
		return false;
	if ((tz = pg_tzset(name)) == NULL)
		return false;

	/*
	 * pg_tzset also takes POSIX TZ strings ("ABC-167"), which follow no
	 * daylight saving rules of any place: an IANA zone is a file of the tz
	 * database (under the name pg_tzset found, in its canonical case).
	 * "posixrules" and "localtime" are files there but no zones, and the
	 * "posix/" and "right/" trees duplicate the zones under other names.
	 */
	canonical = pg_get_timezone_name(tz);
	if (canonical == NULL || strstr(canonical, "..") != NULL ||
		pg_strcasecmp(canonical, "posixrules") == 0 ||
		pg_strcasecmp(canonical, "localtime") == 0 ||
		pg_strncasecmp(canonical, "posix/", 6) == 0 ||
		pg_strncasecmp(canonical, "right/", 6) == 0)
		return false;
	if (pg_strcasecmp(canonical, "UTC") == 0 || pg_strcasecmp(canonical, "GMT") == 0)
		return true;			/* built in, even without a tz database */
	snprintf(path, sizeof(path), "%s/%s", JOURNEY_TZDIR, canonical);
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

Datum
journey_check_timezone(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (!journey_timezone_is_valid(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown time zone \"%s\"", name),
				 errhint("Use an IANA time zone name such as 'America/New_York' or 'UTC'; "
						 "SELECT name FROM pg_timezone_names lists them.")));
	PG_RETURN_BOOL(true);
}

TimestampTz
journey_timestamp_add_ms(TimestampTz ts, int64 ms)
{
	TimestampTz result;

	if (TIMESTAMP_NOT_FINITE(ts) ||
		pg_mul_s64_overflow(ms, INT64CONST(1000), &result) ||
		pg_add_s64_overflow(ts, result, &result) ||
		!IS_VALID_TIMESTAMP(result))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range"),
				 errdetail("Adding %lld ms to the run time leaves the range of timestamptz.",
						   (long long) ms),
				 errhint("Use a smaller wait_ms.")));
	return result;
}

/*
 * As a function's SET clause does: an error before the unpin is undone by
 * (sub)transaction abort.
 */
int
journey_pin_search_path(void)
{
	int			nestlevel = NewGUCNestLevel();

	(void) set_config_option("search_path", JOURNEY_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

void
journey_unpin_search_path(int nestlevel)
{
	AtEOXact_GUC(true, nestlevel);
}

/*
 * BEFORE UPDATE row trigger keeping updated_at current.  A statement that
 * sets updated_at itself (the executor, in bulk) is left alone.
 */
Datum
journey_touch_updated_at(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	int			attnum;
	bool		isnull_old;
	bool		isnull_new;
	Datum		old_value;
	Datum		new_value;
	Datum		now_value;
	bool		now_null = false;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		elog(ERROR, "journey_touch_updated_at must be a BEFORE UPDATE row trigger");

	tupdesc = RelationGetDescr(trigdata->tg_relation);
	attnum = SPI_fnumber(tupdesc, "updated_at");
	if (attnum <= 0)
		elog(ERROR, "table \"%s\" has no updated_at column",
			 RelationGetRelationName(trigdata->tg_relation));

	old_value = heap_getattr(trigdata->tg_trigtuple, attnum, tupdesc, &isnull_old);
	new_value = heap_getattr(trigdata->tg_newtuple, attnum, tupdesc, &isnull_new);
	if (!isnull_old && !isnull_new &&
		DatumGetTimestampTz(old_value) != DatumGetTimestampTz(new_value))
		return PointerGetDatum(trigdata->tg_newtuple);

	now_value = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	return PointerGetDatum(heap_modify_tuple_by_cols(trigdata->tg_newtuple, tupdesc,
													 1, &attnum, &now_value, &now_null));
}

/*
 * The plan of sql, prepared on first use and kept in *plan for the rest of
 * the backend's life (the plan cache re-plans it after DDL).  The SQL must
 * not vary between calls for the same *plan.
 */
SPIPlanPtr
journey_keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	return journey_keep_plan_opts(plan, sql, nargs, argtypes, 0);
}

/*
 * The same with the plan cache's options: CURSOR_OPT_GENERIC_PLAN plans
 * once for every value of the arguments, for a statement whose planning
 * costs more than running it and whose plan does not depend on them.
 */
SPIPlanPtr
journey_keep_plan_opts(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
					   int cursor_options)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "SPI_keepplan failed");
		*plan = p;
	}
	return *plan;
}

/*
 * A kept plan is costed for its tables as they were when it was planned,
 * and stays until an ANALYZE or DDL invalidates it.  A sender that planned
 * its claim on a new database's near-empty messages table kept locking
 * each claimed row through a sequential scan while a burst grew the table
 * to 100k rows, and its drain fell from 9,300 to 1,300 messages a second.
 * The planner scales its estimates to a table's current size, so planning
 * again once the busy tables have doubled is enough: a handful of resets
 * over a database's life.  At most one look a second, a few lseek calls;
 * called inside a transaction.  A table locked by DDL is skipped (the DDL
 * invalidates the plans itself).
 */
#define REPLAN_CHECK_MS 1000
#define REPLAN_MIN_GROWTH 128	/* blocks: 1 MB, no churn while tables are tiny */

void
journey_replan_if_grown(void)
{
	static const char *const tables[] = {"messages", "sequence_enrollments", "customers", "events"};
	static BlockNumber planned_blocks[lengthof(tables)];
	static bool have_sizes = false;
	static TimestampTz next_check = 0;
	TimestampTz now = GetCurrentTimestamp();
	BlockNumber blocks[lengthof(tables)];
	bool		grown = false;
	Oid			nsp;

	if (now < next_check)
		return;
	next_check = TimestampTzPlusMilliseconds(now, REPLAN_CHECK_MS);
	nsp = journey_schema_oid();
	for (int i = 0; i < lengthof(tables); i++)
	{
		Oid			relid = get_relname_relid(tables[i], nsp);
		Relation	rel;

		if (!OidIsValid(relid) || !ConditionalLockRelationOid(relid, AccessShareLock))
			return;
		rel = relation_open(relid, NoLock);
		blocks[i] = RelationGetNumberOfBlocks(rel);
		relation_close(rel, NoLock);
		grown |= have_sizes && blocks[i] > planned_blocks[i] * 2 + REPLAN_MIN_GROWTH;
	}
	if (grown)
		ResetPlanCache();
	/*
	 * Each table's size as the plans now in use saw it, about: a table
	 * that shrank was truncated or rewritten, which invalidated them.
	 */
	for (int i = 0; i < lengthof(tables); i++)
		if (grown || !have_sizes || blocks[i] < planned_blocks[i])
			planned_blocks[i] = blocks[i];
	have_sizes = true;
}

/*
 * SPI_execute_with_args, but parsed and planned once per backend: for the
 * statements of the API functions a webhook calls once per event, where
 * parsing and planning would otherwise cost more than running.
 */
int
journey_spi_kept(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
				 Datum *values, const char *nulls, bool read_only, long count)
{
	return SPI_execute_plan(journey_keep_plan(plan, sql, nargs, argtypes),
							values, nulls, read_only, count);
}

/*
 * The sequences CHECK on exit_event_types: every entry non-null, non-empty
 * and at most JOURNEY_EVENT_TYPE_MAX characters (the count is checked in
 * SQL).  Bounded input: a CHECK runs at every write.
 */
Datum
journey_exit_event_types_are_valid(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr)) > JOURNEY_EXIT_EVENT_TYPES_MAX)
		PG_RETURN_BOOL(false);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		text	   *t;

		if (nulls[i])
			PG_RETURN_BOOL(false);
		t = DatumGetTextPP(elems[i]);
		if (VARSIZE_ANY_EXHDR(t) == 0 ||
			pg_mbstrlen_with_len(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)) > JOURNEY_EVENT_TYPE_MAX)
			PG_RETURN_BOOL(false);
	}
	PG_RETURN_BOOL(true);
}

/* ---------- argument checks and SPI results of the API functions ---------- */

void
journey_require_arg(FunctionCallInfo fcinfo, int argno, const char *name, const char *hint)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name),
				 errhint("%s", hint)));
}

void
journey_require_finite(TimestampTz ts, const char *name)
{
	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a finite time", name),
				 errhint("Pass a real moment such as now() or '2026-01-15 09:00+00'.")));
}

void
journey_require_object(Jsonb *value, const char *name, const char *hint)
{
	if (!JB_ROOT_IS_OBJECT(value) || JB_ROOT_IS_SCALAR(value))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", name),
				 errhint("%s", hint)));
}

char *
journey_uuid_text(Datum id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, id));
}

Datum
journey_spi_get_copy(int row, int col, Oid type, bool *isnull, MemoryContext cxt)
{
	Datum		value = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
	MemoryContext old;
	int16		typlen;
	bool		typbyval;

	if (*isnull)
		return (Datum) 0;
	get_typlenbyval(type, &typlen, &typbyval);
	old = MemoryContextSwitchTo(cxt);
	value = datumCopy(value, typbyval, typlen);
	MemoryContextSwitchTo(old);
	return value;
}
