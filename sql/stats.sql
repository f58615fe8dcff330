-- journey.step_stats and journey.sequence_stats (issue 15): after a
-- scripted run every column equals what the messages, the log and the
-- enrollments say; the executor's counters commit and roll back with its
-- decisions; tenants see their own rows only.  Plus wait_until's trigger
-- side: an awaited event makes the waiting enrollment due at once.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

\i test/sql/helpers.sql

\set b1 '00000000-0000-0000-0000-0000000000b1'
\set b2 '00000000-0000-0000-0000-0000000000b2'
INSERT INTO journey.businesses (id, name, timezone, google_review_url) VALUES
  (:'b1', 'Pipe Dreams', 'UTC', 'https://g.example/pipe'),
  (:'b2', 'Other Co', 'UTC', NULL);
-- Twelve customers: every third has no phone, c05 is suppressed for email.
INSERT INTO journey.customers (id, business_id, full_name, email, phone)
SELECT ('00000000-0000-0000-0000-0000000000' || lpad(i::text, 2, '0'))::uuid, :'b1',
       'Customer ' || i, 'c' || i || '@example.com',
       CASE WHEN i % 3 = 0 THEN NULL ELSE '+1555000' || lpad(i::text, 4, '0') END
  FROM generate_series(1, 12) i;
INSERT INTO journey.suppressions (business_id, channel, address, reason)
VALUES (:'b1', 'email', 'c5@example.com', 'bounced');
INSERT INTO journey.customers (id, business_id, full_name, email)
VALUES ('00000000-0000-0000-0000-0000000000f1', :'b2', 'Far Away', 'far@example.com');

-- The review-request journey: thanks, two days, phone? SMS : email.
-- Quiet hours 21:00-08:00 UTC defer the runs at 22:00.
SELECT journey.create_sequence(:'b1', '{"name": "Review request", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
  "quiet_hours": {"start": "21:00", "end": "08:00"},
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [
    {"kind": "send_email", "message": {"purpose": "thank_you", "subject": "Thanks",
      "body": "Thank you, {{customer.first_name}}."}},
    {"kind": "wait", "wait_ms": 172800000},
    {"kind": "branch", "branch_config": {"if": {"field": "customer.phone", "op": "exists"},
                                         "then": 4, "else": 5}},
    {"kind": "send_sms", "next": 0, "message": {"purpose": "review_request",
      "body": "Please review us: {{review_link}}"}},
    {"kind": "send_email", "message": {"purpose": "review_request", "subject": "How did we do?",
      "body": "{{review_link}}"}}]}') AS seq \gset

-- Before anything happened: one row per step, all zero.
SELECT step_index, kind, reached, queued, sent, delivered, failed, skipped, deferred, stopped_here
  FROM journey.step_stats WHERE sequence_id = :'seq' ORDER BY step_index;
SELECT enrolled, active, finished, stopped, exited FROM journey.sequence_stats WHERE sequence_id = :'seq';

-- Ten invoices paid at 22:00 (quiet hours), c11 and c12 the next day at 12:00.
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
SELECT :'b1', 'invoice_paid', ('00000000-0000-0000-0000-0000000000' || lpad(i::text, 2, '0'))::uuid,
       '2027-01-12 22:00+00'
  FROM generate_series(1, 10) i;
SELECT journey.advance_due_enrollments(100, '2027-01-12 22:00+00') AS deferred_at_night;
SELECT journey.advance_due_enrollments(100, '2027-01-13 08:00+00') AS thanked_in_the_morning;
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
SELECT :'b1', 'invoice_paid', ('00000000-0000-0000-0000-0000000000' || i)::uuid, '2027-01-13 12:00+00'
  FROM generate_series(11, 12) i;
SELECT journey.advance_due_enrollments(100, '2027-01-13 12:00+00') AS thanked_at_noon;
-- A rolled-back executor call counts nothing.
BEGIN;
SELECT journey.advance_due_enrollments(100, '2027-01-20 12:00+00') > 0 AS advanced_then_rolled_back;
ROLLBACK;
-- c02 leaves a review (exit), the sender sends four messages, fails one,
-- and a provider reports two delivered.
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
VALUES (:'b1', 'review_left', '00000000-0000-0000-0000-000000000002', '2027-01-14 09:00+00');
UPDATE journey.messages SET status = 'sent', sent_at = '2027-01-13 08:01+00'
 WHERE id IN (SELECT id FROM journey.messages WHERE status = 'queued' ORDER BY id LIMIT 4);
UPDATE journey.messages SET status = 'failed', last_error = 'test'
 WHERE id = (SELECT id FROM journey.messages WHERE status = 'queued' ORDER BY id LIMIT 1);
UPDATE journey.messages SET delivery_status = 'delivered'
 WHERE id IN (SELECT id FROM journey.messages WHERE status = 'sent' ORDER BY id LIMIT 2);
-- Two days later at 08:00 and 12:00, and after: the branches and the last sends.
SELECT journey.advance_due_enrollments(100, '2027-01-15 08:00+00') AS branched_morning;
SELECT journey.advance_due_enrollments(100, '2027-01-15 12:00+00') AS branched_noon;

SELECT step_index, kind, reached, queued, sent, delivered, failed, skipped, deferred, stopped_here
  FROM journey.step_stats WHERE sequence_id = :'seq' ORDER BY step_index;
SELECT enrolled, active, finished, stopped, exited FROM journey.sequence_stats WHERE sequence_id = :'seq';

-- A second version (issue 14): two more customers enrol on it and are
-- thanked; c01..c12 keep version 1.  Each version has its own rows.
INSERT INTO journey.customers (id, business_id, full_name, email)
SELECT ('00000000-0000-0000-0000-0000000000' || i)::uuid, :'b1', 'Customer ' || i, 'c' || i || '@example.com'
  FROM generate_series(13, 14) i;
SELECT journey.update_sequence(:'seq', '{"name": "Review request", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
  "quiet_hours": {"start": "21:00", "end": "08:00"},
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [
    {"kind": "send_email", "message": {"purpose": "thank_you", "subject": "Thanks again",
      "body": "Thank you, {{customer.first_name}}."}},
    {"kind": "wait", "wait_ms": 86400000},
    {"kind": "send_email", "message": {"purpose": "review_request", "subject": "How did we do?",
      "body": "{{review_link}}"}}]}') AS new_version;
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
SELECT :'b1', 'invoice_paid', ('00000000-0000-0000-0000-0000000000' || i)::uuid, '2027-01-15 12:30+00'
  FROM generate_series(13, 14) i;
SELECT journey.advance_due_enrollments(100, '2027-01-15 12:30+00') AS thanked_on_version_2;
UPDATE journey.messages SET status = 'sent', sent_at = '2027-01-15 12:31+00'
 WHERE sequence_version = 2;
SELECT version, step_index, kind, reached, queued, sent, delivered, failed, skipped, deferred, stopped_here
  FROM journey.step_stats WHERE sequence_id = :'seq' AND version = 2 ORDER BY step_index;
-- The executor writes each message with its enrollment's version.
SELECT count(*) AS journey_messages,
       count(*) FILTER (WHERE m.sequence_version IS DISTINCT FROM e.sequence_version) AS wrong_version
  FROM journey.messages m JOIN journey.sequence_enrollments e ON e.id = m.enrollment_id;

-- Exact: each column equals the count computed from the base tables (the
-- messages by their enrollment's version, not by the column the view reads).
SELECT count(*) AS step_rows, bool_and(s.queued = (SELECT count(*) FROM journey.messages m
                             JOIN journey.sequence_enrollments e ON e.id = m.enrollment_id
                             WHERE e.sequence_id = s.sequence_id AND e.sequence_version = s.version
                               AND m.step_index = s.step_index)
            AND s.sent = (SELECT count(*) FROM journey.messages m
                             JOIN journey.sequence_enrollments e ON e.id = m.enrollment_id
                             WHERE e.sequence_id = s.sequence_id AND e.sequence_version = s.version
                               AND m.step_index = s.step_index AND m.status = 'sent')
            AND s.failed = (SELECT count(*) FROM journey.messages m
                             JOIN journey.sequence_enrollments e ON e.id = m.enrollment_id
                             WHERE e.sequence_id = s.sequence_id AND e.sequence_version = s.version
                               AND m.step_index = s.step_index AND m.status = 'failed')
            AND s.delivered = (SELECT count(*) FROM journey.messages m
                             JOIN journey.sequence_enrollments e ON e.id = m.enrollment_id
                             WHERE e.sequence_id = s.sequence_id AND e.sequence_version = s.version
                               AND m.step_index = s.step_index AND m.delivery_status = 'delivered')
            AND s.skipped = (SELECT count(*) FROM journey.enrollment_log l
                               JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id
                              WHERE e.sequence_id = s.sequence_id AND e.sequence_version = s.version AND l.step_index = s.step_index
                                AND l.outcome LIKE 'skipped\_%')
            AND s.deferred = (SELECT count(*) FROM journey.enrollment_log l
                               JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id
                              WHERE e.sequence_id = s.sequence_id AND e.sequence_version = s.version AND l.step_index = s.step_index
                                AND l.outcome LIKE 'deferred\_%')
            AND s.stopped_here = (SELECT count(*) FROM journey.sequence_enrollments e
                              WHERE e.sequence_id = s.sequence_id AND e.sequence_version = s.version AND e.status = 'stopped'
                                AND e.current_step_index = s.step_index)) AS step_stats_match_base_tables
  FROM journey.step_stats s WHERE s.sequence_id = :'seq';
-- reached, from the log for the steps that log (all but the wait), and for
-- the wait from where the enrollments stand or went after it (this journey
-- reaches step 3 only through step 2).
SELECT bool_and(s.reached = CASE s.step_index
         WHEN 1 THEN (SELECT count(*) FROM journey.sequence_enrollments e WHERE e.sequence_id = s.sequence_id AND e.sequence_version = s.version)
         WHEN 2 THEN (SELECT count(*) FROM journey.sequence_enrollments e WHERE e.sequence_id = s.sequence_id AND e.sequence_version = s.version
                        AND (e.current_step_index >= 2 AND NOT (e.status = 'stopped' AND e.current_step_index = 1)))
         ELSE (SELECT count(DISTINCT l.enrollment_id) FROM journey.enrollment_log l
                 JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id
                WHERE e.sequence_id = s.sequence_id AND e.sequence_version = s.version AND l.step_index = s.step_index
                  AND l.outcome <> 'stopped')
              + (SELECT count(*) FROM journey.sequence_enrollments e
                  WHERE e.sequence_id = s.sequence_id AND e.sequence_version = s.version AND e.current_step_index = s.step_index
                    AND NOT EXISTS (SELECT FROM journey.enrollment_log l WHERE l.enrollment_id = e.id
                                      AND l.step_index = s.step_index AND l.outcome <> 'stopped'))
         END) AS reached_matches_log
  FROM journey.step_stats s WHERE s.sequence_id = :'seq';
SELECT (SELECT enrolled FROM journey.sequence_stats WHERE sequence_id = :'seq')
     = (SELECT count(*) FROM journey.sequence_enrollments WHERE sequence_id = :'seq') AS enrolled_matches,
       (SELECT exited FROM journey.sequence_stats WHERE sequence_id = :'seq')
     = (SELECT count(*) FROM journey.sequence_enrollments WHERE sequence_id = :'seq'
          AND stop_reason LIKE 'exit_event:%') AS exited_matches;

-- ---------------------------------------------------------------
-- Tenants see their own journeys' rows only (security_invoker)
-- ---------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_stats_a') THEN
        CREATE ROLE regress_stats_a;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_stats_b') THEN
        CREATE ROLE regress_stats_b;
    END IF;
END
$$;
GRANT journey_user TO regress_stats_a, regress_stats_b;
INSERT INTO journey.business_members VALUES (:'b1', 'regress_stats_a'), (:'b2', 'regress_stats_b');
SET ROLE regress_stats_a;
SELECT count(*) AS a_step_rows, sum(reached) AS a_reached, sum(queued) AS a_queued,
       sum(sent) AS a_sent FROM journey.step_stats;
SELECT count(*) AS a_journeys FROM journey.sequence_stats;
RESET ROLE;
SET ROLE regress_stats_b;
SELECT count(*) AS b_step_rows FROM journey.step_stats;
SELECT count(*) AS b_rows_of_a FROM journey.sequence_stats WHERE sequence_id = :'seq';
SELECT count(*) AS b_counter_rows FROM journey.step_counters;
SELECT pg_temp.try('INSERT INTO journey.step_counters VALUES (''' || :'b2' || ''', ''' || :'seq'
                   || ''', 1, 1, 0, 100, 0, 0)') AS b_forges_counters;
RESET ROLE;
SELECT has_table_privilege('public', 'journey.step_stats', 'SELECT') AS public_reads_step_stats,
       has_table_privilege('journey_user', 'journey.step_counters', 'INSERT, UPDATE, DELETE, TRUNCATE') AS tenant_writes_counters;

-- ---------------------------------------------------------------
-- wait_until: the events trigger makes a waiting enrollment due at once
-- ---------------------------------------------------------------
-- Steps stored as the definition module will write them (timeout in
-- wait_ms, the rest in branch_config); inserted directly, since the
-- definition parser does not know the kind yet.
SELECT journey.create_sequence(:'b1', '{"name": "Wait for a review", "status": "active",
  "allow_manual_enroll": true, "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "wait", "wait_ms": 0}, {"kind": "wait"}, {"kind": "wait"}]}') AS wseq \gset
UPDATE journey.sequence_steps SET kind = 'wait_until', wait_ms = 259200000,
       branch_config = '{"event": "review_left", "then": 0, "else": 3}'
 WHERE sequence_id = :'wseq' AND step_index = 1;
SELECT journey.enroll_customer(:'wseq', '00000000-0000-0000-0000-000000000007', '{}',
                               '2027-02-01 10:00+00') AS w7 \gset
SELECT journey.enroll_customer(:'wseq', '00000000-0000-0000-0000-000000000008', '{}',
                               '2027-02-01 10:00+00') AS w8 \gset
SELECT next_run_at FROM journey.sequence_enrollments WHERE id = :'w7';
-- Another customer's event, and another type for c07, wake nobody.
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at) VALUES
  (:'b1', 'review_left', '00000000-0000-0000-0000-000000000009', '2027-02-02 09:00+00'),
  (:'b1', 'invoice_paid', '00000000-0000-0000-0000-000000000007', '2027-02-02 09:00+00');
SELECT next_run_at, meta ? 'wait_until' AS marked FROM journey.sequence_enrollments WHERE id = :'w7';
-- The awaited event, twice in one statement: due at the first one's time,
-- in the event's own transaction (seen before it commits).
BEGIN;
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at) VALUES
  (:'b1', 'review_left', '00000000-0000-0000-0000-000000000007', '2027-02-02 11:00+00'),
  (:'b1', 'review_left', '00000000-0000-0000-0000-000000000007', '2027-02-02 10:00+00');
SELECT next_run_at, meta -> 'wait_until' -> 'step' AS step,
       (meta -> 'wait_until' ->> 'occurred_at')::timestamptz AS occurred_at,
       (meta -> 'wait_until' ->> 'timeout_at')::timestamptz AS timeout_at
  FROM journey.sequence_enrollments WHERE id = :'w7';
COMMIT;
-- A later event changes nothing more.
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
VALUES (:'b1', 'review_left', '00000000-0000-0000-0000-000000000007', '2027-02-02 12:00+00');
SELECT next_run_at, (meta -> 'wait_until' ->> 'occurred_at')::timestamptz AS occurred_at
  FROM journey.sequence_enrollments WHERE id = :'w7';
-- After the timeout the event no longer moves next_run_at earlier than the
-- deadline it missed (the marker keeps both times for the executor).
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
VALUES (:'b1', 'review_left', '00000000-0000-0000-0000-000000000008', '2027-02-05 10:00:01+00');
SELECT next_run_at, (meta -> 'wait_until' ->> 'occurred_at')::timestamptz
                  > (meta -> 'wait_until' ->> 'timeout_at')::timestamptz AS too_late
  FROM journey.sequence_enrollments WHERE id = :'w8';
-- A rolled-back event leaves the enrollment as it was.
SELECT journey.enroll_customer(:'wseq', '00000000-0000-0000-0000-000000000010', '{}',
                               '2027-02-01 10:00+00') AS w10 \gset
BEGIN;
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
VALUES (:'b1', 'review_left', '00000000-0000-0000-0000-000000000010', '2027-02-01 11:00+00');
ROLLBACK;
SELECT next_run_at, meta ? 'wait_until' AS marked FROM journey.sequence_enrollments WHERE id = :'w10';
-- An enrollment no longer at the wait_until step is not touched.
UPDATE journey.sequence_enrollments SET current_step_index = 2 WHERE id = :'w10';
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
VALUES (:'b1', 'review_left', '00000000-0000-0000-0000-000000000010', '2027-02-01 12:00+00');
SELECT next_run_at, meta ? 'wait_until' AS marked FROM journey.sequence_enrollments WHERE id = :'w10';

RESET ROLE;
DELETE FROM journey.business_members WHERE member IN ('regress_stats_a', 'regress_stats_b');
DROP ROLE regress_stats_a;
DROP ROLE regress_stats_b;
