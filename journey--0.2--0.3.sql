-- journey 0.2 -> 0.3: trustworthy journeys.  Each change below is also made
-- by journey--0.3.sql from scratch; sql/upgrade.sql checks that both paths
-- end with identical catalogs and that in-flight data goes on unchanged.

\echo Use "ALTER EXTENSION journey UPDATE TO '0.3'" to load this file. \quit

-- ===== one search_path defence (issue 10) =====
-- Every function that runs queries pins search_path in its declaration,
-- instead of the C code also spelling OPERATOR(pg_catalog.=) everywhere.
ALTER FUNCTION journey.create_sequence(uuid, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.enroll_customer(uuid, uuid, jsonb, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.ingest_event(uuid, text, jsonb, jsonb, text, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.stop_enrollment(uuid, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.match_events() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.member_business_ids() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.create_business(text, text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.schedule_executor(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION journey.unschedule_executor() SET search_path = pg_catalog, pg_temp;
