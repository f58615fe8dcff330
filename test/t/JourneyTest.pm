# The one helper module of journey's TAP tests: a throwaway server with
# journey installed (with or without the sender), the sinks on 127.0.0.1,
# a business with a customer, bounded polling, and the regression
# helpers of test/sql/helpers.sql.
package JourneyTest;

use strict;
use warnings;
use Exporter 'import';
use FindBin;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(journey_node sender_node start_sink sink_records wait_for
  wait_for_log setup_business add_provider queue_message fingerprint
  idempotency_key thanks_journey);

my $sinks = "$FindBin::Bin/../sinks";

# A started server with journey created in the database postgres.
# Options: preload => the shared_preload_libraries value ('journey' by
# default; '' loads the library only on use, so no sender runs), conf =>
# extra postgresql.conf lines.  With journey preloaded, its sender serves
# postgres.
sub journey_node
{
	my ($name, %opt) = @_;
	my $preload = $opt{preload} // 'journey';
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	my $conf = '';
	$conf .= "shared_preload_libraries = '$preload'\njourney.database_name = 'postgres'\n"
	  if $preload ne '';
	$node->append_conf('postgresql.conf', $conf . ($opt{conf} // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION journey');
	return $node;
}

# A journey_node whose sender retries quickly and polls only when woken.
# Extra lines go to its conf (a later setting wins).
sub sender_node
{
	my ($name, $extra) = @_;
	return journey_node($name, conf => q{
journey.retry_base_ms = 200
journey.retry_max_ms = 1000
journey.http_timeout_ms = 2000
journey.lease_ms = 5000
journey.poll_interval_ms = 600000
restart_after_crash = on
log_statement = none
} . ($extra // ''));
}

# Starts a sink (http_sink.py or smtp_sink.py); returns (port, logfile, handle).
my @started_sinks;

sub start_sink
{
	my ($script, $tag) = @_;
	my $log = PostgreSQL::Test::Utils::tempdir() . "/$tag.jsonl";
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start([ 'python3', "$sinks/$script", $log ],
		\$in, \$out, \$err, IPC::Run::timeout(600));
	my $deadline = time + 30;
	while ($out !~ /^\d+\n/ && time < $deadline)
	{
		$h->pump_nb;
		usleep(20_000);
	}
	die "sink $script did not start: $err" unless $out =~ /^(\d+)\n/;
	push @started_sinks, $h;
	return ($1, $log, $h);
}

# A test that drops the handle must not leave its sink running.
END
{
	# Reaping the sink sets $?, which would become the test's exit status.
	local $?;
	for my $h (@started_sinks)
	{
		eval { $h->kill_kill(grace => 2) if $h->pumpable; };
	}
}

# What the sink recorded so far, as a list of hashes.
sub sink_records
{
	my ($log) = @_;
	return () unless -e $log;
	open my $fh, '<', $log or die;
	my @r = map { decode_json($_) } grep { /\S/ } <$fh>;
	close $fh;
	return @r;
}

# Polls $sql until it returns $expected, for at most $secs seconds.
sub wait_for
{
	my ($node, $sql, $expected, $secs) = @_;
	my $deadline = time + ($secs // 30);
	my $got = '';
	while (time < $deadline)
	{
		# Errors (a server restarting after a crash) just mean "not yet".
		my $rc = $node->psql('postgres', $sql, stdout => \$got, on_error_die => 0);
		return 1 if $rc == 0 && $got eq $expected;
		usleep(50_000);
	}
	diag("waited for [$sql] = [$expected], last got [$got]");
	return 0;
}

# Waits until the server log, from byte $offset on, matches $re, for at
# most $secs seconds: the positive event a test waits for instead of
# sleeping.  Returns true when it matched.
sub wait_for_log
{
	my ($node, $re, $offset, $secs) = @_;
	my $deadline = time + ($secs // 60);
	while (time < $deadline)
	{
		return 1 if slurp_file($node->logfile, $offset // 0) =~ $re;
		usleep(50_000);
	}
	diag("waited for the log to match $re");
	return 0;
}

# fingerprint($node, $business): test/sql/helpers.sql's fingerprint of one
# business's rows, computed in one session (the helpers are temporary).
sub fingerprint
{
	my ($node, $business) = @_;
	my $helpers = slurp_file("$FindBin::Bin/../sql/helpers.sql");
	return $node->safe_psql('postgres',
		"$helpers\nSELECT pg_temp.fingerprint('$business')");
}

# A business with one customer; returns (business_id, customer_id).
sub setup_business
{
	my ($node, $name) = @_;
	$name //= 'Acme';
	my $b = $node->safe_psql('postgres',
		"INSERT INTO journey.businesses (name) VALUES ('$name') RETURNING id");
	my $c = $node->safe_psql('postgres',
		"INSERT INTO journey.customers (business_id, full_name, email, phone)
		 VALUES ('$b', 'Ada Lovelace', 'ada\@example.com', '+15550001') RETURNING id");
	return ($b, $c);
}

# Adds a provider; $business undef makes it the default one.
sub add_provider
{
	my ($node, %p) = @_;
	my $b = defined $p{business} ? "'$p{business}'" : 'NULL';
	my $from = defined $p{from} ? "'$p{from}'" : 'NULL';
	my $cred = defined $p{credentials} ? "'$p{credentials}'" : 'NULL';
	return $node->safe_psql('postgres',
		"INSERT INTO journey.providers (business_id, channel, kind, endpoint, from_address, credentials)
		 VALUES ($b, '$p{channel}', '$p{kind}', '$p{endpoint}', $from, $cred) RETURNING id");
}

# An active journey of one step: a thank-you email at once, on invoice_paid.
sub thanks_journey
{
	my ($node, $b) = @_;
	return $node->safe_psql('postgres', qq{
SELECT journey.create_sequence('$b', '{"name": "Thanks", "status": "active",
  "trigger_event_type": "invoice_paid", "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"purpose": "thank_you",
             "subject": "Thanks!", "body": "From {{business.name}}"}}]}')});
}

# Queues one message; returns its id.
sub queue_message
{
	my ($node, %m) = @_;
	my $channel = $m{channel} // 'email';
	my $to = $m{to} // ($channel eq 'email' ? 'ada@example.com' : '+15550001');
	my $subject = defined $m{subject} ? "'$m{subject}'" : "'Hello'";
	my $purpose = defined $m{purpose} ? "'$m{purpose}'" : "'thank_you'";
	my $cust = defined $m{customer} ? "'$m{customer}'" : 'NULL';
	return $node->safe_psql('postgres',
		"INSERT INTO journey.messages (business_id, customer_id, channel, message_purpose, to_address, subject, body)
		 VALUES ('$m{business}', $cust, '$channel', $purpose, '$to', $subject, '" . ($m{body} // 'Hi there') . "')
		 RETURNING id");
}

# The idempotency key the sender gives message $id: the installation's id
# joined to the message id.
sub idempotency_key
{
	my ($node, $id, $db) = @_;
	my $inst = $node->safe_psql($db // 'postgres', 'SELECT id FROM journey.installation');
	return "$inst-$id";
}

1;
