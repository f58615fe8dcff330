#!/usr/bin/env bash
# journey.step_stats / journey.sequence_stats at scale (issue 15), and
# journey.simulate's time: builds a throwaway cluster, loads one journey of
# the review-request shape with N enrollments (default 100000) spread over
# its steps and states, a message for each send step reached and the step
# counters the executor would have written, next to another business with
# as many rows, then times reading the journey's rows of both views (as the
# owner and as a member through row-level security) and simulating the
# review-request journey over 30 days.
#
#   N=1000000 bash test/bench/stats.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
N=${N:-100000}
BUSINESSES=2
WORK=$(mktemp -d /tmp/journey-stats-bench.XXXXXX)
chmod 755 "$WORK"
cleanup() { cluster_stop; rm -rf "$WORK"; }
trap cleanup EXIT

bench_install "$WORK"
cluster_start "$BENCH_TUNING"
cluster_psql -c "CREATE EXTENSION journey" >/dev/null 2>&1
say() { echo "$@"; }
say "== loading 2 x $N enrollments"
cluster_psql -v n="$N" <<'SQL'
SET client_min_messages = warning;
INSERT INTO journey.businesses (id, name, timezone, google_review_url)
SELECT ('00000000-0000-0000-0000-0000000000b' || b)::uuid, 'Business ' || b, 'America/New_York',
       'https://g.example/' || b FROM generate_series(1, 2) b;
DO $$
DECLARE b int;
BEGIN
  FOR b IN 1..2 LOOP
    PERFORM journey.create_sequence(('00000000-0000-0000-0000-0000000000b' || b)::uuid, '{"name": "Review request", "status": "active",
      "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
      "quiet_hours": {"start": "21:00", "end": "08:00"}, "rate_per_hour": null, "rate_per_day": null,
      "steps": [
        {"kind": "send_email", "message": {"purpose": "thank_you", "subject": "Thanks, {{customer.first_name}}!", "body": "Thank you for choosing {{business.name}}."}},
        {"kind": "wait", "wait_ms": 172800000},
        {"kind": "branch", "branch_config": {"if": {"field": "customer.phone", "op": "exists"}, "then": 4, "else": 5}},
        {"kind": "send_sms", "next": 0, "message": {"purpose": "review_request", "body": "Hi {{customer.name}}, please review us: {{review_link}}"}},
        {"kind": "send_email", "message": {"purpose": "review_request", "subject": "How did we do?", "body": "Hi {{customer.first_name | default: \"there\"}}, {{review_link}}"}}]}');
  END LOOP;
END $$;
INSERT INTO journey.customers (id, business_id, full_name, email, phone)
SELECT md5('c' || b || '-' || i)::uuid, ('00000000-0000-0000-0000-0000000000b' || b)::uuid,
       'Customer ' || i, 'c' || i || '@example.com', CASE WHEN i % 3 = 0 THEN NULL ELSE '+1555' || i END
  FROM generate_series(1, 2) b, generate_series(1, :n) i;
-- Where each enrollment stands: 10% active at step 2, 5% stopped (exit) at
-- step 2, the rest finished after their review request.
INSERT INTO journey.sequence_enrollments (id, business_id, sequence_id, customer_id, status,
       current_step_index, next_run_at, enrolled_at, stop_reason, finished_at)
SELECT md5('e' || b || '-' || i)::uuid, s.business_id, s.id, md5('c' || b || '-' || i)::uuid,
       CASE WHEN i % 20 = 0 THEN 'stopped' WHEN i % 10 = 1 THEN 'active' ELSE 'finished' END,
       CASE WHEN i % 20 = 0 OR i % 10 = 1 THEN 2 WHEN i % 3 = 0 THEN 5 ELSE 4 END,
       CASE WHEN i % 10 = 1 AND i % 20 <> 0 THEN timestamptz '2027-02-01' END, '2027-01-01',
       CASE WHEN i % 20 = 0 THEN 'exit_event:review_left' END,
       CASE WHEN i % 20 = 0 OR i % 10 <> 1 THEN timestamptz '2027-01-03' END
  FROM generate_series(1, 2) b CROSS JOIN generate_series(1, :n) i
  JOIN journey.sequences s ON s.business_id = ('00000000-0000-0000-0000-0000000000b' || b.b)::uuid;
INSERT INTO journey.messages (business_id, enrollment_id, sequence_id, sequence_version, step_index,
       customer_id, channel, message_purpose, to_address, subject, body, status, send_after,
       delivery_status)
SELECT e.business_id, e.id, e.sequence_id, e.sequence_version, st.step_index, e.customer_id,
       CASE st.step_index WHEN 4 THEN 'sms' ELSE 'email' END, 'x', 'a@example.com', 's', 'b',
       CASE WHEN random() < 0.95 THEN 'sent' ELSE 'failed' END, '2027-01-01',
       CASE WHEN random() < 0.8 THEN 'delivered' END
  FROM journey.sequence_enrollments e
  JOIN LATERAL (VALUES (1), (4), (5)) st(step_index)
    ON st.step_index = 1 OR (e.status = 'finished' AND st.step_index = e.current_step_index);
INSERT INTO journey.step_counters (business_id, sequence_id, version, step_index, shard, reached, skipped, deferred)
SELECT s.business_id, s.id, 1, k.step, sh, :n / 16, 10, 1000
  FROM journey.sequences s, generate_series(2, 5) k(step), generate_series(0, 15) sh;
VACUUM ANALYZE;
DO $$ BEGIN CREATE ROLE bench_member; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT journey_user TO bench_member;
INSERT INTO journey.business_members VALUES ('00000000-0000-0000-0000-0000000000b1', 'bench_member');
SQL
seq=$(cluster_psql -Atc "SELECT id FROM journey.sequences WHERE business_id = '00000000-0000-0000-0000-0000000000b1'")
say "== reading one journey of $N enrollments (best of 5, ms)"
cat > "$WORK/time.sql" <<SQL
\timing on
SELECT sum(reached + queued + sent + delivered + failed + skipped + deferred + stopped_here) FROM journey.step_stats WHERE sequence_id = '$seq';
SELECT sum(reached + queued + sent + delivered + failed + skipped + deferred + stopped_here) FROM journey.step_stats WHERE sequence_id = '$seq';
SELECT sum(reached + queued + sent + delivered + failed + skipped + deferred + stopped_here) FROM journey.step_stats WHERE sequence_id = '$seq';
SELECT sum(reached + queued + sent + delivered + failed + skipped + deferred + stopped_here) FROM journey.step_stats WHERE sequence_id = '$seq';
SELECT sum(reached + queued + sent + delivered + failed + skipped + deferred + stopped_here) FROM journey.step_stats WHERE sequence_id = '$seq';
SELECT sum(enrolled + active + finished + stopped + exited) FROM journey.sequence_stats WHERE sequence_id = '$seq';
SELECT sum(enrolled + active + finished + stopped + exited) FROM journey.sequence_stats WHERE sequence_id = '$seq';
SELECT sum(enrolled + active + finished + stopped + exited) FROM journey.sequence_stats WHERE sequence_id = '$seq';
SELECT sum(enrolled + active + finished + stopped + exited) FROM journey.sequence_stats WHERE sequence_id = '$seq';
SELECT sum(enrolled + active + finished + stopped + exited) FROM journey.sequence_stats WHERE sequence_id = '$seq';
SQL
chmod 644 "$WORK/time.sql"
best() { awk '/^Time:/ {print $2}' | awk -v from="$1" -v to="$2" 'NR>=from && NR<=to' | sort -n | head -1; }
out=$(cluster_psql -f "$WORK/time.sql")
echo "step_stats, owner:      $(echo "$out" | best 1 5) ms"
echo "sequence_stats, owner:  $(echo "$out" | best 6 10) ms"
out=$( (echo "SET ROLE bench_member;"; cat "$WORK/time.sql") | cluster_psql)
echo "step_stats, member:     $(echo "$out" | best 1 5) ms"
echo "sequence_stats, member: $(echo "$out" | best 6 10) ms"
cluster_psql -c "SELECT step_index, kind, reached, queued, sent, delivered, failed, skipped, deferred, stopped_here FROM journey.step_stats WHERE sequence_id = '$seq' ORDER BY step_index"
if [ "${STATS_EXPLAIN:-0}" = 1 ]; then
    cluster_psql -c "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM journey.step_stats WHERE sequence_id = '$seq'"
    cluster_psql -c "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM journey.sequence_stats WHERE sequence_id = '$seq'"
else
    cluster_psql -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT * FROM journey.step_stats WHERE sequence_id = '$seq'" | grep -E "Scan|Execution"
fi
say "== simulate: the review-request journey over 30 days (best of 5, ms)"
cat > "$WORK/sim.sql" <<SQL
\timing on
SELECT count(*) FROM journey.simulate('$seq', '{"full_name": "Ada Lovelace", "email": "ada@example.com", "phone": "+15550001"}', '2027-03-13 23:30-05', '2027-04-12 23:30-05');
SELECT count(*) FROM journey.simulate('$seq', '{"full_name": "Ada Lovelace", "email": "ada@example.com", "phone": "+15550001"}', '2027-03-13 23:30-05', '2027-04-12 23:30-05');
SELECT count(*) FROM journey.simulate('$seq', '{"full_name": "Ada Lovelace", "email": "ada@example.com", "phone": "+15550001"}', '2027-03-13 23:30-05', '2027-04-12 23:30-05');
SELECT count(*) FROM journey.simulate('$seq', '{"full_name": "Ada Lovelace", "email": "ada@example.com", "phone": "+15550001"}', '2027-03-13 23:30-05', '2027-04-12 23:30-05');
SELECT count(*) FROM journey.simulate('$seq', '{"full_name": "Ada Lovelace", "email": "ada@example.com", "phone": "+15550001"}', '2027-03-13 23:30-05', '2027-04-12 23:30-05');
SQL
chmod 644 "$WORK/sim.sql"
out=$( (echo "SET ROLE bench_member;"; cat "$WORK/sim.sql") | cluster_psql)
echo "simulate, member:       $(echo "$out" | best 1 5) ms"
