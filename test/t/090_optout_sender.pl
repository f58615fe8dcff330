# Opt-outs at the sender (issue 13): the RFC 8058 one-click headers on SMTP
# (checked byte for byte in the raw message the sink recorded) and in the
# Resend API's "headers" field, and Twilio's refusals 21610, 21211 and
# 21614 turned into suppressions and an immediate failure.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

my ($hport, $hlog, $hsink) = start_sink('http_sink.py', 'optout');
my ($sport, $slog, $ssink) = start_sink('smtp_sink.py', 'optout_smtp');
my $node = sender_node('optout',
	"journey.unsubscribe_url = 'https://api.example.com/unsubscribe'\n");

# SMTP: both headers, the link verifies, and unsubscribing works.
my ($b1) = setup_business($node, 'SMTP user');
add_provider($node, business => $b1, channel => 'email', kind => 'smtp',
	endpoint => "smtp://127.0.0.1:$sport", from => 'shop@example.org');
my $link = $node->safe_psql('postgres',
	"SELECT journey.unsubscribe_link('$b1', 'email', 'ada\@example.com')");
like($link, qr{^https://api\.example\.com/unsubscribe\?token=[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$},
	'the link is the setting with a URL-safe token');
my $sm = queue_message($node, business => $b1);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $sm", 'sent'), 'smtp: sent');
my ($mail) = sink_records($slog);
my ($head) = split /\r\n\r\n/, $mail->{data}, 2;
ok(index($head, "\r\nList-Unsubscribe: <$link>\r\n") >= 0, 'smtp: List-Unsubscribe carries the link')
  or diag($head);
ok(index($head, "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n") >= 0
	  || $head =~ /\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click$/,
	'smtp: List-Unsubscribe-Post asks for one-click');
my ($token) = $link =~ /token=(.*)$/;
is($node->safe_psql('postgres', "SELECT journey.unsubscribe('$token')"), 't',
	'the header\'s token unsubscribes');
is($node->safe_psql('postgres',
	"SELECT reason FROM journey.suppressions WHERE business_id = '$b1' AND address = 'ada\@example.com'"),
	'unsubscribe', 'and suppresses the address');

# Resend: the same two headers in its "headers" object.
my ($b2) = setup_business($node, 'Resend user');
add_provider($node, business => $b2, channel => 'email', kind => 'resend',
	endpoint => "http://127.0.0.1:$hport/resend", from => 'shop@example.com',
	credentials => 're_key_123456');
my $rm = queue_message($node, business => $b2);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $rm", 'sent'), 'resend: sent');
my $link2 = $node->safe_psql('postgres',
	"SELECT journey.unsubscribe_link('$b2', 'email', 'ada\@example.com')");
my ($rr) = grep { ($_->{headers}{'Idempotency-Key'} // '') eq idempotency_key($node, $rm) } sink_records($hlog);
is_deeply(decode_json($rr->{body})->{headers},
	{ 'List-Unsubscribe' => "<$link2>", 'List-Unsubscribe-Post' => 'List-Unsubscribe=One-Click' },
	'resend: the headers field');

# Twilio: each refusal suppresses the number with its reason; the message
# fails at once (one attempt), and queued SMS to the number are cancelled.
for my $case ([21610, 'sms_stop'], [21211, 'invalid_address'], [21614, 'invalid_address'])
{
	my ($code, $reason) = @$case;
	my ($b) = setup_business($node, "Twilio $code");
	add_provider($node, business => $b, channel => 'sms', kind => 'twilio',
		endpoint => "http://127.0.0.1:$hport/twilio_error/$code", from => '+15550999',
		credentials => 'AC123:s3cret-token');
	my $later = $node->safe_psql('postgres',
		"INSERT INTO journey.messages (business_id, channel, to_address, body, send_after)
		 VALUES ('$b', 'sms', '+15550001', 'later', now() + interval '1 hour') RETURNING id");
	my $m = queue_message($node, business => $b, channel => 'sms');
	ok(wait_for($node, "SELECT status || ' ' || attempts FROM journey.messages WHERE id = $m", 'failed 1'),
		"twilio $code: failed at once");
	like($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $m"),
		qr/twilio answered HTTP 400.*$code/, "twilio $code: last_error quotes the answer");
	is($node->safe_psql('postgres',
		"SELECT string_agg(address || ' ' || reason, ',') FROM journey.suppressions WHERE business_id = '$b'"),
		"+15550001 $reason", "twilio $code: suppressed as $reason");
	is($node->safe_psql('postgres', "SELECT status FROM journey.messages WHERE id = $later"),
		'cancelled', "twilio $code: the number's queued SMS cancelled");
}

# Another 400 from Twilio suppresses nothing.
my ($b6) = setup_business($node, 'Twilio other');
add_provider($node, business => $b6, channel => 'sms', kind => 'twilio',
	endpoint => "http://127.0.0.1:$hport/twilio_error/21408", from => '+15550999',
	credentials => 'AC123:s3cret-token');
my $m6 = queue_message($node, business => $b6, channel => 'sms');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $m6", 'failed'), 'twilio 21408: failed');
is($node->safe_psql('postgres', "SELECT count(*) FROM journey.suppressions WHERE business_id = '$b6'"),
	'0', 'twilio 21408: no suppression');

# A status callback that overtakes the sender's write of the sid (the
# sink answers sid SM<message id>): kept, and applied when the result is
# written, in the same transaction.
my ($b7) = setup_business($node, 'Twilio early');
add_provider($node, business => $b7, channel => 'sms', kind => 'twilio',
	endpoint => "http://127.0.0.1:$hport/twilio/2010-04-01/Accounts/AC1/Messages.json",
	from => '+15550999', credentials => 'AC1:s3cret-token');
my $early = $node->safe_psql('postgres',
	"INSERT INTO journey.messages (business_id, channel, to_address, body, send_after)
	 VALUES ('$b7', 'sms', '+15550001', 'early', now() + interval '1 hour') RETURNING id");
# The sink answers sid SM<Idempotency-Key>.
my $early_sid = 'SM' . idempotency_key($node, $early);
is($node->safe_psql('postgres',
	"SELECT journey.ingest_delivery_event('twilio', '{\"MessageSid\": \"$early_sid\", \"MessageStatus\": \"undelivered\", \"ErrorCode\": \"30006\"}') IS NULL"),
	't', 'early callback: no message matches yet');
$node->safe_psql('postgres', "UPDATE journey.messages SET send_after = now() WHERE id = $early");
ok(wait_for($node, "SELECT status || ' ' || coalesce(delivery_status, '-') FROM journey.messages WHERE id = $early",
	'sent undelivered'), 'early callback: applied when the sender writes the sid');
is($node->safe_psql('postgres',
	"SELECT string_agg(address || ' ' || reason, ',') FROM journey.suppressions WHERE business_id = '$b7'"),
	'+15550001 undeliverable', 'early callback: the number is suppressed');
is($node->safe_psql('postgres', "SELECT count(*) FROM journey.delivery_pending"), '0',
	'early callback: nothing left pending');

$node->stop;
done_testing();
