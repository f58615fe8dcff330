/*
 * fuzz_definition.c
 *	  libFuzzer target for journey's definition grammar (src/definition.c,
 *	  src/definition_condition.c, and the templates they compile), run
 *	  inside a single-user PostgreSQL backend (test/fuzz/run.sh definition).
 *
 * Why in a backend, unlike fuzz_template: the grammar walks jsonb and
 * numerics, which only the server's own code provides exactly (jsonb_in,
 * the jsonb iterators, numeric_out, uuid_in).  This file is built with the
 * grammar's sources into a shared library (coverage, ASan, UBSan); a SQL
 * function hands libFuzzer's driver the arguments, and every input runs in
 * a memory context of its own that is reset after it.
 *
 * Each input is JSON text, parsed by jsonb_in like a definition passed to
 * create_sequence (a syntax error there is an uninteresting input):
 *   - an object is a whole definition: journey_definition_parse either
 *     accepts it, or raises 22023 (any other error is a finding); what it
 *     accepts is compiled again, step by step, as the executor reads the
 *     stored steps, which must not find any step invalid (the grammar's
 *     promise: whatever create_sequence accepts, the executor can run);
 *   - an array [kind, message_config, branch_config, next, template_id,
 *     subject, body] is one stored step as the executor compiles it: it
 *     must never raise (a bad step is marked invalid instead).
 * Findings abort, so that libFuzzer keeps the input: crashes, sanitizer
 * reports, errors other than the expected ones, memory that outlives the
 * input's context, and (libFuzzer's -timeout) hangs.
 */
#include "postgres.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "definition.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(fuzz_definition_run);

extern int	LLVMFuzzerRunDriver(int *argc, char ***argv,
								int (*cb) (const uint8_t *data, size_t size));

static MemoryContext input_cxt;
static Size memory_baseline;
static uint64 inputs_seen;

/* A finding: say what, then abort so libFuzzer saves the input. */
static void
finding(const char *what, const char *detail)
{
	fprintf(stderr, "FUZZ FINDING: %s: %s\n", what, detail ? detail : "");
	fflush(stderr);
	abort();
}

/* Text of the jsonb value, or NULL for JSON null / absent. */
static char *
elem_text(Jsonb *arr, int i)
{
	JsonbValue *v = getIthJsonbValueFromContainer(&arr->root, i);

	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	return NULL;
}

static Jsonb *
elem_object(Jsonb *arr, int i)
{
	JsonbValue *v = getIthJsonbValueFromContainer(&arr->root, i);

	if (v == NULL || v->type != jbvBinary)
		return NULL;
	return JsonbValueToJsonb(v);
}

/* The executor's entry points on one stored step: they must not raise. */
static void
compile_stored_step(Jsonb *arr)
{
	JourneyStep step;
	JsonbValue *next = getIthJsonbValueFromContainer(&arr->root, 3);
	char	   *kind = elem_text(arr, 0);

	memset(&step, 0, sizeof(step));
	step.step_index = 1;
	step.next_step = STEP_FOLLOWING;
	/* The column is an int4: clamp whatever the input says into it. */
	if (next != NULL && next->type == jbvNumeric)
	{
		double		d = journey_numeric_to_double(next->val.numeric);

		step.next_step = isnan(d) ? 0 : (int32) Max(Min(d, PG_INT32_MAX), 0);
	}
	step.template_id = elem_text(arr, 4);
	journey_step_compile(&step, kind ? kind : "", elem_object(arr, 1), elem_object(arr, 2));
	if (step.template_id)
		journey_step_compile_template(&step, kind && strcmp(kind, "send_sms") == 0 ? "sms" : "email",
									  elem_text(arr, 5), elem_text(arr, 6));
}

/* What create_sequence accepted, compiled again as the executor reads it. */
static void
recompile_definition(JourneyDefinition *def)
{
	for (int i = 0; i < def->nsteps; i++)
	{
		JourneyStep *st = &def->steps[i];
		JourneyStep stored;
		Jsonb	   *message = st->message;

		memset(&stored, 0, sizeof(stored));
		stored.step_index = i + 1;
		stored.wait_ms = st->wait_ms;
		stored.next_step = st->next_step;
		stored.template_id = st->template_id;
		/* journey_write_steps stores {} for a send step without a message. */
		if (message == NULL)
			message = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
		journey_step_compile(&stored, journey_step_kind_name(st->kind), message, st->branch);
		if (stored.invalid != NULL)
			finding("a step create_sequence accepted does not compile in the executor",
					psprintf("step %d: %s", i + 1, stored.invalid));
	}
}

static int
one_input(const uint8_t *data, size_t size)
{
	MemoryContext caller = CurrentMemoryContext;
	char	   *text;
	Jsonb	   *volatile jb = NULL;
	volatile bool in_grammar = false;

	/*
	 * The SQL functions take jsonb, read from text the server has already
	 * verified: valid UTF-8 without NUL bytes (invalid bytes never reach the
	 * grammar; \u escapes do, through jsonb_in).
	 */
	if (size > 256 * 1024 || memchr(data, 0, size) != NULL ||
		!pg_verifymbstr((const char *) data, (int) size, true))
		return 0;
	MemoryContextSwitchTo(input_cxt);
	text = palloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';

	PG_TRY();
	{
		jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
		in_grammar = true;
		if (JB_ROOT_IS_ARRAY(jb) && !JB_ROOT_IS_SCALAR(jb))
			compile_stored_step(jb);
		else
		{
			JourneyDefinition def;

			journey_definition_parse(jb, &def);
			recompile_definition(&def);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(input_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		/* jsonb_in refusing the text is an uninteresting input. */
		if (in_grammar)
		{
			if (JB_ROOT_IS_ARRAY(jb) && !JB_ROOT_IS_SCALAR(jb))
				finding("the executor's step compiler raised", edata->message);
			if (edata->sqlerrcode != ERRCODE_INVALID_PARAMETER_VALUE)
				finding(psprintf("journey_definition_parse raised %s, not 22023",
								 unpack_sql_state(edata->sqlerrcode)),
						edata->message);
			if (edata->hint == NULL)
				finding("a definition error without a hint", edata->message);
		}
	}
	PG_END_TRY();

	MemoryContextSwitchTo(caller);
	MemoryContextReset(input_cxt);

	/*
	 * Whatever the grammar allocates belongs to the input's context; memory
	 * anywhere else that keeps growing is a leak.  The first inputs may
	 * still warm caches, so the baseline is taken after them.
	 */
	if (++inputs_seen == 1000)
		memory_baseline = MemoryContextMemAllocated(TopMemoryContext, true);
	else if (inputs_seen > 1000 && inputs_seen % 64 == 0 &&
			 MemoryContextMemAllocated(TopMemoryContext, true) > memory_baseline + 16 * 1024 * 1024)
		finding("memory outside the input's context grew by more than 16 MB", NULL);
	return 0;
}

/* fuzz_definition_run('-max_total_time=600 ... corpus'): never returns. */
Datum
fuzz_definition_run(PG_FUNCTION_ARGS)
{
	char	   *args = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	  **argv = palloc0(sizeof(char *) * (strlen(args) + 2));
	int			argc = 0;
	char	   *tok;

	argv[argc++] = "fuzz_definition";
	while ((tok = strsep(&args, " ")) != NULL)
		if (*tok)
			argv[argc++] = tok;
	input_cxt = AllocSetContextCreate(TopMemoryContext, "fuzz input", ALLOCSET_DEFAULT_SIZES);
	LLVMFuzzerRunDriver(&argc, &argv, one_input);
	PG_RETURN_VOID();
}
