-- Every timeline row of an enrollment says which version it belongs to
-- (issue 14 item 2): the enrolled row the version the enrollment began on,
-- each decision its own, each message (and its delivery states) the
-- version of the step that made it, across update_sequence's keep and move.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS journey CASCADE;
RESET client_min_messages;
CREATE EXTENSION journey;
SET timezone = 'UTC';
\i test/sql/helpers.sql

\set b1 '00000000-0000-0000-0000-0000000000b1'
INSERT INTO journey.businesses (id, name) VALUES (:'b1', 'Versioned');
INSERT INTO journey.customers (id, business_id, full_name, email)
SELECT ('00000000-0000-0000-0000-0000000000c' || n)::uuid, :'b1', 'Customer ' || n,
       'c' || n || '@example.com'
  FROM generate_series(1, 3) n;
CREATE FUNCTION pg_temp.def(v text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('name', 'Review', 'status', 'active', 'allow_manual_enroll', true,
    'rate_per_hour', NULL, 'rate_per_day', NULL,
    'steps', jsonb_build_array(
      jsonb_build_object('kind', 'send_email', 'message',
                         jsonb_build_object('subject', v || ' first', 'body', 'Hi')),
      jsonb_build_object('kind', 'wait', 'wait_ms', 3600000),
      jsonb_build_object('kind', 'send_email', 'message',
                         jsonb_build_object('subject', v || ' second', 'body', 'Hi'))))
$$;
SELECT journey.create_sequence(:'b1', pg_temp.def('v1')) AS seq \gset

-- c1 on version 1 sends its first message; version 2 comes with keep.
SELECT journey.enroll_customer(:'seq', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-03-01 10:00+00') IS NOT NULL AS c1;
SELECT journey.advance_due_enrollments(100, '2027-03-01 10:00+00') AS advanced;
SELECT journey.update_sequence(:'seq', pg_temp.def('v2'), 'keep') AS version;
-- c2 and c3 begin on version 2; c1 goes on on version 1.
SELECT journey.enroll_customer(:'seq', '00000000-0000-0000-0000-0000000000c2', '{}', '2027-03-01 10:01+00') IS NOT NULL AS c2,
       journey.enroll_customer(:'seq', '00000000-0000-0000-0000-0000000000c3', '{}', '2027-03-01 10:01+00') IS NOT NULL AS c3;
SELECT journey.advance_due_enrollments(100, '2027-03-01 10:01+00') AS advanced;
SELECT journey.advance_due_enrollments(100, '2027-03-01 11:00+00') AS advanced;
-- A delivery state of c1's second message (version 1).
SELECT journey.ingest_delivery_event('webhook', jsonb_build_object('id', m.id, 'status', 'delivered'),
                                     '2027-03-01 11:05+00') IS NOT NULL AS delivered
  FROM journey.messages m WHERE m.to_address = 'c1@example.com' AND m.step_index = 3;
-- Version 3 with move: c2 and c3, waiting at step 2 of version 2, move.
SELECT journey.update_sequence(:'seq', pg_temp.def('v3'), 'move') AS version;
SELECT journey.advance_due_enrollments(100, '2027-03-01 11:01+00') AS advanced;

SELECT c.full_name, t.phase, t.what, t.step_index, t.sequence_version,
       CASE WHEN t.phase = 2 THEN (SELECT m.subject FROM journey.messages m WHERE m.id = t.ref_id) END AS subject
  FROM journey.timeline t JOIN journey.customers c ON c.id = t.customer_id
 WHERE t.sequence_id = :'seq'
 ORDER BY c.full_name, t.phase, t.ref_id NULLS FIRST;
-- No row of an enrollment is without its version.
SELECT count(*) AS rows, count(*) FILTER (WHERE sequence_version IS NULL) AS without_version
  FROM journey.timeline WHERE sequence_id = :'seq';

-- The extension stays, as after timeline.sql: upgrade.sql, next, expects it.
