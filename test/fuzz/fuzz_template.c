/*
 * fuzz_template.c
 *	  libFuzzer target for journey's template parser (src/template.c):
 *	  journey_template_compile and journey_template_paths_ok on arbitrary
 *	  bytes, outside any server.
 *
 * template.c is compiled unchanged against the server headers; the few
 * backend services it calls come from fuzz_shim.c (memory that is freed
 * after every input, ereport(ERROR) as a longjmp back here) and the
 * frontend libpgcommon (StringInfo, UTF-8 tables).  An input may be
 * rejected with an error; it must never crash, hang or leak.
 */
#include "postgres.h"

#include <setjmp.h>

#include "journey.h"
#include "fuzz_shim.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *source;

	/* The SQL function passes text: no NUL inside, and long ones are fine. */
	if (size > 64 * 1024 || memchr(data, 0, size) != NULL)
		return 0;
	source = fuzz_alloc(size + 1);
	memcpy(source, data, size);
	source[size] = '\0';

	/* Refusals are reported in err; only out of memory and the like raise. */
	if (sigsetjmp(fuzz_error_jump, 0) == 0)
	{
		JourneyError err;
		JourneyTemplate *tmpl = journey_template_compile(source, "fuzz", &err);

		if (tmpl != NULL)
			(void) journey_template_paths_ok(tmpl, "fuzz", &err);
	}
	fuzz_free_all();
	return 0;
}
