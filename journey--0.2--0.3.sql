-- journey 0.2 -> 0.3: trustworthy journeys.  Each change below is also made
-- by journey--0.3.sql from scratch; sql/upgrade.sql checks that both paths
-- end with identical catalogs and that in-flight data goes on unchanged.

\echo Use "ALTER EXTENSION journey UPDATE TO '0.3'" to load this file. \quit

-- ===== versions and templates (issue 14) =====
-- A journey changes by versions: update_sequence (src/update_sequence.c)
-- writes its steps anew under sequences.version + 1 and keeps every earlier
-- version's steps, so an enrollment runs to its end on the version it is
-- pinned to (sequence_enrollments.sequence_version) unless the update moves
-- it.  Written the same way by the fresh install and the upgrade, so both
-- end with identical catalogs.  The defaults of 1 make every row written
-- before versions existed, and a direct INSERT by the tables' owner that
-- names no version, belong to the first version, whose steps always stay.

ALTER TABLE journey.sequences
    ADD COLUMN version integer NOT NULL DEFAULT 1
        CONSTRAINT sequences_version_check CHECK (version OPERATOR(pg_catalog.>=) 1);

ALTER TABLE journey.sequence_steps
    ADD COLUMN version integer NOT NULL DEFAULT 1
        CONSTRAINT sequence_steps_version_check CHECK (version OPERATOR(pg_catalog.>=) 1);
ALTER TABLE journey.sequence_steps
    DROP CONSTRAINT sequence_steps_sequence_id_step_index_key;
ALTER TABLE journey.sequence_steps
    ADD CONSTRAINT sequence_steps_sequence_id_version_step_index_key
        UNIQUE (sequence_id, version, step_index);

ALTER TABLE journey.sequence_enrollments
    ADD COLUMN sequence_version integer NOT NULL DEFAULT 1
        CONSTRAINT sequence_enrollments_sequence_version_check
        CHECK (sequence_version OPERATOR(pg_catalog.>=) 1);

-- Which version of its journey each decision was taken on (null: the row
-- predates 0.3; the upgrade sets those to 1, the only version then).
ALTER TABLE journey.enrollment_log ADD COLUMN sequence_version integer;

-- Reusable message texts.  A send step naming one (sequence_steps.template_id)
-- is rendered from the template's text as it is when the step runs.
CREATE TABLE journey.templates (
    id                  uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    business_id         uuid NOT NULL REFERENCES journey.businesses (id) ON DELETE CASCADE,
    name                text NOT NULL CHECK (name OPERATOR(pg_catalog.<>) ''),
    channel             text NOT NULL CHECK (channel IN ('email', 'sms')),
    subject             text,
    body                text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT templates_business_id_name_key UNIQUE (business_id, name),
    -- Lets steps reference (business_id, id): never another tenant's template.
    CONSTRAINT templates_business_id_id_key UNIQUE (business_id, id)
);

-- NO ACTION, not RESTRICT: checked at the end of the statement, so deleting
-- a business (which cascades to both its templates and its steps) works,
-- while deleting a template some step of any version uses is refused (23503).
UPDATE journey.sequence_steps SET template_id = NULL
 WHERE template_id IS NOT NULL;
ALTER TABLE journey.sequence_steps
    ADD CONSTRAINT sequence_steps_template_fkey FOREIGN KEY (business_id, template_id)
        REFERENCES journey.templates (business_id, id);
CREATE INDEX sequence_steps_template_idx ON journey.sequence_steps (template_id)
    WHERE template_id IS NOT NULL;

CREATE TRIGGER templates_touch BEFORE UPDATE ON journey.templates
    FOR EACH ROW EXECUTE FUNCTION journey.touch_updated_at();

-- Validates a template's texts as create_template does, whoever writes them
-- (22023): a member's direct UPDATE of subject or body included.
CREATE FUNCTION journey.check_template_row()
RETURNS trigger
AS 'MODULE_PATHNAME', 'journey_check_template_row'
LANGUAGE C;
CREATE TRIGGER templates_check BEFORE INSERT OR UPDATE OF channel, subject, body
    ON journey.templates
    FOR EACH ROW EXECUTE FUNCTION journey.check_template_row();

CREATE FUNCTION journey.create_template(p_business_id uuid, p_name text, p_channel text,
                                        p_subject text, p_body text)
RETURNS uuid
AS 'MODULE_PATHNAME', 'journey_create_template'
LANGUAGE C VOLATILE;

-- Writes a new version of a journey (SPEC section 10); p_in_flight says
-- what becomes of its active enrollments: keep, move or exit.
CREATE FUNCTION journey.update_sequence(p_sequence_id uuid, p_definition jsonb,
                                        p_in_flight text DEFAULT 'keep')
RETURNS integer
AS 'MODULE_PATHNAME', 'journey_update_sequence'
LANGUAGE C VOLATILE;

ALTER TABLE journey.templates ENABLE ROW LEVEL SECURITY;
CREATE POLICY templates_member ON journey.templates TO journey_user
    USING (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()))
    WITH CHECK (business_id OPERATOR(pg_catalog.=) ANY (journey.member_business_ids()));

-- Members create templates through create_template (validated) and may
-- rename, edit and delete them directly; channel and business stay fixed.
REVOKE ALL ON journey.templates FROM PUBLIC;
GRANT SELECT, DELETE ON journey.templates TO journey_user;
GRANT UPDATE (name, subject, body) ON journey.templates TO journey_user;
-- Versions are written by update_sequence only.
REVOKE ALL ON FUNCTION journey.check_template_row(),
    journey.create_template(uuid, text, text, text, text),
    journey.update_sequence(uuid, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION journey.create_template(uuid, text, text, text, text),
    journey.update_sequence(uuid, jsonb, text) TO journey_user;

-- The timeline says which version each decision was taken on.
CREATE OR REPLACE VIEW journey.timeline WITH (security_invoker = true) AS
SELECT e.business_id, e.customer_id, e.sequence_id, e.id AS enrollment_id,
       e.enrolled_at AS at, NULL::integer AS step_index,
       'enrolled'::text AS what,
       CASE WHEN e.trigger_event_id IS NULL THEN 'enrolled by enroll_customer'
            ELSE 'enrolled by event ' OPERATOR(pg_catalog.||)
                 COALESCE(ev.event_type, '(deleted)') OPERATOR(pg_catalog.||)
                 ' #' OPERATOR(pg_catalog.||) e.trigger_event_id::text
       END AS detail,
       0 AS phase, NULL::bigint AS ref_id,
       NULL::integer AS sequence_version
  FROM journey.sequence_enrollments e
  LEFT JOIN journey.events ev ON ev.id OPERATOR(pg_catalog.=) e.trigger_event_id
UNION ALL
SELECT e.business_id, e.customer_id, e.sequence_id, e.id,
       l.at, l.step_index, l.outcome, l.detail,
       1, l.id, l.sequence_version
  FROM journey.sequence_enrollments e
  JOIN journey.enrollment_log l ON l.enrollment_id OPERATOR(pg_catalog.=) e.id
UNION ALL
SELECT e.business_id, e.customer_id, e.sequence_id, e.id,
       COALESCE(m.sent_at, m.send_after), m.step_index,
       'message ' OPERATOR(pg_catalog.||) m.status,
       pg_catalog.format('%s to %s, %s attempt(s)%s%s', m.channel, m.to_address,
                         m.attempts, ', provider id ' OPERATOR(pg_catalog.||) m.provider_message_id,
                         ': ' OPERATOR(pg_catalog.||) m.last_error),
       2, m.id, NULL::integer
  FROM journey.sequence_enrollments e
  JOIN journey.messages m ON m.enrollment_id OPERATOR(pg_catalog.=) e.id;

-- Every row of the new table is data pg_dump keeps.
SELECT pg_catalog.pg_extension_config_dump('journey.templates', '');

-- Decisions taken before versions existed were all on version 1.
UPDATE journey.enrollment_log SET sequence_version = 1 WHERE sequence_version IS NULL;
