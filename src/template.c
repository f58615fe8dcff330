/*-------------------------------------------------------------------------
 *
 * template.c
 *	  The template engine: {{ path }} and {{ path | default: "text" }}.
 *
 * A template is parsed once into literal and tag nodes (create_sequence
 * parses every message template to validate it; the executor parses each
 * step's templates once per call and renders them for every enrollment).
 * Rendering looks paths up in a jsonb context of the shape render_template
 * documents: {"customer": {...}, "business": {...}, "review_link": "...",
 * "enrollment": {"meta": {...}}, "event": {...}}.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_render_template);

#define MAX_PATH_SEGMENTS 8

typedef struct TemplateNode
{
	bool		is_tag;
	/* literal: the text; tag: the dotted path as written */
	char	   *text;
	int			text_len;
	/* tag only */
	int			nsegments;
	char	   *segments[MAX_PATH_SEGMENTS];
	char	   *default_value;	/* NULL when the tag has no default */
	int			position;		/* 1-based character position of "{{" */
} TemplateNode;

struct JourneyTemplate
{
	const char *source;
	int			nnodes;
	TemplateNode *nodes;
};

/* Records a malformed-template error in *err; returns NULL for the caller to return. */
static const char *
template_error(JourneyError *err, const char *source, const char *at, const char *where,
			   const char *problem, const char *hint)
{
	int			position = pg_mbstrlen_with_len(source, at - source) + 1;

	err->sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
	err->message = where ?
		psprintf("malformed template in %s at character %d: %s", where, position, problem) :
		psprintf("malformed template at character %d: %s", position, problem);
	err->reason = err->message;
	err->hint = hint;
	return NULL;
}

#define TAG_HINT "Write tags as {{ customer.first_name }} or {{ customer.first_name | default: \"there\" }}."

static const char *
skip_spaces(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static bool
is_ident_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool
is_ident_char(char c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9') || c == '-';
}

/*
 * Parses one tag starting just after "{{"; returns the position after "}}",
 * or NULL with *err set.
 */
static const char *
parse_tag(const char *source, const char *open, const char *where, TemplateNode *node,
		  JourneyError *err)
{
	const char *p = skip_spaces(open + 2);
	const char *path_start = p;
	StringInfoData dflt;

	node->is_tag = true;
	node->position = pg_mbstrlen_with_len(source, open - source) + 1;
	node->nsegments = 0;
	node->default_value = NULL;

	if (*p == '\0')
		return template_error(err, source, open, where, "unclosed tag", TAG_HINT);
	if (*p == '}' && p[1] == '}')
		return template_error(err, source, open, where, "empty tag", TAG_HINT);

	for (;;)
	{
		const char *seg = p;

		if (!is_ident_start(*p))
			return template_error(err, source, p, where,
						   "a path segment must start with a letter or underscore", TAG_HINT);
		while (is_ident_char(*p))
			p++;
		if (node->nsegments == MAX_PATH_SEGMENTS)
			return template_error(err, source, seg, where, "path has too many segments",
						   "A path has at most 8 dot-separated parts.");
		node->segments[node->nsegments++] = pnstrdup(seg, p - seg);
		if (*p != '.')
			break;
		p++;
	}
	node->text = pnstrdup(path_start, p - path_start);
	node->text_len = p - path_start;

	p = skip_spaces(p);
	if (*p == '|')
	{
		char		quote;

		p = skip_spaces(p + 1);
		if (strncmp(p, "default", 7) != 0 || is_ident_char(p[7]))
			return template_error(err, source, p, where, "unknown filter",
						   "The only filter is default: {{ path | default: \"text\" }}.");
		p = skip_spaces(p + 7);
		if (*p != ':')
			return template_error(err, source, p, where, "expected \":\" after default", TAG_HINT);
		p = skip_spaces(p + 1);
		if (*p != '"' && *p != '\'')
			return template_error(err, source, p, where, "the default must be a quoted string", TAG_HINT);
		quote = *p++;
		initStringInfo(&dflt);
		while (*p != quote)
		{
			if (*p == '\0')
				return template_error(err, source, open, where, "unterminated string in default", TAG_HINT);
			if (*p == '\\' && (p[1] == quote || p[1] == '\\'))
				p++;
			appendStringInfoChar(&dflt, *p++);
		}
		p = skip_spaces(p + 1);
		node->default_value = dflt.data;
	}

	if (*p == '\0')
		return template_error(err, source, open, where, "unclosed tag", TAG_HINT);
	if (p[0] != '}' || p[1] != '}')
		return template_error(err, source, p, where, "unexpected character in tag", TAG_HINT);
	return p + 2;
}

JourneyTemplate *
journey_template_compile(const char *source, const char *where, JourneyError *err)
{
	JourneyTemplate *tmpl = palloc0(sizeof(JourneyTemplate));
	int			capacity = 8;
	const char *p = source;

	tmpl->source = source;
	tmpl->nodes = palloc(sizeof(TemplateNode) * capacity);

	while (*p)
	{
		const char *open = strstr(p, "{{");
		TemplateNode *node;

		if (tmpl->nnodes + 2 > capacity)
		{
			capacity *= 2;
			tmpl->nodes = repalloc(tmpl->nodes, sizeof(TemplateNode) * capacity);
		}
		if (open != p)
		{
			int			len = open ? open - p : strlen(p);

			node = &tmpl->nodes[tmpl->nnodes++];
			node->is_tag = false;
			node->text = (char *) p;
			node->text_len = len;
			p += len;
			continue;
		}
		node = &tmpl->nodes[tmpl->nnodes++];
		p = parse_tag(source, open, where, node, err);
		if (p == NULL)
			return NULL;
	}
	return tmpl;
}

JourneyTemplate *
journey_template_parse(const char *source, const char *where)
{
	JourneyError err;
	JourneyTemplate *tmpl = journey_template_compile(source, where, &err);

	if (tmpl == NULL)
		journey_error_raise(&err);
	return tmpl;
}

static bool
segment_in(const char *segment, const char *const *allowed)
{
	for (; *allowed; allowed++)
		if (strcmp(segment, *allowed) == 0)
			return true;
	return false;
}

bool
journey_template_paths_ok(const JourneyTemplate *tmpl, const char *where, JourneyError *err)
{
	static const char *const business_fields[] =
	{"name", "email", "phone", "google_review_url", "timezone", NULL};

	for (int i = 0; i < tmpl->nnodes; i++)
	{
		const TemplateNode *node = &tmpl->nodes[i];
		const char *ns;
		const char *problem = NULL;

		if (!node->is_tag)
			continue;
		ns = node->segments[0];
		if (strcmp(ns, "customer") == 0 || strcmp(ns, "event") == 0)
		{
			if (node->nsegments < 2)
				problem = "needs a field after the namespace";
		}
		else if (strcmp(ns, "business") == 0)
		{
			if (node->nsegments != 2 || !segment_in(node->segments[1], business_fields))
				problem = "is not a business field (name, email, phone, google_review_url, timezone)";
		}
		else if (strcmp(ns, "review_link") == 0 || strcmp(ns, "unsubscribe_url") == 0)
		{
			if (node->nsegments != 1)
				problem = psprintf("has fields, but %s is a plain value", ns);
		}
		else if (strcmp(ns, "enrollment") == 0)
		{
			if (node->nsegments < 3 || strcmp(node->segments[1], "meta") != 0)
				problem = "must be enrollment.meta.<key>";
		}
		else
			problem = "has an unknown namespace";

		if (problem)
		{
			err->sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
			err->message = where ?
				psprintf("template path \"%s\" in %s %s", node->text, where, problem) :
				psprintf("template path \"%s\" %s", node->text, problem);
			err->reason = err->message;
			err->hint = "Paths are customer.<field or attribute>, business.<field>, "
				"review_link, enrollment.meta.<key> and event.<key>.";
			return false;
		}
	}
	return true;
}

static bool
walk(JsonbContainer *container, char *const *segments, int nsegments, JsonbValue *result)
{
	JsonbValue	v;

	for (int i = 0; i < nsegments; i++)
	{
		if (!journey_container_get(container, segments[i], &v))
			return false;
		if (i == nsegments - 1)
		{
			*result = v;
			return true;
		}
		if (v.type != jbvBinary)
			return false;
		container = v.val.binary.data;
	}
	return false;
}

/*
 * Raises 54000 before out would grow past JOURNEY_RENDER_MAX with n more
 * bytes: the check comes before the allocation, so a big value repeated
 * many times never costs more than about the limit in memory.
 */
static void
ensure_room(StringInfo out, Size n)
{
	if ((Size) out->len + n > JOURNEY_RENDER_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("rendered template would exceed %d bytes", JOURNEY_RENDER_MAX),
				 errdetail("A message's subject or body is at most 1 MB."),
				 errhint("Shorten the template or the values it inserts.")));
}

/* Appends a value's text; returns false for null or empty. */
static bool
append_value(StringInfo out, JsonbValue *v)
{
	if (v->type == jbvNull || (v->type == jbvString && v->val.string.len == 0))
		return false;
	/* A string's or container's text is about as long as its binary form. */
	if (v->type == jbvString)
		ensure_room(out, v->val.string.len);
	else if (v->type == jbvBinary)
		ensure_room(out, v->val.binary.len);
	journey_append_value_text(out, v);
	ensure_room(out, 0);
	return true;
}

/* customer.first_name: the first word of the full name. */
static bool
append_first_word(StringInfo out, JsonbValue *full_name)
{
	const char *s;
	int			len;
	int			start = 0;
	int			end;

	if (full_name->type != jbvString)
		return false;
	s = full_name->val.string.val;
	len = full_name->val.string.len;
	while (start < len && isspace((unsigned char) s[start]))
		start++;
	end = start;
	while (end < len && !isspace((unsigned char) s[end]))
		end++;
	if (end == start)
		return false;
	ensure_room(out, end - start);
	appendBinaryStringInfo(out, s + start, end - start);
	return true;
}

/*
 * Resolves one tag into out.  customer.name and customer.first_name derive
 * from full_name, and a customer field the context lacks is looked up among
 * the customer's attributes.
 */
static bool
resolve(const TemplateNode *node, Jsonb *context, StringInfo out)
{
	JsonbContainer *root = &context->root;
	JsonbValue	v;
	JsonbValue	customer;
	int			saved_len = out->len;

	if (walk(root, node->segments, node->nsegments, &v))
	{
		if (append_value(out, &v))
			return true;
		out->len = saved_len;
		out->data[saved_len] = '\0';
		return false;
	}

	if (strcmp(node->segments[0], "customer") != 0 || node->nsegments < 2 ||
		!journey_container_get(root, "customer", &customer) || customer.type != jbvBinary)
		return false;

	if (node->nsegments == 2 &&
		(strcmp(node->segments[1], "name") == 0 ||
		 strcmp(node->segments[1], "first_name") == 0))
	{
		char	   *full_name_path[1] = {"full_name"};
		char	   *name_path[1] = {"name"};

		if (!walk(customer.val.binary.data, full_name_path, 1, &v) &&
			!walk(customer.val.binary.data, name_path, 1, &v))
			return false;
		if (strcmp(node->segments[1], "first_name") == 0)
			return append_first_word(out, &v);
		return append_value(out, &v);
	}

	{
		JsonbValue	attributes;

		if (!journey_container_get(customer.val.binary.data, "attributes", &attributes) ||
			attributes.type != jbvBinary ||
			!walk(attributes.val.binary.data, (char *const *) &node->segments[1],
				  node->nsegments - 1, &v))
			return false;
		if (append_value(out, &v))
			return true;
		out->len = saved_len;
		out->data[saved_len] = '\0';
		return false;
	}
}

bool
journey_template_render(const JourneyTemplate *tmpl, Jsonb *context,
						StringInfo out, const char **missing_path)
{
	for (int i = 0; i < tmpl->nnodes; i++)
	{
		const TemplateNode *node = &tmpl->nodes[i];

		CHECK_FOR_INTERRUPTS();
		if (!node->is_tag)
		{
			ensure_room(out, node->text_len);
			appendBinaryStringInfo(out, node->text, node->text_len);
			continue;
		}
		if (resolve(node, context, out))
			continue;
		if (node->default_value != NULL)
		{
			ensure_room(out, strlen(node->default_value));
			appendStringInfoString(out, node->default_value);
			continue;
		}
		if (missing_path)
			*missing_path = node->text;
		return false;
	}
	return true;
}

Datum
journey_render_template(PG_FUNCTION_ARGS)
{
	char	   *source = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *context = PG_GETARG_JSONB_P(1);
	JourneyTemplate *tmpl;
	StringInfoData out;
	const char *missing = NULL;

	if (!JB_ROOT_IS_OBJECT(context))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("template context must be a JSON object"),
				 errhint("Pass an object such as '{\"customer\": {\"full_name\": \"Ada Lovelace\"}}'.")));

	tmpl = journey_template_parse(source, NULL);
	initStringInfo(&out);
	if (!journey_template_render(tmpl, context, &out, &missing))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("template value \"%s\" is missing", missing),
				 errdetail("The context has no value at \"%s\" and the tag has no default.", missing),
				 errhint("Add it to the context or give the tag a default: {{ %s | default: \"...\" }}.",
						 missing)));
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
