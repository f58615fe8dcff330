/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  Trigger matching: the statement-level trigger on journey.events.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_match_events);

Datum
journey_match_events(PG_FUNCTION_ARGS)
{
	return PointerGetDatum(NULL);
}
