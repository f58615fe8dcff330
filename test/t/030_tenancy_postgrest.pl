# Tenancy through real logins: the PostgREST/Supabase path (a trusted login
# role that SETs ROLE and carries request.jwt.claims) and a tenant with its
# own SQL login that tries to forge claims, switch roles or trust itself.
# The in-session attacks (every table, search_path capture) are in
# sql/tenancy.sql; these need connections whose session_user differs.
#
# The library is deliberately not preloaded: a fresh session has not loaded
# it yet, which is when a placeholder journey.* setting could be planted.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

my $node = journey_node('tenancy', preload => '');

$node->safe_psql('postgres', q{
-- PostgREST's / Supabase's roles.
CREATE ROLE authenticator LOGIN NOINHERIT;
CREATE ROLE anon NOLOGIN;
CREATE ROLE authenticated NOLOGIN;
GRANT anon, authenticated TO authenticator;
GRANT journey_user TO authenticated;
-- Tenants with their own SQL logins.
CREATE ROLE mallory LOGIN;
CREATE ROLE carol LOGIN;
GRANT journey_user TO mallory, carol;
});

my $attempts = 0;

# Runs $sql as a login role; returns its output and the SQLSTATE of the
# error that stopped it ('' when none).
sub as_user
{
	my ($user, $sql, %opt) = @_;
	my $connstr = $node->connstr('postgres') . " user=$user";
	$connstr .= " options='$opt{options}'" if defined $opt{options};
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		connstr => $connstr);
	my ($state) = $err =~ /(?:ERROR|FATAL):\s+([0-9A-Z]{5}):/;
	return ($out, $state // '');
}

# One PostgREST request: authenticator switches to the request's role and
# sets the verified claims for the transaction only.
sub as_jwt
{
	my ($sub, $sql, $role) = @_;
	$role //= 'authenticated';
	my $claims = defined $sub
	  ? qq({"sub":"$sub","role":"$role"})
	  : qq({"role":"$role"});
	return as_user('authenticator',
		"BEGIN;\nSET LOCAL ROLE $role;\nSET LOCAL request.jwt.claims = '$claims';\n$sql\nCOMMIT;");
}

# A hostile attempt that must fail with $state.
sub refused
{
	my ($name, $state, $user, $sql, %opt) = @_;
	my ($out, $got) = $user eq 'jwt:' ? as_jwt(undef, $sql)
	  : $user =~ /^jwt:(.*)$/ ? as_jwt($1, $sql)
	  : as_user($user, $sql, %opt);
	$attempts++;
	is($got, $state, "refused ($state): $name");
}

# A hostile attempt whose answer must be $expected (a read that sees nothing).
sub sees
{
	my ($name, $expected, $user, $sql, %opt) = @_;
	my ($out, $got) = $user =~ /^jwt:(.*)$/ ? as_jwt($1, $sql) : as_user($user, $sql, %opt);
	$attempts++;
	is("$out|$got", "$expected|", "refused (sees nothing): $name");
}

# ------------------------------------------------------------------
# The PostgREST path: members are JWT subjects.
# ------------------------------------------------------------------
my ($out, $state) = as_jwt('user-alice', 'SELECT journey.current_member();');
is("$out|$state", 'user-alice|', 'member is the sub claim on a trusted connection');

($out, $state) = as_jwt('user-alice', q{SELECT journey.create_business('Alice Bakery');});
like($out, qr/^[0-9a-f-]{36}$/, 'alice signs up through PostgREST');
my $business_a = $out;
($out, $state) = as_jwt('user-bob', q{SELECT journey.create_business('Bob Garage');});
like($out, qr/^[0-9a-f-]{36}$/, 'bob signs up through PostgREST');
my $business_b = $out;

($out, $state) = as_jwt('user-bob', qq{
INSERT INTO journey.customers (business_id, full_name, email, external_id)
VALUES ('$business_b', 'Bea Bob', 'bea\@example.com', 'bob-1');
INSERT INTO journey.events (business_id, event_type) VALUES ('$business_b', 'invoice_paid');
INSERT INTO journey.suppressions (business_id, channel, address) VALUES ('$business_b', 'email', 'x\@example.com');
SELECT count(*) FROM journey.customers;});
is("$out|$state", '1|', 'bob writes and reads his own business');
my $customer_b = $node->safe_psql('postgres',
	"SELECT id FROM journey.customers WHERE external_id = 'bob-1'");
$node->safe_psql('postgres', qq{
INSERT INTO journey.providers (business_id, channel, kind, endpoint, credentials)
VALUES ('$business_b', 'email', 'webhook', 'https://hooks.example.com/bob', 'bob-secret');});

($out, $state) = as_jwt('user-alice', qq{
INSERT INTO journey.customers (business_id, full_name) VALUES ('$business_a', 'Al Alice');
SELECT string_agg(b.name, ',') FROM journey.businesses b;});
is("$out|$state", 'Alice Bakery|', 'alice sees only her business');

# Engine rows of Bob's, written by the owner.
my $sequence_b = $node->safe_psql('postgres', qq{
INSERT INTO journey.sequences (business_id, name, status, allow_manual_enroll)
VALUES ('$business_b', 'Bob follow-up', 'active', true) RETURNING id;});
my $enrollment_b = $node->safe_psql('postgres', qq{
INSERT INTO journey.sequence_enrollments (business_id, sequence_id, customer_id, next_run_at, enrolled_at)
VALUES ('$business_b', '$sequence_b', '$customer_b', '2030-01-01', '2030-01-01') RETURNING id;});

my $before = fingerprint($node, $business_b);

# Alice, through PostgREST, against Bob.
sees('jwt reads other business', '0', 'jwt:user-alice',
	"SELECT count(*) FROM journey.businesses WHERE id = '$business_b';");
sees('jwt reads other customers', '0', 'jwt:user-alice',
	"SELECT count(*) FROM journey.customers WHERE business_id = '$business_b';");
sees('jwt reads other events', '0', 'jwt:user-alice',
	"SELECT count(*) FROM journey.events WHERE business_id = '$business_b';");
sees('jwt reads other memberships', '0', 'jwt:user-alice',
	"SELECT count(*) FROM journey.business_members WHERE business_id = '$business_b';");
sees('jwt reads other suppressions', '0', 'jwt:user-alice',
	"SELECT count(*) FROM journey.suppressions WHERE business_id = '$business_b';");
refused('jwt reads providers', '42501', 'jwt:user-alice',
	'SELECT credentials FROM journey.providers;');
refused('jwt inserts a customer into another business', '42501', 'jwt:user-alice',
	"INSERT INTO journey.customers (business_id, full_name) VALUES ('$business_b', 'Mal');");
refused('jwt inserts an event into another business', '42501', 'jwt:user-alice',
	"INSERT INTO journey.events (business_id, event_type) VALUES ('$business_b', 'invoice_paid');");
refused('jwt joins another business', '42501', 'jwt:user-alice',
	"INSERT INTO journey.business_members VALUES ('$business_b', 'user-alice');");
refused('jwt moves own customer into another business', '42501', 'jwt:user-alice',
	"UPDATE journey.customers SET business_id = '$business_b' WHERE business_id = '$business_a';");
sees('jwt deletes other customers', '0', 'jwt:user-alice',
	"WITH d AS (DELETE FROM journey.customers WHERE id = '$customer_b' RETURNING 1) SELECT count(*) FROM d;");
refused('jwt truncates', '42501', 'jwt:user-alice', 'TRUNCATE journey.customers;');
refused('jwt creates a business without a sub claim', '42501', 'jwt:',
	q{SELECT journey.create_business('Nobody Inc');});
sees('jwt without a sub claim sees no business', '0', 'jwt:',
	'SELECT count(*) FROM journey.businesses;');
refused('anon role reaches journey', '42501', 'jwt:user-alice',
	"RESET ROLE; SET LOCAL ROLE anon; SELECT count(*) FROM journey.businesses;");
refused('authenticator itself (no SET ROLE) reaches journey', '42501', 'authenticator',
	'SELECT count(*) FROM journey.customers;');
refused('jwt calls ingest_event for another business', '42501', 'jwt:user-alice',
	qq{SELECT journey.ingest_event('$business_b', 'invoice_paid', '{"id": "$customer_b"}');});
refused('jwt calls stop_enrollment for another business (answered as a missing id)', '22023', 'jwt:user-alice',
	"SELECT journey.stop_enrollment('$enrollment_b', 'x');");
refused('jwt calls enroll_customer for another business (answered as a missing id)', '22023', 'jwt:user-alice',
	"SELECT journey.enroll_customer('$sequence_b', '$customer_b');");
refused('jwt calls create_sequence for another business', '42501', 'jwt:user-alice',
	qq{SELECT journey.create_sequence('$business_b', '{"name": "x", "steps": [{"kind": "wait", "wait_ms": 0}]}');});

# Claims are transaction-local: the next request on the same connection
# acts for its own subject only.
($out, $state) = as_user('authenticator', qq{
BEGIN; SET LOCAL ROLE authenticated; SET LOCAL request.jwt.claims = '{"sub":"user-bob"}';
SELECT count(*) FROM journey.customers; COMMIT;
BEGIN; SET LOCAL ROLE authenticated; SET LOCAL request.jwt.claims = '{"sub":"user-alice"}';
SELECT count(*) FROM journey.customers WHERE business_id = '$business_b'; COMMIT;});
is("$out|$state", "1\n0|", 'a pooled connection switches members between requests');

# ------------------------------------------------------------------
# A tenant with its own SQL login.
# ------------------------------------------------------------------
($out, $state) = as_user('mallory', q{SELECT journey.create_business('Mallory Ltd');});
like($out, qr/^[0-9a-f-]{36}$/, 'mallory signs up with a direct login');
my $business_m = $out;
($out, $state) = as_user('mallory', 'SELECT journey.current_member();');
is($out, 'mallory', 'member is current_user on an untrusted connection');

sees('forged request.jwt.claims', 'mallory|0', 'mallory', qq{
SET request.jwt.claims = '{"sub":"user-bob","role":"authenticated"}';
SELECT journey.current_member(), count(*) FROM journey.customers WHERE business_id = '$business_b';});
sees('forged request.jwt.claim.sub', 'mallory|0', 'mallory', qq{
SET request.jwt.claim.sub = 'user-bob';
SELECT journey.current_member(), count(*) FROM journey.customers WHERE business_id = '$business_b';});
sees('forged claims through set_config', 'mallory|0', 'mallory', qq{
SELECT set_config('request.jwt.claims', '{"sub":"user-bob"}', false) IS NOT NULL AS x \\g /dev/null
SELECT journey.current_member(), count(*) FROM journey.businesses WHERE id = '$business_b';});
refused('trusting itself once the library is loaded', '42501', 'mallory', qq{
SELECT journey.current_member() \\g /dev/null
SET journey.trusted_claim_roles = 'mallory';});
# Before the library is loaded the SET only plants a placeholder, which
# the library refuses (with a warning) when it defines the setting.
sees('trusting itself before the library is loaded', 'mallory|0', 'mallory', qq{
SET journey.trusted_claim_roles = 'mallory';
SET request.jwt.claims = '{"sub":"user-bob"}';
SELECT journey.current_member(), count(*) FROM journey.customers WHERE business_id = '$business_b';});
sees('trust planted as a placeholder, claims forged', 'mallory|0', 'mallory', qq{
SET request.jwt.claims = '{"sub":"user-bob"}';
SELECT journey.current_member(), count(*) FROM journey.customers WHERE business_id = '$business_b';},
	options => '-c journey.trusted_claim_roles=mallory');
refused('trusting itself with ALTER ROLE', '42501', 'mallory',
	q{ALTER ROLE mallory SET journey.trusted_claim_roles = 'mallory';});
refused('SET ROLE to PostgREST\'s authenticated role', '42501', 'mallory',
	'SET ROLE authenticated;');
refused('SET ROLE to the trusted login role', '42501', 'mallory', 'SET ROLE authenticator;');
refused('SET ROLE to another tenant\'s login role', '42501', 'mallory', 'SET ROLE carol;');
refused('SET ROLE to the worker role', '42501', 'mallory', 'SET ROLE journey_worker;');
refused('SET SESSION AUTHORIZATION to the trusted login role', '42501', 'mallory',
	'SET SESSION AUTHORIZATION authenticator;');
refused('direct login inserts into another business', '42501', 'mallory',
	"INSERT INTO journey.customers (business_id, full_name) VALUES ('$business_b', 'Mal');");
refused('direct login adds itself to another business', '42501', 'mallory',
	"INSERT INTO journey.business_members VALUES ('$business_b', 'mallory');");
refused('direct login reads providers', '42501', 'mallory', 'SELECT * FROM journey.providers;');
refused('direct login calls stop_enrollment on another business\'s enrollment (answered as a missing id)', '22023', 'mallory',
	"SELECT journey.stop_enrollment('$enrollment_b', 'mine now');");
refused('direct login calls enroll_customer in another business (answered as a missing id)', '22023', 'mallory',
	"SELECT journey.enroll_customer('$sequence_b', '$customer_b');");
refused('direct login calls ingest_event for another business', '42501', 'mallory',
	qq{SELECT journey.ingest_event('$business_b', 'invoice_paid', '{"external_id": "m-1", "full_name": "Mal"}');});

# The executor and its scheduling are for the cron job's owner only.
foreach my $call ('journey.advance_due_enrollments()', "journey.schedule_executor('* * * * *')",
	'journey.unschedule_executor()')
{
	my ($fn) = $call =~ /^([\w.]+)\(/;
  SKIP:
	{
		skip "$fn is not part of this build", 2
		  unless $node->safe_psql('postgres',
			"SELECT count(*) FROM pg_proc WHERE oid::regproc::text = '$fn'") > 0;
		refused("jwt calls $fn", '42501', 'jwt:user-alice', "SELECT $call;");
		refused("direct login calls $fn", '42501', 'mallory', "SELECT $call;");
	}
}

is(fingerprint($node, $business_b),
	$before, 'nothing of bob\'s business changed');
is($node->safe_psql('postgres',
	"SELECT string_agg(member, ',' ORDER BY member) FROM journey.business_members WHERE business_id = '$business_b'"),
	'user-bob', 'bob\'s business still has bob alone');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_db_role_setting WHERE setrole = 'mallory'::regrole"),
	'0', 'no role setting was planted');

# The policies are not vacuous: an administrator's membership opens the door.
$node->safe_psql('postgres',
	"INSERT INTO journey.business_members VALUES ('$business_b', 'mallory')");
($out, $state) = as_user('mallory',
	"SELECT count(*) FROM journey.customers WHERE business_id = '$business_b';");
is("$out|$state", '1|', 'a membership granted by an administrator shows the rows');

cmp_ok($attempts, '>=', 30, "at least 30 hostile attempts ($attempts)");

$node->stop;
done_testing();
