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
 *	  the dumped row replaces it (replace_single_row), so the restored
 *	  database resends an interrupted message with the key it was first
 *	  sent with.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "journey.h"

PG_FUNCTION_INFO_V1(journey_replace_single_row);

bool
journey_loading_dump(void)
{
	return !row_security;
}

/*
 * BEFORE INSERT on the one-row tables journey.installation and
 * journey.unsubscribe_secret: the newest row wins, so a dump's row replaces
 * the one CREATE EXTENSION made in the restored database instead of
 * colliding with it.
 */
Datum
journey_replace_single_row(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	char	   *sql;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		elog(ERROR, "journey_replace_single_row must be a BEFORE INSERT row trigger");

	rel = trigdata->tg_relation;
	/* An identifier, not a value: the trigger's own table. */
	sql = psprintf("DELETE FROM %s",
				   quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
											  RelationGetRelationName(rel)));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute(sql, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "replacing the single row of %s failed", RelationGetRelationName(rel));
	SPI_finish();
	return PointerGetDatum(trigdata->tg_trigtuple);
}
