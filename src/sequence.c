/*-------------------------------------------------------------------------
 *
 * sequence.c
 *	  create_sequence: validates a journey definition and writes the
 *	  sequence and its steps.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_create_sequence);

Datum
journey_create_sequence(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("TEMPORARY: not yet")));
	PG_RETURN_NULL();
}
