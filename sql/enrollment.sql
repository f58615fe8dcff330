-- Enrollment: enroll_customer, ingest_event (customer resolution and
-- idempotency), trigger matching on journey.events and stop_enrollment.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';

\i test/sql/helpers.sql

\set b1 '00000000-0000-0000-0000-0000000000b1'
\set b2 '00000000-0000-0000-0000-0000000000b2'
INSERT INTO journey.businesses (id, name, timezone) VALUES (:'b1', 'Pipe Dreams', 'America/New_York'),
                                                          (:'b2', 'Smile Dental', 'Europe/London');

SELECT journey.create_sequence(:'b1', '{"name": "Review request", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left", "unsubscribed"],
  "allow_manual_enroll": true,
  "steps": [{"kind": "wait", "wait_ms": 3600000},
            {"kind": "send_email", "message": {"subject": "Hi", "body": "Thanks"}}]}') AS seq \gset
SELECT journey.create_sequence(:'b1', '{"name": "Welcome once", "status": "active", "reentry": "never",
  "trigger_event_type": "invoice_paid", "allow_manual_enroll": true,
  "steps": [{"kind": "send_sms", "message": {"body": "Welcome"}}]}') AS once \gset
SELECT journey.create_sequence(:'b1', '{"name": "Draft", "status": "draft", "trigger_event_type": "invoice_paid",
  "allow_manual_enroll": true, "steps": [{"kind": "wait"}]}') AS draft \gset
SELECT journey.create_sequence(:'b1', '{"name": "Paused", "status": "paused", "allow_manual_enroll": true,
  "steps": [{"kind": "wait"}]}') AS paused \gset
SELECT journey.create_sequence(:'b1', '{"name": "Events only", "status": "active",
  "steps": [{"kind": "wait"}]}') AS eventsonly \gset
SELECT journey.create_sequence(:'b2', '{"name": "Other business", "status": "active",
  "trigger_event_type": "invoice_paid", "allow_manual_enroll": true, "steps": [{"kind": "wait"}]}') AS other \gset

-- ---------------------------------------------------------------
-- ingest_event: customers by external_id are created, then updated
-- ---------------------------------------------------------------
SELECT journey.ingest_event(:'b1', 'invoice_paid',
  '{"external_id": "QB-1", "full_name": "Ada Lovelace", "email": "ada@example.com", "timezone": "Europe/London", "attributes": {"plan": "gold"}}',
  '{"invoice": "INV-1", "amount": 120}', 'qb-evt-1', '2026-03-02 15:00+00') AS ev1 \gset
SELECT full_name, email, phone, timezone, attributes, created_by FROM journey.customers WHERE external_id = 'QB-1';
SELECT id AS ada FROM journey.customers WHERE external_id = 'QB-1' \gset

-- enrolled as of occurred_at in both active invoice_paid journeys, not in the draft
-- one nor in the other business's; the payload is kept under meta.event
SELECT s.name, e.status, e.current_step_index, e.next_run_at, e.enrolled_at, e.meta,
       e.trigger_event_id = :ev1 AS by_event
FROM journey.sequence_enrollments e JOIN journey.sequences s ON s.id = e.sequence_id ORDER BY s.name;

-- the same idempotency key returns the first event and changes nothing, not even the customer
SELECT journey.ingest_event(:'b1', 'invoice_paid', '{"external_id": "QB-1", "full_name": "Changed Name"}',
  '{}', 'qb-evt-1', '2026-03-05 00:00+00') = :ev1 AS same_event;
SELECT count(*) AS events, (SELECT full_name FROM journey.customers WHERE id = :'ada') AS name_unchanged
FROM journey.events;
-- the same key in another business is another event
SELECT journey.ingest_event(:'b2', 'visit', '{"external_id": "QB-1", "full_name": "Ada at the dentist"}',
  '{}', 'qb-evt-1', '2026-03-02 15:00+00') <> :ev1 AS other_business_other_event;

-- given fields update the customer (attributes merge), absent ones stay
SELECT journey.ingest_event(:'b1', 'note', '{"external_id": "QB-1", "phone": "+15550101", "attributes": {"visits": 3}}',
  '{}', NULL, '2026-03-02 16:00+00') IS NOT NULL AS ingested;
SELECT full_name, email, phone, timezone, attributes FROM journey.customers WHERE id = :'ada';
-- {"id": ...} names an existing customer
SELECT journey.ingest_event(:'b1', 'note', json_build_object('id', :'ada')::jsonb, '{}', NULL, '2026-03-02 17:00+00')
  IS NOT NULL AS by_id;
SELECT count(*) AS ada_events FROM journey.events WHERE customer_id = :'ada';

-- an already active enrollment is not duplicated by a second trigger event
SELECT journey.ingest_event(:'b1', 'invoice_paid', '{"external_id": "QB-1"}', '{"invoice": "INV-2"}', NULL, '2026-03-03 09:00+00')
  IS NOT NULL AS ingested;
SELECT count(*) AS active_enrollments FROM journey.sequence_enrollments WHERE customer_id = :'ada' AND status = 'active';

-- ---------------------------------------------------------------
-- exit events stop enrollments and cancel their queued messages
-- ---------------------------------------------------------------
SELECT id AS ada_review FROM journey.sequence_enrollments WHERE customer_id = :'ada' AND sequence_id = :'seq' \gset
INSERT INTO journey.messages (business_id, enrollment_id, sequence_id, step_index, customer_id, channel,
                              to_address, subject, body, send_after)
VALUES (:'b1', :'ada_review', :'seq', 2, :'ada', 'email', 'ada@example.com', 'Hi', 'Thanks', '2026-03-02 16:00+00');
SELECT journey.ingest_event(:'b1', 'review_left', '{"external_id": "QB-1"}', '{"stars": 5}', NULL, '2026-03-04 10:00+00')
  IS NOT NULL AS ingested;
SELECT s.name, e.status, e.stop_reason, e.finished_at, e.next_run_at
FROM journey.sequence_enrollments e JOIN journey.sequences s ON s.id = e.sequence_id
WHERE e.customer_id = :'ada' ORDER BY s.name;
SELECT status, last_error FROM journey.messages WHERE enrollment_id = :'ada_review';
SELECT outcome, step_index, detail, at FROM journey.enrollment_log WHERE enrollment_id = :'ada_review';

-- reentry after_exit: a new trigger event enrolls again; reentry never: not
SELECT journey.ingest_event(:'b1', 'invoice_paid', '{"external_id": "QB-1"}', '{"invoice": "INV-3"}', NULL, '2026-04-01 12:00+00')
  IS NOT NULL AS ingested;
SELECT s.name, e.status, e.enrolled_at
FROM journey.sequence_enrollments e JOIN journey.sequences s ON s.id = e.sequence_id
WHERE e.customer_id = :'ada' ORDER BY s.name, e.enrolled_at;

-- ---------------------------------------------------------------
-- plain INSERTs are matched the same way, set-based, many at once
-- ---------------------------------------------------------------
INSERT INTO journey.customers (business_id, full_name, email, external_id)
SELECT :'b1', 'Customer ' || g, 'c' || g || '@example.com', 'bulk-' || g FROM generate_series(1, 500) g;
INSERT INTO journey.events (business_id, event_type, customer_id, payload, occurred_at)
SELECT c.business_id, 'invoice_paid', c.id, jsonb_build_object('n', n), '2026-05-01 08:00+00'::timestamptz + n * interval '1 minute'
FROM journey.customers c, generate_series(1, 2) n WHERE c.external_id LIKE 'bulk-%';
-- two events per customer in one statement: one enrollment per journey, from the earliest event
SELECT s.name, count(*) AS enrollments, count(DISTINCT e.customer_id) AS customers,
       bool_and(e.meta -> 'event' ->> 'n' = '1') AS earliest_event,
       bool_and(e.enrolled_at = e.next_run_at - CASE WHEN s.name = 'Review request' THEN interval '1 hour' ELSE interval '0' END) AS delays_right
FROM journey.sequence_enrollments e JOIN journey.sequences s ON s.id = e.sequence_id
JOIN journey.customers c ON c.id = e.customer_id WHERE c.external_id LIKE 'bulk-%'
GROUP BY s.name ORDER BY s.name;
-- a statement with a trigger event and a later exit event for the same customer does not enroll
INSERT INTO journey.customers (business_id, full_name, external_id) VALUES (:'b1', 'Late Reviewer', 'late');
INSERT INTO journey.events (business_id, event_type, customer_id, occurred_at)
SELECT :'b1', t, id, at FROM journey.customers,
  (VALUES ('invoice_paid', '2026-06-01 10:00+00'::timestamptz), ('unsubscribed', '2026-06-01 10:05+00')) v(t, at)
WHERE external_id = 'late';
SELECT s.name, count(e.id) AS enrollments FROM journey.sequences s
LEFT JOIN journey.sequence_enrollments e ON e.sequence_id = s.id
  AND e.customer_id = (SELECT id FROM journey.customers WHERE external_id = 'late')
WHERE s.business_id = :'b1' GROUP BY s.name ORDER BY s.name;
-- events without a customer, or of other types, enroll no one
INSERT INTO journey.events (business_id, event_type) VALUES (:'b1', 'invoice_paid');
INSERT INTO journey.events (business_id, event_type, customer_id) VALUES (:'b1', 'job_done', :'ada');
SELECT count(*) AS enrollments_total FROM journey.sequence_enrollments;
-- an event naming another business's customer is refused by the foreign key
SELECT id AS dentist_ada FROM journey.customers WHERE business_id = :'b2' \gset
SELECT pg_temp.try(format($$INSERT INTO journey.events (business_id, event_type, customer_id) VALUES (%L, 'invoice_paid', %L)$$, :'b1', :'dentist_ada'));

-- ---------------------------------------------------------------
-- enroll_customer
-- ---------------------------------------------------------------
INSERT INTO journey.customers (id, business_id, full_name) VALUES ('00000000-0000-0000-0000-0000000000c1', :'b1', 'Grace Hopper');
\set grace '00000000-0000-0000-0000-0000000000c1'
SELECT journey.enroll_customer(:'seq', :'grace', '{"source": "front desk"}', '2026-07-01 09:00+00') AS g1 \gset
SELECT status, current_step_index, next_run_at, enrolled_at, meta, trigger_event_id IS NULL AS manual
FROM journey.sequence_enrollments WHERE id = :'g1';
-- idempotent: the active enrollment is returned, unchanged
SELECT journey.enroll_customer(:'seq', :'grace', '{"source": "again"}', '2026-07-02 09:00+00') = :'g1' AS same_enrollment;
SELECT meta, next_run_at FROM journey.sequence_enrollments WHERE id = :'g1';
-- a journey whose first step has no delay is due at once
SELECT journey.enroll_customer(:'once', :'grace', '{}', '2026-07-01 09:00+00') AS g2 \gset
SELECT next_run_at, current_step_index FROM journey.sequence_enrollments WHERE id = :'g2';

-- stop_enrollment: stops, cancels queued messages, logs; stopping again changes nothing
INSERT INTO journey.messages (business_id, enrollment_id, sequence_id, step_index, customer_id, channel, to_address, body)
VALUES (:'b1', :'g1', :'seq', 2, :'grace', 'email', 'grace@example.com', 'hello');
SELECT journey.stop_enrollment(:'g1', 'customer asked');
SELECT status, stop_reason, next_run_at IS NULL AS not_due, finished_at IS NOT NULL AS finished_at_set
FROM journey.sequence_enrollments WHERE id = :'g1';
SELECT status, last_error FROM journey.messages WHERE enrollment_id = :'g1';
SELECT journey.stop_enrollment(:'g1', 'twice');
SELECT outcome, detail FROM journey.enrollment_log WHERE enrollment_id = :'g1' ORDER BY id;
SELECT journey.stop_enrollment(:'g2', NULL);
SELECT stop_reason FROM journey.sequence_enrollments WHERE id = :'g2';
-- after_exit: a stopped customer may be enrolled again; never: refused
SELECT journey.enroll_customer(:'seq', :'grace', '{}', '2026-07-03 09:00+00') <> :'g1' AS new_enrollment;

SELECT count(*) AS enrollments_before FROM journey.sequence_enrollments \gset
SELECT count(*) AS log_before FROM journey.enrollment_log \gset
SELECT count(*) AS events_before FROM journey.events \gset
SELECT count(*) AS customers_before FROM journey.customers \gset

-- Bad inputs: each refused with its SQLSTATE, nothing written.
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, %L, '{}', '2026-07-03 09:00+00')$$, :'once', :'grace'));
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, %L, '{}', '2026-07-03 09:00+00')$$, :'draft', :'grace'));
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, %L, '{}', '2026-07-03 09:00+00')$$, :'paused', :'grace'));
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, %L, '{}', '2026-07-03 09:00+00')$$, :'eventsonly', :'grace'));
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, %L, '{}', '2026-07-03 09:00+00')$$, :'other', :'grace'));
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, %L, '{}', '2026-07-03 09:00+00')$$, '00000000-0000-0000-0000-00000000dead', :'grace'));
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, %L, '{}', '2026-07-03 09:00+00')$$, :'seq', '00000000-0000-0000-0000-00000000dead'));
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, NULL)$$, :'seq'));
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, %L, '[]')$$, :'seq', :'grace'));
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, %L, '{}', 'infinity')$$, :'seq', :'grace'));
SELECT pg_temp.try(format($$SELECT journey.enroll_customer(%L, %L, '{}', NULL)$$, :'seq', :'grace'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, '', '{"external_id": "x", "full_name": "X"}')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, NULL, '{"external_id": "x", "full_name": "X"}')$$, :'b1'));
SELECT pg_temp.try($$SELECT journey.ingest_event(NULL, 'invoice_paid', '{"external_id": "x", "full_name": "X"}')$$);
SELECT pg_temp.try($$SELECT journey.ingest_event('00000000-0000-0000-0000-00000000dead', 'invoice_paid', '{"external_id": "x", "full_name": "X"}')$$);
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '{"full_name": "No Id"}')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '{"external_id": "new-1"}')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '{"external_id": "new-1", "full_name": "N", "shoe_size": 9}')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '{"external_id": "new-1", "full_name": "N", "timezone": "Mars/Olympus"}')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '{"external_id": "new-1", "full_name": "N", "attributes": [1]}')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '{"external_id": "QB-1", "full_name": ""}')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '{"id": "not-a-uuid"}')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '{"id": "00000000-0000-0000-0000-00000000dead"}')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', %L)$$, :'b1', json_build_object('id', :'dentist_ada')));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '[]')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '{"external_id": "QB-1"}', '"x"')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '{"external_id": "QB-1"}', '{}', '')$$, :'b1'));
SELECT pg_temp.try(format($$SELECT journey.ingest_event(%L, 'invoice_paid', '{"external_id": "QB-1"}', '{}', NULL, '-infinity')$$, :'b1'));
SELECT pg_temp.try($$SELECT journey.stop_enrollment('00000000-0000-0000-0000-00000000dead', 'x')$$);
SELECT pg_temp.try($$SELECT journey.stop_enrollment(NULL, 'x')$$);
SELECT pg_temp.try(format($$SELECT journey.stop_enrollment(%L, '')$$, :'g1'));

SELECT (SELECT count(*) FROM journey.sequence_enrollments) = :enrollments_before AS no_enrollment_written,
       (SELECT count(*) FROM journey.enrollment_log) = :log_before AS no_log_written,
       (SELECT count(*) FROM journey.events) = :events_before AS no_event_written,
       (SELECT count(*) FROM journey.customers) = :customers_before AS no_customer_written;

-- ---------------------------------------------------------------
-- cascades: deleting a customer removes its enrollments, events, messages and log
-- ---------------------------------------------------------------
DELETE FROM journey.customers WHERE id = :'ada';
SELECT (SELECT count(*) FROM journey.sequence_enrollments WHERE customer_id = :'ada') AS enrollments,
       (SELECT count(*) FROM journey.events WHERE customer_id = :'ada') AS events,
       (SELECT count(*) FROM journey.messages WHERE customer_id = :'ada') AS messages,
       (SELECT count(*) FROM journey.enrollment_log WHERE enrollment_id = :'ada_review') AS log;
-- deleting a journey removes its enrollments; deleting a business removes everything
DELETE FROM journey.sequences WHERE id = :'once';
SELECT count(*) AS once_enrollments FROM journey.sequence_enrollments WHERE sequence_id = :'once';
DELETE FROM journey.businesses WHERE id = :'b1';
SELECT (SELECT count(*) FROM journey.customers WHERE business_id = :'b1') AS customers,
       (SELECT count(*) FROM journey.sequences WHERE business_id = :'b1') AS sequences,
       (SELECT count(*) FROM journey.sequence_enrollments WHERE business_id = :'b1') AS enrollments,
       (SELECT count(*) FROM journey.events WHERE business_id = :'b1') AS events,
       (SELECT count(*) FROM journey.messages WHERE business_id = :'b1') AS messages,
       (SELECT count(*) FROM journey.enrollment_log WHERE business_id = :'b1') AS log,
       (SELECT count(*) FROM journey.customers WHERE business_id = :'b2') AS other_business_customers;
