-- The hot functions plan each statement once per connection.
--
-- PL/pgSQL caches a plan per statement, but with plan_cache_mode = auto it plans each of the
-- first five calls anew for the parameter values, and keeps doing so for as long as the generic
-- plan looks costlier. For kiln.claim_runs it always did: under its enable_seqscan = off, any
-- generic plan holding a sequential scan of a small table carries the planner's disable cost.
-- Measured in psql on a warm connection, one run triggered and claimed: the claim took
-- 1.6-1.9 ms, almost all of it planning, and 0.6-0.7 ms with generic plans; the trigger took
-- 1.2-1.6 ms and 0.8-0.9 ms. Enqueue-to-start latency fell from p50 4.6 ms to 2.3-2.6 ms.
--
-- Every statement in these functions is written for one access path (index probes by key or by
-- run id), so a generic plan is the plan a custom one would be. A later CREATE OR REPLACE of one
-- of them resets its settings: it must state `SET plan_cache_mode = force_generic_plan` again.
ALTER FUNCTION kiln.trigger_runs(text, jsonb[], jsonb, boolean, timestamptz)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION kiln.claim_runs(text, text[], integer, bigint, timestamptz, integer)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION kiln.schedule_keys(text, timestamptz)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION kiln.notify_ready()
    SET plan_cache_mode = force_generic_plan;
