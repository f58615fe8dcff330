# The executor is fair across businesses and never waits on a tenant's or
# an application's row lock (issue 12, finding 5): one business's back-dated
# backlog does not keep another business's due enrollment out of a call, and
# a sequence, customer or business row held in an open transaction delays
# only the enrollments that need it; they stay due, unchanged, and run once
# after the lock is gone.  Also with the executor inside the sender.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JourneyTest;

my $node = journey_node('fair', preload => '');
my $T = '2027-01-12 10:00+00';

# Two businesses, each with a rate-limited one-mail journey (the limit is
# what makes the executor lock the sequence row).
sub business_with_journey
{
	my ($name, $ncustomers) = @_;
	my $b = $node->safe_psql('postgres',
		"INSERT INTO journey.businesses (name) VALUES ('$name') RETURNING id");
	$node->safe_psql('postgres', qq{
INSERT INTO journey.customers (business_id, full_name, email)
SELECT '$b', 'Customer ' || g, '$name' || g || '\@example.com' FROM generate_series(1, $ncustomers) g});
	my $s = $node->safe_psql('postgres', qq{
SELECT journey.create_sequence('$b', '{
  "name": "One mail", "status": "active", "allow_manual_enroll": true,
  "rate_per_hour": 100000, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"subject": "Hi", "body": "Hello"}}]}')});
	return ($b, $s);
}

my ($a, $sa) = business_with_journey('hog', 300);
my ($b, $sb) = business_with_journey('small', 3);

# enroll($sequence, $business, $how_many, $at): the first $how_many
# customers without an active enrollment, enrolled (and so due) at $at.
sub enroll
{
	my ($s, $biz, $n, $at) = @_;
	$node->safe_psql('postgres', qq{
SELECT count(journey.enroll_customer('$s', c.id, '{}', '$at'))
  FROM (SELECT c.id FROM journey.customers c
         WHERE c.business_id = '$biz'
           AND NOT EXISTS (SELECT FROM journey.sequence_enrollments e
                            WHERE e.customer_id = c.id)
         ORDER BY c.email LIMIT $n) c});
}

sub due_count
{
	my ($biz) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM journey.sequence_enrollments
		  WHERE business_id = '$biz' AND status = 'active' AND next_run_at <= '$T'");
}

# ---- (a) a back-dated backlog does not starve another business ----
# 250 enrollments of the hog, due years ago (back-dated events do this);
# one of the small business, due an hour ago.
enroll($sa, $a, 250, '2020-01-01 00:00+00');
enroll($sb, $b, 1, '2027-01-12 09:00+00');
is($node->safe_psql('postgres', "SELECT journey.advance_due_enrollments(10, '$T')"),
	'10', 'a call with a batch of 10 handles 10');
is(due_count($b), '0', "the small business's enrollment was in it");
is(due_count($a), '241', 'and the hog had the rest of the batch');
is($node->safe_psql('postgres',
		"SELECT journey.advance_due_enrollments(100, '$T')"),
	'100', 'alone, one business gets the whole batch');
is($node->safe_psql('postgres',
		"SELECT journey.advance_due_enrollments(1000, '$T')"),
	'141', 'the rest in one call');
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE n <> 1) || '/' || count(*)
  FROM (SELECT enrollment_id, count(*) n FROM journey.messages GROUP BY 1) m}),
	'0/251', 'one message for every enrollment, none twice');

# ---- (b) row locks held by another transaction ----
# holding($sql): a session that ran $sql in an open transaction.
sub holding
{
	my ($sql) = @_;
	my $h = $node->background_psql('postgres');
	$h->query_safe("BEGIN; $sql");
	return $h;
}

# One call of the executor with a bounded wait: a lock wait becomes an error.
sub advance
{
	my ($limit) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', qq{
SET statement_timeout = '5s';
SET lock_timeout = '3s';
SELECT journey.advance_due_enrollments($limit, '$T')});
	return $rc == 0 ? $out : "failed: $err";
}

# The log rows of each enrollment: none twice.
sub logged_once
{
	return $node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE n <> 2) FROM (
  SELECT enrollment_id, count(*) n FROM journey.enrollment_log GROUP BY 1) l});
}

my @locks = (
	[ 'UPDATE of the sequence', "UPDATE journey.sequences SET name = 'held' WHERE id = '$sa'" ],
	[ 'sequence FOR UPDATE', "SELECT FROM journey.sequences WHERE id = '$sa' FOR UPDATE" ],
	[ 'customers FOR UPDATE', "SELECT FROM journey.customers WHERE business_id = '$a' FOR UPDATE" ],
	[ 'business FOR UPDATE', "SELECT FROM journey.businesses WHERE id = '$a' FOR UPDATE" ],
);
for my $lock (@locks)
{
	my ($what, $sql) = @$lock;
	enroll($sa, $a, 5, '2020-01-01 00:00+00');
	enroll($sb, $b, 1, '2027-01-12 09:00+00');
	my $holder = holding($sql);
	is(advance(100), '1', "$what: the call goes on without waiting, with the other business");
	is(due_count($b), '0', "$what: the other business's enrollment advanced");
	is(due_count($a), '5', "$what: the held business's enrollments stay due");
	is($node->safe_psql('postgres', qq{
SELECT count(*) FROM journey.enrollment_log l JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id
 WHERE e.business_id = '$a' AND e.status = 'active'}),
		'0', "$what: nothing of theirs was logged");
	$holder->query_safe('COMMIT');
	$holder->quit;
	is(advance(100), '5', "$what: after the commit they run");
	is(due_count($a), '0', "$what: all of them");
	is(logged_once(), '0', "$what: each enrollment logged once");
	# The next round enrolls other customers: free these.
	$node->safe_psql('postgres', 'DELETE FROM journey.sequence_enrollments');
}

# ---- (c) the executor inside the sender ----
my ($hport, $hlog) = start_sink('http_sink.py', 'fair');
my $sender = sender_node('fair_sender');
$node = $sender;
($a, $sa) = business_with_journey('hog', 20);
($b, $sb) = business_with_journey('small', 2);
add_provider($sender, channel => 'email', kind => 'webhook',
	endpoint => "http://127.0.0.1:$hport/ok");
my $holder = holding("UPDATE journey.sequences SET name = 'held' WHERE id = '$sa'");
enroll($sa, $a, 10, '2020-01-01 00:00+00');
enroll($sb, $b, 1, 'now');
ok(wait_for($sender, "SELECT string_agg(status, ',') FROM journey.messages WHERE business_id = '$b'",
		'sent', 60),
	"the sender's executor delivers the other business's message while the row is held");
is($sender->safe_psql('postgres',
		"SELECT count(*) FROM journey.sequence_enrollments WHERE business_id = '$a' AND status = 'active'"),
	'10', "the held business's enrollments wait");
$holder->query_safe('COMMIT');
$holder->quit;
ok(wait_for($sender, "SELECT count(*) FROM journey.messages WHERE business_id = '$a' AND status = 'sent'",
		'10', 60),
	'and run once it is released');
is($sender->safe_psql('postgres',
		"SELECT count(DISTINCT enrollment_id) || '/' || count(*) FROM journey.messages WHERE business_id = '$a'"),
	'10/10', 'each exactly once');

done_testing();
