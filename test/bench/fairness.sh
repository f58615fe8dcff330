#!/usr/bin/env bash
# Fairness benchmark of the sender (issue 12): business A has N messages
# (default 1000) queued for its own provider, whose endpoint hangs; business
# B queues one message every 0.5 s for DURATION seconds (default 20) to a
# healthy endpoint.  Prints B's commit-to-sent latency (p50, p95, max)
# against the target of 2 x journey.http_timeout_ms, how many of A's
# requests were in flight at most at the sink (journey.max_concurrency_per_provider),
# and how many of A's messages the sender held claimed at most.
#
#   PG_CONFIG=... bash test/bench/fairness.sh [N] [DURATION]
#
# Scaled down for a shared 2-core machine: http_timeout_ms = 2000 (so the
# target is 4 s), max_attempts = 1; everything else at its default.  A
# throwaway cluster with durable commits; 127.0.0.1 only.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-1000}
DURATION=${2:-20}
PG_CONFIG=${PG_CONFIG:-pg_config}

if [ "$(id -u)" = 0 ]; then
    make -C "$src" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
    dir=$(mktemp -d /tmp/journey-bench.XXXXXX)
    cp "$src/test/bench/fairness.sh" "$src/test/sinks/http_sink.py" "$dir/"
    chown -R postgres: "$dir"
    exec runuser -u postgres -- env PG_CONFIG="$PG_CONFIG" BENCH_DIR="$dir" \
        bash "$dir/fairness.sh" "$N" "$DURATION"
fi
dir=${BENCH_DIR:-$(mktemp -d /tmp/journey-bench.XXXXXX)}
bin=$("$PG_CONFIG" --bindir)
port=$((20000 + RANDOM % 20000))
sink=$( [ -f "$dir/http_sink.py" ] && echo "$dir/http_sink.py" || echo "$src/test/sinks/http_sink.py")

"$bin/initdb" -D "$dir/data" -A trust >/dev/null
cat >> "$dir/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
shared_preload_libraries = 'journey'
journey.database_name = 'postgres'
journey.http_timeout_ms = 2000
journey.lease_ms = 60000
journey.max_attempts = 1
EOF
"$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
psql() { "$bin/psql" -h "$dir" -p "$port" -X -q -v ON_ERROR_STOP=1 -At postgres "$@"; }
cleanup() {
    [ -n "${sinkpid:-}" ] && kill "$sinkpid" 2>/dev/null || true
    "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

python3 "$sink" "$dir/sink.jsonl" > "$dir/sink.port" &
sinkpid=$!
for _ in $(seq 100); do [ -s "$dir/sink.port" ] && break; sleep 0.1; done
sinkport=$(head -1 "$dir/sink.port")

psql <<SQL
CREATE EXTENSION journey;
INSERT INTO journey.businesses (id, name) VALUES
  ('00000000-0000-0000-0000-00000000000a', 'Hanging provider'),
  ('00000000-0000-0000-0000-00000000000b', 'Healthy provider');
INSERT INTO journey.providers (business_id, channel, kind, endpoint) VALUES
  ('00000000-0000-0000-0000-00000000000a', 'email', 'webhook', 'http://127.0.0.1:$sinkport/hang'),
  ('00000000-0000-0000-0000-00000000000b', 'email', 'webhook', 'http://127.0.0.1:$sinkport/ok');
INSERT INTO journey.messages (business_id, channel, to_address, subject, body)
SELECT '00000000-0000-0000-0000-00000000000a', 'email', 'a' || g || '@example.com', 's', 'b'
  FROM generate_series(1, $N) g;
SQL
echo "A: $N messages queued to a hanging endpoint; B: one message every 0.5 s for ${DURATION} s"
held=0
end=$((SECONDS + DURATION))
while [ $SECONDS -lt $end ]; do
    psql -c "INSERT INTO journey.messages (business_id, channel, to_address, subject, body)
             VALUES ('00000000-0000-0000-0000-00000000000b', 'email', 'b@example.com', 's', 'b')"
    n=$(psql -c "SELECT count(*) FROM journey.messages WHERE business_id = '00000000-0000-0000-0000-00000000000a' AND status = 'sending'")
    [ "$n" -gt "$held" ] && held=$n
    sleep 0.5
done
# Give the last ones up to 10 s.
for _ in $(seq 100); do
    [ "$(psql -c "SELECT count(*) FROM journey.messages WHERE business_id = '00000000-0000-0000-0000-00000000000b' AND status <> 'sent'")" = 0 ] && break
    sleep 0.1
done
psql <<'SQL'
SELECT format('B: %s messages, %s sent; latency ms p50 %s, p95 %s, max %s (target < 4000)',
              count(*), count(sent_at),
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)),
              round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)), round(max(ms)))
  FROM (SELECT sent_at, extract(epoch FROM coalesce(sent_at, now()) - created_at) * 1000 AS ms
          FROM journey.messages WHERE business_id = '00000000-0000-0000-0000-00000000000b') s;
SQL
# Requests to /hang that arrived less than a time limit apart were in
# flight together.
peak=$(python3 - "$dir/sink.jsonl" <<'PY'
import json, sys
ts = sorted(r["t"] for r in map(json.loads, open(sys.argv[1])) if r["path"].startswith("/hang"))
print(max((sum(1 for u in ts if t <= u < t + 1.5) for t in ts), default=0))
PY
)
echo "A: at most $peak requests in flight at the sink (cap 16); at most $held messages claimed (status 'sending')"
