# Nothing is lost when the sender dies mid-drain: kill -9 of the worker
# (the postmaster restarts everything) and an immediate shutdown.  The lease
# is ten minutes here, so only the restarted sender taking back what its
# predecessor held can deliver the messages in time; every message arrives,
# and a message that arrives twice carries the same idempotency key.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes;
use JourneyTest;

my ($port, $log, $sink) = start_sink('http_sink.py', 'crash');
my $node = sender_node('crash',
	"journey.lease_ms = 600000\njourney.max_concurrency = 16\njourney.http_timeout_ms = 5000\n");
my ($b) = setup_business($node);
add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/slow/200", from => 'shop@example.com');

sub check_all_delivered
{
	my ($first, $last, $what) = @_;
	my %got;
	for my $r (sink_records($log))
	{
		my $k = $r->{headers}{'Idempotency-Key'};
		my $id = ($r->{body} =~ /^\{"id":(\d+),/)[0];
		# A resend must carry the key of the message it repeats.
		fail("$what: request for message $id carried key $k") if idempotency_key($node, $id) ne $k;
		$got{$id}++;
	}
	my @missing = grep { !$got{$_} } ($first .. $last);
	is(scalar @missing, 0, "$what: every message reached the provider")
	  or diag("missing: @missing[0 .. ($#missing > 9 ? 9 : $#missing)]");
	my $dups = grep { $got{$_} > 1 } keys %got;
	note("$what: $dups message(s) delivered twice (at-least-once), same key each time");
}

sub queue_batch
{
	my ($n) = @_;
	return split /\|/, $node->safe_psql('postgres',
		"WITH i AS (INSERT INTO journey.messages (business_id, channel, to_address, body)
		   SELECT '$b', 'email', 'c' || g || '\@example.com', 'm' || g FROM generate_series(1, $n) g
		   RETURNING id)
		 SELECT min(id) || '|' || max(id) FROM i");
}

# kill -9 of the sender while messages are in flight.
my ($first, $last) = queue_batch(300);
ok(wait_for($node,
	"SELECT count(*) > 20 AND count(*) FILTER (WHERE status = 'sending') > 0
	 FROM journey.messages WHERE status IN ('sent', 'sending')", 't', 30), 'draining');
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'journey sender'");
kill 'KILL', $pid;
my $killed_at = time;
ok(wait_for($node, "SELECT count(*) FROM journey.messages WHERE status = 'sent'", '300', 60),
	'after kill -9 of the sender every message is sent');
cmp_ok(time - $killed_at, '<', 30, 'within seconds, not after the ten-minute lease');
like(slurp_file($node->logfile), qr/journey sender put back \d+ message\(s\) an earlier sender left unfinished/,
	'the new sender took back what the dead one held');
check_all_delivered($first, $last, 'kill -9');

# pg_ctl stop -m immediate mid-drain, then start again.
($first, $last) = queue_batch(300);
ok(wait_for($node,
	"SELECT count(*) FILTER (WHERE status = 'sending') > 0 FROM journey.messages WHERE id >= $first", 't', 30),
	'draining again');
$node->stop('immediate');
$node->start;
ok(wait_for($node, "SELECT count(*) FROM journey.messages WHERE status = 'sent'", '600', 60),
	'after an immediate shutdown every message is sent');
check_all_delivered($first, $last, 'immediate shutdown');
is($node->safe_psql('postgres', "SELECT count(*) FROM journey.messages WHERE status <> 'sent'"),
	'0', 'none failed, none left behind');

# A lease held by some other sender that never came back runs out, and the
# message goes out; one whose attempts are used up (it may be what killed
# that sender) fails instead of being tried forever.
my ($orphan, $poison) = split /\|/, $node->safe_psql('postgres',
	"WITH i AS (INSERT INTO journey.messages (business_id, channel, to_address, body, status,
	                                          attempts, claimed_by, lease_expires_at)
	   VALUES ('$b', 'email', 'o\@example.com', 'orphan', 'sending', 1, 'another server', now() + interval '5 s'),
	          ('$b', 'email', 'p\@example.com', 'poison', 'sending', 5, 'another server', now() + interval '5 s')
	   RETURNING id)
	 SELECT string_agg(id::text, '|' ORDER BY id) FROM i");
# A later message wakes the sender: the pass that sends it looks at the
# leases first, and must leave the live one alone.
my $later = queue_message($node, business => $b);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $later", 'sent', 60),
	'a pass of the sender ran while the lease was held');
is($node->safe_psql('postgres',
	"SELECT o.status || ', ' || (l.sent_at < o.lease_expires_at)
	   FROM journey.messages o, journey.messages l WHERE o.id = $orphan AND l.id = $later"),
	'sending, true', 'a message under another sender\'s live lease is left alone');
$node->append_conf('postgresql.conf', "journey.poll_interval_ms = 200\n");
$node->reload;
ok(wait_for($node, "SELECT status || attempts FROM journey.messages WHERE id = $orphan", 'sent2', 60),
	'once the lease expires it is sent again');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $poison", 'failed', 60),
	'a leased message out of attempts fails');
like($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $poison"),
	qr/sender stopped during the last allowed attempt/, 'and says why');

$node->stop;
$sink->kill_kill;
done_testing();
