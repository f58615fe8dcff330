#!/usr/bin/env bash
# Benchmark of the sender: drains N queued messages (default 100000) to a
# local keep-alive HTTP sink (test/sinks/fast_sink.c) and prints throughput,
# commit-to-delivery latency while draining, the latency of one message on
# an idle system, the sender's memory, and that no request failed.
#
#   PG_CONFIG=... bash test/bench/sender.sh [N]
#
# Starts a throwaway cluster (test/cluster.sh; as the postgres OS user when
# run as root), with durable commits (fsync and synchronous_commit on) and the
# open-file limit at 1024, the usual Linux default.  Talks to 127.0.0.1 only.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-100000}
PG_CONFIG=${PG_CONFIG:-pg_config}

[ "$(id -u)" = 0 ] && make -C "$src" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
PG_BIN=$("$PG_CONFIG" --bindir)
# shellcheck source=../cluster.sh
. "$src/test/cluster.sh"
sinkport=$((20000 + RANDOM % 20000))

ulimit -n 1024
echo "open-file limit (soft) for the server and the sink: $(ulimit -n)"
echo "cores: $(nproc)"

cluster_start "fsync = on
synchronous_commit = on
shared_buffers = 256MB
max_wal_size = 4GB"
dir=$CLUSTER_DIR
psql() { cluster_psql -At "$@"; }
cleanup() {
    [ -n "${sinkpid:-}" ] && kill "$sinkpid" 2>/dev/null || true
    cluster_stop
}
trap cleanup EXIT

gcc -O2 -o "$dir/fast_sink" "$src/test/sinks/fast_sink.c"
"$dir/fast_sink" "$sinkport" "$dir/sink.txt" > "$dir/sink.out" &
sinkpid=$!
for _ in $(seq 50); do grep -q ready "$dir/sink.out" 2>/dev/null && break; sleep 0.1; done

psql <<EOF
CREATE EXTENSION journey;
INSERT INTO journey.businesses (name) VALUES ('Bench');
INSERT INTO journey.providers (channel, kind, endpoint, from_address)
VALUES ('email', 'webhook', 'http://127.0.0.1:$sinkport/ok', 'bench@example.com');
EOF
biz=$(psql -c "SELECT id FROM journey.businesses")
sender_pid() { psql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'journey sender'"; }
for _ in $(seq 50); do [ -n "$(sender_pid)" ] && break; sleep 0.1; done
spid=$(sender_pid)
# Private memory only: RSS would also count the shared buffers it touched.
rss() { awk '/RssAnon/ {print $2}' "/proc/$1/status"; }

# 1. One message at a time on an idle system.
: > "$dir/single.txt"
for i in $(seq 30); do
    t=$(psql <<EOF
BEGIN;
INSERT INTO journey.messages (business_id, channel, to_address, body)
VALUES ('$biz', 'email', 'idle$i@example.com', 'hello') RETURNING id;
SELECT extract(epoch FROM clock_timestamp());
COMMIT;
EOF
)
    echo "$t" | tr '\n' ' ' >> "$dir/single.txt"; echo >> "$dir/single.txt"
    sleep 0.2
done
rss_before=$(rss "$spid")

# 2. N messages queued in one transaction, drained.
t_commit=$(psql <<EOF
BEGIN;
INSERT INTO journey.messages (business_id, channel, to_address, body)
SELECT '$biz', 'email', 'c' || g || '@example.com', 'Hello customer ' || g
FROM generate_series(1, $N) g;
SELECT extract(epoch FROM clock_timestamp());
COMMIT;
EOF
)
# Done when nothing is queued or sending: two look-ups in the partial
# indexes, so the polling costs the drain nothing.
drained() {
    [ "$(psql -c "SELECT NOT EXISTS (SELECT 1 FROM journey.messages WHERE status = 'queued')
                     AND NOT EXISTS (SELECT 1 FROM journey.messages WHERE status = 'sending')")" = t ]
}
until drained; do sleep 0.05; done
t_durable=$(psql -c "SELECT extract(epoch FROM clock_timestamp())")
rss_after=$(rss "$spid")

# 3. A steady stream: RATE messages/s for STREAM_S seconds, committed in
#    batches of 100, each batch's time just before its commit recorded.
RATE=${RATE:-10000}
STREAM_S=${STREAM_S:-10}
batches=$((RATE * STREAM_S / 100))
psql -c "CREATE TABLE bench_batches (b int, t float8)"
psql <<EOF
DO \$\$
DECLARE
    start timestamptz := clock_timestamp();
    i int;
BEGIN
    FOR i IN 1..$batches LOOP
        INSERT INTO journey.messages (business_id, channel, to_address, subject, body)
        SELECT '$biz', 'email', 's' || g || '@example.com', 'stream ' || i, 'Hello ' || g
        FROM generate_series(1, 100) g;
        INSERT INTO bench_batches VALUES (i, extract(epoch FROM clock_timestamp()));
        COMMIT;
        PERFORM pg_catalog.pg_sleep(GREATEST(0, extract(epoch FROM
            start + i * interval '1 second' * 100 / $RATE - clock_timestamp())));
    END LOOP;
END
\$\$;
EOF
until drained; do sleep 0.05; done
psql -F ' ' -c "SELECT m.id, b.t FROM journey.messages m JOIN bench_batches b ON m.subject = 'stream ' || b.b" > "$dir/stream.txt"
rss_stream=$(rss "$spid")
statuses=$(psql -c "SELECT string_agg(status || '=' || n, ' ') FROM (SELECT status, count(*) n FROM journey.messages GROUP BY 1 ORDER BY 1) s")
attempts=$(psql -c "SELECT max(attempts) FROM journey.messages")
errors=$(psql -c "SELECT count(*) FROM journey.messages WHERE last_error IS NOT NULL")

kill "$sinkpid"; wait "$sinkpid" || true; sinkpid=

python3 - "$dir" "$t_commit" "$t_durable" "$N" "$RATE" "$STREAM_S" <<'EOF'
import sys
d, t_commit, t_durable, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
recv = {}
dups = 0
for line in open(d + "/sink.txt"):
    k, t = line.split()
    k = k.rsplit("-", 1)[-1]  # <installation id>-<message id>
    if k in recv:
        dups += 1
    else:
        recv[k] = int(t) / 1e6
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]
single = []
for line in open(d + "/single.txt"):
    i, t = line.split()
    single.append((recv[i] - float(t)) * 1000)
stream = {}
for line in open(d + "/stream.txt"):
    i, t = line.split()
    stream[i] = float(t)
bulk = [t for k, t in recv.items() if int(k) > 30 and k not in stream]
lat = [(t - t_commit) * 1000 for t in bulk]
first, last = min(bulk), max(bulk)
print("single message, idle system (commit -> sink), %d samples: p50 %.1f ms, p99 %.1f ms, max %.1f ms"
      % (len(single), pct(single, 50), pct(single, 99), max(single)))
print("drain of %d messages queued in one transaction:" % n)
print("  received by the sink: %d distinct, %d duplicates" % (len(bulk), dups))
print("  throughput, commit -> every status durably written: %.0f messages/s (%.2f s)"
      % (n / (t_durable - t_commit), t_durable - t_commit))
print("  throughput at the sink, first -> last request: %.0f requests/s" % (n / (last - first)))
print("  commit -> delivery latency: p50 %.0f ms, p99 %.0f ms (includes the wait in the queue)"
      % (pct(lat, 50), pct(lat, 99)))
slat = [(recv[i] - t) * 1000 for i, t in stream.items() if i in recv]
print("steady stream of %s messages/s for %s s (%d messages, committed in batches of 100):"
      % (sys.argv[5], sys.argv[6], len(stream)))
print("  delivered: %d; commit -> delivery latency p50 %.1f ms, p99 %.1f ms, max %.1f ms"
      % (len(slat), pct(slat, 50), pct(slat, 99), max(slat)))
EOF
echo "  statuses: $statuses; max attempts: $attempts; messages with an error: $errors"
echo "sender private memory (RssAnon): ${rss_before} kB before the drain, ${rss_after} kB after it, ${rss_stream} kB after the stream"
