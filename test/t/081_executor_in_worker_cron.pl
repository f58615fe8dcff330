# The sender's executor beside pg_cron's job and two more sessions calling
# advance_due_enrollments in a loop, while events stream in: every step
# runs once, every message is enqueued once and delivered once.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

my ($port, $log) = start_sink('http_sink.py', 'cron_too');
my $node = sender_node('cron_too', qq{
shared_preload_libraries = 'pg_cron,journey'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 32
});
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
my ($b) = setup_business($node, 'Pipe Dreams');
add_provider($node, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'hello@pipedreams.example');
$node->safe_psql('postgres', qq{
SELECT journey.create_sequence('$b', '{"name": "Thanks", "status": "active",
  "trigger_event_type": "invoice_paid", "rate_per_hour": null, "rate_per_day": null,
  "steps": [
    {"kind": "send_email", "message": {"purpose": "thank_you", "subject": "Thanks!", "body": "Hi"}},
    {"kind": "send_email", "wait_ms": 300, "message": {"purpose": "follow_up", "subject": "Again", "body": "Hi"}}]}');
INSERT INTO journey.customers (business_id, full_name, email, external_id)
SELECT '$b', 'Customer ' || g, 'c' || g || '\@example.com', 'cust-' || g FROM generate_series(1, 5000) g;
CREATE TABLE public.handled (n integer);
CREATE TABLE public.stream_done (at timestamptz);
});
my $jobid = $node->safe_psql('postgres', 'SELECT journey.schedule_executor()');
like($jobid, qr/^\d+$/, 'pg_cron runs the executor every minute as well');

# Events, one per transaction, until pg_cron has run the executor once
# while they flowed (its minute is at most ~60 s away), for at most 90 s.
my $stream = q{
DO $$
DECLARE
  i integer := 0;
  t0 timestamptz := clock_timestamp();
BEGIN
  WHILE i < 5000 AND clock_timestamp() < t0 + interval '90 s'
    AND (i < 100 OR NOT EXISTS (SELECT FROM cron.job_run_details WHERE status = 'succeeded')) LOOP
    i := i + 1;
    PERFORM journey.ingest_event(b.id, 'invoice_paid', jsonb_build_object('external_id', 'cust-' || i))
       FROM journey.businesses b;
    COMMIT;
    PERFORM pg_sleep(0.02);
  END LOOP;
  INSERT INTO public.stream_done VALUES (clock_timestamp());
END
$$};
# Other callers, in small batches, until the stream is done and nothing is due.
my $caller = q{
DO $$
DECLARE
  n integer;
  t0 timestamptz := clock_timestamp();
BEGIN
  WHILE clock_timestamp() < t0 + interval '120 s' LOOP
    n := journey.advance_due_enrollments(3);
    INSERT INTO public.handled VALUES (n);
    COMMIT;
    EXIT WHEN n = 0 AND EXISTS (SELECT FROM public.stream_done)
      AND NOT EXISTS (SELECT FROM journey.sequence_enrollments WHERE status = 'active');
    PERFORM pg_sleep(0.005);
  END LOOP;
END
$$};
my @h;
for my $sql ($stream, $caller, $caller)
{
	my ($out, $err) = ('', '');
	push @h, IPC::Run::start([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d',
		$node->connstr('postgres'), '-c', $sql ], '>', \$out, '2>', \$err,
		IPC::Run::timeout(180));
}
ok($_->finish, 'a session finished without an error') for @h;

my $events = $node->safe_psql('postgres', 'SELECT count(*) FROM journey.events');
cmp_ok($events, '>=', 100, "the stream ingested $events events");
is($node->safe_psql('postgres', qq{
SELECT count(*) > 0 FROM cron.job_run_details WHERE jobid = $jobid AND status = 'succeeded'}),
	't', 'pg_cron ran the executor during the stream');
cmp_ok($node->safe_psql('postgres', 'SELECT coalesce(sum(n), 0) FROM public.handled'), '>', 0,
	'the other callers took some of the enrollments');
cmp_ok($node->safe_psql('postgres', 'SELECT advanced FROM journey.executor_status()'), '>', 0,
	'and the sender took some');

my $messages = 2 * $events;
ok(wait_for($node, q{SELECT count(*) FROM journey.messages WHERE status = 'sent'}, $messages, 60),
	"all $messages messages sent");
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE status = 'finished'), count(*) FROM journey.sequence_enrollments}),
	"$events|$events", 'one enrollment per event, each finished');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM journey.messages GROUP BY enrollment_id HAVING count(*) <> 2}), '',
	'two messages per enrollment');
is($node->safe_psql('postgres', q{
SELECT outcome, count(*) FROM journey.enrollment_log GROUP BY 1 ORDER BY 1}),
	"finished|$events\nqueued|$messages", 'each decision logged once: no step ran twice');
my @got = sink_records($log);
my %keys;
$keys{ $_->{headers}{'Idempotency-Key'} }++ for @got;
is(scalar(@got), $messages, 'the sink got one request per message');
is(scalar(grep { $_ > 1 } values %keys), 0, 'no message delivered twice');

$node->safe_psql('postgres', 'SELECT journey.unschedule_executor()');
$node->stop;
done_testing();
