# Backups that restore (issue 11): a database with journeys in every state
# is dumped with pg_dump (custom format) and restored with pg_restore into
# another database, and dumped with pg_dumpall into a new cluster.  Both
# finish without an error, every table and identity sequence comes back
# equal, loading the events replays nothing, and the restored copy goes
# on: new ids collide with nothing, nothing sent is sent again, and an
# interrupted message is resent with the idempotency key it first had.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use JourneyTest;

my ($port, $log, $sink) = start_sink('http_sink.py', 'backup');
# The test advances enrollments itself, at the times it names.
my $origin = sender_node('origin', "journey.poll_interval_ms = 500\njourney.executor_in_worker = off\n");
my ($b, $c1) = setup_business($origin, 'Pipe Dreams');
add_provider($origin, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'shop@example.com',
	credentials => 'secret-token-070');

my @cust = map {
	$origin->safe_psql('postgres',
		"INSERT INTO journey.customers (business_id, full_name, email)
		 VALUES ('$b', 'Customer $_', 'c$_\@example.com') RETURNING id")
} 2 .. 6;
my ($c2, $c3, $c4, $c5, $c6) = @cust;
$origin->safe_psql('postgres', qq{
INSERT INTO journey.suppressions (business_id, channel, address, reason)
VALUES ('$b', 'sms', '+15550009', 'sms_stop');
SELECT journey.create_sequence('$b', '{"name": "Two steps", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
  "steps": [{"kind": "send_email", "message": {"subject": "Thanks", "body": "Hi {{customer.first_name}}"}},
            {"kind": "wait", "wait_ms": 4000},
            {"kind": "send_email", "message": {"subject": "Review?", "body": "Please"}}]}');
SELECT journey.create_sequence('$b', '{"name": "Once", "status": "active",
  "trigger_event_type": "job_done", "reentry": "never",
  "steps": [{"kind": "send_email", "message": {"subject": "Done", "body": "Done"}}]}');
SELECT journey.create_sequence('$b', '{"name": "Limited", "status": "active",
  "trigger_event_type": "booked", "rate_per_hour": 1,
  "steps": [{"kind": "send_email", "message": {"subject": "Booked", "body": "Booked"}}]}');
});
sub ingest
{
	my ($node, $db, $type, $cust, $key) = @_;
	return $node->safe_psql($db,
		"SELECT journey.ingest_event('$b', '$type', '{\"id\": \"$cust\"}', '{\"n\": 1}', '$key')");
}
ingest($origin, 'postgres', 'invoice_paid', $c1, 'k1');    # active at the wait
ingest($origin, 'postgres', 'invoice_paid', $c2, 'k2');    # stopped below
ingest($origin, 'postgres', 'job_done', $c3, 'k3');        # finished
ingest($origin, 'postgres', 'booked', $c4, 'k4');          # sent
ingest($origin, 'postgres', 'booked', $c5, 'k5');          # deferred (rate)
$origin->safe_psql('postgres', 'SELECT journey.advance_due_enrollments()');
ingest($origin, 'postgres', 'review_left', $c2, 'k6');
# Messages in the other states: queued for later, failed, and one a sender
# was sending when the backup was taken (its lease still running).
my $sending = $origin->safe_psql('postgres', qq{
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, subject, body, send_after)
VALUES ('$b', '$c6', 'email', 'c6\@example.com', 'Later', 'Later', now() + interval '1 day');
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, subject, body,
                              status, attempts, last_error)
VALUES ('$b', '$c6', 'email', 'c6\@example.com', 'Failed', 'Failed', 'failed', 1, 'HTTP 400');
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, subject, body,
                              status, attempts, lease_expires_at, claimed_by)
VALUES ('$b', '$c6', 'email', 'c6\@example.com', 'Interrupted', 'Interrupted', 'sending', 1,
        now() + interval '1 hour', 'another-server')
RETURNING id;});
ok(wait_for($origin,
	"SELECT count(*) FROM journey.messages WHERE status = 'sent'", '4', 30),
	'origin: the due messages are sent');
is($origin->safe_psql('postgres',
	"SELECT string_agg(status || ':' || coalesce(stop_reason, '-'), ',' ORDER BY status, stop_reason)
	 FROM journey.sequence_enrollments"),
	'active:-,active:-,finished:-,finished:-,stopped:exit_event:review_left',
	'origin: journeys active, finished and stopped')
  or diag($origin->safe_psql('postgres', 'SELECT * FROM journey.sequence_enrollments'));
is($origin->safe_psql('postgres',
	"SELECT count(*) FROM journey.enrollment_log WHERE outcome = 'deferred_rate_limit'"),
	'1', 'origin: one enrollment deferred by the rate limit');

# Every journey table and identity sequence, as one line each.
sub snapshot
{
	my ($node, $db) = @_;
	my @rels = split /\n/, $node->safe_psql($db,
		"SELECT c.relname || ' ' || c.relkind::text FROM pg_class c
		 WHERE c.relnamespace = 'journey'::regnamespace AND c.relkind IN ('r', 'S')
		 ORDER BY c.relname");
	my %snap;
	for my $r (@rels)
	{
		my ($name, $kind) = split / /, $r;
		$snap{$name} = $node->safe_psql($db, $kind eq 'S'
			? "SELECT last_value || '/' || is_called FROM journey.$name"
			: "SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '-')
			   FROM journey.$name t");
	}
	return \%snap;
}

sub run_ok
{
	my ($cmd, $what) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run($cmd, '>', \$out, '2>', \$err);
	ok($ok, "$what exits 0") or diag($err);
	return ($out, $err);
}

my $before = snapshot($origin, 'postgres');
ok($before->{events_id_seq} =~ /^\d+\/true$/, 'origin: the events sequence has moved');
my $dir = PostgreSQL::Test::Utils::tempdir();

# --- pg_dump -Fc and pg_restore into another database ---
run_ok([ 'pg_dump', '-Fc', '-f', "$dir/origin.dump", '-d', $origin->connstr('postgres') ],
	'pg_dump -Fc');
$origin->safe_psql('postgres', 'CREATE DATABASE restored');
my (undef, $err) = run_ok([ 'pg_restore', '-d', $origin->connstr('restored'), "$dir/origin.dump" ],
	'pg_restore');
unlike($err, qr/error/i, 'pg_restore reports no error');
is_deeply(snapshot($origin, 'restored'), $before,
	'pg_restore: every table and identity sequence equal to the original');

# --- pg_dumpall into a new cluster ---
my ($all) = run_ok([ 'pg_dumpall', '-d', $origin->connstr('postgres') ], 'pg_dumpall');
my $copy = sender_node('copy', "journey.poll_interval_ms = 500\njourney.executor_in_worker = off\n");
# A new cluster: nothing of journey in it but the preloaded library.
$copy->safe_psql('postgres', 'DROP EXTENSION journey; DROP SCHEMA IF EXISTS journey');
my ($out, $perr) = ('', '');
IPC::Run::run([ 'psql', '-X', '-q', '-d', $copy->connstr('postgres') ], '<', \$all,
	'>', \$out, '2>', \$perr);
# A new cluster already has its bootstrap superuser: the one error any
# pg_dumpall restore into a fresh cluster prints.
my @errors = grep { /ERROR/ && !/role "\w+" already exists/ } split /\n/, $perr;
is(join("\n", @errors), '', 'pg_dumpall restore: no error');
my $after = snapshot($copy, 'postgres');
is_deeply($after, $before,
	'pg_dumpall: every table and identity sequence equal to the original');
is($copy->safe_psql('postgres', 'SELECT credentials FROM journey.providers'),
	'secret-token-070', "providers' credentials survive");

# --- the copy goes on where the original was ---
my $max_event = $origin->safe_psql('postgres', 'SELECT max(id) FROM journey.events');
my $max_msg = $origin->safe_psql('postgres', 'SELECT max(id) FROM journey.messages');
my $max_log = $origin->safe_psql('postgres', 'SELECT max(id) FROM journey.enrollment_log');
my $new_event = ingest($copy, 'postgres', 'invoice_paid', $c6, 'k7');
ok($new_event > $max_event, 'copy: a new event gets a new id');
is(ingest($copy, 'postgres', 'invoice_paid', $c1, 'k1'),
	$origin->safe_psql('postgres', "SELECT id FROM journey.events WHERE idempotency_key = 'k1'"),
	'copy: a replayed idempotency key returns the original event');
# Past the 4 s wait, c1's last step runs; c6 starts.
my $deadline = time + 60;
my $c1_status = '';
while (time < $deadline)
{
	$copy->safe_psql('postgres', 'SELECT journey.advance_due_enrollments()');
	$c1_status = $copy->safe_psql('postgres',
		"SELECT e.status FROM journey.sequence_enrollments e JOIN journey.sequences s ON s.id = e.sequence_id
		 WHERE s.name = 'Two steps' AND e.customer_id = '$c1'");
	last if $c1_status eq 'finished';
	usleep(200_000);
}
is($c1_status, 'finished', 'copy: the enrollment waiting at step 2 goes on to its last step');
is($copy->safe_psql('postgres',
	"SELECT count(*) FROM journey.messages WHERE id <= $max_msg AND status = 'queued' AND send_after <= now()"),
	'0', 'copy: no old message was queued again');
ok($copy->safe_psql('postgres', "SELECT min(id) > $max_msg FROM journey.messages WHERE created_at > now() - interval '1 minute' AND id > $max_msg") eq 't'
	&& $copy->safe_psql('postgres', "SELECT count(*) > 0 FROM journey.enrollment_log WHERE id > $max_log") eq 't',
	'copy: new messages and log rows get new ids');
is($copy->safe_psql('postgres',
	"SELECT e.status FROM journey.sequence_enrollments e JOIN journey.sequences s ON s.id = e.sequence_id
	 WHERE s.name = 'Limited' AND e.customer_id = '$c5'"),
	'active', 'copy: the deferred enrollment is still waiting for its slot');

# The interrupted message: its lease runs out, it is resent once, with the
# key it was first sent with.
$copy->safe_psql('postgres',
	"UPDATE journey.messages SET lease_expires_at = now() - interval '1 second' WHERE id = $sending");
ok(wait_for($copy,
	"SELECT count(*) FROM journey.messages WHERE status IN ('queued', 'sending') AND send_after <= now()",
	'0', 60), 'copy: the outbox drains');
is($copy->safe_psql('postgres', "SELECT status FROM journey.messages WHERE id = $sending"),
	'sent', 'copy: the interrupted message is sent');

my %keys;
$keys{ $_->{headers}{'Idempotency-Key'} }++ for sink_records($log);
is(scalar(grep { $_ > 1 } values %keys), 0, 'nothing was sent twice');
is(scalar(keys %keys), 7, 'four sent by the original, three by the copy');
ok(exists $keys{ idempotency_key($origin, $sending) },
	"the resend carries the original installation's key");
is($copy->safe_psql('postgres', 'SELECT id FROM journey.installation'),
	$origin->safe_psql('postgres', 'SELECT id FROM journey.installation'),
	'the installation id survives the restore');

# The pg_restore'd database goes on too (no sender serves it).
ok(ingest($origin, 'restored', 'job_done', $c6, 'k8') > $max_event,
	'restored database: a new event gets a new id');
is($origin->safe_psql('restored', 'SELECT journey.advance_due_enrollments() >= 1'), 't',
	'restored database: the executor runs');
is($origin->safe_psql('restored', "SELECT count(*) FROM journey.sequence_enrollments WHERE customer_id = '$c3'"),
	'1', 'restored database: reentry = never still refuses the finished customer');

$copy->stop;
$origin->stop;
done_testing();
