-- Definition bounds the definition module refuses itself (issues 12 and 14):
-- exit_event_types past the table's bounds (at most 50 non-empty types of
-- at most 200 characters) and a template_id that is not a uuid answer 22023
-- naming the field, with a hint saying the bound, through create_sequence,
-- update_sequence and simulate's drafts alike; nothing is written.  Direct
-- table writes keep the CHECK's 23514 (sql/hardening.sql).
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
\i test/sql/helpers.sql

\set b1 '00000000-0000-0000-0000-0000000000b1'
INSERT INTO journey.businesses (id, name) VALUES (:'b1', 'Bounded');
SELECT journey.create_sequence(:'b1', '{"name": "Live", "status": "active",
  "steps": [{"kind": "wait"}]}') AS seq \gset

-- The definitions refused, each with the others' fields fine.
CREATE TEMP TABLE bad (what text, def jsonb);
INSERT INTO bad VALUES
  ('51 exit types', jsonb_build_object('name', 'x', 'steps', '[{"kind": "wait"}]'::jsonb,
     'exit_event_types', (SELECT jsonb_agg('e' || g) FROM generate_series(1, 51) g))),
  ('a million exit types', jsonb_build_object('name', 'x', 'steps', '[{"kind": "wait"}]'::jsonb,
     'exit_event_types', (SELECT jsonb_agg('x'::text) FROM generate_series(1, 1000000) g))),
  ('empty exit type', '{"name": "x", "exit_event_types": ["ok", ""], "steps": [{"kind": "wait"}]}'),
  ('201-char exit type', jsonb_build_object('name', 'x', 'steps', '[{"kind": "wait"}]'::jsonb,
     'exit_event_types', jsonb_build_array('ok', repeat('é', 201)))),
  ('null exit type', '{"name": "x", "exit_event_types": ["ok", null], "steps": [{"kind": "wait"}]}'),
  ('template_id not a uuid', '{"name": "x", "steps": [{"kind": "wait"}, {"kind": "send_sms", "template_id": "not-a-uuid"}]}'),
  ('template_id uuid with junk', '{"name": "x", "steps": [{"kind": "send_email", "template_id": "00000000-0000-0000-0000-000000000001x"}]}'),
  ('template_id short', '{"name": "x", "steps": [{"kind": "send_email", "template_id": "0000000"}]}'),
  ('template_id control chars', jsonb_build_object('name', 'x', 'steps',
     jsonb_build_array(jsonb_build_object('kind', 'send_email', 'template_id', E'\u0001\n'))));

SELECT pg_temp.fingerprint(:'b1') AS before \gset
SELECT what, pg_temp.try(format('SELECT journey.create_sequence(%L, %L)', :'b1', def)) AS create_sequence
  FROM bad ORDER BY what;
-- update_sequence and simulate answer exactly the same ('same', else what
-- they answered).
SELECT what,
       CASE WHEN u = c THEN 'same' ELSE u END AS update_sequence,
       CASE WHEN s = c THEN 'same' ELSE s END AS simulate
  FROM bad,
       LATERAL pg_temp.try(format('SELECT journey.create_sequence(%L, %L)', :'b1', def)) c,
       LATERAL pg_temp.try(format('SELECT journey.update_sequence(%L, %L)', :'seq', def)) u,
       LATERAL pg_temp.try(format($$SELECT * FROM journey.simulate(%L::uuid, %L::jsonb, '{"full_name": "Sim"}'::jsonb,
                          '2027-01-01 00:00+00', '2027-01-02 00:00+00')$$, :'b1', def)) s
 ORDER BY what;
SELECT pg_temp.fingerprint(:'b1') = :'before' AS nothing_written,
       (SELECT version FROM journey.sequences WHERE id = :'seq') AS version;

-- At the bounds: accepted, and a uuid in any form uuid_in reads.
SELECT pg_temp.try(format('SELECT journey.create_sequence(%L, %L)', :'b1',
  jsonb_build_object('name', 'fifty', 'steps', '[{"kind": "wait"}]'::jsonb,
    'exit_event_types', (SELECT jsonb_agg(repeat('é', 199) || (g % 10)::text) FROM generate_series(1, 50) g))))
  AS fifty_of_200;
SELECT cardinality(exit_event_types), max(char_length(t))
  FROM journey.sequences, unnest(exit_event_types) t WHERE name = 'fifty' GROUP BY 1;
SELECT journey.create_template(:'b1', 'thanks', 'sms', NULL, 'Thanks!') AS tpl \gset
SELECT n, pg_temp.try(format('SELECT journey.create_sequence(%L, %L)', :'b1',
  jsonb_build_object('name', 'tpl', 'steps', jsonb_build_array(
    jsonb_build_object('kind', 'send_sms', 'template_id', f))))) AS accepted
  FROM unnest(ARRAY[:'tpl', upper(:'tpl'), '{' || :'tpl' || '}', replace(:'tpl', '-', '')]) WITH ORDINALITY u(f, n)
 ORDER BY n;

-- leave no extension behind, as the tests after this one expect
DROP EXTENSION journey;
