-- Opt-outs and delivery feedback (SPEC section 9), frequency caps and the
-- SMS window (section 4), the roles journey_public and journey_webhook
-- (section 6).  Every time is explicit; outputs are booleans, counts and
-- texts that do not depend on the clock or the installation's secret.
DROP EXTENSION IF EXISTS journey CASCADE;
CREATE EXTENSION journey;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
\i test/sql/helpers.sql
-- try() with the error's detail too
CREATE FUNCTION pg_temp.tryd(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || SQLERRM || coalesce(E'\n  detail: ' || nullif(detail, ''), '');
END
$$;

\set b1 '00000000-0000-0000-0000-0000000000b1'
\set b2 '00000000-0000-0000-0000-0000000000b2'
\set b3 '00000000-0000-0000-0000-0000000000b3'
INSERT INTO journey.businesses (id, name, timezone, phone, email) VALUES
  (:'b1', 'Pipe Dreams', 'America/New_York', '+1 555 000 1000', NULL),
  (:'b2', 'Roof Rangers', 'America/Chicago', NULL, 'help@roof.example'),
  (:'b3', 'Yard Yodel', 'UTC', NULL, NULL);
-- b1 and b2 text from their own numbers; b3 uses the platform's default.
INSERT INTO journey.providers (business_id, channel, kind, endpoint, from_address) VALUES
  (:'b1', 'sms', 'webhook', 'http://127.0.0.1:9/b1', '+15550009001'),
  (:'b2', 'sms', 'webhook', 'http://127.0.0.1:9/b2', '+1 (555) 000-9002'),
  (NULL, 'sms', 'webhook', 'http://127.0.0.1:9/default', '+15550009999');
INSERT INTO journey.customers (id, business_id, full_name, email, phone) VALUES
  ('00000000-0000-0000-0000-0000000000c1', :'b1', 'Ada Lovelace', 'ada@example.com', '+1 (555) 010-0001'),
  ('00000000-0000-0000-0000-0000000000c2', :'b2', 'Ada L.', 'ada@example.com', '+15550100001'),
  ('00000000-0000-0000-0000-0000000000c3', :'b3', 'Bob Stone', 'bob@example.com', '+15550100002');
-- A queued SMS to Ada in b1 (written as stored) and an email.
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, body, send_after) VALUES
  (:'b1', '00000000-0000-0000-0000-0000000000c1', 'sms', '+1 (555) 010-0001', 'hi', '2027-01-12 15:00+00'),
  (:'b1', '00000000-0000-0000-0000-0000000000c1', 'email', 'ada@example.com', 'hi', '2027-01-12 15:00+00');

CREATE FUNCTION pg_temp.state() RETURNS TABLE (suppressions bigint, events bigint, cancelled bigint,
                                               inbound bigint)
LANGUAGE sql AS $$
  SELECT (SELECT count(*) FROM journey.suppressions), (SELECT count(*) FROM journey.events),
         (SELECT count(*) FROM journey.messages WHERE status = 'cancelled'),
         (SELECT count(*) FROM journey.inbound_sms)
$$;

-- ---------------------------------------------------------------
-- Inbound SMS: keywords
-- ---------------------------------------------------------------
-- STOP to b1's number, in another format: suppressed there only.
SELECT journey.ingest_inbound_sms('+1 555-000-9001', '+15550100001', '  Stop.', 'SM1',
                                  '2027-01-12 14:00+00') AS reply;
SELECT business_id = :'b1' AS b1, channel, address, reason FROM journey.suppressions ORDER BY address;
SELECT channel, status, last_error FROM journey.messages ORDER BY id;
SELECT business_id = :'b1' AS b1, event_type, payload FROM journey.events ORDER BY id;
-- The same provider message again: the same answer, nothing new.
SELECT journey.ingest_inbound_sms('+1 555-000-9001', '+15550100001', 'STOP', 'SM1',
                                  '2027-01-12 14:05+00') AS repeated;
SELECT * FROM pg_temp.state();
-- Synonyms, case and punctuation; "opt out" in two words.
SELECT journey.ingest_inbound_sms('+15550009002', '+15550100001', w, 'SM-' || w,
                                  '2027-01-12 14:10+00') AS reply
  FROM unnest(ARRAY['opt out please', 'UNSUBSCRIBE!', 'quit']) w;
SELECT business_id = :'b2' AS b2, address, reason FROM journey.suppressions
 WHERE business_id = :'b2' ORDER BY address;
-- HELP names the business and its contact; nothing changes.
SELECT journey.ingest_inbound_sms('+15550009001', '+15550100001', 'help', 'SM2',
                                  '2027-01-12 14:20+00') AS help_b1,
       journey.ingest_inbound_sms('+15550009002', '+15550100001', 'INFO?', 'SM3',
                                  '2027-01-12 14:20+00') AS help_b2;
-- START lifts sms_stop only: a bounce stays.
INSERT INTO journey.suppressions (business_id, channel, address, reason)
VALUES (:'b1', 'sms', '+1-555-010-0001', 'undeliverable');
SELECT journey.ingest_inbound_sms('+15550009001', '+1 555 010 0001', 'Start', 'SM4',
                                  '2027-01-12 14:30+00') AS reply;
SELECT address, reason FROM journey.suppressions WHERE business_id = :'b1' ORDER BY address;
-- Anything else: an sms_received event with body, from and to; no answer.
SELECT journey.ingest_inbound_sms('+15550009001', '+15550100001', E'Thanks! \x01 See you', 'SM5',
                                  '2027-01-12 14:40+00') IS NULL AS no_reply;
SELECT event_type, payload, occurred_at FROM journey.events ORDER BY id DESC LIMIT 1;
-- The default provider's number: every business without a number of its
-- own (b3); the confirmation names the one where the number is a customer.
SELECT journey.ingest_inbound_sms('+15550009999', '+15550100002', 'stop', 'SM6',
                                  '2027-01-12 14:50+00') AS reply;
SELECT business_id = :'b3' AS b3, address, reason FROM journey.suppressions
 WHERE address = '+15550100002';
-- A stranger: all concerned businesses named; a number nobody texts from: null.
SELECT journey.ingest_inbound_sms('+15550009001', '+15559999999', 'END', NULL,
                                  '2027-01-12 15:00+00') AS stranger,
       journey.ingest_inbound_sms('+15550001234', '+15550100001', 'STOP', NULL,
                                  '2027-01-12 15:00+00') AS unknown_number;

-- Bad input: a clear error, nothing written.
SELECT * FROM pg_temp.state();
SELECT pg_temp.try($$SELECT journey.ingest_inbound_sms('+1555000900l', '+15550100001', 'STOP', 'SMx')$$);
SELECT pg_temp.try($$SELECT journey.ingest_inbound_sms('+15550009001', E'+1555\n0100001', 'STOP', 'SMx')$$);
SELECT pg_temp.tryd($$SELECT journey.ingest_inbound_sms('+15550009001', '1+555', 'STOP', 'SMx')$$);
SELECT pg_temp.try($$SELECT journey.ingest_inbound_sms(NULL, '+15550100001', 'STOP', 'SMx')$$);
SELECT pg_temp.try($$SELECT journey.ingest_inbound_sms('+15550009001', '+15550100001', repeat('x', 70000), 'SMx')$$);
SELECT pg_temp.try($$SELECT journey.ingest_inbound_sms('+15550009001', '+15550100001', 'STOP', '')$$);
SELECT * FROM pg_temp.state();

-- ---------------------------------------------------------------
-- Unsubscribe tokens
-- ---------------------------------------------------------------
-- No URL set: no link.
SELECT journey.unsubscribe_link(:'b1', 'email', 'ada@example.com') IS NULL AS no_link_without_url;
SELECT pg_temp.try($$SET journey.unsubscribe_url = 'javascript:alert(1)'$$);
SELECT pg_temp.try($$SET journey.unsubscribe_url = 'https://x.example/u nsub'$$);
SET journey.unsubscribe_url = 'https://api.example.com/unsubscribe';
SELECT journey.unsubscribe_link(:'b1', 'email', 'ada@example.com') AS link \gset
SELECT :'link' ~ '^https://api\.example\.com/unsubscribe\?token=[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$' AS url_safe,
       journey.unsubscribe_link(:'b1', 'email', 'ada@example.com') = :'link' AS stable,
       journey.unsubscribe_link(:'b2', 'email', 'ada@example.com') <> :'link' AS per_business;
SELECT substring(:'link' from 'token=(.*)$') AS token \gset
SELECT * FROM pg_temp.state() \gset before_
-- Forged, tampered, truncated: 22023, nothing written.
SELECT pg_temp.try(format('SELECT journey.unsubscribe(%L)', t)) AS refused
  FROM unnest(ARRAY[
    '',
    'garbage',
    'a.b',
    left(:'token', length(:'token') - 1),
    left(:'token', 30),
    -- the address part changed, the signature kept
    overlay(:'token' placing CASE substr(:'token', 25, 1) WHEN 'A' THEN 'B' ELSE 'A' END from 25 for 1),
    -- the signature's first character changed
    split_part(:'token', '.', 1) || '.' ||
      overlay(split_part(:'token', '.', 2) placing
              CASE left(split_part(:'token', '.', 2), 1) WHEN 'A' THEN 'B' ELSE 'A' END from 1 for 1),
    -- the signature's last character changed (also where it changes only
    -- the unused low bits: only the canonical spelling is accepted)
    left(:'token', length(:'token') - 1) ||
      CASE right(:'token', 1) WHEN 'A' THEN 'B' ELSE 'A' END,
    :'token' || '.x',
    repeat('A', 5000) || '.' || split_part(:'token', '.', 2),
    E'\x01\x02.' || split_part(:'token', '.', 2)]) t;
SELECT (SELECT count(*) FROM journey.suppressions) = :before_suppressions AS nothing_written;
-- The real one: suppressed, queued email cancelled, event recorded; a
-- repeat is true and adds nothing.
UPDATE journey.messages SET status = 'queued', last_error = NULL WHERE channel = 'email';
SELECT journey.unsubscribe(:'token') AS first, journey.unsubscribe(:'token') AS repeat;
SELECT business_id = :'b1' AS b1, channel, address, reason FROM journey.suppressions
 WHERE reason = 'unsubscribe';
SELECT channel, status, last_error FROM journey.messages WHERE channel = 'email';
SELECT count(*) AS unsubscribed_events FROM journey.events WHERE event_type = 'unsubscribed';
-- b2's Ada is untouched
SELECT count(*) AS b2_email_suppressions FROM journey.suppressions
 WHERE business_id = :'b2' AND channel = 'email';
-- A token signed under another secret (a reinstall) no longer verifies.
UPDATE journey.unsubscribe_secret SET secret = journey.new_unsubscribe_secret();
SELECT pg_temp.try(format('SELECT journey.unsubscribe(%L)', :'token')) AS other_secret;
RESET journey.unsubscribe_url;

-- ---------------------------------------------------------------
-- {{unsubscribe_url}} in templates, frequency caps, the SMS window
-- ---------------------------------------------------------------
DELETE FROM journey.suppressions;
SELECT journey.create_sequence(:'b1', '{"name": "Unsub", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "send_email", "message": {"purpose": "news", "subject": "News",
             "body": "Bye: {{unsubscribe_url}}"}}]}') AS unsub \gset
SELECT pg_temp.try($$SELECT journey.create_sequence('00000000-0000-0000-0000-0000000000b1',
  '{"name": "Bad", "steps": [{"kind": "send_sms", "message": {"body": "{{unsubscribe_url.x}}"}}]}')$$);
SELECT journey.enroll_customer(:'unsub', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-01-12 15:00+00') IS NOT NULL;
-- setting empty: a missing value
SELECT journey.advance_due_enrollments(10, '2027-01-12 15:00+00');
SELECT outcome, detail FROM journey.enrollment_log ORDER BY id DESC LIMIT 2;
SET journey.unsubscribe_url = 'https://api.example.com/u?src=mail';
SELECT journey.enroll_customer(:'unsub', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-01-12 16:00+00') IS NOT NULL;
SELECT journey.advance_due_enrollments(10, '2027-01-12 16:00+00');
SELECT body ~ '^Bye: https://api\.example\.com/u\?src=mail&token=[A-Za-z0-9_.-]+$' AS rendered,
       journey.unsubscribe(substring(body from 'token=(.*)$')) AS works
  FROM journey.messages WHERE sequence_id = :'unsub';
RESET journey.unsubscribe_url;
DELETE FROM journey.suppressions;

-- Frequency caps: refused when invalid (22023 from the API, 23514 direct).
SELECT pg_temp.tryd(format('SELECT journey.set_frequency_caps(%L, %L)', :'b1', c))
  FROM unnest(ARRAY['[]', '{"review_request": "soon"}', '{"review_request": "-1 day"}',
                    '{"review_request": "0"}', '{"review_request": 30}', '{"": "1 day"}',
                    '{"review_request": {"days": 30}}']) c;
SELECT pg_temp.try($$UPDATE journey.businesses SET frequency_caps = '{"x": "nope"}'$$);
SELECT pg_temp.try($$SELECT journey.set_frequency_caps('00000000-0000-0000-0000-00000000dead', '{}')$$);
SELECT journey.set_frequency_caps(:'b1', '{"review_request": "30 days", "survey": "P1D"}');
SELECT frequency_caps FROM journey.businesses WHERE id = :'b1';

-- Two journeys ask Ada for a review: the second is skipped, naming the first.
SELECT journey.create_sequence(:'b1', '{"name": "Ask A", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "send_email", "message": {"purpose": "review_request", "subject": "A", "body": "A"}}]}') AS ask_a \gset
SELECT journey.create_sequence(:'b1', '{"name": "Ask B", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "send_email", "message": {"purpose": "review_request", "subject": "B", "body": "B"}},
            {"kind": "send_email", "message": {"purpose": "thanks", "subject": "T", "body": "T"}}]}') AS ask_b \gset
SELECT journey.enroll_customer(:'ask_a', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-02-01 15:00+00') IS NOT NULL;
SELECT journey.advance_due_enrollments(10, '2027-02-01 15:00+00');
SELECT id AS first_ask FROM journey.messages WHERE sequence_id = :'ask_a' \gset
SELECT journey.enroll_customer(:'ask_b', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-02-20 15:00+00') IS NOT NULL;
SELECT journey.advance_due_enrollments(10, '2027-02-20 15:00+00');
SELECT l.step_index, l.outcome, replace(l.detail, :'first_ask', '<first>') AS detail
  FROM journey.enrollment_log l JOIN journey.sequence_enrollments e ON e.id = l.enrollment_id
 WHERE e.sequence_id = :'ask_b' ORDER BY l.id;
-- Both journeys enrolled in one run: the one run sends once.
SELECT journey.enroll_customer(s, '00000000-0000-0000-0000-0000000000c1', '{}', '2027-06-01 15:00+00') IS NOT NULL
  FROM unnest(ARRAY[:'ask_a', :'ask_b']::uuid[]) s;
SELECT journey.advance_due_enrollments(10, '2027-06-01 15:00+00');
SELECT count(*) FILTER (WHERE outcome = 'queued' AND detail LIKE 'email%') AS queued_in_june,
       count(*) FILTER (WHERE outcome = 'skipped_frequency_cap') AS capped_in_june
  FROM journey.enrollment_log WHERE at = '2027-06-01 15:00+00' AND step_index = 1;
-- A cancelled earlier message does not count; after 30 days it is allowed.
UPDATE journey.messages SET status = 'cancelled' WHERE send_after = '2027-06-01 15:00+00';
SELECT journey.enroll_customer(:'ask_a', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-06-02 15:00+00') IS NOT NULL;
SELECT journey.advance_due_enrollments(10, '2027-06-02 15:00+00');
SELECT outcome FROM journey.enrollment_log ORDER BY id DESC LIMIT 2;

-- The SMS window: 08:00-21:00 in the recipient's zone, after quiet hours.
SELECT journey.create_sequence(:'b1', '{"name": "Text", "status": "active", "allow_manual_enroll": true,
  "quiet_hours": {"start": "22:00", "end": "07:00"},
  "steps": [{"kind": "send_sms", "message": {"body": "Hi"}}]}') AS text_seq \gset
CREATE FUNCTION pg_temp.text_at(p_at timestamptz) RETURNS TABLE (outcome text, detail text, at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    e uuid;
BEGIN
    DELETE FROM journey.sequence_enrollments WHERE sequence_id = current_setting('my.seq')::uuid;
    e := journey.enroll_customer(current_setting('my.seq')::uuid,
                                 '00000000-0000-0000-0000-0000000000c1', '{}', p_at);
    LOOP
        EXIT WHEN (SELECT status FROM journey.sequence_enrollments WHERE id = e) <> 'active';
        PERFORM journey.advance_due_enrollments(10,
            (SELECT next_run_at FROM journey.sequence_enrollments WHERE id = e));
    END LOOP;
    RETURN QUERY SELECT l.outcome, l.detail, l.at FROM journey.enrollment_log l
                  WHERE l.enrollment_id = e AND l.outcome <> 'finished' ORDER BY l.id;
END
$$;
SELECT set_config('my.seq', :'text_seq', false) IS NOT NULL;
-- 06:30 New York: after quiet hours (07:00), still before the window
SELECT * FROM pg_temp.text_at('2027-01-12 11:30+00');
-- 21:30 New York: quiet hours first (to 07:00), then the window (08:00)
SELECT * FROM pg_temp.text_at('2027-01-13 02:30+00');
-- DST: 07:30 EST on Saturday 13 March 2027 -> 08:00 EST; on Sunday the 14th,
-- 07:30 EDT -> 08:00 EDT (12:00 UTC, not 13:00)
SELECT * FROM pg_temp.text_at('2027-03-13 12:30+00');
SELECT * FROM pg_temp.text_at('2027-03-14 11:30+00');
-- '' turns it off; a bad value is refused
SET journey.sms_window = '';
SELECT * FROM pg_temp.text_at('2027-01-12 11:30+00');
RESET journey.sms_window;
SELECT pg_temp.try($$SET journey.sms_window = '8-21'$$);
SELECT pg_temp.try($$SET journey.sms_window = '08:00-08:00'$$);

-- ---------------------------------------------------------------
-- Delivery events
-- ---------------------------------------------------------------
DELETE FROM journey.suppressions;
DELETE FROM journey.messages;
INSERT INTO journey.messages (business_id, customer_id, channel, to_address, body, status,
                              provider_message_id, send_after, sent_at) VALUES
  (:'b1', '00000000-0000-0000-0000-0000000000c1', 'sms', '+1 (555) 010-0001', 'a', 'sent', 'SMa', '2027-01-12 15:00+00', '2027-01-12 15:00+00'),
  (:'b1', '00000000-0000-0000-0000-0000000000c1', 'email', 'ada@example.com', 'b', 'sent', 're_b', '2027-01-12 15:00+00', '2027-01-12 15:00+00'),
  (:'b2', '00000000-0000-0000-0000-0000000000c2', 'email', 'ada@example.com', 'c', 'sent', 're_c', '2027-01-12 15:00+00', '2027-01-12 15:00+00'),
  (:'b1', '00000000-0000-0000-0000-0000000000c1', 'sms', '+1 (555) 010-0001', 'queued one', 'queued', NULL, '2027-01-13 15:00+00', NULL),
  (:'b1', '00000000-0000-0000-0000-0000000000c1', 'email', 'ada@example.com', 'queued two', 'queued', NULL, '2027-01-13 15:00+00', NULL);
SELECT min(id) AS m1 FROM journey.messages \gset
-- Twilio: sent (no state yet), then delivered
SELECT journey.ingest_delivery_event('twilio', '{"MessageSid": "SMa", "MessageStatus": "sent"}',
                                     '2027-01-12 15:00:05+00') = :m1 AS matched;
SELECT journey.ingest_delivery_event('twilio', '{"MessageSid": "SMa", "MessageStatus": "delivered"}',
                                     '2027-01-12 15:00:09+00') = :m1 AS matched;
SELECT delivery_status, delivery_updated_at FROM journey.messages WHERE id = :m1;
-- a late undelivered 30003 suppresses the number (as stored and normalised)
-- and cancels the queued SMS; a repeat adds nothing
SELECT journey.ingest_delivery_event('twilio', '{"MessageSid": "SMa", "MessageStatus": "undelivered", "ErrorCode": "30003"}',
                                     '2027-01-12 15:01+00') = :m1 AS matched;
SELECT journey.ingest_delivery_event('twilio', '{"MessageSid": "SMa", "MessageStatus": "undelivered", "ErrorCode": 30003}',
                                     '2027-01-12 15:02+00') = :m1 AS repeated;
SELECT address, reason FROM journey.suppressions ORDER BY address;
SELECT body, status FROM journey.messages WHERE status = 'cancelled';
-- an older callback, arriving last, changes no status
SELECT journey.ingest_delivery_event('twilio', '{"MessageSid": "SMa", "MessageStatus": "delivered"}',
                                     '2027-01-12 15:00:30+00') = :m1 AS matched;
SELECT delivery_status, delivery_updated_at FROM journey.messages WHERE id = :m1;
-- a failed callback with 21610 (the recipient replied STOP to Twilio) -> sms_stop
INSERT INTO journey.messages (business_id, channel, to_address, body, status, provider_message_id)
VALUES (:'b2', 'sms', '+15550100001', 'z', 'sent', 'SMz');
SELECT journey.ingest_delivery_event('twilio', '{"MessageSid": "SMz", "MessageStatus": "failed", "ErrorCode": "21610"}',
                                     '2027-01-12 15:03+00') IS NOT NULL AS matched;
SELECT address, reason, delivery_status FROM journey.suppressions s
  JOIN journey.messages m ON m.provider_message_id = 'SMz'
 WHERE s.business_id = :'b2' AND s.channel = 'sms';
-- Resend: bounced suppresses, a later delivered moves the status back but
-- never lifts the suppression
SELECT journey.ingest_delivery_event('resend', '{"type": "email.bounced", "data": {"email_id": "re_b", "bounce": {"message": "550 no such user\u0007\n"}}}',
                                     '2027-01-12 15:10+00') = :m1 + 1 AS bounced;
SELECT journey.ingest_delivery_event('resend', '{"type": "email.delivered", "data": {"email_id": "re_b"}}',
                                     '2027-01-12 15:20+00') = :m1 + 1 AS delivered_late;
SELECT journey.ingest_delivery_event('resend', '{"type": "email.delivery_delayed", "data": {"email_id": "re_b"}}',
                                     '2027-01-12 15:21+00') = :m1 + 1 AS delayed_changes_nothing;
SELECT delivery_status FROM journey.messages WHERE id = :m1 + 1;
SELECT business_id = :'b1' AS b1, channel, address, reason FROM journey.suppressions WHERE channel = 'email';
SELECT body, status FROM journey.messages WHERE status = 'cancelled' ORDER BY id;
-- generic webhook: complained; naming another business: no match, nothing written
SELECT journey.ingest_delivery_event('webhook', format('{"id": %s, "status": "complained", "reason": "spam button"}', :m1 + 2)::jsonb,
                                     '2027-01-12 16:00+00') = :m1 + 2 AS complained;
SELECT journey.ingest_delivery_event('webhook', format('{"id": "%s", "status": "bounced", "business_id": "%s"}', :m1 + 1, :'b2')::jsonb,
                                     '2027-01-12 16:00+00') IS NULL AS other_business;
SELECT journey.ingest_delivery_event('resend', '{"type": "email.bounced", "data": {"email_id": "re_unknown"}}',
                                     '2027-01-12 16:00+00') IS NULL AS unknown_id;
SELECT business_id = :'b2' AS b2, address, reason FROM journey.suppressions WHERE business_id = :'b2';
SELECT count(*) AS deliveries FROM journey.message_deliveries;
-- Bad input: 22023, nothing written
SELECT pg_temp.try(format('SELECT journey.ingest_delivery_event(%L, %L)', k, p)) AS refused
  FROM (VALUES ('sendgrid', '{}'), ('twilio', '{"MessageStatus": "delivered"}'),
               ('twilio', '{"MessageSid": "SMa"}'), ('resend', '{"type": "email.bounced"}'),
               ('resend', '{"data": {"email_id": "re_b"}}'), ('webhook', '{"status": "delivered"}'),
               ('webhook', '{"id": "1; DROP", "status": "delivered"}'),
               ('webhook', '{"id": 1, "status": "opened"}'), ('twilio', '[1, 2]'),
               ('webhook', '{"id": -1, "status": "delivered"}')) v(k, p);
SELECT pg_temp.try($$SELECT journey.ingest_delivery_event(NULL, '{}')$$);
-- deeply nested and huge payloads: only the fields named are read
SELECT journey.ingest_delivery_event('twilio',
         jsonb_build_object('MessageSid', 'SMa', 'MessageStatus', 'sent',
                            'x', (repeat('[', 5000) || repeat(']', 5000))::jsonb,
                            'y', repeat('z', 1000000)),
         '2027-01-12 17:00+00') = :m1 AS nested_ok;
SELECT count(*) AS deliveries FROM journey.message_deliveries;

-- The timeline shows each delivery state.
DELETE FROM journey.suppressions;
SELECT journey.create_sequence(:'b1', '{"name": "TL", "status": "active", "allow_manual_enroll": true,
  "steps": [{"kind": "send_email", "message": {"purpose": "tl", "subject": "S", "body": "B"}}]}') AS tl \gset
SELECT journey.enroll_customer(:'tl', '00000000-0000-0000-0000-0000000000c1', '{}', '2027-01-12 15:00+00') IS NOT NULL;
SELECT journey.advance_due_enrollments(10, '2027-01-12 15:00+00');
UPDATE journey.messages SET status = 'sent', provider_message_id = 're_tl', sent_at = '2027-01-12 15:00:01+00'
 WHERE sequence_id = :'tl';
SELECT journey.ingest_delivery_event('resend', '{"type": "email.delivered", "data": {"email_id": "re_tl"}}',
                                     '2027-01-12 15:00:05+00') IS NOT NULL,
       journey.ingest_delivery_event('resend', '{"type": "email.complained", "data": {"email_id": "re_tl"}}',
                                     '2027-01-12 18:00+00') IS NOT NULL;
SELECT at, what, detail FROM journey.timeline WHERE sequence_id = :'tl' ORDER BY at, phase, ref_id;

-- ---------------------------------------------------------------
-- Roles: who may call what
-- ---------------------------------------------------------------
SELECT r.rolname, f.fn, has_function_privilege(r.rolname, f.fn, 'EXECUTE') AS may
  FROM (VALUES ('journey_public'), ('journey_webhook'), ('journey_user')) r(rolname),
       (VALUES ('journey.unsubscribe(text)'),
               ('journey.ingest_inbound_sms(text,text,text,text,timestamptz)'),
               ('journey.ingest_delivery_event(text,jsonb,timestamptz)')) f(fn)
 ORDER BY 1, 2;
-- journey_public and journey_webhook may execute nothing else, read no table
SELECT r.rolname, count(*) FILTER (WHERE has_function_privilege(r.rolname, p.oid, 'EXECUTE')) AS functions,
       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'journey'::regnamespace
           AND c.relkind IN ('r', 'v') AND has_table_privilege(r.rolname, c.oid, 'SELECT')) AS tables
  FROM (VALUES ('journey_public'), ('journey_webhook')) r(rolname), pg_proc p
 WHERE p.pronamespace = 'journey'::regnamespace GROUP BY 1 ORDER BY 1;
SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p
 WHERE p.pronamespace = 'journey'::regnamespace AND p.prosecdef ORDER BY 1;
-- An anonymous caller unsubscribes through RLS it is not a member of.
CREATE ROLE regress_anon NOLOGIN IN ROLE journey_public;
SET journey.unsubscribe_url = 'https://api.example.com/unsubscribe';
SELECT substring(journey.unsubscribe_link(:'b3', 'email', 'bob@example.com') from 'token=(.*)$') AS bob_token \gset
SET ROLE regress_anon;
SELECT journey.unsubscribe(:'bob_token') AS anon_unsubscribed;
SELECT pg_temp.try($$SELECT journey.ingest_inbound_sms('+15550009001', '+15550100001', 'STOP')$$);
SELECT pg_temp.try($$SELECT count(*) FROM journey.suppressions$$);
RESET ROLE;
SELECT reason FROM journey.suppressions WHERE address = 'bob@example.com';
DROP ROLE regress_anon;
