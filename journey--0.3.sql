/*
 * journey 0.3: tables, indexes, C function declarations, grants and
 * row-level security policies.  All behaviour lives in the C library; this
 * script only declares what the library needs and who may touch it.
 */
\echo Use "CREATE EXTENSION journey" to load this file. \quit

-- ===================================================================
-- Role for application users (cluster-wide, so it may already exist)
-- ===================================================================
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'journey_user') THEN
        CREATE ROLE journey_user NOLOGIN;
    END IF;
END
$do$;

-- ===================================================================
-- Helpers the table definitions rely on
-- ===================================================================

-- Raises 22023 with a hint for a zone name the tz database does not know,
-- so a CHECK constraint reports something a user can act on.
CREATE FUNCTION journey.check_timezone(p_timezone text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'journey_check_timezone'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION journey.touch_updated_at()
RETURNS trigger
AS 'MODULE_PATHNAME', 'journey_touch_updated_at'
LANGUAGE C;

-- ===================================================================
-- Tables
-- ===================================================================

CREATE TABLE journey.businesses (
    id                  uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    name                text NOT NULL CHECK (name OPERATOR(pg_catalog.<>) ''),
    email               text,
    phone               text,
    google_review_url   text,
    timezone            text NOT NULL DEFAULT 'UTC'
                        CHECK (journey.check_timezone(timezone)),
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE journey.business_members (
    business_id         uuid NOT NULL REFERENCES journey.businesses (id) ON DELETE CASCADE,
    member              text NOT NULL CHECK (member OPERATOR(pg_catalog.<>) ''),
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (business_id, member)
);
CREATE INDEX business_members_member_idx ON journey.business_members (member);

CREATE TABLE journey.customers (
    id                      uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    business_id             uuid NOT NULL REFERENCES journey.businesses (id) ON DELETE CASCADE,
    full_name               text NOT NULL,
    email                   text,
    phone                   text,
    timezone                text CHECK (timezone IS NULL OR journey.check_timezone(timezone)),
    external_id             text,
    attributes              jsonb NOT NULL DEFAULT '{}'
                            CHECK (pg_catalog.jsonb_typeof(attributes) OPERATOR(pg_catalog.=) 'object'),
    created_by              text,
    last_review_request_at  timestamptz,
    created_at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- Lets child tables reference (business_id, id), so a row can never
    -- point at another tenant's customer; also the tenant's index.
    CONSTRAINT customers_business_id_id_key UNIQUE (business_id, id),
    CONSTRAINT customers_business_id_external_id_key UNIQUE (business_id, external_id)
);

CREATE TABLE journey.sequences (
    id                  uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    business_id         uuid NOT NULL REFERENCES journey.businesses (id) ON DELETE CASCADE,
    name                text NOT NULL CHECK (name OPERATOR(pg_catalog.<>) ''),
    description         text,
    status              text NOT NULL DEFAULT 'draft'
                        CHECK (status IN ('active', 'paused', 'draft')),
    trigger_event_type  text,
    exit_event_types    text[] NOT NULL DEFAULT '{}',
    allow_manual_enroll boolean NOT NULL DEFAULT false,
    reentry             text NOT NULL DEFAULT 'after_exit'
                        CHECK (reentry IN ('never', 'after_exit')),
    quiet_hours_start   time,
    quiet_hours_end     time,
    rate_per_hour       integer DEFAULT 100 CHECK (rate_per_hour OPERATOR(pg_catalog.>) 0),
    rate_per_day        integer DEFAULT 1000 CHECK (rate_per_day OPERATOR(pg_catalog.>) 0),
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT sequences_business_id_id_key UNIQUE (business_id, id)
);
CREATE INDEX sequences_trigger_idx ON journey.sequences (business_id, trigger_event_type)
    WHERE status = 'active';

CREATE TABLE journey.sequence_steps (
    id                  uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    business_id         uuid NOT NULL,
    sequence_id         uuid NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('send_email', 'send_sms', 'wait', 'branch')),
    step_index          integer NOT NULL CHECK (step_index OPERATOR(pg_catalog.>=) 1),
    wait_ms             bigint NOT NULL DEFAULT 0 CHECK (wait_ms OPERATOR(pg_catalog.>=) 0),
    template_id         uuid,
    message_purpose     text,
    message_config      jsonb NOT NULL DEFAULT '{}',
    branch_config       jsonb,
    -- Where the journey goes after this step: null for the following step,
    -- 0 for "finish", else a later step_index (journeys are acyclic).
    next_step_index     integer CHECK (next_step_index OPERATOR(pg_catalog.>=) 0),
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT sequence_steps_sequence_id_step_index_key UNIQUE (sequence_id, step_index),
    CONSTRAINT sequence_steps_sequence_fkey FOREIGN KEY (business_id, sequence_id)
        REFERENCES journey.sequences (business_id, id) ON DELETE CASCADE,
    CONSTRAINT sequence_steps_branch_config_check
        CHECK ((kind OPERATOR(pg_catalog.=) 'branch') OPERATOR(pg_catalog.=) (branch_config IS NOT NULL))
);
CREATE INDEX sequence_steps_business_idx ON journey.sequence_steps (business_id);

-- Vacuumed early: every executor pass moves each due row's next_run_at, an
-- indexed column, so each pass leaves a dead tuple per row (never HOT), and
-- at the default 20% the due index would carry a fifth of the table dead.
CREATE TABLE journey.sequence_enrollments (
    id                  uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    business_id         uuid NOT NULL,
    sequence_id         uuid NOT NULL,
    customer_id         uuid NOT NULL,
    status              text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'finished', 'stopped')),
    current_step_index  integer NOT NULL DEFAULT 1 CHECK (current_step_index OPERATOR(pg_catalog.>=) 1),
    next_run_at         timestamptz,
    last_event_at       timestamptz,
    meta                jsonb NOT NULL DEFAULT '{}'
                        CHECK (pg_catalog.jsonb_typeof(meta) OPERATOR(pg_catalog.=) 'object'),
    stop_reason         text,
    finished_at         timestamptz,
    -- The moment the customer entered the journey (the trigger event's
    -- occurred_at, or p_as_of of a manual enrollment).
    enrolled_at         timestamptz NOT NULL,
    trigger_event_id    bigint,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT sequence_enrollments_sequence_fkey FOREIGN KEY (business_id, sequence_id)
        REFERENCES journey.sequences (business_id, id) ON DELETE CASCADE,
    CONSTRAINT sequence_enrollments_customer_fkey FOREIGN KEY (business_id, customer_id)
        REFERENCES journey.customers (business_id, id) ON DELETE CASCADE,
    CONSTRAINT sequence_enrollments_active_has_next_run
        CHECK (status OPERATOR(pg_catalog.<>) 'active' OR next_run_at IS NOT NULL)
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
        autovacuum_vacuum_cost_delay = 0);
-- At most one active enrollment per (sequence, customer).
CREATE UNIQUE INDEX sequence_enrollments_one_active_idx
    ON journey.sequence_enrollments (sequence_id, customer_id) WHERE status = 'active';
-- The executor's queue.
CREATE INDEX sequence_enrollments_due_idx
    ON journey.sequence_enrollments (next_run_at) WHERE status = 'active';
-- Tenant scans, the customer cascade, reentry and exit-event look-ups.
CREATE INDEX sequence_enrollments_customer_idx
    ON journey.sequence_enrollments (business_id, customer_id, sequence_id);

-- Append-only: vacuumed after 5% new rows so the visibility map stays
-- current for index-only look-ups of events_customer_idx.
CREATE TABLE journey.events (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id         uuid NOT NULL REFERENCES journey.businesses (id) ON DELETE CASCADE,
    event_type          text NOT NULL CHECK (event_type OPERATOR(pg_catalog.<>) ''),
    customer_id         uuid,
    payload             jsonb NOT NULL DEFAULT '{}',
    idempotency_key     text,
    occurred_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- A full constraint, not a partial index, so that a webhook handler's own
    -- INSERT ... ON CONFLICT (business_id, idempotency_key) works too.
    CONSTRAINT events_business_id_idempotency_key_key UNIQUE (business_id, idempotency_key),
    CONSTRAINT events_customer_fkey FOREIGN KEY (business_id, customer_id)
        REFERENCES journey.customers (business_id, id) ON DELETE CASCADE
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05);
-- The customer cascade and "has the customer had event X since enrolling".
CREATE INDEX events_customer_idx
    ON journey.events (business_id, customer_id, event_type, occurred_at);

-- Vacuumed early: each message is rewritten two or three times (queued,
-- sending, sent) with status in the queue indexes' predicates, and the
-- sender's claim would skip every dead entry of messages_queued_idx.
CREATE TABLE journey.messages (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id         uuid NOT NULL REFERENCES journey.businesses (id) ON DELETE CASCADE,
    enrollment_id       uuid REFERENCES journey.sequence_enrollments (id) ON DELETE CASCADE,
    sequence_id         uuid,
    step_index          integer,
    customer_id         uuid,
    channel             text NOT NULL CHECK (channel IN ('email', 'sms')),
    message_purpose     text,
    to_address          text NOT NULL,
    subject             text,
    body                text NOT NULL,
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'cancelled')),
    send_after          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    provider_message_id text,
    -- While status = 'sending': until when the claiming sender owns it.
    lease_expires_at    timestamptz,
    -- While status = 'sending': which server's sender claimed it (its
    -- system identifier), so a restarted sender takes back what its dead
    -- predecessor held without waiting for the lease.
    claimed_by          text,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    sent_at             timestamptz,
    CONSTRAINT messages_enrollment_id_step_index_key UNIQUE (enrollment_id, step_index)
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
        autovacuum_vacuum_cost_delay = 0);
-- The sender's queue, and the leases it must reclaim after a crash.
CREATE INDEX messages_queued_idx ON journey.messages (send_after) WHERE status = 'queued';
CREATE INDEX messages_sending_idx ON journey.messages (lease_expires_at) WHERE status = 'sending';
-- Tenant scans, the business cascade and the per-sequence rate windows.
CREATE INDEX messages_business_idx ON journey.messages (business_id, sequence_id, send_after);

-- Append-only, like events.
CREATE TABLE journey.enrollment_log (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business_id         uuid NOT NULL,
    enrollment_id       uuid NOT NULL REFERENCES journey.sequence_enrollments (id) ON DELETE CASCADE,
    step_index          integer,
    outcome             text NOT NULL,
    detail              text,
    at                  timestamptz NOT NULL
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
CREATE INDEX enrollment_log_enrollment_idx ON journey.enrollment_log (enrollment_id, id);

CREATE TABLE journey.providers (
    id                  uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    business_id         uuid REFERENCES journey.businesses (id) ON DELETE CASCADE,
    channel             text NOT NULL CHECK (channel IN ('email', 'sms')),
    kind                text NOT NULL CHECK (kind IN ('webhook', 'twilio', 'smtp', 'resend')),
    endpoint            text NOT NULL,
    from_address        text,
    credentials         text,
    settings            jsonb NOT NULL DEFAULT '{}',
    enabled             boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT providers_kind_channel_check CHECK (
        (kind OPERATOR(pg_catalog.<>) 'twilio' OR channel OPERATOR(pg_catalog.=) 'sms') AND
        (kind NOT IN ('smtp', 'resend') OR channel OPERATOR(pg_catalog.=) 'email'))
);
-- One enabled provider per business and channel, and one default.
CREATE UNIQUE INDEX providers_business_channel_idx
    ON journey.providers (business_id, channel) WHERE enabled AND business_id IS NOT NULL;
CREATE UNIQUE INDEX providers_default_channel_idx
    ON journey.providers (channel) WHERE enabled AND business_id IS NULL;

CREATE TABLE journey.suppressions (
    business_id         uuid NOT NULL REFERENCES journey.businesses (id) ON DELETE CASCADE,
    channel             text NOT NULL CHECK (channel IN ('email', 'sms')),
    address             text NOT NULL,
    reason              text,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (business_id, channel, address)
);

CREATE TRIGGER businesses_touch BEFORE UPDATE ON journey.businesses
    FOR EACH ROW EXECUTE FUNCTION journey.touch_updated_at();
CREATE TRIGGER customers_touch BEFORE UPDATE ON journey.customers
    FOR EACH ROW EXECUTE FUNCTION journey.touch_updated_at();
CREATE TRIGGER sequences_touch BEFORE UPDATE ON journey.sequences
    FOR EACH ROW EXECUTE FUNCTION journey.touch_updated_at();
CREATE TRIGGER sequence_enrollments_touch BEFORE UPDATE ON journey.sequence_enrollments
    FOR EACH ROW EXECUTE FUNCTION journey.touch_updated_at();
CREATE TRIGGER providers_touch BEFORE UPDATE ON journey.providers
    FOR EACH ROW EXECUTE FUNCTION journey.touch_updated_at();

-- ===================================================================
-- Engine API (src/template.c, src/sequence.c, src/enroll.c, src/trigger.c)
-- ===================================================================

CREATE FUNCTION journey.render_template(p_template text, p_context jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'journey_render_template'
LANGUAGE C STABLE STRICT;

CREATE FUNCTION journey.create_sequence(p_business_id uuid, p_definition jsonb)
RETURNS uuid
AS 'MODULE_PATHNAME', 'journey_create_sequence'
LANGUAGE C VOLATILE;

CREATE FUNCTION journey.enroll_customer(p_sequence_id uuid, p_customer_id uuid,
                                        p_meta jsonb DEFAULT '{}',
                                        p_as_of timestamptz DEFAULT pg_catalog.now())
RETURNS uuid
AS 'MODULE_PATHNAME', 'journey_enroll_customer'
LANGUAGE C VOLATILE;

CREATE FUNCTION journey.ingest_event(p_business_id uuid, p_event_type text,
                                     p_customer jsonb,
                                     p_payload jsonb DEFAULT '{}',
                                     p_idempotency_key text DEFAULT NULL,
                                     p_occurred_at timestamptz DEFAULT pg_catalog.now())
RETURNS bigint
AS 'MODULE_PATHNAME', 'journey_ingest_event'
LANGUAGE C VOLATILE;

CREATE FUNCTION journey.stop_enrollment(p_enrollment_id uuid, p_reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'journey_stop_enrollment'
LANGUAGE C VOLATILE;

CREATE FUNCTION journey.match_events()
RETURNS trigger
AS 'MODULE_PATHNAME', 'journey_match_events'
LANGUAGE C;

-- Statement-level, over the transition table: one INSERT ... SELECT of many
-- events is matched with a few set-based statements, not one per row.
CREATE TRIGGER events_match AFTER INSERT ON journey.events
    REFERENCING NEW TABLE AS journey_new_events
    FOR EACH STATEMENT EXECUTE FUNCTION journey.match_events();

-- ===================================================================
-- Executor (src/executor.c, src/timewindow.c, src/branch.c)
-- ===================================================================

-- Runs due enrollments as of p_as_of (SPEC section 4); pg_cron calls it
-- every minute.  One call is one transaction: up to p_batch_size
-- enrollments, claimed FOR UPDATE SKIP LOCKED so callers may overlap.
-- search_path is pinned: its kept plans resolve names and operators once;
-- jit is off: compiling would cost more than its short statements run.
CREATE FUNCTION journey.advance_due_enrollments(p_batch_size integer DEFAULT 1000,
                                                p_as_of timestamptz DEFAULT pg_catalog.now())
RETURNS integer
AS 'MODULE_PATHNAME', 'journey_advance_due_enrollments'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off;

-- ===================================================================
-- Sender (src/worker.c, src/transport.c, src/providers.c)
-- ===================================================================

-- Sets the sender's latch when the transaction commits (never when it
-- rolls back), so a plain INSERT of a queued message, or an UPDATE that
-- puts one back in the queue, is sent at once rather than at the next poll.
CREATE FUNCTION journey.wake_sender()
RETURNS trigger
AS 'MODULE_PATHNAME', 'journey_wake_sender'
LANGUAGE C;

CREATE TRIGGER messages_wake_sender
    AFTER INSERT OR UPDATE OF status, send_after ON journey.messages
    FOR EACH STATEMENT EXECUTE FUNCTION journey.wake_sender();
-- Messages waiting for a provider go as soon as one is configured.
CREATE TRIGGER providers_wake_sender
    AFTER INSERT OR UPDATE ON journey.providers
    FOR EACH STATEMENT EXECUTE FUNCTION journey.wake_sender();

-- ===================================================================
-- Tenancy and security (src/tenant.c)
-- ===================================================================

-- The member acting now: the JWT "sub" claim on trusted connections,
-- else current_user.  See journey.trusted_claim_roles.
CREATE FUNCTION journey.current_member()
RETURNS text
AS 'MODULE_PATHNAME', 'journey_current_member'
LANGUAGE C STABLE;

-- The businesses of the member acting now; what the row-level policies
-- compare business_id against.
CREATE FUNCTION journey.member_business_ids()
RETURNS uuid[]
AS 'MODULE_PATHNAME', 'journey_member_business_ids'
LANGUAGE C STABLE;

-- How a tenant signs up: creates a business with the caller as its member.
-- SECURITY INVOKER: the C function resolves the member as the caller and
-- only then writes as the tables' owner (search_path pinned meanwhile).
CREATE FUNCTION journey.create_business(p_name text,
                                        p_timezone text DEFAULT 'UTC',
                                        p_google_review_url text DEFAULT NULL)
RETURNS uuid
AS 'MODULE_PATHNAME', 'journey_create_business'
LANGUAGE C VOLATILE;

-- The sender worker's privileges, as a NOLOGIN group role: grant it to the
-- LOGIN role named by journey.worker_role so the worker needs neither
-- superuser nor BYPASSRLS (see doc/multi-tenant.md).  Never grant it to a
-- tenant: its policies below see every business.
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'journey_worker') THEN
        CREATE ROLE journey_worker NOLOGIN;
    END IF;
END
$do$;

-- Tenant scans of the decision log (the other tenant tables already have
-- an index that leads with business_id).
CREATE INDEX enrollment_log_business_idx ON journey.enrollment_log (business_id, at);

-- Row-level security on every tenant table.  A member's rows are those
-- whose business_id is among journey.member_business_ids(), computed once
-- per statement; the comparison is a plain "= ANY (array)" so the
-- business_id index serves it.  The tables' owner (and superusers) bypass
-- the policies: the API functions and the executor act as the owner after
-- their own membership check.  providers has no tenant policy at all.
ALTER TABLE journey.businesses ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey.business_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey.customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey.sequences ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey.sequence_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey.sequence_enrollments ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey.enrollment_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey.suppressions ENABLE ROW LEVEL SECURITY;
ALTER TABLE journey.providers ENABLE ROW LEVEL SECURITY;

CREATE POLICY businesses_member ON journey.businesses TO journey_user
    USING (id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));
-- Members see who else belongs to their businesses; they never write
-- memberships (an administrator does, or create_business).
CREATE POLICY business_members_member ON journey.business_members FOR SELECT TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));
CREATE POLICY customers_member ON journey.customers TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));
CREATE POLICY sequences_member ON journey.sequences TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));
CREATE POLICY sequence_steps_member ON journey.sequence_steps TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));
CREATE POLICY sequence_enrollments_member ON journey.sequence_enrollments TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));
CREATE POLICY events_member ON journey.events TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));
CREATE POLICY messages_member ON journey.messages TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));
CREATE POLICY enrollment_log_member ON journey.enrollment_log TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));
CREATE POLICY suppressions_member ON journey.suppressions TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));

-- The sender works for every business.
CREATE POLICY messages_worker ON journey.messages TO journey_worker
    USING (true) WITH CHECK (true);
CREATE POLICY customers_worker ON journey.customers TO journey_worker
    USING (true) WITH CHECK (true);
CREATE POLICY businesses_worker ON journey.businesses FOR SELECT TO journey_worker
    USING (true);
CREATE POLICY providers_worker ON journey.providers FOR SELECT TO journey_worker
    USING (true);

-- What an application needs, and no more.  Writes an API function makes
-- (steps, enrollments, messages, the log) happen as the owner, so those
-- tables are read-only to tenants: a direct write could bypass
-- create_sequence's validation (e.g. a cyclic branch the executor would
-- spin on) or queue arbitrary mail through the platform's default provider.
-- No TRIGGER, REFERENCES or TRUNCATE anywhere.  Identity columns need no
-- sequence privilege: nextval of an identity is not privilege-checked.
GRANT USAGE ON SCHEMA journey TO journey_user, journey_worker;

GRANT SELECT, DELETE ON journey.businesses TO journey_user;
GRANT UPDATE (name, email, phone, google_review_url, timezone)
    ON journey.businesses TO journey_user;
GRANT SELECT ON journey.business_members TO journey_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON journey.customers TO journey_user;
GRANT SELECT, DELETE ON journey.sequences TO journey_user;
GRANT UPDATE (name, description, status, trigger_event_type, exit_event_types,
              allow_manual_enroll, reentry, quiet_hours_start, quiet_hours_end,
              rate_per_hour, rate_per_day)
    ON journey.sequences TO journey_user;
GRANT SELECT ON journey.sequence_steps TO journey_user;
GRANT SELECT ON journey.sequence_enrollments TO journey_user;
GRANT SELECT, INSERT ON journey.events TO journey_user;
GRANT SELECT ON journey.messages TO journey_user;
GRANT SELECT ON journey.enrollment_log TO journey_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON journey.suppressions TO journey_user;

-- The API.  member_business_ids is called by the policies and
-- check_timezone by CHECK constraints, both with the caller's privileges.
GRANT EXECUTE ON FUNCTION
    journey.create_business(text, text, text),
    journey.create_sequence(uuid, jsonb),
    journey.enroll_customer(uuid, uuid, jsonb, timestamptz),
    journey.ingest_event(uuid, text, jsonb, jsonb, text, timestamptz),
    journey.stop_enrollment(uuid, text),
    journey.render_template(text, jsonb),
    journey.current_member(),
    journey.member_business_ids(),
    journey.check_timezone(text)
    TO journey_user;

GRANT SELECT, UPDATE ON journey.messages TO journey_worker;
GRANT SELECT ON journey.providers, journey.businesses TO journey_worker;
GRANT SELECT ON journey.customers TO journey_worker;
GRANT UPDATE (last_review_request_at) ON journey.customers TO journey_worker;
GRANT EXECUTE ON FUNCTION journey.check_timezone(text) TO journey_worker;

-- ===================================================================
-- The timeline: "why didn't she get the message?" as one query
-- ===================================================================

-- Every enrollment's story in one place: when and why it began, each
-- decision the executor took, and each of its messages with its delivery
-- state.  security_invoker: a tenant reading it passes through the
-- row-level policies of the tables below, so it shows their rows only.
-- Each branch is anchored on sequence_enrollments, so a filter on
-- customer_id or enrollment_id reaches every branch through an index.
CREATE VIEW journey.timeline WITH (security_invoker = true) AS
SELECT e.business_id, e.customer_id, e.sequence_id, e.id AS enrollment_id,
       e.enrolled_at AS at, NULL::integer AS step_index,
       'enrolled'::text AS what,
       CASE WHEN e.trigger_event_id IS NULL THEN 'enrolled by enroll_customer'
            ELSE 'enrolled by event ' OPERATOR(pg_catalog.||)
                 COALESCE(ev.event_type, '(deleted)') OPERATOR(pg_catalog.||)
                 ' #' OPERATOR(pg_catalog.||) e.trigger_event_id::text
       END AS detail,
       0 AS phase, NULL::bigint AS ref_id
  FROM journey.sequence_enrollments e
  LEFT JOIN journey.events ev ON ev.id OPERATOR(pg_catalog.=) e.trigger_event_id
UNION ALL
SELECT e.business_id, e.customer_id, e.sequence_id, e.id,
       l.at, l.step_index, l.outcome, l.detail,
       1, l.id
  FROM journey.sequence_enrollments e
  JOIN journey.enrollment_log l ON l.enrollment_id OPERATOR(pg_catalog.=) e.id
UNION ALL
SELECT e.business_id, e.customer_id, e.sequence_id, e.id,
       COALESCE(m.sent_at, m.send_after), m.step_index,
       'message ' OPERATOR(pg_catalog.||) m.status,
       pg_catalog.format('%s to %s, %s attempt(s)%s%s', m.channel, m.to_address,
                         m.attempts, ', provider id ' OPERATOR(pg_catalog.||) m.provider_message_id,
                         ': ' OPERATOR(pg_catalog.||) m.last_error),
       2, m.id
  FROM journey.sequence_enrollments e
  JOIN journey.messages m ON m.enrollment_id OPERATOR(pg_catalog.=) e.id;

COMMENT ON VIEW journey.timeline IS
    'every enrollment''s history: enrolled, each executor decision, each message and its delivery state; ORDER BY at, phase, ref_id';

GRANT SELECT ON journey.timeline TO journey_user;

-- ===================================================================
-- pg_cron scheduling (src/cron.c)
-- ===================================================================

-- Schedules SELECT journey.advance_due_enrollments() with pg_cron as the
-- job journey-executor (replacing an earlier one); returns the job id.
CREATE FUNCTION journey.schedule_executor(p_schedule text DEFAULT '* * * * *')
RETURNS bigint
AS 'MODULE_PATHNAME', 'journey_schedule_executor'
LANGUAGE C VOLATILE;

-- Removes the journey-executor job; false when there was none.
CREATE FUNCTION journey.unschedule_executor()
RETURNS boolean
AS 'MODULE_PATHNAME', 'journey_unschedule_executor'
LANGUAGE C VOLATILE;

-- ===================================================================
-- PUBLIC gets nothing.  THIS MUST STAY THE LAST SECTION OF THE SCRIPT:
-- it also strips PUBLIC's default EXECUTE from every function any section
-- above declares, so a new function is callable only after an explicit
-- GRANT (journey_user's list is in "Tenancy and security").
-- ===================================================================
REVOKE ALL ON SCHEMA journey FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA journey FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA journey FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA journey FROM PUBLIC;
-- A table added above without its own policies is closed to every role
-- that does not own it rather than open to whoever is granted it.
DO $do$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT c.oid FROM pg_catalog.pg_class c
             WHERE c.relnamespace OPERATOR(pg_catalog.=) 'journey'::regnamespace
               AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
    END LOOP;
END
$do$;

-- ===== isolation and hardening (issue 12): functions =====

CREATE FUNCTION journey.exit_event_types_are_valid(p_types text[])
RETURNS boolean
AS 'MODULE_PATHNAME', 'journey_exit_event_types_are_valid'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
REVOKE ALL ON FUNCTION journey.exit_event_types_are_valid(text[]) FROM PUBLIC;
-- A CHECK constraint's function needs EXECUTE of whoever writes the row.
GRANT EXECUTE ON FUNCTION journey.exit_event_types_are_valid(text[]) TO journey_user;

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
