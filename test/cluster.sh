# Shared by the demo and the benchmarks: a throwaway PostgreSQL cluster on a
# Unix socket in a temporary directory, with pg_cron and journey preloaded.
# Source it, then: cluster_start [extra postgresql.conf lines]; cluster_psql
# ...; cluster_stop runs on exit.  BENCH_TUNING holds the settings the
# benchmarks add (more shared memory, fewer checkpoints).

PG_BIN=${PG_BIN:-$(dirname "$(command -v pg_config >/dev/null && pg_config --bindir || echo /usr/lib/postgresql/15/bin/x)")}
[ -x "$PG_BIN/postgres" ] || PG_BIN=$(pg_config --bindir)
CLUSTER_PORT=${CLUSTER_PORT:-54$(( RANDOM % 90 + 10 ))}
CLUSTER_DB=${CLUSTER_DB:-journey}
BENCH_TUNING="shared_buffers = 2GB
wal_buffers = 64MB
max_wal_size = 20GB
checkpoint_timeout = 30min"

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cluster_start() {
    CLUSTER_DIR=$(mktemp -d /tmp/journey-cluster.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres: "$CLUSTER_DIR"
    as_postgres "$PG_BIN/initdb" -D "$CLUSTER_DIR/data" -A trust -U postgres >/dev/null
    cat >> "$CLUSTER_DIR/data/postgresql.conf" <<CONF
port = $CLUSTER_PORT
listen_addresses = ''
unix_socket_directories = '$CLUSTER_DIR'
shared_preload_libraries = 'pg_cron,journey'
cron.database_name = '$CLUSTER_DB'
journey.database_name = '$CLUSTER_DB'
max_connections = 200
$*
CONF
    as_postgres "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w start >/dev/null
    trap cluster_stop EXIT
    as_postgres "$PG_BIN/createdb" -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres "$CLUSTER_DB"
}

cluster_stop() {
    [ -n "${CLUSTER_DIR:-}" ] || return 0
    as_postgres "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$CLUSTER_DIR"
    CLUSTER_DIR=
}

cluster_psql() {
    as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres -d "$CLUSTER_DB" "$@"
}

bench_machine() {
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
}
