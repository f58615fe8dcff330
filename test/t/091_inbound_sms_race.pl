# Twilio delivers the same inbound SMS (one MessageSid) twice at once on two
# connections: the second waits for the first, then answers with the first
# one's confirmation; the number is suppressed once, one sms_opt_out event.
# And STOP, delivered while a queued SMS to the number waits, cancels it in
# the same transaction: a rollback leaves both as they were.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('inbound_race');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'journey'\njourney.database_name = 'postgres'\n");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION journey;
INSERT INTO journey.businesses (id, name) VALUES ('00000000-0000-0000-0000-0000000000b1', 'Pipe Dreams');
-- The queued SMS is due tomorrow, so the sender leaves it alone.
INSERT INTO journey.providers (business_id, channel, kind, endpoint, from_address)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'sms', 'webhook', 'http://127.0.0.1:9/', '+15550009001');
INSERT INTO journey.customers (business_id, full_name, phone)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'Ada', '+15550100001');
INSERT INTO journey.messages (business_id, channel, to_address, body, send_after)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'sms', '+15550100001', 'later', now() + interval '1 day');
});

my $call = q{SELECT journey.ingest_inbound_sms('+15550009001', '+15550100001', 'STOP', 'SMrace', '2027-01-12 15:00+00')};

# A rollback: nothing of it stays.
$node->safe_psql('postgres', "BEGIN; $call; ROLLBACK;");
is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM journey.suppressions) || ',' || (SELECT count(*) FROM journey.events)
  || ',' || (SELECT status FROM journey.messages) || ',' || (SELECT count(*) FROM journey.inbound_sms)}),
	'0,0,queued,0', 'a rolled-back STOP leaves no suppression, event, cancellation or record');

my $first = $node->background_psql('postgres');
my $reply1 = $first->query_safe("BEGIN; $call;");
chomp $reply1;
my $second = $node->background_psql('postgres', on_error_stop => 0);
$second->query_until(qr/started/, "\\echo started\n$call;\n\\echo done\n");
ok($node->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'}),
	'the second delivery waits for the first');
$first->query_safe('COMMIT');
$first->quit;
my $out = $second->query_until(qr/done/, '');
$second->{stderr} = '' unless defined $second->{stderr};
my $err = $second->{stderr};
$second->quit;

like($reply1, qr/^You are unsubscribed from Pipe Dreams/, 'the first delivery gets the confirmation');
like($out, qr/^\Q$reply1\E$/m, 'the second delivery gets the same text');
unlike($err // '', qr/ERROR/, 'no error reached the second caller');
is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM journey.suppressions) || ',' || (SELECT count(*) FROM journey.events)
  || ',' || (SELECT status FROM journey.messages)}),
	'1,1,cancelled', 'one suppression, one event, the queued SMS cancelled');

$node->stop;
done_testing();
