-- Batches with idempotency keys stay linear under generic plans.
--
-- Migration 0019 gave kiln.trigger_runs a generic plan. Its last statement, which matches each
-- spec of a batch with idempotency keys to the run it got, joined the specs to the array of
-- inserted ids; without the array's length the generic plan joins them in a nested loop, so a
-- batch of n specs compared n x n ids (a SQL trigger_batch of 50,000 keyed specs: 70 s against
-- 3 s before 0019). Each spec now looks up its own fresh id by primary key instead, then, if that
-- id was not inserted, the run holding its idempotency key: two index probes per spec.
--
-- The rest of kiln.trigger_runs is as in migration 0013, with the setting of migration 0019.

CREATE OR REPLACE FUNCTION kiln.trigger_runs(
    p_task_id text,
    p_specs jsonb[],
    p_definition jsonb DEFAULT NULL,
    p_allow_unregistered boolean DEFAULT false,
    p_now timestamptz DEFAULT now())
RETURNS TABLE (idx integer, run_id uuid, is_cached boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    l kiln.limits;
    registered jsonb;
    d jsonb;
    ids uuid[];
    inserted bigint;
    has_keys boolean;
    bad record;
    item text := '';
BEGIN
    IF p_task_id IS NULL OR NOT kiln.valid_name(p_task_id) THEN
        RAISE EXCEPTION 'task id % is not valid: task ids are 1 to 128 of letters, digits and - _ . : /',
                coalesce('"' || left(p_task_id, 40) || CASE WHEN length(p_task_id) > 40 THEN '..."' ELSE '"' END, 'NULL')
            USING ERRCODE = 'KL400', HINT = 'Pass the id a task declares, e.g. ''schedule-task''.';
    END IF;
    SELECT * INTO l FROM kiln.limits;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'kiln.limits has no row, so no trigger can be checked'
            USING ERRCODE = 'KL400', HINT = 'Restore it: INSERT INTO kiln.limits DEFAULT VALUES;';
    END IF;
    IF array_ndims(p_specs) > 1 THEN
        RAISE EXCEPTION 'runs are a one-dimensional array of JSON objects, got % dimensions', array_ndims(p_specs)
            USING ERRCODE = 'KL400';
    END IF;
    SELECT jsonb_build_object('queue', t.queue, 'max_attempts', t.max_attempts, 'retry', t.retry,
                              'max_duration_ms', t.max_duration_ms, 'ttl_ms', t.ttl_ms,
                              'priority_s', t.priority_s)
      INTO registered FROM kiln.tasks t WHERE t.id = p_task_id;
    -- A typed trigger carries its task's whole definition (p_definition): it may come first.
    IF registered IS NULL AND NOT p_allow_unregistered AND p_definition IS NULL THEN
        RAISE EXCEPTION 'task "%" is not registered: no worker has ever registered a task with this id', p_task_id
            USING ERRCODE = 'KL404',
            HINT = 'Check the task id for a typo, start a worker that registers the task, or trigger with allow_unregistered.';
    END IF;
    d := kiln.default_task_definition(p_task_id) || coalesce(p_definition, registered, '{}'::jsonb);
    IF jsonb_typeof(d->'queue') IS DISTINCT FROM 'string' OR NOT kiln.valid_name(d->>'queue')
       OR jsonb_typeof(d->'max_attempts') IS DISTINCT FROM 'number'
       OR (d->>'max_attempts')::numeric NOT BETWEEN 1 AND l.max_attempts THEN
        RAISE EXCEPTION 'the task definition for "%" is not valid: %', p_task_id, left(d::text, 300)
            USING ERRCODE = 'KL400', HINT = 'A definition names a valid queue and max_attempts from 1 to the limit.';
    END IF;
    IF registered IS NULL AND p_definition IS NOT NULL THEN
        -- Register the definition a typed trigger carries, so that apps and workers can start
        -- in any order; the worker that serves the task rewrites it when it starts. Until then
        -- the task is listed as served by no worker, with its waiting runs.
        INSERT INTO kiln.tasks (id, queue, max_attempts, retry, max_duration_ms, ttl_ms, priority_s)
        VALUES (p_task_id, d->>'queue', (d->>'max_attempts')::numeric::int, d->'retry',
                nullif((d->>'max_duration_ms')::numeric::bigint, 0), nullif((d->>'ttl_ms')::numeric::bigint, 0),
                coalesce((d->>'priority_s')::numeric::int, 0))
        ON CONFLICT (id) DO NOTHING;
    END IF;

    -- Every spec, checked in one pass; the first problem is reported. Messages use the
    -- documented option names.
    SELECT s.ord, left(c.problem, 5) AS code, substr(c.problem, 6) AS problem INTO bad
      FROM unnest(p_specs) WITH ORDINALITY AS s(v, ord)
      CROSS JOIN LATERAL (SELECT CASE
          WHEN jsonb_typeof(s.v) IS DISTINCT FROM 'object' THEN
              format('KL400each run is a JSON object, got %s', left(coalesce(s.v::text, 'NULL'), 100))
          WHEN s.v - ARRAY['payload', 'concurrency_key', 'idempotency_key', 'idempotency_key_ttl_ms',
                           'delay_ms', 'delay_until', 'ttl_ms', 'priority_s', 'tags', 'metadata',
                           'max_attempts', 'max_duration_ms', 'queue', 'parent_run_id',
                           'replay_of', 'root_run_id', 'traceparent'] <> '{}'::jsonb THEN
              format('KL400unknown option "%s" (kiln.trigger_runs takes the internal form; SQL callers use kiln.trigger)',
                     left((SELECT k FROM jsonb_object_keys(s.v - ARRAY['payload', 'concurrency_key', 'idempotency_key',
                           'idempotency_key_ttl_ms', 'delay_ms', 'delay_until', 'ttl_ms', 'priority_s', 'tags',
                           'metadata', 'max_attempts', 'max_duration_ms', 'queue', 'parent_run_id', 'replay_of',
                           'root_run_id', 'traceparent']) k
                           ORDER BY k LIMIT 1), 100))
          WHEN pg_column_size(s.v->'payload') > l.max_payload_bytes THEN
              format('KL413payload is %s bytes, over the limit of %s bytes: store large data elsewhere and pass a reference',
                     pg_column_size(s.v->'payload'), l.max_payload_bytes)
          WHEN s.v ? 'concurrency_key' AND (jsonb_typeof(s.v->'concurrency_key') <> 'string'
                                            OR s.v->>'concurrency_key' = '') THEN
              format('KL400concurrency_key must be a non-empty string, got %s', left((s.v->'concurrency_key')::text, 100))
          WHEN octet_length(s.v->>'concurrency_key') > l.max_key_bytes THEN
              format('KL400concurrency_key is %s bytes, over the limit of %s: use a shorter key (a hash of it, say)',
                     octet_length(s.v->>'concurrency_key'), l.max_key_bytes)
          WHEN s.v ? 'idempotency_key' AND (jsonb_typeof(s.v->'idempotency_key') <> 'string'
                                            OR s.v->>'idempotency_key' = '') THEN
              format('KL400idempotency_key must be a non-empty string, got %s', left((s.v->'idempotency_key')::text, 100))
          WHEN octet_length(s.v->>'idempotency_key') > l.max_key_bytes THEN
              format('KL400idempotency_key is %s bytes, over the limit of %s: use a shorter key (a hash of it, say)',
                     octet_length(s.v->>'idempotency_key'), l.max_key_bytes)
          WHEN s.v ? 'tags' AND (jsonb_typeof(s.v->'tags') <> 'array'
                                 OR jsonb_path_exists(s.v->'tags', '$[*] ? (@.type() != "string" || @ == "")')) THEN
              format('KL400tags must be an array of non-empty strings, got %s', left((s.v->'tags')::text, 100))
          WHEN jsonb_array_length(s.v->'tags') > l.max_tags THEN
              format('KL400a run takes at most %s tags, got %s: drop some or put them in metadata',
                     l.max_tags, jsonb_array_length(s.v->'tags'))
          WHEN octet_length((s.v->'tags')::text) > l.max_key_bytes AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(s.v->'tags') t(tag)
                                         WHERE octet_length(t.tag) > l.max_key_bytes) THEN
              format('KL400a tag is over the limit of %s bytes: use shorter tags', l.max_key_bytes)
          WHEN s.v ? 'metadata' AND jsonb_typeof(s.v->'metadata') <> 'object' THEN
              format('KL400metadata must be a JSON object, got %s', left((s.v->'metadata')::text, 100))
          WHEN pg_column_size(s.v->'metadata') > l.max_payload_bytes THEN
              format('KL413metadata is %s bytes, over the limit of %s bytes', pg_column_size(s.v->'metadata'), l.max_payload_bytes)
          WHEN s.v ? 'max_attempts' AND (NOT kiln.number_between(s.v->'max_attempts', 1, l.max_attempts)
                                         OR (s.v->>'max_attempts')::numeric % 1 <> 0) THEN
              format('KL400max_attempts must be a whole number from 1 to %s (1 means no retry), got %s',
                     l.max_attempts, left((s.v->'max_attempts')::text, 100))
          WHEN s.v ? 'max_duration_ms' AND NOT kiln.number_between(s.v->'max_duration_ms', 1, l.max_duration_ms) THEN
              format('KL400max_duration must be from 1 ms to %s days, got %s ms',
                     l.max_duration_ms / 86400000, left((s.v->'max_duration_ms')::text, 100))
          WHEN s.v ? 'delay_ms' AND NOT kiln.number_between(s.v->'delay_ms', 0, l.max_duration_ms) THEN
              format('KL400delay must be from 0 to %s days, got %s ms', l.max_duration_ms / 86400000, left((s.v->'delay_ms')::text, 100))
          WHEN s.v ? 'ttl_ms' AND NOT kiln.number_between(s.v->'ttl_ms', 0, l.max_duration_ms) THEN
              format('KL400ttl must be from 0 to %s days, got %s ms', l.max_duration_ms / 86400000, left((s.v->'ttl_ms')::text, 100))
          WHEN s.v ? 'idempotency_key_ttl_ms' AND NOT kiln.number_between(s.v->'idempotency_key_ttl_ms', 0, l.max_duration_ms) THEN
              format('KL400idempotency_key_ttl must be from 0 to %s days, got %s ms', l.max_duration_ms / 86400000, left((s.v->'idempotency_key_ttl_ms')::text, 100))
          WHEN s.v ? 'priority_s' AND NOT kiln.number_between(s.v->'priority_s', 0, l.max_duration_ms / 1000) THEN
              format('KL400priority must be from 0 to %s days, got %s s', l.max_duration_ms / 86400000, left((s.v->'priority_s')::text, 100))
          WHEN s.v ? 'delay_until' AND (jsonb_typeof(s.v->'delay_until') <> 'string'
                                        OR kiln.try_timestamptz(s.v->>'delay_until') IS NULL) THEN
              format('KL400delay (until) must be a timestamp such as "2026-11-21T10:00:00Z", got %s',
                     left((s.v->'delay_until')::text, 100))
          WHEN s.v ? 'delay_until' AND kiln.try_timestamptz(s.v->>'delay_until')
                   NOT BETWEEN p_now - l.max_duration_ms * interval '1 millisecond'
                           AND p_now + l.max_duration_ms * interval '1 millisecond' THEN
              format('KL400delay (until) must be within %s days of now, got %s',
                     l.max_duration_ms / 86400000, left((s.v->'delay_until')::text, 100))
          WHEN s.v ? 'delay_until' AND s.v ? 'delay_ms' THEN
              'KL400give a delay as a duration or as a timestamp, not both'
          WHEN s.v ? 'queue' AND (jsonb_typeof(s.v->'queue') <> 'string' OR NOT kiln.valid_name(s.v->>'queue')) THEN
              format('KL400queue %s is not a valid name: queue names are 1 to 128 of letters, digits and - _ . : /',
                     left((s.v->'queue')::text, 100))
          WHEN s.v ? 'parent_run_id' AND (jsonb_typeof(s.v->'parent_run_id') <> 'string'
                 OR s.v->>'parent_run_id' !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$') THEN
              format('KL400parent_run_id must be a run id, got %s', left((s.v->'parent_run_id')::text, 100))
          WHEN s.v ? 'traceparent' AND (jsonb_typeof(s.v->'traceparent') <> 'string'
                 OR s.v->>'traceparent' !~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
                 OR s.v->>'traceparent' ~ '^ff-|^..-0{32}-|^.{35}-0{16}-') THEN
              format('KL400traceparent must be a W3C trace context such as "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" (lowercase hex, trace and parent ids not all zero), got %s',
                     left((s.v->'traceparent')::text, 100))
          WHEN s.v ? 'replay_of' AND (jsonb_typeof(s.v->'replay_of') <> 'string'
                 OR s.v->>'replay_of' !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$') THEN
              format('KL400replay_of must be a run id, got %s', left((s.v->'replay_of')::text, 100))
          END AS problem) c
     WHERE c.problem IS NOT NULL
     ORDER BY s.ord
     LIMIT 1;
    IF bad IS NOT NULL THEN
        IF cardinality(p_specs) > 1 THEN
            item := format('batch item %s: ', bad.ord - 1);
        END IF;
        RAISE EXCEPTION 'cannot trigger task "%": %', p_task_id, item || bad.problem
            USING ERRCODE = bad.code;
    END IF;

    -- Queues: a trigger may name the task's own queue or any queue that exists (declared by a
    -- task or created by an operator), never a new one, which would escape the task's limit.
    SELECT s.ord, s.v->>'queue' AS queue INTO bad
      FROM unnest(p_specs) WITH ORDINALITY AS s(v, ord)
     WHERE s.v ? 'queue' AND s.v->>'queue' <> d->>'queue'
       AND NOT EXISTS (SELECT 1 FROM kiln.queues q WHERE q.name = s.v->>'queue')
     ORDER BY s.ord LIMIT 1;
    IF bad IS NOT NULL THEN
        IF cardinality(p_specs) > 1 THEN
            item := format('batch item %s: ', bad.ord - 1);
        END IF;
        RAISE EXCEPTION 'cannot trigger task "%": %queue "%" does not exist', p_task_id, item, bad.queue
            USING ERRCODE = 'KL410',
            HINT = 'Name a queue a task declares or one an operator created (kiln queues create NAME --limit N), or leave the queue out to use the task''s own.';
    END IF;
    SELECT s.ord, s.v->>'parent_run_id' AS parent INTO bad
      FROM unnest(p_specs) WITH ORDINALITY AS s(v, ord)
     WHERE s.v ? 'parent_run_id'
       AND NOT EXISTS (SELECT 1 FROM kiln.runs r WHERE r.id = (s.v->>'parent_run_id')::uuid)
     ORDER BY s.ord LIMIT 1;
    IF bad IS NOT NULL THEN
        IF cardinality(p_specs) > 1 THEN
            item := format('batch item %s: ', bad.ord - 1);
        END IF;
        RAISE EXCEPTION 'cannot trigger task "%": %parent run % does not exist', p_task_id, item, bad.parent
            USING ERRCODE = 'KL410', HINT = 'A child run names the run that triggers it.';
    END IF;

    has_keys := EXISTS (SELECT 1 FROM unnest(p_specs) s(v) WHERE s.v ? 'idempotency_key');
    IF has_keys THEN
        -- Idempotency keys past their ttl no longer dedupe: release them before inserting.
        UPDATE kiln.runs r SET idempotency_key = NULL
         WHERE r.task_id = p_task_id
           AND r.idempotency_key IN (SELECT s.v->>'idempotency_key' FROM unnest(p_specs) s(v)
                                      WHERE s.v ? 'idempotency_key')
           AND r.idempotency_expires_at <= p_now;
    END IF;

    ids := ARRAY(SELECT kiln.uuid_v7() FROM generate_series(1, cardinality(p_specs)));

    WITH spec AS (
        SELECT s.new_id, s.v,
               coalesce(s.v->>'queue', d->>'queue') AS queue,
               s.v->>'concurrency_key' AS concurrency_key,
               coalesce((s.v->>'delay_until')::timestamptz,
                        p_now + coalesce((s.v->>'delay_ms')::numeric::bigint, 0) * interval '1 millisecond') AS available_at,
               coalesce((s.v->>'ttl_ms')::numeric::bigint, (d->>'ttl_ms')::numeric::bigint) AS ttl_ms,
               coalesce((s.v->>'priority_s')::numeric::int, (d->>'priority_s')::numeric::int, 0) AS priority_s,
               CASE WHEN s.v ? 'parent_run_id' THEN
                   (SELECT coalesce(r.root_run_id, r.id) FROM kiln.runs r WHERE r.id = (s.v->>'parent_run_id')::uuid)
               END AS root_run_id
          FROM unnest(p_specs, ids) WITH ORDINALITY AS s(v, new_id, ord)
         ORDER BY s.ord
    ),
    ins AS (
        INSERT INTO kiln.runs (id, task_id, queue, concurrency_key, status, payload, max_attempts, retry,
                               max_duration_ms, priority_s, tags, metadata, idempotency_key,
                               idempotency_expires_at, parent_run_id, root_run_id, replay_of,
                               traceparent, created_at, available_at, expires_at, updated_at)
        SELECT s.new_id, p_task_id, s.queue, s.concurrency_key,
               CASE WHEN s.available_at > p_now THEN 'delayed' ELSE 'queued' END::kiln.run_status,
               coalesce(s.v->'payload', 'null'::jsonb),
               coalesce((s.v->>'max_attempts')::numeric::int, (d->>'max_attempts')::numeric::int),
               d->'retry',
               coalesce((s.v->>'max_duration_ms')::numeric::bigint, (d->>'max_duration_ms')::numeric::bigint),
               s.priority_s,
               coalesce(ARRAY(SELECT jsonb_array_elements_text(s.v->'tags')), '{}'),
               coalesce(s.v->'metadata', '{}'::jsonb),
               s.v->>'idempotency_key',
               CASE WHEN s.v ? 'idempotency_key' THEN
                   p_now + coalesce((s.v->>'idempotency_key_ttl_ms')::numeric::bigint, 2592000000) * interval '1 millisecond'
               END,
               (s.v->>'parent_run_id')::uuid,
               s.root_run_id,
               (s.v->>'replay_of')::uuid,
               s.v->>'traceparent',
               p_now, s.available_at,
               s.available_at + s.ttl_ms * interval '1 millisecond',
               p_now
          FROM spec s
        ON CONFLICT (task_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id, queue, concurrency_key, status, available_at, expires_at, priority_s
    ),
    ready AS (
        INSERT INTO kiln.ready (run_id, task_id, queue, concurrency_key, available_at, order_at, expires_at, delayed)
        SELECT i.id, p_task_id, i.queue, coalesce(i.concurrency_key, ''), i.available_at,
               i.available_at - make_interval(secs => i.priority_s), i.expires_at, i.status = 'delayed'
          FROM ins i
    ),
    queues AS (
        INSERT INTO kiln.queues (name) SELECT DISTINCT i.queue FROM ins i
        ON CONFLICT DO NOTHING
    )
    SELECT count(*) INTO inserted FROM ins i;

    IF NOT has_keys THEN
        -- Without idempotency keys nothing can conflict: every spec was inserted.
        RETURN QUERY SELECT s.ord::int, s.id, false FROM unnest(ids) WITH ORDINALITY AS s(id, ord);
        RETURN;
    END IF;
    -- A new statement: it sees this call's inserts and runs committed meanwhile by others. A spec
    -- whose fresh id is not in kiln.runs was not inserted: it gets the run holding its key.
    RETURN QUERY
    SELECT s.ord::int, coalesce(x.id, e.id), x.id IS NULL
      FROM unnest(p_specs, ids) WITH ORDINALITY AS s(v, new_id, ord)
      LEFT JOIN kiln.runs x ON x.id = s.new_id
      LEFT JOIN kiln.runs e ON x.id IS NULL AND e.task_id = p_task_id
                           AND e.idempotency_key = s.v->>'idempotency_key'
     ORDER BY s.ord;
END
$$;
