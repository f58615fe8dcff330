# Helpers for test/bench/run.sh on top of ../cluster.sh: getting the
# extension to the server (system install, or a private copy of the server
# when nothing may be installed), fresh database copies, statement timings,
# percentiles and the table-health report.  Source it.

# shellcheck shell=bash
# shellcheck source=../cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/../cluster.sh"

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
# What was benchmarked, for the report.
export BENCH_INSTALL=

# As root, installs the extension from the work tree, as test/run.sh does,
# unless JOURNEY_BENCH_NO_INSTALL=1.  With JOURNEY_BENCH_PRIVATE=1, or when
# journey is not installed for PG_CONFIG and must not be (that variable
# set, or not root), builds a copy of the tree into a private copy of the
# server under $1 instead: the system installation is left untouched and
# the numbers are for the tree as it is.
bench_install() {
    local dir=$1 sharedir private=${JOURNEY_BENCH_PRIVATE:-0}
    sharedir=$("$PG_CONFIG" --sharedir)
    if [ "$private" != 1 ] && [ "$(id -u)" = 0 ] && [ "${JOURNEY_BENCH_NO_INSTALL:-0}" != 1 ]; then
        make -C "$BENCH_SRC" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
        BENCH_INSTALL="installed from $BENCH_SRC (make install)"
    elif [ "$private" != 1 ] && [ -f "$sharedir/extension/journey.control" ]; then
        BENCH_INSTALL="the installed extension ($(sed -n "s/^default_version = '\(.*\)'/\1/p" "$sharedir/extension/journey.control"))"
    else
        bench_private_build "$dir"
    fi
}

# The server finds its share and lib directories relative to its binary's
# real path, so copied binaries beside symlinks to the system's files plus
# the extension installed with DESTDIR make a complete private server.
bench_private_build() {
    local dir=$1 inst=$1/inst bindir libdir sharedir
    bindir=$("$PG_CONFIG" --bindir)
    libdir=$("$PG_CONFIG" --pkglibdir)
    sharedir=$("$PG_CONFIG" --sharedir)
    rsync -a --exclude .git --exclude tmp_check --exclude results --exclude '*.o' --exclude '*.so' \
        "$BENCH_SRC/" "$dir/build/"
    if ! make -C "$dir/build" -s -j"$(nproc)" PG_CONFIG="$PG_CONFIG" >"$dir/build.log" 2>&1; then
        cat "$dir/build.log" >&2
        return 1
    fi
    mkdir -p "$inst$bindir" "$inst$libdir" "$inst$sharedir"
    cp -a "$bindir/." "$inst$bindir/"
    cp -as "$libdir/." "$inst$libdir/"
    cp -as "$sharedir/." "$inst$sharedir/"
    make -C "$dir/build" -s PG_CONFIG="$PG_CONFIG" DESTDIR="$inst" install >>"$dir/build.log" 2>&1
    PG_BIN=$inst$bindir
    BENCH_INSTALL="a private build of $BENCH_SRC (journey $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$dir/build/journey.control"), not installed system-wide)"
}

bench_psql() {
    local db=$1
    shift
    cluster_psql -d "$db" "$@"
}

# Drops $1 and copies it afresh from template $2.  FILE_COPY copies the
# files instead of writing every page to the WAL: seconds, not minutes, for
# the million-row templates.
bench_fresh_db() {
    bench_psql postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $1" \
        -c "CREATE DATABASE $1 TEMPLATE $2 STRATEGY FILE_COPY"
}

# Loads every journey table and index into shared buffers and checkpoints,
# so each variant starts from the same warm, clean state.
bench_warm() {
    bench_psql "$1" -At -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c
        WHERE c.relnamespace = 'journey'::regnamespace AND c.relkind IN ('r', 'i', 't')" >/dev/null
    bench_psql postgres -c CHECKPOINT
}

# Milliseconds the statement $2 takes in database $1, as psql's \timing
# sees it; statements given before it in ${@:3} run untimed first.  Server
# notices go to the file $BENCH_NOTICES.
bench_ms() {
    local db=$1 sql=$2 pre=() s
    shift 2
    for s in "$@"; do pre+=(-c "$s"); done
    bench_psql "$db" -At "${pre[@]}" -c '\timing on' -c "$sql" 2>"${BENCH_NOTICES:-/dev/null}" |
        sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
}

# "median min max" of the numbers on standard input, unrounded: idle calls
# take less than a millisecond.
bench_stats() {
    sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}

# Nearest-rank percentile $1 of the numbers on standard input.
bench_pct() {
    sort -n | awk -v p="$1" '{ v[NR] = $1 } END { i = int(p / 100 * NR + 0.999999); if (i < 1) i = 1; print v[i] }'
}

# Table health of the journey tables $2... in database $1: the statistics
# collector's n_live_tup and n_dead_tup (counted since the database was
# copied), the live rows pgstattuple counts, and the sizes of heap and
# indexes.  Nothing is vacuumed first.
bench_health() {
    local db=$1 tables
    shift
    tables=$(printf "'%s'," "$@")
    sleep 0.5   # the workload's backend reports its counts as it exits
    bench_psql "$db" -At -F ' ' -c "
        SELECT c.relname, t.tuple_count, coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
               replace(pg_size_pretty(pg_relation_size(c.oid)), ' ', ''),
               replace(pg_size_pretty(pg_indexes_size(c.oid)), ' ', ''),
               replace(pg_size_pretty(pg_total_relation_size(c.oid)), ' ', ''),
               coalesce(to_char(s.last_autovacuum, 'HH24:MI:SS'), '-')
          FROM pg_class c
          CROSS JOIN LATERAL pgstattuple(c.oid) t
          LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
         WHERE c.relnamespace = 'journey'::regnamespace AND c.relname IN (${tables%,})
         ORDER BY array_position(ARRAY[${tables%,}]::name[], c.relname)" |
        awk '{ printf "      %-21s rows %8d  n_live_tup %8d  n_dead_tup %7d  heap %7s + indexes %7s = %7s  autovacuum %s\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
}

# "<execution time> ms (<the plan's top buffer counts>)" of EXPLAIN
# (ANALYZE, BUFFERS) of query $2 in database $1, in a transaction rolled
# back so that a FOR UPDATE keeps no lock.
bench_explain() {
    bench_psql "$1" -At -c "BEGIN" -c "EXPLAIN (ANALYZE, BUFFERS) $2" -c "ROLLBACK" | awk '
        /Buffers:/ && b == "" { sub(/^ *Buffers: */, ""); b = $0 }
        /Execution Time:/ { t = $3 }
        END { printf "%.3f ms (buffers: %s)\n", t, b }'
}

# Waits (30 s at most) until database $1 has its journey sender; fails
# otherwise.  The launcher starts one once the database has journey.
bench_wait_sender() {
    local n
    for _ in $(seq 300); do
        n=$(bench_psql postgres -At -c "SELECT count(*) FROM pg_stat_activity
            WHERE backend_type = 'journey sender' AND datname = '$1'")
        [ "$n" = 1 ] && return 0
        sleep 0.1
    done
    echo "no sender for database $1" >&2
    return 1
}

# Queues $3 email messages of business $2 in database $1 in one
# transaction; prints the moment (epoch) just before its commit.
bench_queue_messages() {
    bench_psql "$1" -At <<SQL
BEGIN;
INSERT INTO journey.messages (business_id, channel, to_address, subject, body)
SELECT '$2', 'email', 'c' || g || '@example.com', 'Hello', 'Hello customer ' || g
  FROM generate_series(1, $3) g;
SELECT extract(epoch FROM clock_timestamp());
COMMIT;
SQL
}

# Waits (10 minutes at most) until database $1 has nothing queued or
# sending; prints that moment (epoch).  Polls from one session, every
# 20 ms, committing between polls so as to hold back no vacuum horizon: a
# psql per poll would take a good part of a core from the sender on this
# two-core machine.
bench_drained() {
    bench_psql "$1" -At -c "DO \$\$
BEGIN
  FOR i IN 1..30000 LOOP
    EXIT WHEN NOT EXISTS (SELECT 1 FROM journey.messages WHERE status = 'queued')
          AND NOT EXISTS (SELECT 1 FROM journey.messages WHERE status = 'sending');
    COMMIT;
    PERFORM pg_sleep(0.02);
  END LOOP;
  RAISE NOTICE 'drained %', extract(epoch FROM clock_timestamp());
END
\$\$" 2>&1 | sed -n 's/.*NOTICE: *drained //p'
}
