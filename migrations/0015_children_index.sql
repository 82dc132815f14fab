-- A run's children are listed newest first, a page at a time, and counted by status on the
-- parent's page. The index on parent_run_id alone made a page of a 250,000-child fan-out sort
-- every child (hundreds of milliseconds); with the id beside the parent, a page is read from the
-- index in id order, like the pages of one task or one queue. The old index is dropped: every
-- query that used it (children counts, the rescue of waiting parents, retention) leads with
-- parent_run_id and is served by the new one.
CREATE INDEX runs_parent_run_id_id ON kiln.runs (parent_run_id, id) WHERE parent_run_id IS NOT NULL;
DROP INDEX kiln.runs_parent_run_id;
