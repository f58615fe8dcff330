# The sender never blocks DROP EXTENSION or DROP DATABASE, waits quietly
# for a database that does not exist yet, and serves a second database
# listed in journey.database_name after a reload.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use JourneyTest;

my ($port, $log, $sink) = start_sink('http_sink.py', 'dbs');
my $node = sender_node('dbs', "journey.poll_interval_ms = 500\n");
my ($b) = setup_business($node);
add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/slow/300", from => 'shop@example.com');

# DROP EXTENSION while the sender drains: it goes through at once.
$node->safe_psql('postgres',
	"INSERT INTO journey.messages (business_id, channel, to_address, body)
	 SELECT '$b', 'email', 'd' || g || '\@example.com', 'x' FROM generate_series(1, 200) g");
ok(wait_for($node, "SELECT count(*) > 0 FROM journey.messages WHERE status = 'sending'", 't'),
	'draining');
my $t0 = time;
my ($rc, $out, $err) = $node->psql('postgres', 'DROP EXTENSION journey CASCADE',
	extra_params => [ '-v', 'ON_ERROR_STOP=1' ], timeout => 30);
is($rc, 0, 'DROP EXTENSION succeeds while requests are in flight') or diag($err);
cmp_ok(time - $t0, '<', 2, 'and is not held up');
# The sender notices and idles; a new install is served again.
$node->safe_psql('postgres', 'CREATE EXTENSION journey');
my $c;
($b, $c) = setup_business($node);
add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'shop@example.com');
my $id = queue_message($node, business => $b);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $id", 'sent'),
	'after DROP and CREATE EXTENSION the sender sends again');
unlike(slurp_file($node->logfile), qr/ERROR|FATAL/, 'and logged no error on the way');

# A second database: not there yet, then created, then listed.
$node->append_conf('postgresql.conf', "journey.database_name = 'postgres, second'\n");
$node->reload;
ok(wait_for($node, "SELECT 1", '1'), 'reloaded');
ok(wait_for_log($node, qr/waits for database "second" to exist/, 0, 20),
	'a missing database is waited for');
# A later pass of the launcher must come first: one that also waits for a
# third missing name, listed now.  It looks at "second" before "third".
$node->append_conf('postgresql.conf', "journey.database_name = 'postgres, second, third'\n");
$node->reload;
ok(wait_for_log($node, qr/waits for database "third" to exist/, 0, 20),
	'a later pass of the launcher ran');
my $n = () = slurp_file($node->logfile) =~ /waits for database "second" to exist/g;
is($n, 1, 'quietly: said once');

$node->safe_psql('postgres', 'CREATE DATABASE second');
ok(wait_for($node,
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'journey sender' AND datname = 'second'",
	'1', 20), 'a sender starts for the new database');
$node->safe_psql('second', 'CREATE EXTENSION journey');
my ($b2) = $node->safe_psql('second', "INSERT INTO journey.businesses (name) VALUES ('S') RETURNING id");
$node->safe_psql('second',
	"INSERT INTO journey.providers (channel, kind, endpoint, from_address)
	 VALUES ('email', 'webhook', 'http://127.0.0.1:$port/ok?db=second', 'x\@example.com')");
my $id2 = $node->safe_psql('second',
	"INSERT INTO journey.messages (business_id, channel, to_address, body)
	 VALUES ('$b2', 'email', 'a\@example.com', 'from the second database') RETURNING id");
my $got = '';
my $deadline = time + 10;
while (time < $deadline && $got ne 'sent')
{
	$got = $node->safe_psql('second', "SELECT status FROM journey.messages WHERE id = $id2");
	Time::HiRes::sleep(0.05);
}
is($got, 'sent', 'the second database is served');
is(scalar(grep { $_->{body} =~ /from the second database/ } sink_records($log)), 1,
	'its message reached the provider');

# DROP DATABASE (without FORCE) is not blocked by its sender.
$t0 = time;
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE second', timeout => 30);
is($rc, 0, 'DROP DATABASE succeeds though a sender was connected') or diag($err);
cmp_ok(time - $t0, '<', 5, 'promptly');
my $dropped_at = -s $node->logfile;
# The launcher holds back from the dropped database for a while, then looks
# for it again: only then can it be said not to have started a sender.
ok(wait_for_log($node, qr/waits for database "second" to exist/, $dropped_at, 60),
	'the launcher looked for the dropped database again');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'journey sender'"), '1',
	'only the first database has a sender now');
my $id3 = queue_message($node, business => $b);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $id3", 'sent'),
	'the first database is still served');

# The sender as an ordinary login role holding journey_worker: it can do
# all its work, the review-request stamp included.
$node->safe_psql('postgres',
	"CREATE ROLE sender_login LOGIN; GRANT journey_worker TO sender_login;");
$node->append_conf('postgresql.conf', "journey.worker_role = 'sender_login'\n");
$node->reload;
ok(wait_for($node,
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'journey sender' AND usename = 'sender_login'",
	'1', 20), 'after a reload the sender runs as journey.worker_role');
my $id4 = queue_message($node, business => $b, customer => $c, purpose => 'review_request');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $id4", 'sent'),
	'and sends as that role');
is($node->safe_psql('postgres',
	"SELECT last_review_request_at IS NOT NULL FROM journey.customers WHERE id = '$c'"),
	't', 'and stamps last_review_request_at');

$node->stop;
$sink->kill_kill;
done_testing();
