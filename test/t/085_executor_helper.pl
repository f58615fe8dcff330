# A burst of due enrollments gets a helper: when a pass of the sender's
# executor finds a full batch due, the sender starts a background worker
# that advances the rest on a core of its own while the sender delivers,
# and exits once a batch comes back short.  Events one by one start none,
# nor does a burst with journey.executor_in_worker off; beside a session
# calling the executor each enrollment is still advanced once.  kill -9 of the
# helper mid-burst: after the restart every enrollment gets its message,
# once, and every message reaches the provider under its own key.  DROP
# EXTENSION in the middle of a burst is not held up by the helper.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use JourneyTest;

my ($port, $log) = start_sink('http_sink.py', 'helper');
# Batches of ten, so that a few thousand enrollments take the helper long
# enough to be seen (and killed).
my $node = sender_node('helper', q{
journey.executor_batch_size = 10
});
my ($b, $c) = setup_business($node, 'Pipe Dreams');
add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'hello@pipedreams.example');
thanks_journey($node, $b);
ok(wait_for($node, 'SELECT enabled FROM journey.executor_status()', 't'), 'the sender runs the executor');

my $n = 0;

# Makes $count new customers and their invoice_paid events in one
# transaction: as many enrollments due at once.
sub burst
{
	my ($count) = @_;
	my $first = $n + 1;
	$n += $count;
	$node->safe_psql('postgres', qq{
BEGIN;
INSERT INTO journey.customers (business_id, full_name, email, external_id)
SELECT '$b', 'Customer ' || g, 'c' || g || '\@example.com', 'c-' || g
  FROM generate_series($first, $n) g;
INSERT INTO journey.events (business_id, event_type, customer_id)
SELECT '$b', 'invoice_paid', id FROM journey.customers
 WHERE external_id LIKE 'c-%' AND NOT EXISTS (
       SELECT FROM journey.events e WHERE e.customer_id = customers.id);
COMMIT;});
}

sub sent_count
{
	return $node->safe_psql('postgres', q{SELECT count(*) FROM journey.messages WHERE status = 'sent'});
}

sub helper_lines
{
	my @lines = slurp_file($node->logfile) =~
	  /journey executor helper for database "postgres" advanced (\d+) enrollments/g;
	return @lines;
}

# 1. A burst of 600: the helper advances most of it.
burst(600);
ok(wait_for($node, q{SELECT count(*) FROM journey.messages WHERE status = 'sent'}, 600, 120),
	'all 600 messages of the burst are sent');
my @helped = helper_lines();
is(scalar(@helped), 1, 'one helper ran');
cmp_ok($helped[0] // 0, '>=', 300, "it advanced most of the burst ($helped[0])");
is($node->safe_psql('postgres', 'SELECT advanced FROM journey.executor_status()'), '600',
	'executor_status counts the helper\'s enrollments with the sender\'s, each once');
is($node->safe_psql('postgres', q{
SELECT count(*), count(DISTINCT enrollment_id), count(*) FILTER (WHERE attempts = 1)
  FROM journey.messages}), '600|600|600', 'one message an enrollment, one attempt each');
ok(wait_for($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'journey executor helper'},
		'0', 30), 'the helper is gone once the burst is advanced');

# 2. Events one by one: a batch is never full, no helper.
for my $i (1 .. 5)
{
	$n++;
	$node->safe_psql('postgres', qq{
SELECT journey.ingest_event('$b', 'invoice_paid',
  '{"external_id": "one-$i", "full_name": "One $i", "email": "one$i\@example.com"}')});
}
ok(wait_for($node, q{SELECT count(*) FROM journey.messages WHERE status = 'sent'}, 605, 60),
	'the five single events are sent');
is(scalar(helper_lines()), 1, 'no helper for single events');

# 3. The executor off: a burst waits for a caller, and no helper starts.
$node->append_conf('postgresql.conf', 'journey.executor_in_worker = off');
$node->reload;
ok(wait_for($node, 'SELECT enabled FROM journey.executor_status()', 'f'), 'the executor is switched off');
burst(100);
$node->safe_psql('postgres', q{
DO $$ BEGIN WHILE journey.advance_due_enrollments(1000) > 0 LOOP END LOOP; END $$});
ok(wait_for($node, q{SELECT count(*) FROM journey.messages WHERE status = 'sent'}, 705, 60),
	'the burst advanced by a caller is sent');
is(scalar(helper_lines()), 1, 'no helper with the executor off');
$node->append_conf('postgresql.conf', 'journey.executor_in_worker = on');
$node->reload;
ok(wait_for($node, 'SELECT enabled FROM journey.executor_status()', 't'), 'the executor is on again');

# 4. A burst advanced by the sender, its helper and a session calling the
# executor in a loop, all at once: each enrollment once.
burst(2000);
$node->safe_psql('postgres', q{
DO $$ BEGIN FOR i IN 1..1000 LOOP EXIT WHEN journey.advance_due_enrollments(25) = 0; COMMIT; END LOOP; END $$});
ok(wait_for($node, q{SELECT count(*) FROM journey.messages WHERE status = 'sent'}, 2705, 120),
	'the burst advanced by three at once is sent');
is($node->safe_psql('postgres', q{
SELECT count(*), count(DISTINCT enrollment_id), count(*) FILTER (WHERE attempts = 1)
  FROM journey.messages}), '2705|2705|2705', 'one message an enrollment, one attempt each');

# 5. kill -9 of the helper in the middle of a burst of 4,000.
burst(4000);
my $pid = '';
my $deadline = time + 60;
while ($pid eq '' && time < $deadline)
{
	$pid = $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'journey executor helper'});
	usleep(5_000) if $pid eq '';
}
isnt($pid, '', 'the helper runs during the burst');
my $before = sent_count();
kill 'KILL', $pid if $pid ne '';
ok(wait_for($node, q{SELECT count(*) FROM journey.messages WHERE status = 'sent'}, 6705, 180),
	"after kill -9 (at $before sent) the whole burst is sent");
is($node->safe_psql('postgres', q{
SELECT count(*), count(DISTINCT enrollment_id) FROM journey.messages}), '6705|6705',
	'no enrollment got a second message');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM journey.sequence_enrollments WHERE status = 'active' AND next_run_at <= now()}),
	'0', 'no enrollment left due');
my %keys;
$keys{ $_->{headers}{'Idempotency-Key'} }++ for sink_records($log);
is(scalar(keys %keys), 6705, 'the provider got every message, each under its own key');
ok(slurp_file($node->logfile) =~ /terminated by signal 9/, 'the helper was killed (the server restarted)');

# 6. DROP EXTENSION in the middle of a burst: the helper never holds it up.
burst(4000);
$pid = '';
$deadline = time + 60;
while ($pid eq '' && time < $deadline)
{
	$pid = $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'journey executor helper'});
	usleep(5_000) if $pid eq '';
}
isnt($pid, '', 'a helper runs during the second burst');
my ($rc, $out, $err) = $node->psql('postgres', 'DROP EXTENSION journey CASCADE', timeout => 30);
is($rc, 0, 'DROP EXTENSION succeeds while the helper works') or diag($err);
ok(wait_for($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'journey executor helper'},
		'0', 30), 'and the helper leaves');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'journey sender'}),
	'1', 'the sender is still there (waiting for journey to be installed)');

$node->stop;
done_testing();
