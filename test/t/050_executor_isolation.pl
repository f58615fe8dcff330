# Executor isolation against a real concurrent transaction: an error of
# the whole call (here a lock timeout, while another transaction holds a
# lock on journey.enrollment_log) fails the call and stops no enrollment,
# though it happens while the executor writes their results; once the
# other transaction is gone the same call goes through.  Errors inside one
# enrollment are covered by sql/executor_isolation.sql.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('isolation');
$node->init;
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION journey;
INSERT INTO journey.businesses (id, name) VALUES ('00000000-0000-0000-0000-0000000000b1', 'Locks Ltd');
INSERT INTO journey.customers (business_id, full_name, email)
SELECT '00000000-0000-0000-0000-0000000000b1', 'Customer ' || g, 'c' || g || '@example.com'
  FROM generate_series(1, 3) g;
SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1', '{
  "name": "One mail", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "send_email", "message": {"subject": "Hi", "body": "Hello"}}]}');
SELECT count(journey.enroll_customer(s.id, c.id, '{}', '2027-01-12 09:00+00'))
  FROM journey.sequences s CROSS JOIN journey.customers c;
});

# Another transaction locks the log the executor writes its decisions to,
# and stays open: the executor's insert into it waits.  (A row it holds
# would not do: the claim skips locked enrollments.)
my $script = PostgreSQL::Test::Utils::tempdir() . '/holder.sql';
PostgreSQL::Test::Utils::append_to_file($script, q{
BEGIN;
LOCK TABLE journey.enrollment_log IN EXCLUSIVE MODE;
SELECT 'holding';
SELECT pg_sleep(120);
ROLLBACK;
});
# A file, not stdin: IPC::Run feeds stdin only while it is pumped.
my %holder = (out => '', err => '');
$holder{h} = IPC::Run::start(
	[ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-f', $script, '-d', $node->connstr('postgres') ],
	'>', \$holder{out}, '2>', \$holder{err});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120)%'"),
	'the other transaction holds its lock')
  or diag("holder: $holder{out} $holder{err}");

my ($rc, $out, $err) = $node->psql('postgres', q{
SET lock_timeout = '300ms';
SELECT journey.advance_due_enrollments(100, '2027-01-12 10:00+00');
});
isnt($rc, 0, 'the call fails');
like($err, qr/canceling statement due to lock timeout/, 'with the lock timeout');
is($node->safe_psql('postgres', q{
SELECT string_agg(status || ':' || coalesce(stop_reason, '-'), ',' ORDER BY status)
  FROM journey.sequence_enrollments}),
	'active:-,active:-,active:-', 'no enrollment was stopped for it');
is($node->safe_psql('postgres', 'SELECT count(*) FROM journey.enrollment_log'),
	'0', 'and nothing was logged');

# The backend sleeps on whether or not its client is there: end it.
$node->safe_psql('postgres', q{
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120)%'});
$holder{h}->finish;
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120)%'"),
	'the other transaction is gone');
is($node->safe_psql('postgres',
		"SELECT journey.advance_due_enrollments(100, '2027-01-12 10:00+00')"),
	'3', 'the same call now handles all three');
is($node->safe_psql('postgres', q{
SELECT string_agg(status, ',') FROM journey.sequence_enrollments}),
	'finished,finished,finished', 'and they finish');
is($node->safe_psql('postgres', "SELECT count(*) FROM journey.messages WHERE status = 'queued'"),
	'3', 'with their messages');

$node->stop;
done_testing();
