-- Cron schedules (declarative from task!, imperative from the client) and parents waiting on
-- their children.

-- A schedule fires its task once per tick of `cron` in `timezone`. `next_run_at` is the next
-- nominal tick still to fire; the scheduler fires the schedules whose tick is due, locking each
-- row with SKIP LOCKED, and records every fired tick in kiln.schedule_ticks (primary key:
-- schedule + tick), so a tick fires exactly once however many schedulers run.
CREATE TABLE kiln.schedules (
    id           uuid PRIMARY KEY DEFAULT kiln.uuid_v7(),
    task_id      text NOT NULL,
    cron         text NOT NULL,
    timezone     text NOT NULL DEFAULT 'UTC',
    external_id  text,
    -- Makes create an upsert: a second create with the same key updates the schedule.
    dedup_key    text,
    -- Declared on the task in code (synced by workers at start); at most one per task.
    declarative  boolean NOT NULL DEFAULT false,
    active       boolean NOT NULL DEFAULT true,
    next_run_at  timestamptz,
    last_run_at  timestamptz,
    last_run_id  uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX schedules_dedup_key ON kiln.schedules (dedup_key) WHERE dedup_key IS NOT NULL;
CREATE UNIQUE INDEX schedules_declarative ON kiln.schedules (task_id) WHERE declarative;
CREATE INDEX schedules_due ON kiln.schedules (next_run_at) WHERE active;
CREATE INDEX schedules_task_id ON kiln.schedules (task_id);

-- One row per fired tick: the exactly-once guard and the schedule's history.
CREATE TABLE kiln.schedule_ticks (
    schedule_id uuid NOT NULL,
    tick        timestamptz NOT NULL,
    -- Set in the same transaction, once the tick's run is inserted.
    run_id      uuid,
    fired_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, tick)
);

-- Parents waiting on children. A waiting parent's lease moves here from kiln.leases, so it no
-- longer counts against its queue's limits (its slot is free for its children). The worker that
-- holds the parent keeps extending `expires_at`; if it dies, the row expires, moves back to
-- kiln.leases as an expired lease, and the rescuer retries the parent, which re-attaches to the
-- children it started.
CREATE TABLE kiln.waits (
    run_id          uuid PRIMARY KEY,
    attempt         integer NOT NULL,
    task_id         text NOT NULL,
    queue           text NOT NULL,
    concurrency_key text NOT NULL DEFAULT '',
    worker_id       text NOT NULL,
    started_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    waiting_since   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX waits_expires_at ON kiln.waits (expires_at);

-- The parent gives its slot back: its lease (this attempt, this worker) moves to kiln.waits and
-- the run is `waiting`. Claimers of the queue are woken, since a slot was freed. False when the
-- lease is no longer held (rescued or already ended).
CREATE FUNCTION kiln.wait_begin(p_run_id uuid, p_attempt integer, p_worker_id text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    l kiln.leases;
BEGIN
    DELETE FROM kiln.leases
     WHERE run_id = p_run_id AND attempt = p_attempt AND worker_id = p_worker_id
    RETURNING * INTO l;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO kiln.waits (run_id, attempt, task_id, queue, concurrency_key, worker_id,
                            started_at, expires_at)
    VALUES (l.run_id, l.attempt, l.task_id, l.queue, l.concurrency_key, l.worker_id,
            l.started_at, l.expires_at);
    UPDATE kiln.runs SET status = 'waiting', updated_at = now()
     WHERE id = p_run_id AND status = 'executing';
    IF EXISTS (SELECT 1 FROM kiln.ready r WHERE r.queue = l.queue) THEN
        PERFORM pg_notify('kiln_ready', l.queue);
    END IF;
    RETURN true;
END
$$;

-- The parent takes a slot again to resume. Under the same per-queue lock as kiln.claim_runs, the
-- queue's limits are checked against the leases: 'resumed' (the wait is a lease again and the
-- run is `executing`), 'full' (no slot now: try again when one frees up) or 'lost' (the wait is
-- gone: rescued after a stall). With p_force, the limits are not checked: a canceled or
-- interrupted parent takes its lease back only to record how its attempt ended.
CREATE FUNCTION kiln.wait_resume(
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
        IF q.per_key_limit IS NOT NULL OR q.total_limit IS NOT NULL THEN
            -- Claims hold this lock only for their statement: waiting for it is brief.
            PERFORM 1 FROM kiln.queues qu WHERE qu.name = w.queue FOR UPDATE;
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

-- Waits whose holder stopped extending them become expired leases again, for the rescuer.
CREATE FUNCTION kiln.wait_expire(p_now timestamptz DEFAULT now()) RETURNS integer
LANGUAGE sql AS $$
    WITH expired AS (
        DELETE FROM kiln.waits w WHERE w.expires_at < p_now
        RETURNING w.*
    ), moved AS (
        INSERT INTO kiln.leases (run_id, attempt, task_id, queue, concurrency_key, worker_id,
                                 started_at, expires_at)
        SELECT e.run_id, e.attempt, e.task_id, e.queue, e.concurrency_key, e.worker_id,
               e.started_at, e.expires_at
          FROM expired e
        ON CONFLICT (run_id) DO NOTHING
        RETURNING run_id
    )
    SELECT count(*)::integer FROM moved
$$;
