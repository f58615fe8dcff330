-- The schema: tables, keys, checks, time zone validation, updated_at.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
\i test/sql/helpers.sql

SELECT extrelocatable, extversion FROM pg_extension WHERE extname = 'journey';
SELECT c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'journey' AND c.relkind = 'r' ORDER BY 1;
-- journey.* settings are reserved: a typo is an error, not a silent placeholder
SELECT pg_temp.try($$SET journey.max_attempt = 3$$);
SELECT name, setting, context FROM pg_settings WHERE name LIKE 'journey.%' ORDER BY 1;

-- Time zones must be real tz database zones: 22023 with a hint.
SELECT pg_temp.try($$INSERT INTO journey.businesses (name, timezone) VALUES ('x', 'Mars/Olympus')$$);
SELECT pg_temp.try($$INSERT INTO journey.businesses (name, timezone) VALUES ('x', '+05')$$);
SELECT pg_temp.try($$INSERT INTO journey.businesses (name, timezone) VALUES ('x', '')$$);
SELECT pg_temp.try($$INSERT INTO journey.businesses (name) VALUES ('')$$);
SELECT count(*) AS businesses_written FROM journey.businesses;
INSERT INTO journey.businesses (id, name, timezone) VALUES
  ('00000000-0000-0000-0000-0000000000b1', 'Pipe Dreams', 'America/New_York'),
  ('00000000-0000-0000-0000-0000000000b2', 'Salon', 'europe/paris');
SELECT name, timezone FROM journey.businesses ORDER BY name;
SELECT pg_temp.try($$INSERT INTO journey.customers (business_id, full_name, timezone) VALUES ('00000000-0000-0000-0000-0000000000b1', 'x', 'Nowhere/Town')$$);
SELECT pg_temp.try($$INSERT INTO journey.customers (business_id, full_name, attributes) VALUES ('00000000-0000-0000-0000-0000000000b1', 'x', '[1]')$$);
SELECT pg_temp.try($$INSERT INTO journey.customers (business_id, full_name) VALUES ('00000000-0000-0000-0000-0000000000ff', 'x')$$);

-- external_id is unique per business, not across businesses
INSERT INTO journey.customers (id, business_id, full_name, external_id) VALUES
  ('00000000-0000-0000-0000-0000000000c1', '00000000-0000-0000-0000-0000000000b1', 'Ada', 'E1'),
  ('00000000-0000-0000-0000-0000000000c2', '00000000-0000-0000-0000-0000000000b2', 'Ada', 'E1');
SELECT pg_temp.try($$INSERT INTO journey.customers (business_id, full_name, external_id) VALUES ('00000000-0000-0000-0000-0000000000b1', 'Ada 2', 'E1')$$);

-- updated_at follows updates (transaction time), created_at stays
UPDATE journey.customers SET created_at = '2020-01-01', updated_at = '2020-01-01' WHERE id = '00000000-0000-0000-0000-0000000000c1';
UPDATE journey.customers SET email = 'ada@example.com' WHERE id = '00000000-0000-0000-0000-0000000000c1';
SELECT created_at = '2020-01-01' AS created_kept, updated_at > '2020-01-01' AND updated_at <= now() AS updated_touched
FROM journey.customers WHERE id = '00000000-0000-0000-0000-0000000000c1';

-- check constraints on sequences, steps, enrollments and messages
SELECT pg_temp.try($$INSERT INTO journey.sequences (business_id, name, status) VALUES ('00000000-0000-0000-0000-0000000000b1', 'x', 'live')$$);
SELECT pg_temp.try($$INSERT INTO journey.sequences (business_id, name, reentry) VALUES ('00000000-0000-0000-0000-0000000000b1', 'x', 'always')$$);
SELECT pg_temp.try($$INSERT INTO journey.sequences (business_id, name, rate_per_hour) VALUES ('00000000-0000-0000-0000-0000000000b1', 'x', 0)$$);
INSERT INTO journey.sequences (id, business_id, name, status) VALUES
  ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b1', 'Journey', 'active');
SELECT pg_temp.try($$INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index, wait_ms) VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', 'wait', 1, -5)$$);
SELECT pg_temp.try($$INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index) VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', 'branch', 1)$$);
SELECT pg_temp.try($$INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index) VALUES ('00000000-0000-0000-0000-0000000000b2', '00000000-0000-0000-0000-0000000000a1', 'wait', 1)$$);
INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index) VALUES
  ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', 'wait', 1);
SELECT pg_temp.try($$INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index) VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', 'wait', 1)$$);

-- one active enrollment per (sequence, customer); finished ones may repeat
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, next_run_at, enrolled_at)
VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000c1', '2026-01-01', '2026-01-01');
SELECT pg_temp.try($$INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, next_run_at, enrolled_at) VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000c1', '2026-01-02', '2026-01-02')$$);
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, status, enrolled_at) VALUES
  ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000c1', 'finished', '2025-01-01'),
  ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000c1', 'stopped', '2025-02-01');
-- an enrollment can never pair a journey and a customer of different businesses
SELECT pg_temp.try($$INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, next_run_at, enrolled_at) VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000c2', '2026-01-02', '2026-01-02')$$);
SELECT pg_temp.try($$INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, enrolled_at) VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000c1', '2026-01-02')$$);
SELECT count(*) AS enrollments FROM journey.sequence_enrollments;

-- a step enqueues at most one message
SELECT id AS enr FROM journey.sequence_enrollments WHERE status = 'active' \gset
INSERT INTO journey.messages (business_id, enrollment_id, step_index, channel, to_address, body)
VALUES ('00000000-0000-0000-0000-0000000000b1', :'enr', 1, 'sms', '+15550100', 'hi');
SELECT pg_temp.try(format($$INSERT INTO journey.messages (business_id, enrollment_id, step_index, channel, to_address, body) VALUES ('00000000-0000-0000-0000-0000000000b1', %L, 1, 'sms', '+15550100', 'again')$$, :'enr'));
SELECT pg_temp.try($$INSERT INTO journey.messages (business_id, channel, to_address, body) VALUES ('00000000-0000-0000-0000-0000000000b1', 'fax', 'x', 'y')$$);
SELECT pg_temp.try($$INSERT INTO journey.messages (business_id, channel, to_address, body, status) VALUES ('00000000-0000-0000-0000-0000000000b1', 'sms', 'x', 'y', 'lost')$$);

-- events: generated ids, unique idempotency keys per business
SELECT pg_temp.try($$INSERT INTO journey.events (id, business_id, event_type) VALUES (1, '00000000-0000-0000-0000-0000000000b1', 'x')$$);
INSERT INTO journey.events (business_id, event_type, idempotency_key) VALUES
  ('00000000-0000-0000-0000-0000000000b1', 'x', 'k'), ('00000000-0000-0000-0000-0000000000b2', 'x', 'k'),
  ('00000000-0000-0000-0000-0000000000b1', 'x', NULL), ('00000000-0000-0000-0000-0000000000b1', 'x', NULL);
SELECT pg_temp.try($$INSERT INTO journey.events (business_id, event_type, idempotency_key) VALUES ('00000000-0000-0000-0000-0000000000b1', 'y', 'k')$$);
SELECT pg_temp.try($$INSERT INTO journey.events (business_id, event_type) VALUES ('00000000-0000-0000-0000-0000000000b1', '')$$);

-- providers: kinds match channels, one enabled provider per business and channel
SELECT pg_temp.try($$INSERT INTO journey.providers (channel, kind, endpoint) VALUES ('email', 'twilio', 'http://127.0.0.1:1/')$$);
SELECT pg_temp.try($$INSERT INTO journey.providers (channel, kind, endpoint) VALUES ('sms', 'smtp', 'smtp://127.0.0.1:1')$$);
INSERT INTO journey.providers (channel, kind, endpoint) VALUES ('sms', 'webhook', 'http://127.0.0.1:1/');
SELECT pg_temp.try($$INSERT INTO journey.providers (channel, kind, endpoint) VALUES ('sms', 'twilio', 'http://127.0.0.1:1/')$$);
INSERT INTO journey.providers (channel, kind, endpoint, enabled) VALUES ('sms', 'twilio', 'http://127.0.0.1:1/', false);
SELECT count(*) AS providers FROM journey.providers;

-- A webhook handler may use the idempotency key with its own plain INSERT.
INSERT INTO journey.events (business_id, event_type, idempotency_key)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'z', 'k')
ON CONFLICT (business_id, idempotency_key) DO NOTHING;
SELECT count(*) AS events_with_key_k FROM journey.events WHERE idempotency_key = 'k';
