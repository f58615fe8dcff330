-- journey 0.2 -> 0.3: trustworthy journeys.  Each change below is also made
-- by journey--0.3.sql from scratch; sql/upgrade.sql checks that both paths
-- end with identical catalogs and that in-flight data goes on unchanged.

\echo Use "ALTER EXTENSION journey UPDATE TO '0.3'" to load this file. \quit

-- ===== latency: the executor in the sender (issue 16) =====
-- What each sender's executor did since the sender started
-- (src/worker_executor.c): commits that woke it, its passes, the
-- enrollments they advanced, and when it runs next.  Administrators only.
CREATE FUNCTION journey.executor_status(
    OUT datname name, OUT pid integer, OUT enabled boolean, OUT wakeups bigint,
    OUT passes bigint, OUT advanced bigint, OUT last_pass_at timestamptz,
    OUT next_pass_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'journey_executor_status'
LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION journey.executor_status() FROM PUBLIC;
