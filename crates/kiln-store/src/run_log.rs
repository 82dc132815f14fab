//! `kiln.run_log_chunks`: the log lines of each run's attempts, stored as one row per attempt
//! and flush, the lines as text (chunks written before migration 0016 hold parallel arrays).

use chrono::{DateTime, Utc};
use kiln_core::{LogLevel, LogLine};
use uuid::Uuid;

use crate::error::db;
use crate::{Pool, Result, StoreError};

/// A line to store, with the run it belongs to.
#[derive(Debug, Clone)]
pub struct NewLogLine {
    /// The run.
    pub run_id: Uuid,
    /// Its attempt.
    pub attempt: u32,
    /// The line's position in the attempt, from 1.
    pub seq: u32,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// Its level.
    pub level: LogLevel,
    /// Its message.
    pub message: String,
    /// Its fields: a JSON object, as JSON text (it is stored as it is).
    pub fields: String,
}

/// Stores lines in one statement, as one chunk row per attempt (`kiln.run_log_chunks`, lines in
/// `seq` order, as text: one JSON array `[seq, at, level, message, fields]` per line, lines
/// separated by newlines). A chunk already stored (same run, attempt and first line) is replaced
/// only by a longer one, so a batch retried after a lost answer, with later lines appended,
/// neither fails nor loses them.
pub async fn run_log_insert_many(pool: &Pool, lines: &[NewLogLine]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut ordered: Vec<&NewLogLine> = lines.iter().collect();
    ordered.sort_by_key(|line| (line.run_id, line.attempt, line.seq));
    let mut run_ids = Vec::new();
    let mut attempts = Vec::new();
    let mut first_seqs = Vec::new();
    let mut last_seqs = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for line in ordered {
        let same_chunk =
            run_ids.last() == Some(&line.run_id) && attempts.last() == Some(&(line.attempt as i32));
        if same_chunk {
            *last_seqs.last_mut().expect("a chunk has a last line") = line.seq as i32;
            let text = texts.last_mut().expect("a chunk has text");
            text.push('\n');
            push_line_text(text, line);
        } else {
            run_ids.push(line.run_id);
            attempts.push(line.attempt as i32);
            first_seqs.push(line.seq as i32);
            last_seqs.push(line.seq as i32);
            let mut text = String::with_capacity(96);
            push_line_text(&mut text, line);
            texts.push(text);
        }
    }
    sqlx::query(
        "INSERT INTO kiln.run_log_chunks AS c (run_id, attempt, first_seq, last_seq, lines)
         SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::int[], $5::text[])
         ON CONFLICT (run_id, attempt, first_seq) DO UPDATE
            SET last_seq = EXCLUDED.last_seq, lines = EXCLUDED.lines, seqs = NULL, ats = NULL,
                levels = NULL, messages = NULL, fields = NULL
          WHERE EXCLUDED.last_seq > c.last_seq",
    )
    .bind(&run_ids)
    .bind(&attempts)
    .bind(&first_seqs)
    .bind(&last_seqs)
    .bind(&texts)
    .execute(pool)
    .await
    .map_err(db("storing log lines"))?;
    Ok(())
}

/// Appends `line` as the JSON array `[seq, at, level, message, fields]`. Its fields are JSON
/// text already (the worker's serializer wrote them), so they go in as they are.
fn push_line_text(text: &mut String, line: &NewLogLine) {
    use std::fmt::Write as _;
    let _ = write!(
        text,
        "[{},\"{}\",\"{}\",",
        line.seq,
        line.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        line.level.as_str()
    );
    text.push_str(&serde_json::to_string(&line.message).expect("a string serializes"));
    text.push(',');
    text.push_str(if line.fields.is_empty() {
        "{}"
    } else {
        &line.fields
    });
    text.push(']');
}

/// Up to `limit` lines of a run in order (attempt, then position), of one attempt when given,
/// after the line `after` = (attempt, seq) when given.
pub async fn run_log_list(
    pool: &Pool,
    run_id: Uuid,
    attempt: Option<u32>,
    after: Option<(u32, u32)>,
    limit: u32,
) -> Result<Vec<LogLine>> {
    let (after_attempt, after_seq) = after.map_or((0, 0), |(a, s)| (a as i32, s as i32));
    let rows: Vec<(i32, i32, DateTime<Utc>, String, String, serde_json::Value)> = sqlx::query_as(
        "WITH chunks AS MATERIALIZED (
             SELECT c.* FROM kiln.run_log_chunks c
              WHERE c.run_id = $1 AND ($2::int IS NULL OR c.attempt = $2)
                AND (c.attempt, c.last_seq) > ($3, $4))
         SELECT * FROM (
             SELECT c.attempt, l.seq, l.at, l.level, l.message, l.fields::jsonb AS fields
               FROM chunks c
              CROSS JOIN LATERAL unnest(c.seqs, c.ats, c.levels, c.messages, c.fields)
                    AS l(seq, at, level, message, fields)
              WHERE c.lines IS NULL
             UNION ALL
             SELECT c.attempt, l.seq, l.at, l.level, l.message, l.fields
               FROM chunks c
              CROSS JOIN LATERAL kiln.run_log_chunk_lines(c.lines) AS l
              WHERE c.lines IS NOT NULL) l
          WHERE (l.attempt, l.seq) > ($3, $4)
          ORDER BY l.attempt, l.seq
          LIMIT $5",
    )
    .bind(run_id)
    .bind(attempt.map(|a| a as i32))
    .bind(after_attempt)
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db("reading log lines"))?;
    rows.into_iter()
        .map(|(attempt, seq, at, level, message, fields)| {
            Ok(LogLine {
                attempt: attempt as u32,
                seq: seq as u32,
                at,
                level: level.parse().map_err(StoreError::Invalid)?,
                message,
                fields,
            })
        })
        .collect()
}
