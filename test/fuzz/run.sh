#!/usr/bin/env bash
# Builds and runs journey's libFuzzer targets (clang, with ASan and UBSan).
#
#   bash test/fuzz/run.sh [SECONDS]     default 600 per target
#
# Targets: fuzz_template (src/template.c's parser and path check).  Hook for
# the definition parser: when src/definition.c and test/fuzz/fuzz_definition.c
# both exist, fuzz_definition is built the same way (TARGETS below) and run
# too.  Findings (crashes, leaks, timeouts) land in $OUT/artifacts; the
# corpus grows in $OUT/corpus-<target>.  Prints executions per target.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
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

TARGETS="template"
if [ -f "$src/src/definition.c" ] && [ -f "$here/fuzz_definition.c" ]; then
    TARGETS="$TARGETS definition"
fi

cflags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
        -I"$src/src" -I"$here" -I"$inc" -Wno-ignored-attributes)
for t in $TARGETS; do
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
