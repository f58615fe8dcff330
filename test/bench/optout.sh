#!/usr/bin/env bash
# Calls/s of the opt-out entry points with 4 pgbench clients, beside
# ingest_event on the same data (issue 13's target: at least its rate).
#   bash test/bench/optout.sh      (PGBENCH_S seconds per run, default 10)
# 20 businesses with their own SMS numbers, 20,000 customers, 20,000 sent
# messages with provider ids.  Replies are ordinary texts (sms_received
# events) with a fresh MessageSid each; delivery events are Twilio
# "delivered" callbacks for random messages.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../cluster.sh"
PGBENCH_S=${PGBENCH_S:-10}
WORK=$(mktemp -d /tmp/journey-optout-bench.XXXXXX)
chmod 755 "$WORK"
cluster_start "$BENCH_TUNING"
cluster_psql -q <<'SQL'
CREATE EXTENSION journey;
INSERT INTO journey.businesses (id, name)
SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'Business ' || g
  FROM generate_series(1, 20) g;
INSERT INTO journey.providers (business_id, channel, kind, endpoint, from_address)
SELECT id, 'sms', 'webhook', 'http://127.0.0.1:9/', '+1555000' || lpad(right(id::text, 4), 4, '0')
  FROM journey.businesses;
INSERT INTO journey.customers (business_id, full_name, phone, external_id)
SELECT ('00000000-0000-0000-0000-' || lpad((1 + g % 20)::text, 12, '0'))::uuid,
       'Customer ' || g, '+1666' || lpad(g::text, 7, '0'), 'cust-' || g
  FROM generate_series(1, 20000) g;
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, body, status,
                              provider_message_id, sent_at)
SELECT business_id, id, 'sms', phone, 'hi', 'sent', 'SM' || substr(external_id, 6), now()
  FROM journey.customers;
VACUUM ANALYZE;
SQL
cat > "$WORK/event.sql" <<'EOF2'
\set c random(1, 20000)
SELECT journey.ingest_event(('00000000-0000-0000-0000-' || lpad((1 + :c % 20)::text, 12, '0'))::uuid,
       'invoice_paid', jsonb_build_object('external_id', 'cust-' || :c), '{}', NULL, '2027-01-12 15:00+00');
EOF2
cat > "$WORK/inbound.sql" <<'EOF2'
\set c random(1, 20000)
\set k random(1, 1000000000)
SELECT journey.ingest_inbound_sms('+1555000' || lpad((1 + :c % 20)::text, 4, '0'),
       '+1666' || lpad(:c::text, 7, '0'), 'Thanks, see you Tuesday',
       'SMin-' || :client_id || '-' || :k, '2027-01-12 15:00+00');
EOF2
cat > "$WORK/delivery.sql" <<'EOF2'
\set c random(1, 20000)
SELECT journey.ingest_delivery_event('twilio',
       jsonb_build_object('MessageSid', 'SM' || :c, 'MessageStatus', 'delivered'), '2027-01-12 15:00+00');
EOF2
chmod 644 "$WORK"/*.sql
for f in event inbound delivery; do
    as_postgres "$PG_BIN/pgbench" -n -c 4 -j 2 -T "$PGBENCH_S" -f "$WORK/$f.sql" \
        -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres "$CLUSTER_DB" > "$WORK/$f.out" 2>&1 ||
        { cat "$WORK/$f.out"; exit 1; }
    printf '%-10s %s calls/s, %s failed\n' "$f" \
        "$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$WORK/$f.out")" \
        "$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$WORK/$f.out")"
done
cluster_psql -At -c "SELECT 'events ' || count(*) FROM journey.events"
cluster_psql -At -c "SELECT 'deliveries ' || count(*) FROM journey.message_deliveries"
rm -rf "$WORK"
