# The executor under concurrent callers and across a crash:
#  - several sessions calling advance_due_enrollments at once (pg_cron
#    overlapping manual calls) handle every enrollment exactly once, enqueue
#    nothing twice, respect a sequence's rate limit and never deadlock;
#  - a server crash in the middle of a call loses nothing and half-writes
#    nothing; after the restart enrollments continue from their step.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

# Not preloaded: without the sender worker nothing but the executor
# touches journey.messages.
my $node = journey_node('executor', preload => '', conf => q{
max_connections = 30
deadlock_timeout = 100ms
log_lock_waits = on
});

$node->safe_psql('postgres', q{
INSERT INTO journey.businesses (id, name, timezone)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'Pipe Dreams', 'UTC');
INSERT INTO journey.customers (business_id, full_name, email, phone)
SELECT '00000000-0000-0000-0000-0000000000b1', 'Customer ' || g, 'c' || g || '@example.com', '+1555' || g
  FROM generate_series(1, 3000) g;
-- Two sends and a zero-delay wait per enrollment, then a day's wait.
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{
  "name": "Busy", "status": "active", "allow_manual_enroll": true,
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [
    {"kind": "send_email", "message": {"subject": "Hi {{customer.first_name}}", "body": "Thanks"}},
    {"kind": "wait"},
    {"kind": "send_sms", "message": {"body": "Thanks {{customer.first_name}}"}},
    {"kind": "wait", "wait_ms": 86400000}]}');
-- At most 50 sends in any rolling hour.
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{
  "name": "Limited", "status": "active", "allow_manual_enroll": true,
  "rate_per_hour": 50, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"subject": "Hi", "body": "Hi"}}]}');
SELECT count(journey.enroll_customer(s.id, c.id, '{}', '2027-01-12 09:00+00'))
  FROM journey.sequences s CROSS JOIN journey.customers c
 WHERE s.name = 'Busy' OR (s.name = 'Limited' AND c.full_name ~ ' [0-9]{1,3}$' AND c.full_name <> 'Customer 1000');
});
is($node->safe_psql('postgres',
	"SELECT count(*) FROM journey.sequence_enrollments WHERE next_run_at <= '2027-01-12 10:00+00'"),
	'3999', '3999 enrollments due');

# ---------------------------------------------------------------------
# Six sessions at once, each making 30 calls of 40 enrollments in their own
# transactions: 7200 claims for 3999 due enrollments.
# ---------------------------------------------------------------------
my $calls = join('', map { "SELECT journey.advance_due_enrollments(40, '2027-01-12 10:00+00');\n" } 1 .. 30);
my @runs;
for my $i (1 .. 6)
{
	# IPC::Run drains its input: each session gets its own copy.
	my %run = (in => $calls, out => '', err => '');
	$run{h} = IPC::Run::start(
		[ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', \$run{in}, '>', \$run{out}, '2>', \$run{err});
	push @runs, \%run;
}
my $handled = 0;
my $failures = '';
for my $run (@runs)
{
	$run->{h}->finish;
	$failures .= $run->{err} if $? != 0 || $run->{err} ne '';
	$handled += $_ for split /\n/, $run->{out};
}
is($failures, '', 'no session failed (no deadlock, no unique violation)');
is($handled, 3999, 'the calls handled 3999 enrollments in all: none twice');

is($node->safe_psql('postgres', q{
SELECT count(*) || ' ' || count(DISTINCT (enrollment_id, step_index))
  FROM journey.messages m JOIN journey.sequences s ON s.id = m.sequence_id WHERE s.name = 'Busy'}),
	'6000 6000', 'Busy: two messages per enrollment, none twice');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
  SELECT enrollment_id, step_index, outcome FROM journey.enrollment_log
   GROUP BY 1, 2, 3 HAVING count(*) > 1) d}),
	'0', 'no decision logged twice');
is($node->safe_psql('postgres', q{
SELECT string_agg(e.current_step_index || ':' || e.next_run_at || ':' || e.n, ',')
  FROM (SELECT current_step_index, next_run_at, count(*) AS n
          FROM journey.sequence_enrollments en JOIN journey.sequences s ON s.id = en.sequence_id
         WHERE s.name = 'Busy' GROUP BY 1, 2) e}),
	'4:2027-01-13 10:00:00+00:3000', 'Busy: every enrollment waits at step 4 until a day after the call');

# The rate limit holds although six sessions raced for the same window.
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE m.id IS NOT NULL) || ' queued, ' ||
       count(*) FILTER (WHERE m.id IS NULL AND en.next_run_at > '2027-01-12 10:00+00') || ' deferred'
  FROM journey.sequence_enrollments en JOIN journey.sequences s ON s.id = en.sequence_id
  LEFT JOIN journey.messages m ON m.enrollment_id = en.id
 WHERE s.name = 'Limited'}),
	'50 queued, 949 deferred', 'Limited: 50 sends in the hour, the rest deferred');

# ---------------------------------------------------------------------
# A crash in the middle of a call
# ---------------------------------------------------------------------
$node->safe_psql('postgres', q{
-- Keep the enrollments above out of the way: a paused sequence's wait.
UPDATE journey.sequences SET status = 'paused' WHERE name IN ('Busy', 'Limited');
INSERT INTO journey.customers (business_id, full_name, email)
SELECT '00000000-0000-0000-0000-0000000000b1', 'Crash ' || g, 'x' || g || '@example.com'
  FROM generate_series(1, 30000) g;
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{
  "name": "Crash", "status": "active", "allow_manual_enroll": true,
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [
    {"kind": "send_email", "message": {"subject": "One", "body": "First"}},
    {"kind": "wait", "wait_ms": 3600000},
    {"kind": "send_email", "message": {"subject": "Two", "body": "Second"}}]}');
SELECT count(journey.enroll_customer(s.id, c.id, '{}', '2027-02-01 09:00+00'))
  FROM journey.sequences s CROSS JOIN journey.customers c
 WHERE s.name = 'Crash' AND c.full_name LIKE 'Crash %';
});
# The first step for everyone, committed.
is($node->safe_psql('postgres', "SELECT journey.advance_due_enrollments(100000, '2027-02-01 09:00+00')"),
	'30000', 'step 1 ran for the 30000 crash-test enrollments');

my $crash_state = q{
SELECT count(*) FILTER (WHERE m.step_index = 1) || ' first, ' ||
       count(*) FILTER (WHERE m.step_index = 3) || ' second, ' ||
       (SELECT count(*) FROM journey.sequence_enrollments en JOIN journey.sequences s ON s.id = en.sequence_id
         WHERE s.name = 'Crash' AND en.current_step_index = 2 AND en.status = 'active') || ' at step 2, ' ||
       (SELECT count(*) FROM journey.sequence_enrollments en JOIN journey.sequences s ON s.id = en.sequence_id
         WHERE s.name = 'Crash' AND en.status = 'finished') || ' finished'
  FROM journey.messages m JOIN journey.sequences s ON s.id = m.sequence_id WHERE s.name = 'Crash'};
is($node->safe_psql('postgres', $crash_state), '30000 first, 0 second, 30000 at step 2, 0 finished',
	'before the crash: everyone waits at step 2');

# Step 3 for everyone, in one call, killed by an immediate shutdown after
# it has written its messages: another session holds the log table, so
# the call waits in its INSERT into journey.enrollment_log, right after the
# one into journey.messages, with 30000 messages written and not committed.
# (A row the call needs would not do: the executor skips the enrollments
# of a row someone holds.)
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN; LOCK TABLE journey.enrollment_log IN EXCLUSIVE MODE;});
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c',
	  "SELECT journey.advance_due_enrollments(100000, '2027-02-01 10:00+00')" ],
	'>', \$out, '2>', \$err);
$node->poll_query_until('postgres', q{
SELECT count(*) > 0 FROM pg_stat_activity
 WHERE wait_event_type = 'Lock'
   AND query LIKE '%advance_due_enrollments(100000, ''2027-02-01 10:00+00'')%'})
  or die 'the executor call never reached its messages';
$node->stop('immediate');
$h->finish;
eval { $holder->quit; };
is($out, '', 'the call did not complete: it died with the server');
$node->start;

is($node->safe_psql('postgres', $crash_state), '30000 first, 0 second, 30000 at step 2, 0 finished',
	'after the crash: none of the interrupted call is left, nothing is lost');

# Continue where they were: step 2's wait is over, step 3 runs once.
is($node->safe_psql('postgres', "SELECT journey.advance_due_enrollments(100000, '2027-02-01 10:00+00')"),
	'30000', 'after the restart the executor handles them all');
is($node->safe_psql('postgres', $crash_state), '30000 first, 30000 second, 0 at step 2, 30000 finished',
	'each enrollment continued from step 2: one second message, no first message again');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM journey.enrollment_log l JOIN journey.sequence_enrollments en ON en.id = l.enrollment_id
  JOIN journey.sequences s ON s.id = en.sequence_id WHERE s.name = 'Crash'}),
	'90000', 'three log rows per enrollment: queued, queued, finished');

$node->stop;
done_testing();
