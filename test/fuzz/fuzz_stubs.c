/*
 * fuzz_stubs.c
 *	  What journey's parsers reference but never reach (rendering's jsonb
 *	  look-ups, the SQL-callable wrappers): each aborts, so a fuzz input
 *	  that did reach one would show as a crash.  No headers, so that the
 *	  stubs need not match the backend's prototypes.
 */
#include <stdlib.h>

#define UNREACHED(name) void name(void); void name(void) { abort(); }
UNREACHED(DirectFunctionCall1Coll)
UNREACHED(JsonbToCString)
UNREACHED(cstring_to_text_with_len)
UNREACHED(journey_append_value_text)
UNREACHED(journey_container_get)
UNREACHED(numeric_out)
UNREACHED(pg_detoast_datum)
UNREACHED(pg_detoast_datum_packed)
UNREACHED(text_to_cstring)
