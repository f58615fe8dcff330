-- Upgrades: CREATE EXTENSION journey VERSION '0.1' followed by ALTER
-- EXTENSION journey UPDATE must leave exactly the objects of a fresh install
-- of the newest version, and keep the data.
DROP EXTENSION IF EXISTS journey CASCADE;
SET timezone = 'UTC';
\i test/sql/helpers.sql

-- One line per property of every object the extension owns or that lives in
-- its schema: relations and their options, columns, constraints, indexes,
-- triggers, policies, routines, views, comments, privileges, and the
-- extension's member list.  OIDs never appear, only names and definitions.
CREATE FUNCTION pg_temp.journey_objects() RETURNS SETOF text LANGUAGE sql AS $$
    SELECT 'schema acl ' || coalesce(nspacl::text, '-')
      FROM pg_namespace WHERE nspname = 'journey'
    UNION ALL
    SELECT format('relation %s kind %s options %s rls %s/%s acl %s comment %s',
                  c.relname, c.relkind, coalesce(c.reloptions::text, '-'),
                  c.relrowsecurity, c.relforcerowsecurity, coalesce(c.relacl::text, '-'),
                  coalesce(obj_description(c.oid, 'pg_class'), '-'))
      FROM pg_class c WHERE c.relnamespace = 'journey'::regnamespace
    UNION ALL
    SELECT format('column %s.%s #%s %s notnull %s default %s identity %s acl %s',
                  c.relname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull, coalesce(pg_get_expr(d.adbin, d.adrelid), '-'),
                  a.attidentity, coalesce(a.attacl::text, '-'))
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'journey'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('constraint %s on %s: %s', conname, conrelid::regclass, pg_get_constraintdef(oid))
      FROM pg_constraint WHERE connamespace = 'journey'::regnamespace
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(indexrelid)
      FROM pg_index WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'journey'::regnamespace)
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid)
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = 'journey'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT format('policy %s on %s cmd %s permissive %s roles %s using %s check %s',
                  p.polname, p.polrelid::regclass, p.polcmd, p.polpermissive,
                  (SELECT string_agg(CASE r WHEN 0 THEN 'public' ELSE r::regrole::text END, ',' ORDER BY 1)
                     FROM unnest(p.polroles) r),
                  coalesce(pg_get_expr(p.polqual, p.polrelid), '-'),
                  coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-'))
      FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
     WHERE c.relnamespace = 'journey'::regnamespace
    UNION ALL
    SELECT format('routine %s acl %s comment %s', pg_get_functiondef(p.oid),
                  coalesce(p.proacl::text, '-'), coalesce(obj_description(p.oid, 'pg_proc'), '-'))
      FROM pg_proc p WHERE p.pronamespace = 'journey'::regnamespace
    UNION ALL
    SELECT format('view %s: %s', c.relname, pg_get_viewdef(c.oid))
      FROM pg_class c WHERE c.relnamespace = 'journey'::regnamespace AND c.relkind = 'v'
    UNION ALL
    SELECT format('dumped %s where %s', c.rel::regclass, c.cond)
      FROM pg_extension x, unnest(x.extconfig, x.extcondition) AS c(rel, cond)
     WHERE x.extname = 'journey'
    UNION ALL
    SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
      FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND x.extname = 'journey'
$$;

-- A fresh install of the default version.
CREATE EXTENSION journey;
SELECT extversion FROM pg_extension WHERE extname = 'journey';
CREATE TEMP TABLE fresh AS SELECT * FROM pg_temp.journey_objects() o;
-- The fingerprint sees what matters: the timeline, the hot tables' settings.
SELECT count(*) > 300 AS fingerprint_is_detailed,
       bool_or(o LIKE 'view timeline:%') AS sees_views,
       bool_or(o LIKE 'relation messages kind r options {autovacuum_vacuum_scale_factor=0.02%') AS sees_options,
       bool_or(o LIKE 'member view journey.timeline') AS sees_members
FROM fresh o;
DROP EXTENSION journey;

-- The first release, with data in it.
CREATE EXTENSION journey VERSION '0.1';
SELECT extversion FROM pg_extension WHERE extname = 'journey';
SELECT to_regclass('journey.timeline') IS NULL AS no_timeline_in_0_1;
INSERT INTO journey.businesses (id, name, timezone)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'Pipe Dreams', 'America/New_York');
INSERT INTO journey.customers (id, business_id, full_name, email)
VALUES ('00000000-0000-0000-0000-0000000000c1', '00000000-0000-0000-0000-0000000000b1',
        'Ada Lovelace', 'ada@example.com');
-- In flight: written directly, because the library installed is the
-- newest one and its API expects the newest schema (0.3 added versions);
-- the state is what the 0.1 executor left after running step 1.
INSERT INTO journey.sequences (id, business_id, name, status, trigger_event_type)
VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b1',
        'Thanks', 'active', 'invoice_paid');
INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index, wait_ms,
                                    message_config) VALUES
  ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', 'send_email', 1, 0,
   '{"subject": "Thanks", "body": "Hi {{customer.first_name}}"}'),
  ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', 'wait', 2, 60000, '{}');
INSERT INTO journey.sequence_enrollments (id, business_id, sequence_id, customer_id,
                                          current_step_index, next_run_at, enrolled_at)
VALUES ('00000000-0000-0000-0000-0000000000e1', '00000000-0000-0000-0000-0000000000b1',
        '00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000c1',
        2, '2027-01-12 15:01+00', '2027-01-12 15:00+00');
INSERT INTO journey.messages (business_id, enrollment_id, sequence_id, step_index, customer_id,
                              channel, to_address, subject, body, send_after)
VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000e1',
        '00000000-0000-0000-0000-0000000000a1', 1, '00000000-0000-0000-0000-0000000000c1',
        'email', 'ada@example.com', 'Thanks', 'Hi Ada', '2027-01-12 15:00+00');
INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000e1', 1,
        'queued', 'email to ada@example.com', '2027-01-12 15:00+00');
-- A customer deleted under 0.1 left her message outside any enrollment.
INSERT INTO journey.customers (id, business_id, full_name, email)
VALUES ('00000000-0000-0000-0000-0000000000c2', '00000000-0000-0000-0000-0000000000b1',
        'Gone Customer', 'gone@example.com');
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, body)
VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000c2',
        'email', 'gone@example.com', 'Hi');
DELETE FROM journey.customers WHERE id = '00000000-0000-0000-0000-0000000000c2';
-- The new library's events trigger on the old schema: a clear error until
-- the schema is updated, and nothing written.
SELECT pg_temp.try($$INSERT INTO journey.events (business_id, event_type, customer_id)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'page_viewed', '00000000-0000-0000-0000-0000000000c1')$$);
SELECT count(*) AS events FROM journey.events;

ALTER EXTENSION journey UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'journey';
CREATE TEMP TABLE upgraded AS SELECT * FROM pg_temp.journey_objects() o;

-- Identical both ways; any line printed here is a difference.
SELECT 'only in fresh' AS side, o FROM (SELECT * FROM fresh EXCEPT ALL SELECT * FROM upgraded) d(o)
UNION ALL
SELECT 'only in upgraded', o FROM (SELECT * FROM upgraded EXCEPT ALL SELECT * FROM fresh) d(o)
ORDER BY 1, 2;

-- The deleted customer's message went with the upgrade (0.3).
SELECT count(*) AS orphaned_messages FROM journey.messages WHERE to_address = 'gone@example.com';
-- The data survived and the new view tells its story.
SELECT (SELECT count(*) FROM journey.sequences) AS sequences,
       (SELECT count(*) FROM journey.sequence_steps) AS steps,
       (SELECT count(*) FROM journey.sequence_enrollments WHERE current_step_index = 2) AS enrollments_at_step_2,
       (SELECT count(*) FROM journey.messages) AS messages;
SELECT at, step_index, what, detail FROM journey.timeline
WHERE customer_id = '00000000-0000-0000-0000-0000000000c1'
ORDER BY at, phase, ref_id;

-- Everything written before versions is on version 1.
SELECT (SELECT bool_and(version = 1) FROM journey.sequences) AS sequences_v1,
       (SELECT bool_and(version = 1) FROM journey.sequence_steps) AS steps_v1,
       (SELECT bool_and(sequence_version = 1) FROM journey.sequence_enrollments) AS enrollments_v1,
       (SELECT bool_and(sequence_version = 1) FROM journey.enrollment_log) AS log_v1,
       (SELECT bool_and(sequence_version = 1) FROM journey.messages
         WHERE sequence_id IS NOT NULL) AS messages_v1;

-- The enrollment goes on under the new version of the extension, on its
-- journey's version 1, also after a new journey version that keeps it.
SELECT journey.update_sequence('00000000-0000-0000-0000-0000000000a1', $j$
  {"name": "Thanks", "status": "active", "trigger_event_type": "invoice_paid",
   "steps": [{"kind": "send_email", "message": {"subject": "Thanks!", "body": "Hi {{customer.first_name}}"}},
             {"kind": "wait", "wait_ms": 60000},
             {"kind": "send_email", "message": {"subject": "Again", "body": "Hi again"}}]}$j$) AS new_version;
SELECT journey.advance_due_enrollments(100, '2027-01-12 15:01+00') AS advanced;
SELECT status, sequence_version, current_step_index FROM journey.sequence_enrollments;
SELECT count(*) AS messages FROM journey.messages;
SELECT step_index, outcome, sequence_version FROM journey.enrollment_log ORDER BY id;
-- The message written under 0.2 is in its step's funnel.
SELECT version, step_index, reached, queued FROM journey.step_stats
 WHERE sequence_id = '00000000-0000-0000-0000-0000000000a1' ORDER BY version, step_index;

-- Nothing to do from the newest version, and no path to an unknown one.
SELECT pg_temp.try($$ALTER EXTENSION journey UPDATE TO '9.9'$$);
SELECT extversion FROM pg_extension WHERE extname = 'journey';
