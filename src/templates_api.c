/*-------------------------------------------------------------------------
 *
 * templates_api.c
 *	  Reusable message templates (journey.templates): create_template, and
 *	  the trigger that validates every write of a template's texts the way
 *	  a send step's message is validated (template.c parses the tags and
 *	  checks their namespaces), so a member's direct UPDATE can never store
 *	  a text the executor could not render.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/rel.h"
#include "utils/uuid.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_create_template);
PG_FUNCTION_INFO_V1(journey_check_template_row);

static void
template_error(const char *field, const char *problem, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid template: field \"%s\" %s", field, problem),
			 errhint("%s", hint)));
}

static void
check_text(const char *source, const char *field)
{
	char	   *where = psprintf("template field \"%s\"", field);
	JourneyError err;
	JourneyTemplate *tmpl = journey_template_parse(source, where);

	if (!journey_template_paths_ok(tmpl, where, &err))
		journey_error_raise(&err);
}

/*
 * A template's texts as a step's message: an email needs a subject and a
 * body, an SMS a body and no subject; every tag parses and names a path
 * the executor provides.  Raises 22023.
 */
static void
check_template(const char *name, const char *channel, const char *subject, const char *body)
{
	bool		email;

	if (name != NULL && name[0] == '\0')
		template_error("name", "must not be empty", "Give the template a name unique in the business.");
	if (channel == NULL || (strcmp(channel, "email") != 0 && strcmp(channel, "sms") != 0))
		template_error("channel", psprintf("must be email or sms, not \"%s\"", channel ? channel : "null"),
					   "Pass 'email' or 'sms'.");
	email = strcmp(channel, "email") == 0;
	if (email && (subject == NULL || subject[0] == '\0'))
		template_error("subject", "is required for an email template",
					   "Give the subject line, e.g. 'Thanks, {{customer.first_name}}!'.");
	if (!email && subject != NULL)
		template_error("subject", "is not used by an sms template", "Pass null for the subject.");
	if (body == NULL || body[0] == '\0')
		template_error("body", "is required", "Give the message text.");
	if (email)
		check_text(subject, "subject");
	check_text(body, "body");
}

static char *
text_arg(FunctionCallInfo fcinfo, int n)
{
	return PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n));
}

Datum
journey_create_template(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		business_id;
	char	   *name = text_arg(fcinfo, 1);
	char	   *channel = text_arg(fcinfo, 2);
	char	   *subject = text_arg(fcinfo, 3);
	char	   *body = text_arg(fcinfo, 4);
	Oid			types[5] = {UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	JourneyUserSwitch saved;
	Datum		template_id;
	bool		isnull;
	MemoryContext caller_cxt = CurrentMemoryContext;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("business id must not be null"),
				 errhint("Pass the id returned by journey.create_business.")));
	if (name == NULL)
		template_error("name", "is required", "Give the template a name unique in the business.");
	business_id = PG_GETARG_DATUM(0);

	journey_require_member(business_id);
	check_template(name, channel, subject, body);

	journey_become_owner(&saved);
	journey_require_business_exists(business_id);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = business_id;
	values[1] = CStringGetTextDatum(name);
	values[2] = CStringGetTextDatum(channel);
	values[3] = subject ? CStringGetTextDatum(subject) : (Datum) 0;
	nulls[3] = subject ? ' ' : 'n';
	values[4] = CStringGetTextDatum(body);
	if (journey_spi_kept(&plan, "INSERT INTO journey.templates (business_id, name, channel, subject, body) "
						 "VALUES ($1, $2, $3, $4, $5) RETURNING id",
						 5, types, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "inserting the template failed");
	template_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	{
		MemoryContext spi_cxt = MemoryContextSwitchTo(caller_cxt);

		template_id = datumCopy(template_id, false, UUID_LEN);
		MemoryContextSwitchTo(spi_cxt);
	}
	SPI_finish();
	journey_restore_user(&saved);
	PG_RETURN_DATUM(template_id);
}

static char *
row_text(HeapTuple tup, TupleDesc desc, const char *column)
{
	int			attnum = SPI_fnumber(desc, column);

	if (attnum <= 0)
		elog(ERROR, "journey.templates has no column %s", column);
	return SPI_getvalue(tup, desc, attnum);
}

/* BEFORE INSERT OR UPDATE OF channel, subject, body ON journey.templates */
Datum
journey_check_template_row(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tup;
	TupleDesc	desc;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "journey_check_template_row must run as a BEFORE ... FOR EACH ROW trigger");
	tup = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	check_template(NULL, row_text(tup, desc, "channel"), row_text(tup, desc, "subject"),
				   row_text(tup, desc, "body"));
	return PointerGetDatum(tup);
}
