#!/usr/bin/env bash
# Builds and runs journey's libFuzzer targets (clang, with ASan and UBSan).
#
#   bash test/fuzz/run.sh [TARGET] [SECONDS]
#
# TARGET: template, definition or all (the default); SECONDS: per target,
# default 600 (a lone number is SECONDS for all targets).
# Targets: fuzz_template (src/template.c's parser and path check, a
# standalone binary over fuzz_shim.c) and fuzz_definition (the definition
# grammar, src/definition*.c, built as a library that a single-user
# PostgreSQL backend loads: the grammar walks jsonb and numerics, which only
# the server provides exactly; see fuzz_definition.c).  Findings (crashes,
# sanitizer reports, unexpected errors, leaks, timeouts) land in
# $OUT/artifacts; the corpus grows in $OUT/corpus-<target>.  Prints
# executions per target.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
which=all
if [ $# -gt 0 ] && ! [[ $1 =~ ^[0-9]+$ ]]; then which=$1; shift; fi
secs=${1:-600}
OUT=${OUT:-/tmp/journey-fuzz}
PG_CONFIG=${PG_CONFIG:-pg_config}
mkdir -p "$OUT/artifacts"

if ! command -v clang >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y clang >/dev/null
    else
        echo "clang is missing: apt-get install clang" >&2; exit 1
    fi
fi

inc=$("$PG_CONFIG" --includedir-server)
# Frontend libpgcommon/libpgport: StringInfo, psprintf, the UTF-8 tables.
libdir=$("$PG_CONFIG" --pkglibdir)
for d in "$libdir" "$("$PG_CONFIG" --libdir)" /usr/lib/postgresql/15/lib; do
    [ -f "$d/libpgcommon.a" ] && { pglib=$d; break; }
done
: "${pglib:?libpgcommon.a not found (install postgresql-server-dev-15)}"

case $which in
    all) TARGETS="template definition" ;;
    template|definition) TARGETS=$which ;;
    *) echo "unknown target $which: template, definition or all" >&2; exit 2 ;;
esac

# The definition target: a library for a single-user backend.  No ASan: a
# server that preloads its runtime hangs at start (glibc's locale lock), so
# memory errors show as crashes and the per-input context check; UBSan and
# coverage are compiled in.
run_definition() {
    local rt lib data corpus run_as=() sql
    rt=$(clang -print-resource-dir)/lib/linux
    lib=$OUT/fuzz_definition.so
    clang -g -O1 -fPIC -shared -shared-libsan -fsanitize=fuzzer-no-link,undefined \
        -fno-sanitize-recover=undefined -std=gnu99 -I"$src/src" -I"$here" -I"$inc" \
        -DJOURNEY_TZDIR='"/usr/share/zoneinfo"' -DJOURNEY_VERSION='"fuzz"' -Wno-ignored-attributes \
        -o "$lib" "$here/fuzz_definition.c" "$src/src/definition.c" \
        "$src/src/definition_condition.c" "$src/src/template.c" "$src/src/util.c" \
        -Wl,--whole-archive "$rt/libclang_rt.fuzzer_no_main-x86_64.a" -Wl,--no-whole-archive \
        -lstdc++ -Wl,-rpath,"$rt"
    corpus=$OUT/corpus-definition
    mkdir -p "$corpus"
    # Seeds: the definitions of the regression tests, and their steps.
    python3 "$here/seeds_definition.py" "$src/sql" "$corpus" >/dev/null
    data=$OUT/pgdata
    [ "$(id -u)" = 0 ] && { chown -R postgres: "$OUT"; run_as=(runuser -u postgres --); }
    bindir=$("$PG_CONFIG" --bindir)
    [ -f "$data/PG_VERSION" ] || "${run_as[@]}" "$bindir/initdb" -D "$data" -A trust -E UTF8 --locale=C >/dev/null
    rm -f "$data/postmaster.pid"
    sql="CREATE OR REPLACE FUNCTION fuzz_definition_run(text) RETURNS void LANGUAGE C AS '$lib';"
    sql+=" SELECT fuzz_definition_run('-max_total_time=$secs -timeout=10 -rss_limit_mb=2048"
    sql+=" -max_len=65536 -dict=$here/definition.dict -artifact_prefix=$OUT/artifacts/definition-"
    sql+=" -print_final_stats=1 $corpus')"
    echo "$sql" | "${run_as[@]}" "$bindir/postgres" --single -D "$data" postgres > "$OUT/definition.log" 2>&1 || true
    if ! grep -q '^Done [0-9]* runs' "$OUT/definition.log"; then
        echo "fuzz_definition found a problem: see $OUT/definition.log and $OUT/artifacts"
        grep -E 'FUZZ FINDING|runtime error|ERROR|deadly|Test unit written' "$OUT/definition.log" | head -20
        return 1
    fi
    echo "fuzz_definition: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$OUT/definition.log" | grep -o '[0-9]*$') executions in ${secs}s, corpus $(ls "$corpus" | wc -l) inputs, no findings"
}

cflags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
        -I"$src/src" -I"$here" -I"$inc" -Wno-ignored-attributes)
for t in $TARGETS; do
    if [ "$t" = definition ]; then run_definition || exit 1; continue; fi
    bin=$OUT/fuzz_$t
    clang "${cflags[@]}" -o "$bin" "$here/fuzz_$t.c" "$src/src/$t.c" \
        "$here/fuzz_shim.c" "$here/fuzz_stubs.c" \
        "$pglib/libpgcommon.a" "$pglib/libpgport.a"
    corpus=$OUT/corpus-$t
    mkdir -p "$corpus"
    # Seeds: the templates of the regression tests.
    if [ "$t" = template ] && [ -z "$(ls -A "$corpus")" ]; then
        printf '%s' 'Thanks, {{customer.first_name}}!' > "$corpus/seed1"
        printf '%s' '{{ customer.name | default: "there" }} at {{business.name}}' > "$corpus/seed2"
        printf '%s' '{{ enrollment.meta.x }} {{ event.a.b.c }} {{review_link}} {{' > "$corpus/seed3"
    fi
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -max_len=4096 \
        -artifact_prefix="$OUT/artifacts/$t-" -print_final_stats=1 "$corpus" \
        2> "$OUT/$t.log" || { echo "fuzz_$t found a problem: see $OUT/$t.log and $OUT/artifacts"; tail -40 "$OUT/$t.log"; exit 1; }
    echo "fuzz_$t: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$OUT/$t.log" | grep -o '[0-9]*$') executions in ${secs}s, corpus $(ls "$corpus" | wc -l) inputs, no findings"
done
