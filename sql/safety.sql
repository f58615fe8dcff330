-- Data safety (issue 11): what pg_dump keeps, how a loaded dump replays
-- nothing, the installation id, erasure (forget_customer and a plain
-- DELETE), retention (purge) and the outbox's health (queue_stats,
-- sender_status).  The dump and restore themselves run in TAP test 070.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
\i test/sql/helpers.sql

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_safety_member') THEN
        CREATE ROLE regress_safety_member;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_safety_outsider') THEN
        CREATE ROLE regress_safety_outsider;
    END IF;
END
$$;
GRANT journey_user TO regress_safety_member, regress_safety_outsider;

-- ===================================================================
-- pg_dump keeps every table and every identity sequence
-- ===================================================================
SELECT c.relname AS not_dumped
FROM pg_class c
WHERE c.relnamespace = 'journey'::regnamespace AND c.relkind IN ('r', 'p', 'S')
  AND c.oid NOT IN (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'journey')
ORDER BY 1;
SELECT count(*) AS dumped, bool_and(cond = '') AS every_row
FROM pg_extension x, unnest(x.extconfig, x.extcondition) AS t(rel, cond)
WHERE x.extname = 'journey';

-- The installation: one row, a new one replaces it, tenants never see it.
SELECT count(*) AS installations FROM journey.installation;
SELECT id AS first_installation FROM journey.installation \gset
INSERT INTO journey.installation (id) VALUES ('00000000-0000-0000-0000-00000000aaaa');
SELECT count(*) AS installations, bool_and(id = '00000000-0000-0000-0000-00000000aaaa') AS replaced
FROM journey.installation;
SET ROLE regress_safety_member;
SELECT pg_temp.try($$SELECT * FROM journey.installation$$);
SELECT pg_temp.try($$SELECT * FROM journey.sender_status()$$);
SELECT pg_temp.try($$SELECT journey.purge()$$);
RESET ROLE;

-- ===================================================================
-- Loading a dump replays nothing
-- ===================================================================
\set b1 '00000000-0000-0000-0000-0000000000b1'
\set b2 '00000000-0000-0000-0000-0000000000b2'
\set ada '00000000-0000-0000-0000-0000000000c1'
\set bob '00000000-0000-0000-0000-0000000000c2'
\set zed '00000000-0000-0000-0000-0000000000c9'
INSERT INTO journey.businesses (id, name) VALUES (:'b1', 'Pipe Dreams'), (:'b2', 'Elsewhere');
INSERT INTO journey.business_members VALUES (:'b1', 'regress_safety_member');
INSERT INTO journey.customers (id, business_id, full_name, email, external_id) VALUES
  (:'ada', :'b1', 'Ada Lovelace', 'ada@example.com', 'QB-1'),
  (:'bob', :'b1', 'Bob Stone', 'bob@example.com', 'QB-2'),
  (:'zed', :'b2', 'Zed Other', 'zed@example.com', 'QB-9');
SELECT journey.create_sequence(:'b1', '{"name": "Thanks", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"], "reentry": "never",
  "allow_manual_enroll": true,
  "steps": [{"kind": "send_email", "message": {"purpose": "thank_you",
              "subject": "Thanks", "body": "Thank you, {{customer.first_name}}."}},
            {"kind": "wait", "wait_ms": 86400000}]}') AS seq \gset

-- pg_dump, pg_dumpall and pg_restore load with row_security off: such rows
-- enroll and stop no one (the dump holds their effects already).
SET row_security = off;
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
VALUES (:'b1', 'invoice_paid', :'ada', '2027-01-01 10:00+00');
RESET row_security;
SELECT count(*) AS enrolled_by_a_loaded_event FROM journey.sequence_enrollments;
-- Any other session's event enrolls as always.
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
VALUES (:'b1', 'invoice_paid', :'ada', '2027-01-01 10:00+00');
SELECT count(*) AS enrolled_by_a_new_event FROM journey.sequence_enrollments;

-- ===================================================================
-- forget_customer
-- ===================================================================
-- Ada: an enrollment with its log and a sent message, an event with an
-- idempotency key and one without, a message outside any enrollment, a
-- suppression.  Bob: the same journey, untouched by her erasure.
SELECT journey.ingest_event(:'b1', 'invoice_paid', '{"id": "00000000-0000-0000-0000-0000000000c1"}',
                            '{"invoice": "INV-1", "card": "4242"}', 'qb-evt-1', '2027-01-02 10:00+00') AS ada_keyed_event \gset
SELECT journey.ingest_event(:'b1', 'invoice_paid', '{"id": "00000000-0000-0000-0000-0000000000c2"}',
                            '{}', 'qb-evt-2', '2027-01-02 10:00+00') IS NOT NULL AS bob_event;
SELECT journey.advance_due_enrollments(100, '2027-01-02 10:00+00') AS advanced;
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, subject, body)
VALUES (:'b1', :'ada', 'email', 'ada@example.com', 'Ad hoc', 'Hello Ada');
INSERT INTO journey.suppressions (business_id, channel, address, reason)
VALUES (:'b1', 'email', 'ada@example.com', 'unsubscribe');
SELECT (SELECT count(*) FROM journey.events WHERE customer_id = :'ada') AS ada_events,
       (SELECT count(*) FROM journey.sequence_enrollments WHERE customer_id = :'ada') AS ada_enrollments,
       (SELECT count(*) FROM journey.messages WHERE customer_id = :'ada') AS ada_messages,
       (SELECT count(*) FROM journey.timeline WHERE customer_id = :'ada') AS ada_timeline;

-- Bad calls write nothing: not a member, another business's customer (the
-- answer of a missing one), a missing one, nulls.
SET ROLE regress_safety_outsider;
SELECT pg_temp.try($$SELECT journey.forget_customer('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000c1')$$);
SET ROLE regress_safety_member;
SELECT pg_temp.try($$SELECT journey.forget_customer('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000c9')$$);
SELECT pg_temp.try($$SELECT journey.forget_customer('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000ff')$$);
SELECT pg_temp.try($$SELECT journey.forget_customer('00000000-0000-0000-0000-0000000000b2', '00000000-0000-0000-0000-0000000000c9')$$);
SELECT pg_temp.try($$SELECT journey.forget_customer(NULL, '00000000-0000-0000-0000-0000000000c1')$$);
RESET ROLE;
SELECT (SELECT count(*) FROM journey.customers) AS customers, (SELECT count(*) FROM journey.events) AS events,
       (SELECT count(*) FROM journey.messages) AS messages, (SELECT count(*) FROM journey.enrollment_log) AS log_rows;

-- Her erasure, by a member: every row with her data goes.
SET ROLE regress_safety_member;
SELECT journey.forget_customer(:'b1', :'ada') AS removed;
RESET ROLE;
SELECT (SELECT count(*) FROM journey.customers WHERE id = :'ada') AS ada,
       (SELECT count(*) FROM journey.events WHERE customer_id = :'ada') AS ada_events,
       (SELECT count(*) FROM journey.sequence_enrollments WHERE customer_id = :'ada') AS ada_enrollments,
       (SELECT count(*) FROM journey.messages WHERE customer_id = :'ada' OR to_address = 'ada@example.com') AS ada_messages,
       (SELECT count(*) FROM journey.timeline WHERE customer_id = :'ada') AS ada_timeline,
       (SELECT count(*) FROM journey.messages m JOIN journey.sequence_enrollments e ON e.id = m.enrollment_id
         WHERE e.customer_id = :'bob') AS bobs_messages_kept;
-- What keeps her safe stays: the suppression, the key without any data.
SELECT channel, address, reason FROM journey.suppressions;
SELECT idempotency_key, customer_id IS NULL AS no_customer, payload
FROM journey.events WHERE id = :ada_keyed_event;
-- A replayed webhook neither re-creates nor re-enrolls her.
SELECT journey.ingest_event(:'b1', 'invoice_paid', '{"external_id": "QB-1", "full_name": "Ada Lovelace", "email": "ada@example.com"}',
                            '{"invoice": "INV-1"}', 'qb-evt-1', '2027-01-02 10:00+00') = :ada_keyed_event AS same_event;
SELECT count(*) AS ada_recreated FROM journey.customers WHERE external_id = 'QB-1';
SELECT pg_temp.try($$SELECT journey.forget_customer('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000c1')$$) AS forgotten_twice;

-- A plain DELETE leaves no message that could still be sent, in an
-- enrollment or not.
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, subject, body)
VALUES (:'b1', :'bob', 'email', 'bob@example.com', 'Ad hoc', 'Hello Bob');
DELETE FROM journey.customers WHERE id = :'bob';
SELECT count(*) AS bobs_messages_left FROM journey.messages WHERE to_address = 'bob@example.com';

-- ===================================================================
-- purge
-- ===================================================================
-- Carol finished long ago (log, a sent message, events); Dan is active
-- in a reentry=never journey, enrolled long ago: his rows stay.
\set carol '00000000-0000-0000-0000-0000000000c3'
\set dan '00000000-0000-0000-0000-0000000000c4'
INSERT INTO journey.customers (id, business_id, full_name, email) VALUES
  (:'carol', :'b1', 'Carol Ray', 'carol@example.com'), (:'dan', :'b1', 'Dan Fry', 'dan@example.com');
SELECT journey.ingest_event(:'b1', 'invoice_paid', '{"id": "00000000-0000-0000-0000-0000000000c3"}',
                            '{}', 'old-1', '2026-01-01 10:00+00') IS NOT NULL AS carol_paid;
SELECT journey.advance_due_enrollments(100, '2026-01-01 10:00+00') AS advanced;
SELECT journey.advance_due_enrollments(100, '2026-01-02 10:00+00') AS advanced;
UPDATE journey.messages SET status = 'sent', sent_at = '2026-01-01 10:00:05+00' WHERE to_address = 'carol@example.com';
SELECT journey.create_sequence(:'b1', '{"name": "Long wait", "status": "active",
  "trigger_event_type": "signed_up", "reentry": "never",
  "steps": [{"kind": "wait", "wait_ms": 31536000000},
            {"kind": "send_email", "message": {"subject": "A year on", "body": "Hi"}}]}') AS long_seq \gset
SELECT journey.ingest_event(:'b1', 'signed_up', '{"id": "00000000-0000-0000-0000-0000000000c4"}',
                            '{}', 'old-2', '2026-01-01 10:00+00') IS NOT NULL AS dan_signed_up;
SELECT journey.ingest_event(:'b1', 'visited', '{"id": "00000000-0000-0000-0000-0000000000c4"}',
                            '{}', NULL, '2026-02-01 10:00+00') IS NOT NULL AS dan_visited;
SELECT e.customer_id = :'carol' AS carol, e.status,
       (SELECT count(*) FROM journey.enrollment_log l WHERE l.enrollment_id = e.id) AS log_rows,
       (SELECT count(*) FROM journey.events v WHERE v.customer_id = e.customer_id) AS events
FROM journey.sequence_enrollments e WHERE e.customer_id IN (:'carol', :'dan') ORDER BY 1 DESC;

-- Bad input writes nothing.
SELECT pg_temp.try($$SELECT journey.purge('1 hour', '2027-06-01 00:00+00')$$);
SELECT pg_temp.try($$SELECT journey.purge(NULL)$$);
SET ROLE regress_safety_member;
SELECT pg_temp.try($$SELECT journey.purge('180 days', '2027-06-01 00:00+00')$$);
RESET ROLE;
-- Nothing is old enough yet.
SELECT journey.purge('180 days', '2026-03-01 00:00+00') AS purged_early;
-- Carol's log, sent message and events go; Dan's do not; suppressions stay.
SELECT journey.purge('180 days', '2027-06-01 00:00+00') AS purged;
SELECT e.customer_id = :'carol' AS carol, e.status,
       (SELECT count(*) FROM journey.enrollment_log l WHERE l.enrollment_id = e.id) AS log_rows,
       (SELECT count(*) FROM journey.messages m WHERE m.enrollment_id = e.id) AS messages,
       (SELECT count(*) FROM journey.events v WHERE v.customer_id = e.customer_id) AS events
FROM journey.sequence_enrollments e WHERE e.customer_id IN (:'carol', :'dan') ORDER BY 1 DESC;
SELECT count(*) AS suppressions FROM journey.suppressions;
-- reentry = never still refuses Carol.
SELECT journey.ingest_event(:'b1', 'invoice_paid', '{"id": "00000000-0000-0000-0000-0000000000c3"}',
                            '{}', 'new-1', '2027-06-01 10:00+00') IS NOT NULL AS carol_paid_again;
SELECT count(*) AS carol_enrollments FROM journey.sequence_enrollments WHERE customer_id = :'carol';
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, %L, '{}', '2027-06-01 10:00+00')$$, :'seq', :'carol'));
-- A second run finds nothing more.
SELECT journey.purge('180 days', '2027-06-01 00:00+00') AS purged_again;

-- ===================================================================
-- queue_stats
-- ===================================================================
TRUNCATE journey.messages CASCADE;
INSERT INTO journey.messages (business_id, channel, to_address, body, status, send_after, sent_at) VALUES
  (:'b1', 'email', 'a@example.com', 'x', 'queued', now() - interval '10 minutes', NULL),
  (:'b1', 'email', 'b@example.com', 'x', 'queued', now() - interval '5 minutes', NULL),
  (:'b1', 'email', 'c@example.com', 'x', 'queued', now() + interval '1 day', NULL),
  (:'b1', 'email', 'd@example.com', 'x', 'sent', now() - interval '20 minutes', now() - interval '19 minutes'),
  (:'b1', 'email', 'e@example.com', 'x', 'sent', now() - interval '3 hours', now() - interval '3 hours'),
  (:'b1', 'email', 'f@example.com', 'x', 'failed', now() - interval '30 minutes', NULL),
  (:'b1', 'sms', '+15550001', 'x', 'sending', now() - interval '1 minute', NULL),
  (:'b2', 'email', 'z@example.com', 'x', 'queued', now() - interval '1 minute', NULL);
SELECT business_id = :'b1' AS b1, channel, queued, due, sending,
       oldest_due BETWEEN now() - interval '11 minutes' AND now() - interval '9 minutes' AS oldest_due_ok,
       sent_last_hour, failed_last_hour
FROM journey.queue_stats ORDER BY 1 DESC, 2;
-- A tenant sees its own businesses only.
SET ROLE regress_safety_member;
SELECT count(*) AS rows_seen, bool_and(business_id = :'b1') AS own_only FROM journey.queue_stats;
RESET ROLE;

DROP ROLE regress_safety_member, regress_safety_outsider;
