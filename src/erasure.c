/*-------------------------------------------------------------------------
 *
 * erasure.c
 *	  journey.forget_customer: erasure on request.  Removes the customer
 *	  and every row holding their personal data (events, enrollments,
 *	  messages in or outside an enrollment, the decision log, so the
 *	  timeline too), and keeps what keeps them safe:
 *
 *	  - their suppressions, so a later re-import of the same address stays
 *		unsubscribed;
 *	  - their events' idempotency keys, on rows stripped of customer and
 *		payload, so a replayed webhook returns the old event id instead of
 *		re-creating and re-enrolling them (ingest_event answers a known key
 *		before it looks at the customer).
 *
 * A plain DELETE of a customer cascades to their enrollments, events and
 * messages (messages_customer_fkey), so it too leaves nothing sendable; it
 * just does not keep the idempotency keys.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_forget_customer);

/* In this order: each statement sees the rows the previous left. */
static const char *const forget_sql[] = {
	"UPDATE journey.events SET customer_id = NULL, payload = '{}'"
	" WHERE business_id OPERATOR(pg_catalog.=) $1 AND customer_id OPERATOR(pg_catalog.=) $2"
	"   AND idempotency_key IS NOT NULL",
	"DELETE FROM journey.events"
	" WHERE business_id OPERATOR(pg_catalog.=) $1 AND customer_id OPERATOR(pg_catalog.=) $2",
	"DELETE FROM journey.messages"
	" WHERE business_id OPERATOR(pg_catalog.=) $1 AND customer_id OPERATOR(pg_catalog.=) $2",
	"DELETE FROM journey.enrollment_log l USING journey.sequence_enrollments e"
	" WHERE e.business_id OPERATOR(pg_catalog.=) $1 AND e.customer_id OPERATOR(pg_catalog.=) $2"
	"   AND l.enrollment_id OPERATOR(pg_catalog.=) e.id",
	"DELETE FROM journey.messages m USING journey.sequence_enrollments e"
	" WHERE e.business_id OPERATOR(pg_catalog.=) $1 AND e.customer_id OPERATOR(pg_catalog.=) $2"
	"   AND m.enrollment_id OPERATOR(pg_catalog.=) e.id",
	"DELETE FROM journey.sequence_enrollments"
	" WHERE business_id OPERATOR(pg_catalog.=) $1 AND customer_id OPERATOR(pg_catalog.=) $2",
	"DELETE FROM journey.customers"
	" WHERE business_id OPERATOR(pg_catalog.=) $1 AND id OPERATOR(pg_catalog.=) $2",
};

#define N_FORGET (sizeof(forget_sql) / sizeof(forget_sql[0]))

static SPIPlanPtr forget_plans[N_FORGET];
static SPIPlanPtr lock_customer_plan;

static char *
uuid_str(Datum id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, id));
}

/*
 * forget_customer(p_business_id uuid, p_customer_id uuid) returns bigint:
 * how many rows it removed (the stripped events included).
 */
Datum
journey_forget_customer(PG_FUNCTION_ARGS)
{
	Oid			types[2] = {UUIDOID, UUIDOID};
	Datum		values[2];
	JourneyUserSwitch saved;
	int64		removed = 0;
	int			i;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("forget_customer needs a business id and a customer id"),
				 errhint("Call journey.forget_customer('<business uuid>', '<customer uuid>').")));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	journey_require_member(values[0]);

	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* Held to the end: no event can enroll them again half-way through. */
	if (journey_spi_kept(&lock_customer_plan,
						 "SELECT 1 FROM journey.customers"
						 " WHERE business_id OPERATOR(pg_catalog.=) $1 AND id OPERATOR(pg_catalog.=) $2"
						 " FOR UPDATE",
						 2, types, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "customer look-up failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("customer %s does not exist in business %s",
						uuid_str(values[1]), uuid_str(values[0])),
				 errhint("Pass the id of one of the business's customers (journey.customers.id); a customer already forgotten is gone.")));

	for (i = 0; i < (int) N_FORGET; i++)
	{
		int			rc = journey_spi_kept(&forget_plans[i], forget_sql[i], 2, types,
										  values, NULL, false, 0);

		if (rc != SPI_OK_UPDATE && rc != SPI_OK_DELETE)
			elog(ERROR, "forgetting the customer failed: %s", SPI_result_code_string(rc));
		removed += SPI_processed;
	}
	SPI_finish();
	journey_restore_user(&saved);
	PG_RETURN_INT64(removed);
}
