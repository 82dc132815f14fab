-- The key scheduler: a claim of a queue with a per-key limit costs what it takes, not what waits.
--
-- Before, such a claim locked the queue's row (serializing every claimer of the queue) and
-- visited every concurrency key with waiting runs: 1.3 s per claim at 100,000 keys. Now
-- `kiln.queue_keys` is the scheduler (docs/architecture.md, "The key scheduler"):
--
--   * A key row is `waiting` while the key may have a run to start now. A partial index on
--     (queue, turn) WHERE waiting gives the keys in round-robin order; a claim locks the first
--     ones it needs with FOR UPDATE SKIP LOCKED, so parallel claimers take disjoint keys and no
--     claim takes the queue lock (unless the queue also has a total limit).
--   * Exactness comes from the key row: every statement that starts a run of a key (a claim, a
--     parent resuming) holds that key's row lock, and counts the key's leases in a later
--     statement, whose snapshot includes every start committed before the lock was granted.
--     Completions, retries and rescues only lower the count, so they take no key lock.
--   * A served key goes to the back of the line (`turn` from a sequence); a new key starts with
--     turn 0, at the front, so it starts within one round of service.
--   * A key whose runs are all in the future is parked (`next_at`) and woken by the next claim
--     after that time; a key with nothing left is idle (neither waiting nor parked).
--   * Triggers never write a key row (which would serialize triggers of one key until commit).
--     Every insert into `ready` also appends one row per key to `kiln.key_wakeups`, in the same
--     transaction; a claim turns its queue's wakeups into waiting keys before it picks. A claim
--     that finds a key empty cannot miss a run committed after it looked: that run's wakeup is
--     committed with it, and wakes the key again.
--
-- The claim also returns what the worker records per attempt: `available_at` (the queue wait is
-- measured from it) and the trigger's trace context (`traceparent`, a new column of `runs`).

ALTER TABLE kiln.queue_keys
    ADD COLUMN waiting boolean NOT NULL DEFAULT false,
    ADD COLUMN next_at timestamptz,
    ADD COLUMN turn bigint NOT NULL DEFAULT 0;

CREATE SEQUENCE kiln.queue_key_turns;

CREATE INDEX queue_keys_turn ON kiln.queue_keys (queue, turn) WHERE waiting;
CREATE INDEX queue_keys_parked ON kiln.queue_keys (queue, next_at)
    WHERE NOT waiting AND next_at IS NOT NULL;

-- Keys that received runs since a claim last looked: one row per statement and key.
CREATE TABLE kiln.key_wakeups (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue           text NOT NULL,
    concurrency_key text NOT NULL,
    available_at    timestamptz NOT NULL
);
CREATE INDEX key_wakeups_queue ON kiln.key_wakeups (queue, id);

-- Whether the queue's key rows describe its ready runs. False for a queue that has just been
-- given a per-key limit (its wakeups were pruned while it had none), and for every queue when
-- this migration runs: the next claim rebuilds its key rows from `ready` once.
ALTER TABLE kiln.queues ADD COLUMN keys_synced boolean NOT NULL DEFAULT false;

CREATE FUNCTION kiln.queues_keys_synced() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- A new queue has no runs yet, so no key rows to rebuild.
        NEW.keys_synced := true;
    ELSIF coalesce(NEW.limit_override, NEW.concurrency_limit) IS NOT NULL
          AND coalesce(OLD.limit_override, OLD.concurrency_limit) IS NULL THEN
        NEW.keys_synced := false;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER queues_keys_synced BEFORE INSERT OR UPDATE ON kiln.queues
    FOR EACH ROW EXECUTE FUNCTION kiln.queues_keys_synced();

-- Wake workers when claimable runs arrive (one notification per statement and queue), and record
-- which keys received them (one wakeup per statement and key).
CREATE OR REPLACE FUNCTION kiln.notify_ready() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO kiln.key_wakeups (queue, concurrency_key, available_at)
    SELECT n.queue, n.concurrency_key, min(n.available_at)
      FROM new_rows n GROUP BY n.queue, n.concurrency_key;
    PERFORM pg_notify('kiln_ready', q.queue)
    FROM (SELECT DISTINCT n.queue FROM new_rows n) q;
    RETURN NULL;
END
$$;

-- When a key that has no run to start now may next have one: p_now if it has one now, the earliest
-- time one of its runs becomes available (a lower bound, read from the head of its backlog), or
-- NULL when nothing of the key waits. `order_at` never exceeds `available_at`, so the 65th run's
-- `order_at` bounds every run after the first 64.
CREATE FUNCTION kiln.key_next_at(p_queue text, p_key text, p_now timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM kiln.ready r
                      WHERE r.queue = p_queue AND r.concurrency_key = p_key
                        AND r.order_at <= p_now AND r.available_at <= p_now)
        THEN p_now
        ELSE least((SELECT min(h.available_at)
                      FROM (SELECT r.available_at FROM kiln.ready r
                             WHERE r.queue = p_queue AND r.concurrency_key = p_key
                             ORDER BY r.order_at LIMIT 64) h),
                   (SELECT r.order_at FROM kiln.ready r
                     WHERE r.queue = p_queue AND r.concurrency_key = p_key
                     ORDER BY r.order_at OFFSET 64 LIMIT 1))
    END
$$;

-- Turns the queue's pending wakeups (the oldest 10,000: a claim's cost stays bounded after a huge
-- insert; the next claims take the rest), and its parked keys whose time has come, into waiting
-- keys; first rebuilds the queue's key rows from `ready` if they are not in sync (keys_synced). False
-- when another claimer is rebuilding them: try again shortly.
--
-- Wakeups are taken with SKIP LOCKED (parallel claimers take disjoint ones); key rows are written
-- in key order and may wait for a claimer that holds one, which never waits in turn: a claimer
-- waits for key rows only here, before it holds any key it picked. The queue row is locked
-- before any key row (the lock order: queues, then queue_keys).
CREATE FUNCTION kiln.schedule_keys(p_queue text, p_now timestamptz) RETURNS boolean
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM kiln.queues qu WHERE qu.name = p_queue AND NOT qu.keys_synced) THEN
        PERFORM 1 FROM kiln.queues qu WHERE qu.name = p_queue AND NOT qu.keys_synced
            FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            INSERT INTO kiln.queue_keys AS k (queue, concurrency_key, waiting)
            SELECT p_queue, w.concurrency_key, true FROM kiln.waiting_keys(p_queue) w
             ORDER BY w.concurrency_key
            ON CONFLICT ON CONSTRAINT queue_keys_pkey DO UPDATE SET waiting = true, next_at = NULL;
            UPDATE kiln.queues qu SET keys_synced = true WHERE qu.name = p_queue;
        ELSIF EXISTS (SELECT 1 FROM kiln.queues qu WHERE qu.name = p_queue AND NOT qu.keys_synced) THEN
            RETURN false;
        END IF;
    END IF;

    WITH woken AS (
        DELETE FROM kiln.key_wakeups w
         WHERE w.id IN (SELECT x.id FROM kiln.key_wakeups x WHERE x.queue = p_queue
                         ORDER BY x.id LIMIT 10000
                           FOR UPDATE SKIP LOCKED)
        RETURNING w.concurrency_key, w.available_at
    ), due AS (
        SELECT k.concurrency_key, k.next_at AS available_at FROM kiln.queue_keys k
         WHERE k.queue = p_queue AND NOT k.waiting AND k.next_at <= p_now
    ), keys AS (
        SELECT a.concurrency_key, min(a.available_at) AS at
          FROM (SELECT * FROM woken UNION ALL SELECT * FROM due) a
         GROUP BY a.concurrency_key
    )
    INSERT INTO kiln.queue_keys AS k (queue, concurrency_key, waiting, next_at)
    SELECT p_queue, s.concurrency_key, s.at <= p_now, CASE WHEN s.at > p_now THEN s.at END
      FROM keys s ORDER BY s.concurrency_key
    ON CONFLICT ON CONSTRAINT queue_keys_pkey DO UPDATE
       SET waiting = k.waiting OR excluded.waiting,
           next_at = CASE WHEN k.waiting OR excluded.waiting THEN NULL
                          ELSE least(k.next_at, excluded.next_at) END;
    RETURN true;
END
$$;

-- Wakeups of queues without a per-key limit are not read by claims: drop them. The rows of the
-- queues that have wakeups are share-locked, so a queue being given a limit at this moment keeps
-- its wakeups (its claims then rebuild its keys from `ready` once, see keys_synced). Returns how
-- many were dropped.
CREATE FUNCTION kiln.prune_key_wakeups() RETURNS integer
LANGUAGE sql AS $$
    WITH unscheduled AS (
        SELECT qu.name FROM kiln.queues qu
         WHERE coalesce(qu.limit_override, qu.concurrency_limit) IS NULL
           AND qu.name IN (SELECT DISTINCT w.queue FROM kiln.key_wakeups w)
         ORDER BY qu.name
           FOR SHARE
    ), dropped AS (
        DELETE FROM kiln.key_wakeups w USING unscheduled u WHERE w.queue = u.name RETURNING 1
    )
    SELECT count(*)::integer FROM dropped
$$;

-- The W3C trace context of the trigger (migration 0013 writes it), returned by the claim below so
-- that the run's span links back to the request that triggered it.
ALTER TABLE kiln.runs ADD COLUMN traceparent text;

-- The queues where these tasks have a run to start now, found with a loose index scan per task
-- (one probe per queue the task has runs in), never a pass over another task's backlog. Before,
-- a claim checked each queue for runs of its tasks by scanning that queue's ready runs: behind a
-- backlog of 1,000,000 runs of another app's task, claims slowed to a tenth.
CREATE INDEX ready_task_queue ON kiln.ready (task_id, queue, available_at);

CREATE FUNCTION kiln.task_queues(p_task_ids text[], p_now timestamptz)
RETURNS TABLE (queue text)
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT w.queue
      FROM unnest(p_task_ids) AS t(task_id)
     CROSS JOIN LATERAL (
           WITH RECURSIVE walk AS (
               (SELECT r.queue FROM kiln.ready r WHERE r.task_id = t.task_id
                 ORDER BY r.queue LIMIT 1)
               UNION ALL
               SELECT (SELECT r.queue FROM kiln.ready r
                        WHERE r.task_id = t.task_id AND r.queue > w.queue
                        ORDER BY r.queue LIMIT 1)
                 FROM walk w WHERE w.queue IS NOT NULL
           )
           SELECT w.queue FROM walk w WHERE w.queue IS NOT NULL) w
     WHERE EXISTS (SELECT 1 FROM kiln.ready r
                    WHERE r.task_id = t.task_id AND r.queue = w.queue AND r.available_at <= p_now)
$$;

DROP FUNCTION kiln.claim_runs(text, text[], integer, bigint, timestamptz);

-- Claim up to p_max runs of the given tasks for worker p_worker_id, leasing each for p_lease_ms.
--
-- A queue with a per-key limit is claimed through its key scheduler (see the top of this file):
-- its waiting keys are locked in turn order with SKIP LOCKED, their leases counted in a later
-- statement, and each key gives at most what its limit leaves free. A queue that also has a total
-- limit is, in addition, serialized on its row (FOR UPDATE SKIP LOCKED), since that limit counts
-- every key. A queue without a per-key limit is claimed as before: with a total limit under its
-- row lock, without limits by locking runs one by one (SKIP LOCKED), over its waiting keys
-- (kiln.waiting_keys).
--
-- A row whose run_id is NULL tells the caller that a queue was being claimed by another worker,
-- or may have more runs: try again shortly. Claimers never deadlock: they wait for no lock held by
-- another claimer, except key rows in kiln.schedule_keys (see there).
--
-- Fairness: candidates are taken by rank within their concurrency key first (each key's oldest
-- run before any key's second), then by the key's turn (least recently served first), then by
-- order_at.
--
-- Prefetch: queues without any limit may give up to p_prefetch runs beyond p_max, for the
-- worker's local buffer (returned with `prefetched`). Limited queues give only what p_max allows:
-- a limited run is leased only when a slot waits for it.
CREATE FUNCTION kiln.claim_runs(
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
BEGIN
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
            IF NOT kiln.schedule_keys(q.name, p_now) THEN
                -- Another claimer is rebuilding this queue's keys.
                run_id := NULL; queue := cand.name;
                RETURN NEXT;
                CONTINUE;
            END IF;
            -- The keys to serve, in turn order: at most one per run wanted.
            keys := ARRAY(SELECT k.concurrency_key FROM kiln.queue_keys k
                           WHERE k.queue = q.name AND k.waiting
                           ORDER BY k.turn
                           LIMIT queue_free
                             FOR UPDATE SKIP LOCKED);
            IF cardinality(keys) = 0 THEN
                IF EXISTS (SELECT 1 FROM kiln.queue_keys k WHERE k.queue = q.name AND k.waiting) THEN
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
            served AS (
                -- A queue without a per-key limit keeps "last served" for fairness between its
                -- keys; one with a single waiting key skips it, so that parallel claimers of an
                -- unkeyed queue never wait on a shared row. In key order, so that parallel
                -- claimers take these row locks in the same order and cannot deadlock.
                INSERT INTO kiln.queue_keys AS k (queue, concurrency_key, last_served_at)
                SELECT DISTINCT q.name, s.lease_key, p_now FROM started s
                 WHERE NOT keyed AND (cardinality(keys) > 1 OR NOT unlimited)
                 ORDER BY 2
                ON CONFLICT ON CONSTRAINT queue_keys_pkey DO UPDATE SET last_served_at = excluded.last_served_at
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
            -- last looked at it). A key that showed more runs than were taken keeps waiting; a
            -- full one too (its runs start when a slot frees); a drained one says,
            -- read after the runs were taken, whether it has a run to start now or when it may
            -- next have one. One index probe per key (= ANY), never a pass over the queue's keys.
            UPDATE kiln.queue_keys k
               SET turn = nextval('kiln.queue_key_turns'), last_served_at = p_now
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

-- The parent takes a slot again to resume: under the locks a claim of its queue takes (the key's
-- row for a per-key limit, the queue's row for a total limit), the limits are checked against the
-- leases: 'resumed' (the wait is a lease again and the run is `executing`), 'full' (no slot now:
-- try again when one frees up) or 'lost' (the wait is gone: rescued after a stall). With p_force,
-- the limits are not checked: a canceled or interrupted parent takes its lease back only to record
-- how its attempt ended.
CREATE OR REPLACE FUNCTION kiln.wait_resume(
    p_run_id uuid,
    p_attempt integer,
    p_lease_ms bigint,
    p_force boolean DEFAULT false,
    p_now timestamptz DEFAULT now())
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    w kiln.waits;
    q record;
BEGIN
    SELECT * INTO w FROM kiln.waits WHERE run_id = p_run_id AND attempt = p_attempt;
    IF NOT FOUND THEN
        RETURN 'lost';
    END IF;
    IF NOT p_force THEN
        SELECT qu.name, coalesce(qu.limit_override, qu.concurrency_limit) AS per_key_limit,
               qu.total_limit
          INTO q FROM kiln.queues qu WHERE qu.name = w.queue;
        IF q.total_limit IS NOT NULL THEN
            -- Claims hold this lock only for their statement: waiting for it is brief.
            PERFORM 1 FROM kiln.queues qu WHERE qu.name = w.queue FOR UPDATE;
        END IF;
        IF q.per_key_limit IS NOT NULL THEN
            INSERT INTO kiln.queue_keys (queue, concurrency_key) VALUES (w.queue, w.concurrency_key)
            ON CONFLICT ON CONSTRAINT queue_keys_pkey DO NOTHING;
            PERFORM 1 FROM kiln.queue_keys k
             WHERE k.queue = w.queue AND k.concurrency_key = w.concurrency_key FOR UPDATE;
        END IF;
        IF q.total_limit IS NOT NULL
           AND (SELECT count(*) FROM kiln.leases l WHERE l.queue = w.queue) >= q.total_limit THEN
            RETURN 'full';
        END IF;
        IF q.per_key_limit IS NOT NULL
           AND (SELECT count(*) FROM kiln.leases l
                 WHERE l.queue = w.queue AND l.concurrency_key = w.concurrency_key)
               >= q.per_key_limit THEN
            RETURN 'full';
        END IF;
    END IF;
    DELETE FROM kiln.waits WHERE run_id = p_run_id AND attempt = p_attempt;
    INSERT INTO kiln.leases (run_id, attempt, task_id, queue, concurrency_key, worker_id,
                             started_at, expires_at)
    VALUES (w.run_id, w.attempt, w.task_id, w.queue, w.concurrency_key, w.worker_id,
            w.started_at, p_now + p_lease_ms * interval '1 millisecond');
    UPDATE kiln.runs SET status = 'executing', updated_at = p_now
     WHERE id = p_run_id AND status = 'waiting';
    RETURN 'resumed';
END
$$;

-- Runs queued before this migration have no wakeups: every queue rebuilds its keys once.
UPDATE kiln.queues SET keys_synced = false;
