# A poison message (here: one during whose delivery the sender is killed,
# every time) does not crash-loop the sender: it uses up its attempts and
# fails alone, while the messages claimed in the same batch are delivered.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

my ($port, $log, $sink) = start_sink('http_sink.py', 'poison');
my $node = sender_node('poison',
	"journey.lease_ms = 600000\njourney.http_timeout_ms = 60000\njourney.max_attempts = 4\n");
my ($b) = setup_business($node);
my ($pb) = setup_business($node, 'Poisoned');
add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/slow/300", from => 'shop@example.com');
add_provider($node, business => $pb, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/hang", from => 'shop@example.com');

# One transaction: the poison and ten others, claimed in one batch.
my $poison = $node->safe_psql('postgres',
	"WITH p AS (INSERT INTO journey.messages (business_id, channel, to_address, body)
	   VALUES ('$pb', 'email', 'p\@example.com', 'poison') RETURNING id),
	 o AS (INSERT INTO journey.messages (business_id, channel, to_address, body)
	   SELECT '$b', 'email', 'o' || g || '\@example.com', 'other' FROM generate_series(1, 10) g)
	 SELECT id FROM p");

for my $round (1 .. 4)
{
	ok(wait_for($node,
		"SELECT status = 'sending' AND attempts = $round FROM journey.messages WHERE id = $poison",
		't', 60), "round $round: the poison message is in flight");
	my $pid = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'journey sender'");
	kill 'KILL', $pid;
}
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $poison", 'failed', 60),
	'the poison message fails once its attempts are used up');
like($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $poison"),
	qr/sender stopped during the last allowed attempt \(4 attempts\)/, 'and says why');
ok(wait_for($node,
	"SELECT count(*) FROM journey.messages WHERE id <> $poison AND status = 'sent'", '10', 60),
	'every message of its batch is delivered');
is($node->safe_psql('postgres',
	"SELECT max(attempts) <= 2 FROM journey.messages WHERE id <> $poison"), 't',
	'none of them took more than the attempt the first crash cost');
my $id = queue_message($node, business => $b);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $id", 'sent'),
	'and the sender goes on sending');

$node->stop('immediate');
$sink->kill_kill;
done_testing();
