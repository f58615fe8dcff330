# Stopping an enrollment while the executor is queuing its message: the
# stop waits for the executor's lock, and the message the executor queued
# must then be cancelled, not left queued (it would be sent to a customer
# who already left the journey).  Covers exit events and stop_enrollment.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

my $node = journey_node('race', conf => "journey.executor_in_worker = off
");
$node->safe_psql('postgres', q{
INSERT INTO journey.businesses (id, name) VALUES ('00000000-0000-0000-0000-0000000000b1', 'B');
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "J", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"], "allow_manual_enroll": true,
  "steps": [{"kind": "send_email", "message": {"subject": "Hi", "body": "Thanks"}},
            {"kind": "wait", "wait_ms": 86400000}]}');
});

sub race
{
	my ($customer, $stop_sql) = @_;
	$node->safe_psql('postgres', qq{
SELECT journey.ingest_event('00000000-0000-0000-0000-0000000000b1', 'invoice_paid',
  '{"external_id": "$customer", "full_name": "$customer", "email": "$customer\@example.com"}', '{}', NULL, '2026-01-01')});

	# The executor queues the message but has not committed yet.
	my $executor = $node->background_psql('postgres');
	$executor->query_safe(q{BEGIN; SELECT journey.advance_due_enrollments(100, '2026-01-02')});

	# The stop blocks on the enrollment the executor holds.
	my $stopper = $node->background_psql('postgres');
	$stopper->query_until(qr/started/, "\\echo started\n$stop_sql;\n\\echo stopped\n");
	$node->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'})
	  or die 'the stop never waited for the executor';

	$executor->query_safe('COMMIT');
	$executor->quit;
	$stopper->query_until(qr/stopped/, '');
	$stopper->quit;

	return $node->safe_psql('postgres', qq{
SELECT e.status || ' ' || string_agg(m.status, ',') FROM journey.sequence_enrollments e
JOIN journey.customers c ON c.id = e.customer_id
LEFT JOIN journey.messages m ON m.enrollment_id = e.id
WHERE c.external_id = '$customer' GROUP BY e.status});
}

is(race('exit', q{SELECT journey.ingest_event('00000000-0000-0000-0000-0000000000b1', 'review_left', '{"external_id": "exit"}')}),
	'stopped cancelled', 'an exit event arriving mid-executor cancels the message the executor queued');
is(race('manual', q{SELECT journey.stop_enrollment(e.id, 'customer asked') FROM journey.sequence_enrollments e
  JOIN journey.customers c ON c.id = e.customer_id WHERE c.external_id = 'manual'}),
	'stopped cancelled', 'stop_enrollment mid-executor cancels the message the executor queued');

is($node->safe_psql('postgres', q{SELECT string_agg(detail, ' | ' ORDER BY id) FROM journey.enrollment_log WHERE outcome = 'stopped'}),
	'exit_event:review_left (1 queued message(s) cancelled) | customer asked (1 queued message(s) cancelled)',
	'both stops are logged with the cancelled message');

$node->stop;
done_testing();
