-- journey 0.2 -> 0.3: trustworthy journeys.  Each change below is also made
-- by journey--0.3.sql from scratch; sql/upgrade.sql checks that both paths
-- end with identical catalogs and that in-flight data goes on unchanged.

\echo Use "ALTER EXTENSION journey UPDATE TO '0.3'" to load this file. \quit
