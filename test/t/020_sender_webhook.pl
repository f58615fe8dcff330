# The sender delivers through a webhook provider: the JSON it posts, its
# headers, the provider id it keeps, the business provider winning over the
# default, the wake-up at commit, and how it shows in pg_stat_activity.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use Encode;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use JourneyTest;

my ($port, $log, $sink) = start_sink('http_sink.py', 'webhook');
my $node = sender_node('webhook');
my ($b, $c) = setup_business($node);
my ($b2, $c2) = setup_business($node, 'Other');

ok(wait_for($node,
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'journey sender' AND datname = 'postgres'",
	'1'), 'the sender shows in pg_stat_activity as "journey sender"');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'journey launcher' AND datname IS NULL"),
	'1', 'the launcher holds no database');

# Default provider for email; Other has its own, which must win.
add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'shop@example.com',
	credentials => 'default-token-123');
add_provider($node, business => $b2, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok?own=1", from => 'other@example.com',
	credentials => 'own-token-456');

# The poll interval is ten minutes: only the wake-up at commit sends this.
my $t0 = time;
my $id = queue_message($node, business => $b, customer => $c,
	purpose => 'review_request', subject => 'How did we do?',
	body => 'Héllo "Ada" — ✓');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $id", 'sent', 10),
	'a queued message is sent');
ok(time - $t0 < 5, 'woken at commit, not by the poll');

my @r = sink_records($log);
is(scalar @r, 1, 'one request');
my $req = $r[0];
my $json = decode_json(Encode::encode_utf8($req->{body}));
is($json->{id}, $id, 'body has the message id');
is($json->{channel}, 'email', 'channel');
is($json->{to}, 'ada@example.com', 'to');
is($json->{from}, 'shop@example.com', 'from');
is($json->{subject}, 'How did we do?', 'subject');
is($json->{body}, "H\x{e9}llo \"Ada\" \x{2014} \x{2713}", 'UTF-8 body intact');
is($json->{purpose}, 'review_request', 'purpose');
is($json->{business_id}, $b, 'business_id');
is($json->{customer_id}, $c, 'customer_id');
ok(exists $json->{enrollment_id}, 'enrollment_id present (null)');
is($req->{headers}{'Idempotency-Key'}, idempotency_key($node, $id),
	'Idempotency-Key is the installation id and the message id');
is($req->{headers}{'Authorization'}, 'Bearer default-token-123', 'bearer credentials');
is($req->{headers}{'Content-Type'}, 'application/json', 'content type');
is($req->{headers}{'User-Agent'},
	'journey/' . $node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'journey'"),
	'the User-Agent names the version installed');

is($node->safe_psql('postgres',
	"SELECT provider_message_id, sent_at IS NOT NULL, attempts, lease_expires_at IS NULL, claimed_by IS NULL
	 FROM journey.messages WHERE id = $id"),
	"wh-" . idempotency_key($node, $id) . "|t|1|t|t", 'provider id from the response, sent_at, one attempt, lease cleared');
is($node->safe_psql('postgres',
	"SELECT last_review_request_at IS NOT NULL FROM journey.customers WHERE id = '$c'"),
	't', 'review_request sets last_review_request_at');

# The business's own provider wins over the default.
my $id2 = queue_message($node, business => $b2, customer => $c2);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $id2", 'sent'), 'sent');
@r = sink_records($log);
is($r[-1]{path}, '/ok', 'path');
is($r[-1]{headers}{'Authorization'}, 'Bearer own-token-456', "the business's own provider wins");
is($node->safe_psql('postgres',
	"SELECT last_review_request_at IS NULL FROM journey.customers WHERE id = '$c2'"),
	't', 'other purposes leave last_review_request_at alone');

# A rolled-back insert wakes nothing.  The committing backend says when it
# wakes the sender (DEBUG1); in one session, the commit that follows the
# rollback must be the only one to say so.
my ($rc, $out, $err) = $node->psql('postgres', "SET client_min_messages = debug1;
	BEGIN;
	INSERT INTO journey.messages (business_id, channel, to_address, body) VALUES ('$b', 'email', 'x\@example.com', 'x');
	ROLLBACK;
	INSERT INTO journey.messages (business_id, channel, to_address, body) VALUES ('$b', 'email', 'y\@example.com', 'y');",
	on_error_die => 1);
my @wakes = $err =~ /journey wakes the sender of this database at commit/g;
is(scalar(@wakes), 1, 'a rolled-back transaction wakes nothing, a committed one wakes') or diag($err);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE to_address = 'y\@example.com'", 'sent'),
	'and the committed message is sent');

# Many at once, all sent, each exactly once.
$node->safe_psql('postgres',
	"INSERT INTO journey.messages (business_id, channel, to_address, body)
	 SELECT '$b', 'email', 'n' || g || '\@example.com', 'bulk ' || g FROM generate_series(1, 300) g");
ok(wait_for($node, "SELECT count(*) FROM journey.messages WHERE status = 'sent'", '303', 30),
	'300 more sent');
@r = sink_records($log);
my %keys;
$keys{ $_->{headers}{'Idempotency-Key'} }++ for @r;
is(scalar(grep { $_ > 1 } values %keys), 0, 'no message sent twice');

# Credentials appear in no log line.
my $serverlog = slurp_file($node->logfile);
unlike($serverlog, qr/default-token-123|own-token-456/, 'credentials never logged');

# SIGHUP: settings reload (the poll interval shrinks and is used).
$node->append_conf('postgresql.conf', "journey.max_concurrency = 4\n");
$node->reload;
my $id3 = queue_message($node, business => $b);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $id3", 'sent'),
	'still sending after a reload');

# Suppressed, or its customer gone, after it was queued: cancelled by
# the sender with the reason, never sent, and the rest still go.
my $zed = $node->safe_psql('postgres',
	"INSERT INTO journey.customers (business_id, full_name, email)
	 VALUES ('$b', 'Zed', 'zed\@example.com') RETURNING id");
my $n_before = scalar(sink_records($log));
my ($m_sup, $m_gone, $m_ok) = split /\n/, $node->safe_psql('postgres',
	"INSERT INTO journey.messages (business_id, customer_id, channel, to_address, subject, body, send_after)
	 VALUES ('$b', NULL, 'email', 'sup\@example.com', 'S', 'B', now() + interval '2 seconds'),
	        ('$b', '$zed', 'email', 'zed\@example.com', 'S', 'B', now() + interval '2 seconds'),
	        ('$b', NULL, 'email', 'fine\@example.com', 'S', 'B', now() + interval '2 seconds')
	 RETURNING id");
# The foreign key deletes a customer's messages with it; with triggers off
# (a data-only restore, replication) the message outlives its customer.
$node->safe_psql('postgres',
	"INSERT INTO journey.suppressions (business_id, channel, address, reason)
	 VALUES ('$b', 'email', 'sup\@example.com', 'complaint');
	 SET session_replication_role = replica;
	 DELETE FROM journey.customers WHERE id = '$zed'");
ok(wait_for($node, "SELECT string_agg(status, ',' ORDER BY id) FROM journey.messages
	WHERE id IN ($m_sup, $m_gone, $m_ok)", 'cancelled,cancelled,sent', 20),
	'the suppressed and the orphaned message are cancelled, the third is sent');
like($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $m_sup"),
	qr/^cancelled before sending: email address suppressed since the message was queued$/,
	'the suppressed one says why');
like($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $m_gone"),
	qr/^cancelled before sending: the customer no longer exists$/,
	'the orphaned one says why');
is(scalar(sink_records($log)) - $n_before, 1, 'only the third reached the provider');
is($node->safe_psql('postgres', "SELECT attempts FROM journey.messages WHERE id IN ($m_sup, $m_gone) ORDER BY id"),
	"0\n0", 'no attempt was spent on them');

# SIGTERM stops it promptly; the launcher starts a new one.
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'journey sender'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(wait_for($node,
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'journey sender' AND pid <> $pid",
	'1', 20), 'a terminated sender is replaced');
my $id4 = queue_message($node, business => $b);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $id4", 'sent'),
	'the new sender sends');

$node->stop;
$sink->kill_kill;
done_testing();
