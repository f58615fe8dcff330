/*-------------------------------------------------------------------------
 *
 * outbound.c
 *	  What may leave the database and what may come back into it: control
 *	  characters in addresses, folded SMTP headers (RFC 5322 / RFC 2047),
 *	  provider answers made valid and bounded, and credentials scrubbed in
 *	  every encoding they could be echoed in.
 *
 * The address check is shared by the API functions (22023) and the
 * sender; the rest serves providers.c.  Nothing here talks to the network.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/json.h"

#include "journey.h"
#include "sender.h"

/* RFC 5322's recommended line length and RFC 2047's encoded-word limit. */
#define HEADER_LINE_MAX 78
#define ENCODED_WORD_MAX 75
/* "=?UTF-8?B?" and "?=" */
#define ENCODED_WORD_OVERHEAD 12

/*
 * Length of the control character at s (C0, DEL, or a UTF-8 encoded C1),
 * 0 when s does not start with one.
 */
static int
control_char_len(const unsigned char *s)
{
	if (*s != '\0' && (*s < 0x20 || *s == 0x7f))
		return 1;
	if (s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f)
		return 2;
	return 0;
}

bool
journey_has_control_char(const char *s)
{
	const unsigned char *p;

	if (s == NULL)
		return false;
	for (p = (const unsigned char *) s; *p; p++)
		if (control_char_len(p) > 0)
			return true;
	return false;
}

void
journey_check_address(const char *field, const char *value)
{
	if (journey_has_control_char(value))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not contain control characters", field),
				 errdetail("Carriage returns, line feeds and other control characters in an address could smuggle commands or headers into what is sent."),
				 errhint("Remove them: an address is a single line of printable characters.")));
}

/*
 * A copy of s that is valid UTF-8 (in a UTF-8 database; ASCII elsewhere),
 * has no control characters (each becomes a space) and holds at most
 * max_bytes bytes, cut at a character boundary with "..." appended.
 */
char *
journey_clean_text(const char *s, int max_bytes)
{
	StringInfoData b;
	const unsigned char *p = (const unsigned char *) s;
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

	initStringInfo(&b);
	while (*p)
	{
		int			n;

		CHECK_FOR_INTERRUPTS();
		if ((n = control_char_len(p)) > 0)
		{
			if (b.len + 1 > max_bytes)
				break;
			appendStringInfoChar(&b, ' ');
			p += n;
			continue;
		}
		if (*p < 0x80)
			n = 1;
		else if (utf8 && (n = pg_utf_mblen(p)) > 1 &&
				 strnlen((const char *) p, n) == (size_t) n &&
				 pg_utf8_islegal(p, n))
			;
		else
		{
			/* An invalid byte: U+FFFD, or '?' where UTF-8 is not spoken. */
			const char *rep = utf8 ? "\xef\xbf\xbd" : "?";

			if (b.len + (int) strlen(rep) > max_bytes)
				break;
			appendStringInfoString(&b, rep);
			p++;
			continue;
		}
		if (b.len + n > max_bytes)
			break;
		appendBinaryStringInfo(&b, (const char *) p, n);
		p += n;
	}
	if (*p)
		appendStringInfoString(&b, "...");
	return b.data;
}

/* Replaces every occurrence of needle in text; never rescans a replacement. */
static char *
replace_all(char *text, const char *needle, const char *with)
{
	size_t		nlen = strlen(needle);
	StringInfoData b;
	char	   *from = text;
	char	   *p;

	if (nlen == 0 || strstr(text, needle) == NULL)
		return text;
	initStringInfo(&b);
	while ((p = strstr(from, needle)) != NULL)
	{
		CHECK_FOR_INTERRUPTS();
		appendBinaryStringInfo(&b, from, p - from);
		appendStringInfoString(&b, with);
		from = p + nlen;
	}
	appendStringInfoString(&b, from);
	return b.data;
}

static char *
base64_of(const char *data, size_t len)
{
	StringInfoData b;

	initStringInfo(&b);
	journey_append_base64(&b, data, len, false);
	return b.data;
}

/* The forms a secret can take in a URL, JSON, basic auth or AUTH PLAIN. */
static List *
secret_forms(const char *secret, const char *user, const char *password)
{
	List	   *forms = NIL;
	char	   *esc;
	StringInfoData json;

	if (secret == NULL || strlen(secret) < 4)
		return NIL;
	forms = lappend(forms, pstrdup(secret));
	if ((esc = curl_easy_escape(NULL, secret, 0)) != NULL)
	{
		forms = lappend(forms, pstrdup(esc));
		curl_free(esc);
	}
	/* JSON-escaped, and escaped again (a JSON answer quoting a JSON string). */
	for (int level = 0; level < 2; level++)
	{
		const char *plain = level == 0 ? secret : llast(forms);

		initStringInfo(&json);
		escape_json(&json, plain);
		/* Without the quotes escape_json adds. */
		forms = lappend(forms, pnstrdup(json.data + 1, json.len - 2));
	}
	forms = lappend(forms, base64_of(secret, strlen(secret)));
	if (user && password)
	{
		size_t		plen = strlen(user) + strlen(password) + 2;
		/* AUTH PLAIN's token: NUL user NUL password. */
		char	   *plain = palloc(plen);

		plain[0] = '\0';
		memcpy(plain + 1, user, strlen(user));
		plain[1 + strlen(user)] = '\0';
		memcpy(plain + 2 + strlen(user), password, strlen(password));
		forms = lappend(forms, base64_of(plain, plen));
		forms = lappend(forms, base64_of(password, strlen(password)));
	}
	return forms;
}

/*
 * Removes every copy of the request's secrets, in each encoding a server
 * or libcurl could echo them in, longest first so that a secret inside
 * another is not half-replaced.
 */
char *
journey_scrub_secrets(JourneyRequest *req, char *text)
{
	List	   *forms = NIL;
	ListCell   *lc;
	bool		swapped = true;

	if (text == NULL)
		return NULL;
	forms = list_concat(forms, secret_forms(req->msg->credentials,
											req->username, req->password));
	forms = list_concat(forms, secret_forms(req->password, NULL, NULL));
	forms = list_concat(forms, secret_forms(req->username, NULL, NULL));

	/* A few dozen strings at most: a simple sort, longest first. */
	while (swapped)
	{
		swapped = false;
		for (int i = 0; i + 1 < list_length(forms); i++)
		{
			char	   *a = list_nth(forms, i);
			char	   *b = list_nth(forms, i + 1);

			if (strlen(a) < strlen(b))
			{
				list_nth_cell(forms, i)->ptr_value = b;
				list_nth_cell(forms, i + 1)->ptr_value = a;
				swapped = true;
			}
		}
	}
	foreach(lc, forms)
		text = replace_all(text, lfirst(lc), "[redacted]");
	return text;
}

void
journey_append_base64(StringInfo buf, const char *data, size_t len, bool wrap)
{
	static const char tbl[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t		i;
	int			col = 0;

	for (i = 0; i < len; i += 3)
	{
		uint32		v = (uint8) data[i] << 16;

		if (i + 1 < len)
			v |= (uint8) data[i + 1] << 8;
		if (i + 2 < len)
			v |= (uint8) data[i + 2];
		appendStringInfoChar(buf, tbl[(v >> 18) & 63]);
		appendStringInfoChar(buf, tbl[(v >> 12) & 63]);
		appendStringInfoChar(buf, i + 1 < len ? tbl[(v >> 6) & 63] : '=');
		appendStringInfoChar(buf, i + 2 < len ? tbl[v & 63] : '=');
		col += 4;
		if (wrap && col >= 76)
		{
			appendStringInfoString(buf, "\r\n");
			col = 0;
		}
	}
	if (wrap && col > 0)
		appendStringInfoString(buf, "\r\n");
}

static bool
is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s >= 0x80)
			return false;
	return true;
}

/* The current line's length in a header being built. */
static int
line_col(StringInfo b)
{
	char	   *nl = b->len > 0 ? strrchr(b->data, '\n') : NULL;

	return nl ? b->len - (int) (nl - b->data) - 1 : b->len;
}

/*
 * Appends text as RFC 2047 encoded-words, each at most 75 characters,
 * folded so that no line passes 78.  Words are cut between UTF-8
 * characters: a character is never split across two of them.
 */
static void
append_encoded_words(StringInfo b, const char *text)
{
	const unsigned char *p = (const unsigned char *) text;
	size_t		left = strlen(text);
	bool		first = true;

	while (left > 0 || first)
	{
		int			room = HEADER_LINE_MAX - line_col(b) - (first ? 0 : 1) - ENCODED_WORD_OVERHEAD;
		size_t		take;

		room = Min(room, ENCODED_WORD_MAX - ENCODED_WORD_OVERHEAD);
		if (room < 8)
		{
			appendStringInfoString(b, "\r\n");
			first = false;
			continue;
		}
		take = Min(left, (size_t) (room / 4) * 3);
		while (take > 0 && take < left && (p[take] & 0xc0) == 0x80)
			take--;
		if (!first)
			appendStringInfoChar(b, ' ');
		appendStringInfoString(b, "=?UTF-8?B?");
		journey_append_base64(b, (const char *) p, take, false);
		appendStringInfoString(b, "?=");
		p += take;
		left -= take;
		first = false;
		if (left > 0)
			appendStringInfoString(b, "\r\n");
	}
}

/*
 * Appends ASCII text folded at its spaces; false (and nothing appended)
 * when some word cannot fit on a line, so the caller encodes it instead.
 */
static bool
append_folded_ascii(StringInfo b, const char *text)
{
	int			start_len = b->len;
	const char *p = text;
	bool		first = true;

	while (*p)
	{
		const char *w = p;
		int			wlen;

		while (*p && *p != ' ')
			p++;
		wlen = p - w;
		while (*p == ' ')
			p++;
		if (wlen == 0)
			continue;
		if (line_col(b) + (first ? 0 : 1) + wlen > HEADER_LINE_MAX)
		{
			if (1 + wlen > HEADER_LINE_MAX)
			{
				b->len = start_len;
				b->data[b->len] = '\0';
				return false;
			}
			appendStringInfoString(b, "\r\n");
		}
		if (!first || line_col(b) == 0)
			appendStringInfoChar(b, ' ');
		appendBinaryStringInfo(b, w, wlen);
		first = false;
	}
	return true;
}

/* Appends a phrase or unstructured text, folded, encoded where it must be. */
static void
append_header_text(StringInfo b, const char *text)
{
	if (!is_ascii(text) || !append_folded_ascii(b, text))
		append_encoded_words(b, text);
}

/* Control characters become spaces: a value never starts a header. */
static char *
header_safe(const char *s)
{
	return journey_clean_text(s ? s : "", 1024 * 1024);
}

void
journey_append_header(StringInfo b, const char *name, const char *value)
{
	appendStringInfo(b, "%s:", name);
	if (value && value[0])
	{
		appendStringInfoChar(b, ' ');
		append_header_text(b, header_safe(value));
	}
	appendStringInfoString(b, "\r\n");
}

char *
journey_addr_spec(const char *s)
{
	const char *lt = strrchr(s, '<');
	const char *gt;

	if (lt && (gt = strchr(lt, '>')) != NULL)
		return pnstrdup(lt + 1, gt - lt - 1);
	return pstrdup(s);
}

/*
 * An address header: "Name <addr>" with its name as words (encoded-words
 * when not ASCII) and the address folded onto a line of its own when the
 * line would pass 78; a bare address goes as it is.
 */
void
journey_append_address_header(StringInfo b, const char *name, const char *value)
{
	char	   *v = header_safe(value);
	char	   *lt = strrchr(v, '<');

	appendStringInfo(b, "%s: ", name);
	if (lt && lt > v)
	{
		char	   *display = pnstrdup(v, lt - v);
		int			len = strlen(display);

		while (len > 0 && display[len - 1] == ' ')
			display[--len] = '\0';
		if (len > 0)
		{
			append_header_text(b, display);
			if (line_col(b) + 1 + (int) strlen(lt) > HEADER_LINE_MAX)
				appendStringInfoString(b, "\r\n");
			appendStringInfoChar(b, ' ');
		}
		appendStringInfoString(b, lt);
	}
	else
		appendStringInfoString(b, v);
	appendStringInfoString(b, "\r\n");
}
