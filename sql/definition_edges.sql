-- The edges of the journey definition language (issue 10).  create_sequence
-- and the executor read definitions with one grammar (definition.c): each
-- definition accepted here is run by the executor and decides; each refused
-- one names its step and field, with SQLSTATE 22023.  Nothing accepted fails
-- when it runs.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
\i test/sql/helpers.sql

\set b1 '00000000-0000-0000-0000-0000000000b1'
INSERT INTO journey.businesses (id, name) VALUES (:'b1', 'Edge Works');
-- Values beyond what doubles hold, integers beyond their precision, a path
-- eight levels deep.
INSERT INTO journey.customers (id, business_id, full_name, email, attributes) VALUES
  ('00000000-0000-0000-0000-0000000000c1', :'b1', 'Ada Edge', 'ada@example.com',
   '{"score": 1e401, "tiny": 1e-401, "neg": -1e400, "zero": 0, "vip": true,
     "big": 12345678901234567890123, "text_num": "1e400",
     "a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": "deep"}}}}}}}}'),
  ('00000000-0000-0000-0000-0000000000c2', :'b1', 'Bob Plain', 'bob@example.com',
   '{"score": 5, "tiny": 0, "neg": 0, "zero": 1, "vip": false,
     "big": 12345678901234567890124, "text_num": "5"}');

-- n "all" wrappers around one leaf: the leaf sits at depth n + 1
CREATE FUNCTION pg_temp.nest(n integer) RETURNS jsonb LANGUAGE sql AS $$
  SELECT CASE WHEN n = 0 THEN '{"field": "customer.vip", "op": "eq", "value": true}'::jsonb
              ELSE jsonb_build_object('all', jsonb_build_array(pg_temp.nest(n - 1))) END
$$;
-- A one-branch journey: step 1 branches to step 2 (then) or 3 (else).
CREATE FUNCTION pg_temp.branch_def(p_name text, p_condition jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object(
    'name', p_name, 'status', 'active', 'allow_manual_enroll', true,
    'steps', jsonb_build_array(
      jsonb_build_object('kind', 'branch', 'branch_config',
                         jsonb_build_object('if', p_condition, 'then', 2, 'else', 3)),
      jsonb_build_object('kind', 'wait', 'wait_ms', 1000, 'next', 0),
      jsonb_build_object('kind', 'wait', 'wait_ms', 2000)))
$$;
CREATE FUNCTION pg_temp.create(p_definition jsonb) RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.try(format('SELECT journey.create_sequence(%L, %L)',
                            '00000000-0000-0000-0000-0000000000b1', p_definition))
$$;

-- ---------------------------------------------------------------
-- Accepted: every one is created, run, and decides for both customers
-- ---------------------------------------------------------------
CREATE TEMP TABLE accepted (n serial, what text, cond jsonb);
INSERT INTO accepted (what, cond) VALUES
  ('16 levels of conditions', pg_temp.nest(15)),
  ('a path of 8 parts', '{"field": "customer.a.b.c.d.e.f.g.h", "op": "eq", "value": "deep"}'),
  ('a value beyond doubles, gt', '{"field": "customer.score", "op": "gt", "value": 1e400}'),
  ('a value beyond doubles, lt', '{"field": "customer.score", "op": "lt", "value": 1e400}'),
  ('a value beyond doubles, eq', '{"field": "customer.score", "op": "eq", "value": 1e401}'),
  ('a value below doubles, gt', '{"field": "customer.tiny", "op": "gt", "value": 1e-402}'),
  ('a value below doubles, eq 0', '{"field": "customer.tiny", "op": "eq", "value": 0}'),
  ('a negative value beyond doubles', '{"field": "customer.neg", "op": "lt", "value": -1e399}'),
  ('integers beyond doubles'' precision', '{"field": "customer.big", "op": "eq", "value": 12345678901234567890123}'),
  ('a number in a string beyond doubles', '{"field": "customer.text_num", "op": "gt", "value": 1e300}'),
  ('in, with values beyond doubles', '{"field": "customer.score", "op": "in", "value": [5, 1e401, [1], {"a": 1}]}'),
  ('in, with a deeply nested element', jsonb_build_object('field', 'customer.zero', 'op', 'in', 'value',
      jsonb_build_array(1, (repeat('[', 1000) || repeat(']', 1000))::jsonb))),
  ('random 0', '{"random": 0}'),
  ('random 100', '{"random": 100}'),
  ('random below doubles', '{"random": 1e-400}'),
  ('random with decimals', '{"random": 99.995}');
SELECT n, what, pg_temp.create(pg_temp.branch_def(what, cond)) AS created FROM accepted ORDER BY n;
SELECT count(*) AS enrolled FROM journey.sequences s CROSS JOIN journey.customers c,
       LATERAL journey.enroll_customer(s.id, c.id, '{}', '2027-01-12 10:00+00');
SELECT journey.advance_due_enrollments(1000, '2027-01-12 10:00+00') AS handled;
SELECT k.n, k.what,
       max(l.outcome) FILTER (WHERE c.full_name = 'Ada Edge') AS ada,
       max(l.outcome) FILTER (WHERE c.full_name = 'Bob Plain') AS bob
  FROM accepted k
  JOIN journey.sequences s ON s.name = k.what
  JOIN journey.sequence_enrollments e ON e.sequence_id = s.id
  JOIN journey.customers c ON c.id = e.customer_id
  JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 GROUP BY k.n, k.what ORDER BY k.n;
SELECT count(*) FILTER (WHERE status = 'stopped') AS stopped, count(*) AS enrollments
  FROM journey.sequence_enrollments;

-- Whole definitions at the limits: 200 steps; the longest wait; a step
-- leading to the last one; templates with paths of 8 parts.
SELECT pg_temp.create(jsonb_build_object('name', '200 steps', 'status', 'active', 'allow_manual_enroll', true,
  'steps', (SELECT jsonb_agg(jsonb_build_object('kind', 'wait')) FROM generate_series(1, 200)))) AS created;
SELECT pg_temp.create('{"name": "longest wait", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "wait", "next": 2}, {"kind": "wait", "wait_ms": 3153600000000}]}') AS created;
SELECT pg_temp.create('{"name": "deep template", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "send_email", "message": {"subject": "{{ customer.a.b.c.d.e.f.g | default: \"x\" }}",
             "body": "{{ enrollment.meta.a.b.c.d.e.f }} {{ event.a.b.c.d.e.f.g | default: \"no event\" }}"}}]}') AS created;
SELECT count(*) AS enrolled FROM journey.sequences s CROSS JOIN journey.customers c,
       LATERAL journey.enroll_customer(s.id, c.id, '{"a": {"b": {"c": {"d": {"e": {"f": "meta"}}}}}}', '2027-01-13 10:00+00')
 WHERE s.name IN ('200 steps', 'longest wait', 'deep template');
SELECT journey.advance_due_enrollments(1000, '2027-01-13 10:00+00') AS handled;
SELECT s.name, e.status, e.current_step_index, e.next_run_at, count(*) AS enrollments
  FROM journey.sequence_enrollments e JOIN journey.sequences s ON s.id = e.sequence_id
 WHERE s.name IN ('200 steps', 'longest wait', 'deep template')
 GROUP BY 1, 2, 3, 4 ORDER BY 1;
SELECT to_address, subject, body FROM journey.messages ORDER BY to_address;
SELECT s.name, l.outcome, count(*) FROM journey.enrollment_log l
  JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id JOIN journey.sequences s ON s.id = e.sequence_id
 WHERE s.name IN ('200 steps', 'longest wait', 'deep template') GROUP BY 1, 2 ORDER BY 1, 2;

-- ---------------------------------------------------------------
-- Refused: 22023 naming the step and the field; nothing written
-- ---------------------------------------------------------------
SELECT count(*) AS sequences_before FROM journey.sequences \gset
CREATE TEMP TABLE refused (n serial, what text, cond jsonb);
INSERT INTO refused (what, cond) VALUES
  ('17 levels of conditions', pg_temp.nest(16)),
  ('an empty part', '{"field": "customer.a..b", "op": "exists"}'),
  ('an empty last part', '{"field": "customer.a.", "op": "exists"}'),
  ('an empty first part', '{"field": "customer..a", "op": "exists"}'),
  ('no part', '{"field": "customer.", "op": "exists"}'),
  ('a path of 9 parts', '{"field": "customer.a.b.c.d.e.f.g.h.i", "op": "exists"}'),
  ('an empty part, nested', '{"any": [{"random": 5}, {"all": [{"field": "customer.x.", "op": "eq", "value": 1}]}]}'),
  ('random beyond doubles', '{"random": 1e400}'),
  ('random below 0', '{"random": -1e-400}'),
  ('random above 100', '{"random": 100.001}'),
  ('random just above 100', '{"random": 100.00000000000000000001}'),
  ('gt on a boolean', '{"field": "customer.vip", "op": "gt", "value": true}'),
  ('in without an array', '{"field": "customer.vip", "op": "in", "value": 1e400}');
SELECT n, what, pg_temp.create(pg_temp.branch_def(what, cond)) AS refused FROM refused ORDER BY n;
-- targets, delays, limits and steps out of range
SELECT pg_temp.create('{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"random": 5}, "then": 1e400, "else": 0}}]}');
SELECT pg_temp.create('{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"random": 5}, "then": 2.5, "else": 0}}, {"kind": "wait"}, {"kind": "wait"}]}');
SELECT pg_temp.create('{"name": "x", "steps": [{"kind": "wait", "next": 3}, {"kind": "wait"}]}');
SELECT pg_temp.create('{"name": "x", "steps": [{"kind": "wait", "wait_ms": 1e400}]}');
SELECT pg_temp.create('{"name": "x", "steps": [{"kind": "wait", "wait_ms": 3153600000001}]}');
SELECT pg_temp.create('{"name": "x", "rate_per_hour": 1e400, "steps": [{"kind": "wait"}]}');
SELECT pg_temp.create(jsonb_build_object('name', 'x',
  'steps', (SELECT jsonb_agg(jsonb_build_object('kind', 'wait')) FROM generate_series(1, 201))));
-- templates: a path of 9 parts, an empty part
SELECT pg_temp.create('{"name": "x", "steps": [{"kind": "send_sms", "message": {"body": "{{ customer.a.b.c.d.e.f.g.h }}"}}]}');
SELECT pg_temp.create('{"name": "x", "steps": [{"kind": "send_sms", "message": {"body": "{{ customer.a..b }}"}}]}');
SELECT count(*) = :sequences_before AS nothing_written FROM journey.sequences;

-- ---------------------------------------------------------------
-- The executor reads stored steps with the same grammar: steps written
-- around create_sequence that it would refuse stop their enrollment with
-- the same reason, and the batch goes on
-- ---------------------------------------------------------------
INSERT INTO journey.sequences (id, business_id, name, status, allow_manual_enroll)
VALUES ('00000000-0000-0000-0000-0000000000a1', :'b1', 'written directly', 'active', true);
INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index, message_config, branch_config) VALUES
  (:'b1', '00000000-0000-0000-0000-0000000000a1', 'branch', 1, '{}', '{"if": {"field": "customer.a..b", "op": "exists"}, "then": 0, "else": 0}'),
  (:'b1', '00000000-0000-0000-0000-0000000000a1', 'branch', 2, '{}', '{"if": {"random": 1e400}, "then": 0, "else": 0}'),
  (:'b1', '00000000-0000-0000-0000-0000000000a1', 'branch', 3, '{}', '{"if": {"field": "customer.a.b.c.d.e.f.g.h.i", "op": "exists"}, "then": 0, "else": 0}'),
  (:'b1', '00000000-0000-0000-0000-0000000000a1', 'send_sms', 4, '{"body": "{{ customer.a.b.c.d.e.f.g.h }}"}', NULL),
  (:'b1', '00000000-0000-0000-0000-0000000000a1', 'branch', 5, '{}', '{"if": {"field": "customer.score", "op": "gt", "value": 1e400}, "then": 0, "else": 0}');
INSERT INTO journey.customers (id, business_id, full_name, phone, attributes)
SELECT ('00000000-0000-0000-0000-0000000000d' || i)::uuid, :'b1', 'Direct ' || i, '+1555000' || i, '{"score": 1e401}'
  FROM generate_series(1, 5) i;
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, current_step_index, next_run_at, enrolled_at)
SELECT :'b1', '00000000-0000-0000-0000-0000000000a1', ('00000000-0000-0000-0000-0000000000d' || i)::uuid, i,
       '2027-01-14 10:00+00', '2027-01-14 10:00+00'
  FROM generate_series(1, 5) i;
SELECT journey.advance_due_enrollments(1000, '2027-01-14 10:00+00') AS handled;
SELECT e.current_step_index, e.status, e.stop_reason, l.outcome, left(l.detail, 130) AS detail
  FROM journey.sequence_enrollments e JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 WHERE e.sequence_id = '00000000-0000-0000-0000-0000000000a1' ORDER BY e.current_step_index, l.id;

-- leave no extension behind, as the tests after this one expect
DROP EXTENSION journey;
