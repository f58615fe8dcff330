#!/usr/bin/env bash
# Versions at scale (issue 14), on a throwaway cluster:
#  - update_sequence with p_in_flight 'move' (and 'keep', 'exit') over
#    ROWS in-flight enrollments (default 100k): the call's time, which
#    bounds how long the moved rows stay locked (the row locks are taken by
#    the move and held to commit; the table itself gets ROW EXCLUSIVE only),
#    and the latency of an event enrolling a customer meanwhile;
#  - the executor's W1 (advance_due_enrollments over DUE due enrollments,
#    in calls of 1000) with every enrollment on one version, and spread
#    over three versions, and on one version without the stats indexes;
#  - what the step counters of journey.step_stats (issue 15) cost W1: one
#    more run with pg_stat_statements, the upsert's share of the calls' time.
#
#   PG_CONFIG=/path/to/pg_config [ROWS=100000] [DUE=20000] bash test/bench/versions.sh
#
# Run as root it works as the postgres OS user; it installs the extension
# for that PG_CONFIG (make install).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$("$PG_CONFIG" --bindir)
rows=${ROWS:-100000}
due=${DUE:-20000}
runs=${RUNS:-3}
port=${PORT:-54331}
# Which measurements: "update", "w1" or both.
only=${ONLY:-update,w1}

make -C "$src" -s PG_CONFIG="$PG_CONFIG" >/dev/null
make -C "$src" -s PG_CONFIG="$PG_CONFIG" install >/dev/null

tmp=$(mktemp -d /tmp/journey-bench.XXXXXX)
run_as=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$tmp"
    run_as=(runuser -u postgres --)
fi
stop() {
    "${run_as[@]}" "$bindir/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap stop EXIT

"${run_as[@]}" "$bindir/initdb" -D "$tmp/data" -A trust --no-sync >/dev/null
server_opts="-k $tmp -c listen_addresses='' -c port=$port -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c max_wal_size=4GB -c shared_buffers=256MB"
"${run_as[@]}" "$bindir/pg_ctl" -D "$tmp/data" -l "$tmp/log" -w -o "$server_opts" start >/dev/null

psql() { "${run_as[@]}" "$bindir/psql" -X -q -h "$tmp" -p "$port" -v ON_ERROR_STOP=1 "$@"; }
# Milliseconds one statement takes, from the client.
ms() {
    local db=$1 sql=$2 t0 t1
    t0=$(date +%s%N)
    psql -d "$db" -At -c "$sql" >/dev/null
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 ))
}
# One statement's elapsed and CPU (user + system) milliseconds in the
# server process, from log_statement_stats.  The CPU time is steadier than
# the wall clock on a shared machine: another process's work lengthens the
# elapsed time, not this process's own.
stat_ms() {
    local db=$1 sql=$2
    psql -d "$db" -At -c "SET log_statement_stats = on" -c "SET client_min_messages = log" \
        -c "$sql" 2>&1 >/dev/null |
        sed -n 's/^![[:space:]]*\([0-9.]*\) s user, \([0-9.]*\) s system, \([0-9.]*\) s elapsed.*/\1 \2 \3/p' |
        tail -1 | awk '{ printf "%d %d\n", $3 * 1000, ($1 + $2) * 1000 }'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

step_def() {   # version label, number of steps
    local v=$1 n=$2 k steps=""
    for k in $(seq 1 "$n"); do
        if [ $((k % 2)) = 1 ]; then
            steps="$steps{\"kind\": \"send_email\", \"message\": {\"subject\": \"v$v step $k\", \"body\": \"Hi {{customer.first_name}}\"}},"
        else
            steps="$steps{\"kind\": \"wait\", \"wait_ms\": 86400000},"
        fi
    done
    echo "{\"name\": \"Bench v$v\", \"status\": \"active\", \"trigger_event_type\": \"signup\", \"rate_per_hour\": null, \"rate_per_day\": null, \"steps\": [${steps%,}]}"
}

psql -d postgres -c "CREATE DATABASE base" -c "SELECT 1" >/dev/null
psql -d base <<SQL
CREATE EXTENSION journey;
INSERT INTO journey.businesses (id, name) VALUES ('00000000-0000-0000-0000-0000000000b1', 'Bench');
INSERT INTO journey.customers (business_id, full_name, email)
SELECT '00000000-0000-0000-0000-0000000000b1', 'Customer ' || g, 'c' || g || '@example.com'
  FROM generate_series(1, $rows) g;
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '$(step_def 1 6)');
-- In flight at steps 1..6, due over the next 30 days.
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, current_step_index,
                                          next_run_at, enrolled_at)
SELECT c.business_id, s.id, c.id, 1 + (row_number() OVER () % 6),
       '2027-01-12 10:00+00'::timestamptz + (random() * interval '30 days'), '2027-01-12 09:00+00'
  FROM journey.customers c CROSS JOIN journey.sequences s;
VACUUM ANALYZE;
SQL
seq=$(psql -d base -At -c "SELECT id FROM journey.sequences")

[[ $only == *update* ]] && modes="keep move exit" || modes=""
[ -n "$modes" ] && echo "== update_sequence over $rows in-flight enrollments (median of $runs, ms)"
for mode in $modes; do
    times=()
    event_ms=()
    for run in $(seq 1 "$runs"); do
        psql -d postgres -c "DROP DATABASE IF EXISTS u" -c "CREATE DATABASE u TEMPLATE base" >/dev/null
        # An event enrolling a customer while the update runs: not blocked.
        ( sleep 0.2; ms u "INSERT INTO journey.customers (business_id, full_name) VALUES ('00000000-0000-0000-0000-0000000000b1', 'Late');
                          INSERT INTO journey.events (business_id, event_type, customer_id)
                          SELECT business_id, 'signup', id FROM journey.customers WHERE full_name = 'Late'" > "$tmp/event_ms" ) &
        times+=("$(ms u "SELECT journey.update_sequence('$seq', '$(step_def 2 6)', '$mode')")")
        wait
        event_ms+=("$(cat "$tmp/event_ms")")
    done
    printf '   %-5s %6s ms   (an event enrolling meanwhile: %s ms)\n' "$mode" \
        "$(printf '%s\n' "${times[@]}" | median)" "$(printf '%s\n' "${event_ms[@]}" | median)"
done
[ -z "$modes" ] || psql -d u -At -c "SELECT '   after exit: ' || count(*) || ' enrollments stopped and logged' FROM journey.enrollment_log WHERE outcome = 'stopped'"

[[ $only == *w1* ]] || exit 0
echo "== W1: advance_due_enrollments(1000, t) over $due due enrollments until none is due ($runs interleaved runs, ms)"
psql -d postgres -c "DROP DATABASE IF EXISTS u" >/dev/null
# Two more versions (kept), then the due enrollments: $due at step 1.
psql -d base -At >/dev/null <<SQL
SELECT journey.update_sequence('$seq', '$(step_def 2 6)', 'keep');
SELECT journey.update_sequence('$seq', '$(step_def 3 6)', 'keep');
UPDATE journey.sequence_enrollments SET current_step_index = 1, next_run_at = '2027-01-12 10:00+00'
 WHERE id IN (SELECT id FROM journey.sequence_enrollments ORDER BY id LIMIT $due);
VACUUM ANALYZE;
SQL
# Interleaved runs (one, three, one, three, ...) so the machine's load
# drifts over both alike; the minimum is the least disturbed run.
declare -A times cpus check
for run in $(seq 1 "$runs"); do
    for spread in one three bare; do
        psql -d postgres -c "DROP DATABASE IF EXISTS w" -c "CREATE DATABASE w TEMPLATE base" >/dev/null
        if [ $spread = bare ]; then
            # One version, with 0.2's indexes instead of those
            # journey.step_stats and sequence_stats read (issue 15): what
            # they cost W1's writes.
            psql -d w -c "DROP INDEX journey.sequence_enrollments_stats_idx, journey.messages_sequence_idx,
                                     journey.sequence_enrollments_one_active_idx" \
                -c "CREATE INDEX messages_business_idx ON journey.messages (business_id, sequence_id, send_after)" \
                -c "CREATE UNIQUE INDEX sequence_enrollments_one_active_idx ON journey.sequence_enrollments
                        (sequence_id, customer_id) WHERE status = 'active'" \
                -c "UPDATE journey.sequence_enrollments SET sequence_version = 1" \
                -c "VACUUM ANALYZE journey.sequence_enrollments" >/dev/null
        elif [ $spread = three ]; then
            psql -d w -c "UPDATE journey.sequence_enrollments SET sequence_version = 1 + (hashtext(id::text) & 2147483647) % 3" \
                -c "VACUUM ANALYZE journey.sequence_enrollments" >/dev/null
        else
            # The same rewrite of every row, so both runs start from the same table health.
            psql -d w -c "UPDATE journey.sequence_enrollments SET sequence_version = 1" \
                -c "VACUUM ANALYZE journey.sequence_enrollments" >/dev/null
        fi
        lsn=$(psql -d w -At -c "SELECT pg_current_wal_insert_lsn()")
        read -r wall cpu < <(stat_ms w "DO \$\$ BEGIN WHILE journey.advance_due_enrollments(1000, '2027-01-12 10:00+00') > 0 LOOP COMMIT; END LOOP; END \$\$")
        times[$spread]="${times[$spread]:-} $wall"
        cpus[$spread]="${cpus[$spread]:-} $cpu"
        # WAL written per due enrollment: the same for every run of a
        # variant, so it shows what an index costs the writes without the
        # wall clock's noise.
        check[$spread]=$(psql -d w -At -c "SELECT count(*) || ' messages on ' || count(DISTINCT left(subject, 2)) || ' version(s), '
                                                  || round(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$lsn') / $due)
                                                  || ' bytes of WAL a due enrollment' FROM journey.messages")
    done
done
for spread in one three bare; do
    # shellcheck disable=SC2086
    printf '   %-5s version(s): min %6s ms, median %6s ms, all:%s   (%s)\n' "$spread" \
        "$(printf '%s\n' ${times[$spread]} | sort -n | head -1)" \
        "$(printf '%s\n' ${times[$spread]} | median)" "${times[$spread]}" "${check[$spread]}"
done
echo "   the same runs' CPU time in the server process (ms):"
for spread in one three bare; do
    # shellcheck disable=SC2086
    printf '   %-5s version(s): min %6s ms, median %6s ms, all:%s\n' "$spread" \
        "$(printf '%s\n' ${cpus[$spread]} | sort -n | head -1)" \
        "$(printf '%s\n' ${cpus[$spread]} | median)" "${cpus[$spread]}"
done

# The step counters' cost: the server again with pg_stat_statements
# tracking the executor's own statements; one run on one version.
"${run_as[@]}" "$bindir/pg_ctl" -D "$tmp/data" -m fast -w \
    -l "$tmp/log" \
    -o "$server_opts -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" restart >/dev/null
psql -d postgres -c "DROP DATABASE IF EXISTS w" -c "CREATE DATABASE w TEMPLATE base" >/dev/null
psql -d w -c "CREATE EXTENSION pg_stat_statements" -c "VACUUM ANALYZE" >/dev/null
psql -d w -c "SELECT pg_stat_statements_reset()" >/dev/null
psql -d w -At -c "DO \$\$ BEGIN WHILE journey.advance_due_enrollments(1000, '2027-01-12 10:00+00') > 0 LOOP COMMIT; END LOOP; END \$\$" >/dev/null
psql -d w -At -F ' ' <<'SQL'
SELECT format('   step counters: %s upserts, %s ms of %s ms in advance_due_enrollments (%s%%)',
              c.calls, round(c.t::numeric, 1), round(a.t::numeric, 1), round((100 * c.t / a.t)::numeric, 2))
  FROM (SELECT sum(calls) AS calls, sum(total_exec_time) AS t FROM pg_stat_statements
         WHERE query LIKE 'INSERT INTO journey.step_counters%') c,
       (SELECT sum(total_exec_time) AS t FROM pg_stat_statements
         WHERE query LIKE 'DO%advance_due_enrollments%') a;
SQL
