-- Runs that finished without success, listed by status without reading the history.
--
-- `kiln.runs` has no index on `status`, on purpose: a status change then touches no index, and
-- stays a HOT update (a partial index on status would break that, since its predicate reads the
-- column). So a status-filtered listing reads the runs its other filters select, newest first,
-- and keeps those with the status, at most 10,000 a page: on a 1,000,000-run history, a page of
-- `system_failure` runs of one task took 50 ms and showed nothing (none among the 10,000 read),
-- with a cursor to read on. Operators look for failures most.
--
-- Each run that reaches failed, canceled, crashed, timed_out, expired or system_failure gets one
-- row here, written by a row trigger whose WHEN clause is false for every other change (claims,
-- completions, retries), so those pay nothing. Listings of one of these statuses read this table
-- in run id order, by status or by task and status, and look up only the runs it names. Final
-- statuses never change, so rows are only inserted, and deleted with their run.

CREATE TABLE kiln.run_failures (
    run_id  uuid PRIMARY KEY,
    status  kiln.run_status NOT NULL,
    task_id text NOT NULL
);
CREATE INDEX run_failures_status ON kiln.run_failures (status, run_id);
CREATE INDEX run_failures_task ON kiln.run_failures (task_id, status, run_id);

CREATE FUNCTION kiln.record_run_failure() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO kiln.run_failures (run_id, status, task_id)
    VALUES (NEW.id, NEW.status, NEW.task_id)
    ON CONFLICT (run_id) DO UPDATE SET status = excluded.status;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_failure_inserted AFTER INSERT ON kiln.runs
    FOR EACH ROW
    WHEN (NEW.status IN ('failed', 'canceled', 'crashed', 'timed_out', 'expired', 'system_failure'))
    EXECUTE FUNCTION kiln.record_run_failure();
CREATE TRIGGER runs_failure_updated AFTER UPDATE OF status ON kiln.runs
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status
          AND NEW.status IN ('failed', 'canceled', 'crashed', 'timed_out', 'expired', 'system_failure'))
    EXECUTE FUNCTION kiln.record_run_failure();

-- The runs that already finished so.
INSERT INTO kiln.run_failures (run_id, status, task_id)
SELECT r.id, r.status, r.task_id FROM kiln.runs r
 WHERE r.status IN ('failed', 'canceled', 'crashed', 'timed_out', 'expired', 'system_failure');
