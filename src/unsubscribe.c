/*-------------------------------------------------------------------------
 *
 * unsubscribe.c
 *	  One-click unsubscribe (SPEC section 9, RFC 8058): the signed tokens
 *	  of the List-Unsubscribe link and {{unsubscribe_url}}, and
 *	  journey.unsubscribe(token), what the link's page (or the mailbox
 *	  provider's one-click POST) calls.
 *
 * A token names what it unsubscribes and proves that journey issued it:
 *
 *	  base64url(payload) "." base64url(HMAC-SHA-256(secret, payload))
 *	  payload = 0x01 | business uuid (16 bytes) | 'e' or 's' | address
 *
 * under the 32 random bytes of journey.unsubscribe_secret, made when the
 * extension is installed.  Nothing is stored per token, so a link stays
 * valid for good and costs no row; a token is checked in constant time
 * and anything that fails (tampered, truncated, forged, another key) is
 * refused with 22023 before anything is written.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/base64.h"
#include "common/cryptohash.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "port.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "journey.h"
#include "optout.h"

#define TOKEN_VERSION		0x01
#define TOKEN_SECRET_LEN	32
#define TOKEN_MAX_ADDRESS	1024
#define TOKEN_MAX_LEN		4096	/* longer input is refused unread */

char	   *journey_unsubscribe_url = NULL;

PG_FUNCTION_INFO_V1(journey_new_unsubscribe_secret);
PG_FUNCTION_INFO_V1(journey_unsubscribe_link);
PG_FUNCTION_INFO_V1(journey_unsubscribe);

Datum
journey_new_unsubscribe_secret(PG_FUNCTION_ARGS)
{
	bytea	   *secret = palloc(VARHDRSZ + TOKEN_SECRET_LEN);

	SET_VARSIZE(secret, VARHDRSZ + TOKEN_SECRET_LEN);
	if (!pg_strong_random(VARDATA(secret), TOKEN_SECRET_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate the unsubscribe secret"),
				 errhint("The server's source of strong random numbers failed; see its log.")));
	PG_RETURN_BYTEA_P(secret);
}

/* The secret, read as the tables' owner: callers need no privilege on it. */
static void
load_secret(uint8 *secret)
{
	static SPIPlanPtr plan = NULL;
	JourneyUserSwitch saved;
	bytea	   *value;
	bool		isnull;

	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (journey_spi_kept(&plan, "SELECT secret FROM journey.unsubscribe_secret",
						 0, NULL, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read journey.unsubscribe_secret");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("journey.unsubscribe_secret is empty"),
				 errhint("An administrator restores it from a backup, or runs INSERT INTO journey.unsubscribe_secret (secret) SELECT journey.new_unsubscribe_secret() (links sent before stop working).")));
	value = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										  1, &isnull));
	if (VARSIZE_ANY_EXHDR(value) < TOKEN_SECRET_LEN)
		elog(ERROR, "journey.unsubscribe_secret is too short");
	memcpy(secret, VARDATA_ANY(value), TOKEN_SECRET_LEN);
	SPI_finish();
	journey_restore_user(&saved);
}

static void
sign(const uint8 *payload, size_t len, uint8 *mac)
{
	uint8		secret[TOKEN_SECRET_LEN];
	pg_hmac_ctx *ctx;

	load_secret(secret);
	ctx = pg_hmac_create(PG_SHA256);
	if (ctx == NULL)
		elog(ERROR, "out of memory creating an HMAC context");
	if (pg_hmac_init(ctx, secret, TOKEN_SECRET_LEN) < 0 ||
		pg_hmac_update(ctx, payload, len) < 0 ||
		pg_hmac_final(ctx, mac, PG_SHA256_DIGEST_LENGTH) < 0)
	{
		const char *why = pg_hmac_error(ctx);

		pg_hmac_free(ctx);
		elog(ERROR, "could not compute HMAC-SHA-256: %s", why);
	}
	pg_hmac_free(ctx);
	explicit_bzero(secret, sizeof(secret));
}

/* base64url without padding (RFC 4648 section 5): safe in a query string. */
static void
append_base64url(StringInfo out, const uint8 *data, int len)
{
	int			n = pg_b64_enc_len(len);
	char	   *buf = palloc(n + 1);

	n = pg_b64_encode((const char *) data, len, buf, n);
	if (n < 0)
		elog(ERROR, "base64 encoding failed");
	for (int i = 0; i < n; i++)
	{
		if (buf[i] == '=')
			break;
		appendStringInfoChar(out, buf[i] == '+' ? '-' : (buf[i] == '/' ? '_' : buf[i]));
	}
	pfree(buf);
}

/* Decodes base64url; -1 for anything that is not exactly that. */
static int
decode_base64url(const char *src, int len, uint8 *dst, int dstlen)
{
	StringInfoData b;
	int			n;

	initStringInfo(&b);
	for (int i = 0; i < len; i++)
	{
		char		c = src[i];

		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
				   (c >= '0' && c <= '9')))
			return -1;
		appendStringInfoChar(&b, c);
	}
	if (b.len % 4 == 1)
		return -1;
	while (b.len % 4 != 0)
		appendStringInfoChar(&b, '=');
	if (pg_b64_dec_len(b.len) > dstlen)
		return -1;
	n = pg_b64_decode(b.data, b.len, (char *) dst, dstlen);
	pfree(b.data);
	return n;
}

static void
build_payload(StringInfo p, Datum business_id, const char *channel, const char *address)
{
	appendStringInfoChar(p, TOKEN_VERSION);
	appendBinaryStringInfo(p, (const char *) DatumGetUUIDP(business_id)->data, UUID_LEN);
	appendStringInfoChar(p, strcmp(channel, "sms") == 0 ? 's' : 'e');
	appendStringInfoString(p, address);
}

static char *
make_token(Datum business_id, const char *channel, const char *address)
{
	StringInfoData payload;
	StringInfoData token;
	uint8		mac[PG_SHA256_DIGEST_LENGTH];

	if (strlen(address) > TOKEN_MAX_ADDRESS)
		return NULL;
	initStringInfo(&payload);
	build_payload(&payload, business_id, channel, address);
	sign((uint8 *) payload.data, payload.len, mac);
	initStringInfo(&token);
	append_base64url(&token, (uint8 *) payload.data, payload.len);
	appendStringInfoChar(&token, '.');
	append_base64url(&token, mac, sizeof(mac));
	return token.data;
}

char *
journey_unsubscribe_url_for(Datum business_id, const char *channel, const char *address)
{
	const char *base = journey_unsubscribe_url;
	char	   *token;

	if (base == NULL || base[0] == '\0' || address == NULL || address[0] == '\0')
		return NULL;
	token = make_token(business_id, channel, address);
	if (token == NULL)
		return NULL;
	/* A base that already has a query string gets one more parameter. */
	return psprintf("%s%stoken=%s", base, strchr(base, '?') ? "&" : "?", token);
}

Datum
journey_unsubscribe_link(PG_FUNCTION_ARGS)
{
	char	   *channel = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *address = text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *url;

	if (strcmp(channel, "email") != 0 && strcmp(channel, "sms") != 0)
		PG_RETURN_NULL();
	url = journey_unsubscribe_url_for(PG_GETARG_DATUM(0), channel, address);
	if (url == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(url));
}

/* What a verified token says. */
typedef struct UnsubscribeTarget
{
	pg_uuid_t	business_id;
	const char *channel;
	char	   *address;
} UnsubscribeTarget;

static void
invalid_token(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid unsubscribe token"),
			 errdetail("The token is damaged or was not issued by this installation."),
			 errhint("Use the complete link from the message's List-Unsubscribe header or {{unsubscribe_url}}.")));
}

static void
verify_token(const char *token, UnsubscribeTarget *target)
{
	size_t		len = strlen(token);
	const char *dot = memchr(token, '.', len);
	uint8	   *payload;
	int			payload_len;
	uint8		mac[PG_SHA256_DIGEST_LENGTH + 3];
	uint8		expected[PG_SHA256_DIGEST_LENGTH];
	int			mac_len;
	uint8		diff = 0;

	if (len > TOKEN_MAX_LEN || dot == NULL)
		invalid_token();
	payload = palloc(len);
	payload_len = decode_base64url(token, dot - token, payload, len);
	mac_len = decode_base64url(dot + 1, len - (dot - token) - 1, mac, sizeof(mac));
	if (payload_len < 1 + UUID_LEN + 2 || mac_len != PG_SHA256_DIGEST_LENGTH ||
		payload[0] != TOKEN_VERSION)
		invalid_token();
	sign(payload, payload_len, expected);
	for (int i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
		diff |= mac[i] ^ expected[i];
	if (diff != 0)
		invalid_token();
	/* One spelling per token: padding bits or padding set otherwise are refused. */
	{
		StringInfoData canonical;

		initStringInfo(&canonical);
		append_base64url(&canonical, payload, payload_len);
		appendStringInfoChar(&canonical, '.');
		append_base64url(&canonical, mac, PG_SHA256_DIGEST_LENGTH);
		if (strcmp(canonical.data, token) != 0)
			invalid_token();
	}

	/* Signed by us: the fields are as make_token wrote them. */
	memcpy(target->business_id.data, payload + 1, UUID_LEN);
	target->channel = payload[1 + UUID_LEN] == 's' ? "sms" : "email";
	target->address = pnstrdup((char *) payload + 2 + UUID_LEN,
							   payload_len - 2 - UUID_LEN);
}

static const char *unsubscribe_events_sql =
"INSERT INTO journey.events (business_id, event_type, customer_id, payload, occurred_at)"
" SELECT c.business_id, 'unsubscribed', c.id,"
"        pg_catalog.jsonb_build_object('channel', $2::text, 'address', $3::text),"
"        pg_catalog.now()"
"   FROM journey.customers c"
"  WHERE c.business_id OPERATOR(pg_catalog.=) $1"
"    AND CASE WHEN $2::text OPERATOR(pg_catalog.=) 'email'"
"             THEN c.email OPERATOR(pg_catalog.=) $3"
"             ELSE journey.normalize_phone(c.phone) OPERATOR(pg_catalog.=) journey.normalize_phone($3) END";

Datum
journey_unsubscribe(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr business_plan = NULL;
	static SPIPlanPtr events_plan = NULL;
	char	   *token = text_to_cstring(PG_GETARG_TEXT_PP(0));
	UnsubscribeTarget t;
	Oid			types[3] = {UUIDOID, TEXTOID, TEXTOID};
	Datum		values[3];
	Datum		address;
	bool		result = true;

	verify_token(token, &t);
	values[0] = UUIDPGetDatum(&t.business_id);
	values[1] = CStringGetTextDatum(t.channel);
	values[2] = CStringGetTextDatum(t.address);
	address = PointerGetDatum(construct_array(&values[2], 1, TEXTOID, -1, false, TYPALIGN_INT));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (journey_spi_kept(&business_plan,
						 "SELECT 1 FROM journey.businesses WHERE id OPERATOR(pg_catalog.=) $1 FOR KEY SHARE",
						 1, types, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "business look-up failed");
	if (SPI_processed == 0)
		result = false;			/* the business is gone, and its data with it */
	else if (journey_suppress(values[0], t.channel, address, "unsubscribe") > 0)
	{
		if (journey_spi_kept(&events_plan, unsubscribe_events_sql, 3, types, values,
							 NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record the unsubscribed events");
	}
	SPI_finish();
	PG_RETURN_BOOL(result);
}
