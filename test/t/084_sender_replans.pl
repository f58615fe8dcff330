# The sender plans its statements once and keeps them; plans made while
# the tables were nearly empty must not outlive the tables' growth.  On a
# new database the claim, planned for a messages table of a few pages,
# locked each claimed row through a sequential scan of the whole table
# long after a burst had grown it (a 100k burst drained at 1,300 instead
# of 9,300 messages/s).  auto_explain shows the plan the sender's claim
# runs: a sequential scan while the table is tiny, its primary key once it
# has grown past twice its size, and again after a TRUNCATE.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use JourneyTest;

my ($port, $log) = start_sink('http_sink.py', 'replan');
my $node = sender_node('replan', q{
shared_preload_libraries = 'journey,auto_explain'
auto_explain.log_min_duration = 0
auto_explain.log_nested_statements = on
});
my ($b, $c) = setup_business($node, 'Pipe Dreams');
my $provider = add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'hello@pipedreams.example');

my $queued = 0;

# Queues one message (as the executor would) and waits until it is sent.
sub send_one
{
	$queued++;
	$node->safe_psql('postgres', qq{
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, subject, body)
VALUES ('$b', '$c', 'email', 'ann\@example.com', 'Hi', 'Message $queued')});
	return wait_for($node,
		qq{SELECT count(*) FROM journey.messages WHERE status = 'sent' AND body = 'Message $queued'},
		1, 30);
}

# How the last claim logged after $offset reached the rows it locked.
sub claim_lock_scan
{
	my ($offset) = @_;
	my @plans = split /\n(?=\d{4}-\d\d-\d\d )/, slurp_file($node->logfile, $offset);
	my ($last) = grep { /Query Text: WITH cand AS/ && /SET status = 'sending'/ } reverse @plans;
	return 'no claim logged' unless defined $last;
	# The LockRows node of the "locked" CTE, and the scan beneath it.
	return $1 if $last =~ /LockRows.*?\n.*?->  ((?:Seq|Index|Bitmap Heap) Scan[^\n]*? on messages m_1)/s;
	return 'no lock scan found';
}

# The sender looks at the sizes at most once a second: messages one by
# one, for up to 20 s, until a claim shows the new plan.
sub claim_after_growth
{
	my ($offset) = @_;
	my $deadline = time + 20;
	my $scan = '';
	while (time < $deadline)
	{
		send_one() or return 'a message was not sent';
		$scan = claim_lock_scan($offset);
		last if $scan =~ /^(?:Index|Bitmap Heap) Scan/;
		$offset = -s $node->logfile;
		usleep(100_000);
	}
	return $scan;
}

# Seven claims on a table of a few pages: past the plan cache's five
# custom plans, the sender keeps a generic one.
ok(send_one(), "message $_ sent") for 1 .. 7;
like(claim_lock_scan(0), qr/^Seq Scan on messages m_1/,
	'on a nearly empty table the claim locks its rows by a sequential scan (the premise)');

# A history of 40k sent messages: the table is far past twice its size.
$node->safe_psql('postgres', qq{
SET auto_explain.log_min_duration = -1;
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, subject, body, status, attempts)
SELECT '$b', '$c', 'email', 'ann\@example.com', 'Old', 'Old message ' || g, 'sent', 1
  FROM generate_series(1, 40000) g});
my $offset = -s $node->logfile;
like(claim_after_growth($offset), qr/^(?:Index Scan using messages_pkey|Bitmap Heap Scan) on messages m_1/,
	'after the growth the claim locks its rows through the primary key');

# TRUNCATE invalidates the plans itself: planned anew on the empty table,
# they go back to a sequential scan, and a new growth is noticed again
# (the sizes the plans saw follow the table down).
$node->safe_psql('postgres', 'TRUNCATE journey.messages CASCADE');
ok(send_one(), "message after the truncate sent") for 1 .. 7;
$offset = -s $node->logfile;
$node->safe_psql('postgres', qq{
SET auto_explain.log_min_duration = -1;
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, subject, body, status, attempts)
SELECT '$b', '$c', 'email', 'ann\@example.com', 'Old', 'Old message ' || g, 'sent', 1
  FROM generate_series(1, 40000) g});
like(claim_after_growth($offset), qr/^(?:Index Scan using messages_pkey|Bitmap Heap Scan) on messages m_1/,
	'after a truncate and a new growth the claim is planned anew as well');

is($node->safe_psql('postgres', q{SELECT count(*) FROM journey.messages WHERE status <> 'sent'}),
	'0', 'every message was sent');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM journey.messages WHERE attempts <> 1}),
	'0', 'each once');

done_testing();
