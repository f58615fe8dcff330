-- Hardening (issue 12): addresses never hold control characters (22023
-- from the API, 23514 from a direct write, nothing written); exit event
-- lists are bounded (23514).
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
\i test/sql/helpers.sql

\set b1 '00000000-0000-0000-0000-0000000000b1'
INSERT INTO journey.businesses (id, name) VALUES (:'b1', 'Pipe Dreams');
SELECT journey.create_sequence(:'b1', '{"name": "Review", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
  "steps": [{"kind": "wait"}]}') AS seq \gset

-- ingest_event: a customer's email or phone with CR, LF, another C0
-- control, DEL or a C1 control is refused with 22023; nothing is written.
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid',
  %L, '{}', 'k1', '2026-03-02 15:00+00')$$, :'b1',
  json_build_object('external_id', 'X1', 'full_name', 'Eve',
                    'email', E'eve@ok.test\r\nRCPT TO:<inj@evil.test>')));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid',
  %L, '{}', 'k2', '2026-03-02 15:00+00')$$, :'b1',
  json_build_object('external_id', 'X2', 'full_name', 'Eve', 'phone', E'+1555\u0007')));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid',
  %L, '{}', 'k3', '2026-03-02 15:00+00')$$, :'b1',
  json_build_object('external_id', 'X3', 'full_name', 'Eve', 'email', E'eve\u0085@ok.test')));
SELECT count(*) AS customers, (SELECT count(*) FROM journey.events) AS events FROM journey.customers;
-- A clean address goes through.
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid',
  %L, '{}', 'k4', '2026-03-02 15:00+00')$$, :'b1',
  json_build_object('external_id', 'X4', 'full_name', 'Eve', 'email', 'Eve Example <eve@ok.test>')));
-- ... and updating it to a bad one is refused as well.
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid',
  %L, '{}', 'k5', '2026-03-02 16:00+00')$$, :'b1',
  json_build_object('external_id', 'X4', 'email', E'eve@ok.test\nBcc: all@evil.test')));
SELECT email FROM journey.customers WHERE external_id = 'X4';

-- Direct writes: 23514.
SELECT pg_temp.try(format($$INSERT INTO journey.customers (business_id, full_name, email)
  VALUES (%L, 'Mallory', E'm@ok.test\r\nDATA')$$, :'b1'));
SELECT pg_temp.try($$UPDATE journey.customers SET phone = E'+1\t555' WHERE external_id = 'X4'$$);
SELECT pg_temp.try(format($$INSERT INTO journey.messages (business_id, channel, to_address, subject, body)
  VALUES (%L, 'email', E'a@b.test\x7f', 's', 'b')$$, :'b1'));
SELECT pg_temp.try($$INSERT INTO journey.providers (channel, kind, endpoint, from_address)
  VALUES ('email', 'smtp', 'smtp://127.0.0.1:1', E'Shop <shop@ok.test>\r\nBcc: x@evil.test')$$);
SELECT (SELECT count(*) FROM journey.customers WHERE full_name = 'Mallory') AS customers,
       (SELECT count(*) FROM journey.messages) AS messages,
       (SELECT count(*) FROM journey.providers) AS providers;
-- Printable non-ASCII is fine.
SELECT pg_temp.try(format($$INSERT INTO journey.customers (business_id, full_name, email)
  VALUES (%L, 'Zoë', 'Zoë Ünïcode <zoe@ok.test>')$$, :'b1'));

-- exit_event_types: at most 50 non-empty types of at most 200 characters.
SELECT pg_temp.try(format($$UPDATE journey.sequences SET exit_event_types =
  ARRAY(SELECT 'e' || g FROM generate_series(1, 50) g) WHERE id = %L$$, :'seq'));
SELECT pg_temp.try(format($$UPDATE journey.sequences SET exit_event_types =
  ARRAY(SELECT 'e' || g FROM generate_series(1, 51) g) WHERE id = %L$$, :'seq'));
SELECT pg_temp.try(format($$UPDATE journey.sequences SET exit_event_types =
  array_fill('x'::text, ARRAY[1000000]) WHERE id = %L$$, :'seq'));
SELECT pg_temp.try(format($$UPDATE journey.sequences SET exit_event_types = ARRAY['ok', ''] WHERE id = %L$$, :'seq'));
SELECT pg_temp.try(format($$UPDATE journey.sequences SET exit_event_types = ARRAY['ok', NULL] WHERE id = %L$$, :'seq'));
SELECT pg_temp.try(format($$UPDATE journey.sequences SET exit_event_types = ARRAY[repeat('é', 200)] WHERE id = %L$$, :'seq'));
SELECT pg_temp.try(format($$UPDATE journey.sequences SET exit_event_types = ARRAY[repeat('é', 201)] WHERE id = %L$$, :'seq'));
SELECT cardinality(exit_event_types) FROM journey.sequences WHERE id = :'seq';

-- Time zones are IANA zones: POSIX TZ strings and the tz database's
-- non-zone files are refused (22023).
SELECT z, pg_temp.try(format($$INSERT INTO journey.businesses (name, timezone) VALUES ('tz', %L)$$, z))
FROM unnest(ARRAY['ABC-167', 'XYZ3', 'EST5EDT,M3.2.0,M11.1.0', 'posixrules', 'localtime',
                  'posix/Europe/Paris', 'right/UTC', '../zoneinfo/UTC',
                  'America/New_York', 'europe/london', 'UTC', 'Etc/GMT-5']) AS z;

-- Bounded template output: 54000 before more than about 1 MB is allocated
-- (a 600 kB value repeated 2,000 times would be 1.2 GB).
SELECT pg_temp.try($$SELECT journey.render_template(repeat('{{ event.v }}', 2000),
  jsonb_build_object('event', jsonb_build_object('v', repeat('x', 600000))))$$) AS huge;
SELECT length(journey.render_template('{{ event.v }}',
  jsonb_build_object('event', jsonb_build_object('v', repeat('x', 1048576))))) AS exactly_1mb;
SELECT pg_temp.try($$SELECT journey.render_template('{{ event.v }}!',
  jsonb_build_object('event', jsonb_build_object('v', repeat('x', 1048576))))$$) AS one_byte_over;
SELECT pg_temp.try($$SELECT journey.render_template(repeat('{{ event.o }}', 100),
  jsonb_build_object('event', jsonb_build_object('o', jsonb_build_object('k', repeat('y', 20000)))))$$) AS objects;
