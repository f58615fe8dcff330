#!/usr/bin/env bash
# Trigger-matching throughput: one INSERT ... SELECT of N events, each of
# which enrolls its customer in a journey (the set-based events trigger).
# Prints events/s as the median of RUNS runs, with min and max.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../cluster.sh"
N=${N:-100000}
RUNS=${RUNS:-5}

cluster_start "$BENCH_TUNING"
bench_machine
cluster_psql <<SQL
CREATE EXTENSION journey;
INSERT INTO journey.businesses (id, name) VALUES ('00000000-0000-0000-0000-0000000000b1', 'Bench');
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "Review request",
  "status": "active", "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"subject": "Thanks", "body": "Hi {{customer.first_name}}"}}]}');
INSERT INTO journey.customers (business_id, full_name, email)
SELECT '00000000-0000-0000-0000-0000000000b1', 'Customer ' || g, 'c' || g || '@example.com'
FROM generate_series(1, $N) g;
VACUUM ANALYZE;
SQL

times=()
for run in $(seq "$RUNS"); do
    cluster_psql -c "TRUNCATE journey.events, journey.sequence_enrollments, journey.enrollment_log, journey.messages" -c "CHECKPOINT"
    ms=$(bench_time_ms "INSERT INTO journey.events (business_id, event_type, customer_id, payload, occurred_at)
        SELECT business_id, 'invoice_paid', id, '{\"invoice\": 1}', '2026-01-01' FROM journey.customers")
    enrolled=$(cluster_psql -At -c "SELECT count(*) FROM journey.sequence_enrollments")
    [ "$enrolled" = "$N" ] || { echo "run $run enrolled $enrolled of $N"; exit 1; }
    times+=("$ms")
done
read -r median min max < <(printf '%s\n' "${times[@]}" | bench_stats)
awk -v n="$N" -v md="$median" -v mn="$min" -v mx="$max" 'BEGIN {
    printf "events: one INSERT ... SELECT of %d enrolling events: median %.0f ms = %.0f events/s (min %.0f ms, max %.0f ms)\n",
        n, md, n / md * 1000, mn, mx }'
