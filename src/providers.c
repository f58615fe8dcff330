/*-------------------------------------------------------------------------
 *
 * providers.c
 *	  Providers: building each provider kind's request from a message and
 *	  reading what the provider answered.
 *
 * Kinds: webhook (JSON POST), twilio (form POST, basic auth), resend (the
 * Resend email API, JSON POST with a bearer key) and smtp (an RFC 5322
 * message over smtp:// or smtps://).  Nothing here talks to the network or
 * raises errors: a message that cannot be turned into a request gets an
 * error string and is failed by the caller.  Credentials go into libcurl
 * options only, never into a string that could reach a log or last_error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "journey.h"
#include "sender.h"
#include "optout.h"

/* Longest piece of a provider's response quoted in last_error. */
#define RESPONSE_QUOTE_LEN 200
/* Most of last_error and provider_message_id kept (bytes). */
#define ERROR_TEXT_MAX 1000
#define PROVIDER_ID_MAX 200

static void
json_field_or_null(StringInfo buf, const char *key, const char *value, bool first)
{
	if (!first)
		appendStringInfoChar(buf, ',');
	escape_json(buf, key);
	appendStringInfoChar(buf, ':');
	if (value)
		escape_json(buf, value);
	else
		appendStringInfoString(buf, "null");
}

static struct curl_slist *
add_header(struct curl_slist *list, const char *fmt, const char *value)
{
	char	   *line = psprintf(fmt, value);
	struct curl_slist *l = curl_slist_append(list, line);

	pfree(line);
	if (l == NULL)
		elog(ERROR, "out of memory building request headers");
	return l;
}

/*
 * Headers every HTTP provider gets; the idempotency key joins the
 * installation's id to the message id.
 */
static void
common_headers(JourneyRequest *req, const char *content_type)
{
	req->headers = add_header(req->headers, "Content-Type: %s", content_type);
	req->headers = add_header(req->headers, "Idempotency-Key: %s", req->msg->idempotency_key);
	/* Never wait for 100-continue: every body here is small. */
	req->headers = add_header(req->headers, "Expect:%s", "");
}

static void
build_webhook(JourneyRequest *req)
{
	JourneyMessage *m = req->msg;
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfo(&b, "{\"id\":" INT64_FORMAT, m->id);
	json_field_or_null(&b, "channel", m->channel, false);
	json_field_or_null(&b, "to", m->to_address, false);
	json_field_or_null(&b, "from", m->from_address, false);
	json_field_or_null(&b, "subject", m->subject, false);
	json_field_or_null(&b, "body", m->body, false);
	json_field_or_null(&b, "purpose", m->purpose, false);
	json_field_or_null(&b, "business_id", m->business_id, false);
	json_field_or_null(&b, "customer_id", m->customer_id, false);
	json_field_or_null(&b, "enrollment_id", m->enrollment_id, false);
	json_field_or_null(&b, "sequence_id", m->sequence_id, false);
	appendStringInfo(&b, ",\"step_index\":%s,\"attempt\":%d}",
					 m->step_index ? m->step_index : "null", m->attempts);
	req->payload = b.data;
	req->payload_len = b.len;
	common_headers(req, "application/json");
	if (m->credentials && m->credentials[0])
		req->headers = add_header(req->headers, "Authorization: Bearer %s",
								  m->credentials);
	req->id_key = "id";
}

static void
append_form(StringInfo buf, const char *key, const char *value)
{
	char	   *esc = curl_easy_escape(NULL, value ? value : "", 0);

	if (esc == NULL)
		elog(ERROR, "out of memory encoding a form field");
	if (buf->len > 0)
		appendStringInfoChar(buf, '&');
	appendStringInfo(buf, "%s=%s", key, esc);
	curl_free(esc);
}

/* Splits "user:secret" into req->username and req->password. */
static bool
split_credentials(JourneyRequest *req, const char *creds)
{
	const char *colon = strchr(creds, ':');

	if (colon == NULL)
		return false;
	req->username = pnstrdup(creds, colon - creds);
	req->password = pstrdup(colon + 1);
	return true;
}

static const char *
build_twilio(JourneyRequest *req)
{
	JourneyMessage *m = req->msg;
	StringInfoData b;

	if (m->credentials == NULL || !split_credentials(req, m->credentials))
		return "twilio provider credentials must be \"<account_sid>:<auth_token>\"";
	if (m->from_address == NULL)
		return "twilio provider has no from_address";
	initStringInfo(&b);
	append_form(&b, "To", m->to_address);
	append_form(&b, "From", m->from_address);
	append_form(&b, "Body", m->body);
	req->payload = b.data;
	req->payload_len = b.len;
	common_headers(req, "application/x-www-form-urlencoded");
	req->id_key = "sid";
	return NULL;
}

/*
 * RFC 8058 one-click unsubscribe.  The URL comes from
 * journey.unsubscribe_link (a checked base and a base64url token), so it
 * holds no space, control character or angle bracket to escape.
 */
static void
append_smtp_unsubscribe(StringInfo b, JourneyMessage *m)
{
	if (m->unsubscribe_url == NULL)
		return;
	appendStringInfo(b, "List-Unsubscribe: <%s>\r\n", m->unsubscribe_url);
	appendStringInfoString(b, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
}

/* The same two headers in the Resend API's "headers" object. */
static void
append_resend_unsubscribe(StringInfo b, JourneyMessage *m)
{
	char	   *value;

	if (m->unsubscribe_url == NULL)
		return;
	value = psprintf("<%s>", m->unsubscribe_url);
	appendStringInfoString(b, ",\"headers\":{\"List-Unsubscribe\":");
	escape_json(b, value);
	appendStringInfoString(b, ",\"List-Unsubscribe-Post\":\"List-Unsubscribe=One-Click\"}");
}

static const char *
build_resend(JourneyRequest *req)
{
	JourneyMessage *m = req->msg;
	StringInfoData b;

	if (m->credentials == NULL || m->credentials[0] == '\0')
		return "resend provider has no credentials (the API key)";
	if (m->from_address == NULL)
		return "resend provider has no from_address";
	initStringInfo(&b);
	appendStringInfoString(&b, "{\"from\":");
	escape_json(&b, m->from_address);
	appendStringInfoString(&b, ",\"to\":[");
	escape_json(&b, m->to_address);
	appendStringInfoString(&b, "],\"subject\":");
	escape_json(&b, m->subject ? m->subject : "");
	appendStringInfoString(&b, ",\"text\":");
	escape_json(&b, m->body);
	append_resend_unsubscribe(&b, m);
	appendStringInfoChar(&b, '}');
	req->payload = b.data;
	req->payload_len = b.len;
	common_headers(req, "application/json");
	req->headers = add_header(req->headers, "Authorization: Bearer %s", m->credentials);
	req->id_key = "id";
	return NULL;
}

/* Longest address SMTP allows (RFC 5321's path limit less the brackets). */
#define SMTP_ADDRESS_MAX 254

static const char *
build_smtp(JourneyRequest *req)
{
	JourneyMessage *m = req->msg;
	StringInfoData b;
	char		date[64];
	time_t		now = time(NULL);
	struct tm	tm;
	char	   *from;
	char	   *to;
	char	   *domain;

	if (m->from_address == NULL)
		return "smtp provider has no from_address";
	if (m->credentials && m->credentials[0] &&
		!split_credentials(req, m->credentials))
		return "smtp provider credentials must be \"<user>:<password>\"";
	from = journey_addr_spec(m->from_address);
	to = journey_addr_spec(m->to_address);
	if (strlen(from) > SMTP_ADDRESS_MAX || strlen(to) > SMTP_ADDRESS_MAX)
		return "an smtp address is longer than 254 characters";
	if (strpbrk(from, "<> ") || strpbrk(to, "<> "))
		return "an smtp address holds a space or an angle bracket outside its <...>";
	req->is_smtp = true;
	req->mail_from = psprintf("<%s>", from);
	req->rcpt = curl_slist_append(NULL, psprintf("<%s>", to));
	if (req->rcpt == NULL)
		elog(ERROR, "out of memory building the recipient list");

	domain = strchr(from, '@');
	domain = (domain && domain[1]) ? domain + 1 : "journey.invalid";
	/* The message id is the idempotency key: a resend has the same one. */
	req->provider_message_id = psprintf("<journey-%s@%s>", m->idempotency_key, domain);

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);

	/* Every header folded (RFC 5322 lines, RFC 2047 encoded-words). */
	initStringInfo(&b);
	appendStringInfo(&b, "Date: %s\r\n", date);
	journey_append_address_header(&b, "From", m->from_address);
	journey_append_address_header(&b, "To", m->to_address);
	journey_append_header(&b, "Subject", m->subject);
	journey_append_header(&b, "Message-ID", req->provider_message_id);
	appendStringInfo(&b, "X-Journey-Message-Id: " INT64_FORMAT "\r\n", m->id);
	append_smtp_unsubscribe(&b, m);
	appendStringInfoString(&b, "MIME-Version: 1.0\r\n"
						   "Content-Type: text/plain; charset=UTF-8\r\n"
						   "Content-Transfer-Encoding: base64\r\n\r\n");
	/* Base64 keeps lines short and any UTF-8 intact. */
	journey_append_base64(&b, m->body, strlen(m->body), true);
	req->payload = b.data;
	req->payload_len = b.len;
	return NULL;
}

/*
 * What no kind may send: a control character in an address, the endpoint
 * or the credentials could add an SMTP command or an HTTP header.
 */
static const char *
refuse_control_chars(JourneyMessage *m)
{
	if (journey_has_control_char(m->to_address))
		return "to_address holds a control character; the message is not sent";
	if (journey_has_control_char(m->from_address))
		return "the provider's from_address holds a control character; fix the provider";
	if (journey_has_control_char(m->endpoint))
		return "the provider's endpoint holds a control character; fix the provider";
	if (journey_has_control_char(m->credentials))
		return "the provider's credentials hold a control character; fix the provider";
	return NULL;
}

JourneyRequest *
journey_request_build(JourneyMessage *msg, MemoryContext cxt, char **error)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	JourneyRequest *req = palloc0(sizeof(JourneyRequest));
	const char *err = NULL;

	req->cxt = cxt;
	req->msg = msg;
	req->url = msg->endpoint;
	req->retry_after_ms = -1;
	initStringInfo(&req->response);

	if ((err = refuse_control_chars(msg)) != NULL)
		;
	else if (strcmp(msg->kind, "webhook") == 0)
		build_webhook(req);
	else if (strcmp(msg->kind, "twilio") == 0)
		err = build_twilio(req);
	else if (strcmp(msg->kind, "resend") == 0)
		err = build_resend(req);
	else if (strcmp(msg->kind, "smtp") == 0)
		err = build_smtp(req);
	else
		err = psprintf("unknown provider kind \"%s\"", msg->kind);

	MemoryContextSwitchTo(old);
	if (err)
	{
		*error = MemoryContextStrdup(cxt, err);
		curl_slist_free_all(req->headers);
		curl_slist_free_all(req->rcpt);
		return NULL;
	}
	return req;
}

/* Finds the string value of a top-level key in a JSON response. */
typedef struct IdSearch
{
	const char *key;
	int			depth;
	bool		in_key;
	char	   *value;
} IdSearch;

static void
id_object_start(void *state)
{
	((IdSearch *) state)->depth++;
}

static void
id_object_end(void *state)
{
	((IdSearch *) state)->depth--;
}

static void
id_field_start(void *state, char *fname, bool isnull)
{
	IdSearch   *s = state;

	s->in_key = (s->depth == 1 && strcmp(fname, s->key) == 0);
}

static void
id_scalar(void *state, char *token, JsonTokenType tokentype)
{
	IdSearch   *s = state;

	if (s->in_key && s->value == NULL &&
		(tokentype == JSON_TOKEN_STRING || tokentype == JSON_TOKEN_NUMBER))
		s->value = pstrdup(token);
	s->in_key = false;
}

static char *
response_id(StringInfo body, const char *key)
{
	IdSearch	s = {key, 0, false, NULL};
	JsonSemAction sem = {0};
	JsonLexContext *lex;

	if (body->len == 0 || key == NULL)
		return NULL;
	sem.semstate = &s;
	sem.object_start = id_object_start;
	sem.object_end = id_object_end;
	sem.object_field_start = id_field_start;
	sem.scalar = id_scalar;
	lex = makeJsonLexContextCstringLen(body->data, body->len, PG_UTF8, true);
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS)
		return NULL;
	return s.value;
}

/* A short, printable, credential-free quote of the response. */
static char *
response_quote(JourneyRequest *req)
{
	/* Scrubbed whole: a cut could leave part of a secret behind. */
	return journey_clean_text(journey_scrub_secrets(req, pstrdup(req->response.data)),
							  RESPONSE_QUOTE_LEN);
}

static bool
curl_error_is_transient(CURLcode rc)
{
	switch (rc)
	{
		case CURLE_OPERATION_TIMEDOUT:
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
		case CURLE_SEND_ERROR:
		case CURLE_RECV_ERROR:
		case CURLE_GOT_NOTHING:
		case CURLE_PARTIAL_FILE:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_HTTP2:
		case CURLE_HTTP2_STREAM:
		case CURLE_AGAIN:
			return true;
		default:
			return false;
	}
}

/*
 * Decides what an attempt's outcome means.  HTTP: 2xx sent; 408, 429 and
 * 5xx retried (Resend's 409 too: a concurrent request with the same key);
 * other statuses failed.  SMTP reverses the classes: 4xx is transient, 5xx
 * permanent.  Transport errors are retried when they can pass.
 */
static void
classify(JourneyRequest *req, CURLcode rc, long status, JourneyResult *res)
{
	res->relid = req->msg->relid;
	res->id = req->msg->id;
	res->attempts = req->msg->attempts;
	res->retry_after_ms = -1;
	res->error = NULL;
	res->provider_message_id = NULL;
	res->held = false;
	res->suppress_reason = NULL;

	if (rc != CURLE_OK)
	{
		const char *what = req->errbuf[0] ? req->errbuf : curl_easy_strerror(rc);

		/* Required with credentials (see transport.c): nothing to retry. */
		if (req->is_smtp && rc == CURLE_USE_SSL_FAILED)
		{
			res->outcome = JOURNEY_FAILED;
			res->error = psprintf("smtp server does not offer STARTTLS: credentials are never sent in clear text (%s); use smtps:// or a server with STARTTLS",
								  what);
		}
		/* SMTP replies surface as errors; the reply code says which class. */
		else if (req->is_smtp && status >= 400 && status < 600)
		{
			res->outcome = status >= 500 ? JOURNEY_FAILED : JOURNEY_RETRY;
			res->error = psprintf("smtp server replied %ld: %s", status, what);
		}
		else
		{
			res->outcome = curl_error_is_transient(rc) ? JOURNEY_RETRY : JOURNEY_FAILED;
			res->error = psprintf("%s: %s",
								  rc == CURLE_OPERATION_TIMEDOUT ? "timeout" :
								  (rc == CURLE_COULDNT_CONNECT ? "connection refused" :
								   "transport error"), what);
		}
		return;
	}

	if (req->is_smtp)
	{
		res->outcome = JOURNEY_SENT;
		res->provider_message_id = req->provider_message_id;
		return;
	}

	if (status >= 200 && status < 300)
	{
		res->outcome = JOURNEY_SENT;
		res->provider_message_id = response_id(&req->response, req->id_key);
		return;
	}

	if (status == 408 || status == 429 || status >= 500 ||
		(status == 409 && strcmp(req->msg->kind, "resend") == 0))
	{
		res->outcome = JOURNEY_RETRY;
		res->retry_after_ms = (status == 429 || status == 503) ? req->retry_after_ms : -1;
	}
	else
	{
		res->outcome = JOURNEY_FAILED;
		/* Twilio's "unsubscribed" and "not a (mobile) number": never again. */
		if (strcmp(req->msg->kind, "twilio") == 0)
			res->suppress_reason =
				journey_twilio_error_suppression(response_id(&req->response, "code"));
	}
	res->error = psprintf("%s answered HTTP %ld: %s", req->msg->kind,
						  status, response_quote(req));
}

/*
 * What went wrong and the provider's id, as they will be stored: secrets
 * scrubbed first (before any cut could leave part of one), then made valid
 * UTF-8 without control characters and bounded.
 */
void
journey_request_classify(JourneyRequest *req, CURLcode rc, long status,
						 JourneyResult *res)
{
	classify(req, rc, status, res);
	if (res->error)
		res->error = journey_clean_text(journey_scrub_secrets(req, res->error),
										ERROR_TEXT_MAX);
	if (res->provider_message_id)
		res->provider_message_id =
			journey_clean_text(journey_scrub_secrets(req, res->provider_message_id),
							   PROVIDER_ID_MAX);
}
