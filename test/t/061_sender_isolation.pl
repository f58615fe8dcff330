# No business, provider or application transaction holds up another
# business's messages (issue 12): a hanging provider gets no more than its
# cap of requests in flight and claims are shared across businesses;
# messages taken back after a crash never block the rest; row locks held by
# an application on a customer or a message stall nothing and send nothing
# twice.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use JourneyTest;

my ($hport, $hlog, $hsink) = start_sink('http_sink.py', 'isolation');
# Small capacities make the old behaviour visible with few messages:
# 8 requests in flight, 4 per provider; a request times out after 2 s.  The
# 9 s lease lets a provider be claimed for three rounds of requests ahead.
my $node = sender_node('isolation', qq{
journey.max_concurrency = 8
journey.max_concurrency_per_provider = 4
journey.lease_ms = 9000
journey.max_attempts = 1
});
my ($slow) = setup_business($node, 'Hanging provider');
my ($fast, $fast_c) = setup_business($node, 'Healthy provider');
add_provider($node, business => $slow, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$hport/hang");
add_provider($node, business => $fast, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$hport/ok");

sub sent_within
{
	my ($id, $secs) = @_;
	my $t0 = time;
	my $ok = wait_for($node, "SELECT status FROM journey.messages WHERE id = $id", 'sent', 60);
	return ($ok, time - $t0);
}

# 40 messages to a hanging endpoint, queued first; then one of another
# business: it goes out within about one http_timeout_ms (2 s), not after
# the whole backlog has timed out (40 / 8 x 2 s = 10 s before).
$node->safe_psql('postgres',
	"INSERT INTO journey.messages (business_id, channel, message_purpose, to_address, subject, body)
	 SELECT '$slow', 'email', 'thank_you', 'x$_\@example.com', 's', 'b' FROM generate_series(1, 40)");
Time::HiRes::sleep(0.3);
my $m = queue_message($node, business => $fast);
my ($ok, $took) = sent_within($m);
ok($ok, 'the healthy business is sent while another one hangs');
cmp_ok($took, '<', 4, "within 2 x http_timeout_ms (took ${took}s)");
# Requests that reached the hanging endpoint less than a time limit apart
# were in flight together.  (More than the cap may be claimed ahead and
# wait in the sender, lanes.c; they never start until one ends.)
my @hung = sort { $a <=> $b } map { $_->{t} } grep { $_->{path} =~ m{^/hang} } sink_records($hlog);
my $peak = 0;
for my $i (0 .. $#hung)
{
	my $n = grep { $_ >= $hung[$i] && $_ < $hung[$i] + 1.5 } @hung;
	$peak = $n if $n > $peak;
}
cmp_ok(scalar(@hung), '>=', 4, 'the hanging provider was sent to');
cmp_ok($peak, '<=', 4, "the hanging provider has at most its cap in flight ($peak)");

# A provider that answers quickly (300 ms) is claimed for rounds ahead, so
# one commit moves more than its cap (the throughput of one provider), yet
# it never has more than its cap of requests in flight, and each message
# goes out once.
my ($quick) = setup_business($node, 'Quick provider');
add_provider($node, business => $quick, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$hport/slow/300");
$node->safe_psql('postgres',
	"INSERT INTO journey.messages (business_id, channel, message_purpose, to_address, subject, body)
	 SELECT '$quick', 'email', 'thank_you', 'q$_\@example.com', 's', 'b' FROM generate_series(1, 40)");
my $claimed_ahead = 0;
my $deadline = time + 60;
while (time < $deadline)
{
	my ($sending, $sent) = split /\|/, $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE status = 'sending'), count(*) FILTER (WHERE status = 'sent')
		   FROM journey.messages WHERE business_id = '$quick'");
	$claimed_ahead = $sending if $sending > $claimed_ahead;
	last if $sent == 40;
	Time::HiRes::sleep(0.05);
}
is($node->safe_psql('postgres', "SELECT count(*) FROM journey.messages WHERE business_id = '$quick' AND status = 'sent'"),
	'40', 'the quick provider got all its messages');
cmp_ok($claimed_ahead, '>', 4, "claimed ahead of its cap ($claimed_ahead at once)");
my @quick = grep { $_->{path} =~ m{^/slow/} } sink_records($hlog);
my %keys = map { ($_->{headers}{'Idempotency-Key'} // '') => 1 } @quick;
is(scalar(@quick), 40, 'one request per message');
is(scalar(keys %keys), 40, 'no message sent twice');
my @qt = sort { $a <=> $b } map { $_->{t} } @quick;
my $qpeak = 0;
for my $i (0 .. $#qt)
{
	my $n = grep { $_ >= $qt[$i] && $_ < $qt[$i] + 0.25 } @qt;
	$qpeak = $n if $n > $qpeak;
}
cmp_ok($qpeak, '<=', 4, "still at most its cap in flight ($qpeak)");

# Taken back after a crash: 20 messages this server's sender held when it
# died, to the hanging endpoint.  They get a lane of their own, one at a
# time; the rest of the outbox does not wait for them (20 x 2 s before).
$node->safe_psql('postgres', "UPDATE journey.messages SET status = 'cancelled' WHERE business_id = '$slow' AND status IN ('queued', 'sending')");
my $sysid = $node->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()');
$node->safe_psql('postgres',
	"INSERT INTO journey.messages (business_id, channel, message_purpose, to_address, subject, body,
	                               status, attempts, claimed_by, lease_expires_at)
	 SELECT '$slow', 'email', 'thank_you', 'y$_\@example.com', 's', 'b',
	        'sending', 0, '$sysid', now() + interval '1 hour' FROM generate_series(1, 20)");
my $pid = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'journey sender'");
kill 'KILL', $pid;
ok(wait_for($node, "SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'journey sender' AND pid <> $pid", 't', 60),
	'the sender is back after the crash');
ok(wait_for($node, "SELECT count(*) FROM journey.messages WHERE business_id = '$slow' AND status = 'sending' AND claimed_by = '$sysid/probation' AND lease_expires_at < now() + interval '30 minutes'", '1', 30),
	'the taken-back messages go one at a time');
$m = queue_message($node, business => $fast);
($ok, $took) = sent_within($m);
ok($ok, 'a new message is sent while the taken-back ones hang');
cmp_ok($took, '<', 4, "without waiting for them (took ${took}s)");
$node->safe_psql('postgres', "UPDATE journey.messages SET status = 'cancelled' WHERE business_id = '$slow' AND status = 'queued'");

# An application holds a customer row in an open transaction (FOR NO KEY
# UPDATE, as its UPDATE of the customer would; FOR UPDATE would also block
# the test's own insert of a message, whose foreign key needs KEY SHARE):
# review requests to that customer are sent once, the sender goes on with
# everything else, and last_review_request_at follows once the lock goes.
my $app = $node->background_psql('postgres');
$app->query_safe("BEGIN; SELECT 1 FROM journey.customers WHERE id = '$fast_c' FOR NO KEY UPDATE;");
my $rr = queue_message($node, business => $fast, customer => $fast_c, purpose => 'review_request');
($ok, $took) = sent_within($rr);
ok($ok, 'a review request to a locked customer is sent');
cmp_ok($took, '<', 4, "without waiting for the lock (took ${took}s)");
my $other = queue_message($node, business => $fast);
($ok, $took) = sent_within($other);
ok($ok && $took < 4, 'the sender goes on with other messages');
is($node->safe_psql('postgres', "SELECT last_review_request_at IS NULL FROM journey.customers WHERE id = '$fast_c'"),
	't', 'last_review_request_at waits for the lock');
Time::HiRes::sleep(2.5);
my $key_rr = idempotency_key($node, $rr);
is(scalar(grep { ($_->{headers}{'Idempotency-Key'} // '') eq $key_rr } sink_records($hlog)), 1,
	'sent exactly once (no lease expiry, no second send)');
$app->query_safe('COMMIT');
ok(wait_for($node,
	"SELECT c.last_review_request_at = m.sent_at FROM journey.customers c, journey.messages m WHERE c.id = '$fast_c' AND m.id = $rr",
	't', 30), 'then last_review_request_at is the send time');
is($node->safe_psql('postgres', 'SELECT count(*) FROM journey.review_request_marks'), '0', 'no mark left behind');

# An application holds the message row itself: the result waits in memory,
# nothing stalls, and it is written when the lock goes.  (A slow answer
# gives the application time to take the lock while it is in flight.)
$node->safe_psql('postgres',
	"UPDATE journey.providers SET endpoint = 'http://127.0.0.1:$hport/slow/1500' WHERE business_id = '$fast'");
$app->query_safe("BEGIN");
my $held = queue_message($node, business => $fast);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $held", 'sending', 30), 'claimed');
$app->query_safe("SELECT 1 FROM journey.messages WHERE id = $held FOR UPDATE");
my $after = queue_message($node, business => $fast);
($ok, $took) = sent_within($after);
ok($ok && $took < 4, 'a message row held by an application stalls no other message');
$app->query_safe('COMMIT');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $held", 'sent', 30),
	'its result is written once the lock goes');
my $key_held = idempotency_key($node, $held);
is(scalar(grep { ($_->{headers}{'Idempotency-Key'} // '') eq $key_held } sink_records($hlog)), 1, 'sent once');
$app->quit;

$node->stop;
done_testing();
