#!/usr/bin/env bash
# Runs journey's pg_regress suites with the server (postmaster, backends,
# the sender and executor workers, pg_cron) under valgrind's memcheck, then
# summarises the reports: how many in all, and how many whose stack enters
# journey's own code (those are bugs to fix; the rest are Postgres' or
# libraries', since Debian's server lacks Postgres' valgrind annotations).
# Too slow for CI (20-50x): not part of test/run.sh.
#
#   bash test/valgrind/run.sh                 every suite (about 15 min on 2 cores)
#   bash test/valgrind/run.sh stats optout    only those suites
#   bash test/valgrind/run.sh --tap test/t/020_sender_webhook.pl ...
#                                             TAP tests instead (the sender
#                                             and libcurl under memcheck)
#   VG_KEEP=1 ...                             keep the output dir even if clean
#
# The temporary instance is the one test/run.sh regress uses
# (test/regress.conf); pg_regress (or the TAP tests' pg_ctl) starts it from
# a bin dir whose postgres is a wrapper that execs the real one under
# valgrind.  pg_ctl is a copy there, not a link: it runs the postgres next
# to itself.  Timing assertions may fail under valgrind; what counts here
# are the reports.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
PG_CONFIG=$(command -v "$PG_CONFIG" || echo /usr/lib/postgresql/15/bin/pg_config)

if [ "$(id -u)" = 0 ]; then
    bash "$src/test/install-deps.sh"
    if ! command -v valgrind >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
    fi
fi
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }

make -C "$src" -s PG_CONFIG="$PG_CONFIG" PG_CFLAGS="${PG_CFLAGS:--Werror}"
make -C "$src" -s PG_CONFIG="$PG_CONFIG" install

tap=()
if [ "${1:-}" = --tap ]; then
    shift
    tap=("$@")
    [ ${#tap[@]} -gt 0 ] || tap=(test/t/020_sender_webhook.pl test/t/022_sender_providers.pl test/t/060_sender_hardening.pl)
    suites=()
elif [ $# -gt 0 ]; then
    suites=("$@")
else
    # The order of make installcheck: each suite's opening DROP EXTENSION
    # IF EXISTS notice depends on the one before it.
    suites=()
    for f in "$src"/sql/*.sql; do suites+=("$(basename "$f" .sql)"); done
fi

run_as=()
work=$(mktemp -d /tmp/journey-valgrind.XXXXXX)
rsync -a --exclude .git --exclude tmp_check --exclude results "$src/" "$work/"
logs=$work/vg
mkdir -p "$logs" "$work/vgbin"
bindir=$("$PG_CONFIG" --bindir)
for b in "$bindir"/*; do ln -s "$b" "$work/vgbin/"; done
rm -f "$work/vgbin/postgres" "$work/vgbin/pg_ctl" "$work/vgbin/postmaster"
cp "$bindir/pg_ctl" "$work/vgbin/pg_ctl"
cat > "$work/vgbin/postgres" <<WRAP
#!/bin/sh
exec nice -n 10 valgrind --tool=memcheck --trace-children=yes --track-origins=yes \\
  --read-var-info=no --error-limit=no --num-callers=40 \\
  --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
  --suppressions="$work/test/valgrind/journey.supp" \\
  --log-file="$logs/vg.%p.log" "$bindir/postgres" "\$@"
WRAP
chmod +x "$work/vgbin/postgres"
if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$work"
    run_as=(runuser -u postgres --)
fi

# Starting and stopping take minutes under valgrind.
export PGCTLTIMEOUT=${PGCTLTIMEOUT:-900}
start=$(date +%s)
status=0
export PG_TEST_TIMEOUT_DEFAULT=${PG_TEST_TIMEOUT_DEFAULT:-900}
if [ ${#tap[@]} -gt 0 ]; then
    # PGXS puts $(bindir) first in the TAP tests' PATH.
    "${run_as[@]}" env PGCTLTIMEOUT="$PGCTLTIMEOUT" PG_TEST_TIMEOUT_DEFAULT="$PG_TEST_TIMEOUT_DEFAULT" \
        make -C "$work" -s PG_CONFIG="$PG_CONFIG" installcheck \
        REGRESS= bindir="$work/vgbin" PROVE_TESTS="${tap[*]}" PROVE_FLAGS="--timer" || status=$?
    echo "TAP under memcheck: ${tap[*]} in $(( $(date +%s) - start )) s, prove status $status"
else
    "${run_as[@]}" env PGCTLTIMEOUT="$PGCTLTIMEOUT" make -C "$work" -s PG_CONFIG="$PG_CONFIG" installcheck \
        TAP_TESTS= REGRESS="${suites[*]}" \
        EXTRA_REGRESS_OPTS="--bindir=$work/vgbin --temp-instance=$work/tmp_check_regress --temp-config=$work/test/regress.conf" \
        || status=$?
    echo "regress under memcheck: ${#suites[@]} suites in $(( $(date +%s) - start )) s, pg_regress status $status"
    [ $status -eq 0 ] || echo "(diffs in $work/regression.diffs; timing diffs under valgrind are expected)"
fi

python3 "$src/test/valgrind/summarize.py" "$logs" | tee "$work/vg-summary.txt"
journey_reports=$(sed -n 's/^reports entering journey: //p' "$work/vg-summary.txt")
if [ "${journey_reports:-1}" != 0 ] || [ -n "${VG_KEEP:-}" ] || [ $status -ne 0 ]; then
    echo "valgrind logs kept in $logs (journey's reports: $work/vg-summary.txt)"
else
    rm -rf "$work"
fi
[ "${journey_reports:-1}" = 0 ]
