#!/usr/bin/env bash
# Runs journey's whole test suite: installs what is missing (as root),
# builds and installs the extension, then runs the pg_regress tests and the
# TAP tests against throwaway servers as the postgres OS user.
#
#   bash test/run.sh              everything
#   bash test/run.sh regress      only pg_regress
#   bash test/run.sh tap [t/x.pl] only TAP (optionally one file)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
what=${1:-all}
PG_CONFIG=${PG_CONFIG:-pg_config}

if [ "$(id -u)" = 0 ]; then
    bash "$src/test/install-deps.sh"
fi
PG_CONFIG=$(command -v "$PG_CONFIG" || echo /usr/lib/postgresql/15/bin/pg_config)
[ -x "$PG_CONFIG" ] || PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

make -C "$src" -s PG_CONFIG="$PG_CONFIG" PG_CFLAGS="${PG_CFLAGS:--Werror}"
make -C "$src" -s PG_CONFIG="$PG_CONFIG" install

# Postgres refuses to run as root: test from a copy the postgres user owns.
run_as=()
work=$src
if [ "$(id -u)" = 0 ]; then
    work=$(mktemp -d /tmp/journey-test.XXXXXX)
    rsync -a --exclude .git --exclude tmp_check --exclude results "$src/" "$work/"
    chown -R postgres: "$work"
    run_as=(runuser -u postgres --)
fi

status=0
if [ "$what" = all ] || [ "$what" = regress ]; then
    "${run_as[@]}" make -C "$work" -s PG_CONFIG="$PG_CONFIG" installcheck \
        TAP_TESTS= \
        EXTRA_REGRESS_OPTS="--temp-instance=$work/tmp_check_regress --temp-config=$work/test/regress.conf" \
        || { status=$?; head -c 20000 "$work/regression.diffs" 2>/dev/null || true; }
fi
if [ "$what" = all ] || [ "$what" = tap ]; then
    tests=${2:-test/t/*.pl}
    "${run_as[@]}" make -C "$work" -s PG_CONFIG="$PG_CONFIG" installcheck \
        REGRESS= PROVE_TESTS="$tests" PROVE_FLAGS="--timer" || status=$?
    if [ $status -ne 0 ]; then
        for f in "$work"/tmp_check/log/*; do echo "== $f"; tail -50 "$f"; done 2>/dev/null | tail -400 || true
    fi
fi
if [ "$work" != "$src" ]; then
    if [ $status -eq 0 ]; then rm -rf "$work"; else echo "test output kept in $work"; fi
fi
exit $status
