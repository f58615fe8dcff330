-- Executor: branch conditions (fields of customer columns and attributes,
-- events since enrollment, the stable random split, all / any).
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

\set b1 '00000000-0000-0000-0000-0000000000b1'
INSERT INTO journey.businesses (id, name) VALUES (:'b1', 'Pipe Dreams');
INSERT INTO journey.customers (id, business_id, full_name, email, phone, external_id, attributes) VALUES
  ('00000000-0000-0000-0000-0000000000c1', :'b1', 'Ada Lovelace', 'ada@example.com', '+15550001', 'QB-1',
   '{"plan": "gold", "visits": 3, "vip": true, "since": "2024-05-01", "address": {"city": "Paris"}}'),
  ('00000000-0000-0000-0000-0000000000c2', :'b1', 'Bob Stone', 'bob@example.com', NULL, NULL,
   '{"plan": "silver", "visits": "12", "vip": false, "nickname": ""}');

-- A sequence per condition: step 1 branches to step 2 (then) or 3 (else).
CREATE FUNCTION pg_temp.branch_on(p_condition jsonb) RETURNS uuid LANGUAGE sql AS $$
  SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', jsonb_build_object(
    'name', p_condition::text, 'status', 'active', 'allow_manual_enroll', true,
    'steps', jsonb_build_array(
      jsonb_build_object('kind', 'branch', 'branch_config',
                         jsonb_build_object('if', p_condition, 'then', 2, 'else', 3)),
      jsonb_build_object('kind', 'wait', 'wait_ms', 1000, 'next', 0),
      jsonb_build_object('kind', 'wait', 'wait_ms', 2000))))
$$;

CREATE TEMP TABLE conditions (n serial, cond jsonb);
INSERT INTO conditions (cond) VALUES
  ('{"field": "customer.phone", "op": "exists"}'),
  ('{"field": "customer.nickname", "op": "exists"}'),
  ('{"field": "customer.email", "op": "eq", "value": "ada@example.com"}'),
  ('{"field": "customer.external_id", "op": "eq", "value": "QB-1"}'),
  ('{"field": "customer.plan", "op": "eq", "value": "gold"}'),
  ('{"field": "customer.vip", "op": "eq", "value": true}'),
  ('{"field": "customer.plan", "op": "neq", "value": "gold"}'),
  ('{"field": "customer.phone", "op": "neq", "value": "+15550001"}'),
  ('{"field": "customer.visits", "op": "gt", "value": 5}'),
  ('{"field": "customer.visits", "op": "lt", "value": 5}'),
  ('{"field": "customer.since", "op": "gt", "value": "2024-01-01"}'),
  ('{"field": "customer.plan", "op": "in", "value": ["gold", "platinum"]}'),
  ('{"field": "customer.visits", "op": "in", "value": [12, 13]}'),
  ('{"field": "customer.address.city", "op": "eq", "value": "Paris"}'),
  ('{"field": "customer.attributes.plan", "op": "eq", "value": "silver"}'),
  ('{"all": [{"field": "customer.phone", "op": "exists"}, {"field": "customer.plan", "op": "eq", "value": "gold"}]}'),
  ('{"all": [{"field": "customer.phone", "op": "exists"}, {"field": "customer.plan", "op": "eq", "value": "silver"}]}'),
  ('{"any": [{"field": "customer.phone", "op": "exists"}, {"field": "customer.plan", "op": "eq", "value": "silver"}]}'),
  ('{"any": [{"field": "customer.vip", "op": "eq", "value": false}, {"all": [{"random": 100}, {"field": "customer.visits", "op": "lt", "value": 4}]}]}'),
  ('{"random": 0}'),
  ('{"random": 100}');
SELECT n, pg_temp.branch_on(cond) IS NOT NULL AS created FROM conditions ORDER BY n;
SELECT journey.enroll_customer(s.id, c.id, '{}', '2027-01-12 10:00+00') IS NOT NULL AS enrolled, count(*)
  FROM journey.sequences s CROSS JOIN journey.customers c GROUP BY 1;
SELECT journey.advance_due_enrollments(1000, '2027-01-12 10:00+00') AS handled;

-- Ada: phone, gold, 3 visits, vip, since 2024-05-01, in Paris
-- Bob: no phone, silver, "12" visits (a number in a string), not vip, empty nickname
SELECT k.n, k.cond::text AS condition,
       max(l.outcome) FILTER (WHERE c.full_name = 'Ada Lovelace') AS ada,
       max(l.outcome) FILTER (WHERE c.full_name = 'Bob Stone') AS bob
  FROM conditions k
  JOIN journey.sequences s ON s.name = k.cond::text
  JOIN journey.sequence_enrollments e ON e.sequence_id = s.id
  JOIN journey.customers c ON c.id = e.customer_id
  JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 GROUP BY k.n, k.cond ORDER BY k.n;
-- the arm taken sets the next step and its delay
SELECT e.current_step_index, e.next_run_at, l.outcome, count(*)
  FROM journey.sequence_enrollments e JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 GROUP BY 1, 2, 3 ORDER BY 1;
-- what the log says
SELECT l.outcome, l.detail FROM journey.enrollment_log l
  JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id
  JOIN journey.sequences s ON s.id = e.sequence_id
 WHERE s.name = (SELECT cond::text FROM conditions WHERE n = 12) ORDER BY l.detail;

-- A branch whose arm is 0 finishes; the "then" arm above ends with next 0
SELECT journey.create_sequence(:'b1', '{"name": "to the end", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "branch", "branch_config": {"if": {"field": "customer.phone", "op": "exists"}, "then": 0, "else": 2}},
            {"kind": "wait", "wait_ms": 1000}]}') AS tothe_end \gset
SELECT journey.enroll_customer(:'tothe_end', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-01-12 10:00+00') AS fin \gset
SELECT journey.advance_due_enrollments(1000, '2027-01-12 10:00+00') AS handled;
SELECT e.status, e.finished_at, l.step_index, l.outcome, l.detail
  FROM journey.sequence_enrollments e JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 WHERE e.id = :'fin' ORDER BY l.id;
SELECT journey.advance_due_enrollments(1000, '2027-01-12 10:00:01+00') AS then_arms_finish;
SELECT status, count(*) FROM journey.sequence_enrollments WHERE current_step_index = 2 GROUP BY 1;

-- ---------------------------------------------------------------
-- {"event": T, "since": "enrollment"}
-- ---------------------------------------------------------------
SELECT journey.create_sequence(:'b1', '{"name": "Review follow-up", "status": "active", "allow_manual_enroll": true,
  "trigger_event_type": "invoice_paid",
  "steps": [{"kind": "wait", "wait_ms": 86400000},
            {"kind": "branch", "branch_config": {"if": {"event": "review_left", "since": "enrollment"}, "then": 0, "else": 3}},
            {"kind": "branch", "branch_config": {"if": {"event": "invoice_paid", "since": "enrollment"}, "then": 4, "else": 0}},
            {"kind": "wait", "wait_ms": 1000}]}') AS followup \gset
-- both enrolled by an invoice_paid event at 10:00
INSERT INTO journey.events (business_id, event_type, customer_id, payload, occurred_at) VALUES
  (:'b1', 'review_left', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-03-01 09:00+00'),
  (:'b1', 'invoice_paid', '00000000-0000-0000-0000-0000000000c1', '{"invoice": "A-1"}', '2027-03-01 10:00+00'),
  (:'b1', 'invoice_paid', '00000000-0000-0000-0000-0000000000c2', '{"invoice": "B-1"}', '2027-03-01 10:00+00');
SELECT c.full_name, e.enrolled_at, e.next_run_at, e.meta
  FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id
 WHERE e.sequence_id = :'followup' ORDER BY 1;
-- Ada's review came before she enrolled: it does not count.  Bob reviews
-- after enrolling; a review dated after p_as_of does not count either; Ada
-- pays a second invoice (the triggering one itself does not count)
INSERT INTO journey.events (business_id, event_type, customer_id, payload, occurred_at) VALUES
  (:'b1', 'review_left', '00000000-0000-0000-0000-0000000000c2', '{}', '2027-03-01 18:00+00'),
  (:'b1', 'review_left', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-03-09 00:00+00'),
  (:'b1', 'invoice_paid', '00000000-0000-0000-0000-0000000000c1', '{"invoice": "A-2"}', '2027-03-01 20:00+00');
SELECT journey.advance_due_enrollments(1000, '2027-03-02 10:00+00') AS handled;
SELECT c.full_name, e.status, e.current_step_index, l.step_index, l.outcome, l.detail
  FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id
  JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 WHERE e.sequence_id = :'followup' ORDER BY c.full_name, l.id;

-- ---------------------------------------------------------------
-- {"random": PERCENT}: a stable split by enrollment
-- ---------------------------------------------------------------
INSERT INTO journey.customers (business_id, full_name, email)
SELECT :'b1', 'Split ' || i, 's' || i || '@example.com' FROM generate_series(1, 400) i;
SELECT pg_temp.branch_on('{"random": 30}') AS split \gset
SELECT count(journey.enroll_customer(:'split', id, '{}', '2027-04-01 10:00+00')) AS enrolled
  FROM journey.customers WHERE full_name LIKE 'Split %';
SELECT journey.advance_due_enrollments(1000, '2027-04-01 10:00+00') AS handled;
-- The arm is the documented function of the enrollment id (branch.c): the
-- bucket hash_bytes_extended(id, seed = step_index) mod 10000, which SQL
-- computes as uuid_hash_extended(id, 1) read as unsigned; "then" below 3000.
SELECT count(*) AS enrollments,
       count(*) FILTER (WHERE e.current_step_index = 2) BETWEEN 80 AND 160 AS about_30_percent,
       count(*) FILTER (WHERE (e.current_step_index = 2) <>
                              (mod(uuid_hash_extended(e.id, 1)::numeric + 18446744073709551616, 18446744073709551616)
                               % 10000 < 3000)) AS not_as_documented
  FROM journey.sequence_enrollments e WHERE e.sequence_id = :'split';
-- stable: the same enrollments, put back before the branch, take the same arms
CREATE TEMP TABLE first_arms AS
  SELECT id, current_step_index FROM journey.sequence_enrollments WHERE sequence_id = :'split';
UPDATE journey.sequence_enrollments SET current_step_index = 1, next_run_at = '2027-04-02 10:00+00'
 WHERE sequence_id = :'split';
SELECT journey.advance_due_enrollments(1000, '2027-04-02 10:00+00') AS handled;
SELECT count(*) FILTER (WHERE f.current_step_index <> e.current_step_index) AS changed_arm
  FROM first_arms f JOIN journey.sequence_enrollments e ON e.id = f.id;
