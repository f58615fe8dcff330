# What goes out is safe whatever a tenant or a provider puts in it (issue
# 12): no control character reaches an SMTP command, an SMTP header or an
# HTTP header; SMTP headers are folded; credentials need STARTTLS and never
# show in last_error or the log, in any encoding, without scrub() looping;
# what a provider answers is stored valid and bounded; a refusal at build
# time is written at once (not left 'sending' until its lease runs out).
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

my ($hport, $hlog, $hsink) = start_sink('http_sink.py', 'hardening');
my ($sport, $slog, $ssink) = start_sink('smtp_sink.py', 'hardening_smtp');
my $node = sender_node('hardening', "journey.max_attempts = 2\n");
my ($b, $c) = setup_business($node, 'Mail user');

sub raw_session { return join('', map { decode_json($_) } grep { /\S/ } split /\n/, (-e "$slog.raw" ? slurp_file("$slog.raw") : '')); }
sub sender_pid { return $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'journey sender'"); }

# Direct writes of addresses with control characters: 23514, nothing written.
my ($ret, $out, $err) = $node->psql('postgres',
	"INSERT INTO journey.messages (business_id, channel, to_address, subject, body) VALUES ('$b', 'email', E'x <c2\@ok.test\\r\\nRCPT TO:<inj\@evil.test>>', 's', 'b')");
like($err, qr/messages_to_address_no_control_check/, 'a to_address with CR LF is refused (23514)');
($ret, $out, $err) = $node->psql('postgres',
	"UPDATE journey.customers SET email = E'a\@b.test\\nBcc: x\@evil.test' WHERE id = '$c'");
like($err, qr/customers_email_no_control_check/, 'a customer email with LF is refused');
($ret, $out, $err) = $node->psql('postgres',
	"UPDATE journey.customers SET phone = E'+1555\\u0085' WHERE id = '$c'");
like($err, qr/customers_phone_no_control_check/, 'a C1 control character too');

add_provider($node, business => $b, channel => 'email', kind => 'smtp',
	endpoint => "smtp://127.0.0.1:$sport", from => 'Shop <shop@example.org>');

# Rows written before 0.3 (the constraint dropped to plant one): the sender
# refuses them again, at once and for good, and nothing reaches the server.
$node->safe_psql('postgres', 'ALTER TABLE journey.messages DROP CONSTRAINT IF EXISTS messages_to_address_no_control_check');
my $inj = $node->safe_psql('postgres',
	"INSERT INTO journey.messages (business_id, channel, to_address, subject, body) VALUES ('$b', 'email', E'x <c2\@ok.test\\r\\nRCPT TO:<inj\@evil.test>\\r\\nDATA\\r\\nFrom: ceo\@bank.test\\r\\n\\r\\nforged\\r\\n.\\r\\n>', 'Hello', 'Hi') RETURNING id");
ok(wait_for($node, "SELECT status || ' ' || attempts FROM journey.messages WHERE id = $inj", 'failed 1'),
	'smtp injection: the message fails at once, without retries');
like($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $inj"),
	qr/control character/, 'smtp injection: last_error says why');

# A refusal inside a claim that also writes results is written at once
# (finding 15): many good and bad messages together, every bad one failed
# after its first attempt, none left 'sending' for its lease.
my @bad;
for my $i (1 .. 12)
{
	queue_message($node, business => $b, subject => "good $i");
	push @bad, $node->safe_psql('postgres',
		"INSERT INTO journey.messages (business_id, channel, to_address, subject, body) VALUES ('$b', 'email', E'bad$i\@x.test\\r\\nRCPT TO:<inj\@evil.test>', 'bad', 'b') RETURNING id");
}
my $bad_ids = join(',', @bad);
ok(wait_for($node, "SELECT count(*) FROM journey.messages WHERE id IN ($bad_ids) AND status = 'failed'", '12', 20),
	'every refused message is failed');
is($node->safe_psql('postgres', "SELECT max(attempts) FROM journey.messages WHERE id IN ($bad_ids)"), '1',
	'each after one attempt: no result thrown away, no lease expiry, no second try');
ok(wait_for($node, "SELECT count(*) FROM journey.messages WHERE subject LIKE 'good %' AND status = 'sent'", '12'),
	'the good ones are sent');
my $raw = raw_session();
unlike($raw, qr/inj\@evil|forged|ceo\@bank/i, 'nothing smuggled reaches the SMTP session');
is(scalar(() = $raw =~ /^RCPT TO:/mg), 12, 'one RCPT TO per good message, no more');

# Folded headers: a long ASCII subject and a long UTF-8 one.
my $ascii = join(' ', map { "word$_" } 1 .. 300);
my $utf8 = "Grüße ✓ " x 150;
my $m1 = queue_message($node, business => $b, subject => $ascii);
my $m2 = $node->safe_psql('postgres',
	"INSERT INTO journey.messages (business_id, channel, to_address, subject, body) VALUES ('$b', 'email', 'Ädä Lövelace Ünïcode Name That Goes On And On <ada\@example.com>', '$utf8', 'b') RETURNING id");
ok(wait_for($node, "SELECT count(*) FROM journey.messages WHERE id IN ($m1, $m2) AND status = 'sent'", '2'),
	'long subjects are sent');
my %mails = map { ($_->{data} =~ /X-Journey-Message-Id: (\d+)/)[0] => $_ } sink_records($slog);
for my $case ([$m1, $ascii], [$m2, $utf8])
{
	my ($id, $subject) = @$case;
	my ($head) = split /\r\n\r\n/, $mails{$id}{data}, 2;
	my @long = grep { length($_) > 78 } split /\r\n/, $head;
	is(scalar @long, 0, "message $id: no header line longer than 78") or diag($long[0]);
	my @words = $head =~ /(=\?UTF-8\?B\?[^?]*\?=)/g;
	is(scalar(grep { length($_) > 75 } @words), 0, "message $id: no encoded-word longer than 75");
	my ($folded) = $head =~ /^(Subject:.*?)\r\n(?![ \t])/ms;
	(my $unfolded = $folded) =~ s/\r\n(?=[ \t])//g;
	$unfolded =~ s/^Subject: //;
	# Adjacent encoded-words decode with the space between them dropped.
	$unfolded =~ s/\?=\s+=\?/?==?/g;
	$unfolded =~ s/=\?UTF-8\?B\?([^?]*)\?=/decode_base64($1)/ge;
	is(decode_utf8($unfolded) =~ s/ +$//r, decode_utf8($subject) =~ s/ +$//r, "message $id: the subject unfolds to the original");
}
like($mails{$m2}{data}, qr/^To: (=\?UTF-8\?B\?[^?]+\?=\r\n )*=\?UTF-8\?B\?[^?]+\?=(\r\n)? <ada\@example.com>\r$/m,
	'a long UTF-8 display name is folded encoded-words, then the address');

# Credentials over smtp:// need STARTTLS; this server has none: the
# message fails at once and AUTH never goes out.
$node->safe_psql('postgres',
	"UPDATE journey.providers SET credentials = 'mailer:p4ssw0rd' WHERE business_id = '$b'");
my $tls = queue_message($node, business => $b, subject => 'needs tls');
ok(wait_for($node, "SELECT status || ' ' || attempts FROM journey.messages WHERE id = $tls", 'failed 1'),
	'smtp credentials without STARTTLS: failed at once, no retries');
like($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $tls"),
	qr/STARTTLS/, 'last_error says STARTTLS is required');
$raw = raw_session();
unlike($raw, qr/^AUTH/m, 'no AUTH command was sent in clear text');
unlike($raw, qr/p4ssw0rd|\Q@{[encode_base64("\0mailer\0p4ssw0rd", '')]}\E/, 'nor the password in any form');

# HTTP: a credential with CR LF never becomes a header.
my ($b2) = setup_business($node, 'Webhook user');
my $wh = add_provider($node, business => $b2, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$hport/ok", from => 'a@b.test');
$node->safe_psql('postgres',
	"UPDATE journey.providers SET credentials = E'tok\\r\\nX-Injected: 1' WHERE id = '$wh'");
my $hi = queue_message($node, business => $b2);
ok(wait_for($node, "SELECT status || ' ' || attempts FROM journey.messages WHERE id = $hi", 'failed 1'),
	'http header injection through a credential: refused at once');
like($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $hi"),
	qr/credentials hold a control character/, 'last_error says what to fix');
is(scalar(grep { exists $_->{headers}{'X-Injected'} } sink_records($hlog)), 0, 'no injected header arrived');
my $key_hi = idempotency_key($node, $hi);
is(scalar(grep { ($_->{headers}{'Idempotency-Key'} // '') eq $key_hi } sink_records($hlog)), 0, 'no request at all');

# scrub(): a credential inside "[redacted]" echoed back used to loop forever.
my $pid = sender_pid();
$node->safe_psql('postgres',
	"UPDATE journey.providers SET credentials = 'dact', endpoint = 'http://127.0.0.1:$hport/echo_auth' WHERE id = '$wh'");
my $loop = queue_message($node, business => $b2);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $loop", 'failed', 20),
	'a credential that is part of [redacted] is scrubbed without looping');
is(sender_pid(), $pid, 'the sender is the same process (no runaway, no crash)');
unlike($node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $loop"),
	qr/Bearer dact/, 'the credential is not in last_error');

# Every encoding of a credential is scrubbed: raw, URL-encoded, JSON-escaped.
my $secret = 's3cr3t/+ "q" \\ k&y=';
(my $sql_secret = $secret) =~ s/'/''/g;
$node->safe_psql('postgres', "UPDATE journey.providers SET credentials = '$sql_secret' WHERE id = '$wh'");
my $enc = queue_message($node, business => $b2);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $enc", 'failed', 20), 'echoing server: failed');
my $e = $node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $enc");
like($e, qr/you sent/, 'the answer is quoted');
my $key_enc = idempotency_key($node, $enc);
my ($echo) = grep { ($_->{headers}{'Idempotency-Key'} // '') eq $key_enc } sink_records($hlog);
is($echo->{headers}{Authorization}, "Bearer $secret", 'the provider did receive the credential');
for my $form ('s3cr3t', 's3cr3t%2F', 's3cr3t/+ \\"q\\"')
{
	unlike($e, qr/\Q$form\E/, "no form of the credential in last_error ($form)");
}
unlike(slurp_file($node->logfile), qr/s3cr3t|p4ssw0rd/, 'nor in the server log');

# Provider answers: invalid UTF-8 and control characters stored valid,
# bounded in length.
$node->safe_psql('postgres',
	"UPDATE journey.providers SET credentials = NULL, endpoint = 'http://127.0.0.1:$hport/invalid_utf8' WHERE id = '$wh'");
my $iu = queue_message($node, business => $b2);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $iu", 'failed', 20), 'invalid UTF-8 answer: failed');
$e = $node->safe_psql('postgres', "SELECT last_error FROM journey.messages WHERE id = $iu");
like(decode_utf8($e), qr/bad \x{fffd}\x{fffd} bytes \x{fffd}\( and  ?\[31m/, 'invalid bytes replaced by U+FFFD');
unlike($e, qr/[\x00-\x1f]/, 'control characters replaced');
$node->safe_psql('postgres',
	"UPDATE journey.providers SET endpoint = 'http://127.0.0.1:$hport/long_id' WHERE id = '$wh'");
my $li = queue_message($node, business => $b2);
ok(wait_for($node, "SELECT status FROM journey.messages WHERE id = $li", 'sent', 20), 'a 5,000-character id: sent');
is($node->safe_psql('postgres',
	"SELECT octet_length(provider_message_id) <= 203, left(provider_message_id, 1) = chr(233) FROM journey.messages WHERE id = $li"),
	't|t', 'provider_message_id valid and bounded');
is($node->safe_psql('postgres', "SELECT count(*) FROM journey.messages WHERE convert_to(coalesce(last_error, '') || coalesce(provider_message_id, ''), 'UTF8') IS NULL"),
	'0', 'every stored answer reads back');

$node->stop;
done_testing();
