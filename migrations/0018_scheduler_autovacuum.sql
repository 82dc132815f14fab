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
