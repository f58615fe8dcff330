# The sender's retry rules: 5xx, 408 and 429 (honouring Retry-After),
# timeouts, dropped and refused connections are retried with growing,
# jittered delays up to journey.max_attempts; other 4xx fail at once; every
# attempt carries the same idempotency key; last_error always says why; a
# slow provider holds up nothing else.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

my ($port, $log, $sink) = start_sink('http_sink.py', 'retry');
my $node = sender_node('retry', "journey.max_attempts = 4\n");
my ($b, $c) = setup_business($node);
my $url = "http://127.0.0.1:$port";

# One business per behaviour, each with its own webhook endpoint.
sub via
{
	my ($path) = @_;
	my ($biz) = setup_business($node, "biz $path");
	add_provider($node, business => $biz, channel => 'email', kind => 'webhook',
		endpoint => "$url$path", from => 'shop@example.com');
	return queue_message($node, business => $biz);
}

sub row
{
	my ($id) = @_;
	return $node->safe_psql('postgres',
		"SELECT status, attempts, coalesce(last_error, '') FROM journey.messages WHERE id = $id");
}

sub requests_for
{
	my ($id) = @_;
	my $key = idempotency_key($node, $id);
	return grep { $_->{headers}{'Idempotency-Key'} eq $key } sink_records($log);
}

my $m500 = via('/fail_first/2/500');
my $m503 = via('/fail_first/1/503');
my $m408 = via('/fail_first/1/408');
my $m429 = via('/fail_first/1/429?retry_after=2');
my $m400 = via('/status/400');
my $m422 = via('/status/422');
my $mdead = via('/status/502');
my $mslow = via('/slow/1500');
my $fast = via('/ok');

# A slow provider does not hold up the others.
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $fast", 'sent', 3),
	'a fast provider is served while a slow request is in flight');
is($node->safe_psql('postgres', "SELECT status FROM journey.messages WHERE id = $mslow"),
	'sending', 'the slow one is still in flight, leased');

ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $m500", 'sent'),
	'500 twice, then sent');
my ($st, $att, $err) = split /\|/, row($m500);
is($att, 3, 'three attempts');
like($err, qr/webhook answered HTTP 500: .*scripted failure 2/, 'last_error keeps the last failure');
my @r = requests_for($m500);
is(scalar @r, 3, 'three requests, all with the same idempotency key');
ok($r[2]{t} - $r[1]{t} > $r[1]{t} - $r[0]{t} - 0.05 && $r[2]{t} - $r[1]{t} >= 0.2,
	'the delay grows (exponential backoff)');

ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $m503", 'sent'), '503 retried');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $m408", 'sent'), '408 retried');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $m429", 'sent'), '429 retried');
@r = requests_for($m429);
is(scalar @r, 2, '429: two requests');
cmp_ok($r[1]{t} - $r[0]{t}, '>=', 1.9, '429: Retry-After (2 s) honoured over the 200 ms backoff');

ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $m400", 'failed'), '400 failed');
($st, $att, $err) = split /\|/, row($m400);
is($att, 1, '400: failed at the first attempt');
like($err, qr/HTTP 400: \{"message": "scripted status 400"\}/, '400: last_error quotes the answer');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $m422", 'failed'), '422 failed');
is(scalar(requests_for($m422)), 1, '422: one request only');

ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $mdead", 'failed', 30),
	'502 every time: failed after max_attempts');
($st, $att, $err) = split /\|/, row($mdead);
is($att, 4, 'four attempts (journey.max_attempts)');
like($err, qr/^gave up after 4 attempts: webhook answered HTTP 502/, 'last_error says it gave up and why');
is(scalar(requests_for($mdead)), 4, 'four requests');

ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $mslow", 'sent', 10),
	'the slow one arrives too');

# Timeouts, dropped connections and refused connections are retried.
my $mhang = via('/hang');
ok(wait_for($node,
	"SELECT attempts >= 2 AND last_error LIKE 'timeout:%' FROM journey.messages WHERE id = $mhang", 't', 20),
	'a request past journey.http_timeout_ms is retried, last_error says timeout');
my $mdrop2 = via('/drop');
ok(wait_for($node,
	"SELECT attempts >= 2 AND last_error LIKE 'transport error:%' FROM journey.messages WHERE id = $mdrop2", 't', 20),
	'a dropped connection is retried');
my ($biz) = setup_business($node, 'refused');
# Port 1 on 127.0.0.1: nothing listens there.
add_provider($node, business => $biz, channel => 'email', kind => 'webhook',
	endpoint => 'http://127.0.0.1:1/x', from => 'shop@example.com');
my $mref = queue_message($node, business => $biz);
ok(wait_for($node,
	"SELECT attempts >= 2 AND last_error LIKE 'connection refused:%' FROM journey.messages WHERE id = $mref", 't', 20),
	'a refused connection is retried');
$node->safe_psql('postgres',
	"UPDATE journey.messages SET status = 'cancelled' WHERE id IN ($mhang, $mdrop2, $mref)");

my %seen;
for my $rec (sink_records($log))
{
	my $k = $rec->{headers}{'Idempotency-Key'};
	$seen{$k} = 1;
}
ok(!exists $seen{''}, 'every request carried an Idempotency-Key');

$node->stop;
$sink->kill_kill;
done_testing();
