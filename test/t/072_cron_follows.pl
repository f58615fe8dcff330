# The executor's pg_cron job (issue 11): DROP EXTENSION removes it also in
# a session where journey's library was never loaded (journey not in
# shared_preload_libraries), and with cron.use_background_workers = on the
# job runs on whichever server holds the data: after pg_dumpall into a new
# cluster on another port, the new server's pg_cron runs it there.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

# pg_cron preloaded, journey not: every session loads journey on demand.
# A started server with pg_cron preloaded, journey not.
sub cron_node
{
	my ($name) = @_;
	my $n = PostgreSQL::Test::Cluster->new($name);
	$n->init;
	$n->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 32
});
	$n->start;
	return $n;
}
my $node = cron_node('cron_only');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron; CREATE EXTENSION journey');
$node->safe_psql('postgres', 'SELECT journey.schedule_executor()');
is($node->safe_psql('postgres', "SELECT count(*) FROM cron.job WHERE jobname = 'journey-executor'"),
	'1', 'the job is scheduled');
# A fresh session that calls nothing of journey before dropping it.
my ($rc, $out, $err) = $node->psql('postgres', 'DROP EXTENSION journey');
is($rc, 0, 'DROP EXTENSION succeeds') or diag($err);
is($node->safe_psql('postgres', "SELECT count(*) FROM cron.job WHERE jobname = 'journey-executor'"),
	'0', 'DROP EXTENSION without the library preloaded removes the job');
# A failed DROP keeps the job.
$node->safe_psql('postgres', 'CREATE EXTENSION journey; SELECT journey.schedule_executor()');
$node->safe_psql('postgres', 'CREATE VIEW dependent AS SELECT * FROM journey.businesses');
($rc, $out, $err) = $node->psql('postgres', 'DROP EXTENSION journey');
isnt($rc, 0, 'a DROP that fails (a dependent view) ...');
is($node->safe_psql('postgres', "SELECT count(*) FROM cron.job WHERE jobname = 'journey-executor'"),
	'1', '... keeps the job');

# With cron.use_background_workers = on the job runs where the data is:
# pg_dumpall into a new cluster (another port) runs it on the new one.
$node->safe_psql('postgres', 'DROP VIEW dependent');
my ($b, $c) = setup_business($node);
$node->safe_psql('postgres', qq{
SELECT journey.create_sequence('$b', '{"name": "T", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "wait", "wait_ms": 0}, {"kind": "wait", "wait_ms": 0}]}') AS seq \\gset
SELECT journey.enroll_customer(:'seq', '$c', '{}', now());});
my ($all, $derr) = ('', '');
IPC::Run::run([ 'pg_dumpall', '-d', $node->connstr('postgres') ], '>', \$all, '2>', \$derr)
  or die $derr;
$node->stop;    # the old server is gone: only the new one can run it
my $copy = cron_node('cron_copy');
isnt($copy->port, $node->port, 'the copy listens on another port');
IPC::Run::run([ 'psql', '-X', '-q', '-d', $copy->connstr('postgres') ], '<', \$all,
	'>', \$out, '2>', \$err);
is($copy->safe_psql('postgres', "SELECT count(*) FROM cron.job WHERE jobname = 'journey-executor'"),
	'1', 'the job came with the dump');
my $runs = $copy->safe_psql('postgres',
	"SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	  WHERE j.jobname = 'journey-executor'");
# A customer enrolled on the copy only: only the copy's pg_cron can advance her.
my $c2 = $copy->safe_psql('postgres',
	"INSERT INTO journey.customers (business_id, full_name) VALUES ('$b', 'Copy Only') RETURNING id");
$copy->safe_psql('postgres',
	"SELECT journey.enroll_customer(id, '$c2', '{}', now()) FROM journey.sequences");
ok($copy->poll_query_until('postgres',
	"SELECT count(*) > $runs FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	  WHERE j.jobname = 'journey-executor' AND d.status = 'succeeded'", 't'),
	'the copy runs the job (pg_cron runs whole minutes)');
is($copy->safe_psql('postgres', "SELECT status FROM journey.sequence_enrollments WHERE customer_id = '$c2'"),
	'finished', 'and advances the enrollment there');
$copy->stop;
done_testing();
