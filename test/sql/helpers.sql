-- Helpers shared by the regression tests (included with \i).
-- try(sql): runs a statement and prints 'ok', or its SQLSTATE, message and
-- hint, with generated ids masked so expected output is stable.
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    hint text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RETURN regexp_replace(SQLSTATE || ': ' || SQLERRM || coalesce(E'\n  hint: ' || nullif(hint, ''), ''),
                          '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'g');
END
$$;
-- log_of(enrollment): what happened to one enrollment, in order.
CREATE FUNCTION pg_temp.log_of(p_enrollment uuid)
RETURNS TABLE (step integer, outcome text, detail text, at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT l.step_index, l.outcome, l.detail, l.at FROM journey.enrollment_log l
     WHERE l.enrollment_id = p_enrollment ORDER BY l.id;
END
$$;
-- fingerprint(business): one hash of that business's rows in every journey
-- table, to show that refused attempts wrote nothing.
CREATE FUNCTION pg_temp.fingerprint(p_business uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    acc text := '';
    h text;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = 'journey'::regnamespace AND c.relkind = 'r'
             ORDER BY 1 LOOP
        EXECUTE format('SELECT md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) '
                       'FROM journey.%I x '
                       'WHERE coalesce(to_jsonb(x)->>''business_id'', to_jsonb(x)->>''id'') = $1::text', t)
            INTO h USING p_business;
        acc := acc || t || '=' || h || ';';
    END LOOP;
    RETURN md5(acc);
END
$$;
