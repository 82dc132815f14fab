-- Log lines task bodies write (`ctx.log()`), kept with their run and attempt, written in
-- batches by each worker and deleted with their run by retention.
CREATE TABLE kiln.run_logs (
    run_id  uuid NOT NULL,
    attempt integer NOT NULL,
    seq     integer NOT NULL,
    at      timestamptz NOT NULL,
    level   text NOT NULL,
    message text NOT NULL,
    fields  jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, attempt, seq)
);
