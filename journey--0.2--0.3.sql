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
-- CREATE EXTENSION made in the restored database (replace_single_row),
-- so the restored database sends with the original's keys; a copy that
-- will send on its own gets a new id with
-- UPDATE journey.installation SET id = gen_random_uuid().
CREATE TABLE journey.installation (
    id                  uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE FUNCTION journey.replace_single_row()
RETURNS trigger
AS 'MODULE_PATHNAME', 'journey_replace_single_row'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER installation_replace BEFORE INSERT ON journey.installation
    FOR EACH ROW EXECUTE FUNCTION journey.replace_single_row();
INSERT INTO journey.installation DEFAULT VALUES;
ALTER TABLE journey.installation ENABLE ROW LEVEL SECURITY;
CREATE POLICY installation_worker ON journey.installation FOR SELECT TO journey_worker
    USING (true);
GRANT SELECT ON journey.installation TO journey_worker;
-- The sender re-checks suppressions when it claims a message: its policy
-- on journey.suppressions (suppressions_worker) is in the opt-outs section.

-- A deleted customer leaves no message behind, in an enrollment or not.
-- 0.2 left the messages of deleted customers outside any enrollment in
-- place, with their addresses: they go now, before the key that forbids
-- them.
DELETE FROM journey.messages m
 WHERE m.customer_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM journey.customers c
                   WHERE c.business_id OPERATOR(pg_catalog.=) m.business_id
                     AND c.id OPERATOR(pg_catalog.=) m.customer_id);
-- Its look-ups (the cascade, an erasure) use messages_customer_purpose_idx,
-- which leads with (business_id, customer_id).
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
REVOKE ALL ON FUNCTION journey.replace_single_row(), journey.purge(interval, timestamptz),
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

-- ===== opt-outs and delivery feedback (issue 13) =====
-- SPEC section 9, frequency caps and the SMS window (section 4) and the
-- roles journey_public and journey_webhook (section 6).  The C side is in
-- src/suppress.c, src/unsubscribe.c, src/inbound.c, src/delivery.c and
-- src/send_rules.c.

DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'journey_public') THEN
        CREATE ROLE journey_public NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'journey_webhook') THEN
        CREATE ROLE journey_webhook NOLOGIN;
    END IF;
END
$do$;

-- A purpose -> interval map, every interval > 0; false (a 23514 from the
-- CHECK) for anything else.  journey.set_frequency_caps says what is wrong.
CREATE FUNCTION journey.frequency_caps_valid(p_caps jsonb)
RETURNS boolean
AS 'MODULE_PATHNAME', 'journey_frequency_caps_valid'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

ALTER TABLE journey.businesses
    ADD COLUMN frequency_caps jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT businesses_frequency_caps_check CHECK (journey.frequency_caps_valid(frequency_caps));

-- Sets a business's caps, raising 22023 naming the bad entry.
CREATE FUNCTION journey.set_frequency_caps(p_business_id uuid, p_caps jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'journey_set_frequency_caps'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

ALTER TABLE journey.messages
    ADD COLUMN delivery_status text
        CONSTRAINT messages_delivery_status_check
        CHECK (delivery_status IN ('delivered', 'undelivered', 'bounced', 'complained')),
    ADD COLUMN delivery_updated_at timestamptz;
-- The frequency caps' look-up: a customer's earlier messages of a purpose;
-- and, by its first two columns, a customer's or a business's messages (a
-- separate (business_id, customer_id) index would cost each of a message's
-- three writes, insert, claim and result, one more index entry).
CREATE INDEX messages_customer_purpose_idx
    ON journey.messages (business_id, customer_id, message_purpose, send_after);
-- Delivery callbacks find their message by the provider's id.
CREATE INDEX messages_provider_message_id_idx
    ON journey.messages (provider_message_id) WHERE provider_message_id IS NOT NULL;
-- Inbound SMS find the customers behind a number written in any format.
CREATE FUNCTION journey.normalize_phone(p_phone text)
RETURNS text
AS 'MODULE_PATHNAME', 'journey_normalize_phone'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE INDEX customers_phone_normalized_idx
    ON journey.customers (journey.normalize_phone(phone)) WHERE phone IS NOT NULL;

-- The key of the unsubscribe tokens: 32 bytes from pg_strong_random, made
-- once by the install script.  Admin-only (row-level security on, no
-- policy, no grant); dumped with the data, so a restore keeps old links
-- working.
CREATE FUNCTION journey.new_unsubscribe_secret()
RETURNS bytea
AS 'MODULE_PATHNAME', 'journey_new_unsubscribe_secret'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
CREATE TABLE journey.unsubscribe_secret (
    one_row     boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    secret      bytea NOT NULL CHECK (pg_catalog.length(secret) OPERATOR(pg_catalog.>=) 32),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
INSERT INTO journey.unsubscribe_secret (secret) SELECT journey.new_unsubscribe_secret();
-- A dump's secret replaces this one on restore, so restored links stay valid.
CREATE TRIGGER unsubscribe_secret_replace BEFORE INSERT ON journey.unsubscribe_secret
    FOR EACH ROW EXECUTE FUNCTION journey.replace_single_row();
SELECT pg_catalog.pg_extension_config_dump('journey.unsubscribe_secret', '');

-- Inbound SMS already handled, by the provider's message id: a repeated
-- webhook changes nothing and gets the same answer.  Admin-only.
CREATE TABLE journey.inbound_sms (
    provider_message_id text PRIMARY KEY,
    to_number           text NOT NULL,
    from_number         text NOT NULL,
    keyword             text,
    reply               text,
    received_at         timestamptz NOT NULL
);

-- Delivery callbacks that arrived before the sender wrote the provider's
-- id of their message (the provider's callback overtook the sender's
-- write); the sender applies them when it writes the id.  Admin-only.
CREATE TABLE journey.delivery_pending (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel             text NOT NULL,
    provider_message_id text NOT NULL,
    provider_kind       text NOT NULL,
    status              text,
    suppress            text,
    detail              text,
    received_at         timestamptz NOT NULL
);
CREATE INDEX delivery_pending_provider_message_id_idx
    ON journey.delivery_pending (provider_message_id);
ALTER TABLE journey.delivery_pending ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON journey.delivery_pending FROM PUBLIC;

-- Each delivery state a message went through, once (repeats add nothing).
CREATE TABLE journey.message_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id     uuid NOT NULL REFERENCES journey.businesses (id) ON DELETE CASCADE,
    message_id      bigint NOT NULL REFERENCES journey.messages (id) ON DELETE CASCADE,
    status          text NOT NULL,
    provider_kind   text NOT NULL,
    detail          text,
    received_at     timestamptz NOT NULL,
    CONSTRAINT message_deliveries_message_id_status_key UNIQUE (message_id, status)
);
CREATE INDEX message_deliveries_business_idx ON journey.message_deliveries (business_id);
ALTER TABLE journey.message_deliveries ENABLE ROW LEVEL SECURITY;
CREATE POLICY message_deliveries_member ON journey.message_deliveries TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));
GRANT SELECT ON journey.message_deliveries TO journey_user;

-- The URL for List-Unsubscribe and {{unsubscribe_url}}: journey.unsubscribe_url
-- with a token for (business, channel, address); null while the setting is
-- empty.  SECURITY DEFINER: it reads the secret for the sender.
CREATE FUNCTION journey.unsubscribe_link(p_business_id uuid, p_channel text, p_address text)
RETURNS text
AS 'MODULE_PATHNAME', 'journey_unsubscribe_link'
LANGUAGE C STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- The three entry points of the outside world.  SECURITY DEFINER: their
-- callers (anonymous web visitors, a provider's webhook) are members of no
-- business; each checks what it is given (a signed token, a number that
-- a business sends from, a message id) before it writes as the owner.
CREATE FUNCTION journey.unsubscribe(p_token text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'journey_unsubscribe'
LANGUAGE C VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION journey.ingest_inbound_sms(p_to text, p_from text, p_body text,
                                           p_provider_message_id text DEFAULT NULL,
                                           p_received_at timestamptz DEFAULT pg_catalog.now())
RETURNS text
AS 'MODULE_PATHNAME', 'journey_ingest_inbound_sms'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION journey.ingest_delivery_event(p_provider_kind text, p_payload jsonb,
                                              p_received_at timestamptz DEFAULT pg_catalog.now())
RETURNS bigint
AS 'MODULE_PATHNAME', 'journey_ingest_delivery_event'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION
    journey.frequency_caps_valid(jsonb),
    journey.set_frequency_caps(uuid, jsonb),
    journey.normalize_phone(text),
    journey.new_unsubscribe_secret(),
    journey.unsubscribe_link(uuid, text, text),
    journey.unsubscribe(text),
    journey.ingest_inbound_sms(text, text, text, text, timestamptz),
    journey.ingest_delivery_event(text, jsonb, timestamptz)
    FROM PUBLIC;
REVOKE ALL ON journey.unsubscribe_secret, journey.inbound_sms,
    journey.message_deliveries FROM PUBLIC;
ALTER TABLE journey.unsubscribe_secret ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey.inbound_sms ENABLE ROW LEVEL SECURITY;

GRANT USAGE ON SCHEMA journey TO journey_public, journey_webhook;
GRANT EXECUTE ON FUNCTION journey.unsubscribe(text)
    TO journey_public, journey_webhook, journey_user;
GRANT EXECUTE ON FUNCTION
    journey.ingest_inbound_sms(text, text, text, text, timestamptz),
    journey.ingest_delivery_event(text, jsonb, timestamptz)
    TO journey_webhook;
-- Members set their caps (the CHECK validates a direct write).
GRANT UPDATE (frequency_caps) ON journey.businesses TO journey_user;
GRANT EXECUTE ON FUNCTION
    journey.set_frequency_caps(uuid, jsonb),
    journey.frequency_caps_valid(jsonb),
    journey.normalize_phone(text)
    TO journey_user;
-- The sender: the link for List-Unsubscribe, and Twilio's "unsubscribed"
-- and "invalid number" answers turned into suppressions.
GRANT EXECUTE ON FUNCTION journey.unsubscribe_link(uuid, text, text),
    journey.normalize_phone(text)
    TO journey_worker;
GRANT SELECT, INSERT ON journey.suppressions TO journey_worker;
CREATE POLICY suppressions_worker ON journey.suppressions TO journey_worker
    USING (true) WITH CHECK (true);

-- The timeline, with a row for each delivery state of a message.
-- ===== versions and templates (issue 14) =====
-- A journey changes by versions: update_sequence (src/update_sequence.c)
-- writes its steps anew under sequences.version + 1 and keeps every earlier
-- version's steps, so an enrollment runs to its end on the version it is
-- pinned to (sequence_enrollments.sequence_version) unless the update moves
-- it.  Written the same way by the fresh install and the upgrade, so both
-- end with identical catalogs.  The defaults of 1 make every row written
-- before versions existed, and a direct INSERT by the tables' owner that
-- names no version, belong to the first version, whose steps always stay.

ALTER TABLE journey.sequences
    ADD COLUMN version integer NOT NULL DEFAULT 1
        CONSTRAINT sequences_version_check CHECK (version OPERATOR(pg_catalog.>=) 1);

ALTER TABLE journey.sequence_steps
    ADD COLUMN version integer NOT NULL DEFAULT 1
        CONSTRAINT sequence_steps_version_check CHECK (version OPERATOR(pg_catalog.>=) 1);
ALTER TABLE journey.sequence_steps
    DROP CONSTRAINT sequence_steps_sequence_id_step_index_key;
ALTER TABLE journey.sequence_steps
    ADD CONSTRAINT sequence_steps_sequence_id_version_step_index_key
        UNIQUE (sequence_id, version, step_index);

ALTER TABLE journey.sequence_enrollments
    ADD COLUMN sequence_version integer NOT NULL DEFAULT 1
        CONSTRAINT sequence_enrollments_sequence_version_check
        CHECK (sequence_version OPERATOR(pg_catalog.>=) 1);

-- Which version of its journey each decision was taken on (null: the row
-- predates 0.3; the upgrade sets those to 1, the only version then).
ALTER TABLE journey.enrollment_log ADD COLUMN sequence_version integer;

-- Reusable message texts.  A send step naming one (sequence_steps.template_id)
-- is rendered from the template's text as it is when the step runs.
CREATE TABLE journey.templates (
    id                  uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    business_id         uuid NOT NULL REFERENCES journey.businesses (id) ON DELETE CASCADE,
    name                text NOT NULL CHECK (name OPERATOR(pg_catalog.<>) ''),
    channel             text NOT NULL CHECK (channel IN ('email', 'sms')),
    subject             text,
    body                text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT templates_business_id_name_key UNIQUE (business_id, name),
    -- Lets steps reference (business_id, id): never another tenant's template.
    CONSTRAINT templates_business_id_id_key UNIQUE (business_id, id)
);

-- NO ACTION, not RESTRICT: checked at the end of the statement, so deleting
-- a business (which cascades to both its templates and its steps) works,
-- while deleting a template some step of any version uses is refused (23503).
UPDATE journey.sequence_steps SET template_id = NULL
 WHERE template_id IS NOT NULL;
ALTER TABLE journey.sequence_steps
    ADD CONSTRAINT sequence_steps_template_fkey FOREIGN KEY (business_id, template_id)
        REFERENCES journey.templates (business_id, id);
CREATE INDEX sequence_steps_template_idx ON journey.sequence_steps (template_id)
    WHERE template_id IS NOT NULL;

CREATE TRIGGER templates_touch BEFORE UPDATE ON journey.templates
    FOR EACH ROW EXECUTE FUNCTION journey.touch_updated_at();

-- Validates a template's texts as create_template does, whoever writes them
-- (22023): a member's direct UPDATE of subject or body included.
CREATE FUNCTION journey.check_template_row()
RETURNS trigger
AS 'MODULE_PATHNAME', 'journey_check_template_row'
LANGUAGE C;
CREATE TRIGGER templates_check BEFORE INSERT OR UPDATE OF channel, subject, body
    ON journey.templates
    FOR EACH ROW EXECUTE FUNCTION journey.check_template_row();

CREATE FUNCTION journey.create_template(p_business_id uuid, p_name text, p_channel text,
                                        p_subject text, p_body text)
RETURNS uuid
AS 'MODULE_PATHNAME', 'journey_create_template'
LANGUAGE C VOLATILE;

-- Writes a new version of a journey (SPEC section 10); p_in_flight says
-- what becomes of its active enrollments: keep, move or exit.
CREATE FUNCTION journey.update_sequence(p_sequence_id uuid, p_definition jsonb,
                                        p_in_flight text DEFAULT 'keep')
RETURNS integer
AS 'MODULE_PATHNAME', 'journey_update_sequence'
LANGUAGE C VOLATILE;

ALTER TABLE journey.templates ENABLE ROW LEVEL SECURITY;
CREATE POLICY templates_member ON journey.templates TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));

-- Members create templates through create_template (validated) and may
-- rename, edit and delete them directly; channel and business stay fixed.
REVOKE ALL ON journey.templates FROM PUBLIC;
GRANT SELECT, DELETE ON journey.templates TO journey_user;
GRANT UPDATE (name, subject, body) ON journey.templates TO journey_user;
-- Versions are written by update_sequence only.
REVOKE ALL ON FUNCTION journey.check_template_row(),
    journey.create_template(uuid, text, text, text, text),
    journey.update_sequence(uuid, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION journey.create_template(uuid, text, text, text, text),
    journey.update_sequence(uuid, jsonb, text) TO journey_user;

-- Every row of an enrollment names the version its decision belongs to.
-- enrolled: the version the enrollment began on (a 'moved' row records
-- what it was moved from); a message and its delivery states: the version
-- of the step decision that made the message, the last log row of that
-- step (steps only lead forward, so an enrollment runs each step once).
CREATE OR REPLACE VIEW journey.timeline WITH (security_invoker = true) AS
SELECT e.business_id, e.customer_id, e.sequence_id, e.id AS enrollment_id,
       e.enrolled_at AS at, NULL::integer AS step_index,
       'enrolled'::text AS what,
       CASE WHEN e.trigger_event_id IS NULL THEN 'enrolled by enroll_customer'
            ELSE 'enrolled by event ' OPERATOR(pg_catalog.||)
                 COALESCE(ev.event_type, '(deleted)') OPERATOR(pg_catalog.||)
                 ' #' OPERATOR(pg_catalog.||) e.trigger_event_id::text
       END AS detail,
       0 AS phase, NULL::bigint AS ref_id,
       COALESCE((SELECT pg_catalog.substring(l.detail, 'from version ([0-9]+)')::integer
                   FROM journey.enrollment_log l
                  WHERE l.enrollment_id OPERATOR(pg_catalog.=) e.id
                    AND l.outcome OPERATOR(pg_catalog.=) 'moved'
                  ORDER BY l.id LIMIT 1),
                e.sequence_version) AS sequence_version
  FROM journey.sequence_enrollments e
  LEFT JOIN journey.events ev ON ev.id OPERATOR(pg_catalog.=) e.trigger_event_id
UNION ALL
SELECT e.business_id, e.customer_id, e.sequence_id, e.id,
       l.at, l.step_index, l.outcome, l.detail,
       1, l.id, l.sequence_version
  FROM journey.sequence_enrollments e
  JOIN journey.enrollment_log l ON l.enrollment_id OPERATOR(pg_catalog.=) e.id
UNION ALL
SELECT e.business_id, e.customer_id, e.sequence_id, e.id,
       COALESCE(m.sent_at, m.send_after), m.step_index,
       'message ' OPERATOR(pg_catalog.||) m.status,
       pg_catalog.format('%s to %s, %s attempt(s)%s%s', m.channel, m.to_address,
                         m.attempts, ', provider id ' OPERATOR(pg_catalog.||) m.provider_message_id,
                         ': ' OPERATOR(pg_catalog.||) m.last_error),
       2, m.id, mv.sequence_version
  FROM journey.sequence_enrollments e
  JOIN journey.messages m ON m.enrollment_id OPERATOR(pg_catalog.=) e.id
  LEFT JOIN LATERAL (
       SELECT l.sequence_version FROM journey.enrollment_log l
        WHERE l.enrollment_id OPERATOR(pg_catalog.=) e.id
          AND l.step_index OPERATOR(pg_catalog.=) m.step_index
          AND l.outcome OPERATOR(pg_catalog.<>) 'moved'
        ORDER BY l.id DESC LIMIT 1) mv ON true
UNION ALL
SELECT e.business_id, e.customer_id, e.sequence_id, e.id,
       d.received_at, m.step_index,
       'delivery ' OPERATOR(pg_catalog.||) d.status,
       pg_catalog.format('%s to %s, reported by %s%s', m.channel, m.to_address,
                         d.provider_kind, ': ' OPERATOR(pg_catalog.||) d.detail),
       3, d.id, mv.sequence_version
  FROM journey.sequence_enrollments e
  JOIN journey.messages m ON m.enrollment_id OPERATOR(pg_catalog.=) e.id
  JOIN journey.message_deliveries d ON d.message_id OPERATOR(pg_catalog.=) m.id
  LEFT JOIN LATERAL (
       SELECT l.sequence_version FROM journey.enrollment_log l
        WHERE l.enrollment_id OPERATOR(pg_catalog.=) e.id
          AND l.step_index OPERATOR(pg_catalog.=) m.step_index
          AND l.outcome OPERATOR(pg_catalog.<>) 'moved'
        ORDER BY l.id DESC LIMIT 1) mv ON true;

-- ===== latency: the executor in the sender (issue 16) =====
-- What each sender's executor did since the sender started
-- (src/worker_executor.c): commits that woke it, its passes, the
-- enrollments they advanced, and when it runs next.  Administrators only.
CREATE FUNCTION journey.executor_status(
    OUT datname name, OUT pid integer, OUT enabled boolean, OUT wakeups bigint,
    OUT passes bigint, OUT advanced bigint, OUT last_pass_at timestamptz,
    OUT next_pass_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'journey_executor_status'
LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION journey.executor_status() FROM PUBLIC;


-- Every row of the new table is data pg_dump keeps.
SELECT pg_catalog.pg_extension_config_dump('journey.templates', '');

-- Decisions taken before versions existed were all on version 1.
UPDATE journey.enrollment_log SET sequence_version = 1 WHERE sequence_version IS NULL;

-- ===== simulation and statistics (issue 15) =====

-- What no base table records: how many enrollments arrived at each step
-- after the first (a wait step leaves no log row, and an enrollment's
-- current_step_index keeps only where it is now), and how many times each
-- step skipped or deferred a send.  The executor adds to these counters in
-- the transaction that takes the decisions, one upsert per call, so they
-- commit or roll back with the decisions themselves.  Concurrent executors
-- add to different shards (by backend), so they never queue on a counter
-- row; the views sum the shards.
CREATE TABLE journey.step_counters (
    business_id         uuid NOT NULL,
    sequence_id         uuid NOT NULL,
    version             integer NOT NULL,
    step_index          integer NOT NULL,
    shard               integer NOT NULL,
    reached             bigint NOT NULL DEFAULT 0,
    skipped             bigint NOT NULL DEFAULT 0,
    deferred            bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (sequence_id, version, step_index, shard),
    CONSTRAINT step_counters_sequence_fkey FOREIGN KEY (business_id, sequence_id)
        REFERENCES journey.sequences (business_id, id) ON DELETE CASCADE
);
CREATE INDEX step_counters_business_idx ON journey.step_counters (business_id);
ALTER TABLE journey.step_counters ENABLE ROW LEVEL SECURITY;
CREATE POLICY step_counters_member ON journey.step_counters FOR SELECT TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));
GRANT SELECT ON journey.step_counters TO journey_user;

-- wait_until steps (SPEC section 4).  The definition module owns how the
-- step is stored; until it lands here: timeout_ms in wait_ms (so arriving
-- sets next_run_at = t + timeout_ms like any delay) and {"event", "then",
-- "else"} in branch_config.  The index lets the events trigger find a
-- business's awaited event types without reading other businesses' steps.
ALTER TABLE journey.sequence_steps DROP CONSTRAINT sequence_steps_kind_check;
ALTER TABLE journey.sequence_steps ADD CONSTRAINT sequence_steps_kind_check
    CHECK (kind IN ('send_email', 'send_sms', 'wait', 'branch', 'wait_until'));
ALTER TABLE journey.sequence_steps DROP CONSTRAINT sequence_steps_branch_config_check;
ALTER TABLE journey.sequence_steps ADD CONSTRAINT sequence_steps_branch_config_check
    CHECK ((kind IN ('branch', 'wait_until')) OPERATOR(pg_catalog.=) (branch_config IS NOT NULL));
CREATE INDEX sequence_steps_wait_until_idx
    ON journey.sequence_steps (business_id, (branch_config OPERATOR(pg_catalog.->>) 'event'))
    WHERE kind = 'wait_until';

-- The version of the journey that wrote the message (the executor sets it
-- from the enrollment): with it the funnel counts a step's messages from
-- journey.messages alone instead of joining every message to its
-- enrollment.  Null on messages not written by a journey.
ALTER TABLE journey.messages ADD COLUMN sequence_version integer;
-- Messages written before 0.3 are all of version 1 (the only version
-- there was); taken from the enrollment all the same, so the funnel counts
-- each message under the version its enrollment is on.
UPDATE journey.messages m
   SET sequence_version = COALESCE(e.sequence_version, 1)
  FROM journey.sequence_enrollments e
 WHERE e.id OPERATOR(pg_catalog.=) m.enrollment_id;
UPDATE journey.messages
   SET sequence_version = 1
 WHERE sequence_id IS NOT NULL AND sequence_version IS NULL;
-- What the views read, so that one journey's stats are index-only scans
-- of its own rows: every column they count is in an index.  business_id
-- comes second where it is a key so that a member's row-level security
-- condition is an index condition, evaluated once per scan, rather than a
-- filter calling member_business_ids() for every row.
--
-- Enrollments are read in two parts, so that the executor's writes pay for
-- no index of the stats' own: an active enrollment's row is rewritten at
-- every step (next_run_at is indexed, so never a HOT update), and each
-- rewrite inserts into every index whose predicate it meets.  Active rows
-- are counted from the one-active index, which the executor's updates
-- write anyway (its included columns widen it, they add no insertion);
-- finished and stopped rows from a partial index that a row enters once,
-- when it stops being active.  W1 (test/bench/versions.sh): 2,297 bytes of
-- WAL an enrollment with a full stats index, 2,129 without; this layout
-- stays within a few bytes of the latter.
DROP INDEX journey.sequence_enrollments_one_active_idx;
CREATE UNIQUE INDEX sequence_enrollments_one_active_idx
    ON journey.sequence_enrollments (sequence_id, customer_id)
    INCLUDE (business_id, sequence_version) WHERE status = 'active';
CREATE INDEX sequence_enrollments_stats_idx
    ON journey.sequence_enrollments (sequence_id, business_id, sequence_version, status,
                                     current_step_index) INCLUDE (stop_reason)
    WHERE status <> 'active';
-- A journey's messages: its rate windows (sequence_id, business_id,
-- send_after) and, from the included columns, its funnel.  It takes the
-- place of 0.2's messages_business_idx (business_id, sequence_id,
-- send_after), which served the rate windows alone, so that the stats cost
-- a message no index insertion of their own.  business_id-only scans (the
-- tenant's, the business cascade) use messages_customer_purpose_idx.
DROP INDEX journey.messages_business_idx;
CREATE INDEX messages_sequence_idx
    ON journey.messages (sequence_id, business_id, send_after)
    INCLUDE (sequence_version, step_index, status, delivery_status);

-- The funnel of every step.  reached: enrollments that arrived at the
-- step (every enrollment of a version arrives at its first step; the
-- executor counts arrivals at the others); queued, sent, delivered, failed:
-- the step's messages by what journey.messages says of them now; skipped,
-- deferred: the step's skipped_* and deferred_* decisions; stopped_here:
-- enrollments stopped while at the step.  A filter on sequence_id reaches
-- every part through an index (the planner pushes it into each group and
-- each branch of a UNION ALL); the groups name business_id, which
-- sequence_id determines, so that the enrollments' groups follow their
-- indexes' order (the messages' are hashed: their index is ordered for the
-- rate windows).  Enrollments are counted in two branches, the active ones
-- and the others, each matching its partial index.
CREATE VIEW journey.step_stats WITH (security_invoker = true) AS
SELECT st.business_id, st.sequence_id, st.version, st.step_index, st.kind,
       COALESCE(c.reached, 0) OPERATOR(pg_catalog.+)
           CASE WHEN st.step_index OPERATOR(pg_catalog.=) f.first_step
                THEN COALESCE(t.enrolled, 0) ELSE 0 END AS reached,
       COALESCE(m.queued, 0) AS queued,
       COALESCE(m.sent, 0) AS sent,
       COALESCE(m.delivered, 0) AS delivered,
       COALESCE(m.failed, 0) AS failed,
       COALESCE(c.skipped, 0) AS skipped,
       COALESCE(c.deferred, 0) AS deferred,
       COALESCE(h.stopped_here, 0) AS stopped_here
  FROM journey.sequence_steps st
  JOIN (SELECT s.sequence_id, s.version, pg_catalog.min(s.step_index) AS first_step
          FROM journey.sequence_steps s GROUP BY s.sequence_id, s.version) f
    ON f.sequence_id OPERATOR(pg_catalog.=) st.sequence_id
   AND f.version OPERATOR(pg_catalog.=) st.version
  LEFT JOIN (SELECT k.sequence_id, k.version, k.step_index,
                    pg_catalog.sum(k.reached)::bigint AS reached,
                    pg_catalog.sum(k.skipped)::bigint AS skipped,
                    pg_catalog.sum(k.deferred)::bigint AS deferred
               FROM journey.step_counters k
              GROUP BY k.sequence_id, k.version, k.step_index) c
    ON c.sequence_id OPERATOR(pg_catalog.=) st.sequence_id
   AND c.version OPERATOR(pg_catalog.=) st.version
   AND c.step_index OPERATOR(pg_catalog.=) st.step_index
  LEFT JOIN (SELECT v.sequence_id, v.sequence_version,
                    pg_catalog.sum(v.enrolled)::bigint AS enrolled
               FROM (SELECT e.sequence_id, e.sequence_version, pg_catalog.count(*) AS enrolled
                       FROM journey.sequence_enrollments e
                      WHERE e.status OPERATOR(pg_catalog.=) 'active'
                      GROUP BY e.sequence_id, e.business_id, e.sequence_version
                     UNION ALL
                     SELECT e.sequence_id, e.sequence_version, pg_catalog.count(*)
                       FROM journey.sequence_enrollments e
                      WHERE e.status OPERATOR(pg_catalog.<>) 'active'
                      GROUP BY e.sequence_id, e.business_id, e.sequence_version) v
              GROUP BY v.sequence_id, v.sequence_version) t
    ON t.sequence_id OPERATOR(pg_catalog.=) st.sequence_id
   AND t.sequence_version OPERATOR(pg_catalog.=) st.version
  LEFT JOIN (SELECT e.sequence_id, e.sequence_version, e.current_step_index,
                    pg_catalog.count(*) AS stopped_here
               FROM journey.sequence_enrollments e
              WHERE e.status OPERATOR(pg_catalog.=) 'stopped'
              GROUP BY e.sequence_id, e.business_id, e.sequence_version, e.current_step_index) h
    ON h.sequence_id OPERATOR(pg_catalog.=) st.sequence_id
   AND h.sequence_version OPERATOR(pg_catalog.=) st.version
   AND h.current_step_index OPERATOR(pg_catalog.=) st.step_index
  LEFT JOIN (SELECT ms.sequence_id, ms.sequence_version, ms.step_index,
                    pg_catalog.count(*) AS queued,
                    pg_catalog.count(*) FILTER (WHERE ms.status OPERATOR(pg_catalog.=) 'sent') AS sent,
                    pg_catalog.count(*) FILTER (WHERE ms.delivery_status OPERATOR(pg_catalog.=) 'delivered') AS delivered,
                    pg_catalog.count(*) FILTER (WHERE ms.status OPERATOR(pg_catalog.=) 'failed') AS failed
               FROM journey.messages ms
              GROUP BY ms.sequence_id, ms.business_id, ms.sequence_version, ms.step_index) m
    ON m.sequence_id OPERATOR(pg_catalog.=) st.sequence_id
   AND m.sequence_version OPERATOR(pg_catalog.=) st.version
   AND m.step_index OPERATOR(pg_catalog.=) st.step_index;

COMMENT ON VIEW journey.step_stats IS
    'one journey''s funnel per version and step: reached, queued, sent, delivered, failed, skipped, deferred, stopped_here';

-- Where a journey's enrollments stand.  exited: stopped by an exit event.
-- Active and other enrollments in two branches, as in step_stats.
CREATE VIEW journey.sequence_stats WITH (security_invoker = true) AS
SELECT s.business_id, s.id AS sequence_id,
       COALESCE(a.active, 0) OPERATOR(pg_catalog.+) COALESCE(e.finished, 0)
           OPERATOR(pg_catalog.+) COALESCE(e.stopped, 0) AS enrolled,
       COALESCE(a.active, 0) AS active,
       COALESCE(e.finished, 0) AS finished,
       COALESCE(e.stopped, 0) AS stopped,
       COALESCE(e.exited, 0) AS exited
  FROM journey.sequences s
  LEFT JOIN (SELECT x.sequence_id, pg_catalog.count(*) AS active
               FROM journey.sequence_enrollments x
              WHERE x.status OPERATOR(pg_catalog.=) 'active'
              GROUP BY x.sequence_id, x.business_id) a
    ON a.sequence_id OPERATOR(pg_catalog.=) s.id
  LEFT JOIN (SELECT x.sequence_id,
                    pg_catalog.count(*) FILTER (WHERE x.status OPERATOR(pg_catalog.=) 'finished') AS finished,
                    pg_catalog.count(*) FILTER (WHERE x.status OPERATOR(pg_catalog.=) 'stopped') AS stopped,
                    pg_catalog.count(*) FILTER (WHERE x.status OPERATOR(pg_catalog.=) 'stopped'
                        AND x.stop_reason OPERATOR(pg_catalog.~~) 'exit\_event:%') AS exited
               FROM journey.sequence_enrollments x
              WHERE x.status OPERATOR(pg_catalog.<>) 'active'
              GROUP BY x.sequence_id, x.business_id) e
    ON e.sequence_id OPERATOR(pg_catalog.=) s.id;

COMMENT ON VIEW journey.sequence_stats IS
    'one row per journey: enrolled, active, finished, stopped, exited (stopped by an exit event)';

GRANT SELECT ON journey.step_stats, journey.sequence_stats TO journey_user;

-- What a journey would do to one customer from p_from to p_until, with
-- p_events at their times: the executor's own decisions, in time order,
-- each queued message rendered on its row.  Runs the real executor on a
-- virtual clock inside a subtransaction it rolls back (src/simulate.c):
-- it writes nothing.  Members of the journey's business only.
CREATE FUNCTION journey.simulate(p_sequence_id uuid, p_customer jsonb,
                                 p_from timestamptz, p_until timestamptz,
                                 p_events jsonb DEFAULT '[]')
RETURNS TABLE (at timestamptz, step_index integer, outcome text, detail text,
               channel text, to_address text, subject text, body text)
AS 'MODULE_PATHNAME', 'journey_simulate'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off;

-- The same for a definition not saved yet, validated as create_sequence does.
CREATE FUNCTION journey.simulate(p_business_id uuid, p_definition jsonb, p_customer jsonb,
                                 p_from timestamptz, p_until timestamptz,
                                 p_events jsonb DEFAULT '[]')
RETURNS TABLE (at timestamptz, step_index integer, outcome text, detail text,
               channel text, to_address text, subject text, body text)
AS 'MODULE_PATHNAME', 'journey_simulate_draft'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off;

GRANT EXECUTE ON FUNCTION
    journey.simulate(uuid, jsonb, timestamptz, timestamptz, jsonb),
    journey.simulate(uuid, jsonb, jsonb, timestamptz, timestamptz, jsonb)
    TO journey_user;
REVOKE ALL ON FUNCTION journey.simulate(uuid, jsonb, timestamptz, timestamptz, jsonb),
    journey.simulate(uuid, jsonb, jsonb, timestamptz, timestamptz, jsonb) FROM PUBLIC;

REVOKE ALL ON journey.step_counters, journey.step_stats, journey.sequence_stats FROM PUBLIC;

-- ===== isolation and hardening (issue 12): functions =====

CREATE FUNCTION journey.exit_event_types_are_valid(p_types text[])
RETURNS boolean
AS 'MODULE_PATHNAME', 'journey_exit_event_types_are_valid'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
REVOKE ALL ON FUNCTION journey.exit_event_types_are_valid(text[]) FROM PUBLIC;
-- A CHECK constraint's function needs EXECUTE of whoever writes the row.
GRANT EXECUTE ON FUNCTION journey.exit_event_types_are_valid(text[]) TO journey_user;

-- Rows written before 0.3 that break its rules are repaired so that the
-- constraints below hold for every row (VALID, like a fresh install):
-- addresses with control characters are never sent (an unsent message
-- fails, a customer's address moves into its attributes, a provider is
-- disabled until an administrator fixes it), exit event lists keep their
-- first 50 valid entries.
UPDATE journey.messages
   SET status = CASE WHEN status IN ('queued', 'sending') THEN 'failed' ELSE status END,
       last_error = CASE WHEN status IN ('queued', 'sending')
           THEN 'to_address holds a control character (refused by the 0.3 upgrade)'
           ELSE last_error END,
       to_address = pg_catalog.regexp_replace(to_address, '[\x01-\x1f\x7f-\x9f]', ' ', 'g'),
       lease_expires_at = NULL, claimed_by = NULL
 WHERE to_address OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]';
UPDATE journey.customers
   SET attributes = attributes OPERATOR(pg_catalog.||) pg_catalog.jsonb_strip_nulls(
           pg_catalog.jsonb_build_object(
               'journey_refused_email', CASE WHEN email OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]' THEN email END,
               'journey_refused_phone', CASE WHEN phone OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]' THEN phone END)),
       email = CASE WHEN email OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]' THEN NULL ELSE email END,
       phone = CASE WHEN phone OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]' THEN NULL ELSE phone END
 WHERE email OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]'
    OR phone OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]';
UPDATE journey.providers
   SET from_address = pg_catalog.regexp_replace(from_address, '[\x01-\x1f\x7f-\x9f]', ' ', 'g'),
       enabled = false
 WHERE from_address OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]';
UPDATE journey.sequences s
   SET exit_event_types = ARRAY(
           SELECT e.t FROM pg_catalog.unnest(s.exit_event_types) WITH ORDINALITY AS e(t, n)
            WHERE e.t OPERATOR(pg_catalog.<>) '' AND pg_catalog.length(e.t) OPERATOR(pg_catalog.<=) 200
            ORDER BY e.n LIMIT 50)
 WHERE NOT (pg_catalog.cardinality(s.exit_event_types) OPERATOR(pg_catalog.<=) 50
            AND journey.exit_event_types_are_valid(s.exit_event_types));

-- ===== isolation and hardening (issue 12) =====

-- Addresses are single lines of printable characters: a CR or LF in one
-- could smuggle an SMTP command or a header into what the sender sends.
-- C0 controls, DEL and the C1 range (U+0080-U+009F).  The API functions
-- refuse them first with 22023; these catch direct writes (23514).
ALTER TABLE journey.customers
    ADD CONSTRAINT customers_email_no_control_check
        CHECK (email OPERATOR(pg_catalog.!~) '[\x01-\x1f\x7f-\x9f]'),
    ADD CONSTRAINT customers_phone_no_control_check
        CHECK (phone OPERATOR(pg_catalog.!~) '[\x01-\x1f\x7f-\x9f]');
ALTER TABLE journey.messages
    ADD CONSTRAINT messages_to_address_no_control_check
        CHECK (to_address OPERATOR(pg_catalog.!~) '[\x01-\x1f\x7f-\x9f]');
ALTER TABLE journey.providers
    ADD CONSTRAINT providers_from_address_no_control_check
        CHECK (from_address OPERATOR(pg_catalog.!~) '[\x01-\x1f\x7f-\x9f]');

-- A tenant's exit events are matched against every event it ingests:
-- bounded, so one sequence cannot make matching expensive.  (create_sequence
-- refuses the same with 22023 and a message naming the field.)
ALTER TABLE journey.sequences
    ADD CONSTRAINT sequences_exit_event_types_bounded_check
        CHECK (pg_catalog.cardinality(exit_event_types) OPERATOR(pg_catalog.<=) 50
               AND journey.exit_event_types_are_valid(exit_event_types));

-- A sent review request sets customers.last_review_request_at; the sender
-- records it here first and applies it to customer rows no one holds
-- locked (SKIP LOCKED), so an application's open transaction on a customer
-- never stalls the sender.  No foreign keys: even a key-share lock on the
-- customer would wait.  Internal: the sender and the owner only.
CREATE TABLE journey.review_request_marks (
    message_id          bigint PRIMARY KEY,
    business_id         uuid NOT NULL,
    customer_id         uuid NOT NULL,
    sent_at             timestamptz NOT NULL
);
CREATE INDEX review_request_marks_customer_idx
    ON journey.review_request_marks (business_id, customer_id);
ALTER TABLE journey.review_request_marks ENABLE ROW LEVEL SECURITY;
CREATE POLICY review_request_marks_worker ON journey.review_request_marks TO journey_worker
    USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, DELETE ON journey.review_request_marks TO journey_worker;

-- The sender's fair claim probes each business's oldest due messages.
CREATE INDEX messages_queued_business_idx
    ON journey.messages (business_id, send_after) WHERE status = 'queued';

-- ===== executor fairness (issue 12) =====
-- The executor's fair claim (src/executor_sql.c): each business's own due
-- enrollments, oldest first, from where the previous round left off.
CREATE INDEX sequence_enrollments_business_due_idx
    ON journey.sequence_enrollments (business_id, next_run_at, id) WHERE status = 'active';

-- ===== every table in pg_dump (issue 11; keep this section last) =====
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
