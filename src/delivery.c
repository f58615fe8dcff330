/*-------------------------------------------------------------------------
 *
 * delivery.c
 *	  Delivery feedback (SPEC section 9): journey.ingest_delivery_event for
 *	  Twilio status callbacks, Resend webhooks and the generic webhook
 *	  shape, and the reading of Twilio's send errors that mean the number
 *	  must never be texted again (21610, 21211, 21614).
 *
 * A callback sets its message's delivery_status and delivery_updated_at,
 * adds the state to journey.message_deliveries once (the timeline's
 * "delivery ..." rows), and for a bounce, a complaint or a number that
 * cannot receive texts suppresses the address (suppress.c).  Suppressions
 * are only ever added: a repeat, or a late "delivered" after a bounce,
 * may move delivery_status but never lifts one.  A callback older than the
 * message's last one (by p_received_at) changes no status.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "journey.h"
#include "optout.h"

#define DETAIL_MAX	500

PG_FUNCTION_INFO_V1(journey_ingest_delivery_event);

/* ----------------------------------------- Twilio's answer to a send */

/* The reason to suppress for an error code of Twilio's, or NULL. */
static const char *
twilio_code_reason(const char *code, bool delivery)
{
	if (code == NULL)
		return NULL;
	if (strcmp(code, "21610") == 0)
		return "sms_stop";
	if (!delivery && (strcmp(code, "21211") == 0 || strcmp(code, "21614") == 0))
		return "invalid_address";
	if (delivery && (strcmp(code, "30003") == 0 || strcmp(code, "30005") == 0 ||
					 strcmp(code, "30006") == 0))
		return "undeliverable";
	return NULL;
}

/* The suppression a Twilio send error code (21610, ...) calls for, or NULL. */
const char *
journey_twilio_error_suppression(const char *code)
{
	return twilio_code_reason(code, false);
}

/* ------------------------------------------------ delivery callbacks */

/* What one callback says, in journey's terms. */
typedef struct DeliveryEvent
{
	const char *channel;		/* for matching by provider id; NULL: by id */
	char	   *provider_id;
	int64		message_id;
	bool		has_business;
	pg_uuid_t	business_id;
	const char *status;			/* delivery_status to set, or NULL */
	const char *suppress;		/* suppression reason, or NULL */
	char	   *detail;
} DeliveryEvent;

static void
bad_payload(const char *kind, const char *what, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s delivery event %s", kind, what),
			 errhint("%s", hint)));
}

/* A text field of an object (strings and numbers), or NULL. */
static char *
field_text(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (obj == NULL || !journey_container_get(obj, key, &v))
		return NULL;
	if (v.type == jbvString)
		return pnstrdup(v.val.string.val, v.val.string.len);
	if (v.type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
	return NULL;
}

static JsonbContainer *
field_object(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (obj == NULL || !journey_container_get(obj, key, &v) || v.type != jbvBinary ||
		!JsonContainerIsObject(v.val.binary.data))
		return NULL;
	return v.val.binary.data;
}

/* Printable, bounded: what a provider says goes into the timeline. */
static char *
clean_detail(const char *s)
{
	StringInfoData b;
	int			len;

	if (s == NULL || s[0] == '\0')
		return NULL;
	len = pg_mbcliplen(s, strlen(s), DETAIL_MAX);
	initStringInfo(&b);
	for (int i = 0; i < len; i++)
		appendStringInfoChar(&b, ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) ? ' ' : s[i]);
	return b.data;
}

static void
parse_twilio(JsonbContainer *p, DeliveryEvent *ev)
{
	char	   *status = field_text(p, "MessageStatus");
	char	   *code = field_text(p, "ErrorCode");

	ev->channel = "sms";
	ev->provider_id = field_text(p, "MessageSid");
	if (ev->provider_id == NULL || ev->provider_id[0] == '\0')
		bad_payload("twilio", "has no MessageSid",
					"Pass the status callback's parameters as a JSON object: {\"MessageSid\": ..., \"MessageStatus\": ..., \"ErrorCode\": ...}.");
	if (status == NULL)
		bad_payload("twilio", "has no MessageStatus",
					"Pass the status callback's parameters as a JSON object: {\"MessageSid\": ..., \"MessageStatus\": ..., \"ErrorCode\": ...}.");
	if (code != NULL && (code[0] == '\0' || strcmp(code, "0") == 0))
		code = NULL;
	if (strcmp(status, "delivered") == 0)
		ev->status = "delivered";
	else if (strcmp(status, "undelivered") == 0 || strcmp(status, "failed") == 0)
	{
		ev->status = "undelivered";
		ev->suppress = twilio_code_reason(code, true);
	}
	/* queued, sending, sent, accepted, read: no delivery state yet */
	if (code && strcmp(code, "21610") == 0)
		ev->suppress = "sms_stop";
	ev->detail = code ? psprintf("%s, error %s", status, code) : NULL;
}

static void
parse_resend(JsonbContainer *p, DeliveryEvent *ev)
{
	char	   *type = field_text(p, "type");
	JsonbContainer *data = field_object(p, "data");
	JsonbContainer *bounce = field_object(data, "bounce");

	ev->channel = "email";
	ev->provider_id = field_text(data, "email_id");
	if (type == NULL)
		bad_payload("resend", "has no type",
					"Pass the webhook's JSON body as it came: {\"type\": \"email.delivered\", \"data\": {\"email_id\": ...}}.");
	if (ev->provider_id == NULL || ev->provider_id[0] == '\0')
		bad_payload("resend", "has no data.email_id",
					"Pass the webhook's JSON body as it came: {\"type\": \"email.delivered\", \"data\": {\"email_id\": ...}}.");
	if (strcmp(type, "email.delivered") == 0)
		ev->status = "delivered";
	else if (strcmp(type, "email.bounced") == 0)
	{
		ev->status = "bounced";
		ev->suppress = "bounced";
		ev->detail = clean_detail(field_text(bounce, "message"));
	}
	else if (strcmp(type, "email.complained") == 0)
	{
		ev->status = "complained";
		ev->suppress = "complained";
	}
	/* email.sent, email.delivery_delayed, opens, clicks: no state change */
}

static void
parse_webhook(JsonbContainer *p, DeliveryEvent *ev)
{
	char	   *id = field_text(p, "id");
	char	   *status = field_text(p, "status");
	char	   *business = field_text(p, "business_id");
	char	   *end;

	ev->channel = NULL;
	if (id == NULL)
		bad_payload("webhook", "has no id",
					"Pass {\"id\": <journey message id>, \"status\": \"delivered\"|\"undelivered\"|\"bounced\"|\"complained\", \"reason\": ...}.");
	errno = 0;
	ev->message_id = strtoll(id, &end, 10);
	if (errno != 0 || *end != '\0' || end == id || ev->message_id <= 0)
		bad_payload("webhook", "has an id that is not a message id",
					"The id is the journey message id the sender posted, a positive integer.");
	if (status == NULL ||
		!(strcmp(status, "delivered") == 0 || strcmp(status, "undelivered") == 0 ||
		  strcmp(status, "bounced") == 0 || strcmp(status, "complained") == 0))
		bad_payload("webhook", "has no valid status",
					"status is one of delivered, undelivered, bounced, complained.");
	ev->status = status;
	if (strcmp(status, "bounced") == 0 || strcmp(status, "complained") == 0)
		ev->suppress = status;
	ev->detail = clean_detail(field_text(p, "reason"));
	if (business != NULL)
	{
		ev->has_business = true;
		memcpy(&ev->business_id,
			   DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(business))),
			   sizeof(pg_uuid_t));
	}
}

static const char *match_by_provider_sql =
"SELECT id, business_id FROM journey.messages"
" WHERE provider_message_id OPERATOR(pg_catalog.=) $1 AND channel OPERATOR(pg_catalog.=) $2"
" ORDER BY id LIMIT 1 FOR NO KEY UPDATE";

static const char *match_by_id_sql =
"SELECT id, business_id FROM journey.messages"
" WHERE id OPERATOR(pg_catalog.=) $1"
"   AND ($2::uuid IS NULL OR business_id OPERATOR(pg_catalog.=) $2) FOR NO KEY UPDATE";

/*
 * A callback for a message whose send result is not written yet (the
 * provider answered, the callback overtook the sender's write): kept until
 * the sender writes the provider's id (journey_apply_early_deliveries).
 */
static const char *pending_sql =
"INSERT INTO journey.delivery_pending (channel, provider_message_id, provider_kind, status,"
"                                      suppress, detail, received_at)"
" VALUES ($1, $2, $3, $4, $5, $6, $7)";

static const char *take_pending_sql =
"DELETE FROM journey.delivery_pending d USING journey.messages m"
" WHERE m.id OPERATOR(pg_catalog.=) ANY ($1) AND m.provider_message_id IS NOT NULL"
"   AND d.provider_message_id OPERATOR(pg_catalog.=) m.provider_message_id"
"   AND d.channel OPERATOR(pg_catalog.=) m.channel"
" RETURNING m.id, m.business_id, d.provider_kind, d.status, d.suppress, d.detail, d.received_at";

static const char *record_sql =
"WITH h AS ("
" INSERT INTO journey.message_deliveries (business_id, message_id, status, provider_kind, detail, received_at)"
" VALUES ($2, $1, $3, $4, $5, $6)"
" ON CONFLICT (message_id, status) DO NOTHING RETURNING 1)"
" UPDATE journey.messages SET delivery_status = $3, delivery_updated_at = $6"
"  WHERE id OPERATOR(pg_catalog.=) $1"
"    AND (delivery_updated_at IS NULL OR delivery_updated_at OPERATOR(pg_catalog.<=) $6)";

/* Records one delivery state of a message, and the suppression it calls for. */
static void
record_delivery(int64 message_id, Datum business_id, const char *kind, const char *status,
				const char *suppress, const char *detail, TimestampTz received_at)
{
	static SPIPlanPtr record_plan = NULL;

	if (status != NULL)
	{
		Oid			types[6] = {INT8OID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
		Datum		values[6];
		char		nulls[6] = {' ', ' ', ' ', ' ', detail ? ' ' : 'n', ' '};

		values[0] = Int64GetDatum(message_id);
		values[1] = business_id;
		values[2] = CStringGetTextDatum(status);
		values[3] = CStringGetTextDatum(kind);
		values[4] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
		values[5] = TimestampTzGetDatum(received_at);
		if (journey_spi_kept(&record_plan, record_sql, 6, types, values, nulls, false, 0)
			!= SPI_OK_UPDATE)
			elog(ERROR, "could not record a delivery event");
	}
	if (suppress != NULL)
		journey_suppress_message_address(message_id, suppress);
}

void
journey_apply_early_deliveries(Datum message_ids)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1] = {message_ids};
	JourneyUserSwitch saved;
	SPITupleTable *tt;
	uint64		n;

	/* The sender's role need not see these tables: act as their owner. */
	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (journey_spi_kept(&plan, take_pending_sql, 1, types, values, NULL, false, 0)
		!= SPI_OK_DELETE_RETURNING)
		elog(ERROR, "could not read early delivery events");
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = tt->vals[i];
		bool		isnull;

		record_delivery(DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, 1, &isnull)),
						SPI_getbinval(tup, tt->tupdesc, 2, &isnull),
						SPI_getvalue(tup, tt->tupdesc, 3),
						SPI_getvalue(tup, tt->tupdesc, 4),
						SPI_getvalue(tup, tt->tupdesc, 5),
						SPI_getvalue(tup, tt->tupdesc, 6),
						DatumGetTimestampTz(SPI_getbinval(tup, tt->tupdesc, 7, &isnull)));
	}
	SPI_finish();
	journey_restore_user(&saved);
}

Datum
journey_ingest_delivery_event(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr by_provider_plan = NULL;
	static SPIPlanPtr by_id_plan = NULL;
	static SPIPlanPtr pending_plan = NULL;
	char	   *kind;
	Jsonb	   *payload;
	TimestampTz received_at;
	DeliveryEvent ev;
	int64		message_id;
	Datum		business_id;
	bool		isnull;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("provider kind, payload and received time must not be null"),
				 errhint("Call journey.ingest_delivery_event('twilio'|'resend'|'webhook', payload).")));
	kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	payload = PG_GETARG_JSONB_P(1);
	received_at = PG_GETARG_TIMESTAMPTZ(2);
	memset(&ev, 0, sizeof(ev));
	if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("delivery event payload must be a JSON object"),
				 errhint("Pass the provider's callback as one JSON object.")));
	if (strcmp(kind, "twilio") == 0)
		parse_twilio(&payload->root, &ev);
	else if (strcmp(kind, "resend") == 0)
		parse_resend(&payload->root, &ev);
	else if (strcmp(kind, "webhook") == 0)
		parse_webhook(&payload->root, &ev);
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown provider kind for a delivery event"),
				 errhint("The kinds are twilio, resend and webhook.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (ev.channel != NULL)
	{
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2] = {CStringGetTextDatum(ev.provider_id),
		CStringGetTextDatum(ev.channel)};

		if (journey_spi_kept(&by_provider_plan, match_by_provider_sql, 2, types, values,
							 NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "delivery event look-up failed");
	}
	else
	{
		Oid			types[2] = {INT8OID, UUIDOID};
		Datum		values[2] = {Int64GetDatum(ev.message_id), UUIDPGetDatum(&ev.business_id)};
		char		nulls[2] = {' ', ev.has_business ? ' ' : 'n'};

		if (journey_spi_kept(&by_id_plan, match_by_id_sql, 2, types, values, nulls,
							 false, 1) != SPI_OK_SELECT)
			elog(ERROR, "delivery event look-up failed");
	}
	if (SPI_processed == 0)
	{
		/*
		 * Not ours, or another business's; by provider id, perhaps also a
		 * callback that overtook the sender's write of that id: kept for it.
		 */
		if (ev.channel != NULL && (ev.status != NULL || ev.suppress != NULL))
		{
			Oid			types[7] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
			TIMESTAMPTZOID};
			Datum		values[7];
			char		nulls[7] = {' ', ' ', ' ', ev.status ? ' ' : 'n',
			ev.suppress ? ' ' : 'n', ev.detail ? ' ' : 'n', ' '};

			values[0] = CStringGetTextDatum(ev.channel);
			values[1] = CStringGetTextDatum(ev.provider_id);
			values[2] = CStringGetTextDatum(kind);
			values[3] = ev.status ? CStringGetTextDatum(ev.status) : (Datum) 0;
			values[4] = ev.suppress ? CStringGetTextDatum(ev.suppress) : (Datum) 0;
			values[5] = ev.detail ? CStringGetTextDatum(ev.detail) : (Datum) 0;
			values[6] = TimestampTzGetDatum(received_at);
			if (journey_spi_kept(&pending_plan, pending_sql, 7, types, values, nulls,
								 false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not keep an early delivery event");
		}
		SPI_finish();
		PG_RETURN_NULL();
	}
	message_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											 1, &isnull));
	business_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

	record_delivery(message_id, business_id, kind, ev.status, ev.suppress, ev.detail,
					received_at);
	SPI_finish();
	PG_RETURN_INT64(message_id);
}
