# The sender you can watch and trust (issue 11): journey.sender_status()
# from shared memory, the WARNING of CREATE EXTENSION where no sender
# serves, a message whose address was suppressed after it was queued is
# cancelled at claim instead of sent, and a hot standby sends nothing
# until it is promoted, then drains the outbox within seconds.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use JourneyTest;

my ($port, $log, $sink) = start_sink('http_sink.py', 'health');
my $node = sender_node('health', "journey.poll_interval_ms = 300\nwal_level = replica\nmax_wal_senders = 4\n");
my ($b, $c) = setup_business($node);

# --- sender_status ---
ok(wait_for($node,
	"SELECT count(*) FROM journey.sender_status() WHERE datname = 'postgres' AND pid > 0
	   AND started_at <= now() AND in_flight = 0 AND sent = 0",
	'1'), 'sender_status: one sender, for postgres, nothing sent yet');
add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'shop@example.com');
my $bad = add_provider($node, business => $b, channel => 'sms', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/status/400", from => '+15550000');
my $m1 = queue_message($node, business => $b, customer => $c);
my $m2 = queue_message($node, business => $b, customer => $c, channel => 'sms');
ok(wait_for($node,
	"SELECT string_agg(status, ',' ORDER BY id) FROM journey.messages WHERE id IN ($m1, $m2)",
	'sent,failed'), 'one sent, one failed');
ok(wait_for($node,
	"SELECT sent || '/' || failed || '/' || retried || ' ' || (last_claim_at IS NOT NULL)
	        || ' ' || (last_result_at >= last_claim_at)
	   FROM journey.sender_status()",
	'1/1/0 true true'), 'sender_status counts what it sent and failed, and when');

# --- suppressed after queuing: cancelled at claim, not sent ---
my $later = $node->safe_psql('postgres',
	"INSERT INTO journey.messages (business_id, customer_id, channel, to_address, subject, body, send_after)
	 VALUES ('$b', '$c', 'email', 'ada\@example.com', 'Later', 'Later', now() + interval '2 seconds')
	 RETURNING id");
$node->safe_psql('postgres',
	"INSERT INTO journey.suppressions (business_id, channel, address, reason)
	 VALUES ('$b', 'email', 'ada\@example.com', 'unsubscribe')");
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $later", 'cancelled', 30),
	'a message to an address suppressed after it was queued is cancelled');
like($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $later"),
	qr/suppressed/, 'last_error says why');
is(scalar(grep { $_->{body} =~ /"id":$later,/ } sink_records($log)), 0, 'and it was not sent');

# --- the WARNING where no sender serves ---
$node->safe_psql('postgres', 'CREATE DATABASE unserved');
my ($rc, $out, $err) = $node->psql('unserved', 'CREATE EXTENSION journey');
is($rc, 0, 'CREATE EXTENSION succeeds in an unserved database');
like($err, qr/WARNING:  no journey sender serves database "unserved"/, 'with a WARNING');
like($err, qr/HINT:  .*journey.database_name = 'postgres,unserved'/, 'whose hint shows the fix');
($rc, $out, $err) = $node->psql('postgres',
	'DROP EXTENSION journey CASCADE; CREATE EXTENSION journey');
unlike($err, qr/WARNING/, 'no WARNING in a served database');
$node->safe_psql('postgres', "INSERT INTO journey.businesses (id, name) VALUES ('$b', 'Acme')");
$node->safe_psql('postgres',
	"INSERT INTO journey.customers (id, business_id, full_name, email) VALUES ('$c', '$b', 'Ada', 'ada\@example.com')");
add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'shop@example.com');

# --- hot standby: nothing sent, nothing logged; promoted: drains ---
$node->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'b1', has_streaming => 1);
$standby->start;
my $offset = -s $standby->logfile;
# Queued on the primary while its sender is stopped (it would send them).
$node->safe_psql('postgres',
	"ALTER SYSTEM SET journey.database_name = 'nowhere'; SELECT pg_reload_conf()");
ok(wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'journey sender'", '0'),
	'primary: the sender stops');
my @ids = map { queue_message($node, business => $b, customer => $c, subject => "standby $_") } 1 .. 5;
$node->wait_for_catchup($standby);
is($standby->safe_psql('postgres', "SELECT count(*) FROM journey.messages WHERE status = 'queued'"),
	'5', 'standby: the queued messages arrived');
# Long enough for a sender to have started and failed, had it tried.
ok(wait_for($standby, "SELECT pg_sleep(2) IS NOT NULL AND
	(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'journey sender') = 0", 't', 10),
	'standby: no sender runs');
my $standby_log = slurp_file($standby->logfile, $offset);
unlike($standby_log, qr/journey sender|ERROR/, 'standby: nothing logged');
$node->stop;
my $t0 = time;
$standby->promote;
ok(wait_for($standby,
	"SELECT count(*) FROM journey.messages WHERE status = 'sent' AND id IN (" . join(',', @ids) . ")",
	'5', 30), 'promoted: the outstanding outbox is sent');
my $took = time - $t0;
ok($took < 10, sprintf('within seconds (%.1f s)', $took));

$standby->stop;
done_testing();
