-- Tenancy and security: privileges, row-level security,
-- create_business, and a hostile tenant refused at every table.
--
-- The regression server's session_user is the bootstrap superuser, which
-- journey.trusted_claim_roles does not list, so after SET ROLE the member is
-- current_user: the direct-SQL-login case.  The PostgREST path (a trusted
-- login role, SET ROLE, request.jwt.claims) and the SET ROLE / SET SESSION
-- AUTHORIZATION tricks need real logins: test/t/030_tenancy_postgrest.pl.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS journey CASCADE;
RESET client_min_messages;
CREATE EXTENSION journey;

-- Roles are cluster-wide: create them idempotently, drop them at the end.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_tenant_a') THEN
        CREATE ROLE regress_tenant_a;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_tenant_b') THEN
        CREATE ROLE regress_tenant_b;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_sender') THEN
        CREATE ROLE regress_sender;
    END IF;
END
$$;
GRANT journey_user TO regress_tenant_a, regress_tenant_b;
GRANT journey_worker TO regress_sender;

-- Runs one statement as the current role and says what happened: the row
-- count when allowed, else the SQLSTATE and message (ids masked).
CREATE SCHEMA regress_tenancy;
GRANT USAGE ON SCHEMA regress_tenancy TO PUBLIC;
CREATE FUNCTION regress_tenancy.try(p_sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE p_sql;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN 'ok, ' || n || ' rows';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' ||
        regexp_replace(SQLERRM, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'g');
END
$$;
-- Not leakproof: shows every row a query's qual is evaluated on.
CREATE FUNCTION regress_tenancy.leak(p_value text) RETURNS boolean
LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    RAISE NOTICE 'leaked: %', p_value;
    RETURN true;
END
$$;
\i test/sql/helpers.sql

-- ===================================================================
-- The privilege model, read from the catalogs
-- ===================================================================

-- Every table has row-level security (the install script's last section
-- enables it on tables other sections add, too).
SELECT c.relname AS table_without_rls
FROM pg_class c
WHERE c.relnamespace = 'journey'::regnamespace AND c.relkind IN ('r', 'p')
  AND NOT c.relrowsecurity
ORDER BY 1;

SELECT tablename, policyname, cmd, roles
FROM pg_policies WHERE schemaname = 'journey'
  AND (roles && '{journey_user, journey_worker}' OR roles = '{public}')
ORDER BY 1, 2;

-- journey_user's table privileges ('col' = only on some columns).
SELECT c.relname,
       has_table_privilege('journey_user', c.oid, 'SELECT') AS sel,
       has_table_privilege('journey_user', c.oid, 'INSERT') AS ins,
       CASE WHEN has_table_privilege('journey_user', c.oid, 'UPDATE') THEN 'all'
            WHEN has_any_column_privilege('journey_user', c.oid, 'UPDATE') THEN 'col'
            ELSE 'no' END AS upd,
       has_table_privilege('journey_user', c.oid, 'DELETE') AS del,
       has_table_privilege('journey_user', c.oid, 'TRUNCATE') AS trunc,
       has_any_column_privilege('journey_user', c.oid, 'REFERENCES') AS refs,
       has_table_privilege('journey_user', c.oid, 'TRIGGER') AS trig
FROM pg_class c
WHERE c.relnamespace = 'journey'::regnamespace AND c.relkind IN ('r', 'S')
  AND c.relname IN ('businesses', 'business_members', 'customers', 'sequences',
                    'sequence_steps', 'sequence_enrollments', 'events', 'messages',
                    'enrollment_log', 'suppressions', 'providers', 'events_id_seq',
                    'messages_id_seq', 'enrollment_log_id_seq', 'templates')
ORDER BY 1;
-- The timeline view: read-only, and read with the reader's own rights, so
-- the tables' policies apply to it.
SELECT c.relname, c.reloptions,
       has_table_privilege('journey_user', c.oid, 'SELECT') AS sel,
       has_table_privilege('journey_user', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') AS write,
       has_table_privilege('journey_worker', c.oid, 'SELECT') AS worker_sel,
       has_table_privilege('public', c.oid, 'SELECT') AS public_sel
FROM pg_class c WHERE c.oid = 'journey.timeline'::regclass;
-- Nothing else in the schema is open to journey_user.
SELECT c.relname AS other_relation_open_to_tenants
FROM pg_class c
WHERE c.relnamespace = 'journey'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND c.relname NOT IN ('businesses', 'business_members', 'customers', 'sequences',
                        'sequence_steps', 'sequence_enrollments', 'events', 'messages',
                        'enrollment_log', 'suppressions', 'timeline', 'queue_stats',
                        'message_deliveries', 'templates')
  AND (has_table_privilege('journey_user', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
       OR has_any_column_privilege('journey_user', c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))
ORDER BY 1;

-- Columns of businesses and sequences a tenant may update.
SELECT table_name, string_agg(column_name, ', ' ORDER BY column_name) AS updatable
FROM information_schema.column_privileges
WHERE table_schema = 'journey' AND grantee = 'journey_user' AND privilege_type = 'UPDATE'
  AND table_name IN ('businesses', 'sequences')
GROUP BY 1 ORDER BY 1;

-- The sender's group role.
SELECT c.relname,
       has_table_privilege('journey_worker', c.oid, 'SELECT') AS sel,
       has_table_privilege('journey_worker', c.oid, 'INSERT') AS ins,
       CASE WHEN has_table_privilege('journey_worker', c.oid, 'UPDATE') THEN 'all'
            WHEN has_any_column_privilege('journey_worker', c.oid, 'UPDATE') THEN 'col'
            ELSE 'no' END AS upd,
       has_table_privilege('journey_worker', c.oid, 'DELETE') AS del
FROM pg_class c
WHERE c.relnamespace = 'journey'::regnamespace AND c.relkind = 'r'
  AND (has_table_privilege('journey_worker', c.oid, 'SELECT, INSERT, UPDATE, DELETE')
       OR has_any_column_privilege('journey_worker', c.oid, 'SELECT, INSERT, UPDATE'))
ORDER BY 1;
SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = 'journey_worker';

-- PUBLIC holds nothing on the schema, its tables, sequences or functions.
SELECT count(*) AS public_grants
FROM (SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE nspname = 'journey'
      UNION ALL
      SELECT (aclexplode(relacl)).grantee FROM pg_class
      WHERE relnamespace = 'journey'::regnamespace
      UNION ALL
      SELECT (aclexplode(coalesce(proacl, acldefault('f', proowner)))).grantee FROM pg_proc
      WHERE pronamespace = 'journey'::regnamespace) g
WHERE grantee = 0;

-- The functions journey_user may call; every other journey function
-- (executor, scheduling, trigger functions, whatever is added later) is
-- denied because the install script revokes PUBLIC's EXECUTE last.
SELECT p.oid::regprocedure AS callable
FROM pg_proc p
WHERE p.pronamespace = 'journey'::regnamespace
  AND has_function_privilege('journey_user', p.oid, 'EXECUTE')
ORDER BY p.oid::regprocedure::text;
SELECT bool_and(NOT has_function_privilege('journey_user', p.oid, 'EXECUTE')) AS all_others_denied,
       bool_and(NOT has_function_privilege('journey_worker', p.oid, 'EXECUTE')) AS worker_denied_too
FROM pg_proc p
WHERE p.pronamespace = 'journey'::regnamespace
  AND p.proname NOT IN ('create_business', 'create_sequence', 'enroll_customer',
                        'ingest_event', 'stop_enrollment', 'render_template',
                        'current_member', 'member_business_ids', 'check_timezone',
                        'forget_customer', 'create_template', 'update_sequence',
                        -- opt-outs (issue 13): CHECK and index helpers,
                        -- the caps' API, the unsubscribe link and the
                        -- worker's List-Unsubscribe header
                        'frequency_caps_valid', 'normalize_phone', 'set_frequency_caps',
                        'unsubscribe', 'unsubscribe_link', 'simulate',
                        -- hardening (issue 12): a CHECK's helper
                        'exit_event_types_are_valid');
SELECT p.oid::regprocedure AS callable_by_worker
FROM pg_proc p
WHERE p.pronamespace = 'journey'::regnamespace
  AND has_function_privilege('journey_worker', p.oid, 'EXECUTE')
ORDER BY p.oid::regprocedure::text;
SELECT count(*) AS executor_callable_by_tenants
FROM pg_proc p
WHERE p.pronamespace = 'journey'::regnamespace
  AND p.proname IN ('advance_due_enrollments', 'schedule_executor', 'unschedule_executor')
  AND has_function_privilege('journey_user', p.oid, 'EXECUTE');

-- Every SECURITY DEFINER function pins search_path (none exist today: the
-- API functions are SECURITY INVOKER and switch to the owner in C, with
-- search_path pinned meanwhile).
SELECT p.oid::regprocedure AS definer_without_search_path
FROM pg_proc p
WHERE p.pronamespace = 'journey'::regnamespace AND p.prosecdef
  AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%');

-- Every function that runs queries pins search_path in its declaration:
-- journey's one defence against capture.  Those listed run no query; a new
-- function missing the pin shows up here.
SELECT p.oid::regprocedure AS runs_no_query_so_unpinned
FROM pg_proc p
WHERE p.pronamespace = 'journey'::regnamespace
  AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c
                  WHERE c = 'search_path=pg_catalog, pg_temp')
ORDER BY p.oid::regprocedure::text;

-- Every tenant table has an index leading with business_id (id for
-- businesses), so the policies' "business_id = ANY (...)" is an index scan.
SELECT c.relname AS table_without_business_index
FROM pg_class c
WHERE c.relnamespace = 'journey'::regnamespace AND c.relkind = 'r'
  -- not tenant tables: admin-only, of no one business (issues 11, 13)
  AND c.relname NOT IN ('installation', 'inbound_sms', 'unsubscribe_secret', 'delivery_pending')
  AND NOT EXISTS (
      SELECT 1 FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
      WHERE i.indrelid = c.oid
        AND a.attname = CASE c.relname WHEN 'businesses' THEN 'id' ELSE 'business_id' END)
ORDER BY 1;

-- ===================================================================
-- Signing up
-- ===================================================================
SET ROLE regress_tenant_a;
SELECT journey.current_member();
SELECT journey.create_business('Alpha Plumbing', 'America/Chicago',
                               'https://g.page/r/alpha/review') AS business_a \gset
SELECT journey.create_business('Alpha Two') AS business_a2 \gset
SELECT name, timezone, google_review_url, created_by FROM journey.businesses ORDER BY name;
SELECT member, business_id = :'business_a' AS is_a FROM journey.business_members ORDER BY 2 DESC;
SELECT pg_catalog.array_length(journey.member_business_ids(), 1) AS my_businesses;
-- Refused sign-ups write nothing.
SELECT journey.create_business(NULL);
SELECT journey.create_business('   ');
SELECT journey.create_business(repeat('x', 201));
SELECT journey.create_business('Alpha', NULL);
SELECT journey.create_business('Alpha', 'Mars/Olympus_Mons');
SELECT journey.create_business('Alpha', '+05:00');
SELECT journey.create_business('Alpha', 'UTC', 'javascript:alert(1)');
SELECT journey.create_business('Alpha', 'UTC', 'https://g.page/r/a b');
SELECT count(*) AS businesses FROM journey.businesses;
RESET ROLE;

SET ROLE regress_tenant_b;
SELECT journey.create_business('Bravo Dental') AS business_b \gset
-- What a tenant may do in its own business.
INSERT INTO journey.customers (business_id, full_name, email, external_id)
VALUES (:'business_b', 'Betty Bravo', 'betty@example.com', 'b-1') RETURNING full_name;
UPDATE journey.customers SET phone = '+15550001' WHERE external_id = 'b-1';
INSERT INTO journey.events (business_id, event_type, customer_id)
SELECT business_id, 'invoice_paid', id FROM journey.customers WHERE external_id = 'b-1'
RETURNING id > 0 AS has_id;
INSERT INTO journey.suppressions (business_id, channel, address, reason)
VALUES (:'business_b', 'email', 'no@example.com', 'unsubscribed');
UPDATE journey.businesses SET phone = '+15550000' WHERE id = :'business_b';
SELECT name, phone FROM journey.businesses;
RESET ROLE;

-- Rows only the engine writes, put in place for B by the owner.
INSERT INTO journey.sequences (id, business_id, name, status, trigger_event_type, allow_manual_enroll)
VALUES ('00000000-0000-0000-0000-0000000000b1', :'business_b', 'Bravo follow-up', 'active', 'invoice_paid', true);
INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index, message_config)
VALUES (:'business_b', '00000000-0000-0000-0000-0000000000b1', 'send_email', 1,
        '{"subject": "Hi", "body": "Thanks"}');
INSERT INTO journey.sequence_enrollments (id, business_id, sequence_id, customer_id, next_run_at, enrolled_at)
SELECT '00000000-0000-0000-0000-0000000000e1', :'business_b', '00000000-0000-0000-0000-0000000000b1',
       id, '2030-01-01', '2030-01-01'
FROM journey.customers WHERE external_id = 'b-1';
-- Due in 2030: the sender preloaded in this instance must not deliver it.
INSERT INTO journey.messages (business_id, enrollment_id, sequence_id, step_index, customer_id,
                              channel, message_purpose, to_address, subject, body, send_after)
SELECT :'business_b', e.id, e.sequence_id, 1, e.customer_id, 'email', 'thank_you',
       'betty@example.com', 'Hi', 'Thanks', '2030-01-01'
FROM journey.sequence_enrollments e WHERE e.id = '00000000-0000-0000-0000-0000000000e1';
INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, at)
VALUES (:'business_b', '00000000-0000-0000-0000-0000000000e1', 1, 'queued', '2030-01-01');
INSERT INTO journey.providers (business_id, channel, kind, endpoint, credentials)
VALUES (:'business_b', 'email', 'webhook', 'https://hooks.example.com/b', 'secret-token-b');
SELECT id AS customer_b FROM journey.customers WHERE external_id = 'b-1' \gset
SELECT pg_temp.fingerprint(:'business_b') AS before_attacks \gset

-- ===================================================================
-- A hostile tenant (A) against B.  Each line is one attempt; reads
-- return no rows, writes fail with 42501 (or touch no row).
-- ===================================================================
SET ROLE regress_tenant_a;
-- Reads: B's rows are invisible in every tenant table; providers refused.
SELECT 'businesses' AS t, count(*) FROM journey.businesses WHERE id = :'business_b'
UNION ALL SELECT 'business_members', count(*) FROM journey.business_members WHERE business_id = :'business_b'
UNION ALL SELECT 'customers', count(*) FROM journey.customers WHERE business_id = :'business_b'
UNION ALL SELECT 'customers by id', count(*) FROM journey.customers WHERE id = :'customer_b'
UNION ALL SELECT 'sequences', count(*) FROM journey.sequences WHERE business_id = :'business_b'
UNION ALL SELECT 'sequence_steps', count(*) FROM journey.sequence_steps WHERE business_id = :'business_b'
UNION ALL SELECT 'sequence_enrollments', count(*) FROM journey.sequence_enrollments WHERE business_id = :'business_b'
UNION ALL SELECT 'events', count(*) FROM journey.events WHERE business_id = :'business_b'
UNION ALL SELECT 'messages', count(*) FROM journey.messages WHERE business_id = :'business_b'
UNION ALL SELECT 'enrollment_log', count(*) FROM journey.enrollment_log WHERE business_id = :'business_b'
UNION ALL SELECT 'suppressions', count(*) FROM journey.suppressions WHERE business_id = :'business_b'
UNION ALL SELECT 'timeline', count(*) FROM journey.timeline WHERE business_id = :'business_b'
UNION ALL SELECT 'timeline by enrollment', count(*) FROM journey.timeline WHERE enrollment_id = '00000000-0000-0000-0000-0000000000e1';
SELECT regress_tenancy.try('SELECT * FROM journey.providers') AS read_providers;
SELECT regress_tenancy.try('SELECT credentials FROM journey.providers WHERE business_id IS NOT NULL') AS read_credentials;
-- A leaky function in a query sees no row of B either: the policy is
-- applied before any qual that is not leakproof.
SELECT count(*) AS leaked FROM journey.customers
WHERE regress_tenancy.leak(full_name || ' ' || coalesce(email, ''));
SELECT count(*) AS leaked FROM journey.messages
WHERE regress_tenancy.leak(to_address || ' ' || body);

-- Writes into B.
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.customers (business_id, full_name) VALUES (%L, ''Mallory'')', :'business_b')) AS insert_customer;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.events (business_id, event_type) VALUES (%L, ''invoice_paid'')', :'business_b')) AS insert_event;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.events (business_id, event_type, customer_id) VALUES (%L, ''invoice_paid'', %L)',
    :'business_a', :'customer_b')) AS insert_event_for_their_customer;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.suppressions (business_id, channel, address) VALUES (%L, ''email'', ''x@example.com'')',
    :'business_b')) AS insert_suppression;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.business_members (business_id, member) VALUES (%L, current_user)', :'business_b')) AS join_their_business;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.business_members (business_id, member) VALUES (%L, ''regress_tenant_b'')', :'business_a')) AS add_member_to_own;
SELECT regress_tenancy.try(
    'INSERT INTO journey.businesses (name) VALUES (''Shadow'')') AS insert_business;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.sequences (business_id, name) VALUES (%L, ''x'')', :'business_a')) AS insert_sequence;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index) VALUES (%L, %L, ''wait'', 9)',
    :'business_b', '00000000-0000-0000-0000-0000000000b1')) AS insert_step;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, next_run_at, enrolled_at) VALUES (%L, %L, %L, now(), now())',
    :'business_b', '00000000-0000-0000-0000-0000000000b1', :'customer_b')) AS insert_enrollment;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.messages (business_id, channel, to_address, body) VALUES (%L, ''email'', ''victim@example.com'', ''spam'')',
    :'business_a')) AS queue_own_message;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.enrollment_log (business_id, enrollment_id, outcome, at) VALUES (%L, %L, ''queued'', now())',
    :'business_b', '00000000-0000-0000-0000-0000000000e1')) AS insert_log;
SELECT regress_tenancy.try(
    'INSERT INTO journey.providers (channel, kind, endpoint) VALUES (''email'', ''webhook'', ''https://evil.example.com'')') AS insert_provider;

-- Updates and deletes of B's rows touch nothing.
SELECT regress_tenancy.try(format(
    'UPDATE journey.businesses SET name = ''Owned'' WHERE id = %L', :'business_b')) AS update_their_business;
SELECT regress_tenancy.try(format(
    'UPDATE journey.customers SET email = ''me@evil.example.com'' WHERE id = %L', :'customer_b')) AS update_their_customer;
SELECT regress_tenancy.try(format(
    'UPDATE journey.sequences SET status = ''paused'' WHERE business_id = %L', :'business_b')) AS pause_their_sequence;
SELECT regress_tenancy.try(format(
    'UPDATE journey.suppressions SET reason = ''x'' WHERE business_id = %L', :'business_b')) AS update_their_suppression;
SELECT regress_tenancy.try(format(
    'DELETE FROM journey.customers WHERE id = %L', :'customer_b')) AS delete_their_customer;
SELECT regress_tenancy.try(format(
    'DELETE FROM journey.suppressions WHERE business_id = %L', :'business_b')) AS delete_their_suppression;
SELECT regress_tenancy.try(format(
    'DELETE FROM journey.sequences WHERE business_id = %L', :'business_b')) AS delete_their_sequence;
SELECT regress_tenancy.try(format(
    'DELETE FROM journey.businesses WHERE id = %L', :'business_b')) AS delete_their_business;
SELECT regress_tenancy.try(
    'DELETE FROM journey.business_members') AS delete_memberships;
SELECT regress_tenancy.try(
    'UPDATE journey.messages SET to_address = ''me@evil.example.com''') AS redirect_messages;
SELECT regress_tenancy.try(
    'DELETE FROM journey.events') AS delete_events;
SELECT regress_tenancy.try(
    'DELETE FROM journey.enrollment_log') AS delete_log;

-- Moving own rows into B.
INSERT INTO journey.customers (business_id, full_name, external_id)
VALUES (:'business_a', 'Arnold Alpha', 'a-1');
INSERT INTO journey.suppressions (business_id, channel, address)
VALUES (:'business_a', 'sms', '+15550002');
SELECT regress_tenancy.try(format(
    'UPDATE journey.customers SET business_id = %L WHERE external_id = ''a-1''', :'business_b')) AS move_customer;
SELECT regress_tenancy.try(format(
    'UPDATE journey.suppressions SET business_id = %L WHERE business_id = %L', :'business_b', :'business_a')) AS move_suppression;
SELECT regress_tenancy.try(format(
    'UPDATE journey.businesses SET id = %L WHERE id = %L', :'business_b', :'business_a')) AS rekey_business;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.customers (id, business_id, full_name) '
    'SELECT id, business_id, full_name FROM journey.customers WHERE external_id = ''a-1'' '
    'ON CONFLICT (id) DO UPDATE SET business_id = %L', :'business_b')) AS upsert_own_into_theirs;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.customers (id, business_id, full_name) VALUES (%L, %L, ''Mallory'') '
    'ON CONFLICT (id) DO UPDATE SET email = ''me@evil.example.com''', :'customer_b', :'business_a')) AS upsert_over_theirs;

-- Signing up, then trying to join B through the membership table.
SELECT journey.create_business('Alpha Three') IS NOT NULL AS signed_up;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.business_members (business_id, member) VALUES (%L, ''regress_tenant_a'')', :'business_b')) AS join_after_signup;
SELECT regress_tenancy.try(format(
    'UPDATE journey.business_members SET business_id = %L', :'business_b')) AS move_membership;

-- DDL-level privileges.
SELECT regress_tenancy.try('TRUNCATE journey.customers') AS truncate_customers;
SELECT regress_tenancy.try('TRUNCATE journey.events') AS truncate_events;
SELECT regress_tenancy.try(
    'CREATE TRIGGER evil AFTER INSERT ON journey.events FOR EACH ROW EXECUTE FUNCTION journey.touch_updated_at()') AS create_trigger;
SELECT regress_tenancy.try('ALTER TABLE journey.customers DISABLE ROW LEVEL SECURITY') AS disable_rls;
SELECT regress_tenancy.try(
    'CREATE POLICY mine ON journey.customers USING (true)') AS create_policy;
SELECT regress_tenancy.try('ALTER TABLE journey.customers OWNER TO regress_tenant_a') AS take_ownership;
SELECT regress_tenancy.try('GRANT journey_worker TO regress_tenant_a') AS grant_self_worker;
SELECT regress_tenancy.try('SET journey.trusted_claim_roles = ''regress_tenant_a''') AS trust_self;
SELECT regress_tenancy.try('SELECT journey.touch_updated_at()') AS call_trigger_function;
SELECT regress_tenancy.try(format('SELECT nextval(%L)', pg_get_serial_sequence('journey.events', 'id'))) AS nextval_events;

-- Forged claims on a direct login are ignored: the member stays current_user.
SET request.jwt.claims = '{"sub": "regress_tenant_b", "role": "authenticated"}';
SET request.jwt.claim.sub = 'regress_tenant_b';
SELECT journey.current_member();
SELECT count(*) AS b_rows_seen FROM journey.customers WHERE business_id = :'business_b';
RESET request.jwt.claims;
RESET request.jwt.claim.sub;

-- The API, naming B's objects: refused before anything is written (a
-- business: 42501; any other object: exactly the answer of a missing id).
SELECT regress_tenancy.try(format(
    'SELECT journey.create_sequence(%L, ''{"name": "x", "status": "active", "steps": [{"kind": "wait", "wait_ms": 0}]}'')',
    :'business_b')) AS create_sequence_in_theirs;
SELECT regress_tenancy.try(
    'SELECT journey.create_sequence(''00000000-0000-0000-0000-00000000dead'', ''{"name": "x", "steps": [{"kind": "wait"}]}'')')
    AS create_sequence_in_unknown;
SELECT regress_tenancy.try(format(
    'SELECT journey.ingest_event(%L, ''invoice_paid'', %L)',
    :'business_b', jsonb_build_object('id', :'customer_b'))) AS ingest_into_theirs;
SELECT regress_tenancy.try(format(
    'SELECT journey.ingest_event(%L, ''invoice_paid'', ''{"external_id": "m-1", "full_name": "Mal"}'')',
    :'business_b')) AS ingest_new_customer_into_theirs;
SELECT regress_tenancy.try(format(
    'SELECT journey.enroll_customer(%L, %L)',
    '00000000-0000-0000-0000-0000000000b1', :'customer_b')) AS enroll_in_theirs;
SELECT regress_tenancy.try(format(
    'SELECT journey.stop_enrollment(%L, ''mine now'')',
    '00000000-0000-0000-0000-0000000000e1')) AS stop_theirs;
-- An id the caller may not see answers exactly as a missing one (0.3).
SELECT regress_tenancy.try(format(
    'SELECT journey.enroll_customer(%L, %L)',
    '00000000-0000-0000-0000-0000000000b1', :'customer_b'))
  = replace(regress_tenancy.try(format(
    'SELECT journey.enroll_customer(%L, %L)',
    '00000000-0000-0000-0000-00000000dead', :'customer_b')), '00000000-0000-0000-0000-00000000dead',
    '00000000-0000-0000-0000-0000000000b1') AS enroll_foreign_same_as_missing;
SELECT regress_tenancy.try(format(
    'SELECT journey.stop_enrollment(%L, ''mine now'')',
    '00000000-0000-0000-0000-0000000000e1'))
  = replace(regress_tenancy.try(format(
    'SELECT journey.stop_enrollment(%L, ''mine now'')',
    '00000000-0000-0000-0000-00000000dead')), '00000000-0000-0000-0000-00000000dead',
    '00000000-0000-0000-0000-0000000000e1') AS stop_foreign_same_as_missing;
-- Own objects mixed with B's: a customer of another business answers
-- 22023, as a missing one does (the call writes nothing either).
SELECT journey.create_sequence(:'business_a',
    '{"name": "Alpha thanks", "status": "active", "allow_manual_enroll": true,
      "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
      "steps": [{"kind": "wait", "wait_ms": 3600000},
                {"kind": "send_email", "message": {"subject": "Hi", "body": "Thanks"}}]}') AS sequence_a \gset
SELECT regress_tenancy.try(format(
    'SELECT journey.enroll_customer(%L, %L)', :'sequence_a', :'customer_b')) AS enroll_their_customer_in_mine;
SELECT regress_tenancy.try(format(
    'SELECT journey.ingest_event(%L, ''invoice_paid'', %L)',
    :'business_a', jsonb_build_object('id', :'customer_b'))) AS ingest_their_customer_into_mine;
SELECT count(*) AS a_enrollments FROM journey.sequence_enrollments;

-- search_path capture: A owns a schema and shadows functions and operators
-- an owner-run query might name unqualified; none of them ever runs.
RESET ROLE;
CREATE SCHEMA regress_evil AUTHORIZATION regress_tenant_a;
CREATE TABLE regress_evil.pwned (who text, what text);
ALTER TABLE regress_evil.pwned OWNER TO regress_tenant_a;
GRANT INSERT ON regress_evil.pwned TO PUBLIC;
SET ROLE regress_tenant_a;
CREATE FUNCTION regress_evil.record(what text) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO regress_evil.pwned VALUES (current_user, what) $$;
CREATE FUNCTION regress_evil.now() RETURNS timestamptz LANGUAGE plpgsql
    AS $$ BEGIN PERFORM regress_evil.record('now'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION regress_evil.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql
    AS $$ BEGIN PERFORM regress_evil.record('gen_random_uuid'); RETURN pg_catalog.gen_random_uuid(); END $$;
CREATE FUNCTION regress_evil.lower(text) RETURNS text LANGUAGE plpgsql
    AS $$ BEGIN PERFORM regress_evil.record('lower'); RETURN pg_catalog.lower($1); END $$;
CREATE FUNCTION regress_evil.uuid_eq(uuid, uuid) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN PERFORM regress_evil.record('uuid ='); RETURN pg_catalog.uuid_eq($1, $2); END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = regress_evil.uuid_eq);
CREATE FUNCTION regress_evil.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN PERFORM regress_evil.record('text ='); RETURN pg_catalog.texteq($1, $2); END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.text_eq);
CREATE FUNCTION regress_evil.count_step(bigint) RETURNS bigint LANGUAGE plpgsql
    AS $$ BEGIN PERFORM regress_evil.record('count'); RETURN $1 + 1; END $$;
CREATE AGGREGATE regress_evil.count(*) (SFUNC = regress_evil.count_step, STYPE = bigint, INITCOND = '0');
CREATE FUNCTION regress_evil.max_step(timestamptz, timestamptz) RETURNS timestamptz LANGUAGE plpgsql
    AS $$ BEGIN PERFORM regress_evil.record('max'); RETURN greatest($1, $2); END $$;
CREATE AGGREGATE regress_evil.max(timestamptz) (SFUNC = regress_evil.max_step, STYPE = timestamptz);
CREATE TABLE regress_evil.business_members (business_id uuid, member text);
INSERT INTO regress_evil.business_members VALUES (:'business_b', 'regress_tenant_a');
CREATE FUNCTION pg_temp.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql
    AS $$ BEGIN PERFORM regress_evil.record('pg_temp.gen_random_uuid'); RETURN pg_catalog.gen_random_uuid(); END $$;
-- REFERENCES (a foreign key would let A probe B's ids and block deletes).
SELECT regress_tenancy.try(
    'CREATE TABLE regress_evil.probe (c uuid REFERENCES journey.customers (id))') AS references_customers;
SELECT regress_tenancy.try(
    'CREATE TABLE regress_evil.probe (c uuid REFERENCES journey.businesses (id))') AS references_businesses;
-- The shadows do capture unqualified names on this search_path:
SET search_path = regress_evil, pg_catalog;
SELECT lower('X') AS captured;
SELECT count(*) AS captured_calls FROM regress_evil.pwned;
TRUNCATE regress_evil.pwned;
-- ... but not journey's: policies, CHECKs, create_business, member look-ups.
SELECT journey.create_business('Alpha Four', 'Europe/Paris') IS NOT NULL AS signed_up;
SELECT count(*) AS b_rows_seen FROM journey.customers
WHERE business_id OPERATOR(pg_catalog.=) :'business_b';
SELECT :'business_b'::uuid OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()) AS believes_member_of_b;
INSERT INTO journey.customers (business_id, full_name, timezone)
VALUES (:'business_a', 'Zed', 'Europe/Paris');
-- The engine's owner-run statements (sequence writes, customer upserts,
-- the events trigger's enroll and exit matching, stopping).
SELECT journey.create_sequence(:'business_a',
    '{"name": "Alpha review", "status": "active", "allow_manual_enroll": true,
      "trigger_event_type": "job_done", "exit_event_types": ["review_left"],
      "steps": [{"kind": "wait", "wait_ms": 60000},
                {"kind": "send_sms", "message": {"body": "Review us: {{review_link}}"}}]}') IS NOT NULL AS created;
SELECT journey.ingest_event(:'business_a', 'job_done',
    '{"external_id": "a-9", "full_name": "Ann Alpha", "phone": "+15550009"}',
    p_idempotency_key => 'job-9', p_occurred_at => '2030-01-01 10:00+00') > 0 AS ingested;
SELECT journey.ingest_event(:'business_a', 'job_done', '{"external_id": "a-9"}',
    p_idempotency_key => 'job-9') > 0 AS ingested_again;
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
SELECT business_id, 'review_left', id, '2030-01-01 11:00+00' FROM journey.customers
WHERE external_id OPERATOR(pg_catalog.=) 'a-9';
SELECT journey.enroll_customer(:'sequence_a', id) IS NOT NULL AS enrolled
FROM journey.customers WHERE external_id OPERATOR(pg_catalog.=) 'a-9';
SELECT journey.stop_enrollment(e.id, 'test') FROM journey.sequence_enrollments e
WHERE e.sequence_id OPERATOR(pg_catalog.=) :'sequence_a';
SELECT status, stop_reason FROM journey.sequence_enrollments ORDER BY stop_reason;
SET search_path = pg_temp, regress_evil, pg_catalog;
SELECT journey.create_business('Alpha Five') IS NOT NULL AS signed_up;
RESET search_path;
SELECT who, what AS evil_calls FROM regress_evil.pwned;
DROP FUNCTION pg_temp.gen_random_uuid();
RESET ROLE;

-- Nothing of B changed, and A's refused writes left no trace.
SELECT pg_temp.fingerprint(:'business_b') = :'before_attacks' AS b_untouched;
SELECT count(*) AS b_customers, bool_and(email = 'betty@example.com') AS email_kept
FROM journey.customers WHERE business_id = :'business_b';
SELECT (SELECT count(*) FROM journey.business_members WHERE business_id = :'business_b') AS b_members,
       (SELECT count(*) FROM journey.sequence_steps WHERE business_id = :'business_b') AS b_steps,
       (SELECT count(*) FROM journey.sequence_enrollments WHERE business_id = :'business_b') AS b_enrollments,
       (SELECT count(*) FROM journey.events WHERE business_id = :'business_b') AS b_events,
       (SELECT count(*) FROM journey.messages WHERE business_id = :'business_b') AS b_messages,
       (SELECT count(*) FROM journey.enrollment_log WHERE business_id = :'business_b') AS b_log_rows,
       (SELECT count(*) FROM journey.suppressions WHERE business_id = :'business_b') AS b_suppressions,
       (SELECT count(*) FROM journey.providers) AS providers,
       (SELECT name FROM journey.businesses WHERE id = :'business_b') AS b_name;
-- B itself reads its whole timeline through the view A saw nothing of.
SET ROLE regress_tenant_b;
SELECT what, step_index, detail FROM journey.timeline
WHERE enrollment_id = '00000000-0000-0000-0000-0000000000e1' ORDER BY at, phase, ref_id;
RESET ROLE;

-- ===================================================================
-- The sender's role: a non-superuser without BYPASSRLS that does what
-- the worker needs for every business, and nothing else.
-- ===================================================================
SET ROLE regress_sender;
SELECT count(*) AS queued_seen FROM journey.messages WHERE status = 'queued';
SELECT count(*) AS claimed FROM (
    SELECT id FROM journey.messages WHERE status = 'queued' FOR UPDATE SKIP LOCKED) c;
UPDATE journey.messages SET status = 'sent', sent_at = '2030-01-01', attempts = attempts + 1
WHERE status = 'queued';
SELECT kind, credentials FROM journey.providers;
SELECT name FROM journey.businesses ORDER BY name;
UPDATE journey.customers SET last_review_request_at = '2030-01-01' WHERE id = :'customer_b';
SELECT regress_tenancy.try('UPDATE journey.customers SET email = ''x@example.com''') AS sender_rewrites_customer;
SELECT regress_tenancy.try(format(
    'INSERT INTO journey.messages (business_id, channel, to_address, body) VALUES (%L, ''sms'', ''+1'', ''x'')',
    :'business_b')) AS sender_queues;
SELECT regress_tenancy.try('DELETE FROM journey.messages') AS sender_deletes;
SELECT regress_tenancy.try('SELECT * FROM journey.enrollment_log') AS sender_reads_log;
SELECT regress_tenancy.try('UPDATE journey.providers SET enabled = false') AS sender_edits_provider;
SELECT regress_tenancy.try(format(
    'SELECT journey.create_sequence(%L, ''{}'')', :'business_b')) AS sender_uses_api;
RESET ROLE;

-- Clean up the cluster-wide roles (they own nothing journey keeps).
DROP SCHEMA regress_evil CASCADE;
DROP SCHEMA regress_tenancy CASCADE;
DROP ROLE regress_tenant_a, regress_tenant_b, regress_sender;
