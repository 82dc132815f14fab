-- The worker processes: each registers itself at start and its heartbeat keeps last_seen_at
-- fresh, so operators see which workers are alive, what they run, and which are draining.
CREATE TABLE kiln.workers (
    id           text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    version      text NOT NULL,
    tasks        text[] NOT NULL,
    concurrency  integer NOT NULL,
    heartbeat_ms bigint NOT NULL,
    state        text NOT NULL CHECK (state IN ('running', 'draining', 'stopped')),
    in_flight    integer NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
