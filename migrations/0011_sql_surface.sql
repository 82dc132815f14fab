-- The SQL surface for apps in other languages, and the kiln_app role that may use it.
--
-- kiln_app may trigger (kiln.trigger, kiln.trigger_batch), read (kiln.run, kiln.runs_by) and
-- cancel (kiln.cancel) runs, and LISTEN on kiln_runs_finished to learn when runs finish. It may
-- not read or write Kiln's tables, claim, complete, or delete anything: the functions it may call
-- run with their owner's rights and check their arguments themselves. docs/sql.md describes it.

-- Cancels the unfinished runs among p_ids with their unfinished descendants, in one statement
-- sequence: `ready` rows locked before `runs` rows, each in id order, as a claim takes them (the
-- lock order of docs/architecture.md). Returns each requested run found, the status it had, and
-- whether this call ended it. Executing and waiting runs are told through kiln_cancel; finished
-- ones are announced on kiln_runs_finished.
CREATE FUNCTION kiln.cancel_runs(p_ids uuid[])
RETURNS TABLE (run_id uuid, was text, canceled boolean)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM kiln.ready rd
     WHERE rd.run_id IN (WITH RECURSIVE tree AS (
                             SELECT unnest(p_ids) AS id
                             UNION
                             SELECT c.id FROM kiln.runs c JOIN tree t ON c.parent_run_id = t.id
                              WHERE c.parent_run_id IS NOT NULL)
                         SELECT id FROM tree)
     ORDER BY rd.run_id FOR UPDATE;
    RETURN QUERY
    WITH RECURSIVE tree AS (
        SELECT unnest(p_ids) AS id
        UNION
        SELECT c.id FROM kiln.runs c JOIN tree t ON c.parent_run_id = t.id
         WHERE c.parent_run_id IS NOT NULL),
    target AS (SELECT r.id, r.status FROM kiln.runs r WHERE r.id IN (SELECT id FROM tree)
                ORDER BY r.id FOR UPDATE),
    ended AS (
        UPDATE kiln.runs r
           SET status = 'canceled', finished_at = now(), updated_at = now(),
               error = jsonb_build_object('kind', 'canceled', 'message',
                   CASE WHEN r.id = ANY(p_ids) THEN 'canceled by request'
                        ELSE 'canceled with its parent run' END)
          FROM target t
         WHERE r.id = t.id AND t.status IN ('delayed', 'queued', 'executing', 'waiting')
        RETURNING r.id),
    unqueued AS (DELETE FROM kiln.ready WHERE kiln.ready.run_id IN (SELECT id FROM ended)),
    told AS (SELECT pg_notify('kiln_cancel', t.id::text) FROM target t
              WHERE t.status IN ('executing', 'waiting') AND t.id IN (SELECT id FROM ended)),
    finished_notify AS (
        SELECT pg_notify('kiln_runs_finished', string_agg(c.id::text, ',' ORDER BY c.id))
          FROM (SELECT e.id, (row_number() OVER (ORDER BY e.id) - 1) / 200 AS chunk FROM ended e) c
         GROUP BY c.chunk)
    -- The count only makes Postgres evaluate the notifying CTEs.
    SELECT t.id, t.status::text, t.id IN (SELECT id FROM ended)
      FROM target t
     WHERE t.id = ANY(p_ids)
       AND (SELECT count(*) FROM told) + (SELECT count(*) FROM finished_notify) >= 0;
END
$$;

-- Cancel one run (and its unfinished descendants) from SQL:
--   SELECT kiln.cancel('01a2...');   -- returns the status it had: queued, executing, ...
-- A run that already finished is refused with KL409, an unknown id with KL410. Recorded in the
-- audit log as done by `sql:<role>`.
CREATE FUNCTION kiln.cancel(p_run_id uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM kiln.cancel_runs(ARRAY[p_run_id]);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', p_run_id
            USING ERRCODE = 'KL410', HINT = 'kiln.runs_by() lists recent runs.';
    END IF;
    IF NOT r.canceled THEN
        RAISE EXCEPTION 'run % already finished as %; nothing to cancel', p_run_id, r.was
            USING ERRCODE = 'KL409';
    END IF;
    INSERT INTO kiln.audit_log (actor, action, target, detail)
    VALUES ('sql:' || session_user, 'run.cancel', p_run_id::text, jsonb_build_object('was', r.was));
    RETURN r.was;
END
$$;

-- One run as a JSON object, or NULL when no run has this id:
--   SELECT kiln.run('01a2...');
-- Keys: id, task_id, queue, concurrency_key, status, payload, output, error, attempts (how many
-- started), max_attempts, tags, metadata, idempotency_key, parent_run_id, root_run_id,
-- created_at, available_at, started_at, finished_at, and attempt_list (each attempt's number,
-- status, started_at, finished_at, error).
CREATE FUNCTION kiln.run(p_run_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'task_id', r.task_id, 'queue', r.queue, 'concurrency_key', r.concurrency_key,
        'status', r.status, 'payload', r.payload, 'output', r.output, 'error', r.error,
        'attempts', r.attempts, 'max_attempts', r.max_attempts, 'tags', to_jsonb(r.tags),
        'metadata', r.metadata, 'idempotency_key', r.idempotency_key,
        'parent_run_id', r.parent_run_id, 'root_run_id', r.root_run_id,
        'created_at', r.created_at, 'available_at', r.available_at,
        'started_at', r.started_at, 'finished_at', r.finished_at,
        'attempt_list', coalesce((
            SELECT jsonb_agg(jsonb_build_object('number', a.number, 'status', a.status,
                                                'started_at', a.started_at,
                                                'finished_at', a.finished_at, 'error', a.error)
                             ORDER BY a.number)
              FROM (SELECT number, status, started_at, finished_at, error
                      FROM kiln.attempts WHERE run_id = r.id
                    UNION ALL
                    SELECT attempt, 'executing', started_at, NULL, NULL
                      FROM kiln.leases WHERE run_id = r.id) a), '[]'::jsonb))
      FROM kiln.runs r
     WHERE r.id = p_run_id
$$;

-- Recent runs, newest first, without payloads or outputs (read one with kiln.run):
--   SELECT * FROM kiln.runs_by(p_task_id => 'google-calendar-sync', p_status => 'failed');
-- Every filter is optional; p_limit is 1 to 1,000 (default 50).
CREATE FUNCTION kiln.runs_by(
    p_task_id text DEFAULT NULL,
    p_status text DEFAULT NULL,
    p_concurrency_key text DEFAULT NULL,
    p_tag text DEFAULT NULL,
    p_limit integer DEFAULT 50)
RETURNS TABLE (id uuid, task_id text, queue text, concurrency_key text, status text,
               attempts integer, tags text[], created_at timestamptz, started_at timestamptz,
               finished_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_status IS NOT NULL AND NOT p_status = ANY (enum_range(NULL::kiln.run_status)::text[]) THEN
        RAISE EXCEPTION 'unknown status "%"', left(p_status, 40)
            USING ERRCODE = 'KL400',
            HINT = 'Statuses are ' || array_to_string(enum_range(NULL::kiln.run_status)::text[], ', ') || '.';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'p_limit must be from 1 to 1000, got %', p_limit USING ERRCODE = 'KL400';
    END IF;
    RETURN QUERY
    SELECT r.id, r.task_id, r.queue, r.concurrency_key, r.status::text, r.attempts, r.tags,
           r.created_at, r.started_at, r.finished_at
      FROM kiln.runs r
     WHERE (p_task_id IS NULL OR r.task_id = p_task_id)
       AND (p_status IS NULL OR r.status = p_status::kiln.run_status)
       AND (p_concurrency_key IS NULL OR r.concurrency_key = p_concurrency_key)
       AND (p_tag IS NULL OR r.tags @> ARRAY[p_tag])
     ORDER BY r.id DESC
     LIMIT p_limit;
END
$$;

-- The functions kiln_app may call run with their owner's rights, on a fixed search path.
ALTER FUNCTION kiln.trigger(text, jsonb, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION kiln.trigger_batch(text, jsonb, jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION kiln.cancel(uuid) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION kiln.run(uuid) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION kiln.runs_by(text, text, text, text, integer) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- No function of Kiln's is callable by every role: only the owner (the role that migrates and
-- runs workers) and the roles granted below.
-- The migration runner repeats this REVOKE after every migration, so functions added later are
-- closed too.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA kiln FROM PUBLIC;

-- Grants kiln_app what it may use in this database. Run by the migration when the role exists,
-- and by an administrator after creating the role by hand (see below).
CREATE FUNCTION kiln.grant_app_role() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    GRANT USAGE ON SCHEMA kiln TO kiln_app;
    GRANT EXECUTE ON FUNCTION kiln.trigger(text, jsonb, jsonb), kiln.trigger_batch(text, jsonb, jsonb),
                              kiln.cancel(uuid), kiln.run(uuid),
                              kiln.runs_by(text, text, text, text, integer)
       TO kiln_app;
END
$$;

-- Roles belong to the whole cluster: the role is created only when missing (tolerating another
-- database's migration creating it at the same moment), and where this role may not create
-- roles (managed Postgres often withholds CREATEROLE) the migration says what to run instead of
-- failing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kiln_app') THEN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolcreaterole OR rolsuper)) THEN
            BEGIN
                CREATE ROLE kiln_app NOLOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        ELSE
            RAISE WARNING 'Kiln could not create the role kiln_app: % may not create roles', current_user
                USING HINT = format('An administrator can run: CREATE ROLE kiln_app NOLOGIN; then, in database %s as %s: SELECT kiln.grant_app_role();',
                                    current_database(), current_user);
            RETURN;
        END IF;
    END IF;
    PERFORM kiln.grant_app_role();
END
$$;
