# Shared by the benchmark scripts: a throwaway PostgreSQL cluster on a Unix
# socket in a temporary directory, with journey (and pg_cron) preloaded.
# Source it, then: bench_start [extra postgresql.conf lines]; bench_psql ...;
# bench_stop runs on exit.

PG_BIN=${PG_BIN:-$(dirname "$(command -v pg_config >/dev/null && pg_config --bindir || echo /usr/lib/postgresql/15/bin/x)")}
[ -x "$PG_BIN/postgres" ] || PG_BIN=$(pg_config --bindir)
BENCH_PORT=${BENCH_PORT:-54$(( RANDOM % 90 + 10 ))}
BENCH_DB=bench

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

bench_start() {
    BENCH_DIR=$(mktemp -d /tmp/journey-bench.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres: "$BENCH_DIR"
    as_postgres "$PG_BIN/initdb" -D "$BENCH_DIR/data" -A trust -U postgres >/dev/null
    cat >> "$BENCH_DIR/data/postgresql.conf" <<CONF
port = $BENCH_PORT
listen_addresses = ''
unix_socket_directories = '$BENCH_DIR'
shared_preload_libraries = 'pg_cron,journey'
cron.database_name = '$BENCH_DB'
journey.database_name = '$BENCH_DB'
shared_buffers = 2GB
wal_buffers = 64MB
max_wal_size = 20GB
checkpoint_timeout = 30min
max_connections = 200
$*
CONF
    as_postgres "$PG_BIN/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" -w start >/dev/null
    trap bench_stop EXIT
    as_postgres "$PG_BIN/createdb" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres "$BENCH_DB"
}

bench_stop() {
    [ -n "${BENCH_DIR:-}" ] || return 0
    as_postgres "$PG_BIN/pg_ctl" -D "$BENCH_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$BENCH_DIR"
    BENCH_DIR=
}

bench_psql() {
    as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -d "$BENCH_DB" "$@"
}

# Milliseconds a statement takes, measured by the server (EXPLAIN ANALYZE
# would add per-row overhead; \timing includes only the round trip).
bench_time_ms() {
    bench_psql -At -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
}

# "median min max" of numbers on standard input.
bench_stats() {
    sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f %.1f %.1f\n", m, v[1], v[NR] }'
}

bench_machine() {
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
}
