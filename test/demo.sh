#!/usr/bin/env bash
# journey end to end, in one command: installs what is missing (as root),
# builds and installs the extension, starts a throwaway cluster with pg_cron
# and journey preloaded plus an HTTP and an SMTP sink on 127.0.0.1, creates a
# plumber with the review-request journey, ingests invoice_paid events, lets
# the real executor and sender run (the executor inside the sender: no
# pg_cron job, no call by hand), prints how long the thank-you took from the
# webhook's commit to the mail server, what the sinks received and each
# customer's timeline.  Everything is removed at the end unless --keep.
#
#   bash test/demo.sh [--keep]
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
keep=false
[ "${1:-}" = "--keep" ] && keep=true

if [ "$(id -u)" = 0 ]; then
    bash "$src/test/install-deps.sh"
fi
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)}
echo "== building and installing journey"
make -C "$src" -s PG_CONFIG="$PG_CONFIG" >/dev/null
make -C "$src" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
PG_BIN=$("$PG_CONFIG" --bindir)
. "$src/test/cluster.sh"

# The sinks stand in for Twilio and a mail server; they listen on 127.0.0.1.
sink_pids=()
stop_all() {
    for pid in "${sink_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "${sinkdir:-}"
    cluster_stop
}
# Starts a sink in this shell (not in a $(...) subshell, which would lose
# its pid) and stores the port it listens on in the variable named $4.
start_sink() {
    local script=$1 log=$2 portfile=$3
    python3 "$src/test/sinks/$script" "$log" > "$portfile" 2>/dev/null &
    sink_pids+=($!)
    for _ in $(seq 100); do
        if [ -s "$portfile" ]; then printf -v "$4" '%s' "$(head -1 "$portfile")"; return; fi
        sleep 0.1
    done
    echo "sink $script did not start" >&2
    exit 1
}

echo "== starting a throwaway cluster"
cluster_start "journey.poll_interval_ms = 1000"
if $keep; then trap - EXIT; else trap stop_all EXIT; fi
sinkdir=$(mktemp -d /tmp/journey-demo-sinks.XXXXXX)
start_sink http_sink.py "$sinkdir/http.jsonl" "$sinkdir/http.port" http_port
start_sink smtp_sink.py "$sinkdir/smtp.jsonl" "$sinkdir/smtp.port" smtp_port
echo "   HTTP sink (as Twilio) on 127.0.0.1:$http_port, SMTP sink on 127.0.0.1:$smtp_port"

echo "== creating a plumber, its providers and the review-request journey"
cluster_psql -v http_port="$http_port" -v smtp_port="$smtp_port" <<'SQL'
CREATE EXTENSION journey;
-- The business sits in a zone where it is daytime now, so quiet hours
-- (21:00-08:00 local) do not hold the demo's messages until morning.
SELECT name AS tz FROM pg_timezone_names
WHERE name IN ('America/Los_Angeles', 'America/New_York', 'Europe/London', 'Asia/Kolkata', 'Asia/Tokyo', 'Australia/Sydney')
ORDER BY abs(extract(hour FROM now() AT TIME ZONE name) - 13) LIMIT 1 \gset
SELECT journey.create_business('Pipe Dreams Plumbing', :'tz', 'https://g.page/r/pipe-dreams/review') AS biz \gset
INSERT INTO journey.providers (business_id, channel, kind, endpoint, from_address, credentials) VALUES
  (:'biz', 'email', 'smtp', 'smtp://127.0.0.1:' || :'smtp_port', 'hello@pipedreams.example', NULL),
  (:'biz', 'sms', 'twilio', 'http://127.0.0.1:' || :'http_port' || '/twilio/2010-04-01/Accounts/ACdemo/Messages.json',
   '+15550100', 'ACdemo:demo-token');
SELECT journey.create_sequence(:'biz', $${
  "name": "Review request", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
  "quiet_hours": {"start": "21:00", "end": "08:00"},
  "steps": [
    {"kind": "send_email", "message": {"purpose": "thank_you",
      "subject": "Thanks, {{customer.first_name}}!",
      "body": "Thank you for choosing {{business.name}} (invoice {{event.invoice}})."}},
    {"kind": "wait", "wait_ms": 5000},
    {"kind": "branch", "branch_config": {"if": {"field": "customer.phone", "op": "exists"}, "then": 4, "else": 5}},
    {"kind": "send_sms", "next": 0, "message": {"purpose": "review_request",
      "body": "Hi {{customer.name}}, how did we do? {{review_link}}"}},
    {"kind": "send_email", "message": {"purpose": "review_request", "subject": "How did we do?",
      "body": "Hi {{customer.first_name | default: \"there\"}}, a review helps us a lot: {{review_link}}"}}
  ]}$$) IS NOT NULL AS journey_created;
SQL
echo "   (in production the wait is two days; here it is 5 seconds)"

echo "== invoices are paid: three webhooks arrive"
# The commit's time (just before COMMIT) for the latency below.
webhook_at=$(cluster_psql -At <<'SQL' | tail -1
BEGIN;
SELECT journey.ingest_event(id, 'invoice_paid',
  '{"external_id": "QB-1", "full_name": "Ada Lovelace", "email": "ada@example.com", "phone": "+15550101"}',
  '{"invoice": "INV-101"}', 'qb-evt-1') AS ada_event,
       journey.ingest_event(id, 'invoice_paid',
  '{"external_id": "QB-2", "full_name": "Bob Ross", "email": "bob@example.com"}',
  '{"invoice": "INV-102"}', 'qb-evt-2') AS bob_event,
       journey.ingest_event(id, 'invoice_paid',
  '{"external_id": "QB-3", "full_name": "Cy Young", "email": "cy@example.com", "phone": "+15550103"}',
  '{"invoice": "INV-103"}', 'qb-evt-3') AS cy_event
FROM journey.businesses;
SELECT extract(epoch FROM clock_timestamp());
COMMIT;
SQL
)
cluster_psql -o /dev/null <<'SQL'
-- The same webhook delivered twice changes nothing.
SELECT journey.ingest_event(id, 'invoice_paid', '{"external_id": "QB-1"}', '{}', 'qb-evt-1') AS ada_again
FROM journey.businesses;
SQL

# Nothing calls the executor: the sender runs it when a commit makes an
# enrollment due, and again when the wait step ends.
sent() { cluster_psql -At -c "SELECT count(*) FROM journey.messages WHERE status = 'sent'"; }
wait_sent() {
    local want=$1
    for _ in $(seq 300); do
        [ "$(sent)" -ge "$want" ] && return 0
        sleep 0.1
    done
    echo "gave up waiting for $want sent messages; the server log is $CLUSTER_DIR/server.log" >&2
    cluster_psql -c "SELECT id, channel, to_address, status, attempts, last_error FROM journey.messages"
    exit 1
}

echo "== the sender's executor queues the thank-you emails; the sender delivers them"
wait_sent 3
python3 - "$sinkdir/smtp.jsonl" "$webhook_at" <<'PY'
import json, sys
arrived = sorted(json.loads(line)["t"] for line in open(sys.argv[1]))
lat = [(t - float(sys.argv[2])) * 1000 for t in arrived[:3]]
print("   webhook commit -> thank-you at the mail server: %s ms (%s)"
      % (", ".join("%.0f" % x for x in lat), "within a second" if max(lat) < 1000 else "SLOWER than a second"))
PY
echo "== Cy leaves a review before the review request is due"
cluster_psql -c "SELECT journey.ingest_event(id, 'review_left', '{\"external_id\": \"QB-3\"}', '{\"stars\": 5}') IS NOT NULL AS review_recorded FROM journey.businesses" >/dev/null
echo "== 5 seconds later the review requests go out: SMS to Ada, email to Bob, nothing to Cy"
wait_sent 5
sleep 1

echo
echo "== what the SMTP sink received"
python3 - "$sinkdir/smtp.jsonl" <<'PY'
import json, sys, email
for line in open(sys.argv[1]):
    r = json.loads(line)
    m = email.message_from_string(r["data"])
    subject = str(email.header.make_header(email.header.decode_header(m["Subject"])))
    print(f"   to {', '.join(r['rcpt'])}: \"{subject}\"  Message-ID {m['Message-ID']}")
PY
echo "== what the HTTP sink (as Twilio) received"
python3 - "$sinkdir/http.jsonl" <<'PY'
import json, sys, urllib.parse
for line in open(sys.argv[1]):
    r = json.loads(line)
    form = urllib.parse.parse_qs(r["body"])
    print(f"   SMS to {form['To'][0]}: \"{form['Body'][0]}\"  Idempotency-Key {r['headers'].get('Idempotency-Key')}")
PY

echo
echo "== each customer's timeline (journey.timeline)"
cluster_psql <<'SQL'
SELECT c.full_name AS customer, t.step_index AS step, t.what, t.detail
FROM journey.timeline t
JOIN journey.customers c ON c.id = t.customer_id AND c.business_id = t.business_id
ORDER BY c.full_name, t.at, t.phase, t.ref_id;
SELECT c.full_name AS customer, e.status, e.stop_reason
FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id ORDER BY 1;
SELECT m.channel, m.message_purpose AS purpose, m.to_address, m.status, m.attempts, m.provider_message_id
FROM journey.messages m ORDER BY m.id;
SQL

if $keep; then
    echo
    echo "The cluster keeps running. Connect with:"
    echo "   $( [ "$(id -u)" = 0 ] && echo 'runuser -u postgres -- ')psql -h $CLUSTER_DIR -p $CLUSTER_PORT -U postgres $CLUSTER_DB"
    echo "Stop it with:"
    echo "   $( [ "$(id -u)" = 0 ] && echo 'runuser -u postgres -- ')$PG_BIN/pg_ctl -D $CLUSTER_DIR/data stop; kill ${sink_pids[*]}"
fi
