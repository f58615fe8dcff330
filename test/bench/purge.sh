#!/usr/bin/env bash
# Measures journey.purge: N enrollment_log rows, N sent messages and N events,
# all older than the cutoff, on a throwaway server in $DIR (run as the
# postgres OS user, with the extension installed for the PostgreSQL in
# PATH); prints the rows purged, the time the call (its one transaction)
# took, and how long a concurrent write of messages took meanwhile.
#   N=200000 DIR=/tmp/purge-bench bash test/bench/purge.sh
set -e
DIR=${DIR:-/tmp/purge-bench}; mkdir -p "$DIR"
D=$DIR/data; N=${N:-200000}
rm -rf $D; initdb -D $D -A trust >/dev/null
cat >> $D/postgresql.conf <<C
port = 25871
unix_socket_directories = '$DIR'
listen_addresses = ''
shared_buffers = 256MB
max_wal_size = 4GB
C
pg_ctl -D $D -l $DIR/log -w start >/dev/null
P="psql -X -q -h $DIR -p 25871 -d postgres -v ON_ERROR_STOP=1"
$P <<SQL
CREATE EXTENSION journey;
INSERT INTO journey.businesses (id, name) VALUES ('00000000-0000-0000-0000-0000000000b1', 'B');
INSERT INTO journey.customers (business_id, full_name, email)
SELECT '00000000-0000-0000-0000-0000000000b1', 'C' || g, 'c' || g || '@x.com' FROM generate_series(1, 1000) g;
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "S", "status": "active",
  "steps": [{"kind": "wait", "wait_ms": 0}]}') AS seq \gset
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, status, finished_at, enrolled_at)
SELECT business_id, :'seq', id, 'finished', '2025-01-01', '2025-01-01' FROM journey.customers;
INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
SELECT e.business_id, e.id, 1, 'queued', 'message #' || g, '2025-01-01'::timestamptz + g * interval '1 second'
FROM journey.sequence_enrollments e, generate_series(1, $N / 1000) g;
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, subject, body, status, send_after, sent_at)
SELECT c.business_id, c.id, 'email', c.email, 'Hi', 'Body of a message', 'sent', '2025-01-01', '2025-01-01'
FROM journey.customers c, generate_series(1, $N / 1000) g;
INSERT INTO journey.events (business_id, event_type, customer_id, payload, idempotency_key, occurred_at)
SELECT c.business_id, 'paid', c.id, '{"n": 1}', c.id || '-' || g, '2025-01-01'
FROM journey.customers c, generate_series(1, $N / 1000) g;
VACUUM ANALYZE;
SQL
$P -c "SELECT (SELECT count(*) FROM journey.enrollment_log) AS log, (SELECT count(*) FROM journey.messages) AS msgs, (SELECT count(*) FROM journey.events) AS events"
# A concurrent session: how long does a tenant-style write wait while purge runs?
( sleep 2; $P -c "\timing on" -c "INSERT INTO journey.messages (business_id, channel, to_address, body) VALUES ('00000000-0000-0000-0000-0000000000b1', 'email', 'z@x.com', 'new'); UPDATE journey.messages SET status = 'cancelled' WHERE to_address = 'z@x.com'" ) > $DIR/concurrent.txt 2>&1 &
$P -c "\timing on" -c "SELECT journey.purge('180 days', '2026-12-01')"
wait
cat $DIR/concurrent.txt
pg_ctl -D $D -m fast stop >/dev/null
