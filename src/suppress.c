/*-------------------------------------------------------------------------
 *
 * suppress.c
 *	  The one way journey decides "never send there again": a suppression
 *	  row and the cancellation of the queued messages to that address, in
 *	  the same transaction.  Called by the STOP keyword (inbound.c), the
 *	  unsubscribe link (unsubscribe.c), delivery callbacks (delivery.c) and
 *	  the sender when Twilio refuses a number (worker.c).
 *
 * Callers have an SPI connection and act as the tables' owner (SECURITY
 * DEFINER functions) or as the sender's role (journey_worker, whose
 * policies allow both statements).  A suppression is never removed here:
 * only a START keyword removes its own sms_stop rows (inbound.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"

#include "journey.h"
#include "optout.h"

static SPIPlanPtr suppress_plan = NULL;
static SPIPlanPtr suppress_message_plan = NULL;

static const char *suppress_sql =
"WITH ins AS ("
" INSERT INTO journey.suppressions (business_id, channel, address, reason)"
" SELECT DISTINCT $1, $2, a, $4 FROM pg_catalog.unnest($3::text[]) a"
"  WHERE a IS NOT NULL AND a OPERATOR(pg_catalog.<>) ''"
" ON CONFLICT DO NOTHING RETURNING 1),"
" can AS ("
" UPDATE journey.messages m SET status = 'cancelled',"
"        last_error = 'address suppressed (' OPERATOR(pg_catalog.||) $4 OPERATOR(pg_catalog.||) ') before sending'"
"  WHERE m.business_id OPERATOR(pg_catalog.=) $1 AND m.channel OPERATOR(pg_catalog.=) $2"
"    AND m.status OPERATOR(pg_catalog.=) 'queued'"
"    AND m.to_address OPERATOR(pg_catalog.=) ANY ($3::text[])"
" RETURNING 1)"
" SELECT (SELECT pg_catalog.count(*) FROM ins)::integer, (SELECT pg_catalog.count(*) FROM can)";

int
journey_suppress(Datum business_id, const char *channel, Datum addresses,
				 const char *reason)
{
	Oid			types[4] = {UUIDOID, TEXTOID, TEXTARRAYOID, TEXTOID};
	Datum		values[4];
	bool		isnull;

	values[0] = business_id;
	values[1] = CStringGetTextDatum(channel);
	values[2] = addresses;
	values[3] = CStringGetTextDatum(reason);
	if (journey_spi_kept(&suppress_plan, suppress_sql, 4, types, values, NULL,
						 false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "journey could not write a suppression");
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
}

static const char *suppress_message_sql =
"SELECT m.business_id, m.channel, pg_catalog.array_remove(ARRAY[m.to_address,"
"       CASE WHEN m.channel OPERATOR(pg_catalog.=) 'sms'"
"            THEN journey.normalize_phone(m.to_address) END], NULL)"
"  FROM journey.messages m WHERE m.id OPERATOR(pg_catalog.=) $1";

void
journey_suppress_message_address(int64 message_id, const char *reason)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	Datum		business_id;
	char	   *channel;
	Datum		addresses;
	bool		isnull;

	values[0] = Int64GetDatum(message_id);
	if (journey_spi_kept(&suppress_message_plan, suppress_message_sql, 1, types,
						 values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "journey could not read a message to suppress");
	if (SPI_processed != 1)
		return;					/* deleted meanwhile: nothing to protect */
	business_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	channel = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	addresses = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	/* Copied out of the tuple table the next statement replaces. */
	business_id = datumCopy(business_id, false, UUID_LEN);
	addresses = PointerGetDatum(DatumGetArrayTypePCopy(addresses));
	(void) journey_suppress(business_id, channel, addresses, reason);
}
