# wait_until racing the executor (issue 15).  An awaited event whose
# insert meets an executor that holds the enrollment at its timeout waits
# for it, then leaves alone the enrollment the executor moved on (the
# timeout won; no stale mark).  An executor that meets an enrollment the
# event's still-open transaction has marked skips it (SKIP LOCKED) and
# takes the "then" arm once the event commits: never both arms, never a
# lost event.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

# The test drives the executor itself: the sender's must not take the
# enrollments first.
my $node = journey_node('wait_until_race', conf => "journey.executor_in_worker = off\n");
$node->safe_psql('postgres', q{
INSERT INTO journey.businesses (id, name) VALUES ('00000000-0000-0000-0000-0000000000b1', 'B');
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "J", "status": "active",
  "trigger_event_type": "invoice_paid", "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "wait_until", "event": "review_left", "timeout_ms": 86400000, "then": 3, "else": 2},
            {"kind": "send_email", "next": 0, "message": {"subject": "Reminder", "body": "Please"}},
            {"kind": "send_email", "message": {"subject": "Thanks", "body": "Thank you"}}]}');
});

sub enroll
{
	my ($customer) = @_;
	$node->safe_psql('postgres', qq{
SELECT journey.ingest_event('00000000-0000-0000-0000-0000000000b1', 'invoice_paid',
  '{"external_id": "$customer", "full_name": "$customer", "email": "$customer\@example.com"}', '{}', NULL, '2026-01-01')});
}

sub review_sql
{
	my ($customer) = @_;
	return qq{SELECT journey.ingest_event('00000000-0000-0000-0000-0000000000b1', 'review_left', '{"external_id": "$customer"}', '{}', NULL, '2026-01-01 23:00')};
}

sub outcome
{
	my ($customer) = @_;
	return $node->safe_psql('postgres', qq{
SELECT string_agg(l.outcome, ',' ORDER BY l.id) || ' ' || coalesce(e.meta ? 'wait_until', false)::text
  FROM journey.sequence_enrollments e JOIN journey.customers c ON c.id = e.customer_id
  JOIN journey.enrollment_log l ON l.enrollment_id = e.id
 WHERE c.external_id = '$customer' GROUP BY e.meta});
}

# 1. The executor holds the enrollment at its timeout; the review waits.
enroll('late');
my $executor = $node->background_psql('postgres');
$executor->query_safe(q{BEGIN; SELECT journey.advance_due_enrollments(100, '2026-01-02')});
my $reviewer = $node->background_psql('postgres');
$reviewer->query_until(qr/started/, "\\echo started\n" . review_sql('late') . ";\n\\echo reviewed\n");
$node->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'})
  or die 'the review never waited for the executor';
$executor->query_safe('COMMIT');
$reviewer->query_until(qr/reviewed/, '');
is(outcome('late'), 'timed_out,queued,finished false',
	'a review meeting the executor at the timeout leaves the timed-out enrollment alone');

# 2. The review's transaction holds the mark; the executor skips, then takes "then".
enroll('early');
$reviewer->query_safe('BEGIN; ' . review_sql('early'));
is($node->safe_psql('postgres', q{SELECT journey.advance_due_enrollments(100, '2026-01-02')}),
	'0', 'the executor skips the enrollment the open event transaction holds');
$reviewer->query_safe('COMMIT');
$reviewer->quit;
$executor->quit;
is($node->safe_psql('postgres', q{SELECT journey.advance_due_enrollments(100, '2026-01-02')}),
	'1', 'after the event commits the executor takes it');
is(outcome('early'), 'event_arrived,queued,finished true',
	'the committed review sends the enrollment down the then arm');
is($node->safe_psql('postgres', q{SELECT string_agg(subject, ',' ORDER BY id) FROM journey.messages}),
	'Reminder,Thanks', 'one message each, from the arm each took');

$node->stop;
done_testing();
