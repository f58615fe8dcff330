# Helpers shared by the sender's TAP tests: a server with the sender
# running, the sinks on 127.0.0.1, and a business with a customer.
package SenderTest;

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

our @EXPORT = qw(sender_node start_sink sink_records wait_for setup_business
  add_provider queue_message idempotency_key);

my $sinks = "$FindBin::Bin/../sinks";

# A started server with journey preloaded, created in postgres, with
# settings small enough for quick retries.  Extra lines go to its conf.
sub sender_node
{
	my ($name, $extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'journey'
journey.database_name = 'postgres'
journey.retry_base_ms = 200
journey.retry_max_ms = 1000
journey.http_timeout_ms = 2000
journey.lease_ms = 5000
journey.poll_interval_ms = 600000
restart_after_crash = on
log_statement = none
} . ($extra // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION journey');
	return $node;
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
