# journey.executor_in_worker = off: the sender still sends, but nothing
# advances an enrollment until the executor is called (pg_cron's job or by
# hand); switched on and off again at reload, the sender follows.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

my ($port, $log) = start_sink('http_sink.py', 'off');
# pg_stat_statements counts the sender's claims (one test below).
my $node = sender_node('off', q{
journey.executor_in_worker = off
shared_preload_libraries = 'journey,pg_stat_statements'
pg_stat_statements.track = all
});
my ($b, $c) = setup_business($node, 'Pipe Dreams');
add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'hello@pipedreams.example');
thanks_journey($node, $b);
my $n = 0;

sub customer
{
	$n++;
	return $node->safe_psql('postgres', qq{
INSERT INTO journey.customers (business_id, full_name, email)
VALUES ('$b', 'Customer $n', 'c$n\@example.com') RETURNING id});
}

# Nothing advances it, as proved by a message queued after the event being
# sent first: the sender was awake and working, and still left it alone.
sub event_stays_due
{
	my ($what) = @_;
	my $cust = customer();
	$node->safe_psql('postgres', qq{SELECT journey.ingest_event('$b', 'invoice_paid', '{"id": "$cust"}')});
	my $id = queue_message($node, business => $b, customer => $cust, purpose => 'probe');
	ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $id", 'sent', 30),
		"$what: the sender sends a message queued after the event");
	is($node->safe_psql('postgres', qq{
SELECT e.current_step_index || ' ' || e.status || ' ' || (e.next_run_at <= now())
       || ' ' || (SELECT count(*) FROM journey.messages m WHERE m.enrollment_id = e.id)
  FROM journey.sequence_enrollments e WHERE e.customer_id = '$cust'}), '1 active true 0',
		"$what: the due enrollment is left where it was");
	return $cust;
}

ok(wait_for($node, 'SELECT enabled, next_pass_at IS NULL FROM journey.executor_status()', 'f|t', 30),
	'executor_status shows it off');

# With the executor off, a commit that only made enrollments due leaves the
# sender asleep: before, each woke it for an empty claim (a transaction of
# five statements per ingested event).  The probe message queued after the
# events wakes it once; its claim and the claim after its result follow.
$node->safe_psql('postgres', 'CREATE EXTENSION pg_stat_statements');
my $claims_sql = q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
 WHERE query LIKE 'WITH cand AS (%'};
ok(wait_for($node, "SELECT ($claims_sql) > 0", 't', 30), 'the sender\'s claims are counted');
my $claims = $node->safe_psql('postgres', $claims_sql);
my @woke;
for my $i (1 .. 6)
{
	my $cust = customer();
	push @woke, "'$cust'";
	$node->safe_psql('postgres', qq{SELECT journey.ingest_event('$b', 'invoice_paid', '{"id": "$cust"}')});
}
my $probe = queue_message($node, business => $b, customer => customer(), purpose => 'probe');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $probe", 'sent', 30),
	'the probe is sent');
cmp_ok($node->safe_psql('postgres', $claims_sql) - $claims, '<', 6,
	'six events made due did not make the sender claim');
# Out of the way of the counts below.
$node->safe_psql('postgres', 'DELETE FROM journey.customers WHERE id IN (' . join(', ', @woke) . ')');

my $c1 = event_stays_due('off');
is($node->safe_psql('postgres', 'SELECT passes FROM journey.executor_status()'), '0',
	'no executor pass ran');

# The explicit call (what pg_cron's job runs) advances it, and the sender
# delivers the message at once.
is($node->safe_psql('postgres', 'SELECT journey.advance_due_enrollments()'), '1',
	'an explicit advance_due_enrollments handles it');
ok(wait_for($node, qq{SELECT status FROM journey.messages
	WHERE customer_id = '$c1' AND message_purpose = 'thank_you'}, 'sent', 30),
	'and the sender delivers its message');

# On at reload: what was left due runs without a new event.
my $c2 = event_stays_due('still off');
$node->safe_psql('postgres',
	'ALTER SYSTEM SET journey.executor_in_worker = on; SELECT pg_reload_conf()');
ok(wait_for($node, qq{SELECT status FROM journey.messages
	WHERE customer_id = '$c2' AND message_purpose = 'thank_you'}, 'sent', 30),
	'switched on at reload, the sender advances what was due');
my $c3 = customer();
$node->safe_psql('postgres', qq{SELECT journey.ingest_event('$b', 'invoice_paid', '{"id": "$c3"}')});
ok(wait_for($node, qq{SELECT status FROM journey.messages
	WHERE customer_id = '$c3' AND message_purpose = 'thank_you'}, 'sent', 30),
	'and a new event is delivered by the worker alone');

# Off again at reload.
$node->safe_psql('postgres',
	'ALTER SYSTEM SET journey.executor_in_worker = off; SELECT pg_reload_conf()');
ok(wait_for($node, 'SELECT enabled FROM journey.executor_status()', 'f', 30),
	'the sender sees it off');
my $passes = $node->safe_psql('postgres', 'SELECT passes FROM journey.executor_status()');
my $c4 = event_stays_due('off again');
is($node->safe_psql('postgres', 'SELECT passes FROM journey.executor_status()'), $passes,
	'no pass ran while off');

# And on once more.
$node->safe_psql('postgres',
	'ALTER SYSTEM SET journey.executor_in_worker = on; SELECT pg_reload_conf()');
ok(wait_for($node, qq{SELECT status FROM journey.messages
	WHERE customer_id = '$c4' AND message_purpose = 'thank_you'}, 'sent', 30),
	'on again: delivered');

my @got = sink_records($log);
my %keys;
$keys{ $_->{headers}{'Idempotency-Key'} }++ for @got;
is(scalar(@got), 8, 'the sink got the 4 thank-yous and the 4 probes');
is(scalar(grep { $_ > 1 } values %keys), 0, 'none twice');

$node->stop;
done_testing();
