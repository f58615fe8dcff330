# The deployment users run: pg_cron and journey preloaded, the executor
# scheduled with journey.schedule_executor(), nothing called by hand.  A
# real pg_cron run (whole minutes in pg_cron 1.4) advances a due enrollment
# and the sender delivers its message to a sink on 127.0.0.1.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

my $node = sender_node('cron', qq{
shared_preload_libraries = 'pg_cron,journey'
cron.database_name = 'postgres'
# pg_cron alone, as where no sender serves the database.
journey.executor_in_worker = off
cron.use_background_workers = on
max_worker_processes = 32
});
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
my ($port, $log) = start_sink('http_sink.py', 'cron');

my ($business, $customer) = setup_business($node, 'Pipe Dreams');
add_provider($node, business => $business, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$port/ok", from => 'hello@pipedreams.example');
$node->safe_psql('postgres', qq{
SELECT journey.create_sequence('$business', '{"name": "Thanks", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "send_email", "message": {"purpose": "thank_you",
             "subject": "Thanks, {{customer.first_name}}!", "body": "From {{business.name}}"}}]}') AS seq \\gset
SELECT journey.enroll_customer(:'seq', '$customer', '{}', now() - interval '1 minute');
});

is($node->safe_psql('postgres', 'SELECT count(*) FROM journey.messages'), '0',
	'nothing is queued before the executor runs');
my $jobid = $node->safe_psql('postgres', 'SELECT journey.schedule_executor()');
like($jobid, qr/^\d+$/, 'schedule_executor returns the pg_cron job id');

# The next whole minute, at most ~60 s away, plus a margin for the worker.
ok(wait_for($node, q{SELECT count(*) FROM journey.messages WHERE status = 'sent'}, '1', 150),
	'a pg_cron run advanced the enrollment and the sender delivered the message');
is($node->safe_psql('postgres', qq{
SELECT count(*) > 0 FROM cron.job_run_details WHERE jobid = $jobid AND status = 'succeeded'}), 't',
	'pg_cron recorded a successful run of journey-executor');

my @got = sink_records($log);
is(scalar(@got), 1, 'the sink received exactly one request');
like($got[0]{body}, qr/"subject": ?"Thanks, Ada!"/, 'the message was rendered by the executor');
is($node->safe_psql('postgres', q{
SELECT status || ' ' || current_step_index FROM journey.sequence_enrollments}), 'finished 1',
	'the enrollment finished past its last step');

ok($node->safe_psql('postgres', 'SELECT journey.unschedule_executor()') eq 't', 'unscheduled');
$node->stop;
done_testing();
