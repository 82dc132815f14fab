-- Run log lines are stored as chunks: the lines one worker flush wrote for one attempt, as one
-- row of parallel arrays. A body that logs ten lines per run then costs the database about one
-- row per run instead of ten (measured in BENCHMARKS.md, "run logs"). kiln.run_logs stays as a
-- view with one row per line, for SQL readers.
CREATE TABLE kiln.run_log_chunks (
    run_id    uuid NOT NULL,
    attempt   integer NOT NULL,
    first_seq integer NOT NULL,
    last_seq  integer NOT NULL,
    -- One element per line, in seq order.
    seqs      integer[] NOT NULL,
    ats       timestamptz[] NOT NULL,
    levels    text[] NOT NULL,
    messages  text[] NOT NULL,
    -- Each line's fields as JSON text, written by the worker's serializer: stored as text, they
    -- cost no parsing on the write path, which runs far more often than reads.
    fields    text[] NOT NULL,
    PRIMARY KEY (run_id, attempt, first_seq)
);

INSERT INTO kiln.run_log_chunks (run_id, attempt, first_seq, last_seq, seqs, ats, levels, messages, fields)
SELECT run_id, attempt, seq, seq, ARRAY[seq], ARRAY[at], ARRAY[level], ARRAY[message], ARRAY[fields::text]
  FROM kiln.run_logs;

DROP TABLE kiln.run_logs;

CREATE VIEW kiln.run_logs AS
SELECT c.run_id, c.attempt, l.seq, l.at, l.level, l.message, l.fields::jsonb AS fields
  FROM kiln.run_log_chunks c
 CROSS JOIN LATERAL unnest(c.seqs, c.ats, c.levels, c.messages, c.fields)
       AS l(seq, at, level, message, fields);
