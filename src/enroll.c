/*-------------------------------------------------------------------------
 *
 * enroll.c
 *	  Enrollment: enroll_customer, ingest_event, stop_enrollment and the
 *	  enrollment log.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_enroll_customer);
PG_FUNCTION_INFO_V1(journey_ingest_event);
PG_FUNCTION_INFO_V1(journey_stop_enrollment);

Datum
journey_enroll_customer(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("TEMPORARY: not yet")));
	PG_RETURN_NULL();
}

Datum
journey_ingest_event(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("TEMPORARY: not yet")));
	PG_RETURN_NULL();
}

Datum
journey_stop_enrollment(PG_FUNCTION_ARGS)
{
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("TEMPORARY: not yet")));
	PG_RETURN_NULL();
}

void
journey_log_decision(Datum business_id, Datum enrollment_id,
					 int step_index, bool step_is_null,
					 const char *outcome, const char *detail,
					 TimestampTz at)
{
}
