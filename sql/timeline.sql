-- journey.timeline: every enrollment's story (how it began, each decision
-- of the executor, each message and its delivery state) in one view, the
-- answer to "why didn't she get the message?".
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

\set b1 '00000000-0000-0000-0000-0000000000b1'
INSERT INTO journey.businesses (id, name, timezone)
VALUES (:'b1', 'Pipe Dreams', 'America/New_York');
INSERT INTO journey.customers (id, business_id, full_name, email, phone, external_id) VALUES
  ('00000000-0000-0000-0000-0000000000c1', :'b1', 'Ada Lovelace', 'ada@example.com', '+15550001', 'QB-1'),
  ('00000000-0000-0000-0000-0000000000c2', :'b1', 'Bob Stone', NULL, NULL, 'QB-2'),
  ('00000000-0000-0000-0000-0000000000c3', :'b1', 'Cy Young', 'cy@example.com', NULL, 'QB-3');

SELECT journey.create_sequence(:'b1', '{"name": "Review request", "status": "active",
  "trigger_event_type": "invoice_paid", "exit_event_types": ["review_left"],
  "allow_manual_enroll": true, "quiet_hours": {"start": "21:00", "end": "08:00"},
  "rate_per_hour": null, "rate_per_day": null,
  "steps": [{"kind": "send_email", "message": {"purpose": "thank_you",
              "subject": "Thanks, {{customer.first_name}}!", "body": "Thank you."}},
            {"kind": "wait", "wait_ms": 86400000},
            {"kind": "send_email", "message": {"purpose": "review_request",
              "subject": "How did we do?", "body": "{{review_link}}"}}]}') AS seq \gset

-- Ada and Bob pay at 22:00 in New York (quiet hours); Cy is enrolled by hand.
SELECT journey.ingest_event(:'b1', 'invoice_paid', '{"external_id": "QB-1"}', '{}', 'inv-1',
                            '2027-01-13 03:00+00') IS NOT NULL AS ada_paid,
       journey.ingest_event(:'b1', 'invoice_paid', '{"external_id": "QB-2"}', '{}', 'inv-2',
                            '2027-01-13 03:00+00') IS NOT NULL AS bob_paid;
SELECT journey.enroll_customer(:'seq', '00000000-0000-0000-0000-0000000000c3', '{}',
                               '2027-01-13 13:00+00') IS NOT NULL AS cy_enrolled;
SELECT journey.advance_due_enrollments(100, '2027-01-13 03:00+00') AS at_night;
SELECT journey.advance_due_enrollments(100, '2027-01-13 13:00+00') AS in_the_morning;
-- The sender's outcomes, as it writes them: Ada's thank-you delivered,
-- Cy's failed for good.
UPDATE journey.messages SET status = 'sent', attempts = 1, sent_at = '2027-01-13 13:00:02+00',
       provider_message_id = 'prov-77'
 WHERE to_address = 'ada@example.com';
UPDATE journey.messages SET status = 'failed', attempts = 1,
       last_error = 'webhook answered HTTP 422: {"error": "mailbox unknown"}'
 WHERE to_address = 'cy@example.com';
-- Ada leaves a review the next day: her journey stops before the request.
SELECT journey.ingest_event(:'b1', 'review_left', '{"external_id": "QB-1"}', '{}', 'rev-1',
                            '2027-01-14 10:00+00') IS NOT NULL AS ada_reviewed;

-- Each story, in order.
SELECT c.full_name, t.at, t.step_index AS step, t.what, t.detail
  FROM journey.timeline t
  JOIN journey.customers c ON c.id = t.customer_id AND c.business_id = t.business_id
 ORDER BY c.full_name, t.at, t.phase, t.ref_id;

-- Every row names its enrollment, sequence, customer and business.
SELECT count(*) AS rows, count(DISTINCT enrollment_id) AS enrollments,
       bool_and(sequence_id = :'seq' AND business_id = :'b1' AND customer_id IS NOT NULL) AS keys_set
  FROM journey.timeline;
-- A message outside any journey (queued by hand) has no story to join.
INSERT INTO journey.messages (business_id, channel, to_address, body, send_after)
VALUES (:'b1', 'email', 'ops@example.com', 'hand-made', '2030-01-01');
SELECT count(*) AS rows_after_hand_made_message FROM journey.timeline;

-- Looked up by customer, every branch of the view reaches its rows through
-- an index (the enrollments by business and customer, then the log, the
-- outbox and the events by enrollment or id), never by reading a table.
CREATE FUNCTION pg_temp.explain_lines(q text) RETURNS SETOF text LANGUAGE plpgsql AS $f$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
        RETURN NEXT line;
    END LOOP;
END
$f$;
SET enable_seqscan = off;
SELECT count(*) FILTER (WHERE plan LIKE '%Seq Scan%') AS seq_scans,
       count(*) FILTER (WHERE plan LIKE '%sequence_enrollments_customer_idx%') AS enrollment_index_scans
  FROM (SELECT * FROM pg_temp.explain_lines($q$
          SELECT t.* FROM journey.timeline t
            JOIN journey.customers c ON c.id = t.customer_id AND c.business_id = t.business_id
           WHERE c.business_id = '00000000-0000-0000-0000-0000000000b1' AND c.external_id = 'QB-1'$q$)) p(plan);
RESET enable_seqscan;
