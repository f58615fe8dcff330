/*-------------------------------------------------------------------------
 *
 * backup.c
 *	  What makes a logical backup restore to the same journeys: telling a
 *	  dump being loaded from new events, and keeping the installation's
 *	  identifier across dump and restore.
 *
 * Every table and identity sequence is marked with
 * pg_extension_config_dump, so pg_dump and pg_dumpall carry the rows and
 * the sequences' positions.  Loaded back, those rows pass through the
 * extension's triggers, which the restore's CREATE EXTENSION created
 * before the data:
 *
 *	- journey.events' matching trigger would enroll, stop and re-run
 *	  customers the dump already shows enrolled, stopped or finished.  It
 *	  skips rows inserted while row_security is off: pg_dump, pg_dumpall
 *	  and pg_restore put "SET row_security = off" at the top of every
 *	  session they load data in (all formats, COPY and --inserts alike),
 *	  and no application turns it off, since for a role subject to
 *	  row-level security it makes every query on a protected table fail.
 *	  The one exception is a dump taken with --enable-row-security, which
 *	  journey's backups never need (the dump runs as a superuser).
 *	- journey.installation already holds the new id CREATE EXTENSION made;
 *	  the dumped row replaces it (installation_replace), so the restored
 *	  database resends an interrupted message with the key it was first
 *	  sent with.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/rls.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_installation_replace);

bool
journey_loading_dump(void)
{
	return !row_security;
}

/*
 * BEFORE INSERT on journey.installation: the newest row is the
 * installation, so the table keeps one row whoever inserts it.
 */
Datum
journey_installation_replace(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		elog(ERROR, "journey_installation_replace must be a BEFORE INSERT row trigger");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("DELETE FROM journey.installation", false, 0) != SPI_OK_DELETE)
		elog(ERROR, "replacing the installation row failed");
	SPI_finish();
	return PointerGetDatum(trigdata->tg_trigtuple);
}
