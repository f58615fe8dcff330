#!/usr/bin/env bash
# Row-level security at scale: starts a throwaway cluster (test/cluster.sh),
# loads 100 businesses with 1M customers and 1M events, and shows what a tenant's
# queries cost through journey's policies: the plan (which must use the
# business_id index) and pgbench latencies, next to the same queries run
# by the owner with the business filter written out by hand.
#
#   PG_CONFIG=/path/to/pg_config bash test/bench/rls.sh
#
# Run as root it works as the postgres OS user; it installs the extension
# for that PG_CONFIG itself ("make install").  ROWS scales it down.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
rows=${ROWS:-1000000}
businesses=100

make -C "$src" -s PG_CONFIG="$PG_CONFIG" >/dev/null
make -C "$src" -s PG_CONFIG="$PG_CONFIG" install >/dev/null

PG_BIN=$("$PG_CONFIG" --bindir)
# shellcheck source=../cluster.sh
. "$src/test/cluster.sh"
cluster_start "fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
shared_buffers = 256MB"
tmp=$CLUSTER_DIR

psql() { cluster_psql "$@"; }

echo "== loading $businesses businesses, $rows customers, $rows events"
start=$(date +%s)
psql <<SQL
CREATE EXTENSION journey;
CREATE ROLE bench_tenant LOGIN;
GRANT journey_user TO bench_tenant;
INSERT INTO journey.businesses (id, name)
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(b), 12, '0'))::uuid, 'Business ' || b
FROM generate_series(1, $businesses) b;
-- bench_tenant belongs to business 42 only.
INSERT INTO journey.business_members VALUES ('00000000-0000-0000-0000-00000000002a', 'bench_tenant');
INSERT INTO journey.customers (business_id, full_name, email, external_id)
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(1 + g % $businesses), 12, '0'))::uuid,
       'Customer ' || g, 'c' || g || '@example.com', 'ext-' || g
FROM generate_series(1, $rows) g;
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
SELECT c.business_id, 'invoice_paid', c.id, '2030-01-01'::timestamptz + (row_number() OVER () || ' s')::interval
FROM journey.customers c;
VACUUM ANALYZE;
SQL
echo "loaded in $(( $(date +%s) - start )) s"

tenant_query="SELECT count(*) FROM journey.customers WHERE full_name LIKE 'Customer 4%'"
owner_query="SELECT count(*) FROM journey.customers WHERE business_id = '00000000-0000-0000-0000-00000000002a' AND full_name LIKE 'Customer 4%'"
page_query="SELECT id, full_name, email FROM journey.customers ORDER BY business_id, id LIMIT 50"
event_query="SELECT count(*) FROM journey.events WHERE event_type = 'invoice_paid'"
lookup_query="SELECT id FROM journey.customers WHERE external_id = 'ext-4242'"

echo
echo "== rows visible: tenant vs owner"
psql -At <<SQL
SELECT 'owner sees customers: ' || count(*) FROM journey.customers;
SET ROLE bench_tenant;
SELECT 'tenant sees customers: ' || count(*) FROM journey.customers;
SELECT 'tenant sees events: ' || count(*) FROM journey.events;
SQL

for q in "$tenant_query" "$page_query" "$event_query" "$lookup_query"; do
    echo
    echo "== tenant: $q"
    psql -c "SET ROLE bench_tenant" -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY ON) $q"
done
echo
echo "== owner, filter written by hand: $owner_query"
psql -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY ON) $owner_query"

echo
echo "== does every tenant plan use a business_id index?"
for q in "$tenant_query" "$page_query" "$event_query"; do
    plan=$(psql -At -c "SET ROLE bench_tenant" -c "EXPLAIN (COSTS OFF) $q")
    if grep -q "Index Cond: .*business_id = ANY (journey.member_business_ids())" <<<"$plan" &&
       ! grep -q "Seq Scan" <<<"$plan"; then
        echo "yes: $q"
    else
        echo "NO:  $q"; echo "$plan"; status=1
    fi
done

echo
echo "== pgbench, 1 client, 5 s each (latency average)"
bench() {
    local user=$1 q=$2
    echo "$q;" > "$tmp/q.sql"
    chmod a+r "$tmp/q.sql"
    as_postgres "$PG_BIN/pgbench" -n -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U "$user" -c 1 -T 5 \
        -f "$tmp/q.sql" "$CLUSTER_DB" 2>/dev/null |
        grep -E "latency average|tps" | sed "s/^/  /"
}
echo "tenant (policy):          $tenant_query"; bench bench_tenant "$tenant_query"
echo "owner (filter by hand):   $owner_query"; bench postgres "$owner_query"
echo "tenant (policy):          $lookup_query"; bench bench_tenant "$lookup_query"
exit ${status:-0}
