-- Upkeep of the key scheduler's tables.
--
-- The key scheduler's tables are read by every keyed claim from the low end of an index: the
-- queue's oldest wakeups (kiln.key_wakeups), the keys first in line (kiln.queue_keys). Consumed
-- wakeups, and keys moved to the back of the line, leave dead entries there that each claim steps
-- over until a vacuum removes them: after a fan-out of 500,000 runs over 100,000 keys, a claim of
-- 200 runs read 3,000 pages of consumed wakeups (16.5 ms; 9.6 ms once vacuumed).
--
-- Workers vacuum these tables themselves when they hold many dead rows (the maintenance pass,
-- when the worker's role owns them). For a role that does not, autovacuum is told to come after a
-- fixed number of dead rows rather than a fifth of the table: these tables are small and all churn.
ALTER TABLE kiln.key_wakeups SET (autovacuum_vacuum_scale_factor = 0,
                                  autovacuum_vacuum_threshold = 10000);
ALTER TABLE kiln.queue_keys SET (autovacuum_vacuum_scale_factor = 0,
                                 autovacuum_vacuum_threshold = 10000);

-- Parked keys whose time has come are woken 10,000 at a time, like wakeups: the oldest first (the
-- parked index gives them in next_at order), the rest by the next claims. When many parked keys
-- came due at once (a fan-out over 100,000 workspaces delayed to one time), the first claim after
-- that time woke them all in one statement. The rest of the function is as in migration 0012.
CREATE OR REPLACE FUNCTION kiln.schedule_keys(p_queue text, p_now timestamptz) RETURNS boolean
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
         ORDER BY k.next_at LIMIT 10000
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
