-- Every statement that locks several rows takes them in one order: queues, ready, leases, waits,
-- runs, queue_keys, and within a table ORDER BY its key (docs/architecture.md, "Lock order").

-- Waits whose holder stopped extending them become expired leases again, for the rescuer. Rows
-- are locked in run_id order and skipped when another rescuer (or a heartbeat) holds them.
CREATE OR REPLACE FUNCTION kiln.wait_expire(p_now timestamptz DEFAULT now()) RETURNS integer
LANGUAGE sql AS $$
    WITH stale AS MATERIALIZED (
        SELECT w.run_id FROM kiln.waits w WHERE w.expires_at < p_now
         ORDER BY w.run_id
           FOR UPDATE SKIP LOCKED
    ), expired AS (
        DELETE FROM kiln.waits w USING stale s WHERE w.run_id = s.run_id
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
