-- A task's payload JSON Schema (from `payload_schema: true` in `task!`): untyped triggers are
-- checked against it before a run is queued.
ALTER TABLE kiln.tasks ADD COLUMN payload_schema jsonb;
