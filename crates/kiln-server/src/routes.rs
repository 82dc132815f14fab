//! The handlers of `/api/v1`: each reads its input, calls the operations layer as the caller's
//! key, and answers JSON. Their `#[utoipa::path]` attributes are the OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use kiln_client::{
    BatchItem, CreateSchedule, ErrorCode, RunFilter, TriggerOptions, UpdateSchedule,
};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::{Admin, Caller, ReadAll, ReadRuns, TriggerRuns};
use crate::dto::*;
use crate::error::{ApiError, ApiJson, ApiJsonOrDefault, ApiPath, ApiQuery, ErrorBody};
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// Longest a caller may wait on `GET /runs/{id}/wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// How long `GET /runs/{id}/wait` waits when no timeout is given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

#[utoipa::path(
    post, path = "/api/v1/tasks/{taskId}/trigger", tag = "runs",
    params(("taskId" = String, Path, description = "The task's id")),
    request_body = TriggerRequest,
    responses(
        (status = 201, description = "A new run", body = TriggerResponse),
        (status = 200, description = "The existing run of a live idempotency key", body = TriggerResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No worker has registered this task", body = ErrorBody),
        (status = 413, description = "Body or payload too large", body = ErrorBody),
        (status = 422, description = "An option or the payload is refused", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn trigger_task(
    caller: Caller<TriggerRuns>,
    ApiPath(task_id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<TriggerRequest>,
) -> ApiResult<(StatusCode, Json<TriggerResponse>)> {
    let options = with_request_trace(request.options.into_options()?, &headers);
    let handle = caller
        .client
        .trigger_by_id(&task_id, request.payload)
        .options(options)
        .await?;
    let status = if handle.is_cached {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(handle.into())))
}

#[utoipa::path(
    post, path = "/api/v1/tasks/{taskId}/batch", tag = "runs",
    params(("taskId" = String, Path, description = "The task's id")),
    request_body = BatchRequest,
    responses(
        (status = 201, description = "The runs, in item order", body = BatchResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No worker has registered this task", body = ErrorBody),
        (status = 413, description = "Body or a payload too large", body = ErrorBody),
        (status = 422, description = "An item's options or payload are refused", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn batch_trigger(
    caller: Caller<TriggerRuns>,
    ApiPath(task_id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<BatchRequest>,
) -> ApiResult<(StatusCode, Json<BatchResponse>)> {
    let mut items = Vec::with_capacity(request.items.len());
    for (index, item) in request.items.into_iter().enumerate() {
        let options = item.options.into_options().map_err(|e| {
            let mut error = ApiError::from(e);
            error.message = format!("batch item {index}: {}", error.message);
            error
        })?;
        let options = with_request_trace(options, &headers);
        items.push(BatchItem::with_options(item.payload, options));
    }
    let handles = caller.client.batch_trigger_by_id(&task_id, items).await?;
    Ok((
        StatusCode::CREATED,
        Json(BatchResponse {
            data: handles.into_iter().map(TriggerResponse::from).collect(),
        }),
    ))
}

/// The request's `traceparent` header as the run's trace context, unless the options give one.
/// A header that is not a valid W3C `traceparent` is ignored (a proxy's business, not the
/// caller's); an invalid `traceparent` option is refused.
fn with_request_trace(mut options: TriggerOptions, headers: &HeaderMap) -> TriggerOptions {
    if options.traceparent.is_none() {
        options.traceparent = headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| kiln_core::is_valid_traceparent(value))
            .map(str::to_owned);
    }
    options
}

/// Filters of `GET /api/v1/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunsQuery {
    /// Statuses, comma-separated (`failed,queued`); `retrying` means queued for a retry.
    status: Option<String>,
    /// Only runs of this task.
    task: Option<String>,
    /// Only runs carrying this tag.
    tag: Option<String>,
    /// Only runs with this concurrency key.
    concurrency_key: Option<String>,
    /// Only runs in this queue.
    queue: Option<String>,
    /// Only the run holding this idempotency key.
    idempotency_key: Option<String>,
    /// Only runs triggered at or after this RFC 3339 time.
    from: Option<chrono::DateTime<Utc>>,
    /// Only runs triggered before this RFC 3339 time.
    to: Option<chrono::DateTime<Utc>>,
    /// Only children of this run.
    parent: Option<Uuid>,
    /// Only runs with no parent (`true`): those triggered from outside a run.
    root_only: Option<bool>,
    /// Runs per page, 1 to 100 (default 25).
    limit: Option<u32>,
    /// The `pagination.next` of the previous page.
    cursor: Option<Uuid>,
    /// The `pagination.previous` of the next page.
    before: Option<Uuid>,
}

/// Most runs one API page holds.
pub const MAX_API_PAGE: u32 = 100;
/// Runs per API page by default.
pub const DEFAULT_API_PAGE: u32 = 25;

#[utoipa::path(
    get, path = "/api/v1/runs", tag = "runs",
    params(RunsQuery),
    responses(
        (status = 200, description = "A page of runs, newest first", body = RunPageBody),
        (status = 400, description = "A filter does not parse", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 422, description = "A filter is out of range", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_runs(
    caller: Caller<ReadRuns>,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> ApiResult<Json<RunPageBody>> {
    let limit = query.limit.unwrap_or(DEFAULT_API_PAGE);
    if !(1..=MAX_API_PAGE).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidOption,
            format!("limit must be between 1 and {MAX_API_PAGE}, got {limit}"),
        ));
    }
    let (statuses, retrying) = kiln_core::parse_status_names(query.status.as_deref())
        .map_err(|message| ApiError::new(ErrorCode::InvalidOption, message))?;
    let filter = RunFilter {
        task_ids: query.task.into_iter().collect(),
        statuses,
        retrying,
        queue: query.queue,
        tags: query.tag.into_iter().collect(),
        concurrency_key: query.concurrency_key,
        created_after: query.from,
        created_before: query.to,
        parent_run_id: query.parent,
        root_only: query.root_only.unwrap_or(false),
        idempotency_key: query.idempotency_key,
        cursor: query.cursor,
        before: query.before,
        limit: Some(limit),
        // The API's listing keeps each run's payload and output: its callers read them.
        summary_only: false,
    };
    let page = caller.client.runs().list(&filter).await?;
    Ok(Json(RunPageBody {
        data: page.runs.iter().map(|r| RunBody::new(r, None)).collect(),
        pagination: Pagination {
            next: page.next_cursor,
            previous: page.previous_cursor,
        },
    }))
}

#[utoipa::path(
    get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run with its attempts", body = RunBody),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No run has this id", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_run(
    caller: Caller<ReadRuns>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<RunBody>> {
    let runs = caller.client.runs();
    let run = runs.retrieve(id).await?;
    let children = runs.count_children(id).await?;
    Ok(Json(RunBody::new(&run, Some(children))))
}

/// Which log lines.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsQuery {
    /// Only this attempt's lines.
    attempt: Option<u32>,
    /// The `next` of the previous page (`attempt.seq`).
    after: Option<String>,
    /// Lines per page, 1 to 1000 (default 200).
    limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/api/v1/runs/{id}/logs", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id"), LogsQuery),
    responses(
        (status = 200, description = "Log lines, oldest first", body = LogPage),
        (status = 400, description = "The id or a parameter does not parse", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No run has this id", body = ErrorBody),
        (status = 422, description = "The limit is out of range", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn run_logs(
    caller: Caller<ReadRuns>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> ApiResult<Json<LogPage>> {
    let after = match query.after.as_deref() {
        None => None,
        Some(text) => {
            let parsed = text
                .split_once('.')
                .and_then(|(a, s)| Some((a.parse().ok()?, s.parse().ok()?)));
            Some(parsed.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("after {text:?} is not a log position: pass a page's `next` (e.g. \"1.200\")"),
                )
            })?)
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_LOG_PAGE);
    let lines = caller
        .client
        .runs()
        .logs(id, query.attempt, after, limit)
        .await?;
    let next = (lines.len() as u32 == limit)
        .then(|| lines.last().map(|l| format!("{}.{}", l.attempt, l.seq)))
        .flatten();
    Ok(Json(LogPage {
        data: lines.iter().map(LogLineBody::from).collect(),
        next,
    }))
}

/// Log lines per API page by default.
pub const DEFAULT_LOG_PAGE: u32 = 200;

/// How long to wait.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WaitQuery {
    /// A duration such as `30s` (default 30 s, at most 5 min).
    timeout: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/runs/{id}/wait", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id"), WaitQuery),
    responses(
        (status = 200, description = "The run, now final", body = RunBody),
        (status = 400, description = "The id or the timeout does not parse", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No run has this id", body = ErrorBody),
        (status = 408, description = "The run was not final within the timeout", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn wait_run(
    State(state): State<AppState>,
    _caller: Caller<ReadRuns>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<WaitQuery>,
) -> ApiResult<Json<RunBody>> {
    let timeout = match query.timeout.as_deref() {
        None => DEFAULT_WAIT,
        Some(text) => kiln_core::parse_duration(text).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("timeout {text:?} is not a duration ({e}); write e.g. 30s"),
            )
        })?,
    };
    if timeout > MAX_WAIT {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("timeout may be at most {} s", MAX_WAIT.as_secs()),
        ));
    }
    match state.client.runs().wait_final(id, timeout).await? {
        Some(run) => Ok(Json(RunBody::new(&run, None))),
        None => Err(ApiError::new(
            ErrorCode::Timeout,
            format!(
                "run {id} was not final within {} s; wait again",
                timeout.as_secs_f64()
            ),
        )),
    }
}

#[utoipa::path(
    post, path = "/api/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    responses(
        (status = 200, description = "Canceled (an executing run's token fired)", body = CancelResponse),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No run has this id", body = ErrorBody),
        (status = 409, description = "The run already finished", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel_run(
    caller: Caller<Admin>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<CancelResponse>> {
    let was = caller.client.runs().cancel_unfinished(id).await?;
    Ok(Json(CancelResponse {
        id,
        previous_status: was.as_str().to_owned(),
    }))
}

#[utoipa::path(
    post, path = "/api/v1/runs/bulk/{action}", tag = "runs",
    params(("action" = String, Path, description = "`cancel` or `replay`")),
    request_body(content = BulkRequest, description = "The runs: `ids` or a `filter`, and a `limit`"),
    responses(
        (status = 200, description = "Done: how many runs were matched, acted on and skipped", body = BulkResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No such bulk action", body = ErrorBody),
        (status = 422, description = "A filter value or the limit is refused", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn bulk_runs(
    State(state): State<AppState>,
    caller: Caller<Admin>,
    ApiPath(action): ApiPath<String>,
    ApiJson(request): ApiJson<BulkRequest>,
) -> ApiResult<Json<BulkResponse>> {
    let action: kiln_client::BulkAction = action
        .parse()
        .map_err(|message| ApiError::new(ErrorCode::NotFound, message))?;
    let selection = match (request.ids, request.filter) {
        (Some(ids), None) => kiln_client::BulkSelection::Ids(ids),
        (None, Some(filter)) => kiln_client::BulkSelection::Filter(Box::new(bulk_filter(filter)?)),
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give either ids or filter: {\"ids\": [...]} or {\"filter\": {\"status\": [\"failed\"]}}",
            ))
        }
    };
    let cap = request.limit.unwrap_or(state.config.bulk_cap);
    if cap > state.config.bulk_cap {
        return Err(ApiError::new(
            ErrorCode::InvalidOption,
            format!(
                "limit {cap} is over this server's bulk cap of {} runs: act in several requests",
                state.config.bulk_cap
            ),
        ));
    }
    let done = caller
        .client
        .runs()
        .bulk(action, selection, cap, |_| {})
        .await
        .map_err(|e| match e {
            kiln_client::ClientError::Invalid(message) => {
                ApiError::new(ErrorCode::InvalidOption, message)
            }
            other => other.into(),
        })?;
    Ok(Json(BulkResponse {
        action: action.as_str().to_owned(),
        matched: done.matched,
        done: done.done,
        skipped: done.skipped,
        capped: done.capped,
    }))
}

/// A bulk request's filter as the operations layer takes it.
pub(crate) fn bulk_filter(filter: BulkFilter) -> Result<RunFilter, ApiError> {
    let (statuses, retrying) =
        kiln_core::parse_status_names(filter.status.iter().map(String::as_str))
            .map_err(|message| ApiError::new(ErrorCode::InvalidOption, message))?;
    Ok(RunFilter {
        task_ids: filter.task,
        statuses,
        retrying,
        queue: filter.queue,
        tags: filter.tag,
        concurrency_key: filter.concurrency_key,
        created_after: filter.from,
        created_before: filter.to,
        parent_run_id: filter.parent,
        root_only: filter.root_only,
        ..RunFilter::default()
    })
}

#[utoipa::path(
    post, path = "/api/v1/runs/{id}/replay", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    request_body(content = ReplayRequest, description = "Optional: a new payload"),
    responses(
        (status = 201, description = "The new run", body = TriggerResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No run has this id", body = ErrorBody),
        (status = 413, description = "Body or payload too large", body = ErrorBody),
        (status = 422, description = "The payload is refused", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn replay_run(
    caller: Caller<Admin>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJsonOrDefault(request): ApiJsonOrDefault<ReplayRequest>,
) -> ApiResult<(StatusCode, Json<TriggerResponse>)> {
    let handle = caller.client.runs().replay(id, request.payload).await?;
    Ok((StatusCode::CREATED, Json(handle.into())))
}

#[utoipa::path(
    post, path = "/api/v1/runs/{id}/reschedule", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    request_body = RescheduleRequest,
    responses(
        (status = 200, description = "The run, moved", body = RunBody),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No run has this id", body = ErrorBody),
        (status = 409, description = "The run has started or finished", body = ErrorBody),
        (status = 422, description = "Neither or both of delay and at, or a bad duration", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reschedule_run(
    caller: Caller<Admin>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<RescheduleRequest>,
) -> ApiResult<Json<RunBody>> {
    let at = match (request.delay, request.at) {
        (Some(delay), None) => {
            let delay = TriggerOptionsBody {
                delay: Some(delay),
                ..TriggerOptionsBody::default()
            }
            .into_options()?
            .delay;
            match delay {
                Some(kiln_core::Delay::For(d)) => chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| Utc::now().checked_add_signed(d))
                    .ok_or_else(|| {
                        ApiError::new(ErrorCode::InvalidOption, "delay: too far in the future")
                    })?,
                Some(kiln_core::Delay::Until(at)) => at,
                None => Utc::now(),
            }
        }
        (None, Some(at)) => at,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidOption,
                "give exactly one of delay (\"10m\") and at (an RFC 3339 time)",
            ))
        }
    };
    let runs = caller.client.runs();
    runs.reschedule(id, at).await?;
    Ok(Json(RunBody::new(&runs.retrieve(id).await?, None)))
}

#[utoipa::path(
    get, path = "/api/v1/tasks", tag = "tasks",
    responses(
        (status = 200, description = "Every registered task with its definition", body = TaskList),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_tasks(caller: Caller<ReadAll>) -> ApiResult<Json<TaskList>> {
    let tasks = caller.client.tasks().list().await?;
    Ok(Json(TaskList {
        data: tasks.iter().map(TaskBody::from).collect(),
    }))
}

#[utoipa::path(
    get, path = "/api/v1/queues", tag = "queues",
    responses(
        (status = 200, description = "Every queue with its limits and counts", body = QueueList),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_queues(caller: Caller<ReadAll>) -> ApiResult<Json<QueueList>> {
    let queues = caller.client.queues().list().await?;
    Ok(Json(QueueList {
        data: queues.iter().map(QueueBody::from).collect(),
    }))
}

async fn queue_body(client: &kiln_client::Client, name: &str) -> ApiResult<QueueBody> {
    client
        .queues()
        .retrieve(name)
        .await?
        .map(|q| QueueBody::from(&q))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("queue {name:?} does not exist: GET /api/v1/queues lists them"),
            )
        })
}

#[utoipa::path(
    get, path = "/api/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "The queue's name")),
    responses(
        (status = 200, description = "The queue", body = QueueBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No queue has this name", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_queue(
    caller: Caller<ReadAll>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<QueueBody>> {
    Ok(Json(queue_body(&caller.client, &name).await?))
}

#[utoipa::path(
    post, path = "/api/v1/queues", tag = "queues",
    request_body = CreateQueueRequest,
    responses(
        (status = 201, description = "The queue, created", body = QueueBody),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 409, description = "A queue has this name already", body = ErrorBody),
        (status = 422, description = "The name or the limit is not valid", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_queue(
    caller: Caller<Admin>,
    ApiJson(request): ApiJson<CreateQueueRequest>,
) -> ApiResult<(StatusCode, Json<QueueBody>)> {
    caller
        .client
        .queues()
        .create(&request.name, request.limit)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(queue_body(&caller.client, &request.name).await?),
    ))
}

#[utoipa::path(
    post, path = "/api/v1/queues/{name}/pause", tag = "queues",
    params(("name" = String, Path, description = "The queue's name")),
    responses(
        (status = 200, description = "The queue, paused", body = QueueBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No queue has this name", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn pause_queue(
    caller: Caller<Admin>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<QueueBody>> {
    caller.client.queues().pause(&name).await?;
    Ok(Json(queue_body(&caller.client, &name).await?))
}

#[utoipa::path(
    post, path = "/api/v1/queues/{name}/resume", tag = "queues",
    params(("name" = String, Path, description = "The queue's name")),
    responses(
        (status = 200, description = "The queue, resumed", body = QueueBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No queue has this name", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resume_queue(
    caller: Caller<Admin>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<QueueBody>> {
    caller.client.queues().resume(&name).await?;
    Ok(Json(queue_body(&caller.client, &name).await?))
}

#[utoipa::path(
    post, path = "/api/v1/queues/{name}/concurrency/override", tag = "queues",
    params(("name" = String, Path, description = "The queue's name")),
    request_body = LimitRequest,
    responses(
        (status = 200, description = "The queue with its new limit", body = QueueBody),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No queue has this name", body = ErrorBody),
        (status = 422, description = "The limit is out of range", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn override_queue_limit(
    caller: Caller<Admin>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<LimitRequest>,
) -> ApiResult<Json<QueueBody>> {
    caller
        .client
        .queues()
        .set_limit(&name, Some(request.limit))
        .await?;
    Ok(Json(queue_body(&caller.client, &name).await?))
}

#[utoipa::path(
    post, path = "/api/v1/queues/{name}/concurrency/reset", tag = "queues",
    params(("name" = String, Path, description = "The queue's name")),
    responses(
        (status = 200, description = "The queue, back to its declared limit", body = QueueBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No queue has this name", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reset_queue_limit(
    caller: Caller<Admin>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<QueueBody>> {
    caller.client.queues().set_limit(&name, None).await?;
    Ok(Json(queue_body(&caller.client, &name).await?))
}

#[utoipa::path(
    get, path = "/api/v1/schedules", tag = "schedules",
    responses(
        (status = 200, description = "Every schedule with its next fire times", body = ScheduleList),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_schedules(caller: Caller<ReadAll>) -> ApiResult<Json<ScheduleList>> {
    let schedules = caller.client.schedules().list(None).await?;
    Ok(Json(ScheduleList {
        data: schedules.iter().map(ScheduleBody::from).collect(),
    }))
}

#[utoipa::path(
    post, path = "/api/v1/schedules", tag = "schedules",
    request_body = CreateScheduleRequest,
    responses(
        (status = 201, description = "The schedule (an existing one for a dedup key in use, updated)", body = ScheduleBody),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No worker has registered this task", body = ErrorBody),
        (status = 409, description = "The dedup key belongs to another schedule", body = ErrorBody),
        (status = 422, description = "The pattern or timezone does not parse", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_schedule(
    caller: Caller<Admin>,
    ApiJson(request): ApiJson<CreateScheduleRequest>,
) -> ApiResult<(StatusCode, Json<ScheduleBody>)> {
    let mut create = CreateSchedule::new(request.task, request.cron);
    if let Some(tz) = request.timezone {
        create = create.timezone(tz);
    }
    if let Some(id) = request.external_id {
        create = create.external_id(id);
    }
    if let Some(key) = request.deduplication_key {
        create = create.dedup_key(key);
    }
    let schedule = caller.client.schedules().create(create).await?;
    Ok((StatusCode::CREATED, Json(ScheduleBody::from(&schedule))))
}

#[utoipa::path(
    get, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleBody),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No schedule has this id", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_schedule(
    caller: Caller<ReadAll>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ScheduleBody>> {
    let schedule = caller.client.schedules().retrieve(id).await?;
    Ok(Json(ScheduleBody::from(&schedule)))
}

#[utoipa::path(
    put, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    request_body = UpdateScheduleRequest,
    responses(
        (status = 200, description = "The schedule, changed", body = ScheduleBody),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No schedule has this id, or the new task is not registered", body = ErrorBody),
        (status = 409, description = "A declarative schedule is changed in code", body = ErrorBody),
        (status = 422, description = "The pattern or timezone does not parse", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update_schedule(
    caller: Caller<Admin>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<UpdateScheduleRequest>,
) -> ApiResult<Json<ScheduleBody>> {
    let mut changes = UpdateSchedule::default();
    if let Some(task) = request.task {
        changes = changes.task_id(task);
    }
    if let Some(cron) = request.cron {
        changes = changes.cron(cron);
    }
    if let Some(tz) = request.timezone {
        changes = changes.timezone(tz);
    }
    if let Some(external_id) = request.external_id {
        changes = changes.external_id(Some(external_id));
    }
    let schedule = caller.client.schedules().update(id, changes).await?;
    Ok(Json(ScheduleBody::from(&schedule)))
}

#[utoipa::path(
    delete, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    responses(
        (status = 204, description = "Deleted; the runs it triggered stay"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No schedule has this id", body = ErrorBody),
        (status = 409, description = "A declarative schedule is changed in code", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_schedule(
    caller: Caller<Admin>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    caller.client.schedules().delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/api/v1/schedules/{id}/activate", tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    responses(
        (status = 200, description = "The schedule, active", body = ScheduleBody),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No schedule has this id", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn activate_schedule(
    caller: Caller<Admin>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ScheduleBody>> {
    let schedule = caller.client.schedules().activate(id).await?;
    Ok(Json(ScheduleBody::from(&schedule)))
}

#[utoipa::path(
    post, path = "/api/v1/schedules/{id}/deactivate", tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    responses(
        (status = 200, description = "The schedule, inactive", body = ScheduleBody),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 404, description = "No schedule has this id", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn deactivate_schedule(
    caller: Caller<Admin>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ScheduleBody>> {
    let schedule = caller.client.schedules().deactivate(id).await?;
    Ok(Json(ScheduleBody::from(&schedule)))
}

/// Which workers.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WorkersQuery {
    /// Stopped and dead workers too.
    all: Option<bool>,
}

#[utoipa::path(
    get, path = "/api/v1/workers", tag = "workers",
    params(WorkersQuery),
    responses(
        (status = 200, description = "Worker processes, newest first", body = WorkerList),
        (status = 400, description = "A parameter does not parse", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_workers(
    caller: Caller<ReadAll>,
    ApiQuery(query): ApiQuery<WorkersQuery>,
) -> ApiResult<Json<WorkerList>> {
    let workers = caller
        .client
        .workers()
        .list(query.all.unwrap_or(false))
        .await?;
    Ok(Json(WorkerList {
        data: workers.iter().map(WorkerBody::from).collect(),
    }))
}

/// A page of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Entries per page, 1 to 500 (default 50).
    limit: Option<u32>,
    /// Only entries older than this id.
    before: Option<i64>,
}

#[utoipa::path(
    get, path = "/api/v1/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Recent operator actions, newest first", body = AuditList),
        (status = 400, description = "A parameter does not parse", body = ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
        (status = 422, description = "The limit is out of range", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_audit(
    caller: Caller<ReadAll>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    let entries = caller
        .client
        .audit()
        .list(query.limit.unwrap_or(50), query.before)
        .await?;
    Ok(Json(AuditList {
        data: entries.iter().map(AuditBody::from).collect(),
    }))
}

#[utoipa::path(
    get, path = "/api/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "Every API key (never a secret)", body = KeyList),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "The key's scope does not allow this", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_keys(caller: Caller<ReadAll>) -> ApiResult<Json<KeyList>> {
    let keys = caller.client.keys().list().await?;
    Ok(Json(KeyList {
        data: keys.iter().map(KeyBody::from).collect(),
    }))
}

#[utoipa::path(
    get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = Health))
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The database is reachable and migrated", body = Health),
        (status = 503, description = "The database is unreachable or not migrated", body = ErrorBody),
    )
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    state.client.check_ready().await?;
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

#[utoipa::path(
    get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object))
)]
pub(crate) async fn openapi_document(
    document: std::sync::Arc<serde_json::Value>,
) -> Json<serde_json::Value> {
    Json((*document).clone())
}
