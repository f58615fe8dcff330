-- create_sequence: the whole definition is validated before anything is
-- written; every bad input names its step and field, with SQLSTATE 22023.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';

\i test/sql/helpers.sql

INSERT INTO journey.businesses (id, name, timezone, google_review_url)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'Pipe Dreams Plumbing', 'America/New_York',
        'https://g.page/r/pipe-dreams/review');

-- A review-request journey: thank you, wait, branch on the phone, review ask.
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', $${
  "name": "Review request", "description": "Thank, then ask for a review", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
  "allow_manual_enroll": true, "reentry": "after_exit",
  "quiet_hours": {"start": "21:00", "end": "08:00"},
  "rate_per_hour": 100, "rate_per_day": 1000,
  "steps": [
    {"kind": "send_email", "wait_ms": 0,
     "message": {"purpose": "thank_you", "subject": "Thanks, {{customer.first_name}}!",
                 "body": "Thank you for choosing {{business.name}}."}},
    {"kind": "wait", "wait_ms": 172800000},
    {"kind": "branch", "branch_config": {"if": {"field": "customer.phone", "op": "exists"},
                                         "then": 4, "else": 5}},
    {"kind": "send_sms", "next": 0, "message": {"purpose": "review_request",
     "body": "Hi {{customer.name}}, please review us: {{review_link}}"}},
    {"kind": "send_email", "message": {"purpose": "review_request",
     "subject": "How did we do?", "body": "Hi {{customer.first_name | default: \"there\"}}, {{review_link}}"}}
  ]}$$) AS seq \gset

SELECT name, description, status, trigger_event_type, exit_event_types, allow_manual_enroll,
       reentry, quiet_hours_start, quiet_hours_end, rate_per_hour, rate_per_day,
       business_id = '00000000-0000-0000-0000-0000000000b1' AS right_business
FROM journey.sequences WHERE id = :'seq';
SELECT step_index, kind, wait_ms, next_step_index, message_purpose,
       message_config ->> 'subject' AS subject, branch_config
FROM journey.sequence_steps WHERE sequence_id = :'seq' ORDER BY step_index;

-- Defaults: draft, after_exit, rate limits 100/1000; explicit null rates mean unlimited.
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1',
  '{"name": "Minimal", "steps": [{"kind": "wait"}]}') AS minimal \gset
SELECT status, reentry, allow_manual_enroll, rate_per_hour, rate_per_day, exit_event_types,
       quiet_hours_start IS NULL AS no_quiet_hours
FROM journey.sequences WHERE id = :'minimal';
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1',
  '{"name": "Unlimited", "rate_per_hour": null, "rate_per_day": null, "steps": [{"kind": "wait"}]}') AS unlimited \gset
SELECT rate_per_hour IS NULL AS hour_unlimited, rate_per_day IS NULL AS day_unlimited
FROM journey.sequences WHERE id = :'unlimited';

-- Every branch condition form is accepted.
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', $${
  "name": "Conditions", "steps": [
    {"kind": "branch", "branch_config": {"if": {"all": [
        {"field": "customer.plan", "op": "eq", "value": "gold"},
        {"field": "customer.visits", "op": "gt", "value": 3},
        {"field": "customer.visits", "op": "lt", "value": 10},
        {"field": "customer.city", "op": "in", "value": ["Boston", "Salem"]},
        {"field": "customer.email", "op": "neq", "value": "x@example.com"},
        {"any": [{"event": "review_left", "since": "enrollment"}, {"random": 50}]}]},
      "then": 2, "else": 0}},
    {"kind": "send_sms", "message": {"body": "{{event.invoice}} {{enrollment.meta.source}} {{business.phone}}"}}
  ]}$$) IS NOT NULL AS conditions_accepted;

SELECT count(*) AS sequences_before FROM journey.sequences \gset
SELECT count(*) AS steps_before FROM journey.sequence_steps \gset

-- Bad inputs: each is refused with its SQLSTATE and a message naming the field.
SELECT pg_temp.try($$SELECT journey.create_sequence(NULL, '{"name": "x", "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', NULL)$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '[1, 2]')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '"text"')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000ff', '{"name": "x", "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "", "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": 7, "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "stpes": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x"}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": []}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "status": "live", "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "reentry": "always", "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "allow_manual_enroll": "yes", "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "exit_event_types": "review_left", "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "exit_event_types": ["ok", ""], "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "trigger_event_type": "paid", "exit_event_types": ["paid"], "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "quiet_hours": {"start": "9pm", "end": "08:00"}, "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "quiet_hours": {"start": "24:00", "end": "08:00"}, "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "quiet_hours": {"start": "21:00"}, "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "rate_per_hour": 0, "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "rate_per_day": 2.5, "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "rate_per_day": 99999999999, "steps": [{"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait"}, "send"]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"wait_ms": 5}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_fax"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait", "wait_ms": -1}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait", "wait_ms": 1.5}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait", "wait_ms": 99999999999999999999}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait", "wait_ms": "1000"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait", "colour": "red"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait"}, {"kind": "send_email", "message": {"body": "hi"}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_email", "message": {"subject": "hi"}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_sms"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_sms", "message": {"body": "hi", "subject": "no"}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_sms", "message": "hi"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait", "message": {"body": "hi"}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_sms", "message": {"body": "Hi {{customer.first_name"}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_sms", "message": {"body": "Hi {{ }}"}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_sms", "message": {"body": "Hi {{ user.name }}"}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_sms", "message": {"body": "Hi {{ business.owner }}"}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_sms", "message": {"body": "Hi {{ enrollment.source }}"}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_sms", "message": {"body": "Hi {{ customer.name | upcase }}"}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "send_email", "message": {"subject": "{{review_link.url}}", "body": "ok"}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait", "next": 1}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait", "next": 3}, {"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait"}, {"kind": "branch"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "wait"}, {"kind": "wait"}, {"kind": "branch", "branch_config": {"if": {"random": 50}, "then": 1, "else": 0}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"random": 50}, "then": 2}}, {"kind": "wait"}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "branch", "branch_config": {"then": 0, "else": 0}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"field": "phone", "op": "exists"}, "then": 0, "else": 0}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"field": "customer.phone", "op": "like", "value": "1%"}, "then": 0, "else": 0}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"field": "customer.plan", "op": "eq"}, "then": 0, "else": 0}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"field": "customer.plan", "op": "in", "value": "gold"}, "then": 0, "else": 0}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"random": 150}, "then": 0, "else": 0}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"event": "review_left", "since": "yesterday"}, "then": 0, "else": 0}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"all": []}, "then": 0, "else": 0}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "branch", "branch_config": {"if": {"any": [{"random": 5}, {"weather": "sunny"}]}, "then": 0, "else": 0}}]}')$$);
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "x", "steps": [{"kind": "branch", "next": 0, "branch_config": {"if": {"random": 5}, "then": 0, "else": 0}}]}')$$);

-- Nothing was written by any refused definition.
SELECT count(*) = :sequences_before AS no_sequence_written,
       (SELECT count(*) FROM journey.sequence_steps) = :steps_before AS no_step_written
FROM journey.sequences;

-- Deleting a business removes its journeys and their steps.
DELETE FROM journey.businesses;
SELECT (SELECT count(*) FROM journey.sequences) AS sequences_left,
       (SELECT count(*) FROM journey.sequence_steps) AS steps_left;
