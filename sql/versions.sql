-- Versions and templates (SPEC section 10): update_sequence with keep, move
-- and exit, the executor on each enrollment's own version, templates and
-- their validation, and tenancy of both.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS journey CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\i test/sql/helpers.sql
CREATE EXTENSION journey;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_versions_a') THEN
        CREATE ROLE regress_versions_a;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_versions_b') THEN
        CREATE ROLE regress_versions_b;
    END IF;
END
$$;
GRANT journey_user TO regress_versions_a, regress_versions_b;

INSERT INTO journey.businesses (id, name, google_review_url) VALUES
  ('00000000-0000-0000-0000-0000000000b1', 'Pipe Dreams', 'https://g.page/r/pipe'),
  ('00000000-0000-0000-0000-0000000000b2', 'Other Co', NULL);
INSERT INTO journey.business_members VALUES
  ('00000000-0000-0000-0000-0000000000b1', 'regress_versions_a'),
  ('00000000-0000-0000-0000-0000000000b2', 'regress_versions_b');
INSERT INTO journey.customers (id, business_id, full_name, email, phone)
SELECT ('00000000-0000-0000-0000-0000000000' || lpad(to_hex(n), 2, '0'))::uuid,
       '00000000-0000-0000-0000-0000000000b1', 'Customer ' || n,
       'c' || n || '@example.com', '+1555000' || lpad(n::text, 4, '0')
FROM generate_series(1, 8) n;

-- ===================================================================
-- Templates
-- ===================================================================
SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'thanks', 'email',
    'Thanks, {{customer.first_name}}!', 'Thank you for choosing {{business.name}}.') AS t_email \gset
SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'review sms', 'sms',
    NULL, 'Please review us: {{review_link}}') AS t_sms \gset
SELECT journey.create_template('00000000-0000-0000-0000-0000000000b2', 'theirs', 'email',
    'Theirs', 'Their body') AS t_other \gset
SELECT name, channel, subject IS NOT NULL AS has_subject FROM journey.templates ORDER BY name;

-- Validated like a step's message, with SQLSTATE 22023; nothing written.
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'x', 'email', NULL, 'body')$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'x', 'email', '', 'body')$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'x', 'sms', 'subject', 'body')$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'x', 'fax', NULL, 'body')$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'x', NULL, NULL, 'body')$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'x', 'sms', NULL, NULL)$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', '', 'sms', NULL, 'body')$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', NULL, 'sms', NULL, 'body')$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'x', 'sms', NULL, 'Hi {{customer.first_name')$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'x', 'sms', NULL, 'Hi {{secrets.password}}')$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'x', 'email', '{{nope.x}}', 'body')$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'thanks', 'sms', NULL, 'dup')$$);
SELECT pg_temp.try($$SELECT journey.create_template(NULL, 'x', 'sms', NULL, 'body')$$);
SELECT pg_temp.try($$SELECT journey.create_template('00000000-0000-0000-0000-0000000000ff', 'x', 'sms', NULL, 'body')$$);
SELECT count(*) AS templates FROM journey.templates;

-- ===================================================================
-- Send steps naming a template
-- ===================================================================
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', format($j$
  {"name": "Templated", "status": "active", "allow_manual_enroll": true,
   "steps": [{"kind": "send_email", "template_id": %s, "message": {"purpose": "thank_you"}},
             {"kind": "send_sms", "template_id": %s}]}$j$, to_json(:'t_email'::text), to_json(:'t_sms'::text))::jsonb)
  AS seq_t \gset
SELECT step_index, kind, template_id IS NOT NULL AS has_template, message_purpose, message_config, version
FROM journey.sequence_steps WHERE sequence_id = :'seq_t' ORDER BY step_index;

-- Another business's template answers exactly as a missing one; the other
-- channel, a template on a wait, texts beside it: 22023 naming the field.
SELECT pg_temp.try(format($q$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1',
  '{"name": "T", "steps": [{"kind": "send_email", "template_id": "%s"}]}')$q$, :'t_other')) AS other_business;
SELECT pg_temp.try($q$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1',
  '{"name": "T", "steps": [{"kind": "send_email", "template_id": "00000000-0000-0000-0000-00000000dead"}]}')$q$) AS random_id;
SELECT pg_temp.try(format($q$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1',
  '{"name": "T", "steps": [{"kind": "wait"}, {"kind": "send_email", "template_id": "%s"}]}')$q$, :'t_sms'));
SELECT pg_temp.try(format($q$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1',
  '{"name": "T", "steps": [{"kind": "wait", "template_id": "%s"}]}')$q$, :'t_sms'));
SELECT pg_temp.try(format($q$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1',
  '{"name": "T", "steps": [{"kind": "send_sms", "template_id": "%s", "message": {"body": "inline"}}]}')$q$, :'t_sms'));
SELECT pg_temp.try($q$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1',
  '{"name": "T", "steps": [{"kind": "send_sms", "template_id": "not-a-uuid"}]}')$q$);
SELECT count(*) AS sequences FROM journey.sequences;

-- The executor renders the template as it is when the step runs: an edit
-- made after enrolling reaches the message.
SELECT journey.enroll_customer(:'seq_t', '00000000-0000-0000-0000-000000000001', '{}', '2027-01-01 12:00+00') IS NOT NULL AS enrolled;
UPDATE journey.templates SET body = 'Corrected: thank you, {{customer.full_name}}.' WHERE id = :'t_email';
SELECT journey.advance_due_enrollments(100, '2027-01-01 12:00+00') AS advanced;
SELECT step_index, channel, message_purpose, subject, body FROM journey.messages ORDER BY id;

-- Direct updates are validated (22023); deleting a used template: 23503.
SELECT pg_temp.try(format($q$UPDATE journey.templates SET body = 'Hi {{customer.first_name' WHERE id = '%s'$q$, :'t_email'));
SELECT pg_temp.try(format($q$UPDATE journey.templates SET subject = NULL WHERE id = '%s'$q$, :'t_email'));
SELECT pg_temp.try(format($q$DELETE FROM journey.templates WHERE id = '%s'$q$, :'t_email'));
SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'unused', 'sms', NULL, 'x') AS t_unused \gset
SELECT pg_temp.try(format($q$DELETE FROM journey.templates WHERE id = '%s'$q$, :'t_unused'));

-- ===================================================================
-- update_sequence
-- ===================================================================
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', $j$
  {"name": "Review", "status": "active", "allow_manual_enroll": true,
   "steps": [{"kind": "send_email", "message": {"subject": "v1 step 1", "body": "Hi"}},
             {"kind": "wait", "wait_ms": 3600000},
             {"kind": "send_email", "message": {"subject": "v1 step 3", "body": "Hi"}},
             {"kind": "wait", "wait_ms": 3600000},
             {"kind": "send_email", "message": {"subject": "v1 step 5", "body": "Hi"}}]}$j$) AS seq \gset
SELECT version FROM journey.sequences WHERE id = :'seq';
-- Customers 2..4 in flight on version 1, at steps 2, 2 and 4.
SELECT journey.enroll_customer(:'seq', ('00000000-0000-0000-0000-00000000000' || n)::uuid, '{}', '2027-01-02 10:00+00') IS NOT NULL
FROM generate_series(2, 4) n;
SELECT journey.advance_due_enrollments(100, '2027-01-02 10:00+00') AS advanced;
SELECT journey.advance_due_enrollments(100, '2027-01-02 11:00+00') AS advanced;
UPDATE journey.sequence_enrollments SET current_step_index = 2, next_run_at = '2027-01-02 12:00+00'
WHERE customer_id IN ('00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000003') AND sequence_id = :'seq';
SELECT customer_id, current_step_index, sequence_version FROM journey.sequence_enrollments
WHERE sequence_id = :'seq' ORDER BY customer_id;

CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM journey.sequence_steps) AS steps,
       (SELECT string_agg(to_jsonb(s)::text, ',' ORDER BY id) FROM journey.sequences s) AS sequences,
       (SELECT string_agg(to_jsonb(e)::text, ',' ORDER BY id) FROM journey.sequence_enrollments e) AS enrollments,
       (SELECT count(*) FROM journey.enrollment_log) AS log,
       (SELECT string_agg(status, ',' ORDER BY id) FROM journey.messages) AS messages;
CREATE FUNCTION pg_temp.unchanged() RETURNS boolean LANGUAGE sql AS $$
    SELECT b.steps = (SELECT count(*) FROM journey.sequence_steps)
       AND b.sequences = (SELECT string_agg(to_jsonb(s)::text, ',' ORDER BY id) FROM journey.sequences s)
       AND b.enrollments = (SELECT string_agg(to_jsonb(e)::text, ',' ORDER BY id) FROM journey.sequence_enrollments e)
       AND b.log = (SELECT count(*) FROM journey.enrollment_log)
       AND b.messages = (SELECT string_agg(status, ',' ORDER BY id) FROM journey.messages)
    FROM before b
$$;

-- The same errors as create_sequence, word for word.
CREATE TEMP TABLE bad_definitions (def text);
INSERT INTO bad_definitions VALUES
  ('[]'), ('{"steps": [{"kind": "wait"}]}'), ('{"name": "x"}'),
  ('{"name": "x", "steps": [{"kind": "fly"}]}'),
  ('{"name": "x", "steps": [{"kind": "send_email", "message": {"body": "b"}}]}'),
  ('{"name": "x", "steps": [{"kind": "send_sms", "message": {"body": "{{x.y}}"}}]}'),
  ('{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"random": 50}, "then": 1, "else": 0}}]}'),
  ('{"name": "x", "bogus": 1, "steps": [{"kind": "wait"}]}'),
  ('{"name": "x", "steps": [{"kind": "send_sms", "template_id": "00000000-0000-0000-0000-00000000dead"}]}');
SELECT d.def,
       pg_temp.try(format('SELECT journey.update_sequence(%L, %L)', :'seq', d.def)) AS update_error,
       pg_temp.try(format('SELECT journey.update_sequence(%L, %L)', :'seq', d.def)) =
       pg_temp.try(format('SELECT journey.create_sequence(%L, %L)', '00000000-0000-0000-0000-0000000000b1', d.def)) AS same_as_create
FROM bad_definitions d;
SELECT pg_temp.try(format($q$SELECT journey.update_sequence('%s', '{"name": "x", "steps": [{"kind": "wait"}]}', 'teleport')$q$, :'seq'));
SELECT pg_temp.try(format($q$SELECT journey.update_sequence('%s', '{"name": "x", "steps": [{"kind": "wait"}]}', NULL)$q$, :'seq'));
SELECT pg_temp.try($q$SELECT journey.update_sequence(NULL, '{"name": "x", "steps": [{"kind": "wait"}]}')$q$);
SELECT pg_temp.try(format($q$SELECT journey.update_sequence('%s', NULL)$q$, :'seq'));
SELECT pg_temp.try($q$SELECT journey.update_sequence('00000000-0000-0000-0000-00000000dead', '{"name": "x", "steps": [{"kind": "wait"}]}')$q$);

-- move: refused while someone stands where the new version has no step
-- (customer 4 at step 4 of a 3-step version), writing nothing.
SELECT pg_temp.try(format($q$SELECT journey.update_sequence('%s', '{"name": "Review v2", "status": "active",
   "steps": [{"kind": "send_email", "message": {"subject": "v2 step 1", "body": "Hi"}},
             {"kind": "wait", "wait_ms": 60000},
             {"kind": "send_email", "message": {"subject": "v2 step 3", "body": "Hi"}}]}', 'move')$q$, :'seq'));
SELECT pg_temp.unchanged() AS nothing_written;

-- keep: in-flight enrollments finish on version 1; newcomers take version 2;
-- the settings (here the name and manual enrollment) apply at once.
SELECT journey.update_sequence(:'seq', $j$
  {"name": "Review v2", "status": "active", "allow_manual_enroll": true,
   "steps": [{"kind": "send_email", "message": {"subject": "v2 step 1", "body": "Hi"}},
             {"kind": "wait", "wait_ms": 3600000},
             {"kind": "send_email", "message": {"subject": "v2 step 3", "body": "Hi"}},
             {"kind": "wait", "wait_ms": 3600000},
             {"kind": "send_email", "message": {"subject": "v2 step 5", "body": "Hi"}}]}$j$) AS version;
SELECT name, version FROM journey.sequences WHERE id = :'seq';
SELECT version, count(*) AS steps FROM journey.sequence_steps WHERE sequence_id = :'seq' GROUP BY 1 ORDER BY 1;
SELECT journey.enroll_customer(:'seq', '00000000-0000-0000-0000-000000000005', '{}', '2027-01-02 12:00+00') IS NOT NULL AS enrolled;
SELECT journey.advance_due_enrollments(100, '2027-01-02 12:00+00') AS advanced;
SELECT c.full_name, m.step_index, m.subject
FROM journey.messages m JOIN journey.customers c ON c.id = m.customer_id
WHERE m.sequence_id = :'seq' AND m.send_after = '2027-01-02 12:00+00' ORDER BY 1, 2;
SELECT c.full_name, e.sequence_version, e.current_step_index
FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id
WHERE e.sequence_id = :'seq' ORDER BY 1;

-- move: all active enrollments go on on version 3 at their step, each logged.
SELECT journey.update_sequence(:'seq', $j$
  {"name": "Review v3", "status": "active", "allow_manual_enroll": true,
   "steps": [{"kind": "send_email", "message": {"subject": "v3 step 1", "body": "Hi"}},
             {"kind": "wait", "wait_ms": 3600000},
             {"kind": "send_email", "message": {"subject": "v3 step 3", "body": "Hi"}},
             {"kind": "wait", "wait_ms": 3600000},
             {"kind": "send_email", "message": {"subject": "v3 step 5", "body": "Hi"}}]}$j$, 'move') AS version;
SELECT c.full_name, e.sequence_version, e.current_step_index
FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id
WHERE e.sequence_id = :'seq' ORDER BY 1;
SELECT c.full_name, t.step_index, t.what, t.detail, t.sequence_version
FROM journey.timeline t JOIN journey.customers c ON c.id = t.customer_id
WHERE t.sequence_id = :'seq' AND t.what = 'moved' ORDER BY 1;
SELECT journey.advance_due_enrollments(100, '2027-01-02 14:00+00') AS advanced;
SELECT c.full_name, m.step_index, m.subject
FROM journey.messages m JOIN journey.customers c ON c.id = m.customer_id
WHERE m.sequence_id = :'seq' AND m.send_after = '2027-01-02 14:00+00' ORDER BY 1, 2;
-- Every decision says its version.
SELECT l.outcome, l.sequence_version, count(*) FROM journey.enrollment_log l
JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id
WHERE e.sequence_id = :'seq' GROUP BY 1, 2 ORDER BY 2, 1;

-- exit: active enrollments stop (sequence_updated), their queued messages
-- are cancelled, each stop logged; the old versions' steps stay.
SELECT count(*) AS queued_before FROM journey.messages m
JOIN journey.sequence_enrollments e ON e.id = m.enrollment_id
WHERE e.sequence_id = :'seq' AND e.status = 'active' AND m.status = 'queued';
SELECT journey.update_sequence(:'seq', '{"name": "Review v4", "status": "active", "steps": [{"kind": "wait"}]}', 'exit') AS version;
SELECT status, stop_reason, count(*) FROM journey.sequence_enrollments WHERE sequence_id = :'seq' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT m.status, count(*) FROM journey.messages m WHERE m.sequence_id = :'seq' GROUP BY 1 ORDER BY 1;
SELECT outcome, count(*) FROM journey.enrollment_log l JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id
WHERE e.sequence_id = :'seq' AND l.outcome NOT IN ('queued', 'moved') GROUP BY 1 ORDER BY 1;
SELECT version, count(*) AS steps FROM journey.sequence_steps WHERE sequence_id = :'seq' GROUP BY 1 ORDER BY 1;

-- ===================================================================
-- Tenancy
-- ===================================================================
SET ROLE regress_versions_b;
-- Another business's sequence answers exactly as a random id.
SELECT pg_temp.try(format($q$SELECT journey.update_sequence('%s', '{"name": "x", "steps": [{"kind": "wait"}]}', 'exit')$q$, :'seq'))
     = pg_temp.try($q$SELECT journey.update_sequence('00000000-0000-0000-0000-00000000dead', '{"name": "x", "steps": [{"kind": "wait"}]}', 'exit')$q$)
  AS same_as_missing;
SELECT pg_temp.try(format($q$SELECT journey.update_sequence('%s', '{"name": "x", "steps": [{"kind": "wait"}]}', 'exit')$q$, :'seq'));
-- Templates of another business are invisible and untouchable.
SELECT count(*) AS visible_templates FROM journey.templates;
SELECT pg_temp.try(format($q$UPDATE journey.templates SET body = 'pwned' WHERE id = '%s'$q$, :'t_sms'));
SELECT pg_temp.try(format($q$DELETE FROM journey.templates WHERE id = '%s'$q$, :'t_sms'));
SELECT pg_temp.try($q$SELECT journey.create_template('00000000-0000-0000-0000-0000000000b1', 'x', 'sms', NULL, 'body')$q$);
SELECT pg_temp.try($q$INSERT INTO journey.templates (business_id, name, channel, body) VALUES ('00000000-0000-0000-0000-0000000000b2', 'x', 'sms', 'body')$q$);
SELECT pg_temp.try($q$UPDATE journey.templates SET channel = 'sms'$q$);
-- A member uses its own template in its own sequence through create_sequence.
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b2', format($j$
  {"name": "Theirs", "steps": [{"kind": "send_email", "template_id": %s}]}$j$, to_json(:'t_other'::text))::jsonb) IS NOT NULL AS created;
RESET ROLE;

SET ROLE regress_versions_a;
SELECT count(*) AS visible_templates FROM journey.templates;
SELECT pg_temp.try(format($q$UPDATE journey.templates SET body = 'Hi {{bogus.x}}' WHERE id = '%s'$q$, :'t_sms'));
SELECT pg_temp.try(format($q$UPDATE journey.templates SET body = 'Review us: {{review_link}}!' WHERE id = '%s'$q$, :'t_sms'));
SELECT journey.update_sequence(:'seq', '{"name": "Review v5", "status": "paused", "steps": [{"kind": "wait"}]}') AS version;
RESET ROLE;
SELECT name, status, version FROM journey.sequences WHERE id = :'seq';
SELECT body FROM journey.templates WHERE id = :'t_sms';

DROP EXTENSION journey CASCADE;
DROP OWNED BY regress_versions_a, regress_versions_b;
DROP ROLE regress_versions_a, regress_versions_b;
