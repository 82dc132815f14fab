-- A claim in a keyed queue shared with other tasks no longer reads all its tasks' runs.
--
-- Migration 0020 picks, in a queue that also holds other tasks' runs, only keys with a run of the
-- claim's tasks, tested with EXISTS. Under the generic plan of migration 0019 the planner turned
-- that EXISTS into a hashed subplan: every claim read all of the claim's tasks' ready runs in the
-- queue to build the hash, however few it took (a claim of one run, 50,000 ready runs of each of
-- two tasks over 5,000 keys each: 9-14 ms). Probing each key in turn order instead costs one
-- index probe per key looked at, which is cheap when the claim's keys are near the front of the
-- line and costly when many keys of the other tasks are ahead (5,000 of them: 21 ms). So a claim
-- probes the first 256 keys in line one by one, with a scalar subquery the planner cannot hash,
-- and only when those hold too few of its keys does it add the keys behind them, found from its
-- tasks' ready runs as before (a claim that wants more keys than the front holds pays for both).
-- Each key is locked with SKIP LOCKED, and every key locked is served.
--
-- The rest of kiln.claim_runs is as in migration 0020.

CREATE OR REPLACE FUNCTION kiln.claim_runs(
    p_worker_id text,
    p_task_ids text[],
    p_max integer,
    p_lease_ms bigint,
    p_now timestamptz DEFAULT now(),
    p_prefetch integer DEFAULT 0)
RETURNS TABLE (run_id uuid, task_id text, queue text, concurrency_key text, attempt integer,
               counted_attempt integer, max_attempts integer, retry jsonb, max_duration_ms bigint,
               payload jsonb, metadata jsonb, parent_run_id uuid, root_run_id uuid,
               created_at timestamptz, available_at timestamptz, traceparent text,
               prefetched boolean)
LANGUAGE plpgsql
-- Every statement here is built for index access. Right after a bulk insert, before autovacuum
-- has analyzed kiln.ready, the planner would otherwise pick a sequential or bitmap scan of the
-- whole backlog for each claim (measured: 4x slower with a 150,000-run backlog).
SET enable_seqscan = off
SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    cand record;
    q record;
    remaining integer := greatest(p_max, 0);
    extra integer := greatest(coalesce(p_prefetch, 0), 0);
    queue_free integer;
    unlimited boolean;
    keyed boolean;
    keys text[];
    drained text[];
    per_key_cap integer;
    picked uuid[];
    n integer;
    scheduled text[] := '{}';
    rebuilding text[] := '{}';
    mixed boolean;
BEGIN
    -- Every keyed queue this claim may serve has its wakeups applied first, in name order, before
    -- any key is picked: key rows are written here with waits, so two claimers of the same queues
    -- take those locks in one order, and a claimer that picked keys waits for nothing after.
    FOR cand IN
        SELECT qu.name FROM kiln.queues qu
         WHERE NOT qu.paused AND coalesce(qu.limit_override, qu.concurrency_limit) IS NOT NULL
           AND qu.name IN (SELECT tq.queue FROM kiln.task_queues(p_task_ids, p_now) tq)
         ORDER BY qu.name
    LOOP
        IF kiln.schedule_keys(cand.name, p_now) THEN
            scheduled := scheduled || cand.name;
        ELSE
            rebuilding := rebuilding || cand.name;
        END IF;
    END LOOP;

    FOR cand IN
        SELECT qu.name FROM kiln.queues qu
         WHERE NOT qu.paused
           AND qu.name IN (SELECT tq.queue FROM kiln.task_queues(p_task_ids, p_now) tq)
         ORDER BY random()
    LOOP
        EXIT WHEN remaining <= 0 AND extra <= 0;

        SELECT qu.name, coalesce(qu.limit_override, qu.concurrency_limit) AS per_key_limit,
               qu.total_limit, qu.paused
          INTO q FROM kiln.queues qu WHERE qu.name = cand.name;
        CONTINUE WHEN q.paused;
        keyed := q.per_key_limit IS NOT NULL;
        unlimited := NOT keyed AND q.total_limit IS NULL;

        IF q.total_limit IS NOT NULL THEN
            -- A total limit counts every key: serialize this queue's claimers for the rest of the
            -- transaction (the count below is read by a later statement, which sees every claim
            -- committed before the lock).
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
            keyed := q.per_key_limit IS NOT NULL;
            unlimited := NOT keyed AND q.total_limit IS NULL;
        END IF;

        queue_free := remaining + CASE WHEN unlimited THEN extra ELSE 0 END;
        IF q.total_limit IS NOT NULL THEN
            queue_free := least(queue_free,
                                q.total_limit - (SELECT count(*) FROM kiln.leases l WHERE l.queue = q.name));
        END IF;
        CONTINUE WHEN queue_free <= 0;

        IF keyed THEN
            -- A queue given a per-key limit since the pass above is scheduled now.
            IF q.name = ANY(rebuilding)
               OR (NOT q.name = ANY(scheduled) AND NOT kiln.schedule_keys(q.name, p_now)) THEN
                -- Another claimer is rebuilding this queue's keys.
                run_id := NULL; queue := cand.name;
                RETURN NEXT;
                CONTINUE;
            END IF;
            -- The keys to serve, in turn order: at most one per run wanted. In a queue that also
            -- holds other tasks' runs, only keys with a run of these tasks to start now: the first
            -- 256 keys in line are probed one by one (a probe cannot be hashed), and when they hold
            -- too few, the keys behind them come from this claim's tasks' ready runs.
            mixed := kiln.queue_serves_other_tasks(q.name, p_task_ids);
            IF NOT mixed THEN
                keys := ARRAY(SELECT k.concurrency_key FROM kiln.queue_keys k
                               WHERE k.queue = q.name AND k.waiting
                               ORDER BY k.turn
                               LIMIT queue_free
                                 FOR UPDATE SKIP LOCKED);
            ELSE
                keys := ARRAY(SELECT k.concurrency_key
                                FROM (SELECT f.concurrency_key, f.turn FROM kiln.queue_keys f
                                       WHERE f.queue = q.name AND f.waiting
                                       ORDER BY f.turn
                                       LIMIT 256) f
                                JOIN kiln.queue_keys k ON k.queue = q.name
                                                      AND k.concurrency_key = f.concurrency_key
                               WHERE k.waiting
                                 AND (SELECT 1 FROM kiln.ready rd
                                       WHERE rd.queue = q.name
                                         AND rd.concurrency_key = k.concurrency_key
                                         AND rd.task_id = ANY(p_task_ids)
                                         AND rd.available_at <= p_now
                                       LIMIT 1) IS NOT NULL
                               ORDER BY f.turn
                               LIMIT queue_free
                                 FOR UPDATE OF k SKIP LOCKED);
                IF cardinality(keys) < queue_free
                   AND (SELECT count(*) FROM (SELECT 1 FROM kiln.queue_keys f
                                               WHERE f.queue = q.name AND f.waiting
                                               LIMIT 257) f) > 256 THEN
                    -- Keys of these tasks may wait behind the first 256: add them in turn
                    -- order, after those already locked.
                    keys := keys || ARRAY(
                        WITH mine AS MATERIALIZED (
                            SELECT DISTINCT rd.concurrency_key FROM kiln.ready rd
                             WHERE rd.task_id = ANY(p_task_ids) AND rd.queue = q.name
                               AND rd.available_at <= p_now
                        )
                        SELECT k.concurrency_key
                          FROM mine m
                          JOIN kiln.queue_keys k ON k.queue = q.name
                                                AND k.concurrency_key = m.concurrency_key
                         WHERE k.waiting AND NOT k.concurrency_key = ANY(keys)
                         ORDER BY k.turn
                         LIMIT queue_free - cardinality(keys)
                           FOR UPDATE OF k SKIP LOCKED);
                END IF;
            END IF;
            IF cardinality(keys) = 0 THEN
                IF NOT mixed
                   AND EXISTS (SELECT 1 FROM kiln.queue_keys k WHERE k.queue = q.name AND k.waiting) THEN
                    -- Every waiting key is held by another claimer.
                    run_id := NULL; queue := cand.name;
                    RETURN NEXT;
                END IF;
                CONTINUE;
            END IF;
            -- A new statement: its snapshot holds every lease committed before the keys were
            -- locked, so each key's count is exact. Each key offers up to what its limit leaves
            -- free, and no more than its share of the claim (one run when there are as many keys
            -- as runs wanted), plus one run it only shows: a key all of whose shown runs were
            -- taken may have nothing left to start now (`drained`, checked below).
            WITH k AS MATERIALIZED (
                SELECT w.concurrency_key, w.pos,
                       least(ceil(queue_free::numeric / cardinality(keys)),
                             q.per_key_limit - (SELECT count(*) FROM kiln.leases l
                                                 WHERE l.queue = q.name
                                                   AND l.concurrency_key = w.concurrency_key))::int
                           AS free
                  FROM unnest(keys) WITH ORDINALITY AS w(concurrency_key, pos)
            ), shown AS MATERIALIZED (
                SELECT k.concurrency_key, k.pos, k.free, r.run_id, r.order_at, r.rank
                  FROM k CROSS JOIN LATERAL (
                       SELECT h.run_id, h.order_at, row_number() OVER (ORDER BY h.order_at) AS rank
                         FROM (SELECT rd.run_id, rd.order_at
                                 FROM kiln.ready rd
                                WHERE rd.queue = q.name AND rd.concurrency_key = k.concurrency_key
                                  AND rd.available_at <= p_now AND rd.task_id = ANY(p_task_ids)
                                  AND (rd.expires_at IS NULL OR rd.expires_at > p_now)
                                ORDER BY rd.order_at
                                LIMIT k.free + 1
                                  FOR UPDATE SKIP LOCKED) h) r
                 WHERE k.free > 0
            ), chosen AS MATERIALIZED (
                SELECT c.run_id, c.concurrency_key FROM shown c
                 WHERE c.rank <= c.free
                 ORDER BY c.rank, c.pos, c.order_at
                 LIMIT queue_free
            ), per_key AS (
                SELECT c.concurrency_key, count(*) AS n FROM shown c GROUP BY c.concurrency_key
            ), taken_per_key AS (
                SELECT c.concurrency_key, count(*) AS n FROM chosen c GROUP BY c.concurrency_key
            )
            SELECT (SELECT array_agg(c.run_id) FROM chosen c),
                   ARRAY(SELECT k.concurrency_key FROM k
                           LEFT JOIN per_key s USING (concurrency_key)
                           LEFT JOIN taken_per_key t USING (concurrency_key)
                          WHERE k.free > 0 AND coalesce(s.n, 0) = coalesce(t.n, 0))
              INTO picked, drained;
        ELSE
            keys := ARRAY(SELECT w.concurrency_key FROM kiln.waiting_keys(q.name) w);
            CONTINUE WHEN cardinality(keys) = 0;

            -- Each key's share: without a limit, queue_free / keys rounded up (so few rows are
            -- locked only to be left); with a total limit, what it leaves free. Rows are locked
            -- with SKIP LOCKED, so parallel claimers of a queue without limits take disjoint runs.
            per_key_cap := CASE WHEN unlimited THEN ceil(queue_free::numeric / cardinality(keys))::int
                                ELSE queue_free END;
            SELECT array_agg(c.run_id) INTO picked
              FROM (
                SELECT r.run_id
                  FROM (SELECT w.concurrency_key, served.last_served_at
                          FROM unnest(keys) AS w(concurrency_key)
                          LEFT JOIN kiln.queue_keys served
                                 ON served.queue = q.name AND served.concurrency_key = w.concurrency_key) k
                 CROSS JOIN LATERAL (
                       SELECT h.run_id, h.order_at, row_number() OVER (ORDER BY h.order_at) AS rank
                         FROM (SELECT rd.run_id, rd.order_at
                                 FROM kiln.ready rd
                                WHERE rd.queue = q.name AND rd.concurrency_key = k.concurrency_key
                                  AND rd.available_at <= p_now AND rd.task_id = ANY(p_task_ids)
                                  AND (rd.expires_at IS NULL OR rd.expires_at > p_now)
                                ORDER BY rd.order_at
                                LIMIT per_key_cap
                                  FOR UPDATE SKIP LOCKED) h) r
                 ORDER BY r.rank, k.last_served_at NULLS FIRST, r.order_at
                 LIMIT queue_free) c;
        END IF;

        n := 0;
        IF picked IS NOT NULL THEN
            RETURN QUERY
            WITH taken AS (
                DELETE FROM kiln.ready rd WHERE rd.run_id = ANY(picked)
                RETURNING rd.run_id, rd.task_id, rd.queue, rd.concurrency_key, rd.available_at
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
                          u.root_run_id, u.created_at, t.available_at, u.traceparent
            ),
            leased AS (
                INSERT INTO kiln.leases (run_id, attempt, task_id, queue, concurrency_key, worker_id,
                                         started_at, expires_at)
                SELECT s.id, s.attempts, s.task_id, s.queue, s.lease_key, p_worker_id, p_now,
                       p_now + p_lease_ms * interval '1 millisecond'
                  FROM started s
            ),
            served_keys AS MATERIALIZED (
                -- A queue without a per-key limit keeps "last served" for fairness between its
                -- keys; one with a single waiting key skips it, so that parallel claimers of an
                -- unkeyed queue never wait on a shared row.
                SELECT DISTINCT s.lease_key FROM started s
                 WHERE NOT keyed AND (cardinality(keys) > 1 OR NOT unlimited)
            ),
            served AS (
                -- Best effort, and without waiting: a key row another claimer holds is being
                -- served by it at this moment. Waiting here, after this queue's runs were locked,
                -- could close a cycle with a claimer that serves the same queues in another order.
                UPDATE kiln.queue_keys k SET last_served_at = p_now
                 WHERE (k.queue, k.concurrency_key) IN (
                       SELECT x.queue, x.concurrency_key FROM kiln.queue_keys x
                        WHERE x.queue = q.name
                          AND x.concurrency_key IN (SELECT sk.lease_key FROM served_keys sk)
                        ORDER BY x.concurrency_key
                          FOR UPDATE SKIP LOCKED)
            ),
            first_served AS (
                -- A key served for the first time gets its row (a conflict leaves it alone; it
                -- waits only for another claimer inserting the same new key).
                INSERT INTO kiln.queue_keys (queue, concurrency_key, last_served_at)
                SELECT q.name, sk.lease_key, p_now FROM served_keys sk
                 WHERE NOT EXISTS (SELECT 1 FROM kiln.queue_keys x
                                    WHERE x.queue = q.name AND x.concurrency_key = sk.lease_key)
                 ORDER BY 2
                ON CONFLICT ON CONSTRAINT queue_keys_pkey DO NOTHING
            )
            SELECT s.id, s.task_id, s.queue, s.concurrency_key, s.attempts, s.counted, s.max_attempts,
                   s.retry, s.max_duration_ms, s.payload, s.metadata, s.parent_run_id, s.root_run_id,
                   s.created_at, s.available_at, s.traceparent,
                   row_number() OVER () > remaining
              FROM started s;
            GET DIAGNOSTICS n = ROW_COUNT;
            -- Runs beyond p_max came from the prefetch allowance (queues without limits only).
            extra := extra - greatest(n - remaining, 0);
            remaining := greatest(remaining - n, 0);
        END IF;

        IF keyed THEN
            -- Every key looked at goes to the back of the line (`last_served_at`: when a claim
            -- last looked at it). A key that showed more runs than were taken keeps waiting,
            -- unless its limit is now taken: a full key leaves the line (not waiting, no time),
            -- and the statement that frees one of its slots (a completion, retry, rescue, or a
            -- parent that starts waiting) writes its wakeup, which puts it back. Counted here,
            -- in a new statement, from the leases that exist (this claim's included), under the
            -- key's row lock, which any statement adding a lease to the key holds too. A drained
            -- one says, read after the runs were taken, whether it has a run to start now or when
            -- it may next have one. One index probe per key (= ANY), never a pass over the
            -- queue's keys.
            UPDATE kiln.queue_keys k
               SET turn = nextval('kiln.queue_key_turns'), last_served_at = p_now,
                   waiting = (SELECT count(*) FROM kiln.leases l
                               WHERE l.queue = k.queue AND l.concurrency_key = k.concurrency_key)
                             < q.per_key_limit
             WHERE k.queue = q.name
               AND k.concurrency_key = ANY(ARRAY(SELECT unnest(keys) EXCEPT SELECT unnest(drained)));
            IF cardinality(drained) > 0 THEN
                UPDATE kiln.queue_keys k
                   SET (turn, last_served_at, waiting, next_at) =
                       (SELECT nextval('kiln.queue_key_turns'), p_now,
                               coalesce(nx.at <= p_now, false),
                               CASE WHEN nx.at > p_now THEN nx.at END
                          FROM (SELECT kiln.key_next_at(k.queue, k.concurrency_key, p_now) AS at) nx)
                 WHERE k.queue = q.name AND k.concurrency_key = ANY(drained);
            END IF;
            IF n > 0 AND n < queue_free AND cardinality(keys) >= queue_free THEN
                -- Keys beyond those looked at may have runs: let the worker claim again soon.
                run_id := NULL; queue := cand.name;
                RETURN NEXT;
            END IF;
        ELSIF picked IS NULL THEN
            IF unlimited THEN
                -- Every waiting run was locked by another claimer: say so, so the worker retries.
                run_id := NULL; queue := cand.name;
                RETURN NEXT;
            END IF;
        ELSIF unlimited AND n < queue_free AND cardinality(keys) > 1 THEN
            -- Capped shares may have left runs behind: let the worker claim again soon.
            run_id := NULL; queue := cand.name;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;


