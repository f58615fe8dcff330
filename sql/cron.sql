-- pg_cron scheduling of the executor: one job named journey-executor,
-- replaced on rescheduling, removed by unschedule and by DROP EXTENSION.
DROP EXTENSION IF EXISTS journey CASCADE;
DROP EXTENSION IF EXISTS pg_cron;
CREATE EXTENSION journey;
\i test/sql/helpers.sql

-- Without pg_cron in this database: an error whose hint is the call to run instead.
SELECT pg_temp.try($$SELECT journey.schedule_executor()$$);
SELECT pg_temp.try($$SELECT journey.unschedule_executor()$$);
-- The install script scheduled nothing.
CREATE EXTENSION pg_cron;
SELECT count(*) AS jobs FROM cron.job;

SELECT journey.schedule_executor() AS first_job \gset
SELECT jobname, schedule, command, database = current_database() AS here FROM cron.job;
-- rescheduling replaces the job: still one, same id, new schedule
SELECT journey.schedule_executor('*/5 * * * *') = :first_job AS same_job;
SELECT jobname, schedule FROM cron.job;

SELECT pg_temp.try($$SELECT journey.schedule_executor('5 seconds')$$);
SELECT pg_temp.try($$SELECT journey.schedule_executor('every minute')$$);
SELECT pg_temp.try($$SELECT journey.schedule_executor(NULL)$$);
SELECT schedule AS unchanged FROM cron.job;

SELECT journey.unschedule_executor() AS removed;
SELECT journey.unschedule_executor() AS removed_again;
SELECT count(*) AS jobs FROM cron.job;

-- Dropping the extension removes its job, and only its job.
SELECT journey.schedule_executor() IS NOT NULL AS scheduled;
SELECT cron.schedule('someone-else', '0 3 * * *', 'SELECT 1') IS NOT NULL AS other_job;
DROP EXTENSION journey;
SELECT jobname FROM cron.job ORDER BY jobname;
SELECT cron.unschedule('someone-else');
DROP EXTENSION pg_cron;
