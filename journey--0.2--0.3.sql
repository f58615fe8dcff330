-- journey 0.2 -> 0.3: trustworthy journeys.  Each change below is also made
-- by journey--0.3.sql from scratch; sql/upgrade.sql checks that both paths
-- end with identical catalogs and that in-flight data goes on unchanged.

\echo Use "ALTER EXTENSION journey UPDATE TO '0.3'" to load this file. \quit

-- ===== columns also added by issues 13/14 =====
-- Only so that issue 15's statistics can be built and tested on this
-- branch; the versions (14) and optout (13) branches own these columns and
-- their real semantics (SPEC section 2).  The defaults keep today's
-- create_sequence and enrollment inserts working until those merge.
ALTER TABLE journey.sequences ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE journey.sequence_steps ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE journey.sequence_enrollments ADD COLUMN sequence_version integer NOT NULL DEFAULT 1;
ALTER TABLE journey.messages ADD COLUMN delivery_status text;
ALTER TABLE journey.messages ADD COLUMN delivery_updated_at timestamptz;

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

-- One journey's enrollments by state and step: what sequence_stats,
-- stopped_here and the first step's reached count read.
CREATE INDEX sequence_enrollments_sequence_idx
    ON journey.sequence_enrollments (sequence_id, sequence_version, status, current_step_index);

-- One journey's messages by step, for the funnel: without it, reading one
-- journey's funnel scans every business's messages.
CREATE INDEX messages_sequence_step_idx ON journey.messages (sequence_id, step_index);

-- The funnel of every step.  reached: enrollments that arrived at the
-- step (every enrollment of a version arrives at its first step; the
-- executor counts arrivals at the others); queued, sent, delivered, failed:
-- the step's messages by what journey.messages says of them now; skipped,
-- deferred: the step's skipped_* and deferred_* decisions; stopped_here:
-- enrollments stopped while at the step.  A filter on sequence_id reaches
-- every part through an index (the planner pushes it into each group).
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
  LEFT JOIN (SELECT e.sequence_id, e.sequence_version, pg_catalog.count(*) AS enrolled
               FROM journey.sequence_enrollments e
              GROUP BY e.sequence_id, e.sequence_version) t
    ON t.sequence_id OPERATOR(pg_catalog.=) st.sequence_id
   AND t.sequence_version OPERATOR(pg_catalog.=) st.version
  LEFT JOIN (SELECT e.sequence_id, e.sequence_version, e.current_step_index,
                    pg_catalog.count(*) AS stopped_here
               FROM journey.sequence_enrollments e
              WHERE e.status OPERATOR(pg_catalog.=) 'stopped'
              GROUP BY e.sequence_id, e.sequence_version, e.current_step_index) h
    ON h.sequence_id OPERATOR(pg_catalog.=) st.sequence_id
   AND h.sequence_version OPERATOR(pg_catalog.=) st.version
   AND h.current_step_index OPERATOR(pg_catalog.=) st.step_index
  LEFT JOIN (SELECT ms.sequence_id, e.sequence_version, ms.step_index,
                    pg_catalog.count(*) AS queued,
                    pg_catalog.count(*) FILTER (WHERE ms.status OPERATOR(pg_catalog.=) 'sent') AS sent,
                    pg_catalog.count(*) FILTER (WHERE ms.delivery_status OPERATOR(pg_catalog.=) 'delivered') AS delivered,
                    pg_catalog.count(*) FILTER (WHERE ms.status OPERATOR(pg_catalog.=) 'failed') AS failed
               FROM journey.sequence_enrollments e
               JOIN journey.messages ms ON ms.enrollment_id OPERATOR(pg_catalog.=) e.id
                AND ms.sequence_id OPERATOR(pg_catalog.=) e.sequence_id
              GROUP BY ms.sequence_id, e.sequence_version, ms.step_index) m
    ON m.sequence_id OPERATOR(pg_catalog.=) st.sequence_id
   AND m.sequence_version OPERATOR(pg_catalog.=) st.version
   AND m.step_index OPERATOR(pg_catalog.=) st.step_index;

COMMENT ON VIEW journey.step_stats IS
    'one journey''s funnel per version and step: reached, queued, sent, delivered, failed, skipped, deferred, stopped_here';

-- Where a journey's enrollments stand.  exited: stopped by an exit event.
CREATE VIEW journey.sequence_stats WITH (security_invoker = true) AS
SELECT s.business_id, s.id AS sequence_id,
       COALESCE(e.enrolled, 0) AS enrolled,
       COALESCE(e.active, 0) AS active,
       COALESCE(e.finished, 0) AS finished,
       COALESCE(e.stopped, 0) AS stopped,
       COALESCE(e.exited, 0) AS exited
  FROM journey.sequences s
  LEFT JOIN (SELECT x.sequence_id, pg_catalog.count(*) AS enrolled,
                    pg_catalog.count(*) FILTER (WHERE x.status OPERATOR(pg_catalog.=) 'active') AS active,
                    pg_catalog.count(*) FILTER (WHERE x.status OPERATOR(pg_catalog.=) 'finished') AS finished,
                    pg_catalog.count(*) FILTER (WHERE x.status OPERATOR(pg_catalog.=) 'stopped') AS stopped,
                    pg_catalog.count(*) FILTER (WHERE x.status OPERATOR(pg_catalog.=) 'stopped'
                        AND x.stop_reason OPERATOR(pg_catalog.~~) 'exit\_event:%') AS exited
               FROM journey.sequence_enrollments x
              GROUP BY x.sequence_id) e
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
