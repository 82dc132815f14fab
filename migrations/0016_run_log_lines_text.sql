-- A chunk's lines are stored as text: one JSON array per line, [seq, at, level, message, fields],
-- lines separated by newlines (JSON escapes any newline inside a string). Written as it is, the
-- text costs the database no parsing and no regrouping: storing 10,000 lines of 909 attempts
-- took 38 ms as parallel arrays (unnest, sort and array_agg per attempt) and takes 7 ms as text
-- (BENCHMARKS.md, run logs). Lines are parsed when read, which is far rarer than writing.
-- Chunks written before keep their arrays; each chunk holds one form or the other.
ALTER TABLE kiln.run_log_chunks
    ADD COLUMN lines text,
    ALTER COLUMN seqs DROP NOT NULL,
    ALTER COLUMN ats DROP NOT NULL,
    ALTER COLUMN levels DROP NOT NULL,
    ALTER COLUMN messages DROP NOT NULL,
    ALTER COLUMN fields DROP NOT NULL;

ALTER TABLE kiln.run_log_chunks
    ADD CONSTRAINT run_log_chunks_one_form CHECK (
        (lines IS NOT NULL AND seqs IS NULL AND ats IS NULL AND levels IS NULL
             AND messages IS NULL AND fields IS NULL)
        OR (lines IS NULL AND seqs IS NOT NULL AND ats IS NOT NULL AND levels IS NOT NULL
             AND messages IS NOT NULL AND fields IS NOT NULL));

-- One line of a text chunk, parsed.
CREATE FUNCTION kiln.run_log_chunk_lines(p_lines text)
RETURNS TABLE (seq integer, at timestamptz, level text, message text, fields jsonb)
LANGUAGE sql STABLE STRICT AS $$
    SELECT (j->>0)::int, (j->>1)::timestamptz, j->>2, j->>3, j->4
      FROM unnest(string_to_array(p_lines, E'\n')) AS t(line)
     CROSS JOIN LATERAL (SELECT t.line::jsonb AS j) parsed
$$;

CREATE OR REPLACE VIEW kiln.run_logs AS
SELECT c.run_id, c.attempt, l.seq, l.at, l.level, l.message, l.fields::jsonb AS fields
  FROM kiln.run_log_chunks c
 CROSS JOIN LATERAL unnest(c.seqs, c.ats, c.levels, c.messages, c.fields)
       AS l(seq, at, level, message, fields)
 WHERE c.lines IS NULL
UNION ALL
SELECT c.run_id, c.attempt, l.seq, l.at, l.level, l.message, l.fields
  FROM kiln.run_log_chunks c
 CROSS JOIN LATERAL kiln.run_log_chunk_lines(c.lines) AS l
 WHERE c.lines IS NOT NULL;
