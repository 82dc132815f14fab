//! `kiln.runs` and `kiln.attempts`: inserting, reading, listing, canceling and replaying runs.

use chrono::{DateTime, Utc};
use kiln_core::{
    Attempt, CancelOutcome, ChildCounts, Delay, ErrorRecord, Run, RunFilter, RunPage, RunStatus,
    TaskDefinition, TriggerOptions, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
};
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::error::db;
use crate::{Pool, Result, StoreError};

/// One run to insert: its payload and options.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The payload, as JSON.
    pub payload: serde_json::Value,
    /// The caller's options.
    pub options: TriggerOptions,
}

/// What a trigger produced for one spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertedRun {
    /// The run's id (an existing run's when cached).
    pub id: Uuid,
    /// True when a live idempotency key returned an existing run.
    pub is_cached: bool,
}

/// Milliseconds as a JSON number, saturating (the validator refuses what is out of range).
fn millis(duration: std::time::Duration) -> serde_json::Value {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .into()
}

/// The JSON spec `kiln.trigger_runs` takes for one run (its internal form). The run's root is
/// not sent: the database derives it from the parent. `ambient` is the current span's trace
/// context, stored when the spec sets none.
fn spec_json(spec: &RunSpec, ambient: Option<&str>) -> serde_json::Value {
    let o = &spec.options;
    let mut map = serde_json::Map::new();
    map.insert("payload".into(), spec.payload.clone());
    let mut put = |key: &str, value: serde_json::Value| {
        map.insert(key.into(), value);
    };
    if let Some(v) = &o.concurrency_key {
        put("concurrency_key", v.as_str().into());
    }
    if let Some(v) = &o.idempotency_key {
        put("idempotency_key", v.as_str().into());
    }
    if let Some(v) = o.idempotency_key_ttl {
        put("idempotency_key_ttl_ms", millis(v));
    }
    match o.delay {
        Some(Delay::For(d)) => put("delay_ms", millis(d)),
        Some(Delay::Until(at)) => put("delay_until", at.to_rfc3339().into()),
        None => {}
    }
    if let Some(v) = o.ttl {
        put("ttl_ms", millis(v));
    }
    if let Some(v) = o.priority {
        put("priority_s", v.as_secs().into());
    }
    if !o.tags.is_empty() {
        put("tags", o.tags.clone().into());
    }
    if let Some(v) = &o.metadata {
        put("metadata", v.clone());
    }
    if let Some(v) = o.max_attempts {
        put("max_attempts", v.into());
    }
    if let Some(v) = o.max_duration {
        put("max_duration_ms", millis(v));
    }
    if let Some(v) = &o.queue {
        put("queue", v.as_str().into());
    }
    for (key, id) in [
        ("parent_run_id", o.parent_run_id),
        ("replay_of", o.replay_of),
    ] {
        if let Some(id) = id {
            put(key, id.to_string().into());
        }
    }
    if let Some(v) = o.traceparent.as_deref().or(ambient) {
        put("traceparent", v.into());
    }
    serde_json::Value::Object(map)
}

/// The JSON form of a compiled task definition that `kiln.trigger_runs` takes.
pub fn definition_json(definition: &TaskDefinition) -> serde_json::Value {
    serde_json::json!({
        "queue": definition.queue_name(),
        "max_attempts": definition.retry.max_attempts,
        "retry": definition.retry,
        "max_duration_ms": definition.max_duration.map(|d| d.as_millis() as u64),
        "ttl_ms": definition.ttl.map(|d| d.as_millis() as u64),
        "priority_s": definition.priority.as_secs(),
    })
}

/// Inserts runs of one task in one statement, through `kiln.trigger_runs`. `definition` is the
/// caller's compiled definition (typed triggers); `None` uses the registered one. Works on a pool
/// or inside the caller's transaction.
pub async fn run_insert_many<'e>(
    executor: impl PgExecutor<'e>,
    task_id: &str,
    definition: Option<&TaskDefinition>,
    specs: &[RunSpec],
    allow_unregistered: bool,
) -> Result<Vec<InsertedRun>> {
    let ambient = kiln_core::current_traceparent();
    let specs_json: Vec<serde_json::Value> = specs
        .iter()
        .map(|spec| spec_json(spec, ambient.as_deref()))
        .collect();
    let rows: Vec<(i32, Option<Uuid>, bool)> = sqlx::query_as(
        "SELECT idx, run_id, is_cached FROM kiln.trigger_runs($1, $2::jsonb[], $3, $4)",
    )
    .bind(task_id)
    .bind(&specs_json)
    .bind(definition.map(definition_json))
    .bind(allow_unregistered)
    .fetch_all(executor)
    .await
    .map_err(db("triggering runs"))?;
    rows.into_iter()
        .map(|(idx, id, is_cached)| {
            let id = id.ok_or_else(|| {
                StoreError::Invalid(format!(
                    "run {idx} of the batch for task {task_id:?} was neither inserted nor found by \
                     its idempotency key; trigger it again"
                ))
            })?;
            Ok(InsertedRun { id, is_cached })
        })
        .collect()
}

const RUN_COLUMNS: &str = "id, task_id, queue, concurrency_key, status::text AS status, payload,
    output, error, attempts, released_attempts, max_attempts, priority_s, tags, metadata, idempotency_key,
    parent_run_id, root_run_id, replay_of, traceparent, created_at, available_at, expires_at,
    started_at, finished_at, updated_at";

/// [`RUN_COLUMNS`] with payload and output left out (JSON null), for listings that show neither:
/// a page of runs then never loads megabytes of payloads.
fn run_columns(filter: &RunFilter) -> String {
    if filter.summary_only {
        RUN_COLUMNS
            .replacen("payload,", "'null'::jsonb AS payload,", 1)
            .replacen("output,", "NULL::jsonb AS output,", 1)
    } else {
        RUN_COLUMNS.to_owned()
    }
}

fn run_from_row(row: &PgRow) -> std::result::Result<Run, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let error: Option<serde_json::Value> = row.try_get("error")?;
    Ok(Run {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        queue: row.try_get("queue")?,
        concurrency_key: row.try_get("concurrency_key")?,
        status: status
            .parse()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        payload: row.try_get("payload")?,
        output: row.try_get("output")?,
        error: error.and_then(|e| serde_json::from_value::<ErrorRecord>(e).ok()),
        attempts: row.try_get::<i32, _>("attempts")? as u32,
        released_attempts: row.try_get::<i32, _>("released_attempts")? as u32,
        max_attempts: row.try_get::<i32, _>("max_attempts")? as u32,
        priority_s: row.try_get("priority_s")?,
        tags: row.try_get("tags")?,
        metadata: row.try_get("metadata")?,
        idempotency_key: row.try_get("idempotency_key")?,
        parent_run_id: row.try_get("parent_run_id")?,
        root_run_id: row.try_get("root_run_id")?,
        replay_of: row.try_get("replay_of")?,
        traceparent: row.try_get("traceparent")?,
        created_at: row.try_get("created_at")?,
        available_at: row.try_get("available_at")?,
        expires_at: row.try_get("expires_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        updated_at: row.try_get("updated_at")?,
        attempt_list: Vec::new(),
    })
}

fn attempt_from_row(row: &PgRow) -> std::result::Result<Attempt, sqlx::Error> {
    let error: Option<serde_json::Value> = row.try_get("error")?;
    Ok(Attempt {
        number: row.try_get::<i32, _>("number")? as u32,
        worker_id: row.try_get("worker_id")?,
        status: row.try_get("status")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        error: error.and_then(|e| serde_json::from_value(e).ok()),
    })
}

/// One run with its attempts (finished ones, then the executing one if any), or `None`.
pub async fn run_get(pool: &Pool, id: Uuid) -> Result<Option<Run>> {
    let row = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM kiln.runs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db("reading a run"))?;
    let Some(row) = row else { return Ok(None) };
    let mut run = run_from_row(&row).map_err(db("reading a run"))?;
    let attempts = sqlx::query(
        "SELECT number, worker_id, status, started_at, finished_at, error
           FROM kiln.attempts WHERE run_id = $1
         UNION ALL
         SELECT attempt, worker_id, 'executing', started_at, NULL, NULL
           FROM kiln.leases WHERE run_id = $1
         UNION ALL
         SELECT attempt, worker_id, 'waiting', started_at, NULL, NULL
           FROM kiln.waits WHERE run_id = $1
         ORDER BY 1",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(db("reading a run's attempts"))?;
    run.attempt_list = attempts
        .iter()
        .map(attempt_from_row)
        .collect::<std::result::Result<_, _>>()
        .map_err(db("reading a run's attempts"))?;
    Ok(Some(run))
}

/// Runs a status-filtered listing reads per page at most (BENCHMARKS.md, dashboard: reading
/// the whole of a 1,000,000-run history for a status no run had took 812 ms).
pub const STATUS_SCAN_BUDGET: i64 = 10_000;

/// Appends the conditions of `filter` (all but its page position) to a `WHERE true` query.
fn push_run_filter(q: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>, filter: &RunFilter) {
    push_indexed_filter(q, filter);
    push_status_filter(q, filter);
}

/// Whether `filter` filters by status, which no index on `runs` serves.
fn filters_status(filter: &RunFilter) -> bool {
    !filter.statuses.is_empty() || filter.retrying
}

/// Appends the status condition of `filter`, if any.
fn push_status_filter(q: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>, filter: &RunFilter) {
    if filters_status(filter) {
        let names: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        q.push(" AND (status::text = ANY(")
            .push_bind(names)
            .push(")");
        if filter.retrying {
            q.push(" OR (status = 'queued' AND attempts > released_attempts)");
        }
        q.push(")");
    }
}

/// Appends the conditions of `filter` that indexes serve (all but status and page position).
fn push_indexed_filter(q: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>, filter: &RunFilter) {
    if let [task_id] = filter.task_ids.as_slice() {
        q.push(" AND task_id = ").push_bind(task_id.clone());
    } else if !filter.task_ids.is_empty() {
        q.push(" AND task_id = ANY(")
            .push_bind(filter.task_ids.clone())
            .push(")");
    }
    if let Some(queue) = &filter.queue {
        q.push(" AND queue = ").push_bind(queue.clone());
    }
    if !filter.tags.is_empty() {
        // `tags <> '{}'` lets the planner use the partial GIN index.
        q.push(" AND tags <> '{}' AND tags @> ")
            .push_bind(filter.tags.clone());
    }
    if let Some(key) = &filter.concurrency_key {
        q.push(" AND concurrency_key = ").push_bind(key.clone());
    }
    if let Some(at) = filter.created_after {
        q.push(" AND created_at >= ").push_bind(at);
    }
    if let Some(at) = filter.created_before {
        q.push(" AND created_at < ").push_bind(at);
    }
    if let Some(parent) = filter.parent_run_id {
        q.push(" AND parent_run_id = ").push_bind(parent);
    }
    if filter.root_only {
        q.push(" AND parent_run_id IS NULL");
    }
    if let Some(key) = &filter.idempotency_key {
        q.push(" AND idempotency_key = ").push_bind(key.clone());
    }
}

/// How many runs match `filter` (its page position ignored), counting at most `at_most`: the
/// count of a bulk action's confirmation, bounded so that it costs at most what the action would.
pub async fn run_count(pool: &Pool, filter: &RunFilter, at_most: u64) -> Result<u64> {
    let mut q = sqlx::QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM kiln.runs WHERE true");
    push_run_filter(&mut q, filter);
    q.push(" LIMIT ")
        .push_bind(at_most as i64)
        .push(") matched");
    let n: i64 = q
        .build_query_scalar()
        .fetch_one(pool)
        .await
        .map_err(db("counting runs"))?;
    Ok(n as u64)
}

/// Lists runs newest first, filtered, with cursor pagination.
pub async fn run_list(pool: &Pool, filter: &RunFilter) -> Result<RunPage> {
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(StoreError::Invalid(format!(
            "page size must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
        )));
    }
    if filters_status(filter) {
        return run_list_by_status(pool, filter, limit).await;
    }
    let mut q = sqlx::QueryBuilder::new(format!(
        "SELECT {} FROM kiln.runs WHERE true",
        run_columns(filter)
    ));
    push_indexed_filter(&mut q, filter);
    let backwards = push_page_position(&mut q, filter);
    q.push(" LIMIT ").push_bind(i64::from(limit) + 1);
    let rows = q
        .build()
        .fetch_all(pool)
        .await
        .map_err(db("listing runs"))?;
    let runs = rows
        .iter()
        .map(run_from_row)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(db("listing runs"))?;
    Ok(page_of(runs, filter, limit, backwards, None))
}

/// The value of the column a page position leads with.
enum PageLead {
    Name(String),
    Id(Uuid),
}

/// Whether a page is read backwards: `before` without a cursor asks for the page before a known
/// one, read oldest first.
fn pages_backwards(filter: &RunFilter) -> bool {
    filter.before.is_some() && filter.cursor.is_none()
}

/// Where a page starts, as a comparison with the run id: below the cursor going forward, above
/// `before` going back; `None` for the first page.
fn page_bound(filter: &RunFilter) -> Option<(&'static str, Uuid)> {
    match (filter.cursor, filter.before) {
        (Some(cursor), _) => Some(("<", cursor)),
        (None, Some(before)) => Some((">", before)),
        (None, None) => None,
    }
}

/// Appends the page position of `filter` and the order; returns whether the page is read
/// backwards (towards newer runs, from `before`: read upwards, then turned around).
///
/// With one parent (or else one task, or else one queue) fixed by the filter, the position is a
/// row comparison on (parent_run_id, id) (or (task_id, id), or (queue, id)), which is a condition
/// of that column's index: the page is read from that index in id order. Given only
/// `id < cursor`, the planner walked the primary key and filtered: a task whose runs were all
/// older than another task's 1,000,000-run backlog took 4 s for its first page (0.4 ms now), and
/// a parent's first page of children sorted all 250,000 of them.
fn push_page_position(q: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>, filter: &RunFilter) -> bool {
    let backwards = pages_backwards(filter);
    let direction = if backwards { "ASC" } else { "DESC" };
    let lead = match (
        filter.parent_run_id,
        filter.task_ids.as_slice(),
        &filter.queue,
    ) {
        (Some(parent), _, _) => Some(("parent_run_id", PageLead::Id(parent))),
        (None, [task_id], _) => Some(("task_id", PageLead::Name(task_id.clone()))),
        (None, _, Some(queue)) => Some(("queue", PageLead::Name(queue.clone()))),
        _ => None,
    };
    let Some((column, value)) = lead else {
        if let Some((comparison, bound)) = page_bound(filter) {
            q.push(format!(" AND id {comparison} ")).push_bind(bound);
        }
        q.push(format!(" ORDER BY id {direction}"));
        return backwards;
    };
    let (comparison, bound) = page_bound(filter).unwrap_or(("<=", Uuid::from_u128(u128::MAX)));
    q.push(format!(" AND ({column}, id) {comparison} ("));
    match value {
        PageLead::Name(name) => q.push_bind(name),
        PageLead::Id(id) => q.push_bind(id),
    };
    q.push(", ").push_bind(bound).push(")");
    q.push(format!(" ORDER BY {column} {direction}, id {direction}"));
    backwards
}

/// A page from runs read in page order (newest first, or oldest first when `backwards`), up
/// to `limit + 1` of them. `scanned_to` is where a status listing stopped at its scan budget.
fn page_of(
    mut runs: Vec<Run>,
    filter: &RunFilter,
    limit: u32,
    backwards: bool,
    scanned_to: Option<Uuid>,
) -> RunPage {
    let more = runs.len() > limit as usize;
    runs.truncate(limit as usize);
    if backwards {
        runs.reverse();
    }
    let (first, last) = (runs.first().map(|r| r.id), runs.last().map(|r| r.id));
    // A page that stopped at its scan budget continues from where it stopped, even when it
    // found no run: its own position stands in for the runs it would have shown.
    let stopped = scanned_to.filter(|_| !more);
    let (next_cursor, previous_cursor) = if backwards {
        let last = if stopped.is_some() {
            last.or(filter.before)
        } else {
            last
        };
        (last, if more { first } else { stopped })
    } else {
        let first = if stopped.is_some() {
            first.or(filter.cursor)
        } else {
            first
        };
        (if more { last } else { stopped }, filter.cursor.and(first))
    };
    RunPage {
        runs,
        next_cursor,
        previous_cursor,
        scan_limited: stopped.is_some(),
    }
}

/// A status-filtered page. No index serves `status` (so that status updates stay HOT): the
/// page reads the runs the other filters select, newest first, and keeps those with the
/// status, reading at most [`STATUS_SCAN_BUDGET`] runs. A page that stopped there may hold
/// fewer runs than asked, even none, and its cursor continues where it stopped.
async fn run_list_by_status(pool: &Pool, filter: &RunFilter, limit: u32) -> Result<RunPage> {
    if let Some(status) = recorded_failure(filter) {
        return run_list_failures(pool, filter, status, limit).await;
    }
    // The inner scan stops as soon as the page is full: a common status costs a few hundred
    // rows read, a rare one at most the budget.
    let mut q = sqlx::QueryBuilder::new(
        "SELECT id FROM (SELECT id, status, attempts, released_attempts FROM kiln.runs WHERE true",
    );
    push_indexed_filter(&mut q, filter);
    let backwards = push_page_position(&mut q, filter);
    q.push(" LIMIT ").push_bind(STATUS_SCAN_BUDGET);
    q.push(") scanned WHERE true");
    push_status_filter(&mut q, filter);
    q.push(if backwards {
        " ORDER BY id ASC"
    } else {
        " ORDER BY id DESC"
    });
    q.push(" LIMIT ").push_bind(i64::from(limit) + 1);
    let ids: Vec<Uuid> = q
        .build_query_scalar()
        .fetch_all(pool)
        .await
        .map_err(db("listing runs"))?;
    budgeted_page(pool, filter, limit, backwards, ids, |q| {
        q.push("SELECT id FROM kiln.runs WHERE true");
        push_indexed_filter(q, filter);
        push_page_position(q, filter);
    })
    .await
}

/// The page of a listing that reads at most [`STATUS_SCAN_BUDGET`] rows: `ids` are the runs it
/// kept (up to `limit + 1`, in page order), `scan` appends the scan it read them from.
async fn budgeted_page(
    pool: &Pool,
    filter: &RunFilter,
    limit: u32,
    backwards: bool,
    ids: Vec<Uuid>,
    scan: impl FnOnce(&mut sqlx::QueryBuilder<'_, sqlx::Postgres>),
) -> Result<RunPage> {
    // A page that is not full either read every run there is, or stopped at the budget with
    // runs left unread: then the budget-th row read is where the next page starts.
    let scanned_to = if ids.len() <= limit as usize {
        let mut q = sqlx::QueryBuilder::new("");
        scan(&mut q);
        q.push(" OFFSET ")
            .push_bind(STATUS_SCAN_BUDGET - 1)
            .push(" LIMIT 2");
        let edge: Vec<Uuid> = q
            .build_query_scalar()
            .fetch_all(pool)
            .await
            .map_err(db("listing runs"))?;
        (edge.len() == 2).then(|| edge[0])
    } else {
        None
    };
    let mut runs = runs_by_ids(pool, &ids, &run_columns(filter)).await?;
    if backwards {
        runs.reverse();
    }
    Ok(page_of(runs, filter, limit, backwards, scanned_to))
}

/// The unsuccessful final statuses `kiln.run_failures` records (migration 0021).
const RECORDED_FAILURES: [RunStatus; 6] = [
    RunStatus::Failed,
    RunStatus::Canceled,
    RunStatus::Crashed,
    RunStatus::TimedOut,
    RunStatus::Expired,
    RunStatus::SystemFailure,
];

/// The status of a listing of one unsuccessful final status, which `kiln.run_failures` serves.
fn recorded_failure(filter: &RunFilter) -> Option<RunStatus> {
    match filter.statuses.as_slice() {
        [status] if !filter.retrying && RECORDED_FAILURES.contains(status) => Some(*status),
        _ => None,
    }
}

/// Appends the scan of `kiln.run_failures` for `status` (and the filter's task, when it names
/// one), from the filter's page position, in page order: an index range, so its cost follows the
/// rows read, not the history.
fn push_failure_scan(
    q: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>,
    filter: &RunFilter,
    status: RunStatus,
    backwards: bool,
) {
    q.push("SELECT f.run_id FROM kiln.run_failures f WHERE f.status = ")
        .push_bind(status.as_str())
        .push("::kiln.run_status");
    if let [task_id] = filter.task_ids.as_slice() {
        q.push(" AND f.task_id = ").push_bind(task_id.clone());
    }
    if let Some((comparison, bound)) = page_bound(filter) {
        q.push(format!(" AND f.run_id {comparison} "))
            .push_bind(bound);
    }
    q.push(if backwards {
        " ORDER BY f.run_id ASC"
    } else {
        " ORDER BY f.run_id DESC"
    });
}

/// A page of one unsuccessful final status, read from `kiln.run_failures`: the runs of that
/// status in id order, each looked up for the other filters. With no other filter than a task,
/// every row read is shown, so the page is complete however rare the status; with others, at
/// most [`STATUS_SCAN_BUDGET`] rows are read a page, as for the other statuses.
async fn run_list_failures(
    pool: &Pool,
    filter: &RunFilter,
    status: RunStatus,
    limit: u32,
) -> Result<RunPage> {
    let backwards = pages_backwards(filter);
    let mut q = sqlx::QueryBuilder::new("SELECT r.id FROM (");
    push_failure_scan(&mut q, filter, status, backwards);
    q.push(" LIMIT ").push_bind(STATUS_SCAN_BUDGET);
    // Inside the lateral subquery the unqualified columns are those of `runs`.
    q.push(") f CROSS JOIN LATERAL (SELECT id FROM kiln.runs WHERE id = f.run_id");
    push_indexed_filter(&mut q, filter);
    q.push(") r");
    q.push(if backwards {
        " ORDER BY f.run_id ASC"
    } else {
        " ORDER BY f.run_id DESC"
    });
    q.push(" LIMIT ").push_bind(i64::from(limit) + 1);
    let ids: Vec<Uuid> = q
        .build_query_scalar()
        .fetch_all(pool)
        .await
        .map_err(db("listing runs"))?;
    budgeted_page(pool, filter, limit, backwards, ids, |q| {
        push_failure_scan(q, filter, status, backwards);
    })
    .await
}

/// How many child runs run `id` triggered.
pub async fn run_count_children(pool: &Pool, id: Uuid) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM kiln.runs WHERE parent_run_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .map_err(db("counting child runs"))
}

/// Run `id`'s children counted by status, the newest `at_most` of them: read from the
/// (parent_run_id, id) index in id order, so the cost follows `at_most`, not the fan-out.
pub async fn run_count_children_by_status(
    pool: &Pool,
    id: Uuid,
    at_most: u64,
) -> Result<ChildCounts> {
    let limit = i64::try_from(at_most).unwrap_or(i64::MAX);
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status::text, count(*) FROM (
             SELECT status FROM kiln.runs WHERE parent_run_id = $1
              ORDER BY parent_run_id DESC, id DESC LIMIT $2) newest
          GROUP BY 1",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(db("counting child runs"))?;
    let by_status = counts_by_status(rows)?;
    let counted: u64 = by_status.iter().map(|(_, n)| n).sum();
    let more = counted == at_most
        && sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM kiln.runs WHERE parent_run_id = $1
                             ORDER BY parent_run_id DESC, id DESC OFFSET $2)",
        )
        .bind(id)
        .bind(limit)
        .fetch_one(pool)
        .await
        .map_err(db("counting child runs"))?;
    Ok(ChildCounts {
        by_status,
        counted,
        more,
    })
}

/// What canceling the runs in `$1` did to each of them.
#[derive(Debug)]
struct Canceled {
    /// Each requested run found, with its status before and whether this cancel ended it.
    found: Vec<(Uuid, RunStatus, bool)>,
}

/// Cancels the unfinished runs among `ids`, with their unfinished descendants, in one
/// transaction. A waiting run leaves the queue at once; an executing run's worker is notified
/// (channel `kiln_cancel`) and fires the run's cancellation token, and its lease (and concurrency
/// slot) is held until the body has stopped.
async fn cancel_trees(pool: &Pool, ids: &[Uuid]) -> Result<Canceled> {
    // One implementation for Rust and SQL callers (migrations/0011_sql_surface.sql), locking in
    // the documented order.
    let rows: Vec<(Uuid, String, bool)> =
        sqlx::query_as("SELECT run_id, was, canceled FROM kiln.cancel_runs($1)")
            .bind(ids)
            .fetch_all(pool)
            .await
            .map_err(db("canceling runs"))?;
    let found = rows
        .into_iter()
        .map(|(id, status, canceled)| {
            let was: RunStatus = status
                .parse()
                .map_err(|e: kiln_core::UnknownStatus| StoreError::Invalid(e.to_string()))?;
            Ok((id, was, canceled))
        })
        .collect::<Result<_>>()?;
    Ok(Canceled { found })
}

/// Cancels a run that has not finished, with its unfinished descendants (see `cancel_trees`
/// for what happens to a waiting and an executing run).
pub async fn run_cancel(pool: &Pool, id: Uuid) -> Result<CancelOutcome> {
    let canceled = cancel_trees(pool, &[id]).await?;
    Ok(match canceled.found.first() {
        None => CancelOutcome::NotFound,
        Some((_, was, true)) => CancelOutcome::Canceled { was: *was },
        Some((_, was, false)) => CancelOutcome::AlreadyFinished(*was),
    })
}

/// Cancels the unfinished runs among `ids` (with their unfinished descendants) in one
/// transaction. Returns how many of `ids` it canceled; runs already finished or not found are
/// left as they are.
pub async fn run_cancel_many(pool: &Pool, ids: &[Uuid]) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let canceled = cancel_trees(pool, ids).await?;
    Ok(canceled.found.iter().filter(|(_, _, done)| *done).count() as u64)
}

/// The runs among `ids` that exist, newest first (without their attempts).
pub async fn run_list_by_ids(pool: &Pool, ids: &[Uuid]) -> Result<Vec<Run>> {
    runs_by_ids(pool, ids, RUN_COLUMNS).await
}

async fn runs_by_ids(pool: &Pool, ids: &[Uuid], columns: &str) -> Result<Vec<Run>> {
    let rows = sqlx::query(&format!(
        "SELECT {columns} FROM kiln.runs WHERE id = ANY($1) ORDER BY id DESC"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(db("reading runs"))?;
    rows.iter()
        .map(run_from_row)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(db("reading runs"))
}

/// Counts the runs matching `filter` (its page position ignored) per status, in lifecycle order.
pub async fn run_status_counts_filtered(
    pool: &Pool,
    filter: &RunFilter,
) -> Result<Vec<(RunStatus, u64)>> {
    let mut q = sqlx::QueryBuilder::new("SELECT status::text, count(*) FROM kiln.runs WHERE true");
    push_run_filter(&mut q, filter);
    q.push(" GROUP BY 1");
    let rows: Vec<(String, i64)> = q
        .build_query_as()
        .fetch_all(pool)
        .await
        .map_err(db("counting runs"))?;
    counts_by_status(rows)
}

/// Rows of (status name, count) as counts per status, in lifecycle order.
fn counts_by_status(rows: Vec<(String, i64)>) -> Result<Vec<(RunStatus, u64)>> {
    let mut counts = rows
        .into_iter()
        .map(|(status, n)| {
            let status: RunStatus = status
                .parse()
                .map_err(|e: kiln_core::UnknownStatus| StoreError::Invalid(e.to_string()))?;
            Ok((status, n as u64))
        })
        .collect::<Result<Vec<_>>>()?;
    counts.sort_by_key(|(status, _)| RunStatus::ALL.iter().position(|s| s == status));
    Ok(counts)
}

/// Counts runs per status, for one task or for all.
pub async fn run_status_counts(
    pool: &Pool,
    task_id: Option<&str>,
) -> Result<Vec<(RunStatus, i64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status::text, count(*) FROM kiln.runs
          WHERE $1::text IS NULL OR task_id = $1 GROUP BY 1 ORDER BY 1",
    )
    .bind(task_id)
    .fetch_all(pool)
    .await
    .map_err(db("counting runs"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, n)| Some((s.parse().ok()?, n)))
        .collect())
}

/// Deletes every run of a task with its attempts, waiting entries and leases (benchmarks start
/// from a clean slate with this). Returns how many runs were deleted.
pub async fn run_purge_task(pool: &Pool, task_id: &str) -> Result<u64> {
    let done = sqlx::query(
        "WITH gone AS (DELETE FROM kiln.runs WHERE task_id = $1 RETURNING id),
              a AS (DELETE FROM kiln.attempts WHERE run_id IN (SELECT id FROM gone)),
              g AS (DELETE FROM kiln.run_log_chunks WHERE run_id IN (SELECT id FROM gone)),
              f AS (DELETE FROM kiln.run_failures WHERE task_id = $1),
              r AS (DELETE FROM kiln.ready WHERE task_id = $1),
              l AS (DELETE FROM kiln.leases WHERE task_id = $1)
         SELECT count(*) FROM gone",
    )
    .bind(task_id)
    .execute(pool)
    .await
    .map_err(db("purging a task's runs"))?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` runs that reached a final status before `cutoff`, with their attempts,
/// log lines and failure records.
/// Run ids are time-ordered (UUID v7), so the scan walks the primary key up to the cutoff instead
/// of needing an index on a column that changes. Returns how many runs were deleted.
pub async fn run_delete_finished_before(
    pool: &Pool,
    cutoff: DateTime<Utc>,
    limit: u32,
) -> Result<u64> {
    let millis = u64::try_from(cutoff.timestamp_millis()).unwrap_or(0);
    let first_id_after_cutoff =
        uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid();
    let deleted: i64 = sqlx::query_scalar(
        "WITH old AS (
             SELECT id FROM kiln.runs
              WHERE id < $1 AND finished_at < $2
                AND status IN ('completed', 'failed', 'canceled', 'crashed', 'timed_out',
                               'expired', 'system_failure')
              ORDER BY id LIMIT $3
                FOR UPDATE SKIP LOCKED),
         gone AS (DELETE FROM kiln.runs r USING old WHERE r.id = old.id RETURNING r.id),
         attempts AS (DELETE FROM kiln.attempts a USING gone WHERE a.run_id = gone.id),
         logs AS (DELETE FROM kiln.run_log_chunks l USING gone WHERE l.run_id = gone.id),
         failures AS (DELETE FROM kiln.run_failures f USING gone WHERE f.run_id = gone.id)
         SELECT count(*) FROM gone",
    )
    .bind(first_id_after_cutoff)
    .bind(cutoff)
    .bind(i64::from(limit))
    .fetch_one(pool)
    .await
    .map_err(db("deleting old finished runs"))?;
    Ok(deleted as u64)
}

/// What a reschedule did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescheduleOutcome {
    /// The run now becomes available at the new time.
    Rescheduled,
    /// The run has started or finished (its status is given); only waiting runs move.
    NotWaiting(RunStatus),
    /// No run has this id.
    NotFound,
}

/// Moves a run that has not started yet (`delayed` or `queued`) to become available at `at`:
/// `delayed` if that is in the future, `queued` otherwise. Its ttl keeps its length from the
/// new time.
pub async fn run_reschedule(pool: &Pool, id: Uuid, at: DateTime<Utc>) -> Result<RescheduleOutcome> {
    let row: Option<(String, bool)> = sqlx::query_as(
        // Lock order (docs/architecture.md): the `ready` row before the `runs` row, as a claim
        // takes them.
        "WITH queued AS MATERIALIZED (SELECT run_id FROM kiln.ready WHERE run_id = $1 FOR UPDATE),
         target AS MATERIALIZED (
             SELECT r.id, r.status, r.attempts, r.released_attempts, r.available_at, r.expires_at
               FROM kiln.runs r
              WHERE r.id = $1 AND (SELECT count(*) FROM queued) >= 0
                FOR UPDATE OF r),
         moved AS (
             UPDATE kiln.ready rd
                SET available_at = $2,
                    order_at = $2 - (t.available_at - rd.order_at),
                    expires_at = $2 + (t.expires_at - t.available_at),
                    delayed = $2 > now()
               FROM target t
              -- Only a run that has not started (attempts handed back unfinished do not count): a
              -- queued run with a counted attempt is waiting for its retry.
              WHERE rd.run_id = t.id AND t.status IN ('delayed', 'queued')
                AND t.attempts = t.released_attempts
             RETURNING rd.run_id, rd.queue, rd.concurrency_key),
         -- A keyed queue's key may be parked until the run's old time (the key scheduler hears
         -- of runs through wakeups, which inserts into `ready` write and this update does not).
         rewoken AS (
             INSERT INTO kiln.key_wakeups (queue, concurrency_key, available_at)
             SELECT m.queue, m.concurrency_key, $2 FROM moved m),
         updated AS (
             UPDATE kiln.runs r
                SET available_at = $2,
                    expires_at = $2 + (r.expires_at - r.available_at),
                    status = CASE WHEN $2 > now() THEN 'delayed' ELSE 'queued' END::kiln.run_status,
                    updated_at = now()
               FROM moved WHERE r.id = moved.run_id
             RETURNING r.id),
         -- Moved to now or earlier, it is claimable at once: wake the queue's workers.
         woken AS (SELECT pg_notify('kiln_ready', m.queue) FROM moved m WHERE $2 <= now())
         SELECT t.status::text, EXISTS (SELECT 1 FROM updated) AND (SELECT count(*) FROM woken) >= 0
           FROM target t",
    )
    .bind(id)
    .bind(at)
    .fetch_optional(pool)
    .await
    .map_err(db("rescheduling a run"))?;
    let Some((status, moved)) = row else {
        return Ok(RescheduleOutcome::NotFound);
    };
    if moved {
        return Ok(RescheduleOutcome::Rescheduled);
    }
    let status = status
        .parse()
        .map_err(|e: kiln_core::UnknownStatus| StoreError::Invalid(e.to_string()))?;
    Ok(RescheduleOutcome::NotWaiting(status))
}
