#!/usr/bin/env bash
# journey's benchmark suite, one command (issue 7): builds a throwaway
# cluster and prints, for each workload, the median, min and max of RUNS
# runs, each on a fresh copy of its data, against the targets:
#   W1 advance_due_enrollments over 10*N enrollments with N due, until
#      nothing is due: all-send, all-wait and 70/20/10 wait/send/branch;
#      all-send also as hand-written set-based SQL (the floor) and as
#      row-by-row PL/pgSQL (hard-coded, and a generic executor)
#   W2 an idle call (warm session, and a new one as pg_cron opens), and the
#      first call after the burst
#   W3 one INSERT ... SELECT of N events (journey's trigger, the floor, a
#      row-by-row PL/pgSQL trigger), and single-event transactions from 4
#      pgbench clients calling journey.ingest_event
#   W4 the sender draining N messages to test/sinks/fast_sink.c with
#      keep-alive and with "Connection: close", and a steady stream
# with table health after each workload.  Talks to 127.0.0.1 only.
#
#   bash test/bench/run.sh              full size (N=100000, RUNS=3), ~15-25 min
#   QUICK=1 bash test/bench/run.sh      smoke run (N=10000, RUNS=1)
#
# As root it first runs `make install` for the work tree, unless
# JOURNEY_BENCH_NO_INSTALL=1; with that set and journey not installed, it
# benchmarks a private build of the tree instead (see lib.sh).
# JOURNEY_BENCH_PRIVATE=1 always benchmarks such a private build.
# Settings: N, RUNS, PGBENCH_S (seconds per pgbench run), RATE and STREAM_S
# (the steady stream), PG_CONFIG; BENCH_RESULTS=FILE keeps the raw numbers;
# BENCH_CONF adds lines to postgresql.conf (e.g.
# "journey.executor_in_worker = off" to compare the sender without its executor).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

if [ "${QUICK:-0}" = 1 ]; then
    N=${N:-10000} RUNS=${RUNS:-1} PGBENCH_S=${PGBENCH_S:-5} STREAM_S=${STREAM_S:-2}
else
    N=${N:-100000} RUNS=${RUNS:-3} PGBENCH_S=${PGBENCH_S:-15} STREAM_S=${STREAM_S:-5}
fi
RATE=${RATE:-10000}
TOTAL=$((N * 10))
B=00000000-0000-0000-0000-0000000000b1
T='2027-01-12 15:00:00+00'
# Two days of wait after the first send: what the all-send floor and the
# row-by-row loops hard-code.
WAIT2_MS=172800000

WORK=$(mktemp -d /tmp/journey-bench.XXXXXX)
chmod 755 "$WORK"   # the postgres OS user reads the pgbench script and any private build
sinkpid=
cleanup() {
    if [ -n "$sinkpid" ]; then kill "$sinkpid" 2>/dev/null || true; fi
    cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
started=$(date +%s)

bench_install "$WORK"
gcc -O2 -o "$WORK/fast_sink" "$BENCH_SRC/test/sinks/fast_sink.c"
# The usual Linux default, as the sender meets it in production.
ulimit -n 1024
# pg_cron's launcher stays in postgres, so the database the sender serves
# (journey) can be dropped and copied afresh for every W4 run.  Commits are
# durable (fsync, synchronous_commit: the defaults) throughout.
cluster_start "$BENCH_TUNING
cron.database_name = 'postgres'
${BENCH_CONF:-}"
trap cleanup EXIT

RESULTS=$WORK/results
: > "$RESULTS"
MISMATCH=
record() { echo "$1 $2" >> "$RESULTS"; }
stats() { awk -v k="$1" '$1 == k { print $2 }' "$RESULTS" | bench_stats; }
say() { echo "$@"; }

say "journey benchmark: N=$N, RUNS=$RUNS, extension: $BENCH_INSTALL"
bench_machine

# ---------------------------------------------------------------------------
# The journey every workload uses.  Each step but the first waits on arrival,
# so a due enrollment takes exactly one decision per call and a mix of due
# steps is a mix of decisions.
# ---------------------------------------------------------------------------
JDEF='{"name": "Thanks, then a review request", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [
    {"kind": "send_email", "message": {"purpose": "thank_you",
      "subject": "Thanks, {{customer.first_name}}!", "body": "Thank you for choosing {{business.name}}."}},
    {"kind": "wait", "wait_ms": '$WAIT2_MS'},
    {"kind": "branch", "wait_ms": 86400000,
      "branch_config": {"if": {"field": "customer.phone", "op": "exists"}, "then": 4, "else": 5}},
    {"kind": "send_sms", "wait_ms": 3600000, "next": 0, "message": {"purpose": "review_request",
      "body": "Hi {{customer.first_name}}, please review us: {{review_link}}"}},
    {"kind": "send_email", "wait_ms": 3600000, "message": {"purpose": "review_request",
      "subject": "How did we do?", "body": "Hi {{customer.first_name | default: \"there\"}}, {{review_link}}"}}]}'

# $1 database, $2 number of customers: the extension, one business with its
# journey, customers numbered by external_id cust-<i>, half with a phone.
load_base() {
    bench_psql postgres -c "CREATE DATABASE $1"
    bench_psql "$1" -o /dev/null <<SQL
CREATE EXTENSION journey;
CREATE EXTENSION pgstattuple;
CREATE EXTENSION pg_prewarm;
INSERT INTO journey.businesses (id, name, timezone, google_review_url)
VALUES ('$B', 'Acme Plumbing', 'America/New_York', 'https://g.example/r');
SELECT journey.create_sequence('$B', '$JDEF');
INSERT INTO journey.customers (business_id, full_name, email, phone, external_id)
SELECT '$B', 'Ada' || i || ' Lovelace', 'c' || i || '@example.com',
       CASE WHEN i % 2 = 1 THEN '+1555' || i END, 'cust-' || i
  FROM generate_series(1, $2) i;
-- Suppressions the send checks must probe (none matches a customer).
INSERT INTO journey.suppressions (business_id, channel, address)
SELECT '$B', 'email', 'gone' || i || '@example.com' FROM generate_series(1, 1000) i;
SQL
}

# ===========================================================================
# W1 and W2
# ===========================================================================
say ""
say "== W1 advance: $TOTAL active enrollments, $N due; advance_due_enrollments($N, t) until it returns 0"
t0=$(date +%s)
load_base w1_base "$TOTAL"
# Every tenth customer's enrollment is due (scattered through the table, as
# due rows are); the rest are due within the next 30 days, at any step.
for mix in send wait mixed; do
    case $mix in
        send)  due_step=1 ;;
        wait)  due_step=2 ;;
        mixed) due_step="CASE WHEN (i / 10) % 10 < 7 THEN 2 WHEN (i / 10) % 10 < 9 THEN 1 ELSE 3 END" ;;
    esac
    bench_psql postgres -c "CREATE DATABASE w1_$mix TEMPLATE w1_base STRATEGY FILE_COPY"
    # Consistent by construction: loaded without the per-row key checks.
    bench_psql "w1_$mix" -o /dev/null <<SQL
SET session_replication_role = replica;
SELECT setseed(0.5);
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id,
       current_step_index, next_run_at, enrolled_at)
SELECT c.business_id, s.id, c.id,
       CASE WHEN i % 10 = 0 THEN $due_step ELSE 1 + i % 5 END,
       CASE WHEN i % 10 = 0 THEN timestamptz '$T' - random() * interval '1 hour'
            ELSE timestamptz '$T' + interval '1 minute' + random() * interval '30 days' END,
       timestamptz '$T' - interval '3 days'
  FROM (SELECT *, substr(external_id, 6)::int AS i FROM journey.customers) c,
       journey.sequences s
 ORDER BY i;
VACUUM (FREEZE, ANALYZE);
SQL
done
bench_psql postgres -c CHECKPOINT
say "   (data loaded in $(( $(date +%s) - t0 )) s)"

JOURNEY_W1="DO \$\$
DECLARE
  n int; total int := 0; calls int := 0; t1 timestamptz; last_ms float8;
BEGIN
  LOOP
    t1 := clock_timestamp();
    n := journey.advance_due_enrollments($N, '$T');
    COMMIT;
    last_ms := 1000 * extract(epoch FROM clock_timestamp() - t1);
    calls := calls + 1;
    total := total + n;
    EXIT WHEN n = 0;
  END LOOP;
  RAISE NOTICE 'handled % in % calls; last call % ms', total, calls, round(last_ms::numeric, 3);
END
\$\$"

# The all-send floor and row-by-row references, hand-written SQL: the same
# rows in messages, enrollment_log and sequence_enrollments as journey
# writes (checked below), rendering hard-coded for this one template.
DUE_ROWS="SELECT e.id, e.business_id, e.sequence_id, e.customer_id, c.email, c.full_name,
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
    JOIN journey.businesses b ON b.id = e.business_id"
MSG_COLS="business_id, enrollment_id, sequence_id, step_index, customer_id, channel,
          message_purpose, to_address, subject, body, send_after"
MSG_VALS="business_id, id, sequence_id, 1, customer_id, 'email', 'thank_you', email,
          'Thanks, ' || split_part(full_name, ' ', 1) || '!',
          'Thank you for choosing ' || business_name || '.', '$T'"
LOG_VALS="business_id, id, 1,
          CASE WHEN email IS NULL THEN 'skipped_no_address'
               WHEN suppressed THEN 'skipped_suppressed' ELSE 'queued' END,
          CASE WHEN email IS NULL THEN 'customer has no email address'
               WHEN suppressed THEN email || ' is suppressed for email'
               ELSE 'email to ' || email END, '$T'"
ADVANCE_SET="current_step_index = 2, next_run_at = timestamptz '$T' + interval '$WAIT2_MS ms', updated_at = now()"

FLOOR1="WITH due AS ($DUE_ROWS),
msg AS (INSERT INTO journey.messages ($MSG_COLS)
        SELECT $MSG_VALS FROM due WHERE email IS NOT NULL AND NOT suppressed
        ON CONFLICT (enrollment_id, step_index) DO NOTHING),
lg AS (INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
       SELECT $LOG_VALS FROM due)
UPDATE journey.sequence_enrollments e SET $ADVANCE_SET FROM due WHERE e.id = due.id"

# Split in four statements, inserts before the update and in id order (their
# key checks then meet one version of each enrollment, walked in order).
FLOOR2="DO \$\$
BEGIN
  CREATE TEMP TABLE due ON COMMIT DROP AS $DUE_ROWS;
  INSERT INTO journey.messages ($MSG_COLS)
  SELECT $MSG_VALS FROM due WHERE email IS NOT NULL AND NOT suppressed ORDER BY id
      ON CONFLICT (enrollment_id, step_index) DO NOTHING;
  INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
  SELECT $LOG_VALS FROM due ORDER BY id;
  UPDATE journey.sequence_enrollments e SET $ADVANCE_SET FROM due WHERE e.id = due.id;
END
\$\$"

ROW_LOOP_HEAD="FOR r IN
    SELECT e.*, c.email, c.full_name, c.phone, c.attributes, b.name AS business_name,
           b.google_review_url
      FROM journey.sequence_enrollments e
      JOIN journey.sequences s ON s.id = e.sequence_id
      JOIN journey.customers c ON c.id = e.customer_id
      JOIN journey.businesses b ON b.id = e.business_id
     WHERE e.status = 'active' AND e.next_run_at <= t AND s.status = 'active'
     ORDER BY e.next_run_at LIMIT $N
       FOR UPDATE OF e SKIP LOCKED
  LOOP"

ROW="DO \$\$
DECLARE
  r record;
  t timestamptz := '$T';
BEGIN
  $ROW_LOOP_HEAD
    IF r.email IS NULL THEN
      INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
      VALUES (r.business_id, r.id, 1, 'skipped_no_address', 'customer has no email address', t);
    ELSIF EXISTS (SELECT 1 FROM journey.suppressions su
                   WHERE su.business_id = r.business_id AND su.channel = 'email'
                     AND su.address = r.email) THEN
      INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
      VALUES (r.business_id, r.id, 1, 'skipped_suppressed', r.email || ' is suppressed for email', t);
    ELSE
      INSERT INTO journey.messages ($MSG_COLS)
      VALUES (r.business_id, r.id, r.sequence_id, 1, r.customer_id, 'email', 'thank_you', r.email,
              'Thanks, ' || split_part(r.full_name, ' ', 1) || '!',
              'Thank you for choosing ' || r.business_name || '.', t)
      ON CONFLICT (enrollment_id, step_index) DO NOTHING;
      INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
      VALUES (r.business_id, r.id, 1, 'queued', 'email to ' || r.email, t);
    END IF;
    UPDATE journey.sequence_enrollments SET $ADVANCE_SET WHERE id = r.id;
  END LOOP;
END
\$\$"

# The executor as one would write it without C: per enrollment, read its
# step, build the template context and render with journey.render_template.
ROWGEN="DO \$\$
DECLARE
  r record;
  st record;
  ctx jsonb;
  t timestamptz := '$T';
BEGIN
  $ROW_LOOP_HEAD
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
      INSERT INTO journey.messages ($MSG_COLS)
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
\$\$"

# What a run left behind: counts, and an order-independent hash of the
# columns every variant must write alike (not ids, created_at, updated_at).
W1_CHECK="SELECT (SELECT count(*) FROM journey.messages) || ' messages, ' ||
       (SELECT count(*) FROM journey.enrollment_log) || ' log rows, digest ' ||
       left(md5(concat_ws('/',
         (SELECT sum(hashtextextended(concat_ws('|', enrollment_id, step_index, channel, message_purpose,
                 to_address, subject, body, send_after, status), 0)::numeric) FROM journey.messages),
         (SELECT sum(hashtextextended(concat_ws('|', enrollment_id, step_index, outcome, detail, at), 0)::numeric)
            FROM journey.enrollment_log),
         (SELECT sum(hashtextextended(concat_ws('|', id, status, current_step_index, next_run_at,
                 finished_at, stop_reason), 0)::numeric) FROM journey.sequence_enrollments))), 12)"

DUE_QUERY="SELECT e.id FROM journey.sequence_enrollments e
 WHERE e.status = 'active' AND e.next_run_at <= '$T'
   AND EXISTS (SELECT FROM journey.sequences s WHERE s.id = e.sequence_id AND s.status = 'active')
 ORDER BY e.next_run_at LIMIT 1000 FOR UPDATE OF e SKIP LOCKED"

# W2 calls are pg_cron's: the default batch of 1000, nothing due at t.
TICK="SELECT journey.advance_due_enrollments(1000, '$T')"
IDLE_WARM="DO \$\$
DECLARE t0 timestamptz;
BEGIN
  PERFORM journey.advance_due_enrollments(1000, '$T');
  t0 := clock_timestamp();
  FOR i IN 1..1000 LOOP PERFORM journey.advance_due_enrollments(1000, '$T'); END LOOP;
  RAISE NOTICE 'idle %', extract(epoch FROM clock_timestamp() - t0);
END
\$\$"

# $1 mix, $2 variant, $3 statement, $4 run number: one timed run on a fresh
# copy; checks it wrote what journey writes.
w1_run() {
    local mix=$1 variant=$2 sql=$3 run=$4 ms check notice
    bench_fresh_db w1_run "w1_$mix"
    bench_warm w1_run
    ms=$(BENCH_NOTICES=$WORK/notice bench_ms w1_run "$sql" "SET jit = off")
    check=$(bench_psql w1_run -At -c "$W1_CHECK")
    notice=$(sed -n 's/.*NOTICE: *//p' "$WORK/notice")
    printf '   %-6s %-12s run %d: %9.1f ms   %s%s\n' "$mix" "$variant" "$run" "$ms" "$check" "${notice:+; $notice}"
    record "w1.$mix.$variant" "$ms"
    if [ "$variant" = journey ]; then
        echo "$check" > "$WORK/w1.$mix.check"
        case $notice in "handled $N in "*) ;; *) echo "   ! journey handled not $N: $notice"; MISMATCH="$MISMATCH w1.$mix" ;; esac
    elif [ "$check" != "$(cat "$WORK/w1.$mix.check")" ]; then
        echo "   ! $variant wrote other rows than journey"
        MISMATCH="$MISMATCH w1.$mix.$variant"
    fi
}

# Untimed: the server's first big writes touch memory and files for the
# first time, which would be charged to whichever variant ran first.
bench_fresh_db w1_run w1_send
bench_ms w1_run "$FLOOR1" >/dev/null

for run in $(seq "$RUNS"); do
    for mix in send wait mixed; do
        w1_run "$mix" journey "$JOURNEY_W1" "$run"
        # W2 on the same database: the next tick, in a new session as
        # pg_cron's, meets the index entries of the burst's old row versions.
        record "w2.after.$mix" "$(bench_ms w1_run "$TICK")"
        if [ "$run" = "$RUNS" ]; then
            echo "   after the burst, the due-enrollment query (claim's LIMIT 1000): $(bench_explain w1_run "$DUE_QUERY")"
        fi
        if [ "$mix" = send ]; then
            record w2.idle_new "$(bench_ms w1_run "$TICK")"
            bench_psql w1_run -c "$IDLE_WARM" 2>&1 | sed -n 's/.*NOTICE: *idle //p' > "$WORK/idle"
            record w2.idle_warm "$(awk '{ printf "%.4f", $1 }' "$WORK/idle")"
            printf '   W2 run %d: tick after the burst (new session) %s ms; idle tick, new session %s ms; idle, warm session %s ms per call (mean of 1000)\n' \
                "$run" "$(awk '$1 == "w2.after.send" { v = $2 } END { print v }' "$RESULTS")" \
                "$(awk '$1 == "w2.idle_new" { v = $2 } END { print v }' "$RESULTS")" "$(cat "$WORK/idle")"
        fi
        if [ "$run" = "$RUNS" ]; then
            echo "   health after W1 $mix (journey, run $run, no vacuum since the burst):"
            bench_health w1_run sequence_enrollments messages enrollment_log
        fi
    done
    w1_run send floor-1stmt "$FLOOR1" "$run"
    if [ "$run" = "$RUNS" ]; then
        # No call followed the floor's burst: the first due query after it
        # meets the 100k index entries of the old row versions.
        echo "   after the floor's burst (no call since), the due-enrollment query: first $(bench_explain w1_run "$DUE_QUERY"), then $(bench_explain w1_run "$DUE_QUERY")"
    fi
    w1_run send floor-split "$FLOOR2" "$run"
    w1_run send row "$ROW" "$run"
    w1_run send row-generic "$ROWGEN" "$run"
done
# The floor is the faster of its two forms.
read -r f1 _ < <(stats w1.send.floor-1stmt)
read -r f2 _ < <(stats w1.send.floor-split)
floor=$(awk -v a="$f1" -v b="$f2" 'BEGIN { print (a <= b) ? "floor-1stmt" : "floor-split" }')
awk -v k="w1.send.$floor" '$1 == k { print "w1.send.floor", $2 }' "$RESULTS" > "$WORK/floor"
cat "$WORK/floor" >> "$RESULTS"
bench_psql postgres -c "DROP DATABASE w1_run" -c "DROP DATABASE w1_send" -c "DROP DATABASE w1_wait" \
    -c "DROP DATABASE w1_mixed"

# ===========================================================================
# W3
# ===========================================================================
say ""
say "== W3 events: one INSERT ... SELECT of $N enrolling events; single-event transactions"
# The W1 customers, nine in ten of them with an earlier event and its
# enrollment (half finished): the tables and their statistics are those of
# a database in use, not empty ones, whose plans would mislead.  Events go
# to the tenth customers (public.w3_targets), none of them enrolled yet.
t0=$(date +%s)
bench_psql postgres -c "CREATE DATABASE w3_tmpl TEMPLATE w1_base STRATEGY FILE_COPY" -c "DROP DATABASE w1_base"
bench_psql w3_tmpl -o /dev/null <<SQL
SET session_replication_role = replica;
CREATE TABLE public.w3_targets AS
SELECT business_id, id AS customer_id FROM journey.customers
 WHERE substr(external_id, 6)::int % 10 = 0 ORDER BY substr(external_id, 6)::int;
INSERT INTO journey.events (business_id, event_type, customer_id, payload, occurred_at)
SELECT business_id, 'invoice_paid', id, '{"invoice": 0}', timestamptz '$T' - interval '10 days'
  FROM journey.customers WHERE substr(external_id, 6)::int % 10 <> 0
 ORDER BY substr(external_id, 6)::int;
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, status,
       current_step_index, next_run_at, finished_at, last_event_at, meta, enrolled_at, trigger_event_id)
SELECT e.business_id, s.id, e.customer_id,
       CASE WHEN e.id % 2 = 0 THEN 'finished' ELSE 'active' END,
       CASE WHEN e.id % 2 = 0 THEN 5 ELSE 2 END,
       CASE WHEN e.id % 2 = 0 THEN NULL ELSE timestamptz '$T' + interval '1 day' END,
       CASE WHEN e.id % 2 = 0 THEN timestamptz '$T' - interval '5 days' END,
       e.occurred_at, jsonb_build_object('event', e.payload), e.occurred_at, e.id
  FROM journey.events e, journey.sequences s ORDER BY e.id;
VACUUM (FREEZE, ANALYZE);
SQL
# The same schema with journey's trigger off: the floor writes the
# enrollments itself, the row-by-row variant through a FOR EACH ROW trigger.
bench_psql postgres -c "CREATE DATABASE w3_bare TEMPLATE w3_tmpl"
bench_psql w3_bare -c "ALTER TABLE journey.events DISABLE TRIGGER events_match"
bench_psql postgres -c "CREATE DATABASE w3_row TEMPLATE w3_bare"
bench_psql w3_row <<'SQL'
-- What a team writes without journey: per event, stop the customer's
-- enrollments that exit on it, then enroll in each journey it triggers.
CREATE FUNCTION public.bench_row_match() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  s record;
BEGIN
  IF NEW.customer_id IS NULL THEN RETURN NULL; END IF;
  WITH stopped AS (
    UPDATE journey.sequence_enrollments en
       SET status = 'stopped', stop_reason = 'exit_event:' || NEW.event_type,
           finished_at = NEW.occurred_at, last_event_at = NEW.occurred_at, next_run_at = NULL
     WHERE en.business_id = NEW.business_id AND en.customer_id = NEW.customer_id
       AND en.status = 'active'
       AND en.sequence_id IN (SELECT id FROM journey.sequences
                               WHERE business_id = NEW.business_id
                                 AND NEW.event_type = ANY (exit_event_types))
    RETURNING en.id, en.business_id, en.current_step_index),
  cancelled AS (
    UPDATE journey.messages m SET status = 'cancelled'
      FROM stopped WHERE m.enrollment_id = stopped.id AND m.status = 'queued')
  INSERT INTO journey.enrollment_log (business_id, enrollment_id, step_index, outcome, detail, at)
  SELECT business_id, id, current_step_index, 'stopped', 'exit event ' || NEW.event_type, NEW.occurred_at
    FROM stopped;
  FOR s IN
    SELECT q.id, q.reentry, coalesce(st.wait_ms, 0) AS wait_ms
      FROM journey.sequences q
      LEFT JOIN journey.sequence_steps st ON st.sequence_id = q.id AND st.step_index = 1
     WHERE q.business_id = NEW.business_id AND q.trigger_event_type = NEW.event_type
       AND q.status = 'active'
  LOOP
    CONTINUE WHEN s.reentry = 'never' AND EXISTS (
      SELECT 1 FROM journey.sequence_enrollments x
       WHERE x.business_id = NEW.business_id AND x.customer_id = NEW.customer_id
         AND x.sequence_id = s.id);
    INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id,
           current_step_index, next_run_at, last_event_at, meta, enrolled_at, trigger_event_id)
    VALUES (NEW.business_id, s.id, NEW.customer_id, 1,
            NEW.occurred_at + s.wait_ms::float8 * interval '1 ms', NEW.occurred_at,
            jsonb_build_object('event', NEW.payload), NEW.occurred_at, NEW.id)
    ON CONFLICT (sequence_id, customer_id) WHERE status = 'active' DO NOTHING;
  END LOOP;
  RETURN NULL;
END
$$;
CREATE TRIGGER bench_row_match AFTER INSERT ON journey.events
  FOR EACH ROW EXECUTE FUNCTION public.bench_row_match();
SQL
bench_psql postgres -c CHECKPOINT

W3_INSERT="INSERT INTO journey.events (business_id, event_type, customer_id, payload, occurred_at)
SELECT business_id, 'invoice_paid', customer_id, '{\"invoice\": 1}', '$T' FROM public.w3_targets"
W3_FLOOR="WITH ev AS ($W3_INSERT
  RETURNING id, business_id, event_type, customer_id, payload, occurred_at)
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id,
       current_step_index, next_run_at, last_event_at, meta, enrolled_at, trigger_event_id)
SELECT DISTINCT ON (s.id, ev.customer_id)
       ev.business_id, s.id, ev.customer_id, 1,
       ev.occurred_at + coalesce(st.wait_ms, 0)::float8 * interval '1 ms', ev.occurred_at,
       jsonb_build_object('event', ev.payload), ev.occurred_at, ev.id
  FROM ev
  JOIN journey.sequences s ON s.business_id = ev.business_id
   AND s.trigger_event_type = ev.event_type AND s.status = 'active'
  LEFT JOIN journey.sequence_steps st ON st.sequence_id = s.id AND st.step_index = 1
 WHERE ev.customer_id IS NOT NULL
 ORDER BY s.id, ev.customer_id, ev.occurred_at, ev.id
    ON CONFLICT (sequence_id, customer_id) WHERE status = 'active' DO NOTHING"
# New rows only: those dated after the loaded ones.
W3_CHECK="SELECT (SELECT count(*) FROM journey.events WHERE occurred_at > '$T'::timestamptz - interval '1 day') || ' new events, ' ||
       (SELECT count(*) FROM journey.sequence_enrollments WHERE enrolled_at > '$T'::timestamptz - interval '1 day') || ' new enrollments, ' ||
       (SELECT count(*) FROM journey.enrollment_log) || ' log rows, ' ||
       (SELECT count(*) FROM journey.sequence_enrollments WHERE status = 'active') || ' active, digest ' ||
       left(md5(concat_ws('/',
         (SELECT sum(hashtextextended(concat_ws('|', id, business_id, event_type, customer_id, payload,
                 occurred_at), 0)::numeric) FROM journey.events WHERE occurred_at > '$T'::timestamptz - interval '1 day'),
         (SELECT sum(hashtextextended(concat_ws('|', business_id, sequence_id, customer_id, status,
                 current_step_index, next_run_at, last_event_at, meta, enrolled_at, trigger_event_id),
                 0)::numeric) FROM journey.sequence_enrollments WHERE enrolled_at > '$T'::timestamptz - interval '1 day'))), 12)"

w3_run() {
    local variant=$1 tmpl=$2 sql=$3 run=$4 ms check
    bench_fresh_db w3_run "$tmpl"
    bench_warm w3_run
    ms=$(bench_ms w3_run "$sql" "SET jit = off")
    check=$(bench_psql w3_run -At -c "$W3_CHECK")
    printf '   %-12s run %d: %9.1f ms = %6.0f events/s   %s\n' "$variant" "$run" "$ms" \
        "$(awk -v n="$N" -v ms="$ms" 'BEGIN { print n / ms * 1000 }')" "$check"
    record "w3.$variant" "$ms"
    if [ "$variant" = journey ]; then
        echo "$check" > "$WORK/w3.check"
        case $check in "$N new events, $N new enrollments,"*) ;; *) echo "   ! journey did not enroll every customer"; MISMATCH="$MISMATCH w3" ;; esac
    elif [ "$check" != "$(cat "$WORK/w3.check")" ]; then
        echo "   ! $variant wrote other rows than journey"
        MISMATCH="$MISMATCH w3.$variant"
    fi
}

cat > "$WORK/ingest.sql" <<SQL
\\set c random(1, $N)
SELECT journey.ingest_event('$B', 'invoice_paid', jsonb_build_object('external_id', 'cust-' || 10 * :c), '{"invoice": 1}', NULL, '$T');
SQL

bench_fresh_db w3_run w3_tmpl
bench_ms w3_run "$W3_INSERT" >/dev/null   # untimed warm-up, as for W1
for run in $(seq "$RUNS"); do
    w3_run journey w3_tmpl "$W3_INSERT" "$run"
    if [ "$run" = "$RUNS" ]; then
        echo "   health after W3 one statement (journey, run $run):"
        bench_health w3_run events sequence_enrollments enrollment_log
    fi
    w3_run floor w3_bare "$W3_FLOOR" "$run"
    w3_run row w3_row "$W3_INSERT" "$run"

    # Single-event transactions: webhook deliveries for random customers,
    # durable commits; a customer already enrolled is not enrolled again.
    bench_fresh_db w3_run w3_tmpl
    bench_warm w3_run
    as_postgres "$PG_BIN/pgbench" -n -c 4 -j 2 -T "$PGBENCH_S" -f "$WORK/ingest.sql" \
        -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres w3_run > "$WORK/pgbench.out" 2>&1 ||
        { cat "$WORK/pgbench.out"; exit 1; }
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$WORK/pgbench.out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$WORK/pgbench.out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$WORK/pgbench.out")
    printf '   %-12s run %d: %9.0f events/s (4 clients, %s s, latency avg %s ms, %s failed)   %s\n' \
        ingest_event "$run" "$tps" "$PGBENCH_S" "$lat" "${failed:-?}" "$(bench_psql w3_run -At -c "$W3_CHECK" | cut -d, -f1-2)"
    record w3.single "$tps"
    if [ "$run" = "$RUNS" ]; then
        echo "   health after W3 single-event transactions (run $run):"
        bench_health w3_run events sequence_enrollments enrollment_log
    fi
done
bench_psql postgres -c "DROP DATABASE w3_run" -c "DROP DATABASE w3_row" -c "DROP DATABASE w3_bare" -c "DROP DATABASE w3_tmpl"

# ===========================================================================
# W4
# ===========================================================================
say ""
say "== W4 send: the sender drains $N messages queued in one transaction to a local HTTP sink"
SINKPORT=$((20000 + RANDOM % 20000))
bench_psql postgres -c "CREATE DATABASE w4_tmpl"
bench_psql w4_tmpl <<SQL
CREATE EXTENSION journey;
CREATE EXTENSION pgstattuple;
INSERT INTO journey.businesses (id, name) VALUES ('$B', 'Acme Plumbing');
INSERT INTO journey.providers (channel, kind, endpoint, from_address)
VALUES ('email', 'webhook', 'http://127.0.0.1:$SINKPORT/ok', 'bench@example.com');
CREATE TABLE public.bench_batches (b int, t float8);
SQL
# The sender's claim (src/worker.c), without the provider join and update.
CLAIM_QUERY="SELECT m.id FROM journey.messages m
 WHERE m.status = 'queued' AND m.send_after <= now()
 ORDER BY m.send_after LIMIT 100 FOR UPDATE OF m SKIP LOCKED"

sink_start() {
    rm -f "$WORK/sink.txt"
    "$WORK/fast_sink" "$SINKPORT" "$WORK/sink.txt" "$@" > "$WORK/sink.out" &
    sinkpid=$!
    for _ in $(seq 50); do grep -q ready "$WORK/sink.out" 2>/dev/null && return 0; sleep 0.1; done
    echo "the sink did not start"; exit 1
}
sink_stop() {
    kill "$sinkpid"
    wait "$sinkpid" || true
    sinkpid=
}

# $1 mode (keepalive or close), $2 run number.
w4_run() {
    local mode=$1 run=$2 t_commit t_done stat
    if [ "$mode" = close ]; then sink_start close; else sink_start; fi
    bench_fresh_db journey w4_tmpl
    # The launcher starts a sender once the database exists again.
    bench_wait_sender journey || exit 1
    t_commit=$(bench_queue_messages journey "$B" "$N")
    t_done=$(bench_drained journey)
    stat=$(bench_psql journey -At -c "SELECT string_agg(status || '=' || n, ' ') FROM
        (SELECT status, count(*) n FROM journey.messages GROUP BY 1 ORDER BY 1) s")
    if [ "$run" = "$RUNS" ]; then
        echo "   health after W4 $mode drain (run $run, before any manual vacuum):"
        bench_health journey messages
        echo "      outbox claim query just after: first $(bench_explain journey "$CLAIM_QUERY"), then $(bench_explain journey "$CLAIM_QUERY")"
    fi
    if [ "$mode" = keepalive ]; then w4_stream; fi
    sink_stop
    # Burst messages are ids 1..N: the database is fresh.  The sink's key
    # is <installation id>-<message id>.
    awk -v n="$N" -v tc="$t_commit" -v out="$WORK/lat" '
        { k = split($1, part, "-"); id = part[k] + 0 }
        id <= n { if (seen[id]++) dups++; else { d++; print ($2 / 1e6 - tc) * 1000 > out } }
        END { printf "%d %d\n", d, dups }' "$WORK/sink.txt" > "$WORK/recv"
    read -r distinct dups < "$WORK/recv"
    local p50 p99 rate
    p50=$(bench_pct 50 < "$WORK/lat")
    p99=$(bench_pct 99 < "$WORK/lat")
    rate=$(awk -v n="$N" -v a="$t_commit" -v b="$t_done" 'BEGIN { printf "%.0f", n / (b - a) }')
    printf '   %-9s run %d: %6s messages/s (commit -> all %s written: %.2f s); commit -> delivery p50 %.0f ms, p99 %.0f ms; sink got %d distinct, %d duplicates; %s\n' \
        "$mode" "$run" "$rate" "$N" "$(awk -v a="$t_commit" -v b="$t_done" 'BEGIN { print b - a }')" \
        "$p50" "$p99" "$distinct" "$dups" "$stat"
    [ "$distinct" = "$N" ] || { echo "   ! the sink did not get every message"; MISMATCH="$MISMATCH w4.$mode"; }
    record "w4.$mode.rate" "$rate"
    record "w4.$mode.p50" "$p50"
    record "w4.$mode.p99" "$p99"
    if [ "$mode" = keepalive ]; then
        awk 'NR == FNR { t[$1] = $2; next } { k = split($1, part, "-"); id = part[k] }
             (id in t) && !seen[id]++ { print ($2 / 1e6 - t[id]) * 1000 }' \
            "$WORK/stream.txt" "$WORK/sink.txt" > "$WORK/slat"
        p50=$(bench_pct 50 < "$WORK/slat")
        p99=$(bench_pct 99 < "$WORK/slat")
        printf '   %-9s run %d: steady %d messages/s for %d s: %d of %d delivered; commit -> delivery p50 %.1f ms, p99 %.1f ms, max %.1f ms\n' \
            stream "$run" "$RATE" "$STREAM_S" "$(wc -l < "$WORK/slat")" "$(wc -l < "$WORK/stream.txt")" \
            "$p50" "$p99" "$(bench_pct 100 < "$WORK/slat")"
        record w4.stream.p50 "$p50"
        record w4.stream.p99 "$p99"
    fi
}

# A steady RATE messages/s for STREAM_S s, in batches of 100 each committed
# on schedule; each batch's commit time kept for the latency (w4_run).
w4_stream() {
    local batches=$((RATE * STREAM_S / 100))
    bench_psql journey <<SQL
DO \$\$
DECLARE
  start timestamptz := clock_timestamp();
BEGIN
  FOR i IN 1..$batches LOOP
    INSERT INTO journey.messages (business_id, channel, to_address, subject, body)
    SELECT '$B', 'email', 's' || g || '@example.com', 'stream ' || i, 'Hello ' || g
      FROM generate_series(1, 100) g;
    INSERT INTO bench_batches VALUES (i, extract(epoch FROM clock_timestamp()));
    COMMIT;
    PERFORM pg_sleep(greatest(0, extract(epoch FROM
      start + i * interval '1 second' * 100 / $RATE - clock_timestamp())));
  END LOOP;
END
\$\$;
SQL
    bench_drained journey >/dev/null
    bench_psql journey -At -F ' ' -c "SELECT m.id, b.t FROM journey.messages m
        JOIN bench_batches b ON m.subject = 'stream ' || b.b" > "$WORK/stream.txt"
}

for run in $(seq "$RUNS"); do
    w4_run keepalive "$run"
    w4_run close "$run"
done

# ===========================================================================
# Summary
# ===========================================================================
say ""
elapsed=$(( $(date +%s) - started ))
say "== summary: median, min, max of $RUNS run(s) each; N=$N; $((elapsed / 60)) min $((elapsed % 60)) s in all"
bench_machine
echo "extension: $BENCH_INSTALL"
# name, key, unit, scale, target.  The printed value is the recorded one
# times scale, or for a negative scale -scale divided by it (a rate from a
# time; min and max swap).  Target: "<X" or ">X" in the printed unit, or -.
line() {
    local name=$1 key=$2 unit=$3 scale=$4 target=$5 md mn mx
    read -r md mn mx < <(stats "$key")
    if [ -z "${md:-}" ]; then return; fi
    awk -v n="$name" -v md="$md" -v mn="$mn" -v mx="$mx" -v s="$scale" -v u="$unit" -v t="$target" '
        function v(x) { return s < 0 ? -s / x : x * s }
        BEGIN {
            a = v(md); lo = v(mn); hi = v(mx);
            if (lo > hi) { x = lo; lo = hi; hi = x }
            met = "";
            if (substr(t, 1, 1) == "<") met = (a < substr(t, 2) + 0) ? "yes" : "NO";
            if (substr(t, 1, 1) == ">") met = (a > substr(t, 2) + 0) ? "yes" : "NO";
            fmt = (a < 10) ? "%10.3f" : (a < 100) ? "%10.2f" : (a < 1000) ? "%10.1f" : "%10.0f";
            printf "%-52s " fmt " " fmt " " fmt "  %-10s %-8s %s\n", n, a, lo, hi, u, (t == "-" ? "" : t), met }'
}
rate=$((N * 1000))
printf '%-52s %10s %10s %10s  %-10s %-8s %s\n' workload median min max unit target met
line "W1 all-send, journey"                         w1.send.journey     s          0.001 "<3"
line "W1 all-send, set-based floor (best form)"     w1.send.floor       s          0.001 -
line "W1 all-send, floor in one statement"          w1.send.floor-1stmt s          0.001 -
line "W1 all-send, floor in four statements"        w1.send.floor-split s          0.001 -
line "W1 all-send, row-by-row PL/pgSQL, hard-coded" w1.send.row         s          0.001 -
line "W1 all-send, row-by-row generic executor"     w1.send.row-generic s          0.001 -
line "W1 all-wait, journey"                         w1.wait.journey     s          0.001 -
line "W1 70/20/10 wait/send/branch, journey"        w1.mixed.journey    s          0.001 -
line "W2 idle call, warm session (mean of 1000)"    w2.idle_warm        ms         1     "<1"
line "W2 idle call, new session (as pg_cron's)"     w2.idle_new         ms         1     "<1"
line "W2 first call after the all-send burst"       w2.after.send       ms         1     -
line "W2 first call after the all-wait burst"       w2.after.wait       ms         1     -
line "W2 first call after the 70/20/10 burst"       w2.after.mixed      ms         1     -
line "W3 one INSERT...SELECT, journey trigger"      w3.journey          events/s   -$rate ">80000"
line "W3 one INSERT...SELECT, set-based floor"      w3.floor            events/s   -$rate -
line "W3 one INSERT...SELECT, row-by-row trigger"   w3.row              events/s   -$rate -
line "W3 single-event transactions, 4 clients"      w3.single           events/s   1     ">5000"
line "W4 drain, keep-alive"                         w4.keepalive.rate   messages/s 1     ">10000"
line "W4 drain, keep-alive, commit->delivery p50"   w4.keepalive.p50    ms         1     -
line "W4 drain, keep-alive, commit->delivery p99"   w4.keepalive.p99    ms         1     "<1000"
line "W4 drain, Connection: close"                  w4.close.rate       messages/s 1     ">10000"
line "W4 drain, close, commit->delivery p50"        w4.close.p50        ms         1     -
line "W4 drain, close, commit->delivery p99"        w4.close.p99        ms         1     "<1000"
line "W4 steady $RATE/s stream, keep-alive, p50"   w4.stream.p50       ms         1     -
line "W4 steady $RATE/s stream, keep-alive, p99"   w4.stream.p99       ms         1     "<1000"

ratio() {
    local name=$1 a=$2 b=$3 target=$4 ma mb
    read -r ma _ < <(stats "$a")
    read -r mb _ < <(stats "$b")
    awk -v n="$name" -v a="$ma" -v b="$mb" -v t="$target" 'BEGIN {
        r = a / b; met = "";
        if (substr(t, 1, 1) == "<") met = (r <= substr(t, 2) + 0) ? "yes" : "NO";
        if (substr(t, 1, 1) == ">") met = (r >= substr(t, 2) + 0) ? "yes" : "NO";
        printf "%-52s %10.2fx %32s %-8s %s\n", n, r, "", (t == "-" ? "" : t), met }'
}
ratio "W1 journey / floor (time)"                     w1.send.journey     w1.send.floor   "<1.3"
ratio "W1 row-by-row generic executor / journey"      w1.send.row-generic w1.send.journey ">2"
ratio "W1 row-by-row hard-coded / journey"            w1.send.row         w1.send.journey ">2"
ratio "W3 journey / floor (time)"                     w3.journey          w3.floor        -
ratio "W3 row-by-row trigger / journey (time)"        w3.row              w3.journey      -
if [ -n "${BENCH_RESULTS:-}" ]; then cp "$RESULTS" "$BENCH_RESULTS"; fi
if [ -n "$MISMATCH" ]; then
    echo "! some variants did not write the same rows, or work was missing:$MISMATCH"
    exit 1
fi
