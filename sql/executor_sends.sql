-- Executor: the checks of a send step, in the order the executor makes
-- them: address and suppression, quiet hours in the recipient's zone,
-- rolling rate limits, rendering; then one message per step.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

\set b1 '00000000-0000-0000-0000-0000000000b1'
INSERT INTO journey.businesses (id, name, timezone, google_review_url)
VALUES (:'b1', 'Pipe Dreams', 'America/New_York', NULL);

\i test/sql/helpers.sql

-- ---------------------------------------------------------------
-- Address, suppression and rendering: skipped, logged, the journey goes on
-- ---------------------------------------------------------------
INSERT INTO journey.customers (id, business_id, full_name, email, phone, attributes) VALUES
  ('00000000-0000-0000-0000-0000000000c1', :'b1', 'Ada Lovelace', 'ada@example.com', '+15550001', '{"plan": "gold"}'),
  ('00000000-0000-0000-0000-0000000000c2', :'b1', 'Bob Stone', NULL, '', '{}'),
  ('00000000-0000-0000-0000-0000000000c3', :'b1', 'Cy Young', 'cy@example.com', '+15550003', '{}'),
  ('00000000-0000-0000-0000-0000000000c4', :'b1', 'Di Prince', 'di@example.com', '+15550004', '{"plan": "silver"}');
INSERT INTO journey.suppressions (business_id, channel, address, reason) VALUES
  (:'b1', 'email', 'cy@example.com', 'bounced'),
  (:'b1', 'sms', '+15550004', 'STOP');

SELECT journey.create_sequence(:'b1', '{"name": "Checks", "status": "active", "allow_manual_enroll": true,
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"purpose": "plan",
              "subject": "Your {{customer.plan}} plan", "body": "Hi {{customer.first_name}}"}},
            {"kind": "send_sms", "message": {"purpose": "review_request",
              "body": "Review us: {{review_link}}"}},
            {"kind": "send_sms", "message": {"body": "Thanks again, {{customer.first_name}} ({{event.invoice | default: \"no invoice\"}})"}},
            {"kind": "wait", "wait_ms": 60000}]}') AS checks \gset
SELECT journey.enroll_customer(:'checks', id, '{}', '2027-01-12 15:00+00') IS NOT NULL AS enrolled
  FROM journey.customers ORDER BY id;
SELECT journey.advance_due_enrollments(100, '2027-01-12 15:00+00') AS handled;

-- Ada: email queued; the review link is missing (the business has none), so
-- step 2 is skipped naming it; step 3 uses the default
-- Bob: no email, an empty phone: no address for any step
-- Cy: email suppressed, SMS sent; Di: SMS suppressed, email sent
SELECT c.full_name, l.step_index, l.outcome, l.detail
  FROM journey.enrollment_log l
  JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id
  JOIN journey.customers c ON c.id = e.customer_id
 ORDER BY c.full_name, l.id;
SELECT c.full_name, m.channel, m.step_index, m.message_purpose, m.to_address, m.subject, m.body, m.status, m.send_after
  FROM journey.messages m JOIN journey.customers c ON c.id = m.customer_id
 ORDER BY c.full_name, m.step_index;
-- every enrollment went on to the wait
SELECT current_step_index, next_run_at, count(*) FROM journey.sequence_enrollments
 WHERE sequence_id = :'checks' GROUP BY 1, 2;
-- one message per enrollment and step: the key holds
SELECT count(*) = count(DISTINCT (enrollment_id, step_index)) AS unique_per_step FROM journey.messages;

-- The triggering event's payload renders as event.<key> (and is kept under
-- enrollment.meta.event)
SELECT journey.create_sequence(:'b1', '{"name": "Receipt", "status": "active", "trigger_event_type": "invoice_paid",
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"purpose": "receipt",
    "subject": "Invoice {{event.invoice}}", "body": "{{customer.first_name}}, we received {{enrollment.meta.event.amount}} USD."}}]}') IS NOT NULL AS created;
SELECT journey.ingest_event(:'b1', 'invoice_paid', '{"id": "00000000-0000-0000-0000-0000000000c4"}',
                            '{"invoice": "INV-42", "amount": 120.5}', NULL, '2027-01-12 16:00+00') IS NOT NULL AS ingested;
SELECT journey.advance_due_enrollments(100, '2027-01-12 16:00+00') AS handled;
SELECT to_address, subject, body FROM journey.messages WHERE message_purpose = 'receipt';

-- ---------------------------------------------------------------
-- Quiet hours, in the recipient's local time
-- ---------------------------------------------------------------
-- 21:00-08:00 crosses midnight; the business is in New York.
SELECT journey.create_sequence(:'b1', '{"name": "Quiet", "status": "active", "allow_manual_enroll": true,
  "quiet_hours": {"start": "21:00", "end": "08:00"}, "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"subject": "Hello", "body": "Hello {{customer.first_name}}"}}]}') AS quiet \gset

-- Runs one customer through the quiet sequence: enrolled at p_at, the executor
-- called at p_at and again at the deferred time; returns the log.
CREATE FUNCTION pg_temp.quiet_run(p_customer uuid, p_at timestamptz)
RETURNS TABLE (step integer, outcome text, detail text, at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
  v_enrollment uuid;
  v_next timestamptz;
BEGIN
  UPDATE journey.sequence_enrollments SET status = 'finished', next_run_at = NULL
   WHERE customer_id = p_customer AND status = 'active';
  v_enrollment := journey.enroll_customer((SELECT id FROM journey.sequences WHERE name = 'Quiet'),
                                          p_customer, '{}', p_at);
  PERFORM journey.advance_due_enrollments(100, p_at);
  SELECT next_run_at INTO v_next FROM journey.sequence_enrollments
   WHERE id = v_enrollment AND status = 'active';
  IF v_next IS NOT NULL THEN
    -- a moment before the deferred time nothing happens; at it, the send
    PERFORM journey.advance_due_enrollments(100, v_next - interval '1 second');
    PERFORM journey.advance_due_enrollments(100, v_next);
  END IF;
  RETURN QUERY SELECT * FROM pg_temp.log_of(v_enrollment);
END
$$;

-- 20:59 New York (EST, UTC-5): before the window, sent at once
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c1', '2027-01-13 01:59+00');
-- 21:00 New York: the window's start is inside it; deferred to 08:00 next morning
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c1', '2027-01-13 02:00+00');
-- 03:30 New York: the after-midnight part; deferred to 08:00 the same day
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c1', '2027-01-13 08:30+00');
-- 08:00 New York: the window's end is outside it
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c1', '2027-01-13 13:00+00');

-- Around DST changes: 2027-03-14 New York springs forward at 02:00 (EST to
-- EDT), so 08:00 that morning is 12:00 UTC, not 13:00
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c1', '2027-03-14 03:00+00');
-- 2027-11-07 it falls back at 02:00 (EDT to EST): 08:00 is 13:00 UTC, not 12:00
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c1', '2027-11-07 03:00+00');

-- A window ending in the hour a DST change skips: 02:30 does not exist in
-- New York on 2027-03-14; the deferral resolves it as Postgres reads such
-- input, to 03:30 EDT (07:30 UTC)
UPDATE journey.sequences SET quiet_hours_start = '22:00', quiet_hours_end = '02:30' WHERE id = :'quiet';
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c1', '2027-03-14 05:00+00');
UPDATE journey.sequences SET quiet_hours_start = '21:00', quiet_hours_end = '08:00' WHERE id = :'quiet';

-- The customer's zone overrides the business's: at 22:30 UTC it is 22:30 in
-- London (quiet) but 17:30 in New York (not quiet)
INSERT INTO journey.customers (id, business_id, full_name, email, timezone)
VALUES ('00000000-0000-0000-0000-0000000000c5', :'b1', 'Eve Ng', 'eve@example.com', 'Europe/London');
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c5', '2027-01-12 22:30+00');
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c4', '2027-01-12 22:30+00');
-- In Tokyo (no DST) at 22:30 UTC it is 07:30 the next morning: deferred half an hour
UPDATE journey.customers SET timezone = 'Asia/Tokyo' WHERE id = '00000000-0000-0000-0000-0000000000c5';
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c5', '2027-01-12 22:30+00');

-- A window inside one day (12:00-13:30), and equal bounds meaning none
UPDATE journey.sequences SET quiet_hours_start = '12:00', quiet_hours_end = '13:30' WHERE id = :'quiet';
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c4', '2027-01-12 17:15+00');
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c4', '2027-01-12 16:59+00');
UPDATE journey.sequences SET quiet_hours_start = '12:00', quiet_hours_end = '12:00' WHERE id = :'quiet';
SELECT * FROM pg_temp.quiet_run('00000000-0000-0000-0000-0000000000c4', '2027-01-12 17:15+00');
-- Quiet hours do not hold back steps that send nothing
SELECT journey.create_sequence(:'b1', '{"name": "Quiet waits", "status": "active", "allow_manual_enroll": true,
  "quiet_hours": {"start": "00:00", "end": "23:59"},
  "steps": [{"kind": "wait", "wait_ms": 1000}, {"kind": "wait", "wait_ms": 1000}]}') AS quietwaits \gset
SELECT journey.enroll_customer(:'quietwaits', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-01-12 17:00+00') AS qw \gset
SELECT journey.advance_due_enrollments(100, '2027-01-12 17:00:01+00') AS handled;
SELECT current_step_index, next_run_at FROM journey.sequence_enrollments WHERE id = :'qw';

-- ---------------------------------------------------------------
-- Rate limits: rolling windows per sequence, counted by send_after
-- ---------------------------------------------------------------
INSERT INTO journey.customers (id, business_id, full_name, email)
SELECT ('00000000-0000-0000-0000-0000000001' || lpad(i::text, 2, '0'))::uuid, :'b1', 'Rate ' || i, 'r' || i || '@example.com'
  FROM generate_series(1, 12) i;
SELECT journey.create_sequence(:'b1', '{"name": "Hourly", "status": "active", "allow_manual_enroll": true,
  "rate_per_hour": 2, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"subject": "Hi", "body": "Hi {{customer.full_name}}"}}]}') AS hourly \gset
-- five due at 10:30 UTC, enrolled a minute apart (the oldest runs first)
SELECT journey.enroll_customer(:'hourly', ('00000000-0000-0000-0000-0000000001' || lpad(i::text, 2, '0'))::uuid,
                               '{}', '2027-01-12 10:25+00'::timestamptz + i * interval '1 minute') IS NOT NULL AS enrolled
  FROM generate_series(1, 5) i;
SELECT journey.advance_due_enrollments(100, '2027-01-12 10:30+00') AS handled;
-- two queued; the other three deferred to when a slot frees, each to its own
-- slot: 11:30 and 11:30 (the 10:30 sends leave the window), then 12:30
SELECT c.full_name, e.status, e.next_run_at, l.outcome, l.detail
  FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id
  JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 WHERE e.sequence_id = :'hourly' ORDER BY c.full_name, l.id;
-- a rolling hour, not a clock hour: at 11:00 the window 10:00-11:00 still
-- holds the two 10:30 sends
SELECT journey.enroll_customer(:'hourly', '00000000-0000-0000-0000-000000000106', '{}', '2027-01-12 11:00+00') AS r6 \gset
SELECT journey.advance_due_enrollments(100, '2027-01-12 11:00+00') AS handled;
SELECT step, outcome, detail FROM pg_temp.log_of(:'r6');
-- 11:29:59: nothing frees yet; 11:30: the three due run, two slots free
SELECT journey.advance_due_enrollments(100, '2027-01-12 11:29:59+00') AS handled;
SELECT journey.advance_due_enrollments(100, '2027-01-12 11:30+00') AS handled;
SELECT c.full_name, m.send_after FROM journey.messages m JOIN journey.customers c ON c.id = m.customer_id
 WHERE m.sequence_id = :'hourly' ORDER BY m.send_after, c.full_name;
SELECT c.full_name, e.next_run_at FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id
 WHERE e.sequence_id = :'hourly' AND e.status = 'active' ORDER BY c.full_name;
-- cancelled messages do not count: with one of the 11:30 sends cancelled, a
-- send due at 11:45 finds a free slot
UPDATE journey.messages SET status = 'cancelled'
 WHERE sequence_id = :'hourly' AND customer_id = '00000000-0000-0000-0000-000000000103';
SELECT journey.enroll_customer(:'hourly', '00000000-0000-0000-0000-000000000112', '{}', '2027-01-12 11:45+00') AS r12 \gset
SELECT journey.advance_due_enrollments(100, '2027-01-12 11:45+00') AS handled;
SELECT step, outcome, detail FROM pg_temp.log_of(:'r12');
-- 12:30: the window holds the 11:45 send; of the two due, one is sent
SELECT journey.advance_due_enrollments(100, '2027-01-12 12:30+00') AS handled;
SELECT c.full_name, e.status, e.next_run_at FROM journey.sequence_enrollments e
  JOIN journey.customers c ON c.id = e.customer_id
 WHERE e.sequence_id = :'hourly' ORDER BY c.full_name;

-- Daily limit: three a rolling day; the hourly sequence's sends within the
-- last day do not count
SELECT journey.create_sequence(:'b1', '{"name": "Daily", "status": "active", "allow_manual_enroll": true,
  "rate_per_hour": null, "rate_per_day": 3,
  "steps": [{"kind": "send_email", "message": {"subject": "Hi", "body": "Hi"}}]}') AS daily \gset
SELECT journey.enroll_customer(:'daily', ('00000000-0000-0000-0000-0000000001' || lpad(i::text, 2, '0'))::uuid,
                               '{}', '2027-01-12 13:00+00'::timestamptz + i * interval '1 minute') IS NOT NULL AS enrolled
  FROM generate_series(7, 11) i;
SELECT journey.advance_due_enrollments(100, '2027-01-12 13:30+00') AS handled;
SELECT c.full_name, e.status, e.next_run_at, l.outcome, l.detail
  FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id
  JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 WHERE e.sequence_id = :'daily' ORDER BY c.full_name, l.id;

-- Both limits: the deferral waits for a slot in both windows
SELECT journey.create_sequence(:'b1', '{"name": "Both", "status": "active", "allow_manual_enroll": true,
  "rate_per_hour": 1, "rate_per_day": 2,
  "steps": [{"kind": "send_email", "message": {"subject": "Hi", "body": "Hi"}}]}') AS both_limits \gset
SELECT journey.enroll_customer(:'both_limits', ('00000000-0000-0000-0000-0000000001' || lpad(i::text, 2, '0'))::uuid,
                               '{}', '2027-02-01 09:00+00'::timestamptz + i * interval '1 minute') IS NOT NULL AS enrolled
  FROM generate_series(1, 3) i;
SELECT journey.advance_due_enrollments(100, '2027-02-01 10:00+00') AS handled;
SELECT c.full_name, e.next_run_at, l.outcome, l.detail
  FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id
  JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 WHERE e.sequence_id = :'both_limits' ORDER BY c.full_name, l.id;

-- Quiet hours are checked before rate limits: two due inside quiet hours
-- (04:00-06:00 New York, 09:00-11:00 UTC) with room for one an hour are both
-- deferred for quiet hours; at its end one is sent, the other waits an hour
SELECT journey.create_sequence(:'b1', '{"name": "Order", "status": "active", "allow_manual_enroll": true,
  "quiet_hours": {"start": "04:00", "end": "06:00"}, "rate_per_hour": 1, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"subject": "Hi", "body": "Hi"}}]}') AS order_seq \gset
SELECT journey.enroll_customer(:'order_seq', ('00000000-0000-0000-0000-0000000001' || lpad(i::text, 2, '0'))::uuid,
                               '{}', '2027-02-05 10:00+00'::timestamptz + i * interval '1 second') IS NOT NULL AS enrolled
  FROM generate_series(4, 5) i;
SELECT journey.advance_due_enrollments(100, '2027-02-05 10:00:05+00') AS handled;
SELECT journey.advance_due_enrollments(100, '2027-02-05 11:00+00') AS handled;
SELECT c.full_name, e.next_run_at, l.outcome, l.detail, l.at
  FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id
  JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 WHERE e.sequence_id = :'order_seq' ORDER BY c.full_name, l.id;
