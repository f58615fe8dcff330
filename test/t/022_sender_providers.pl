# Provider kinds other than webhook: twilio (form POST, basic auth, sid),
# resend (JSON, bearer key, id) and smtp (RFC 5322 over smtp://, AUTH,
# UTF-8, Message-ID from the message id, 4xx retried, 5xx failed); and no
# provider at all (messages wait, one warning).
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use Encode;
use JSON::PP;
use MIME::Base64;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

my ($hport, $hlog, $hsink) = start_sink('http_sink.py', 'providers');
my ($sport, $slog, $ssink) = start_sink('smtp_sink.py', 'smtp');
my $node = sender_node('providers');
my ($b, $c) = setup_business($node);

# No provider: messages stay queued, the log has one warning.
my $offset = -s $node->logfile;
my $wait1 = queue_message($node, business => $b, channel => 'sms');
my $wait2 = queue_message($node, business => $b, channel => 'sms');
$node->append_conf('postgresql.conf', "journey.poll_interval_ms = 300\n");
$node->reload;
ok(wait_for_log($node, qr/no provider is configured/, $offset, 20),
	'a warning when messages have no provider') or diag(slurp_file($node->logfile, $offset));
# Later polls must pass before the warning can be said not to repeat: two
# messages of another business, queued without waking the sender (triggers
# off), go out only when a poll finds them, one poll after the other.
my ($other) = setup_business($node, 'Polled');
for my $n (1, 2)
{
	my $silent = $node->safe_psql('postgres', qq{
SET session_replication_role = replica;
INSERT INTO journey.providers (business_id, channel, kind, endpoint, from_address)
  SELECT '$other', 'email', 'webhook', 'http://127.0.0.1:$hport/ok', 'p\@example.com'
  WHERE NOT EXISTS (SELECT 1 FROM journey.providers WHERE business_id = '$other');
INSERT INTO journey.messages (business_id, channel, to_address, body)
  VALUES ('$other', 'email', 'polled$n\@example.com', 'found by a poll') RETURNING id;});
	ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $silent", 'sent', 20),
		"poll $n after the warning happened");
}
my $text = slurp_file($node->logfile, $offset);
my $warnings = () = $text =~ /no provider is configured/g;
is($warnings, 1, 'the warning is given once, not at every poll or per message');
is($node->safe_psql('postgres',
	"SELECT string_agg(status || attempts, ',') FROM journey.messages WHERE id IN ($wait1, $wait2)"),
	'queued0,queued0', 'messages without a provider stay queued, untouched');

# Twilio: the waiting SMS go as soon as a provider exists.
add_provider($node, channel => 'sms', kind => 'twilio',
	endpoint => "http://127.0.0.1:$hport/twilio/2010-04-01/Accounts/AC123/Messages.json",
	from => '+15550999', credentials => 'AC123:s3cret-token');
ok(wait_for($node,
	"SELECT count(*) FROM journey.messages WHERE id IN ($wait1, $wait2) AND status = 'sent'", '2'),
	'twilio: the waiting messages are sent once a provider exists');
is($node->safe_psql('postgres', "SELECT provider_message_id FROM journey.messages WHERE id = $wait1"),
	"SM" . idempotency_key($node, $wait1), 'twilio: the returned sid is the provider_message_id');
my ($tw) = grep { $_->{headers}{'Idempotency-Key'} eq idempotency_key($node, $wait1) } sink_records($hlog);
my %form = map { my $v = $_; $v =~ s/\+/ /g; $v =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge; $v }
  map { split /=/, $_, 2 } split /&/, $tw->{body};
is($form{To}, '+15550001', 'twilio: To');
is($form{From}, '+15550999', 'twilio: From');
is($form{Body}, 'Hi there', 'twilio: Body');
is($tw->{headers}{'Content-Type'}, 'application/x-www-form-urlencoded', 'twilio: form encoded');
is($tw->{headers}{'Authorization'}, 'Basic ' . encode_base64('AC123:s3cret-token', ''),
	'twilio: basic auth from credentials');

# Resend.
my ($b2) = setup_business($node, 'Resend user');
add_provider($node, business => $b2, channel => 'email', kind => 'resend',
	endpoint => "http://127.0.0.1:$hport/resend", from => 'Shop <shop@example.com>',
	credentials => 're_key_123456');
my $rm = queue_message($node, business => $b2, subject => 'Your invoice');
ok(wait_for($node, "SELECT status || ' ' || provider_message_id FROM journey.messages WHERE id = $rm",
	"sent re-" . idempotency_key($node, $rm)), 'resend: sent, its id kept');
my ($rr) = grep { $_->{headers}{'Idempotency-Key'} eq idempotency_key($node, $rm) } sink_records($hlog);
is_deeply(decode_json($rr->{body}),
	{ from => 'Shop <shop@example.com>', to => ['ada@example.com'], subject => 'Your invoice',
	  text => 'Hi there' }, 'resend: the JSON of its API');
is($rr->{headers}{'Authorization'}, 'Bearer re_key_123456', 'resend: bearer API key');

# SMTP with a UTF-8 subject and body.  (No credentials: over smtp:// they
# need STARTTLS, which this sink lacks; see 060_sender_hardening.pl.)
my ($b3) = setup_business($node, 'SMTP user');
add_provider($node, business => $b3, channel => 'email', kind => 'smtp',
	endpoint => "smtp://127.0.0.1:$sport", from => 'Café <cafe@example.org>');
my $sm = queue_message($node, business => $b3, subject => 'Grüße ✓',
	body => "Hallo Ada,\ndanke für Ihren Besuch.\n.\nA line with a dot.");
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $sm", 'sent'), 'smtp: sent');
my @mails = sink_records($slog);
is(scalar @mails, 1, 'smtp: one message');
my $mail = $mails[0];
is($mail->{auth}, undef, 'smtp: no AUTH without credentials');
is($mail->{mail_from}, '<cafe@example.org>', 'smtp: MAIL FROM is the address of from_address');
is_deeply($mail->{rcpt}, ['<ada@example.com>'], 'smtp: RCPT TO');
my ($head, $body) = split /\r\n\r\n/, $mail->{data}, 2;
like($head, qr/^Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r$/m, 'smtp: Date');
like($head, qr/^From: =\?UTF-8\?B\?Q2Fmw6k=\?= <cafe\@example.org>\r$/m,
	'smtp: From, its UTF-8 name encoded');
like($head, qr/^To: ada\@example.com\r$/m, 'smtp: To');
my $smkey = idempotency_key($node, $sm);
like($head, qr/^Message-ID: <journey-$smkey\@example.org>\r$/m, 'smtp: Message-ID from the installation and message ids');
like($head, qr/^Content-Type: text\/plain; charset=UTF-8\r$/m, 'smtp: UTF-8 text');
my ($subj) = $head =~ /^Subject: =\?UTF-8\?B\?([^?]+)\?=\r$/m;
is(decode_utf8(decode_base64($subj // '')), "Gr\x{fc}\x{df}e \x{2713}", 'smtp: encoded UTF-8 subject');
is(decode_utf8(decode_base64($body)), "Hallo Ada,\ndanke f\x{fc}r Ihren Besuch.\n.\nA line with a dot.",
	'smtp: UTF-8 body intact');
is($node->safe_psql('postgres', "SELECT provider_message_id FROM journey.messages WHERE id = $sm"),
	"<journey-$smkey\@example.org>", 'smtp: the Message-ID is the provider_message_id');

# SMTP 4xx is transient, 5xx permanent; credentials without STARTTLS fail
# without showing them.
my $temp = queue_message($node, business => $b3, to => 'temp@example.com');
my $perm = queue_message($node, business => $b3, to => 'perm@example.com');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $perm", 'failed'), 'smtp: 550 fails');
like($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $perm"),
	qr/smtp server replied 550/, 'smtp: last_error gives the reply');
ok(wait_for($node,
	"SELECT attempts >= 2 AND status <> 'failed' AND last_error LIKE 'smtp server replied 451%' FROM journey.messages WHERE id = $temp",
	't'), 'smtp: 451 is retried');
$node->safe_psql('postgres', "UPDATE journey.messages SET status = 'cancelled' WHERE id = $temp");

$node->safe_psql('postgres',
	"UPDATE journey.providers SET credentials = 'mailer:p4ssw0rd' WHERE business_id = '$b3'");
my $bad = queue_message($node, business => $b3);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $bad", 'failed'),
	'smtp: credentials without STARTTLS fail the message');
my $err = $node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $bad");
like($err, qr/STARTTLS/, 'smtp: last_error says why');
unlike($err, qr/wrong|p4ssw0rd/, 'smtp: no password in last_error');
unlike(slurp_file($node->logfile), qr/p4ssw0rd|s3cret-token|re_key_123456/, 'no credentials in the log');

# A bad provider configuration fails the message with a reason.
$node->safe_psql('postgres',
	"UPDATE journey.providers SET credentials = 'no-colon' WHERE kind = 'twilio'");
my $cfg = queue_message($node, business => $b, channel => 'sms');
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $cfg", 'failed'), 'bad config fails');
like($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $cfg"),
	qr/credentials must be/, 'and says what to fix');

$node->stop;
$hsink->kill_kill;
$ssink->kill_kill;
done_testing();
