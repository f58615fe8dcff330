# update_sequence racing the executor and the events trigger (SPEC section
# 10): while sessions advance enrollments and insert events that enroll
# customers, another session writes new versions of the journey with
# p_in_flight 'move'.  No session fails (no deadlock), and no enrollment is
# ever between versions: each decision is logged with one version, the
# message it queued carries that version's text, an enrollment's versions
# only grow, and every active enrollment stands at a step its version has.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('versions');
$node->init;
$node->append_conf('postgresql.conf', qq{
max_connections = 30
deadlock_timeout = 100ms
log_lock_waits = on
});
$node->start;

my $nsteps = 8;
# Version $v of the journey: sends and one-minute waits, each send's
# subject naming its version and step.
sub definition
{
	my ($v) = @_;
	my @steps;
	for my $k (1 .. $nsteps)
	{
		push @steps, $k % 2
		  ? qq({"kind": "send_email", "message": {"subject": "v$v step $k", "body": "Hi"}})
		  : qq({"kind": "wait", "wait_ms": 60000});
	}
	return qq({"name": "Racing v$v", "status": "active", "trigger_event_type": "signup",
	  "exit_event_types": ["left"], "allow_manual_enroll": true,
	  "rate_per_hour": 1000000, "rate_per_day": null, "steps": [) . join(', ', @steps) . ']}';
}

$node->safe_psql('postgres', qq{
CREATE EXTENSION journey;
INSERT INTO journey.businesses (id, name, timezone)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'Pipe Dreams', 'UTC');
INSERT INTO journey.customers (business_id, full_name, email, external_id)
SELECT '00000000-0000-0000-0000-0000000000b1', 'Customer ' || g, 'c' || g || '\@example.com', 'c' || g
  FROM generate_series(1, 1500) g;
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '@{[definition(1)]}');
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
SELECT business_id, 'signup', id, '2027-01-12 10:00+00' FROM journey.customers
 WHERE external_id::text <= 'c5';
});
my $seq = $node->safe_psql('postgres', 'SELECT id FROM journey.sequences');
my $initial = $node->safe_psql('postgres', 'SELECT count(*) FROM journey.sequence_enrollments');
ok($initial > 500, "$initial enrollments in flight");

# Executors: two sessions stepping the clock a minute per call.
my $exec_calls = join('', map {
	sprintf("SELECT journey.advance_due_enrollments(200, '2027-01-12 10:00+00'::timestamptz + interval '%d seconds');\n", $_ * 20)
} 0 .. 30);
# Events: new customers enrolled by the trigger, others leaving.
my $event_calls = join('', map {
	"SELECT journey.ingest_event('00000000-0000-0000-0000-0000000000b1', 'signup', "
	  . "'{\"external_id\": \"n$_\", \"full_name\": \"New $_\", \"email\": \"n$_\@example.com\"}', '{}', NULL, '2027-01-12 10:03+00');\n"
	  . "SELECT journey.ingest_event('00000000-0000-0000-0000-0000000000b1', 'left', '{\"external_id\": \"c1$_\"}', '{}', NULL, '2027-01-12 10:04+00');\n"
} 1 .. 60);
# Updates: versions 2 .. 9, each moving everyone in flight.
my $update_calls = join('', map {
	"SELECT journey.update_sequence('$seq', '" . definition($_) . "', 'move');\nSELECT pg_sleep(0.05);\n"
} 2 .. 9);

my @runs;
for my $input ($exec_calls, $exec_calls, $event_calls, $update_calls)
{
	my %run = (in => $input, out => '', err => '');
	$run{h} = IPC::Run::start(
		[ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', \$run{in}, '>', \$run{out}, '2>', \$run{err},
		IPC::Run::timeout(180));
	push @runs, \%run;
}
my $failures = '';
for my $run (@runs)
{
	$run->{h}->finish;
	$failures .= $run->{err} if $? != 0 || $run->{err} ne '';
}
is($failures, '', 'no session failed: no deadlock, no refused move, no unique violation');
is($node->safe_psql('postgres', 'SELECT version FROM journey.sequences'), '9', 'eight new versions written');

# Every queued message carries the text of the version its decision was
# logged with: the executor never mixed two versions' steps.
is($node->safe_psql('postgres', q{
SELECT count(*) FROM journey.messages m
  JOIN journey.enrollment_log l ON l.enrollment_id = m.enrollment_id
   AND l.step_index = m.step_index AND l.outcome = 'queued'
 WHERE m.subject <> format('v%s step %s', l.sequence_version, m.step_index)}),
	'0', 'every message has the text of the version its decision names');
ok($node->safe_psql('postgres', q{SELECT count(*) FROM journey.messages}) > 1000,
	'the executor sent while the versions changed');
ok($node->safe_psql('postgres', q{SELECT count(DISTINCT sequence_version) FROM journey.enrollment_log}) > 2,
	'decisions were taken on several versions');
ok($node->safe_psql('postgres', q{SELECT count(*) FROM journey.enrollment_log WHERE outcome = 'moved'}) > 0,
	'enrollments were moved');

# An enrollment's versions only grow, and a move is logged as the step
# from its version to the next.
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
  SELECT sequence_version, lag(sequence_version) OVER (PARTITION BY enrollment_id ORDER BY id) AS prev
    FROM journey.enrollment_log) x
 WHERE sequence_version < prev}), '0', 'no decision goes back to an earlier version');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM journey.enrollment_log l
 WHERE l.outcome = 'moved' AND l.detail NOT LIKE '% to version ' || l.sequence_version || ' at step ' || l.step_index}),
	'0', 'each move is logged with the version it went to');

# Every active enrollment stands at a step of its own version.
is($node->safe_psql('postgres', q{
SELECT count(*) FROM journey.sequence_enrollments e
 WHERE e.status = 'active' AND NOT EXISTS (
   SELECT 1 FROM journey.sequence_steps st
    WHERE st.sequence_id = e.sequence_id AND st.version = e.sequence_version
      AND st.step_index = e.current_step_index)}), '0', 'no active enrollment between versions');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT enrollment_id, step_index FROM journey.messages
  GROUP BY 1, 2 HAVING count(*) > 1) d}), '0', 'no step enqueued twice');

# Quiet now: one more move takes everyone in flight to version 10, and the
# executor then runs them on it.
$node->safe_psql('postgres', "SELECT journey.update_sequence('$seq', '" . definition(10) . "', 'move')");
is($node->safe_psql('postgres', q{
SELECT count(*) FROM journey.sequence_enrollments WHERE status = 'active' AND sequence_version <> 10}),
	'0', 'a move reaches every active enrollment');
$node->safe_psql('postgres', join('', map {
	"SELECT journey.advance_due_enrollments(100000, '2027-01-12 11:00+00'::timestamptz + interval '$_ minutes');\n"
} 0 .. $nsteps));
is($node->safe_psql('postgres', q{
SELECT count(*) FROM journey.messages m JOIN journey.enrollment_log l
    ON l.enrollment_id = m.enrollment_id AND l.step_index = m.step_index AND l.outcome = 'queued'
 WHERE l.sequence_version = 10 AND m.subject LIKE 'v10 step %'}) > 0 ? 'yes' : 'no',
	'yes', 'the moved enrollments go on on version 10');
is($node->safe_psql('postgres', q{SELECT count(*) FROM journey.sequence_enrollments WHERE status = 'active'}),
	'0', 'and finish');

$node->stop;
done_testing();
