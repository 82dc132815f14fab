-- Kiln core schema: tasks, queues, runs (history), ready (claimable), leases (executing), attempts.
--
-- Shape of the hot path (see docs/architecture.md):
--   * `runs` keeps every run for history. Its status columns carry no index, so the claim and the
--     completion update it by primary key as HOT updates. A run is updated twice (claimed,
--     finished): fillfactor 50 leaves room for both versions on the page. At 80, two thirds of
--     the updates were measured non-HOT, each adding entries to every index of the table.
--   * `ready` holds the runs that wait to be claimed: a claim is DELETE ... RETURNING.
--   * `leases` holds the runs that execute: one row per in-flight attempt. Concurrency limits count
--     these rows under a per-queue row lock taken only for the claim, so the count cannot drift.
--   * `attempts` gets one row per attempt, written once when the attempt ends.

CREATE SCHEMA IF NOT EXISTS kiln;

CREATE TYPE kiln.run_status AS ENUM (
    'delayed', 'queued', 'executing', 'waiting',
    'completed', 'failed', 'canceled', 'crashed', 'timed_out', 'expired', 'system_failure'
);

-- Time-ordered v7 UUIDs generated in the database, so SQL callers get the same ids as Rust callers.
CREATE FUNCTION kiln.uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- Every task a worker has registered, with the defaults its definition declares.
CREATE TABLE kiln.tasks (
    id              text PRIMARY KEY,
    queue           text NOT NULL,
    description     text,
    max_attempts    integer NOT NULL CHECK (max_attempts >= 1),
    retry           jsonb NOT NULL,
    max_duration_ms bigint CHECK (max_duration_ms > 0),
    ttl_ms          bigint CHECK (ttl_ms > 0),
    priority_s      integer NOT NULL DEFAULT 0,
    registered_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now()
);

-- A queue: its limits and whether it is paused. `limit_override` is the operator's setting and
-- wins over the limit that code declares (a worker restart never reverts it).
CREATE TABLE kiln.queues (
    name              text PRIMARY KEY,
    concurrency_limit integer CHECK (concurrency_limit >= 1),
    limit_override    integer CHECK (limit_override >= 0),
    total_limit       integer CHECK (total_limit >= 1),
    paused            boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- When each concurrency key of a queue was last served: the claim prefers keys served least
-- recently (never served first), so a key with a huge backlog cannot starve a new key. Written by
-- the claim; keys idle for a day are dropped. The empty string stands for "no concurrency key".
CREATE TABLE kiln.queue_keys (
    queue           text NOT NULL,
    concurrency_key text NOT NULL,
    last_served_at  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, concurrency_key)
);

CREATE TABLE kiln.runs (
    id                     uuid PRIMARY KEY,
    task_id                text NOT NULL,
    queue                  text NOT NULL,
    concurrency_key        text,
    status                 kiln.run_status NOT NULL,
    payload                jsonb NOT NULL,
    output                 jsonb,
    error                  jsonb,
    -- Number of the latest attempt (fencing token: never decreases).
    attempts               integer NOT NULL DEFAULT 0,
    -- Attempts handed back on graceful shutdown; they do not count against max_attempts.
    released_attempts      integer NOT NULL DEFAULT 0,
    max_attempts           integer NOT NULL CHECK (max_attempts >= 1),
    retry                  jsonb NOT NULL,
    max_duration_ms        bigint,
    priority_s             integer NOT NULL DEFAULT 0,
    tags                   text[] NOT NULL DEFAULT '{}',
    metadata               jsonb NOT NULL DEFAULT '{}',
    idempotency_key        text,
    idempotency_expires_at timestamptz,
    parent_run_id          uuid,
    root_run_id            uuid,
    replay_of              uuid,
    created_at             timestamptz NOT NULL DEFAULT now(),
    available_at           timestamptz NOT NULL DEFAULT now(),
    expires_at             timestamptz,
    started_at             timestamptz,
    finished_at            timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);

-- Indexes only on columns that never change after insert (so status updates stay HOT), except the
-- idempotency key, which is cleared when a run fails (rare).
CREATE UNIQUE INDEX runs_idempotency_key ON kiln.runs (task_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_task_id ON kiln.runs (task_id, id);
CREATE INDEX runs_queue ON kiln.runs (queue, id);
CREATE INDEX runs_concurrency_key ON kiln.runs (concurrency_key, id) WHERE concurrency_key IS NOT NULL;
-- Partial: most runs carry no tags, and an empty array would still cost a GIN entry.
CREATE INDEX runs_tags ON kiln.runs USING gin (tags) WHERE tags <> '{}';
CREATE INDEX runs_parent_run_id ON kiln.runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

-- Runs waiting to be claimed (queued, delayed, or queued for a retry with a future available_at).
CREATE TABLE kiln.ready (
    run_id          uuid PRIMARY KEY,
    task_id         text NOT NULL,
    queue           text NOT NULL,
    concurrency_key text NOT NULL DEFAULT '',
    available_at    timestamptz NOT NULL,
    -- Claim order: available_at minus the priority head start.
    order_at        timestamptz NOT NULL,
    expires_at      timestamptz,
    delayed         boolean NOT NULL DEFAULT false
);
CREATE INDEX ready_claim ON kiln.ready (queue, concurrency_key, order_at);
CREATE INDEX ready_delayed ON kiln.ready (available_at) WHERE delayed;
CREATE INDEX ready_expires ON kiln.ready (expires_at) WHERE expires_at IS NOT NULL;

-- Runs executing now: one row per in-flight attempt. A completion must present the attempt
-- number of the lease it holds; a stale worker's completion matches no row and is ignored.
CREATE TABLE kiln.leases (
    run_id          uuid PRIMARY KEY,
    attempt         integer NOT NULL,
    task_id         text NOT NULL,
    queue           text NOT NULL,
    concurrency_key text NOT NULL DEFAULT '',
    worker_id       text NOT NULL,
    started_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL
) WITH (fillfactor = 70);
CREATE INDEX leases_queue ON kiln.leases (queue, concurrency_key);

-- One row per finished attempt.
CREATE TABLE kiln.attempts (
    run_id      uuid NOT NULL,
    number      integer NOT NULL,
    worker_id   text NOT NULL,
    status      text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    error       jsonb,
    PRIMARY KEY (run_id, number)
);

-- Wake workers when claimable runs arrive: one notification per statement and queue.
CREATE FUNCTION kiln.notify_ready() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kiln_ready', q.queue)
    FROM (SELECT DISTINCT n.queue FROM new_rows n) q;
    RETURN NULL;
END
$$;

CREATE TRIGGER ready_notify AFTER INSERT ON kiln.ready
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kiln.notify_ready();
