/*-------------------------------------------------------------------------
 *
 * inbound.c
 *	  journey.ingest_inbound_sms: what a provider's inbound-SMS webhook
 *	  (Twilio's To, From, Body, MessageSid) delivers, and the keyword rules
 *	  of SPEC section 9: STOP and its synonyms suppress the number, START
 *	  lifts that, HELP answers with the business's contact, anything else
 *	  becomes an sms_received event a journey can exit or branch on.
 *
 * The businesses concerned are found by the number written to: those
 * whose own enabled SMS provider sends from it, or, for the default
 * provider's number, every business without one of its own.  Numbers
 * compare by "+" and digits only (journey.normalize_phone), so
 * "+1 (555) 010-0100" is the customer stored as "+15550100100".
 *
 * One call is one transaction's worth of writes: the suppression, the
 * cancelled messages, the events (and the exits their triggers cause) and
 * the record of the provider's message id land together or not at all.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "journey.h"
#include "optout.h"

/* Longest body accepted: ten times a concatenated SMS (1,600 characters). */
#define INBOUND_MAX_BODY	65536
#define PHONE_MAX_DIGITS	20

PG_FUNCTION_INFO_V1(journey_normalize_phone);
PG_FUNCTION_INFO_V1(journey_ingest_inbound_sms);

typedef enum Keyword
{
	KW_NONE,
	KW_STOP,
	KW_START,
	KW_HELP
} Keyword;

/* As journey.inbound_sms.keyword records them. */
static const char *const keyword_names[] = {NULL, "stop", "start", "help"};

static char *
normalize(const char *s)
{
	StringInfoData b;

	initStringInfo(&b);
	for (; *s; s++)
		if (*s == '+' || (*s >= '0' && *s <= '9'))
			appendStringInfoChar(&b, *s);
	return b.data;
}

Datum
journey_normalize_phone(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(normalize(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}

/*
 * A number as providers write it: digits, a leading "+", and the spaces,
 * dashes, dots and parentheses people put between; 22023 for anything else.
 */
static char *
checked_number(text *value, const char *param)
{
	char	   *s;
	char	   *n;
	int			digits = 0;

	if (value == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be null", param),
				 errhint("Pass the provider's phone number field (Twilio: To and From).")));
	s = text_to_cstring(value);
	for (const char *p = s; *p; p++)
	{
		if (*p >= '0' && *p <= '9')
			digits++;
		else if (!(*p == '+' || *p == ' ' || *p == '-' || *p == '.' ||
				   *p == '(' || *p == ')'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s is not a phone number", param),
					 errdetail("Only digits, a leading \"+\", spaces, dashes, dots and parentheses may appear in it."),
					 errhint("Pass the number in E.164 form, e.g. +15550100100.")));
	}
	n = normalize(s);
	if (digits == 0 || digits > PHONE_MAX_DIGITS || strchr(n + 1, '+') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is not a phone number", param),
				 errdetail("A number has 1 to %d digits and at most one \"+\", in front.",
						   PHONE_MAX_DIGITS),
				 errhint("Pass the number in E.164 form, e.g. +15550100100.")));
	return n;
}

/* The body's first n words, upper-cased, punctuation dropped. */
static char *
word_at(const char **p)
{
	StringInfoData w;
	const unsigned char *s = (const unsigned char *) *p;

	initStringInfo(&w);
	while (*s && (isspace(*s) || (ispunct(*s) && *s != '-')))
		s++;
	for (; *s && !isspace(*s); s++)
		if (isalnum(*s) && *s < 0x80)
			appendStringInfoChar(&w, toupper(*s));
	*p = (const char *) s;
	return w.data;
}

static Keyword
keyword_of(const char *body)
{
	static const char *const stop[] = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END",
	"QUIT", "OPTOUT", "REVOKE", NULL};
	static const char *const start[] = {"START", "UNSTOP", "YES", NULL};
	const char *p = body;
	char	   *first = word_at(&p);

	for (int i = 0; stop[i]; i++)
		if (strcmp(first, stop[i]) == 0)
			return KW_STOP;
	for (int i = 0; start[i]; i++)
		if (strcmp(first, start[i]) == 0)
			return KW_START;
	if (strcmp(first, "HELP") == 0 || strcmp(first, "INFO") == 0)
		return KW_HELP;
	if (strcmp(first, "OPT") == 0 && strcmp(word_at(&p), "OUT") == 0)
		return KW_STOP;
	return KW_NONE;
}

/* The businesses written to, with the customers behind the sender's number. */
static const char *businesses_sql =
"WITH own AS ("
" SELECT p.business_id FROM journey.providers p"
"  WHERE p.enabled AND p.channel OPERATOR(pg_catalog.=) 'sms' AND p.business_id IS NOT NULL"
"    AND journey.normalize_phone(p.from_address) OPERATOR(pg_catalog.=) $1),"
" biz AS ("
" SELECT b.id, b.name, b.phone, b.email FROM journey.businesses b"
"  WHERE b.id IN (SELECT business_id FROM own)"
" UNION ALL"
" SELECT b.id, b.name, b.phone, b.email FROM journey.businesses b"
"  WHERE EXISTS (SELECT FROM journey.providers d"
"                 WHERE d.enabled AND d.channel OPERATOR(pg_catalog.=) 'sms' AND d.business_id IS NULL"
"                   AND journey.normalize_phone(d.from_address) OPERATOR(pg_catalog.=) $1)"
"    AND NOT EXISTS (SELECT FROM journey.providers p"
"                     WHERE p.enabled AND p.channel OPERATOR(pg_catalog.=) 'sms'"
"                       AND p.business_id OPERATOR(pg_catalog.=) b.id))"
" SELECT biz.id, biz.name, COALESCE(biz.phone, biz.email), cu.phones"
"   FROM biz LEFT JOIN LATERAL ("
"     SELECT pg_catalog.array_agg(DISTINCT c.phone) AS phones FROM journey.customers c"
"      WHERE journey.normalize_phone(c.phone) OPERATOR(pg_catalog.=) $2"
"        AND c.phone IS NOT NULL AND c.business_id OPERATOR(pg_catalog.=) biz.id) cu ON true"
"  ORDER BY biz.name, biz.id";

static const char *events_sql =
"INSERT INTO journey.events (business_id, event_type, customer_id, payload, occurred_at)"
" SELECT c.business_id, $1, c.id, $2, $3 FROM journey.customers c"
"  WHERE journey.normalize_phone(c.phone) OPERATOR(pg_catalog.=) $4 AND c.phone IS NOT NULL"
"    AND c.business_id OPERATOR(pg_catalog.=) ANY ($5)";

static const char *start_sql =
"DELETE FROM journey.suppressions s"
" WHERE s.business_id OPERATOR(pg_catalog.=) ANY ($1) AND s.channel OPERATOR(pg_catalog.=) 'sms'"
"   AND s.reason OPERATOR(pg_catalog.=) 'sms_stop'"
"   AND journey.normalize_phone(s.address) OPERATOR(pg_catalog.=) $2";

static const char *claim_sql =
"INSERT INTO journey.inbound_sms (provider_message_id, to_number, from_number, received_at, keyword)"
" VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider_message_id) DO NOTHING RETURNING 1";

static const char *replay_sql =
"SELECT reply FROM journey.inbound_sms WHERE provider_message_id OPERATOR(pg_catalog.=) $1";

static const char *answer_sql =
"UPDATE journey.inbound_sms SET reply = $2"
" WHERE provider_message_id OPERATOR(pg_catalog.=) $1";

typedef struct Concerned
{
	int			n;
	Datum	   *ids;			/* uuid */
	char	  **names;
	char	  **contacts;		/* phone, else email, else NULL */
	Datum	   *phones;			/* text[] of its customers' numbers, or 0 */
	int			ncustomer_businesses;
} Concerned;

static void
load_concerned(const char *to, const char *from, Concerned *c)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(to), CStringGetTextDatum(from)};
	SPITupleTable *tt;

	if (journey_spi_kept(&plan, businesses_sql, 2, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not find the businesses of an inbound sms");
	tt = SPI_tuptable;
	c->n = SPI_processed;
	c->ids = palloc(sizeof(Datum) * Max(c->n, 1));
	c->names = palloc(sizeof(char *) * Max(c->n, 1));
	c->contacts = palloc(sizeof(char *) * Max(c->n, 1));
	c->phones = palloc0(sizeof(Datum) * Max(c->n, 1));
	c->ncustomer_businesses = 0;
	for (int i = 0; i < c->n; i++)
	{
		bool		isnull;
		Datum		phones;

		c->ids[i] = SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull);
		c->names[i] = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
		c->contacts[i] = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);
		phones = SPI_getbinval(tt->vals[i], tt->tupdesc, 4, &isnull);
		if (!isnull)
		{
			c->phones[i] = phones;
			c->ncustomer_businesses++;
		}
	}
}

/* "A", "A and B", "A, B and C": the businesses the text speaks for. */
static void
append_names(StringInfo out, Concerned *c)
{
	bool		only_customers = c->ncustomer_businesses > 0;
	int			total = only_customers ? c->ncustomer_businesses : c->n;
	int			done = 0;

	for (int i = 0; i < c->n; i++)
	{
		if (only_customers && c->phones[i] == (Datum) 0)
			continue;
		if (done > 0)
			appendStringInfoString(out, done == total - 1 ? " and " : ", ");
		appendStringInfoString(out, c->names[i]);
		done++;
	}
}

static void
record_events(const char *type, Concerned *c, const char *to, const char *from,
			  const char *body, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[5] = {TEXTOID, JSONBOID, TIMESTAMPTZOID, TEXTOID, UUIDARRAYOID};
	Datum		values[5];
	StringInfoData payload;

	if (c->ncustomer_businesses == 0)
		return;
	initStringInfo(&payload);
	appendStringInfoString(&payload, "{\"body\": ");
	escape_json(&payload, body);
	appendStringInfoString(&payload, ", \"from\": ");
	escape_json(&payload, from);
	appendStringInfoString(&payload, ", \"to\": ");
	escape_json(&payload, to);
	appendStringInfoChar(&payload, '}');
	values[0] = CStringGetTextDatum(type);
	values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(payload.data));
	values[2] = TimestampTzGetDatum(at);
	values[3] = CStringGetTextDatum(from);
	values[4] = PointerGetDatum(construct_array(c->ids, c->n, UUIDOID, UUID_LEN, false,
												TYPALIGN_CHAR));
	if (journey_spi_kept(&plan, events_sql, 5, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the events of an inbound sms");
}

/* The customers' numbers as stored, and the sender's as normalised. */
static Datum
numbers_with(Datum phones, const char *from)
{
	Datum	   *elems = NULL;
	bool	   *nulls = NULL;
	int			n = 0;
	Datum	   *all;

	if (phones != (Datum) 0)
		deconstruct_array(DatumGetArrayTypeP(phones), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &n);
	all = palloc(sizeof(Datum) * (n + 1));
	for (int i = 0; i < n; i++)
		all[i] = elems[i];
	all[n] = CStringGetTextDatum(from);
	return PointerGetDatum(construct_array(all, n + 1, TEXTOID, -1, false, TYPALIGN_INT));
}

static char *
on_stop(Concerned *c, const char *from)
{
	StringInfoData reply;

	for (int i = 0; i < c->n; i++)
	{
		(void) journey_suppress(c->ids[i], "sms", numbers_with(c->phones[i], from),
								"sms_stop");
	}
	initStringInfo(&reply);
	appendStringInfoString(&reply, "You are unsubscribed from ");
	append_names(&reply, c);
	appendStringInfoString(&reply, " and will receive no more text messages. Reply START to resubscribe.");
	return reply.data;
}

static char *
on_start(Concerned *c, const char *from)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {UUIDARRAYOID, TEXTOID};
	Datum		values[2];
	StringInfoData reply;

	values[0] = PointerGetDatum(construct_array(c->ids, c->n, UUIDOID, UUID_LEN, false,
												TYPALIGN_CHAR));
	values[1] = CStringGetTextDatum(from);
	if (journey_spi_kept(&plan, start_sql, 2, types, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not lift sms_stop suppressions");
	initStringInfo(&reply);
	appendStringInfoString(&reply, "You are resubscribed to ");
	append_names(&reply, c);
	appendStringInfoString(&reply, ". Reply STOP to unsubscribe.");
	return reply.data;
}

static char *
on_help(Concerned *c)
{
	StringInfoData reply;
	bool		only_customers = c->ncustomer_businesses > 0;
	int			done = 0;

	initStringInfo(&reply);
	for (int i = 0; i < c->n; i++)
	{
		if (only_customers && c->phones[i] == (Datum) 0)
			continue;
		if (done++ > 0)
			appendStringInfoString(&reply, " ");
		appendStringInfoString(&reply, c->names[i]);
		if (c->contacts[i])
			appendStringInfo(&reply, ": for help, contact %s.", c->contacts[i]);
		else
			appendStringInfoChar(&reply, '.');
	}
	appendStringInfoString(&reply, " Reply STOP to unsubscribe.");
	return reply.data;
}

Datum
journey_ingest_inbound_sms(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr claim_plan = NULL;
	static SPIPlanPtr replay_plan = NULL;
	static SPIPlanPtr answer_plan = NULL;
	char	   *to = checked_number(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), "p_to");
	char	   *from = checked_number(PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1), "p_from");
	text	   *body_text = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	char	   *pmid = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	TimestampTz received_at;
	char	   *body;
	Keyword		kw;
	Concerned	c;
	char	   *reply = NULL;
	MemoryContext caller = CurrentMemoryContext;

	if (PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_received_at must not be null"),
				 errhint("Leave it out to use now().")));
	received_at = PG_GETARG_TIMESTAMPTZ(4);
	if (body_text != NULL && VARSIZE_ANY_EXHDR(body_text) > INBOUND_MAX_BODY)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("inbound sms body is too long"),
				 errdetail("It has %d bytes; the limit is %d.",
						   (int) VARSIZE_ANY_EXHDR(body_text), INBOUND_MAX_BODY),
				 errhint("Pass the Body field of one inbound message.")));
	body = body_text ? text_to_cstring(body_text) : "";
	if (pmid != NULL && (pmid[0] == '\0' || strlen(pmid) > 256))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_provider_message_id must be 1 to 256 characters"),
				 errhint("Pass the provider's message id (Twilio: MessageSid), or null.")));
	kw = keyword_of(body);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (pmid != NULL)
	{
		Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID};
		Datum		values[5] = {CStringGetTextDatum(pmid), CStringGetTextDatum(to),
			CStringGetTextDatum(from), TimestampTzGetDatum(received_at),
		kw == KW_NONE ? (Datum) 0 : CStringGetTextDatum(keyword_names[kw])};
		char		nulls[5] = {' ', ' ', ' ', ' ', kw == KW_NONE ? 'n' : ' '};

		/* A racing repeat waits here for the first, then replays its answer. */
		if (journey_spi_kept(&claim_plan, claim_sql, 5, types, values, nulls, false, 0)
			!= SPI_OK_INSERT_RETURNING)
			elog(ERROR, "could not record an inbound sms");
		if (SPI_processed == 0)
		{
			/* Not read-only: a fresh snapshot sees the racing first's commit. */
			if (journey_spi_kept(&replay_plan, replay_sql, 1, types, values, NULL, false, 1)
				!= SPI_OK_SELECT)
				elog(ERROR, "could not read an inbound sms");
			if (SPI_processed == 1)
				reply = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			goto done;
		}
	}

	load_concerned(to, from, &c);
	if (c.n > 0)
	{
		switch (kw)
		{
			case KW_STOP:
				reply = on_stop(&c, from);
				record_events("sms_opt_out", &c, to, from, body, received_at);
				break;
			case KW_START:
				reply = on_start(&c, from);
				record_events("sms_opt_in", &c, to, from, body, received_at);
				break;
			case KW_HELP:
				reply = on_help(&c);
				break;
			case KW_NONE:
				record_events("sms_received", &c, to, from, body, received_at);
				break;
		}
	}

	/* A reply is kept for repeats; no reply is what the row already says. */
	if (pmid != NULL && reply != NULL)
	{
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2] = {CStringGetTextDatum(pmid), CStringGetTextDatum(reply)};

		if (journey_spi_kept(&answer_plan, answer_sql, 2, types, values, NULL, false, 0)
			!= SPI_OK_UPDATE)
			elog(ERROR, "could not record an inbound sms's answer");
	}

done:
	if (reply != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(caller);

		reply = pstrdup(reply);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	if (reply == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(reply));
}
