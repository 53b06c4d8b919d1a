-- A case's read view (GET /v1/cases/{id} and the lists): the state the workflow last wrote, with the
-- row's stage, outcome and times (ISO 8601, UTC). This function is the one place for its shape
-- (starter/service.py reads it through CASE_VIEW); a change of shape is a new migration that replaces
-- it and rewrites view_json.
CREATE FUNCTION case_view(c cases) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT c.state || jsonb_build_object('stage', c.stage, 'outcome', c.outcome,
        'opened_at', to_char(c.opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
        'closed_at', to_char(c.closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
$$;

-- The view kept as JSON text beside the state, rewritten by every write of the row (the workflow's,
-- the API's insert, the erasure's scrubbing): the lists join 100 of them as they are, where building
-- them cost PostgreSQL ~1.4 of a list's ~2.4 ms (BENCHMARKS.md).
ALTER TABLE cases ADD COLUMN view_json text;

CREATE FUNCTION cases_keep_view_json() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.view_json := case_view(NEW)::text;
    RETURN NEW;
END
$$;

CREATE TRIGGER cases_view_json BEFORE INSERT OR UPDATE ON cases
    FOR EACH ROW EXECUTE FUNCTION cases_keep_view_json();

UPDATE cases SET view_json = NULL;  -- the trigger writes each row's view
ALTER TABLE cases ALTER COLUMN view_json SET NOT NULL;
