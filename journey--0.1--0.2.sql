-- journey 0.1 -> 0.2: the journey.timeline view, and autovacuum settings
-- for the tables the executor and the sender rewrite all day.
-- journey--0.2.sql creates the same objects from scratch; sql/upgrade.sql
-- checks that both paths end with identical catalogs.

\echo Use "ALTER EXTENSION journey UPDATE TO '0.2'" to load this file. \quit

-- ===================================================================
-- Hot tables vacuum early
-- ===================================================================

-- Every executor pass moves each due enrollment's next_run_at, an indexed
-- column, so each pass leaves one dead tuple per row (no HOT update is
-- possible).  At the default 20% a table of 1M enrollments would carry 200k
-- dead entries in the due index the executor scans every minute.
ALTER TABLE journey.sequence_enrollments SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0);
-- Every message is rewritten two or three times (queued, sending, sent)
-- with status in the queue indexes' predicates; the sender's claim walks
-- messages_queued_idx, whose dead entries it would otherwise skip one by one.
ALTER TABLE journey.messages SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0);
-- Append-only: vacuum after 5% new rows rather than 20% keeps the
-- visibility map current (index-only scans of events_customer_idx for
-- branch and exit look-ups) and spreads freezing out.
ALTER TABLE journey.events SET (
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05);
ALTER TABLE journey.enrollment_log SET (
    autovacuum_vacuum_insert_scale_factor = 0.05);

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

REVOKE ALL ON journey.timeline FROM PUBLIC;
GRANT SELECT ON journey.timeline TO journey_user;
