-- journey 0.2 -> 0.3: trustworthy journeys.  Each change below is also made
-- by journey--0.3.sql from scratch; sql/upgrade.sql checks that both paths
-- end with identical catalogs and that in-flight data goes on unchanged.

\echo Use "ALTER EXTENSION journey UPDATE TO '0.3'" to load this file. \quit

-- ===== one search_path defence (issue 10) =====
-- Every function that runs queries pins search_path in its declaration,
-- instead of the C code also spelling OPERATOR(pg_catalog.=) everywhere.
ALTER FUNCTION journey.create_sequence(uuid, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.enroll_customer(uuid, uuid, jsonb, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.ingest_event(uuid, text, jsonb, jsonb, text, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.stop_enrollment(uuid, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.match_events() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.member_business_ids() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.create_business(text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.schedule_executor(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.unschedule_executor() SET search_path = pg_catalog, pg_temp;
-- ===== data safety: backups, erasure, retention, health (issue 11) =====

-- The installation: one row, created with the extension and kept by dump
-- and restore, whose id joins every message id in the idempotency keys a
-- provider sees, so two databases, a reinstall or a restore never reuse a
-- key.  Administrators only.  A row loaded from a dump replaces the one
-- CREATE EXTENSION made in the restored database (installation_replace),
-- so the restored database sends with the original's keys; a copy that
-- will send on its own gets a new id with
-- UPDATE journey.installation SET id = gen_random_uuid().
CREATE TABLE journey.installation (
    id                  uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE FUNCTION journey.installation_replace()
RETURNS trigger
AS 'MODULE_PATHNAME', 'journey_installation_replace'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER installation_replace BEFORE INSERT ON journey.installation
    FOR EACH ROW EXECUTE FUNCTION journey.installation_replace();
INSERT INTO journey.installation DEFAULT VALUES;
ALTER TABLE journey.installation ENABLE ROW LEVEL SECURITY;
CREATE POLICY installation_worker ON journey.installation FOR SELECT TO journey_worker
    USING (true);
GRANT SELECT ON journey.installation TO journey_worker;
-- The sender re-checks suppressions when it claims a message.
CREATE POLICY suppressions_worker ON journey.suppressions FOR SELECT TO journey_worker
    USING (true);
GRANT SELECT ON journey.suppressions TO journey_worker;

-- A deleted customer leaves no message behind, in an enrollment or not.
-- 0.2 left the messages of deleted customers outside any enrollment in
-- place, with their addresses: they go now, before the key that forbids
-- them.
DELETE FROM journey.messages m
 WHERE m.customer_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM journey.customers c
                   WHERE c.business_id OPERATOR(pg_catalog.=) m.business_id
                     AND c.id OPERATOR(pg_catalog.=) m.customer_id);
CREATE INDEX messages_customer_idx ON journey.messages (business_id, customer_id);
ALTER TABLE journey.messages ADD CONSTRAINT messages_customer_fkey
    FOREIGN KEY (business_id, customer_id)
    REFERENCES journey.customers (business_id, id) ON DELETE CASCADE;

-- Erasure on request (src/erasure.c): members of the business.
CREATE FUNCTION journey.forget_customer(p_business_id uuid, p_customer_id uuid)
RETURNS bigint
AS 'MODULE_PATHNAME', 'journey_forget_customer'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
GRANT EXECUTE ON FUNCTION journey.forget_customer(uuid, uuid) TO journey_user;

-- Retention (src/retention.c): administrators only.
CREATE FUNCTION journey.purge(p_older_than interval DEFAULT '180 days',
                              p_as_of timestamptz DEFAULT pg_catalog.now())
RETURNS bigint
AS 'MODULE_PATHNAME', 'journey_purge'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

-- The outbox's health, per business and channel.  security_invoker: a
-- tenant sees its own businesses' rows.
CREATE VIEW journey.queue_stats WITH (security_invoker = true) AS
SELECT m.business_id, m.channel,
       pg_catalog.count(*) FILTER (WHERE m.status OPERATOR(pg_catalog.=) 'queued') AS queued,
       pg_catalog.count(*) FILTER (WHERE m.status OPERATOR(pg_catalog.=) 'queued'
                                     AND m.send_after OPERATOR(pg_catalog.<=) pg_catalog.now()) AS due,
       pg_catalog.count(*) FILTER (WHERE m.status OPERATOR(pg_catalog.=) 'sending') AS sending,
       pg_catalog.min(m.send_after) FILTER (WHERE m.status OPERATOR(pg_catalog.=) 'queued'
                                     AND m.send_after OPERATOR(pg_catalog.<=) pg_catalog.now()) AS oldest_due,
       pg_catalog.count(*) FILTER (WHERE m.status OPERATOR(pg_catalog.=) 'sent'
                                     AND m.sent_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 hour')) AS sent_last_hour,
       pg_catalog.count(*) FILTER (WHERE m.status OPERATOR(pg_catalog.=) 'failed'
                                     AND m.send_after OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 hour')) AS failed_last_hour
  FROM journey.messages m
 WHERE m.status IN ('queued', 'sending')
    OR (m.status IN ('sent', 'failed')
        AND COALESCE(m.sent_at, m.send_after) OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 hour'))
 GROUP BY m.business_id, m.channel;
COMMENT ON VIEW journey.queue_stats IS
    'the outbox per business and channel: queued, due, sending, the oldest due message, sent and failed in the last hour';
GRANT SELECT ON journey.queue_stats TO journey_user;

-- The running senders, from shared memory (src/health.c): administrators.
CREATE FUNCTION journey.sender_status(
    OUT datname name, OUT pid integer, OUT started_at timestamptz,
    OUT last_claim_at timestamptz, OUT last_result_at timestamptz,
    OUT in_flight integer, OUT sent bigint, OUT failed bigint, OUT retried bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'journey_sender_status'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

-- Says so when no sender serves this database (not in
-- journey.database_name, or the library not preloaded).
CREATE FUNCTION journey.warn_if_unserved()
RETURNS void
AS 'MODULE_PATHNAME', 'journey_warn_if_unserved'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
SELECT journey.warn_if_unserved();

-- Administrators' functions: the install script's last section revoked
-- PUBLIC's EXECUTE from what came before it; these come after.
REVOKE ALL ON FUNCTION journey.installation_replace(), journey.purge(interval, timestamptz),
    journey.sender_status(), journey.warn_if_unserved(),
    journey.forget_customer(uuid, uuid) FROM PUBLIC;
REVOKE ALL ON journey.installation, journey.queue_stats FROM PUBLIC;

-- DROP EXTENSION removes the pg_cron job also in a session that never
-- loaded the library (src/cron.c).
CREATE FUNCTION journey.drop_cron_job()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'journey_drop_cron_job'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION journey.drop_cron_job() FROM PUBLIC;
CREATE EVENT TRIGGER journey_drop_cron_job ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION')
    EXECUTE FUNCTION journey.drop_cron_job();

-- pg_dump and pg_dumpall keep every row of every table and the position of
-- every identity sequence.  Loading the dump replays nothing: see
-- journey_loading_dump (src/backup.c).
DO $do$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS t FROM pg_catalog.pg_class c
             WHERE c.relnamespace OPERATOR(pg_catalog.=) 'journey'::regnamespace
               AND c.relkind IN ('r', 'p', 'S')
             ORDER BY c.relname LOOP
        PERFORM pg_catalog.pg_extension_config_dump(r.t, '');
    END LOOP;
END
$do$;
