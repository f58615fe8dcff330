-- wait_until (SPEC section 4, issue 15): create_sequence validates it like
-- the other kinds; the executor goes to "then" when the awaited event
-- arrived while the enrollment waited (logged event_arrived), to "else" at
-- the timeout (timed_out); the event before, at and after the timeout, and
-- another customer's event.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

\i test/sql/helpers.sql

\set b1 '00000000-0000-0000-0000-0000000000b1'
INSERT INTO journey.businesses (id, name, timezone, google_review_url)
VALUES (:'b1', 'Pipe Dreams', 'UTC', 'https://g.example/pipe');
INSERT INTO journey.customers (id, business_id, full_name, email)
SELECT ('00000000-0000-0000-0000-0000000000c' || i)::uuid, :'b1', 'Customer ' || i,
       'c' || i || '@example.com'
  FROM generate_series(1, 6) i;

-- ---------------------------------------------------------------
-- Validation: each mistake names the step and the field
-- ---------------------------------------------------------------
CREATE FUNCTION pg_temp.try_step(p_step text) RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.try(format('SELECT journey.create_sequence(%L, %L)',
    '00000000-0000-0000-0000-0000000000b1',
    '{"name": "W", "steps": [' || p_step || ', {"kind": "wait"}, {"kind": "wait"}]}'))
$$;
SELECT pg_temp.try_step('{"kind": "wait_until", "timeout_ms": 1000, "then": 2, "else": 3}') AS no_event;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "", "timeout_ms": 1000, "then": 2, "else": 3}') AS empty_event;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": {"x": 1}, "timeout_ms": 1000, "then": 2, "else": 3}') AS object_event;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "' || repeat('x', 201) || '", "timeout_ms": 1000, "then": 2, "else": 3}') AS long_event;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "then": 2, "else": 3}') AS no_timeout;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "timeout_ms": 0, "then": 2, "else": 3}') AS zero_timeout;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "timeout_ms": "3 days", "then": 2, "else": 3}') AS text_timeout;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "timeout_ms": 1e400, "then": 2, "else": 3}') AS huge_timeout;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "timeout_ms": 1000, "else": 3}') AS no_then;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "timeout_ms": 1000, "then": 2}') AS no_else;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "timeout_ms": 1000, "then": 1, "else": 3}') AS then_backwards;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "timeout_ms": 1000, "then": 2, "else": 9}') AS else_past_the_end;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "timeout_ms": 1000, "then": 2, "else": 3, "wait_ms": 5}') AS with_wait_ms;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "timeout_ms": 1000, "then": 2, "else": 3, "next": 2}') AS with_next;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "timeout_ms": 1000, "then": 2, "else": 3, "message": {"body": "x"}}') AS with_message;
SELECT pg_temp.try_step('{"kind": "wait_until", "event": "review_left", "timeout_ms": 1000, "then": 2, "else": 3, "branch_config": {}}') AS with_branch_config;
SELECT pg_temp.try_step('{"kind": "wait", "event": "review_left"}') AS event_on_wait;
SELECT pg_temp.try_step('{"kind": "branch", "then": 2, "branch_config": {"if": {"random": 50}, "then": 2, "else": 3}}') AS then_on_branch;
SELECT count(*) AS nothing_written FROM journey.sequences;

-- ---------------------------------------------------------------
-- Running: wait three days for a review, else remind
-- ---------------------------------------------------------------
SELECT journey.create_sequence(:'b1', '{"name": "Review or remind", "status": "active",
  "allow_manual_enroll": true, "rate_per_hour": null, "rate_per_day": null,
  "steps": [
    {"kind": "wait_until", "event": "review_left", "timeout_ms": 259200000, "then": 3, "else": 2},
    {"kind": "send_email", "next": 0, "message": {"subject": "A reminder", "body": "Please review us"}},
    {"kind": "send_email", "message": {"subject": "Thank you", "body": "Thanks for the review"}}]}') AS seq \gset
SELECT step_index, kind, wait_ms, branch_config FROM journey.sequence_steps
 WHERE sequence_id = :'seq' ORDER BY step_index;
-- Six customers enrolled at 10:00 on Feb 1; the deadline is Feb 4 10:00.
SELECT journey.enroll_customer(:'seq', ('00000000-0000-0000-0000-0000000000c' || i)::uuid, '{}',
                               '2027-02-01 10:00+00') IS NOT NULL AS enrolled
  FROM generate_series(1, 6) i;
-- c1 reviews on Feb 2 (before), c2 exactly at the deadline, c3 a second
-- after it (its event arrives before the executor ran the timeout), c4's
-- event is another type, c5 reviews on Feb 2 too: c6, who never reviews,
-- is not woken by the other customers' reviews.
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at) VALUES
  (:'b1', 'review_left', '00000000-0000-0000-0000-0000000000c1', '2027-02-02 09:00+00'),
  (:'b1', 'review_left', '00000000-0000-0000-0000-0000000000c2', '2027-02-04 10:00+00'),
  (:'b1', 'review_left', '00000000-0000-0000-0000-0000000000c3', '2027-02-04 10:00:01+00'),
  (:'b1', 'invoice_paid', '00000000-0000-0000-0000-0000000000c4', '2027-02-02 09:00+00'),
  (:'b1', 'review_left', '00000000-0000-0000-0000-0000000000c5', '2027-02-02 09:00+00');
-- c1 is due at its event's time, the rest at the deadline.
SELECT c.full_name, e.next_run_at FROM journey.sequence_enrollments e
  JOIN journey.customers c ON c.id = e.customer_id ORDER BY 1;
SELECT journey.advance_due_enrollments(100, '2027-02-02 09:00+00') AS at_c1s_review;
SELECT journey.advance_due_enrollments(100, '2027-02-04 10:00:05+00') AS at_the_deadline;
SELECT c.full_name, l.step_index, l.outcome, regexp_replace(l.detail, '#[0-9]+', '#N') AS detail, l.at
  FROM journey.enrollment_log l
  JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id
  JOIN journey.customers c ON c.id = e.customer_id
 ORDER BY c.full_name, l.id;
SELECT c.full_name, m.subject FROM journey.messages m
  JOIN journey.customers c ON c.id = m.customer_id ORDER BY 1;
-- The funnel counts the wait_until's arrivals and both arms.
SELECT step_index, kind, reached, queued FROM journey.step_stats WHERE sequence_id = :'seq'
 ORDER BY step_index;

-- A malformed stored wait_until (written around create_sequence) stops
-- the enrollment with the reason instead of failing the call.
SELECT journey.create_sequence(:'b1', '{"name": "Broken later", "status": "active",
  "allow_manual_enroll": true,
  "steps": [{"kind": "wait_until", "event": "review_left", "timeout_ms": 1000, "then": 0, "else": 0}]}') AS broken \gset
UPDATE journey.sequence_steps SET branch_config = '{"then": 0, "else": 0}' WHERE sequence_id = :'broken';
SELECT journey.enroll_customer(:'broken', '00000000-0000-0000-0000-0000000000c6', '{}',
                               '2027-03-01 10:00+00') AS broken_enrollment \gset
SELECT journey.advance_due_enrollments(100, '2027-03-01 10:00:01+00') AS handled;
SELECT status, stop_reason FROM journey.sequence_enrollments WHERE id = :'broken_enrollment';
