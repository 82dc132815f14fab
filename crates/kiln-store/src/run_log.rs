//! `kiln.run_log_chunks`: the log lines of each run's attempts, stored as one row per attempt
//! and flush.

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
/// `seq` order). A chunk already stored (same run, attempt and first line) is replaced only by a
/// longer one, so a batch retried after a lost answer, with later lines appended, neither fails
/// nor loses them.
pub async fn run_log_insert_many(pool: &Pool, lines: &[NewLogLine]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut run_ids = Vec::with_capacity(lines.len());
    let mut attempts = Vec::with_capacity(lines.len());
    let mut seqs = Vec::with_capacity(lines.len());
    let mut ats = Vec::with_capacity(lines.len());
    let mut levels = Vec::with_capacity(lines.len());
    let mut messages = Vec::with_capacity(lines.len());
    let mut fields = Vec::with_capacity(lines.len());
    for line in lines {
        run_ids.push(line.run_id);
        attempts.push(line.attempt as i32);
        seqs.push(line.seq as i32);
        ats.push(line.at);
        levels.push(line.level.as_str());
        messages.push(line.message.as_str());
        fields.push(line.fields.as_str());
    }
    sqlx::query(
        "INSERT INTO kiln.run_log_chunks AS c
                (run_id, attempt, first_seq, last_seq, seqs, ats, levels, messages, fields)
         SELECT run_id, attempt, min(seq), max(seq), array_agg(seq ORDER BY seq),
                array_agg(at ORDER BY seq), array_agg(level ORDER BY seq),
                array_agg(message ORDER BY seq), array_agg(fields ORDER BY seq)
           FROM unnest($1::uuid[], $2::int[], $3::int[], $4::timestamptz[], $5::text[],
                       $6::text[], $7::text[]) AS l(run_id, attempt, seq, at, level, message, fields)
          GROUP BY run_id, attempt
         ON CONFLICT (run_id, attempt, first_seq) DO UPDATE
            SET last_seq = EXCLUDED.last_seq, seqs = EXCLUDED.seqs, ats = EXCLUDED.ats,
                levels = EXCLUDED.levels, messages = EXCLUDED.messages, fields = EXCLUDED.fields
          WHERE EXCLUDED.last_seq > c.last_seq",
    )
    .bind(&run_ids)
    .bind(&attempts)
    .bind(&seqs)
    .bind(&ats)
    .bind(&levels)
    .bind(&messages)
    .bind(&fields)
    .execute(pool)
    .await
    .map_err(db("storing log lines"))?;
    Ok(())
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
        "SELECT c.attempt, l.seq, l.at, l.level, l.message, l.fields::jsonb
           FROM kiln.run_log_chunks c
          CROSS JOIN LATERAL unnest(c.seqs, c.ats, c.levels, c.messages, c.fields)
                AS l(seq, at, level, message, fields)
          WHERE c.run_id = $1 AND ($2::int IS NULL OR c.attempt = $2)
            AND (c.attempt, c.last_seq) > ($3, $4)
            AND (c.attempt, l.seq) > ($3, $4)
          ORDER BY c.attempt, l.seq
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
