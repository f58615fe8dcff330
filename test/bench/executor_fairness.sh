#!/usr/bin/env bash
# The executor's fair claim against the plain oldest-first claim (issue 12):
# times journey.advance_due_enrollments(BATCH, t) until nothing is due, over
# 10*N active enrollments with N due (W1's all-send shape: a send, then a
# two-day wait), spread over 1 and NBIZ businesses, for the work tree and
# for BASE (default main), alternating between the two builds.  Prints min
# and median per variant.
#
#   PG_CONFIG=... bash test/bench/executor_fairness.sh
#
# Settings: N (default 20000), NBIZ (100; 1 runs only the one-business case), BATCHES ("20000 1000": W1 takes
# the whole N in one call, pg_cron's default is 1000), ROUNDS (2: builds
# alternate this many times, two timed copies each).  It runs `make install`
# into PG_CONFIG's installation (a private server copy, never the system's)
# and a throwaway cluster on a Unix socket.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
N=${N:-20000}
NBIZ=${NBIZ:-100}
BATCHES=${BATCHES:-"$N 1000"}
ROUNDS=${ROUNDS:-2}
BASE=${BASE:-main}
sizes=1
[ "$NBIZ" = 1 ] || sizes="1 $NBIZ"
bin=$("$PG_CONFIG" --bindir)
T='2027-01-12 15:00:00+00'
dir=$(mktemp -d /tmp/journey-bench-execfair.XXXXXX)
chmod 755 "$dir"
port=$((20000 + RANDOM % 20000))
run() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql() { run "$bin/psql" -h "$dir" -p "$port" -X -q -v ON_ERROR_STOP=1 -At "$@"; }
cleanup() {
    run "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    make -C "$src" -s PG_CONFIG="$PG_CONFIG" install >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

git -C "$src" archive "$BASE" | (mkdir -p "$dir/base" && tar -x -C "$dir/base")
make -C "$dir/base" -s -j2 PG_CONFIG="$PG_CONFIG" >/dev/null
make -C "$src" -s -j2 PG_CONFIG="$PG_CONFIG" >/dev/null

# load DB NBUSINESSES: one journey per business, the customers and
# enrollments of W1, due ones scattered through the table.
load() {
    psql -d postgres -c "CREATE DATABASE $1"
    psql -d "$1" -o /dev/null <<SQL
CREATE EXTENSION journey;
INSERT INTO journey.businesses (name) SELECT 'Biz ' || g FROM generate_series(1, $2) g;
SELECT count(journey.create_sequence(b.id, '{"name": "Thanks", "status": "active",
  "allow_manual_enroll": true, "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"subject": "Thanks, {{ customer.first_name }}!",
             "body": "Thank you for choosing {{ business.name }}."}},
            {"kind": "wait", "wait_ms": 172800000}]}'))
  FROM journey.businesses b;
SET session_replication_role = replica;
SELECT setseed(0.5);
CREATE TEMP TABLE biz AS SELECT row_number() OVER (ORDER BY id) - 1 AS k, id FROM journey.businesses;
INSERT INTO journey.customers (business_id, full_name, email, external_id)
SELECT b.id, 'Ada' || i || ' Lovelace', 'c' || i || '@example.com', 'cust-' || i
  FROM generate_series(1, $N * 10) i JOIN biz b ON b.k = i % $2;
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id,
       current_step_index, next_run_at, enrolled_at)
SELECT c.business_id, s.id, c.id, 1,
       CASE WHEN i % 10 = 0 THEN timestamptz '$T' - random() * interval '1 hour'
            ELSE timestamptz '$T' + interval '1 minute' + random() * interval '30 days' END,
       timestamptz '$T' - interval '3 days'
  FROM (SELECT *, substr(external_id, 6)::int AS i FROM journey.customers) c
  JOIN journey.sequences s ON s.business_id = c.business_id
 ORDER BY i;
VACUUM (FREEZE, ANALYZE);
SQL
}

# time DB BATCH: milliseconds until a call returns 0, and the count handled.
time_drain() {
    psql -d "$1" 2>&1 <<SQL | sed -n 's/.*NOTICE: *//p'
DO \$\$
DECLARE n int; total int := 0; t0 timestamptz := clock_timestamp();
BEGIN
  LOOP
    n := journey.advance_due_enrollments($2, '$T');
    COMMIT;
    total := total + n;
    EXIT WHEN n = 0;
  END LOOP;
  RAISE NOTICE '% %', round(1000 * extract(epoch FROM clock_timestamp() - t0)), total;
END
\$\$;
SQL
}

: > "$dir/results"
for round in $(seq "$ROUNDS"); do
    for variant in base tree; do
        if [ $variant = base ]; then tree=$dir/base; else tree=$src; fi
        make -C "$tree" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
        rm -rf "$dir/data"
        [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
        run "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
        cat >> "$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
shared_buffers = 512MB
max_wal_size = 4GB
CONF
        run "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
        for nb in $sizes; do
            load "tpl_$nb" "$nb"
            for batch in $BATCHES; do
                for copy in 1 2; do
                    psql -d postgres -c "DROP DATABASE IF EXISTS w" \
                        -c "CREATE DATABASE w TEMPLATE tpl_$nb STRATEGY FILE_COPY"
                    read -r ms total < <(time_drain w "$batch")
                    [ "$total" = "$N" ] || { echo "handled $total, not $N" >&2; exit 1; }
                    echo "$variant $nb $batch $ms" | tee -a "$dir/results"
                done
            done
        done
        run "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null
    done
done

echo
echo "advance_due_enrollments until 0 over $((N * 10)) enrollments, $N due (ms; min / median of $((ROUNDS * 2)))"
for nb in $sizes; do
    for batch in $BATCHES; do
        for variant in base tree; do
            awk -v v=$variant -v nb="$nb" -v b="$batch" '$1 == v && $2 == nb && $3 == b { print $4 }' \
                "$dir/results" | sort -n | awk -v v=$variant -v nb="$nb" -v b="$batch" \
                '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
                   printf "  %-4s businesses %-4s batch %-6s min %7d  median %7d\n", v, nb, b, a[1], m }'
        done
    done
done
