# The sender's own executor pass claims the messages it enqueues: they go
# in 'sending', claimed for the sender, and leave at the pass's commit
# without a claim of their own, as far as the provider's lane has room; the
# rest wait in the queue for the sender's claim.  A message with no
# provider stays queued; a sender killed with its pass's messages in flight
# sends them again after its restart, once.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use JourneyTest;

my ($port, $log) = start_sink('http_sink.py', 'preclaim');
# pg_stat_statements counts the sender's claims and what they took; a cap
# of four requests per provider (and a lease of one round) makes lanes of
# four.
my $node = sender_node('preclaim', q{
shared_preload_libraries = 'journey,pg_stat_statements'
pg_stat_statements.track = all
journey.max_concurrency_per_provider = 4
});
$node->safe_psql('postgres', 'CREATE EXTENSION pg_stat_statements');
my ($b, $c) = setup_business($node, 'Pipe Dreams');
my $provider = add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'hello@pipedreams.example');
thanks_journey($node, $b);
ok(wait_for($node, 'SELECT enabled FROM journey.executor_status()', 't'), 'the sender runs the executor');

my $n = 0;

sub customers
{
	my ($count) = @_;
	my $first = $n + 1;
	$n += $count;
	$node->safe_psql('postgres', qq{
INSERT INTO journey.customers (business_id, full_name, email, external_id)
SELECT '$b', 'Customer ' || g, 'c' || g || '\@example.com', 'c-' || g
  FROM generate_series($first, $n) g});
	return map { "c-$_" } $first .. $n;
}

# How often the sender's claim of queued messages ran since the reset, and
# the rows it returned.
sub claims
{
	return $node->safe_psql('postgres', q{
SELECT coalesce(sum(calls), 0) || ' ' || coalesce(sum(rows), 0) FROM pg_stat_statements
 WHERE query LIKE 'WITH cand AS%' AND query LIKE '%SET status = ''sending''%'});
}

sub claimed_from_queue
{
	return (split / /, claims())[1];
}

sub sent_count
{
	return $node->safe_psql('postgres', q{SELECT count(*) FROM journey.messages WHERE status = 'sent'});
}

# 1. Events one at a time: every message leaves claimed by the pass.
$node->safe_psql('postgres', 'SELECT pg_stat_statements_reset()');
my @one = customers(6);
my $expect = 0;
for my $ext (@one)
{
	$node->safe_psql('postgres', qq{SELECT journey.ingest_event('$b', 'invoice_paid', '{"external_id": "$ext"}')});
	$expect++;
	ok(wait_for($node, q{SELECT count(*) FROM journey.messages WHERE status = 'sent'}, $expect, 30),
		"event $expect: its message is sent");
}
is(claims(), '0 0',
	'no claim ran: the wake-ups were for the executor, whose pass claimed every message');
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE attempts = 1), count(*) FILTER (WHERE lease_expires_at IS NULL)
  FROM journey.messages}), '6|6', 'one attempt each, and no lease left behind');
my @got = sink_records($log);
my %keys;
$keys{ $_->{headers}{'Idempotency-Key'} }++ for @got;
is(scalar(@got), 6, 'the sink got six requests');
is(scalar(keys %keys), 6, 'each message once');

# 2. A burst in one transaction to a slow provider: the pass claims what
# the lane has room for (four), the claim takes the other eight as the
# lane drains (the poll is ten minutes: only the lane's own call for a
# claim, once down to half, can start it).
$node->safe_psql('postgres',
	"UPDATE journey.providers SET endpoint = 'http://127.0.0.1:$port/slow/400' WHERE id = '$provider'");
$node->safe_psql('postgres', 'SELECT pg_stat_statements_reset()');
my @burst = customers(12);
$node->safe_psql('postgres', qq{
INSERT INTO journey.events (business_id, event_type, customer_id)
SELECT '$b', 'invoice_paid', id FROM journey.customers
 WHERE external_id IN (} . join(', ', map { "'$_'" } @burst) . ')');
my $most_sending = 0;
my $deadline = time + 60;
while (sent_count() < 18 && time < $deadline)
{
	my $s = $node->safe_psql('postgres', q{SELECT count(*) FROM journey.messages WHERE status = 'sending'});
	$most_sending = $s if $s > $most_sending;
	usleep(20_000);
}
is(sent_count(), '18', 'all twelve of the burst are sent');
cmp_ok($most_sending, '<=', 4, "never more claimed than the lane holds (saw $most_sending)");
is(claimed_from_queue(), '8', 'the claim took the eight the pass had no room for');
@got = sink_records($log);
%keys = ();
$keys{ $_->{headers}{'Idempotency-Key'} }++ for @got;
is(scalar(grep { $_ > 1 } values %keys), 0, 'no message sent twice');

# 3. No provider for the channel: the message stays queued, unclaimed,
# while the sender goes on sending (an email queued after it leaves).
$node->safe_psql('postgres',
	"UPDATE journey.providers SET endpoint = 'http://127.0.0.1:$port/ok' WHERE id = '$provider'");
$node->safe_psql('postgres', qq{
SELECT journey.create_sequence('$b', '{"name": "Text", "status": "active",
  "trigger_event_type": "visit_done", "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "send_sms", "message": {"purpose": "thank_you", "body": "Thanks!"}}]}')});
$node->safe_psql('postgres', qq{SELECT journey.ingest_event('$b', 'visit_done', '{"id": "$c"}')});
ok(wait_for($node, q{SELECT count(*) FROM journey.messages WHERE channel = 'sms'}, '1', 30),
	'the pass queued the text message');
my $probe = queue_message($node, business => $b, customer => $c, purpose => 'probe');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $probe", 'sent', 30),
	'an email queued after it is sent');
is($node->safe_psql('postgres', q{
SELECT status, attempts, claimed_by IS NULL FROM journey.messages WHERE channel = 'sms'}),
	'queued|0|t', 'the text message waits in the queue, unclaimed');

# 4. kill -9 of the sender while its pass's message hangs at the provider:
# the restarted sender takes it back and, once the provider answers, sends
# it, once.
$node->safe_psql('postgres',
	"UPDATE journey.providers SET endpoint = 'http://127.0.0.1:$port/hang' WHERE id = '$provider'");
$node->safe_psql('postgres', 'SELECT pg_stat_statements_reset()');
my ($last) = customers(1);
$node->safe_psql('postgres', qq{SELECT journey.ingest_event('$b', 'invoice_paid', '{"external_id": "$last"}')});
my $id = $node->safe_psql('postgres', qq{
SELECT m.id FROM journey.messages m JOIN journey.customers k ON k.id = m.customer_id
 WHERE k.external_id = '$last'});
$deadline = time + 30;
usleep(20_000) while !(grep { $_->{path} eq '/hang' } sink_records($log)) && time < $deadline;
ok((grep { $_->{path} eq '/hang' } sink_records($log)), 'the request hangs at the provider');
is($node->safe_psql('postgres', "SELECT status, attempts FROM journey.messages WHERE id = $id"),
	'sending|1', 'in flight, on its first attempt');
is(claimed_from_queue(), '0', 'claimed by the pass, not by the claim');
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'journey sender'");
kill 'KILL', $pid;
ok(wait_for($node, 'SELECT count(*) FROM journey.sender_status()', '1', 60),
	'the server and its sender are back');
$node->safe_psql('postgres',
	"UPDATE journey.providers SET endpoint = 'http://127.0.0.1:$port/ok' WHERE id = '$provider'");
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $id", 'sent', 60),
	'after kill -9 the message is sent');
my $key = idempotency_key($node, $id);
my @ok = grep { $_->{path} eq '/ok' && $_->{headers}{'Idempotency-Key'} eq $key } sink_records($log);
is(scalar(@ok), 1, 'delivered once, with its idempotency key');

$node->stop;
done_testing();
