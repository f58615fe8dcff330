-- journey 0.2 -> 0.3: trustworthy journeys.  Each change below is also made
-- by journey--0.3.sql from scratch; sql/upgrade.sql checks that both paths
-- end with identical catalogs and that in-flight data goes on unchanged.

\echo Use "ALTER EXTENSION journey UPDATE TO '0.3'" to load this file. \quit

-- ===== isolation and hardening (issue 12): functions =====

CREATE FUNCTION journey.exit_event_types_are_valid(p_types text[])
RETURNS boolean
AS 'MODULE_PATHNAME', 'journey_exit_event_types_are_valid'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
REVOKE ALL ON FUNCTION journey.exit_event_types_are_valid(text[]) FROM PUBLIC;
-- A CHECK constraint's function needs EXECUTE of whoever writes the row.
GRANT EXECUTE ON FUNCTION journey.exit_event_types_are_valid(text[]) TO journey_user;

-- Rows written before 0.3 that break its rules are repaired so that the
-- constraints below hold for every row (VALID, like a fresh install):
-- addresses with control characters are never sent (an unsent message
-- fails, a customer's address moves into its attributes, a provider is
-- disabled until an administrator fixes it), exit event lists keep their
-- first 50 valid entries.
UPDATE journey.messages
   SET status = CASE WHEN status IN ('queued', 'sending') THEN 'failed' ELSE status END,
       last_error = CASE WHEN status IN ('queued', 'sending')
           THEN 'to_address holds a control character (refused by the 0.3 upgrade)'
           ELSE last_error END,
       to_address = pg_catalog.regexp_replace(to_address, '[\x01-\x1f\x7f-\x9f]', ' ', 'g'),
       lease_expires_at = NULL, claimed_by = NULL
 WHERE to_address OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]';
UPDATE journey.customers
   SET attributes = attributes OPERATOR(pg_catalog.||) pg_catalog.jsonb_strip_nulls(
           pg_catalog.jsonb_build_object(
               'journey_refused_email', CASE WHEN email OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]' THEN email END,
               'journey_refused_phone', CASE WHEN phone OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]' THEN phone END)),
       email = CASE WHEN email OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]' THEN NULL ELSE email END,
       phone = CASE WHEN phone OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]' THEN NULL ELSE phone END
 WHERE email OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]'
    OR phone OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]';
UPDATE journey.providers
   SET from_address = pg_catalog.regexp_replace(from_address, '[\x01-\x1f\x7f-\x9f]', ' ', 'g'),
       enabled = false
 WHERE from_address OPERATOR(pg_catalog.~) '[\x01-\x1f\x7f-\x9f]';
UPDATE journey.sequences s
   SET exit_event_types = ARRAY(
           SELECT e.t FROM pg_catalog.unnest(s.exit_event_types) WITH ORDINALITY AS e(t, n)
            WHERE e.t OPERATOR(pg_catalog.<>) '' AND pg_catalog.length(e.t) OPERATOR(pg_catalog.<=) 200
            ORDER BY e.n LIMIT 50)
 WHERE NOT (pg_catalog.cardinality(s.exit_event_types) OPERATOR(pg_catalog.<=) 50
            AND journey.exit_event_types_are_valid(s.exit_event_types));

-- ===== isolation and hardening (issue 12) =====

-- Addresses are single lines of printable characters: a CR or LF in one
-- could smuggle an SMTP command or a header into what the sender sends.
-- C0 controls, DEL and the C1 range (U+0080-U+009F).  The API functions
-- refuse them first with 22023; these catch direct writes (23514).
ALTER TABLE journey.customers
    ADD CONSTRAINT customers_email_no_control_check
        CHECK (email OPERATOR(pg_catalog.!~) '[\x01-\x1f\x7f-\x9f]'),
    ADD CONSTRAINT customers_phone_no_control_check
        CHECK (phone OPERATOR(pg_catalog.!~) '[\x01-\x1f\x7f-\x9f]');
ALTER TABLE journey.messages
    ADD CONSTRAINT messages_to_address_no_control_check
        CHECK (to_address OPERATOR(pg_catalog.!~) '[\x01-\x1f\x7f-\x9f]');
ALTER TABLE journey.providers
    ADD CONSTRAINT providers_from_address_no_control_check
        CHECK (from_address OPERATOR(pg_catalog.!~) '[\x01-\x1f\x7f-\x9f]');

-- A tenant's exit events are matched against every event it ingests:
-- bounded, so one sequence cannot make matching expensive.  (create_sequence
-- refuses the same with 22023 and a message naming the field.)
ALTER TABLE journey.sequences
    ADD CONSTRAINT sequences_exit_event_types_bounded_check
        CHECK (pg_catalog.cardinality(exit_event_types) OPERATOR(pg_catalog.<=) 50
               AND journey.exit_event_types_are_valid(exit_event_types));

-- A sent review request sets customers.last_review_request_at; the sender
-- records it here first and applies it to customer rows no one holds
-- locked (SKIP LOCKED), so an application's open transaction on a customer
-- never stalls the sender.  No foreign keys: even a key-share lock on the
-- customer would wait.  Internal: the sender and the owner only.
CREATE TABLE journey.review_request_marks (
    message_id          bigint PRIMARY KEY,
    business_id         uuid NOT NULL,
    customer_id         uuid NOT NULL,
    sent_at             timestamptz NOT NULL
);
CREATE INDEX review_request_marks_customer_idx
    ON journey.review_request_marks (business_id, customer_id);
ALTER TABLE journey.review_request_marks ENABLE ROW LEVEL SECURITY;
CREATE POLICY review_request_marks_worker ON journey.review_request_marks TO journey_worker
    USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, DELETE ON journey.review_request_marks TO journey_worker;

-- The sender's fair claim probes each business's oldest due messages.
CREATE INDEX messages_queued_business_idx
    ON journey.messages (business_id, send_after) WHERE status = 'queued';
