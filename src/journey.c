/*-------------------------------------------------------------------------
 *
 * journey.c
 *	  Module entry point: defines every journey.* setting and, when loaded
 *	  through shared_preload_libraries, registers the sender worker.
 *
 * The SQL functions work as well when the library is loaded on demand;
 * there is no worker then, and messages wait in journey.messages until a
 * server with the library preloaded drains them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "journey.h"
#include "optout.h"

PG_MODULE_MAGIC;

char	   *journey_database_name = NULL;
char	   *journey_worker_role = NULL;
char	   *journey_trusted_claim_roles = NULL;
int			journey_max_concurrency = 64;
int			journey_max_concurrency_per_provider = 16;
int			journey_http_timeout_ms = 10000;
int			journey_max_attempts = 5;
int			journey_batch_size = 500;
int			journey_retry_base_ms = 1000;
int			journey_retry_max_ms = 300000;
int			journey_lease_ms = 60000;
int			journey_poll_interval_ms = 5000;
bool		journey_executor_in_worker = true;
int			journey_executor_batch_size = 500;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomStringVariable("journey.database_name",
							   "Databases whose journey.messages the sender drains, comma-separated.",
							   "Each listed database that exists gets its own sender worker; a change is followed at reload.",
							   &journey_database_name,
							   "postgres",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("journey.worker_role",
							   "Role the sender worker connects as; empty means the bootstrap superuser.",
							   "The role needs to own, or be granted, journey.messages, journey.providers and journey.customers.",
							   &journey_worker_role,
							   "",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("journey.trusted_claim_roles",
							   "Login roles whose request.jwt.claims ''sub'' names the journey member.",
							   "A comma-separated list of role names, such as PostgREST's authenticator.",
							   &journey_trusted_claim_roles,
							   "authenticator",
							   PGC_SUSET, GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("journey.max_concurrency",
							"Requests the sender keeps in flight at once.",
							NULL,
							&journey_max_concurrency,
							64, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("journey.max_concurrency_per_provider",
							"Requests the sender keeps in flight at once to one provider.",
							"One cap per journey.providers row, the shared default provider included: a slow or hanging provider holds up no other.",
							&journey_max_concurrency_per_provider,
							16, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("journey.http_timeout_ms",
							"Time limit of one delivery request, connection included.",
							NULL,
							&journey_http_timeout_ms,
							10000, 100, 600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("journey.max_attempts",
							"Delivery attempts before a message is marked failed.",
							NULL,
							&journey_max_attempts,
							5, 1, 100,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("journey.batch_size",
							"Messages the sender claims in one transaction.",
							NULL,
							&journey_batch_size,
							500, 1, 100000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("journey.retry_base_ms",
							"First retry delay; each further retry doubles it, with jitter.",
							NULL,
							&journey_retry_base_ms,
							1000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("journey.retry_max_ms",
							"Longest retry delay.",
							NULL,
							&journey_retry_max_ms,
							300000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("journey.lease_ms",
							"How long a claimed message belongs to its sender before another may send it again.",
							NULL,
							&journey_lease_ms,
							60000, 1000, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("journey.poll_interval_ms",
							"Longest sleep of an idle sender between looks at the outbox.",
							"The sender is woken at the commit of any transaction that queues messages; this poll is the fallback.",
							&journey_poll_interval_ms,
							5000, 10, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	journey_optout_define_gucs();

	DefineCustomBoolVariable("journey.executor_in_worker",
							 "Whether each sender also runs the executor for its database.",
							 "It runs journey.advance_due_enrollments() when a commit makes enrollments due and at the earliest next_run_at; a pg_cron schedule may run beside it.",
							 &journey_executor_in_worker,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("journey.executor_batch_size",
							"Enrollments the sender's executor advances in one transaction.",
							"Between two batches the sender reads responses and claims messages.",
							&journey_executor_batch_size,
							500, 1, 100000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("journey");
	journey_cron_init();

	if (process_shared_preload_libraries_in_progress)
		journey_sender_register();
}
