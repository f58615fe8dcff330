# The executor in the sender (SPEC section 12), with no pg_cron at all and a
# ten-minute poll: an event's thank-you reaches the sink because the commit
# woke the sender's executor; a wait step ends on time because the sender
# sleeps until the earliest next_run_at; a rolled-back enrollment wakes
# nothing; many events, each delivered exactly once.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use JourneyTest;

my ($port, $log) = start_sink('http_sink.py', 'inworker');
my $node = sender_node('inworker');
my ($b, $c) = setup_business($node, 'Pipe Dreams');
add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'hello@pipedreams.example');

is($node->safe_psql('postgres', 'SHOW journey.executor_in_worker'), 'on', 'on by default');
ok(wait_for($node, 'SELECT enabled FROM journey.executor_status()', 't'),
	'the sender runs the executor');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'"),
	'0', 'no pg_cron here');

# A thank-you at once, a follow-up 1.5 s later.
my $seq = $node->safe_psql('postgres', qq{
SELECT journey.create_sequence('$b', '{"name": "Thanks", "status": "active",
  "trigger_event_type": "invoice_paid", "allow_manual_enroll": true,
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [
    {"kind": "send_email", "message": {"purpose": "thank_you",
      "subject": "Thanks, {{customer.first_name}}!", "body": "From {{business.name}}"}},
    {"kind": "send_email", "wait_ms": 1500, "message": {"purpose": "follow_up",
      "subject": "Still happy?", "body": "From {{business.name}}"}}]}')});

my $t0 = time;
my $ev = $node->safe_psql('postgres', qq{
SELECT journey.ingest_event('$b', 'invoice_paid', '{"id": "$c"}', '{"invoice": 1}')});
ok(wait_for($node, q{SELECT count(*) FROM journey.messages
	WHERE message_purpose = 'thank_you' AND status = 'sent'}, '1', 30),
	'the thank-you is sent without pg_cron or an explicit call');
my $latency = time - $t0;
note(sprintf('event commit -> sent (as seen by polling): %.0f ms', 1000 * $latency));
ok($latency < 10, 'woken at the commit, not by the ten-minute poll');
my @got = sink_records($log);
is(scalar(@got), 1, 'the sink got one request');
like($got[0]{body}, qr/"subject": ?"Thanks, Ada!"/, 'rendered by the executor');

# The follow-up: only the next_run_at alarm can run it (the poll is 10 min).
ok(wait_for($node, q{SELECT count(*) FROM journey.messages
	WHERE message_purpose = 'follow_up' AND status = 'sent'}, '1', 30),
	'the step after the wait runs when it is due');
is($node->safe_psql('postgres', q{
SELECT (f.send_after - t.send_after) >= interval '1500 ms',
       (f.send_after - t.send_after) < interval '6 s'
  FROM journey.messages t, journey.messages f
 WHERE t.message_purpose = 'thank_you' AND f.message_purpose = 'follow_up'}), 't|t',
	'not before the wait ended, and soon after it');
is($node->safe_psql('postgres', 'SELECT status FROM journey.sequence_enrollments'),
	'finished', 'the enrollment finished');

# A rolled-back enrollment wakes nothing; the committed one after it does,
# exactly once (the counter moves synchronously at commit).
my $wakeups = $node->safe_psql('postgres', 'SELECT wakeups FROM journey.executor_status()');
my $c2 = $node->safe_psql('postgres', qq{
INSERT INTO journey.customers (business_id, full_name, email)
VALUES ('$b', 'Grace Hopper', 'grace\@example.com') RETURNING id});
$node->safe_psql('postgres', qq{
BEGIN;
SELECT journey.enroll_customer('$seq', '$c2');
SELECT journey.ingest_event('$b', 'invoice_paid', '{"id": "$c2"}');
ROLLBACK;});
is($node->safe_psql('postgres', 'SELECT wakeups FROM journey.executor_status()'), $wakeups,
	'a rolled-back transaction wakes nothing');
$node->safe_psql('postgres', "SELECT journey.enroll_customer('$seq', '$c2')");
is($node->safe_psql('postgres', 'SELECT wakeups FROM journey.executor_status()'), $wakeups + 1,
	'a committed enroll_customer wakes it once');
ok(wait_for($node, qq{SELECT count(*) FROM journey.messages
	WHERE customer_id = '$c2' AND message_purpose = 'thank_you' AND status = 'sent'}, '1', 30),
	'the manual enrollment is delivered');
# An event that enrolls no one (no journey starts on it) wakes nothing.
$wakeups = $node->safe_psql('postgres', 'SELECT wakeups FROM journey.executor_status()');
$node->safe_psql('postgres', qq{SELECT journey.ingest_event('$b', 'page_viewed', '{"id": "$c2"}')});
is($node->safe_psql('postgres', 'SELECT wakeups FROM journey.executor_status()'), $wakeups,
	'an event that made nothing due wakes nothing');

# Many events: 50 customers in one transaction, 50 more in their own.
$node->safe_psql('postgres', qq{
INSERT INTO journey.customers (business_id, full_name, email, external_id)
SELECT '$b', 'Bulk ' || g, 'bulk' || g || '\@example.com', 'bulk-' || g
  FROM generate_series(1, 100) g;
INSERT INTO journey.events (business_id, event_type, customer_id)
SELECT '$b', 'invoice_paid', id FROM journey.customers
 WHERE external_id IN (SELECT 'bulk-' || g FROM generate_series(1, 50) g);});
$node->safe_psql('postgres', join('', map {
	"SELECT journey.ingest_event('$b', 'invoice_paid', '{\"external_id\": \"bulk-$_\"}');\n" } 51 .. 100));
ok(wait_for($node, q{SELECT count(*) FROM journey.messages WHERE status = 'sent'}, '204', 60),
	'every message of the 100 events is sent (2 each, and the 4 before)');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT enrollment_id, step_index FROM journey.enrollment_log
 GROUP BY 1, 2, outcome HAVING count(*) > 1) d}), '0', 'no step decided twice');
@got = sink_records($log);
my %keys;
$keys{ $_->{headers}{'Idempotency-Key'} }++ for @got;
is(scalar(@got), 204, 'the sink got 204 requests');
is(scalar(grep { $_ > 1 } values %keys), 0, 'no message sent twice');
is($node->safe_psql('postgres', q{
SELECT passes > 0, advanced >= 102, last_pass_at IS NOT NULL FROM journey.executor_status()}),
	't|t|t', 'executor_status counts the passes and the enrollments advanced');

# Administrators only.
$node->safe_psql('postgres', 'CREATE ROLE tenant LOGIN; GRANT journey_user TO tenant');
my ($rc, $out, $err) = $node->psql('postgres', 'SELECT * FROM journey.executor_status()',
	extra_params => [ '-U', 'tenant' ]);
like($err, qr/permission denied for function executor_status/, 'journey_user cannot read it');

$node->stop;
done_testing();
