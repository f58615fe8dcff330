-- Executor isolation: an error while running one enrollment stops that
-- enrollment alone (stop_reason 'error:<SQLSTATE>', logged with the message)
-- and the call goes on with the others; errors outside any one enrollment
-- fail the call.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
\i test/sql/helpers.sql

\set b1 '00000000-0000-0000-0000-0000000000b1'
INSERT INTO journey.businesses (id, name) VALUES (:'b1', 'Isolation Inc');
INSERT INTO journey.customers (id, business_id, full_name, email, attributes)
SELECT ('00000000-0000-0000-0000-0000000000c' || i)::uuid, :'b1', 'Customer ' || i, 'c' || i || '@example.com',
       CASE WHEN i = 3 THEN '{"score": 1e400}'::jsonb ELSE '{"score": 5}'::jsonb END
  FROM generate_series(1, 6) i;
-- send, then branch on the score, then send again
SELECT journey.create_sequence(:'b1', '{"name": "isolated", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "send_email", "message": {"subject": "Hi {{ customer.first_name }}", "body": "Hello {{ enrollment.meta.tag | default: \"you\" }}"}},
            {"kind": "branch", "branch_config": {"if": {"field": "customer.score", "op": "gt", "value": 1000000}, "then": 3, "else": 4}},
            {"kind": "send_email", "message": {"subject": "High", "body": "{{ customer.score }}"}},
            {"kind": "wait", "wait_ms": 60000}]}') AS seq \gset

-- Customer 2's meta nests 14,500 levels deep; customer 3's score is beyond
-- doubles; customer 4's message is refused by a trigger on messages.
SELECT journey.enroll_customer(:'seq', '00000000-0000-0000-0000-0000000000c1', '{"tag": "one"}', '2027-02-01 10:00+00') AS e1 \gset
SELECT journey.enroll_customer(:'seq', '00000000-0000-0000-0000-0000000000c2',
       jsonb_build_object('tag', 'two', 'deep', (repeat('[', 14500) || '1' || repeat(']', 14500))::jsonb),
       '2027-02-01 10:00+00') AS e2 \gset
SELECT journey.enroll_customer(:'seq', '00000000-0000-0000-0000-0000000000c3', '{}', '2027-02-01 10:00+00') AS e3 \gset
SELECT journey.enroll_customer(:'seq', '00000000-0000-0000-0000-0000000000c4', '{}', '2027-02-01 10:00+00') AS e4 \gset
SELECT journey.enroll_customer(:'seq', '00000000-0000-0000-0000-0000000000c5', '{}', '2027-02-01 10:00+00') AS e5 \gset
CREATE FUNCTION pg_temp.refuse_c4() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.to_address = 'c4@example.com' THEN
    RAISE EXCEPTION 'the mail relay refuses %', NEW.to_address USING ERRCODE = 'P0001';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_c4 BEFORE INSERT ON journey.messages FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_c4();

-- With a small stack, building customer 2's template context runs out of it
SET max_stack_depth = '400kB';
SELECT journey.advance_due_enrollments(1000, '2027-02-01 10:00+00') AS handled;
RESET max_stack_depth;
SELECT c.full_name, e.status, e.current_step_index, e.stop_reason
  FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id ORDER BY 1;
SELECT c.full_name, l.step_index, l.outcome, l.detail
  FROM journey.enrollment_log l JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id
  JOIN journey.customers c ON c.id = e.customer_id ORDER BY 1, l.id;
-- the stopped ones have no message; the others have theirs
SELECT to_address, subject, left(body, 20) AS body FROM journey.messages ORDER BY to_address, step_index;
-- a stopped enrollment is not claimed again
SELECT journey.advance_due_enrollments(1000, '2027-02-01 10:02+00') AS handled;
SELECT status, count(*) FROM journey.sequence_enrollments GROUP BY 1 ORDER BY 1;

-- A failed enrollment gives back the rate-limit slot it took: with one
-- message an hour, customer 5 (due after customer 4) still gets it.
SELECT journey.create_sequence(:'b1', '{"name": "limited", "status": "active", "allow_manual_enroll": true,
  "rate_per_hour": 1, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"subject": "Hi", "body": "Hello"}}]}') AS limited \gset
SELECT journey.enroll_customer(:'limited', '00000000-0000-0000-0000-0000000000c4', '{}', '2027-02-01 11:00+00') IS NOT NULL AS enrolled;
SELECT journey.enroll_customer(:'limited', '00000000-0000-0000-0000-0000000000c5', '{}', '2027-02-01 11:01+00') IS NOT NULL AS enrolled;
SELECT journey.advance_due_enrollments(1000, '2027-02-01 11:02+00') AS handled;
SELECT c.full_name, e.status, e.stop_reason, l.outcome
  FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id
  JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 WHERE e.sequence_id = :'limited' ORDER BY 1, l.id;
DROP TRIGGER refuse_c4 ON journey.messages;

-- Errors outside any one enrollment fail the call, writing nothing: here a
-- read-only transaction
SELECT journey.enroll_customer(:'seq', '00000000-0000-0000-0000-0000000000c6', '{}', '2027-02-02 10:00+00') AS e6 \gset
BEGIN TRANSACTION READ ONLY;
SELECT pg_temp.try($$SELECT journey.advance_due_enrollments(1000, '2027-02-02 10:00+00')$$);
ROLLBACK;
SELECT status, current_step_index FROM journey.sequence_enrollments WHERE id = :'e6';
SELECT journey.advance_due_enrollments(1000, '2027-02-02 10:00+00') AS handled;
SELECT status, current_step_index FROM journey.sequence_enrollments WHERE id = :'e6';
