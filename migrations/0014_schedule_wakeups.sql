-- Schedulers sleep until the next due tick instead of polling once a second, so a tick fires at
-- its boundary. A change to when schedules are due (a schedule created, deleted, activated,
-- deactivated, or its next tick moved, including by a fire) wakes them early to re-read it: one
-- notification per statement on `kiln_schedules`.

CREATE FUNCTION kiln.notify_schedules() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kiln_schedules', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER schedules_notify AFTER INSERT OR DELETE OR UPDATE OF next_run_at, active
    ON kiln.schedules
    FOR EACH STATEMENT EXECUTE FUNCTION kiln.notify_schedules();
