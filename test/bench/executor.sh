#!/usr/bin/env bash
# Benchmark of journey.advance_due_enrollments against two references doing
# the same work on the same schema (same rows in messages, enrollment_log
# and sequence_enrollments):
#   floor      hand-written set-based SQL, rendering hard-coded for this
#              one template (one statement, and split in four statements)
#   row        a row-by-row PL/pgSQL loop, rendering hard-coded likewise
#   row-generic a row-by-row PL/pgSQL executor as one would write it
#              generically: step looked up and templates rendered per row
# plus the time of an idle call (nothing due).
#
# Builds a throwaway cluster (temp dir, unix socket, port BENCH_PORT) with
# the extension installed for PG_CONFIG (bash test/run.sh installs it), loads
# N due enrollments whose next step is a send_email, and runs each variant
# on its own fresh copy of that database, REPEAT times, keeping the best.
# Prints numbers only; it asserts nothing.
#
#   PG_CONFIG=... bash test/bench/executor.sh [N]
set -euo pipefail
N=${1:-100000}
REPEAT=${REPEAT:-2}
PORT=${BENCH_PORT:-54431}
PG_CONFIG=${PG_CONFIG:-pg_config}
bin=$("$PG_CONFIG" --bindir)
dir=$(mktemp -d /tmp/journey-bench.XXXXXX)
run_as=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    run_as=(runuser -u postgres --)
fi
cleanup() {
    "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

cd "$dir"
"${run_as[@]}" "$bin/initdb" -D "$dir/data" -A trust -E UTF8 >/dev/null
"${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start -o \
    "-p $PORT -k $dir -c listen_addresses='' -c shared_buffers=256MB -c max_wal_size=4GB -c checkpoint_timeout=30min" >/dev/null
psql() { "${run_as[@]}" "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$PORT" "$@"; }

T="2027-01-12 15:00:00+00"
psql -d postgres -c "CREATE DATABASE bench_tmpl"
psql -d bench_tmpl <<SQL
CREATE EXTENSION journey;
INSERT INTO journey.businesses (id, name, timezone, google_review_url)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'Acme Plumbing', 'America/New_York', 'https://g.example/r');
INSERT INTO journey.customers (business_id, full_name, email, phone)
SELECT '00000000-0000-0000-0000-0000000000b1', 'Ada' || i || ' Lovelace', 'c' || i || '@example.com', '+1555' || i
  FROM generate_series(1, $N) i;
-- Suppressions the check must probe (none matches a customer).
INSERT INTO journey.suppressions (business_id, channel, address)
SELECT '00000000-0000-0000-0000-0000000000b1', 'email', 'gone' || i || '@example.com'
  FROM generate_series(1, 1000) i;
INSERT INTO journey.sequences (id, business_id, name, status, rate_per_hour, rate_per_day)
VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b1', 'Thanks', 'active', NULL, NULL);
INSERT INTO journey.sequence_steps (business_id, sequence_id, kind, step_index, wait_ms, message_purpose, message_config)
VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', 'send_email', 1, 0, 'thank_you',
        '{"subject": "Thanks, {{customer.first_name}}!", "body": "Thank you for choosing {{business.name}}."}'),
       ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', 'wait', 2, 86400000, NULL, '{}');
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, current_step_index, next_run_at, enrolled_at)
SELECT business_id, '00000000-0000-0000-0000-0000000000a1', id, 1,
       timestamptz '$T' - (random() * interval '1 hour'), timestamptz '$T' - interval '1 hour'
  FROM journey.customers;
VACUUM ANALYZE;
SQL
psql -d postgres -c "CHECKPOINT"

JOURNEY="SELECT journey.advance_due_enrollments($N, '$T');"

FLOOR="WITH due AS (
  SELECT e.id, e.business_id, e.sequence_id, e.customer_id, c.email, c.full_name,
         b.name AS business_name,
         EXISTS (SELECT 1 FROM journey.suppressions su
                  WHERE su.business_id = e.business_id AND su.channel = 'email'
                    AND su.address = c.email) AS suppressed
    FROM journey.sequence_enrollments e
    JOIN journey.sequences s ON s.id = e.sequence_id
    JOIN journey.customers c ON c.id = e.customer_id
    JOIN journey.businesses b ON b.id = e.business_id
   WHERE e.status = 'active' AND e.next_run_at <= '$T' AND s.status = 'active'
   ORDER BY e.next_run_at LIMIT $N
     FOR UPDATE OF e SKIP LOCKED
), msg AS (
  INSERT INTO journey.messages (business_id, enrollment_id, sequence_id, step_index,
         customer_id, channel, message_purpose, to_address, subject, body, send_after)
  SELECT business_id, id, sequence_id, 1, customer_id, 'email', 'thank_you', email,
         'Thanks, ' || split_part(full_name, ' ', 1) || '!',
         'Thank you for choosing ' || business_name || '.', '$T'
    FROM due WHERE email IS NOT NULL AND NOT suppressed
      ON CONFLICT (enrollment_id, step_index) DO NOTHING
), lg AS (
  INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
  SELECT business_id, id, 1,
         CASE WHEN email IS NULL THEN 'skipped_no_address'
              WHEN suppressed THEN 'skipped_suppressed' ELSE 'queued' END,
         CASE WHEN email IS NULL THEN 'customer has no email address'
              WHEN suppressed THEN email || ' is suppressed for email'
              ELSE 'email to ' || email END, '$T'
    FROM due
)
UPDATE journey.sequence_enrollments e
   SET current_step_index = 2, next_run_at = timestamptz '$T' + interval '86400000 ms',
       updated_at = now()
  FROM due WHERE e.id = due.id;"

# The same as several set-based statements: claimed rows in a temp table,
# the inserts before the update (their foreign-key checks then meet one
# version of each enrollment row), rows inserted in enrollment id order (as
# journey does: the uuid indexes and key checks are then walked in order).
# The floor is the faster of the two.
FLOOR2="DO \$\$
BEGIN
  CREATE TEMP TABLE due ON COMMIT DROP AS
  SELECT e.id, e.business_id, e.sequence_id, e.customer_id, c.email, c.full_name,
         b.name AS business_name,
         EXISTS (SELECT 1 FROM journey.suppressions su
                  WHERE su.business_id = e.business_id AND su.channel = 'email'
                    AND su.address = c.email) AS suppressed
    FROM (SELECT * FROM journey.sequence_enrollments e
           WHERE e.status = 'active' AND e.next_run_at <= '$T'
             AND EXISTS (SELECT FROM journey.sequences s
                          WHERE s.id = e.sequence_id AND s.status = 'active')
           ORDER BY e.next_run_at LIMIT $N
             FOR UPDATE OF e SKIP LOCKED) e
    JOIN journey.customers c ON c.id = e.customer_id
    JOIN journey.businesses b ON b.id = e.business_id;
  INSERT INTO journey.messages (business_id, enrollment_id, sequence_id, step_index,
         customer_id, channel, message_purpose, to_address, subject, body, send_after)
  SELECT business_id, id, sequence_id, 1, customer_id, 'email', 'thank_you', email,
         'Thanks, ' || split_part(full_name, ' ', 1) || '!',
         'Thank you for choosing ' || business_name || '.', '$T'
    FROM due WHERE email IS NOT NULL AND NOT suppressed
   ORDER BY id
      ON CONFLICT (enrollment_id, step_index) DO NOTHING;
  INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
  SELECT business_id, id, 1,
         CASE WHEN email IS NULL THEN 'skipped_no_address'
              WHEN suppressed THEN 'skipped_suppressed' ELSE 'queued' END,
         CASE WHEN email IS NULL THEN 'customer has no email address'
              WHEN suppressed THEN email || ' is suppressed for email'
              ELSE 'email to ' || email END, '$T'
    FROM due ORDER BY id;
  UPDATE journey.sequence_enrollments e
     SET current_step_index = 2, next_run_at = timestamptz '$T' + interval '86400000 ms',
         updated_at = now()
    FROM due WHERE e.id = due.id;
END
\$\$;"

ROW="DO \$\$
DECLARE
  r record;
  t timestamptz := '$T';
BEGIN
  FOR r IN
    SELECT e.id, e.business_id, e.sequence_id, e.customer_id, c.email, c.full_name,
           b.name AS business_name
      FROM journey.sequence_enrollments e
      JOIN journey.sequences s ON s.id = e.sequence_id
      JOIN journey.customers c ON c.id = e.customer_id
      JOIN journey.businesses b ON b.id = e.business_id
     WHERE e.status = 'active' AND e.next_run_at <= t AND s.status = 'active'
     ORDER BY e.next_run_at LIMIT $N
       FOR UPDATE OF e SKIP LOCKED
  LOOP
    IF r.email IS NULL THEN
      INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
      VALUES (r.business_id, r.id, 1, 'skipped_no_address', 'customer has no email address', t);
    ELSIF EXISTS (SELECT 1 FROM journey.suppressions su
                   WHERE su.business_id = r.business_id AND su.channel = 'email'
                     AND su.address = r.email) THEN
      INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
      VALUES (r.business_id, r.id, 1, 'skipped_suppressed', r.email || ' is suppressed for email', t);
    ELSE
      INSERT INTO journey.messages (business_id, enrollment_id, sequence_id, step_index,
             customer_id, channel, message_purpose, to_address, subject, body, send_after)
      VALUES (r.business_id, r.id, r.sequence_id, 1, r.customer_id, 'email', 'thank_you', r.email,
              'Thanks, ' || split_part(r.full_name, ' ', 1) || '!',
              'Thank you for choosing ' || r.business_name || '.', t)
      ON CONFLICT (enrollment_id, step_index) DO NOTHING;
      INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
      VALUES (r.business_id, r.id, 1, 'queued', 'email to ' || r.email, t);
    END IF;
    UPDATE journey.sequence_enrollments
       SET current_step_index = 2, next_run_at = t + interval '86400000 ms', updated_at = now()
     WHERE id = r.id;
  END LOOP;
END
\$\$;"

# A row-by-row PL/pgSQL executor written generically, the way one would
# without C: per enrollment, read its step, build the template context and
# render the step's templates with journey.render_template.
ROWGEN="DO \$\$
DECLARE
  r record;
  st record;
  ctx jsonb;
  t timestamptz := '$T';
BEGIN
  FOR r IN
    SELECT e.*, c.email, c.full_name, c.phone, c.attributes, b.name AS business_name,
           b.google_review_url
      FROM journey.sequence_enrollments e
      JOIN journey.sequences s ON s.id = e.sequence_id
      JOIN journey.customers c ON c.id = e.customer_id
      JOIN journey.businesses b ON b.id = e.business_id
     WHERE e.status = 'active' AND e.next_run_at <= t AND s.status = 'active'
     ORDER BY e.next_run_at LIMIT $N
       FOR UPDATE OF e SKIP LOCKED
  LOOP
    SELECT * INTO st FROM journey.sequence_steps
     WHERE sequence_id = r.sequence_id AND step_index = r.current_step_index;
    IF r.email IS NULL THEN
      INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
      VALUES (r.business_id, r.id, st.step_index, 'skipped_no_address', 'customer has no email address', t);
    ELSIF EXISTS (SELECT 1 FROM journey.suppressions su
                   WHERE su.business_id = r.business_id AND su.channel = 'email'
                     AND su.address = r.email) THEN
      INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
      VALUES (r.business_id, r.id, st.step_index, 'skipped_suppressed', r.email || ' is suppressed for email', t);
    ELSE
      ctx := jsonb_build_object(
        'customer', jsonb_build_object('full_name', r.full_name, 'email', r.email,
                                       'phone', r.phone, 'attributes', r.attributes),
        'business', jsonb_build_object('name', r.business_name),
        'review_link', r.google_review_url,
        'enrollment', jsonb_build_object('meta', r.meta), 'event', r.meta -> 'event');
      INSERT INTO journey.messages (business_id, enrollment_id, sequence_id, step_index,
             customer_id, channel, message_purpose, to_address, subject, body, send_after)
      VALUES (r.business_id, r.id, r.sequence_id, st.step_index, r.customer_id, 'email',
              st.message_purpose, r.email,
              journey.render_template(st.message_config ->> 'subject', ctx),
              journey.render_template(st.message_config ->> 'body', ctx), t)
      ON CONFLICT (enrollment_id, step_index) DO NOTHING;
      INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
      VALUES (r.business_id, r.id, st.step_index, 'queued', 'email to ' || r.email, t);
    END IF;
    UPDATE journey.sequence_enrollments
       SET current_step_index = st.step_index + 1,
           next_run_at = t + (SELECT wait_ms FROM journey.sequence_steps
                               WHERE sequence_id = r.sequence_id
                                 AND step_index = st.step_index + 1) * interval '1 ms',
           updated_at = now()
     WHERE id = r.id;
  END LOOP;
END
\$\$;"

# What every variant must leave behind, to check they did the same work.
CHECK="SELECT (SELECT count(*) FROM journey.messages) || ' messages, ' ||
              (SELECT count(*) FROM journey.enrollment_log) || ' log rows, ' ||
              (SELECT count(*) FROM journey.sequence_enrollments
                WHERE current_step_index = 2 AND next_run_at = timestamptz '$T' + interval '1 day') || ' advanced, ' ||
              (SELECT md5(string_agg(subject || body || to_address, ',' ORDER BY to_address)) FROM journey.messages)"

# Runs one statement on a fresh copy of the database; prints best ms.
measure() {
    local name=$1 sql=$2 best= ms i
    for i in $(seq 1 "$REPEAT"); do
        psql -d postgres -c "DROP DATABASE IF EXISTS bench_run" -c "CREATE DATABASE bench_run TEMPLATE bench_tmpl"
        # Warm the caches and prepare the executor's plans on nothing due.
        psql -d bench_run -c "SELECT count(*) FROM journey.sequence_enrollments, LATERAL (SELECT 1) x" \
            -c "SELECT count(*) FROM journey.customers" \
            -c "SELECT journey.advance_due_enrollments(1, '2000-01-01')" >/dev/null
        # JIT off for every variant: compiling costs more than it saves here
        # (journey's function pins jit = off itself).
        ms=$(psql -d bench_run -At -c 'SET jit = off' -c '\timing on' -c "$sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
        if [ -z "$best" ] || awk "BEGIN{exit !($ms < $best)}"; then best=$ms; fi
        check=$(psql -d bench_run -At -c "$CHECK")
    done
    printf '%-10s %10.1f ms   (%s)\n' "$name" "$best" "$check" >&2
    echo "$best"
}

# Warm-up, untimed: the server's first big write touches shared memory and
# files for the first time, which would be charged to whichever ran first.
measure warm-up "$FLOOR" >/dev/null

echo "journey executor benchmark: $N due enrollments, next step send_email; best of $REPEAT" >&2
j=$(measure journey "$JOURNEY")
f1=$(measure floor-1stmt "$FLOOR")
f2=$(measure floor-split "$FLOOR2")
f=$(awk -v a="$f1" -v b="$f2" 'BEGIN { print (a < b ? a : b) }')
r1=$(measure row-by-row "$ROW")
r2=$(measure row-generic "$ROWGEN")

# Idle call: nothing due, plans kept; averaged over 1000 calls in one session.
idle=$(psql -d bench_run -At -c "DO \$\$
DECLARE t0 timestamptz; BEGIN
  PERFORM journey.advance_due_enrollments(1000, '2000-01-01');
  t0 := clock_timestamp();
  FOR i IN 1..1000 LOOP PERFORM journey.advance_due_enrollments(1000, '2000-01-01'); END LOOP;
  RAISE NOTICE '%', extract(epoch FROM clock_timestamp() - t0);
END \$\$;" 2>&1 | sed -n 's/.*NOTICE: *//p')
idle_single=$(psql -d bench_run -At -c "SELECT journey.advance_due_enrollments(1000, '2000-01-01')" -c '\timing on' \
    -c "SELECT journey.advance_due_enrollments(1000, '2000-01-01')" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')

awk -v j="$j" -v f="$f" -v r1="$r1" -v r2="$r2" -v idle="$idle" -v single="$idle_single" 'BEGIN {
    printf "journey / floor        = %.2f  (target <= 1.5; floor = faster of the two)\n", j / f;
    printf "row-by-row / journey   = %.2f  (target >= 2; hard-coded rendering)\n", r1 / j;
    printf "row-generic / journey  = %.2f  (target >= 2; render_template per row)\n", r2 / j;
    printf "journey absolute       = %.0f ms (target < 3000)\n", j;
    printf "idle call              = %.3f ms in server (mean of 1000), %.3f ms from psql\n", idle, single;
}'
