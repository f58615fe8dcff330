-- The schema: tables, keys, cascades, time zone validation, updated_at.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SELECT count(*) AS tables FROM pg_tables WHERE schemaname = 'journey';
