-- Executor: every step kind, delays on arrival, zero-delay chaining, jumps,
-- finishing, paused sequences, batches, malformed steps and bad arguments.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

\i test/sql/helpers.sql

\set b1 '00000000-0000-0000-0000-0000000000b1'
INSERT INTO journey.businesses (id, name, timezone, google_review_url)
VALUES (:'b1', 'Pipe Dreams', 'UTC', 'https://g.example/pipe');
INSERT INTO journey.customers (id, business_id, full_name, email, phone) VALUES
  ('00000000-0000-0000-0000-0000000000c1', :'b1', 'Ada Lovelace', 'ada@example.com', '+15550001'),
  ('00000000-0000-0000-0000-0000000000c2', :'b1', 'Bob Stone', 'bob@example.com', NULL),
  ('00000000-0000-0000-0000-0000000000c3', :'b1', 'Cy Young', 'cy@example.com', NULL);

-- ---------------------------------------------------------------
-- A journey through waits, sends, a zero-delay chain and a jump
-- ---------------------------------------------------------------
SELECT journey.create_sequence(:'b1', '{"name": "Tour", "status": "active", "allow_manual_enroll": true,
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "wait", "wait_ms": 3600000},
            {"kind": "send_email", "message": {"purpose": "thank_you",
              "subject": "Thanks, {{customer.first_name}}!",
              "body": "Thank you for choosing {{business.name}}. Ref {{enrollment.meta.ref | default: \"none\"}}"}},
            {"kind": "wait", "wait_ms": 86400000},
            {"kind": "wait", "next": 6},
            {"kind": "send_sms", "message": {"body": "never sent: step 4 jumps over me"}},
            {"kind": "send_sms", "message": {"purpose": "review_request",
              "body": "Hi {{customer.name}}, review us: {{review_link}}"}}]}') AS tour \gset

SELECT journey.enroll_customer(:'tour', '00000000-0000-0000-0000-0000000000c1', '{"ref": "R-7"}',
                               '2027-01-12 10:00+00') AS ada \gset
SELECT current_step_index, next_run_at FROM journey.sequence_enrollments WHERE id = :'ada';

-- not due yet: nothing handled, nothing written
SELECT journey.advance_due_enrollments(100, '2027-01-12 10:59:59+00') AS handled;
SELECT count(*) AS log_rows FROM journey.enrollment_log;

-- due: step 1 (a wait: its delay was applied on arrival) runs, step 2 has no
-- delay and runs in the same call, step 3's delay counts from p_as_of
SELECT journey.advance_due_enrollments(100, '2027-01-12 11:00+00') AS handled;
SELECT status, current_step_index, next_run_at FROM journey.sequence_enrollments WHERE id = :'ada';
SELECT channel, step_index, message_purpose, to_address, subject, body, status, send_after
  FROM journey.messages WHERE enrollment_id = :'ada' ORDER BY id;

-- called again at the same moment: nothing is due any more
SELECT journey.advance_due_enrollments(100, '2027-01-12 11:00+00') AS handled;

-- late by 5 minutes: steps run as of p_as_of; step 4 jumps to 6, skipping 5;
-- past the last step the enrollment finishes
SELECT journey.advance_due_enrollments(100, '2027-01-13 11:05+00') AS handled;
SELECT status, current_step_index, next_run_at, finished_at FROM journey.sequence_enrollments WHERE id = :'ada';
SELECT channel, step_index, to_address, subject, body, send_after
  FROM journey.messages WHERE enrollment_id = :'ada' ORDER BY id;
SELECT * FROM pg_temp.log_of(:'ada');

-- a finished enrollment is never touched again, even when made due
SELECT journey.advance_due_enrollments(100, '2030-01-01 00:00+00') AS handled;
SELECT count(*) AS log_rows FROM journey.enrollment_log WHERE enrollment_id = :'ada';

-- ---------------------------------------------------------------
-- Stopped enrollments never send; paused sequences wait
-- ---------------------------------------------------------------
SELECT journey.enroll_customer(:'tour', '00000000-0000-0000-0000-0000000000c2', '{}',
                               '2027-02-01 10:00+00') AS bob \gset
SELECT journey.stop_enrollment(:'bob', 'asked us to stop');
SELECT journey.advance_due_enrollments(100, '2027-02-05 00:00+00') AS handled;
SELECT status, current_step_index, stop_reason FROM journey.sequence_enrollments WHERE id = :'bob';
SELECT count(*) AS messages_for_bob FROM journey.messages WHERE enrollment_id = :'bob';

SELECT journey.enroll_customer(:'tour', '00000000-0000-0000-0000-0000000000c3', '{}',
                               '2027-02-01 10:00+00') AS cy \gset
UPDATE journey.sequences SET status = 'paused' WHERE id = :'tour';
-- paused: the due enrollment is left as it is
SELECT journey.advance_due_enrollments(100, '2027-02-01 12:00+00') AS handled;
SELECT status, current_step_index, next_run_at FROM journey.sequence_enrollments WHERE id = :'cy';
-- active again: it runs, as of the call
UPDATE journey.sequences SET status = 'active' WHERE id = :'tour';
SELECT journey.advance_due_enrollments(100, '2027-02-01 12:00+00') AS handled;
SELECT status, current_step_index, next_run_at FROM journey.sequence_enrollments WHERE id = :'cy';
SELECT step, outcome, detail FROM pg_temp.log_of(:'cy');
-- a day later: step 6 sends an SMS, and Cy has no phone; the journey goes on
-- (here: to its end)
SELECT journey.advance_due_enrollments(100, '2027-02-02 12:00+00') AS handled;
SELECT step, outcome, detail, at FROM pg_temp.log_of(:'cy');

-- ---------------------------------------------------------------
-- Batches: at most p_batch_size, oldest due first
-- ---------------------------------------------------------------
SELECT journey.create_sequence(:'b1', '{"name": "Two waits", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "wait", "wait_ms": 60000}, {"kind": "wait", "wait_ms": 60000}]}') AS waits \gset
SELECT journey.enroll_customer(:'waits', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-03-01 10:02+00') AS w1 \gset
SELECT journey.enroll_customer(:'waits', '00000000-0000-0000-0000-0000000000c2', '{}', '2027-03-01 10:00+00') AS w2 \gset
SELECT journey.enroll_customer(:'waits', '00000000-0000-0000-0000-0000000000c3', '{}', '2027-03-01 10:01+00') AS w3 \gset
SELECT journey.advance_due_enrollments(2, '2027-03-01 11:00+00') AS handled;
SELECT e.id = :'w1' AS is_w1, e.id = :'w2' AS is_w2, e.id = :'w3' AS is_w3, e.current_step_index, e.next_run_at
  FROM journey.sequence_enrollments e WHERE e.sequence_id = :'waits' ORDER BY e.enrolled_at;
SELECT journey.advance_due_enrollments(2, '2027-03-01 11:00+00') AS handled;
SELECT journey.advance_due_enrollments(2, '2027-03-01 11:00+00') AS handled;
SELECT journey.advance_due_enrollments(10, '2027-03-01 11:01+00') AS handled;
SELECT status, count(*) FROM journey.sequence_enrollments WHERE sequence_id = :'waits' GROUP BY status;
SELECT step, outcome, detail FROM pg_temp.log_of(:'w2');

-- ---------------------------------------------------------------
-- A step that no longer exists finishes the enrollment
-- ---------------------------------------------------------------
SELECT journey.enroll_customer(:'waits', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-04-01 10:00+00') AS gone \gset
SELECT journey.advance_due_enrollments(10, '2027-04-01 10:01+00') AS handled;
SELECT current_step_index, next_run_at FROM journey.sequence_enrollments WHERE id = :'gone';
DELETE FROM journey.sequence_steps WHERE sequence_id = :'waits' AND step_index = 2;
SELECT journey.advance_due_enrollments(10, '2027-04-01 10:02+00') AS handled;
SELECT status, current_step_index, finished_at FROM journey.sequence_enrollments WHERE id = :'gone';
SELECT step, outcome, detail FROM pg_temp.log_of(:'gone');

-- ---------------------------------------------------------------
-- Steps written around create_sequence that cannot run stop their
-- enrollment, with the reason; the rest of the batch goes on
-- ---------------------------------------------------------------
INSERT INTO journey.sequences (id, business_id, name, status, allow_manual_enroll)
VALUES ('00000000-0000-0000-0000-0000000000a1', :'b1', 'Broken', 'active', true);
INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index, message_config, branch_config, next_step_index) VALUES
  (:'b1', '00000000-0000-0000-0000-0000000000a1', 'send_email', 1, '{"subject": "Hi", "body": "Hello {{ customer.name"}', NULL, NULL),
  (:'b1', '00000000-0000-0000-0000-0000000000a1', 'wait', 2, '{}', NULL, 1),
  (:'b1', '00000000-0000-0000-0000-0000000000a1', 'branch', 3, '{}', '{"if": {"field": "customer.phone", "op": "like"}, "then": 4, "else": 0}', NULL),
  (:'b1', '00000000-0000-0000-0000-0000000000a1', 'send_sms', 4, '{}', NULL, NULL),
  (:'b1', '00000000-0000-0000-0000-0000000000a1', 'branch', 5, '{}', '{"if": {"random": 50}, "then": 2, "else": 0}', NULL);
INSERT INTO journey.customers (id, business_id, full_name, email, phone)
SELECT ('00000000-0000-0000-0000-0000000000d' || i)::uuid, :'b1', 'Broken ' || i, 'b' || i || '@example.com', '+1555000' || i
  FROM generate_series(1, 6) i;
-- five enrollments, each due at one of the broken steps, and one healthy one
INSERT INTO journey.sequence_enrollments (id, business_id, sequence_id, customer_id, current_step_index, next_run_at, enrolled_at)
SELECT ('00000000-0000-0000-0000-00000000e00' || i)::uuid, :'b1', '00000000-0000-0000-0000-0000000000a1',
       ('00000000-0000-0000-0000-0000000000d' || i)::uuid, i, '2027-05-01 10:00+00', '2027-05-01 10:00+00'
  FROM generate_series(1, 5) i;
SELECT journey.enroll_customer(:'waits', '00000000-0000-0000-0000-0000000000d6', '{}', '2027-05-01 09:59+00') AS healthy \gset
SELECT journey.advance_due_enrollments(10, '2027-05-01 10:00+00') AS handled;
SELECT e.current_step_index, e.status, e.stop_reason, l.step_index, l.outcome, l.detail
  FROM journey.sequence_enrollments e JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 WHERE e.sequence_id = '00000000-0000-0000-0000-0000000000a1' ORDER BY e.current_step_index, l.id;
SELECT status, current_step_index, next_run_at FROM journey.sequence_enrollments WHERE id = :'healthy';
SELECT count(*) AS broken_messages FROM journey.messages WHERE sequence_id = '00000000-0000-0000-0000-0000000000a1';
-- a delay past the end of time stops the enrollment rather than failing
-- every call that claims it
INSERT INTO journey.sequences (id, business_id, name, status)
VALUES ('00000000-0000-0000-0000-0000000000a2', :'b1', 'Forever', 'active');
INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index, wait_ms) VALUES
  (:'b1', '00000000-0000-0000-0000-0000000000a2', 'wait', 1, 0),
  (:'b1', '00000000-0000-0000-0000-0000000000a2', 'wait', 2, 9000000000000000000);
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, next_run_at, enrolled_at)
VALUES (:'b1', '00000000-0000-0000-0000-0000000000a2', '00000000-0000-0000-0000-0000000000d1',
        '2027-05-01 10:00+00', '2027-05-01 10:00+00');
SELECT journey.advance_due_enrollments(10, '2027-05-01 10:00+00') AS handled;
SELECT e.status, e.stop_reason, l.step_index, l.outcome, l.detail
  FROM journey.sequence_enrollments e JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 WHERE e.sequence_id = '00000000-0000-0000-0000-0000000000a2';

-- ---------------------------------------------------------------
-- Bad arguments: an error with its SQLSTATE, and nothing written
-- ---------------------------------------------------------------
SELECT journey.enroll_customer(:'waits', '00000000-0000-0000-0000-0000000000c2', '{}', '2027-06-01 10:00+00') IS NOT NULL AS enrolled;
SELECT count(*) AS log_before FROM journey.enrollment_log \gset
SELECT pg_temp.try($$SELECT journey.advance_due_enrollments(0, '2027-06-02 00:00+00')$$);
SELECT pg_temp.try($$SELECT journey.advance_due_enrollments(-5, '2027-06-02 00:00+00')$$);
SELECT pg_temp.try($$SELECT journey.advance_due_enrollments(NULL, '2027-06-02 00:00+00')$$);
SELECT pg_temp.try($$SELECT journey.advance_due_enrollments(10, NULL)$$);
SELECT pg_temp.try($$SELECT journey.advance_due_enrollments(10, 'infinity')$$);
SELECT pg_temp.try($$SELECT journey.advance_due_enrollments(10, '-infinity')$$);
SELECT count(*) = :log_before AS nothing_logged,
       (SELECT count(*) FROM journey.sequence_enrollments WHERE status = 'active'
           AND next_run_at = '2027-06-01 10:01+00') AS still_due
  FROM journey.enrollment_log;
-- p_batch_size defaults to 1000
SELECT journey.advance_due_enrollments(p_as_of => '2027-06-01 10:01+00') AS handled;
