# Journeys, steps, customers, events and enrollments survive a clean restart
# and a crash (immediate stop) of the server, byte for byte.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

# The executor runs only when called: the rows stay where the test left them.
my $node = journey_node('engine', conf => "journey.executor_in_worker = off
");

$node->safe_psql('postgres', q{
INSERT INTO journey.businesses (id, name, timezone)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'Pipe Dreams', 'America/New_York');
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{
  "name": "Review request", "status": "active", "trigger_event_type": "invoice_paid",
  "exit_event_types": ["review_left"], "allow_manual_enroll": true,
  "quiet_hours": {"start": "21:00", "end": "08:00"},
  "steps": [
    {"kind": "send_email", "message": {"purpose": "thank_you", "subject": "Thanks", "body": "Hi {{customer.first_name}}"}},
    {"kind": "wait", "wait_ms": 172800000},
    {"kind": "branch", "branch_config": {"if": {"field": "customer.phone", "op": "exists"}, "then": 4, "else": 5}},
    {"kind": "send_sms", "next": 0, "message": {"purpose": "review_request", "body": "{{review_link}}"}},
    {"kind": "send_email", "message": {"purpose": "review_request", "subject": "Review?", "body": "{{review_link}}"}}
  ]}');
SELECT journey.ingest_event('00000000-0000-0000-0000-0000000000b1', 'invoice_paid',
  jsonb_build_object('external_id', 'C' || g, 'full_name', 'Customer ' || g, 'email', 'c' || g || '@example.com'),
  jsonb_build_object('invoice', g), 'evt-' || g, '2026-03-01 12:00+00')
FROM generate_series(1, 200) g;
SELECT journey.ingest_event('00000000-0000-0000-0000-0000000000b1', 'review_left',
  jsonb_build_object('external_id', 'C' || g), '{}', NULL, '2026-03-02 12:00+00')
FROM generate_series(1, 20) g;
});

# A fingerprint of everything the engine wrote, in a stable order.
my $fingerprint_sql = q{
SELECT md5(string_agg(t, '|' ORDER BY t)) FROM (
  SELECT 's' || row(s.*)::text AS t FROM journey.sequences s
  UNION ALL SELECT 'st' || row(st.*)::text FROM journey.sequence_steps st
  UNION ALL SELECT 'c' || row(c.*)::text FROM journey.customers c
  UNION ALL SELECT 'e' || row(e.*)::text FROM journey.events e
  UNION ALL SELECT 'en' || row(en.*)::text FROM journey.sequence_enrollments en
  UNION ALL SELECT 'l' || row(l.*)::text FROM journey.enrollment_log l) x};
my $counts_sql = q{
SELECT (SELECT count(*) FROM journey.sequences) || ',' ||
       (SELECT count(*) FROM journey.sequence_steps) || ',' ||
       (SELECT count(*) FROM journey.customers) || ',' ||
       (SELECT count(*) FROM journey.sequence_enrollments WHERE status = 'active') || ',' ||
       (SELECT count(*) FROM journey.sequence_enrollments WHERE status = 'stopped')};

my $before = $node->safe_psql('postgres', $fingerprint_sql);
is($node->safe_psql('postgres', $counts_sql), '1,5,200,180,20',
	'one journey, five steps, 200 customers, 180 active and 20 stopped enrollments');

$node->restart;
is($node->safe_psql('postgres', $fingerprint_sql), $before, 'everything intact after a clean restart');

$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres', $fingerprint_sql), $before, 'everything intact after a crash');

# The engine keeps working after recovery: idempotency keys still hold and
# new events still enroll.
is($node->safe_psql('postgres', q{
SELECT journey.ingest_event('00000000-0000-0000-0000-0000000000b1', 'invoice_paid',
  '{"external_id": "C1"}', '{}', 'evt-1', '2026-03-05 12:00+00') =
  (SELECT id FROM journey.events WHERE idempotency_key = 'evt-1')}), 't',
	'a repeated idempotency key still returns the first event');
$node->safe_psql('postgres', q{
SELECT journey.ingest_event('00000000-0000-0000-0000-0000000000b1', 'invoice_paid',
  '{"external_id": "C1"}', '{}', NULL, '2026-03-05 12:00+00')});
is($node->safe_psql('postgres', $counts_sql), '1,5,200,181,20',
	'a stopped customer re-enters after recovery');

$node->stop;
done_testing();
