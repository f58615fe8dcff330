#!/usr/bin/env bash
# W4 before and after a change (issue 12: "W4 must not drop by more than
# 10%"): the sender draining N messages, queued in one transaction, to
# test/sinks/fast_sink.c on 127.0.0.1, for two builds of journey run in
# turns on the same machine, each in a fresh cluster of its own.
#
#   BEFORE=a53a0b0 bash test/bench/w4_compare.sh      (AFTER: the work tree)
#   BEFORE=a53a0b0 AFTER=HEAD N=20000 RUNS=5 bash test/bench/w4_compare.sh
#
# BEFORE and AFTER are git revisions of this repository; AFTER may be
# "tree" (the default), the work tree with its uncommitted changes.  Each
# build is private (lib.sh's bench_private_build): nothing is installed
# system-wide.  AFTER_SQL runs in the after build's database before each
# drain (e.g. "DROP INDEX journey.sequence_enrollments_stats_idx" to take
# another issue's index out of the comparison).  BEFORE_CONF and AFTER_CONF
# add postgresql.conf lines to either, e.g. the same tree twice:
#   BEFORE=tree BEFORE_CONF="journey.executor_in_worker = off" bash test/bench/w4_compare.sh
# Prints messages/s per run and the median of each.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

BEFORE=${BEFORE:-a53a0b0}
AFTER=${AFTER:-tree}
N=${N:-20000}
RUNS=${RUNS:-5}
B=00000000-0000-0000-0000-0000000000b1

WORK=$(mktemp -d /tmp/journey-w4cmp.XXXXXX)
chmod 755 "$WORK"
sinkpid=
cleanup() {
    if [ -n "$sinkpid" ]; then kill "$sinkpid" 2>/dev/null || true; fi
    cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

# A private build of revision $2 under $WORK/$1; its PG_BIN goes to $WORK/$1.bin.
build() {
    local name=$1 rev=$2 src
    if [ "$rev" = tree ]; then
        src=$BENCH_SRC
    else
        src=$WORK/$name.src
        mkdir -p "$src"
        git -C "$BENCH_SRC" archive "$rev" | tar -x -C "$src"
    fi
    mkdir -p "$WORK/$name"
    ( BENCH_SRC=$src; bench_private_build "$WORK/$name"; echo "$PG_BIN" > "$WORK/$name.bin" )
    chmod -R a+rX "$WORK/$name"
}

gcc -O2 -o "$WORK/fast_sink" "$BENCH_SRC/test/sinks/fast_sink.c"
ulimit -n 1024
build before "$BEFORE"
build after "$AFTER"
echo "journey W4 before/after: $N messages, $RUNS runs each, in turns; before = $BEFORE${BEFORE_CONF:+ ($BEFORE_CONF)}, after = $AFTER${AFTER_CONF:+ ($AFTER_CONF)}${AFTER_SQL:+ (then: $AFTER_SQL)}"
bench_machine

SINKPORT=$((20000 + RANDOM % 20000))
# One drain with build $1; prints messages/s.
drain() {
    local name=$1 t0 t1 sent conf
    PG_BIN=$(cat "$WORK/$name.bin")
    rm -f "$WORK/sink.txt"
    "$WORK/fast_sink" "$SINKPORT" "$WORK/sink.txt" > "$WORK/sink.out" &
    sinkpid=$!
    for _ in $(seq 50); do grep -q ready "$WORK/sink.out" 2>/dev/null && break; sleep 0.1; done
    if [ "$name" = before ]; then conf=${BEFORE_CONF:-}; else conf=${AFTER_CONF:-}; fi
    cluster_start "$BENCH_TUNING
$conf" >/dev/null
    trap cleanup EXIT
    bench_psql journey -o /dev/null <<SQL
CREATE EXTENSION journey;
INSERT INTO journey.businesses (id, name) VALUES ('$B', 'Acme Plumbing');
INSERT INTO journey.providers (channel, kind, endpoint, from_address)
VALUES ('email', 'webhook', 'http://127.0.0.1:$SINKPORT/ok', 'bench@example.com');
SQL
    if [ "$name" = after ] && [ -n "${AFTER_SQL:-}" ]; then bench_psql journey -q -c "$AFTER_SQL"; fi
    bench_wait_sender journey
    t0=$(bench_queue_messages journey "$B" "$N")
    t1=$(bench_drained journey)
    sent=$(bench_psql journey -At -c "SELECT count(*) FROM journey.messages WHERE status = 'sent'")
    cluster_stop
    kill "$sinkpid"; wait "$sinkpid" || true; sinkpid=
    [ "$sent" = "$N" ] || { echo "only $sent of $N sent with $name" >&2; exit 1; }
    awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", n / (b - a) }'
}

for run in $(seq "$RUNS"); do
    for name in before after; do
        r=$(drain "$name")
        echo "$r" >> "$WORK/$name.rates"
        printf '   run %d %-6s %7s messages/s\n' "$run" "$name" "$r"
    done
done
for name in before after; do
    read -r med lo hi < <(bench_stats < "$WORK/$name.rates")
    printf '   %-6s median %7.0f messages/s (min %.0f, max %.0f)\n' "$name" "$med" "$lo" "$hi"
    echo "$med" > "$WORK/$name.median"
done
awk -v a="$(cat "$WORK/before.median")" -v b="$(cat "$WORK/after.median")" \
    'BEGIN { printf "   after / before: %+.1f%%\n", (b / a - 1) * 100 }'
