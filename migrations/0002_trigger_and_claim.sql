-- Triggering and claiming, as server-side functions: one round trip each, and one implementation
-- shared by the Rust client, SQL callers and the HTTP API.

-- The task defaults used for a task no worker has registered (when the caller allows that).
-- Kept equal to kiln_core::TaskDefinition's defaults; a test in kiln-store checks that they match.
CREATE FUNCTION kiln.default_task_definition(p_task_id text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'queue', p_task_id,
        'max_attempts', 3,
        'retry', jsonb_build_object('factor', 2.0, 'min_timeout_ms', 1000, 'max_timeout_ms', 60000, 'randomize', true),
        'max_duration_ms', NULL,
        'ttl_ms', NULL,
        'priority_s', 0)
$$;

-- Milliseconds of a duration option: a number of seconds (Trigger.dev's convention), a string
-- such as "500ms", "30s", "5m", "1h30m", "2d", "1w", or a Postgres interval ('5 minutes').
CREATE FUNCTION kiln.duration_ms(p_value jsonb, p_option text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    t text;
    part text[];
    total bigint := 0;
BEGIN
    IF p_value IS NULL OR jsonb_typeof(p_value) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_value) = 'number' THEN
        RETURN round((p_value::text)::numeric * 1000)::bigint;
    END IF;
    t := p_value #>> '{}';
    IF jsonb_typeof(p_value) = 'string' AND t ~ '^\s*(\d+\s*(ms|s|m|h|d|w)\s*)+$' THEN
        FOR part IN SELECT regexp_matches(t, '(\d+)\s*(ms|s|m|h|d|w)', 'g') LOOP
            total := total + part[1]::bigint * CASE part[2]
                WHEN 'ms' THEN 1 WHEN 's' THEN 1000 WHEN 'm' THEN 60000 WHEN 'h' THEN 3600000
                WHEN 'd' THEN 86400000 ELSE 604800000 END;
        END LOOP;
        RETURN total;
    END IF;
    BEGIN
        RETURN (extract(epoch FROM t::interval) * 1000)::bigint;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'trigger option "%": % is not a duration', p_option, p_value
            USING ERRCODE = 'KL400',
            HINT = 'Write a duration such as "30s", "5m" or "1h30m", a number of seconds, or an interval such as ''5 minutes''.';
    END;
END
$$;

-- The options of one trigger in the internal form trigger_runs reads. Accepts the documented
-- names (delay as a duration or a timestamp, ttl, priority, idempotency_key_ttl, max_duration)
-- beside the internal ones (delay_ms, delay_until, ttl_ms, priority_s, ...), and refuses any
-- other key by name.
CREATE FUNCTION kiln.trigger_options(p_options jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    o jsonb := p_options;
    k text;
BEGIN
    IF jsonb_typeof(o) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'trigger options must be a JSON object, got %', left(coalesce(o::text, 'NULL'), 200)
            USING ERRCODE = 'KL400', HINT = 'Pass e.g. ''{"concurrency_key": "ws_1", "delay": "5m"}''.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(o) LOOP
        IF k NOT IN ('payload', 'concurrency_key', 'idempotency_key', 'idempotency_key_ttl',
                     'idempotency_key_ttl_ms', 'delay', 'delay_ms', 'delay_until', 'ttl', 'ttl_ms',
                     'priority', 'priority_s', 'tags', 'metadata', 'max_attempts', 'max_duration',
                     'max_duration_ms', 'queue', 'parent_run_id', 'root_run_id', 'replay_of') THEN
            RAISE EXCEPTION 'unknown trigger option "%"', k
                USING ERRCODE = 'KL400',
                HINT = 'Options are concurrency_key, idempotency_key, idempotency_key_ttl, delay, ttl, priority, tags, metadata, max_attempts, max_duration, queue.';
        END IF;
    END LOOP;
    IF o ? 'delay' THEN
        IF jsonb_typeof(o->'delay') = 'number' OR (o->>'delay') ~ '^\s*(\d+\s*(ms|s|m|h|d|w)\s*)+$' THEN
            o := o || jsonb_build_object('delay_ms', kiln.duration_ms(o->'delay', 'delay'));
        ELSE
            BEGIN
                o := o || jsonb_build_object('delay_until', (o->>'delay')::timestamptz);
            EXCEPTION WHEN others THEN
                RAISE EXCEPTION 'trigger option "delay": % is neither a duration nor a timestamp', o->'delay'
                    USING ERRCODE = 'KL400',
                    HINT = 'Write a duration such as "30s" or "5m", a number of seconds, or a timestamp such as "2026-11-21T10:00:00Z".';
            END;
        END IF;
        o := o - 'delay';
    END IF;
    IF o ? 'ttl' THEN
        o := (o - 'ttl') || jsonb_build_object('ttl_ms', kiln.duration_ms(o->'ttl', 'ttl'));
    END IF;
    IF o ? 'idempotency_key_ttl' THEN
        o := (o - 'idempotency_key_ttl')
             || jsonb_build_object('idempotency_key_ttl_ms', kiln.duration_ms(o->'idempotency_key_ttl', 'idempotency_key_ttl'));
    END IF;
    IF o ? 'max_duration' THEN
        o := (o - 'max_duration') || jsonb_build_object('max_duration_ms', kiln.duration_ms(o->'max_duration', 'max_duration'));
    END IF;
    IF o ? 'priority' THEN
        o := (o - 'priority') || jsonb_build_object('priority_s', kiln.duration_ms(o->'priority', 'priority') / 1000);
    END IF;
    IF o ? 'max_attempts' AND (jsonb_typeof(o->'max_attempts') <> 'number' OR (o->>'max_attempts')::numeric < 1
                               OR (o->>'max_attempts')::numeric <> trunc((o->>'max_attempts')::numeric)) THEN
        RAISE EXCEPTION 'trigger option "max_attempts" must be a whole number of at least 1, got %', o->'max_attempts'
            USING ERRCODE = 'KL400';
    END IF;
    FOR k IN SELECT unnest(ARRAY['concurrency_key', 'idempotency_key', 'queue']) LOOP
        IF o ? k AND jsonb_typeof(o->k) <> 'string' THEN
            RAISE EXCEPTION 'trigger option "%" must be a string, got %', k, o->k USING ERRCODE = 'KL400';
        END IF;
    END LOOP;
    RETURN o;
END
$$;

-- Insert one run per element of p_specs for task p_task_id, in one statement.
--
-- Each spec is an object: payload, and the options of kiln.trigger_options (documented names such
-- as delay, ttl, priority, or their internal forms delay_ms, ttl_ms, priority_s, ...).
-- p_definition is the caller's compiled task definition (typed clients); without it the registered
-- definition is used. A task that no worker has registered is refused (SQLSTATE KL404) unless
-- p_allow_unregistered. Returns, per spec (1-based idx), the run id and whether it was an existing
-- run found by its live idempotency key.
CREATE FUNCTION kiln.trigger_runs(
    p_task_id text,
    p_specs jsonb[],
    p_definition jsonb DEFAULT NULL,
    p_allow_unregistered boolean DEFAULT false,
    p_now timestamptz DEFAULT now())
RETURNS TABLE (idx integer, run_id uuid, is_cached boolean)
LANGUAGE plpgsql AS $$
DECLARE
    registered jsonb;
    d jsonb;
    ids uuid[];
    inserted uuid[];
    has_keys boolean;
    bad text;
BEGIN
    IF p_task_id IS NULL OR p_task_id = '' THEN
        RAISE EXCEPTION 'task id is empty' USING ERRCODE = 'KL400',
            HINT = 'Pass the id a task declares, e.g. ''schedule-task''.';
    END IF;
    SELECT jsonb_build_object('queue', t.queue, 'max_attempts', t.max_attempts, 'retry', t.retry,
                              'max_duration_ms', t.max_duration_ms, 'ttl_ms', t.ttl_ms,
                              'priority_s', t.priority_s)
      INTO registered FROM kiln.tasks t WHERE t.id = p_task_id;
    IF registered IS NULL AND NOT p_allow_unregistered THEN
        RAISE EXCEPTION 'task "%" is not registered: no worker has ever registered a task with this id', p_task_id
            USING ERRCODE = 'KL404',
            HINT = 'Check the task id for a typo, start a worker that registers the task, or trigger with allow_unregistered.';
    END IF;
    d := kiln.default_task_definition(p_task_id) || coalesce(p_definition, registered, '{}'::jsonb);

    -- Specs in the internal form (what the Rust client sends) go straight through; any other key
    -- is translated, or refused by name, by kiln.trigger_options.
    IF EXISTS (SELECT 1 FROM unnest(p_specs) s(v)
                WHERE jsonb_typeof(s.v) <> 'object'
                   OR s.v - ARRAY['payload', 'concurrency_key', 'idempotency_key',
                                  'idempotency_key_ttl_ms', 'delay_ms', 'delay_until', 'ttl_ms',
                                  'priority_s', 'tags', 'metadata', 'max_attempts',
                                  'max_duration_ms', 'queue', 'parent_run_id', 'root_run_id',
                                  'replay_of'] <> '{}'::jsonb) THEN
        p_specs := ARRAY(SELECT kiln.trigger_options(s.v) FROM unnest(p_specs) WITH ORDINALITY s(v, ord) ORDER BY ord);
    END IF;

    SELECT s.v::text INTO bad FROM unnest(p_specs) s(v)
     WHERE jsonb_typeof(s.v) <> 'object'
        OR (s.v ? 'tags' AND (jsonb_typeof(s.v->'tags') <> 'array' OR jsonb_array_length(s.v->'tags') > 10))
        OR (s.v ? 'max_attempts' AND (s.v->>'max_attempts')::int < 1)
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid trigger options for task "%": %', p_task_id, left(bad, 200)
            USING ERRCODE = 'KL400',
            HINT = 'Options must be an object; tags an array of at most 10 strings; max_attempts at least 1.';
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

    ids := ARRAY(SELECT kiln.uuid_v7() FROM generate_series(1, coalesce(array_length(p_specs, 1), 0)));

    WITH spec AS (
        SELECT s.new_id, s.v,
               coalesce(s.v->>'queue', d->>'queue') AS queue,
               nullif(s.v->>'concurrency_key', '') AS concurrency_key,
               coalesce((s.v->>'delay_until')::timestamptz,
                        p_now + coalesce((s.v->>'delay_ms')::bigint, 0) * interval '1 millisecond') AS available_at,
               coalesce((s.v->>'ttl_ms')::bigint, (d->>'ttl_ms')::bigint) AS ttl_ms,
               coalesce((s.v->>'priority_s')::int, (d->>'priority_s')::int, 0) AS priority_s
          FROM unnest(p_specs, ids) WITH ORDINALITY AS s(v, new_id, ord)
         ORDER BY s.ord
    ),
    ins AS (
        INSERT INTO kiln.runs (id, task_id, queue, concurrency_key, status, payload, max_attempts, retry,
                               max_duration_ms, priority_s, tags, metadata, idempotency_key,
                               idempotency_expires_at, parent_run_id, root_run_id, replay_of,
                               created_at, available_at, expires_at, updated_at)
        SELECT s.new_id, p_task_id, s.queue, s.concurrency_key,
               CASE WHEN s.available_at > p_now THEN 'delayed' ELSE 'queued' END::kiln.run_status,
               coalesce(s.v->'payload', 'null'::jsonb),
               coalesce((s.v->>'max_attempts')::int, (d->>'max_attempts')::int),
               d->'retry',
               coalesce((s.v->>'max_duration_ms')::bigint, (d->>'max_duration_ms')::bigint),
               s.priority_s,
               coalesce(ARRAY(SELECT jsonb_array_elements_text(s.v->'tags')), '{}'),
               coalesce(s.v->'metadata', '{}'::jsonb),
               s.v->>'idempotency_key',
               CASE WHEN s.v ? 'idempotency_key' THEN
                   p_now + coalesce((s.v->>'idempotency_key_ttl_ms')::bigint, 2592000000) * interval '1 millisecond'
               END,
               (s.v->>'parent_run_id')::uuid,
               coalesce((s.v->>'root_run_id')::uuid, (s.v->>'parent_run_id')::uuid),
               (s.v->>'replay_of')::uuid,
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
    SELECT coalesce(array_agg(i.id), '{}') INTO inserted FROM ins i;

    IF NOT has_keys THEN
        -- Without idempotency keys nothing can conflict: every spec was inserted.
        RETURN QUERY SELECT s.ord::int, s.id, false FROM unnest(ids) WITH ORDINALITY AS s(id, ord);
        RETURN;
    END IF;
    -- A new statement: it sees this call's inserts and runs committed meanwhile by others.
    RETURN QUERY
    SELECT s.ord::int, coalesce(x.id, e.id), x.id IS NULL
      FROM unnest(p_specs, ids) WITH ORDINALITY AS s(v, new_id, ord)
      LEFT JOIN unnest(inserted) AS x(id) ON x.id = s.new_id
      LEFT JOIN kiln.runs e ON x.id IS NULL AND e.task_id = p_task_id
                           AND e.idempotency_key = s.v->>'idempotency_key'
     ORDER BY s.ord;
END
$$;

-- Trigger one run from SQL:
--   SELECT kiln.trigger('schedule-task', '{"ws_id": "w1"}',
--                       '{"concurrency_key": "w1", "delay": "5m", "ttl": "1h", "tags": ["sync"]}');
-- Options: concurrency_key, idempotency_key, idempotency_key_ttl, delay (a duration or a
-- timestamp), ttl, priority (seconds of head start), tags, metadata, max_attempts, max_duration,
-- queue, and allow_unregistered. Durations are "30s", "5m", "1h30m", a number of seconds, or an
-- interval. Returns the run id (an existing run's for a live idempotency key).
CREATE FUNCTION kiln.trigger(p_task_id text, p_payload jsonb, p_options jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE sql AS $$
    SELECT t.run_id
      FROM kiln.trigger_runs(
               p_task_id,
               ARRAY[coalesce(p_options, '{}'::jsonb) - 'allow_unregistered'
                     || jsonb_build_object('payload', p_payload)],
               NULL,
               coalesce((p_options->>'allow_unregistered')::boolean, false)) t
$$;

-- The concurrency keys of a queue that have runs waiting, found with a loose index scan of
-- ready_claim: one index probe per key with waiting runs, however many keys the queue ever had.
CREATE FUNCTION kiln.waiting_keys(p_queue text) RETURNS TABLE (concurrency_key text)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE walk AS (
        (SELECT r.concurrency_key FROM kiln.ready r WHERE r.queue = p_queue
          ORDER BY r.concurrency_key LIMIT 1)
        UNION ALL
        SELECT (SELECT r.concurrency_key FROM kiln.ready r
                 WHERE r.queue = p_queue AND r.concurrency_key > w.concurrency_key
                 ORDER BY r.concurrency_key LIMIT 1)
          FROM walk w WHERE w.concurrency_key IS NOT NULL
    )
    SELECT w.concurrency_key FROM walk w WHERE w.concurrency_key IS NOT NULL
$$;

-- Claim up to p_max runs of the given tasks for worker p_worker_id, leasing each for p_lease_ms.
--
-- Concurrency: for a queue with a limit, the queue's row is locked (FOR UPDATE SKIP LOCKED) for the
-- rest of this transaction; the lease counts are read by later statements, so they include every
-- claim committed before the lock was granted, and no other claim of this queue can interleave.
-- Leases are released by the completion, retry and rescue statements, which only lower the count.
-- A queue without limits takes no queue lock: its runs are locked one by one with SKIP LOCKED, so
-- parallel claimers take disjoint runs. A row whose run_id is NULL tells the caller that a queue
-- was being claimed by another worker (or may have more runs): try again shortly. Claimers never
-- wait on each other, and never deadlock.
--
-- Fairness: within a queue, candidates are taken by rank within their concurrency key first (each
-- key's oldest run before any key's second), then by key least recently served, then by order_at.
-- Only keys with waiting runs are visited (kiln.waiting_keys).
CREATE FUNCTION kiln.claim_runs(
    p_worker_id text,
    p_task_ids text[],
    p_max integer,
    p_lease_ms bigint,
    p_now timestamptz DEFAULT now())
RETURNS TABLE (run_id uuid, task_id text, queue text, concurrency_key text, attempt integer,
               counted_attempt integer, max_attempts integer, retry jsonb, max_duration_ms bigint,
               payload jsonb, metadata jsonb, parent_run_id uuid, root_run_id uuid,
               created_at timestamptz)
LANGUAGE plpgsql
-- Every statement here is built for index access. Right after a bulk insert, before autovacuum
-- has analyzed kiln.ready, the planner would otherwise pick a sequential or bitmap scan of the
-- whole backlog for each claim (measured: 4x slower with a 150,000-run backlog).
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    cand record;
    q record;
    remaining integer := p_max;
    queue_free integer;
    unlimited boolean;
    keys text[];
    per_key_cap integer;
    picked uuid[];
    n integer;
BEGIN
    FOR cand IN
        SELECT qu.name FROM kiln.queues qu
         WHERE NOT qu.paused
           AND EXISTS (SELECT 1 FROM kiln.ready r
                        WHERE r.queue = qu.name AND r.available_at <= p_now
                          AND r.task_id = ANY(p_task_ids))
         ORDER BY random()
    LOOP
        EXIT WHEN remaining <= 0;

        SELECT qu.name, coalesce(qu.limit_override, qu.concurrency_limit) AS per_key_limit,
               qu.total_limit, qu.paused
          INTO q FROM kiln.queues qu WHERE qu.name = cand.name;
        CONTINUE WHEN q.paused;
        unlimited := q.per_key_limit IS NULL AND q.total_limit IS NULL;

        IF NOT unlimited THEN
            -- A limited queue: serialize its claimers for the rest of this transaction. The counts
            -- below are read by later statements, which see every claim committed before the lock.
            SELECT qu.name, coalesce(qu.limit_override, qu.concurrency_limit) AS per_key_limit,
                   qu.total_limit, qu.paused
              INTO q FROM kiln.queues qu WHERE qu.name = cand.name
               FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                run_id := NULL; queue := cand.name;
                RETURN NEXT;
                CONTINUE;
            END IF;
            CONTINUE WHEN q.paused;
            unlimited := q.per_key_limit IS NULL AND q.total_limit IS NULL;
        END IF;

        queue_free := remaining;
        IF q.total_limit IS NOT NULL THEN
            queue_free := least(queue_free,
                                q.total_limit - (SELECT count(*) FROM kiln.leases l WHERE l.queue = q.name));
        END IF;
        CONTINUE WHEN queue_free <= 0;

        keys := ARRAY(SELECT w.concurrency_key FROM kiln.waiting_keys(q.name) w);
        CONTINUE WHEN cardinality(keys) = 0;

        -- Each key's share: without a limit, queue_free / keys rounded up (so few rows are locked
        -- only to be left); with one, what the key's limit leaves free. Rows are locked with SKIP
        -- LOCKED, so parallel claimers of a queue without limits take disjoint runs (a limited
        -- queue's claimers are already serialized by the lock above).
        per_key_cap := CASE WHEN unlimited THEN ceil(queue_free::numeric / cardinality(keys))::int
                            ELSE queue_free END;
        SELECT array_agg(c.run_id) INTO picked FROM (
            SELECT r.run_id
              FROM (SELECT w.concurrency_key, served.last_served_at,
                           CASE WHEN q.per_key_limit IS NULL THEN per_key_cap
                                ELSE least(per_key_cap, q.per_key_limit - coalesce(running.n, 0))::int
                           END AS free
                      FROM unnest(keys) AS w(concurrency_key)
                      LEFT JOIN kiln.queue_keys served
                             ON served.queue = q.name AND served.concurrency_key = w.concurrency_key
                      LEFT JOIN (SELECT l.concurrency_key, count(*) AS n FROM kiln.leases l
                                  WHERE q.per_key_limit IS NOT NULL AND l.queue = q.name
                                  GROUP BY l.concurrency_key) running
                             ON running.concurrency_key = w.concurrency_key) k
             CROSS JOIN LATERAL (
                   -- Rank after the limit, so a key's backlog is read only as far as it can be served.
                   SELECT h.run_id, h.order_at, row_number() OVER (ORDER BY h.order_at) AS rank
                     FROM (SELECT rd.run_id, rd.order_at
                             FROM kiln.ready rd
                            WHERE rd.queue = q.name AND rd.concurrency_key = k.concurrency_key
                              AND rd.available_at <= p_now AND rd.task_id = ANY(p_task_ids)
                              AND (rd.expires_at IS NULL OR rd.expires_at > p_now)
                            ORDER BY rd.order_at
                            LIMIT greatest(k.free, 0)
                              FOR UPDATE SKIP LOCKED) h) r
             WHERE k.free > 0
             ORDER BY r.rank, k.last_served_at NULLS FIRST, r.order_at
             LIMIT queue_free) c;
        IF picked IS NULL THEN
            IF unlimited THEN
                -- Every waiting run was locked by another claimer: say so, so the worker retries.
                run_id := NULL; queue := cand.name;
                RETURN NEXT;
            END IF;
            CONTINUE;
        END IF;

        RETURN QUERY
        WITH taken AS (
            DELETE FROM kiln.ready rd WHERE rd.run_id = ANY(picked)
            RETURNING rd.run_id, rd.task_id, rd.queue, rd.concurrency_key
        ),
        started AS (
            UPDATE kiln.runs u
               SET status = 'executing', attempts = u.attempts + 1,
                   started_at = coalesce(u.started_at, p_now), updated_at = p_now
              FROM taken t
             WHERE u.id = t.run_id AND u.status IN ('queued', 'delayed')
            RETURNING u.id, u.task_id, u.queue, t.concurrency_key AS lease_key, u.concurrency_key,
                      u.attempts, u.attempts - u.released_attempts AS counted, u.max_attempts,
                      u.retry, u.max_duration_ms, u.payload, u.metadata, u.parent_run_id,
                      u.root_run_id, u.created_at
        ),
        leased AS (
            INSERT INTO kiln.leases (run_id, attempt, task_id, queue, concurrency_key, worker_id,
                                     started_at, expires_at)
            SELECT s.id, s.attempts, s.task_id, s.queue, s.lease_key, p_worker_id, p_now,
                   p_now + p_lease_ms * interval '1 millisecond'
              FROM started s
        ),
        served AS (
            -- Fairness bookkeeping matters only between keys; a queue with one waiting key skips
            -- it, so that parallel claimers of an unkeyed queue never wait on a shared row.
            -- In key order, so that parallel claimers take these row locks in the same order and
            -- cannot deadlock.
            INSERT INTO kiln.queue_keys AS k (queue, concurrency_key, last_served_at)
            SELECT DISTINCT q.name, s.lease_key, p_now FROM started s
             WHERE cardinality(keys) > 1 OR NOT unlimited
             ORDER BY 2
            ON CONFLICT ON CONSTRAINT queue_keys_pkey DO UPDATE SET last_served_at = excluded.last_served_at
        )
        SELECT s.id, s.task_id, s.queue, s.concurrency_key, s.attempts, s.counted, s.max_attempts,
               s.retry, s.max_duration_ms, s.payload, s.metadata, s.parent_run_id, s.root_run_id,
               s.created_at
          FROM started s;
        GET DIAGNOSTICS n = ROW_COUNT;
        remaining := remaining - n;
        IF unlimited AND n < queue_free AND cardinality(keys) > 1 THEN
            -- Capped shares may have left runs behind: let the worker claim again soon.
            run_id := NULL; queue := cand.name;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
