-- journey.simulate (issue 15): the executor's own decisions for one
-- customer on a virtual clock, written nowhere.  The same timeline as a real
-- run (quiet hours, DST, branches, rate limits, wait_until, exit events),
-- a fingerprint of every table before and after, determinism, the draft
-- overload, bad input and another tenant's ids.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

\i test/sql/helpers.sql

\set b1 '00000000-0000-0000-0000-0000000000b1'
\set b2 '00000000-0000-0000-0000-0000000000b2'
INSERT INTO journey.businesses (id, name, timezone, google_review_url) VALUES
  (:'b1', 'Pipe Dreams', 'America/New_York', 'https://g.example/pipe'),
  (:'b2', 'Other Co', 'UTC', NULL);
INSERT INTO journey.customers (id, business_id, full_name, email, phone) VALUES
  ('00000000-0000-0000-0000-0000000000c1', :'b1', 'Ada Lovelace', 'ada@example.com', '+15550001'),
  ('00000000-0000-0000-0000-0000000000c2', :'b1', 'Bob Stone', 'bob@example.com', NULL),
  ('00000000-0000-0000-0000-0000000000f1', :'b2', 'Far Away', 'far@example.com', NULL);

-- The review-request journey: thanks at once (quiet hours 21:00-08:00 New
-- York), two days, then a review request by SMS or email; a review exits.
SELECT journey.create_sequence(:'b1', '{"name": "Review request", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
  "allow_manual_enroll": true, "quiet_hours": {"start": "21:00", "end": "08:00"},
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [
    {"kind": "send_email", "message": {"purpose": "thank_you", "subject": "Thanks, {{customer.first_name}}!",
      "body": "Thank you for choosing {{business.name}}."}},
    {"kind": "wait", "wait_ms": 172800000},
    {"kind": "branch", "branch_config": {"if": {"field": "customer.phone", "op": "exists"},
                                         "then": 4, "else": 5}},
    {"kind": "send_sms", "next": 0, "message": {"purpose": "review_request",
      "body": "Hi {{customer.name}}, please review us: {{review_link}}"}},
    {"kind": "send_email", "message": {"purpose": "review_request",
      "subject": "How did we do?", "body": "Hi {{customer.first_name | default: \"there\"}}, {{review_link}}"}}]}') AS seq \gset

SELECT pg_temp.fingerprint(:'b1') || pg_temp.fingerprint(:'b2') AS before \gset
-- Ada, invoice paid on Saturday March 13 2027 at 23:30 New York (quiet
-- hours), over the DST change of March 14.
SELECT at, step_index, outcome, detail, channel, to_address, subject, body
  FROM journey.simulate(:'seq', '{"id": "00000000-0000-0000-0000-0000000000c1"}',
                        '2027-03-14 04:30+00', '2027-04-14 00:00+00');
-- Bob has no phone: the email arm.  A new customer by fields, a review
-- on the second day: the exit event stops the journey.
SELECT at, step_index, outcome, detail, channel, to_address
  FROM journey.simulate(:'seq', '{"id": "00000000-0000-0000-0000-0000000000c2"}',
                        '2027-03-14 04:30+00', '2027-04-14 00:00+00');
SELECT at, step_index, outcome, detail, channel, to_address, body
  FROM journey.simulate(:'seq', '{"full_name": "Cy Young", "email": "cy@example.com", "timezone": "Europe/Paris"}',
                        '2027-03-14 12:00+00', '2027-04-14 00:00+00',
                        '[{"type": "review_left", "at": "2027-03-15 09:00+00"}]'::jsonb);
SELECT pg_temp.fingerprint(:'b1') || pg_temp.fingerprint(:'b2') = :'before' AS nothing_written;

-- The same inputs, the same rows.
SELECT count(*) AS rows_differing FROM (
  (SELECT * FROM journey.simulate(:'seq', '{"id": "00000000-0000-0000-0000-0000000000c1"}',
                                  '2027-03-14 04:30+00', '2027-04-14 00:00+00')
   EXCEPT ALL
   SELECT * FROM journey.simulate(:'seq', '{"id": "00000000-0000-0000-0000-0000000000c1"}',
                                  '2027-03-14 04:30+00', '2027-04-14 00:00+00'))) d;

-- The same decisions as the executor's real run at the same moments.
CREATE TEMP TABLE simulated AS
  SELECT at, step_index, outcome, detail FROM journey.simulate(:'seq',
    '{"id": "00000000-0000-0000-0000-0000000000c1"}', '2027-03-14 04:30+00', '2027-04-14 00:00+00');
SELECT journey.enroll_customer(:'seq', '00000000-0000-0000-0000-0000000000c1', '{}',
                               '2027-03-14 04:30+00') AS real_enrollment \gset
SELECT journey.advance_due_enrollments(10, at) FROM (SELECT DISTINCT at FROM simulated ORDER BY 1) t;
SELECT count(*) AS decisions_differing FROM (
  (SELECT at, step_index, outcome, detail FROM journey.enrollment_log WHERE enrollment_id = :'real_enrollment'
   EXCEPT ALL SELECT * FROM simulated)
  UNION ALL
  (SELECT * FROM simulated EXCEPT ALL
   SELECT at, step_index, outcome, detail FROM journey.enrollment_log WHERE enrollment_id = :'real_enrollment')) d;
-- With Ada's real message of step 1 in the rolling window, a rate limit
-- of one an hour defers the simulated one: the business's real data counts.
UPDATE journey.sequences SET rate_per_hour = 1 WHERE id = :'seq';
SELECT at, step_index, outcome, detail FROM journey.simulate(:'seq',
    '{"id": "00000000-0000-0000-0000-0000000000c2"}', '2027-03-14 12:10+00', '2027-03-14 14:00+00');
UPDATE journey.sequences SET rate_per_hour = NULL WHERE id = :'seq';

-- A draft, never saved: wait_until a review for three days, else remind.
SELECT pg_temp.fingerprint(:'b1') || pg_temp.fingerprint(:'b2') AS before \gset
SELECT at, step_index, outcome, detail, subject FROM journey.simulate(:'b1', '{"name": "Draft", "status": "draft",
  "steps": [{"kind": "wait_until", "event": "review_left", "timeout_ms": 259200000, "then": 0, "else": 2},
            {"kind": "send_email", "message": {"subject": "Still time to review", "body": "{{review_link}}"}}]}',
  '{"id": "00000000-0000-0000-0000-0000000000c2"}'::jsonb, '2027-03-20 12:00+00', '2027-04-20 12:00+00');
SELECT at, step_index, outcome, regexp_replace(detail, '#[0-9]+', '#N') AS detail
  FROM journey.simulate(:'b1', '{"name": "Draft", "status": "draft",
  "steps": [{"kind": "wait_until", "event": "review_left", "timeout_ms": 259200000, "then": 0, "else": 2},
            {"kind": "send_email", "message": {"subject": "Still time to review", "body": "{{review_link}}"}}]}',
  '{"id": "00000000-0000-0000-0000-0000000000c2"}', '2027-03-20 12:00+00', '2027-04-20 12:00+00',
  '[{"type": "review_left", "at": "2027-03-21 08:00+00", "payload": {"stars": 5}}]');
SELECT pg_temp.fingerprint(:'b1') || pg_temp.fingerprint(:'b2') = :'before' AS nothing_written;
SELECT pg_temp.try($$SELECT * FROM journey.simulate('00000000-0000-0000-0000-0000000000b1',
  '{"name": "Bad", "steps": [{"kind": "send_email", "message": {"body": "no subject"}}]}',
  '{"id": "00000000-0000-0000-0000-0000000000c2"}'::jsonb, '2027-03-20 12:00+00', '2027-04-20 12:00+00')$$) AS invalid_draft;

-- ---------------------------------------------------------------
-- Bad input: a clear error with its SQLSTATE, nothing written
-- ---------------------------------------------------------------
\set c1 '{"id": "00000000-0000-0000-0000-0000000000c1"}'
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L)', :'seq', :'c1',
  '2027-03-14 00:00+00', '2027-03-13 00:00+00')) AS until_before_from;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L)', :'seq', :'c1',
  '2027-03-14 00:00+00', 'infinity')) AS infinite_until;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L, %L::jsonb)', :'seq', :'c1',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00', '{"type": "x"}')) AS events_not_array;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L, %L::jsonb)', :'seq', :'c1',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00', '[1]')) AS event_not_object;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L, %L::jsonb)', :'seq', :'c1',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00', '[{"at": "2027-03-15"}]')) AS event_without_type;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L, %L::jsonb)', :'seq', :'c1',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00', '[{"type": "x", "at": "soon"}]')) AS event_bad_time;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L, %L::jsonb)', :'seq', :'c1',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00', '[{"type": "x", "at": "2027-05-01"}]')) AS event_after_until;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L, %L::jsonb)', :'seq', :'c1',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00', '[{"type": "x", "at": "2027-03-15", "payload": [1]}]')) AS payload_not_object;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L, %L::jsonb)', :'seq', :'c1',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00',
  (SELECT jsonb_agg(jsonb_build_object('type', 'x', 'at', '2027-03-15')) FROM generate_series(1, 1001)))) AS too_many_events;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L)', :'seq', '{"colour": "red"}',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00')) AS unknown_customer_field;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L)', :'seq', '{"email": "x@example.com"}',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00')) AS new_customer_without_name;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L)', :'seq',
  '{"full_name": "Evil", "email": "a@example.com\r\nBcc: x@example.com"}',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00')) AS control_characters;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L)', :'seq',
  '{"id": "00000000-0000-0000-0000-0000000000f1"}',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00')) AS other_business_customer;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L)', '00000000-0000-0000-0000-00000000dead', :'c1',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00')) AS missing_sequence;
-- A deeply nested payload and attributes are data, not a problem.
SELECT count(*) > 0 AS nested_payload_ok FROM journey.simulate(:'seq',
  jsonb_build_object('full_name', 'Deep', 'email', 'deep@example.com',
                     'attributes', (SELECT ('{"a":' || repeat('[', 500) || repeat(']', 500) || '}')::jsonb)),
  '2027-03-14 12:00+00', '2027-03-20 00:00+00',
  jsonb_build_array(jsonb_build_object('type', 'x', 'at', '2027-03-15',
                    'payload', ('{"a":' || repeat('[', 500) || repeat(']', 500) || '}')::jsonb)));
-- A p_until centuries away ends when the journey does.
SELECT count(*) AS rows_far_future FROM journey.simulate(:'seq', :'c1', '2027-03-14 12:00+00', '2999-01-01');
SELECT pg_temp.fingerprint(:'b1') || pg_temp.fingerprint(:'b2') = :'before' AS nothing_written;

-- ---------------------------------------------------------------
-- Another tenant: the sequence and the business answer as missing ones
-- ---------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_sim_b') THEN
        CREATE ROLE regress_sim_b;
    END IF;
END
$$;
GRANT journey_user TO regress_sim_b;
INSERT INTO journey.business_members VALUES (:'b2', 'regress_sim_b');
-- The membership is this test's own write: compare from here on.
SELECT pg_temp.fingerprint(:'b1') || pg_temp.fingerprint(:'b2') AS before \gset
SET ROLE regress_sim_b;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L, %L, %L)', :'seq', '{"full_name": "Spy"}',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00')) AS other_tenants_sequence;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L::jsonb, %L::jsonb, %L, %L)', :'b1',
  '{"name": "Spy", "steps": [{"kind": "wait"}]}', '{"full_name": "Spy"}',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00')) AS other_tenants_business;
SELECT pg_temp.try(format('SELECT * FROM journey.simulate(%L, %L::jsonb, %L::jsonb, %L, %L)', '00000000-0000-0000-0000-00000000dead',
  '{"name": "Spy", "steps": [{"kind": "wait"}]}', '{"full_name": "Spy"}',
  '2027-03-14 00:00+00', '2027-03-20 00:00+00')) AS missing_business;
-- Its own draft works.
SELECT outcome, channel, to_address FROM journey.simulate(:'b2',
  '{"name": "Mine", "steps": [{"kind": "send_email", "message": {"subject": "Hi", "body": "Hi {{customer.name}}"}}]}',
  '{"id": "00000000-0000-0000-0000-0000000000f1"}'::jsonb, '2027-03-14 12:00+00', '2027-03-20 00:00+00');
RESET ROLE;
SELECT pg_temp.fingerprint(:'b1') || pg_temp.fingerprint(:'b2') = :'before' AS nothing_written;
DELETE FROM journey.business_members WHERE member = 'regress_sim_b';
DROP ROLE regress_sim_b;
