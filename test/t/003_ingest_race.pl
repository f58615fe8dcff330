# Two webhooks deliver the same event at the same moment on two connections:
# the second waits for the first, then returns the first event's id; no
# unique violation reaches either caller, and the customer both name (new
# to journey) is created once and enrolled once.  The second delivery
# changes nothing: not the customer it names differently, and it creates
# no customer of its own.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

my $node = journey_node('ingest_race', conf => "journey.executor_in_worker = off
");
$node->safe_psql('postgres', q{
INSERT INTO journey.businesses (id, name) VALUES ('00000000-0000-0000-0000-0000000000b1', 'B');
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{"name": "J", "status": "active",
  "trigger_event_type": "invoice_paid", "steps": [{"kind": "wait", "wait_ms": 60000}]}');
});

# The first delivery is in flight (inserted, not committed) while the
# second, with the same key, arrives on another connection.
sub race
{
	my ($first_call, $second_call) = @_;
	my $first = $node->background_psql('postgres');
	my $first_id = $first->query_safe("BEGIN; $first_call;");
	chomp $first_id;

	my $second = $node->background_psql('postgres', on_error_stop => 0);
	$second->query_until(qr/started/, "\\echo started\n$second_call;\n\\echo done\n");
	ok($node->poll_query_until('postgres',
			q{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'}),
		'the second delivery waits for the first');

	$first->query_safe('COMMIT');
	$first->quit;
	my $out = $second->query_until(qr/done/, '');
	$second->{stderr} = '' unless defined $second->{stderr};
	my $err = $second->{stderr};
	$second->quit;

	like($first_id, qr/^\d+$/, 'the first delivery returns an event id');
	like($out, qr/^\Q$first_id\E$/m, 'the second delivery returns the same event id');
	unlike($err // '', qr/ERROR/, 'no error reached the second caller');
}

sub call
{
	my ($key, $customer) = @_;
	return qq{SELECT journey.ingest_event('00000000-0000-0000-0000-0000000000b1', 'invoice_paid',
  '$customer', '{"invoice": 9}', '$key', '2026-01-01 12:00+00')};
}

# Both name the same new customer, the second with other details.
race(call('delivery-9', '{"external_id": "QB-9", "full_name": "Ada Lovelace", "email": "ada@example.com"}'),
	call('delivery-9', '{"external_id": "QB-9", "full_name": "Ada Byron", "email": "byron@example.com"}'));
is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM journey.events) || ',' || (SELECT count(*) FROM journey.customers)
  || ',' || (SELECT count(*) FROM journey.sequence_enrollments)}), '1,1,1',
	'one event, one customer, one enrollment');
is($node->safe_psql('postgres', q{SELECT full_name || ' ' || email FROM journey.customers}),
	'Ada Lovelace ada@example.com', 'the second delivery did not change the customer');

# The second names a customer journey does not know yet: it is not created.
race(call('delivery-10', '{"external_id": "QB-10", "full_name": "Bob Stone"}'),
	call('delivery-10', '{"external_id": "QB-11", "full_name": "Cy Young"}'));
is($node->safe_psql('postgres', q{
SELECT string_agg(external_id, ',' ORDER BY external_id) FROM journey.customers}),
	'QB-10,QB-9', 'the second delivery created no customer');
is($node->safe_psql('postgres', q{SELECT count(*) FROM journey.events}), '2', 'two events in all');

$node->stop;
done_testing();
