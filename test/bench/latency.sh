#!/usr/bin/env bash
# Latency benchmark of the executor in the sender (issue 16): from an
# event's commit to the provider (test/sinks/fast_sink.c on 127.0.0.1), for
# a journey that starts with a zero-wait email, with no pg_cron job:
#   1. single events on an idle server (one every 200 ms);
#   2. a steady RATE events/s (default 1000) for LOAD_S seconds (default 30)
#      from CLIENTS pgbench clients (default 8), each event a webhook for a new customer,
#      after HISTORY (default 20000) earlier customers were enrolled and sent to;
#   3. a burst of BURST due enrollments (default 100000) made due by one
#      INSERT ... SELECT of events: how long the sender's executor takes to
#      advance them all, and the longest pause between two deliveries at the
#      sink meanwhile (the sender keeps sending between executor batches).
# Prints p50/p99/max per part.  Commits are durable (the defaults).
#
#   bash test/bench/latency.sh           (as root: installs the tree first, as run.sh)
#   RATE=500 LOAD_S=10 BURST=20000 bash test/bench/latency.sh
#   PARTS=3 EXECUTOR=calls bash test/bench/latency.sh
#
# PARTS picks the parts (default 123).  EXECUTOR=calls runs part 3 with
# journey.executor_in_worker = off and the enrollments advanced by
# advance_due_enrollments(1000) called in a loop, one transaction a call,
# as pg_cron would with no pause: the same burst, W1 (advance) and W4
# (drain) with the executor in the worker against without it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

RATE=${RATE:-1000}
LOAD_S=${LOAD_S:-30}
BURST=${BURST:-100000}
SINGLE=${SINGLE:-50}
HISTORY=${HISTORY:-20000}
CLIENTS=${CLIENTS:-8}
# Events per transaction in part 2 (a webhook batch); 1: each its own.
PER_TX=${PER_TX:-1}
# pgbench's query protocol in part 2: prepared, as PostgREST (Supabase)
# and most drivers call a function; "simple" parses and plans each call.
PROTOCOL=${PROTOCOL:-prepared}
PARTS=${PARTS:-123}
EXECUTOR=${EXECUTOR:-worker}
case $EXECUTOR in
    worker) EXECUTOR_CONF="journey.executor_in_worker = on" ;;
    calls) EXECUTOR_CONF="journey.executor_in_worker = off" ;;
    *) echo "EXECUTOR must be worker or calls" >&2; exit 2 ;;
esac

WORK=$(mktemp -d /tmp/journey-latency.XXXXXX)
chmod 755 "$WORK"
sinkpid=
cleanup() {
    if [ -n "$sinkpid" ]; then kill "$sinkpid" 2>/dev/null || true; fi
    cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

bench_install "$WORK"
gcc -O2 -o "$WORK/fast_sink" "$BENCH_SRC/test/sinks/fast_sink.c"
ulimit -n 1024
cluster_start "$BENCH_TUNING
$EXECUTOR_CONF"
trap cleanup EXIT
SINKPORT=$((20000 + RANDOM % 20000))
"$WORK/fast_sink" "$SINKPORT" "$WORK/sink.txt" > "$WORK/sink.out" &
sinkpid=$!
for _ in $(seq 50); do grep -q ready "$WORK/sink.out" 2>/dev/null && break; sleep 0.1; done

echo "journey latency benchmark: event commit -> provider; extension: $BENCH_INSTALL"
bench_machine
B=00000000-0000-0000-0000-0000000000b1
bench_psql journey -o /dev/null <<SQL
CREATE EXTENSION journey;
INSERT INTO journey.businesses (id, name) VALUES ('$B', 'Acme Plumbing');
INSERT INTO journey.providers (channel, kind, endpoint, from_address)
VALUES ('email', 'webhook', 'http://127.0.0.1:$SINKPORT/ok', 'bench@example.com');
SELECT journey.create_sequence('$B', '{"name": "Thanks", "status": "active",
  "trigger_event_type": "invoice_paid", "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"purpose": "thank_you",
    "subject": "Thanks, {{customer.first_name}}!", "body": "Thank you for choosing {{business.name}}."}},
            {"kind": "wait", "wait_ms": 172800000}]}');
-- Each event's time: clock_timestamp() just before its COMMIT (part 1),
-- the start of its transaction (part 2), so the latency printed is, if
-- anything, longer than the real one.
CREATE TABLE public.bench_events (event_id bigint, part text, t float8);
SQL
for _ in $(seq 100); do
    [ "$(bench_psql journey -At -c "SELECT count(*) FROM journey.executor_status()")" = 1 ] && break
    sleep 0.1
done
bench_psql journey -At -c "SELECT 'sender executor: enabled ' || enabled FROM journey.executor_status()"

# Waits until every event of part $1 has its message sent.
wait_sent() {
    bench_psql journey -At -c "DO \$\$
BEGIN
  FOR i IN 1..3000 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM public.bench_events b
      JOIN journey.sequence_enrollments e ON e.trigger_event_id = b.event_id
      LEFT JOIN journey.messages m ON m.enrollment_id = e.id
     WHERE b.part = '$1' AND m.status IS DISTINCT FROM 'sent');
    COMMIT;
    PERFORM pg_sleep(0.05);
  END LOOP;
END
\$\$"
}
# "message id, event commit time" of part $1.
commits() {
    bench_psql journey -At -F ' ' -c "SELECT m.id, b.t FROM public.bench_events b
      JOIN journey.sequence_enrollments e ON e.trigger_event_id = b.event_id
      JOIN journey.messages m ON m.enrollment_id = e.id AND m.step_index = 1
     WHERE b.part = '$1'"
}
# The sink writes its records when stopped: restart it after each part.
sink_records() {
    kill "$sinkpid"; wait "$sinkpid" || true
    cat "$WORK/sink.txt" >> "$WORK/all_sink.txt"
    "$WORK/fast_sink" "$SINKPORT" "$WORK/sink.txt" > "$WORK/sink.out" &
    sinkpid=$!
    for _ in $(seq 50); do grep -q ready "$WORK/sink.out" 2>/dev/null && break; sleep 0.1; done
}
# p50/p99/max in ms of commit -> sink of part $1, and how many arrived.
report() {
    local part=$1 label=$2
    commits "$part" > "$WORK/$part.commits"
    # The sink's key is <installation id>-<message id>.
    awk 'NR == FNR { t[$1] = $2; next } { n = split($1, k, "-"); id = k[n] }
         (id in t) && !seen[id]++ { print ($2 / 1e6 - t[id]) * 1000 }' \
        "$WORK/$part.commits" "$WORK/all_sink.txt" > "$WORK/$part.lat"
    printf '   %-44s %6d events: p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms\n' "$label" \
        "$(wc -l < "$WORK/$part.lat")" "$(bench_pct 50 < "$WORK/$part.lat")" \
        "$(bench_pct 99 < "$WORK/$part.lat")" "$(bench_pct 100 < "$WORK/$part.lat")"
}

if [[ $PARTS == *1* ]]; then
echo ""
echo "== 1. single events on an idle server, one every 200 ms"
bench_psql journey -o /dev/null <<SQL
DO \$\$
DECLARE ev bigint;
BEGIN
  FOR i IN 1..$SINGLE LOOP
    ev := journey.ingest_event('$B', 'invoice_paid',
      jsonb_build_object('external_id', 'idle-' || i, 'full_name', 'Idle ' || i, 'email', 'idle' || i || '@example.com'));
    INSERT INTO public.bench_events VALUES (ev, 'idle', extract(epoch FROM clock_timestamp()));
    COMMIT;
    PERFORM pg_sleep(0.2);
  END LOOP;
END
\$\$;
SQL
wait_sent idle
sink_records
report idle "idle server, single events"
fi

if [[ $PARTS == *2* ]]; then
echo ""
# A business with a history: on an empty database every long-lived
# session (pgbench's, the sender) keeps the plans it made for empty tables
# (foreign-key checks by sequential scan of customers, say) until
# autovacuum's first ANALYZE, and the part would measure that instead.
echo "== 2. (history: $HISTORY earlier customers, each sent its thank-you, then ANALYZE)"
bench_psql journey -o /dev/null <<SQL
INSERT INTO journey.customers (business_id, full_name, email, external_id)
SELECT '$B', 'Past ' || g, 'past' || g || '@example.com', 'past-' || g FROM generate_series(1, $HISTORY) g;
INSERT INTO journey.events (business_id, event_type, customer_id)
SELECT '$B', 'invoice_paid', id FROM journey.customers WHERE external_id LIKE 'past-%';
SQL
bench_psql journey -At -c "DO \$\$
BEGIN
  FOR i IN 1..6000 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM journey.sequence_enrollments
                           WHERE status = 'active' AND current_step_index = 1)
          AND NOT EXISTS (SELECT FROM journey.messages WHERE status <> 'sent');
    COMMIT;
    PERFORM pg_sleep(0.05);
  END LOOP;
END
\$\$"
bench_psql journey -c "VACUUM ANALYZE"
sink_records
echo "== 2. $RATE events/s for $LOAD_S s ($CLIENTS pgbench clients, $PER_TX event(s) per transaction, a new customer per event, $PROTOCOL protocol)"
# The harness writes nothing of its own during the load: an event's time
# is its row's created_at, the start of the transaction that inserted it,
# so each latency counts the whole transaction and its commit as well.  (A
# row of the harness per event, its time taken before COMMIT, cost the
# server about 140 us of CPU an event, 7% of all it did.)
{
    echo '\set c random(1, 1000000000)'
    [ "$PER_TX" = 1 ] || echo 'BEGIN;'
    for k in $(seq "$PER_TX"); do
        echo "SELECT journey.ingest_event('$B', 'invoice_paid', jsonb_build_object('external_id', 'load-' || :c || '-$k', 'full_name', 'Load ' || :c, 'email', 'load' || :c || '-$k@example.com'));"
    done
    [ "$PER_TX" = 1 ] || echo 'COMMIT;'
} > "$WORK/load.sql"
load_after=$(bench_psql journey -At -c "SELECT coalesce(max(id), 0) FROM journey.events")
as_postgres "$PG_BIN/pgbench" -n -M "$PROTOCOL" -c "$CLIENTS" -j 2 -R "$((RATE / PER_TX))" -T "$LOAD_S" -f "$WORK/load.sql" \
    -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres journey > "$WORK/pgbench.out" 2>&1 ||
    { cat "$WORK/pgbench.out"; exit 1; }
echo "   pgbench: $(sed -n 's/^tps = \([0-9.]*\) (without.*/\1 transactions\/s/p' "$WORK/pgbench.out"), $(sed -n 's/^latency average = /transaction latency avg /p' "$WORK/pgbench.out"), $(sed -n 's/^rate limit schedule lag: avg \([0-9.]*\) (max \([0-9.]*\)) ms/schedule lag avg \1 ms, max \2 ms/p' "$WORK/pgbench.out")"
bench_psql journey -o /dev/null -c "INSERT INTO public.bench_events
  SELECT id, 'load', extract(epoch FROM created_at) FROM journey.events WHERE id > $load_after"
wait_sent load
sink_records
report load "$RATE events/s for $LOAD_S s"
fi

if [[ $PARTS == *3* ]]; then
echo ""
echo "== 3. a burst: $BURST enrollments made due by one INSERT ... SELECT of events (executor: $EXECUTOR)"
t_burst=$(bench_psql journey -At <<SQL
INSERT INTO journey.customers (business_id, full_name, email, external_id)
SELECT '$B', 'Burst ' || g, 'burst' || g || '@example.com', 'burst-' || g FROM generate_series(1, $BURST) g;
BEGIN;
INSERT INTO journey.events (business_id, event_type, customer_id)
SELECT '$B', 'invoice_paid', id FROM journey.customers WHERE external_id LIKE 'burst-%';
SELECT extract(epoch FROM clock_timestamp());
COMMIT;
SQL
)
if [ "$EXECUTOR" = calls ]; then
    bench_psql journey -At -c "DO \$\$
BEGIN
  LOOP
    EXIT WHEN journey.advance_due_enrollments(1000) = 0;
    COMMIT;
  END LOOP;
END
\$\$"
else
    bench_psql journey -At -c "DO \$\$
BEGIN
  FOR i IN 1..6000 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM journey.sequence_enrollments
                           WHERE status = 'active' AND current_step_index = 1);
    COMMIT;
    PERFORM pg_sleep(0.05);
  END LOOP;
END
\$\$"
fi
t_advanced=$(bench_psql journey -At -c "SELECT extract(epoch FROM clock_timestamp())")
bench_psql journey -At -c "DO \$\$
BEGIN
  FOR i IN 1..6000 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM journey.messages WHERE status IN ('queued', 'sending'));
    COMMIT;
    PERFORM pg_sleep(0.05);
  END LOOP;
END
\$\$"
t_drained=$(bench_psql journey -At -c "SELECT extract(epoch FROM clock_timestamp())")
sink_records
awk -v a="$t_burst" -v b="$t_advanced" -v c="$t_drained" -v n="$BURST" 'BEGIN {
    printf "   the executor advanced all %d in %.2f s (%.0f enrollments/s); outbox drained %.2f s after the commit (%.0f messages/s)\n", n, b - a, n / (b - a), c - a, n / (c - a) }'
# The longest pause between two deliveries while the burst was being worked.
awk -v a="$t_burst" -v c="$t_drained" '{ t = $2 / 1e6; if (t >= a && t <= c) printf "%.6f\n", t }' "$WORK/all_sink.txt" |
    sort -n | awk -v a="$t_burst" 'NR == 1 { first = $1 } NR > 1 { g = ($1 - p) * 1000; if (g > m) m = g } { p = $1 }
        END { printf "   first delivery %.0f ms after the commit; longest pause between two deliveries during the burst: %.1f ms\n", (first - a) * 1000, m }'
bench_psql journey -At -c "SELECT 'executor_status: ' || passes || ' passes, ' || advanced || ' enrollments advanced, wakeups ' || wakeups FROM journey.executor_status()"
dups=$(awk '{ print $1 }' "$WORK/all_sink.txt" | sort | uniq -d | wc -l)
echo "   requests at the sink: $(wc -l < "$WORK/all_sink.txt"), sent twice: $dups"
fi
