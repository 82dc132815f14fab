//! Kiln's HTTP API: `/api/v1/...` shaped like Trigger.dev's management API, bearer API keys with
//! scopes, an OpenAPI 3.1 document generated from the handlers' own types
//! (`GET /api/v1/openapi.json`), and `/healthz` and `/readyz`. Every handler calls the client's
//! operations layer; this crate holds no SQL.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> std::io::Result<()> {
//! let state = kiln_server::AppState::new(kiln_client::Client::new(pool), Default::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! kiln_server::serve(listener, state, std::future::pending()).await
//! # }
//! ```

#![forbid(unsafe_code)]

mod auth;
mod dashboard;
mod dto;
mod error;
mod metrics_page;
mod routes;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use kiln_client::Client;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

pub use auth::{KEY_CACHE_TTL, LAST_USED_EVERY};
pub use dashboard::{KEY_LIST_TTL, SESSION_TTL};
pub use dto::*;
pub use error::{status_of, ApiError, ErrorBody, ErrorDetail};
pub use metrics_page::{prometheus_handle, GAUGES_CACHE_TTL};
pub use routes::{DEFAULT_API_PAGE, DEFAULT_LOG_PAGE, DEFAULT_WAIT, MAX_API_PAGE, MAX_WAIT};

/// Where `kiln serve` listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Largest request body by default: room for a payload at its limit (4 MiB) and its options.
pub const DEFAULT_MAX_BODY_BYTES: usize = kiln_core::MAX_PAYLOAD_BYTES + 1024 * 1024;
/// Largest batch request body by default: 1,000 items of up to 64 KiB each.
pub const DEFAULT_MAX_BATCH_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The server's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body of every route but the batch trigger.
    pub max_body_bytes: usize,
    /// Largest body of `POST /api/v1/tasks/{taskId}/batch`.
    pub max_batch_body_bytes: usize,
    /// Runs one bulk action (API or dashboard) takes at most, and by default.
    pub bulk_cap: u64,
    /// The dashboard asks no sign-in and says so on every page (`kiln dev` only).
    pub dashboard_dev_mode: bool,
    /// The secret dashboard sessions are signed with. Without one, a random secret is drawn
    /// when the server starts: sessions then end with the process, and servers behind one
    /// address do not share them.
    pub session_secret: Option<Vec<u8>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_body_bytes: DEFAULT_MAX_BATCH_BODY_BYTES,
            bulk_cap: kiln_client::DEFAULT_BULK_CAP,
            dashboard_dev_mode: false,
            session_secret: None,
        }
    }
}

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    client: Client,
    keys: Arc<auth::KeyCache>,
    gauges: Arc<metrics_page::GaugeCache>,
    dashboard: Arc<dashboard::DashboardState>,
    config: Arc<ServerConfig>,
}

impl AppState {
    /// State over `client` (its actions are recorded as done by each request's key). The
    /// client's own waiter wakes `GET /runs/{id}/wait`, listening from the first wait on.
    pub fn new(client: Client, config: ServerConfig) -> Self {
        // Counters and histograms recorded from now on show on /metrics.
        prometheus_handle();
        Self {
            gauges: Arc::default(),
            client,
            keys: Arc::default(),
            dashboard: dashboard::DashboardState::new(config.session_secret.as_deref()),
            config: Arc::new(config),
        }
    }
}

/// The OpenAPI document of the API, generated from the handlers' attributes and types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kiln API",
        description = "Trigger and manage durable background runs. Authenticate with \
                       `Authorization: Bearer kiln_sk_...` (create a key with `kiln keys create`).",
    ),
    paths(
        routes::trigger_task, routes::batch_trigger, routes::list_runs, routes::get_run,
        routes::wait_run, routes::run_logs, routes::cancel_run, routes::replay_run, routes::reschedule_run,
        routes::bulk_runs,
        routes::list_tasks, routes::list_queues, routes::create_queue, routes::get_queue, routes::pause_queue,
        routes::resume_queue, routes::override_queue_limit, routes::reset_queue_limit,
        routes::list_schedules, routes::create_schedule, routes::get_schedule,
        routes::update_schedule, routes::delete_schedule, routes::activate_schedule,
        routes::deactivate_schedule, routes::list_audit, routes::list_workers, routes::list_keys, routes::healthz,
        routes::readyz, routes::openapi_document,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "runs", description = "Trigger, read, wait for and steer runs"),
        (name = "tasks", description = "Registered tasks"),
        (name = "queues", description = "Queues: limits, counts, pause"),
        (name = "schedules", description = "Cron schedules"),
        (name = "audit", description = "Who changed what"),
        (name = "workers", description = "Worker processes"),
        (name = "keys", description = "API keys"),
        (name = "health", description = "Liveness and readiness"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // Any route can fail in the database: 500, or 503 when it cannot be reached.
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (status, what) in [
                    (
                        "500",
                        "The database refused the request (details in the server's log)",
                    ),
                    ("503", "The database cannot be reached"),
                ] {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            utoipa::openapi::ResponseBuilder::new()
                                .description(what)
                                .content(
                                    "application/json",
                                    utoipa::openapi::ContentBuilder::new()
                                        .schema(Some(utoipa::openapi::Ref::from_schema_name(
                                            "ErrorBody",
                                        )))
                                        .build(),
                                )
                                .build()
                                .into()
                        });
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("kiln_sk_...")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI 3.1 document as JSON.
pub fn openapi_json() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes")
}

/// The router: every route of the API and the dashboard. Tests call it directly.
pub fn app(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let max_batch = state.config.max_batch_body_bytes;
    let document = Arc::new(openapi_json());
    let api = Router::new()
        .route("/tasks", get(routes::list_tasks))
        .route("/tasks/{task_id}/trigger", post(routes::trigger_task))
        .route(
            "/tasks/{task_id}/batch",
            post(routes::batch_trigger).layer(DefaultBodyLimit::max(max_batch)),
        )
        .route("/runs", get(routes::list_runs))
        .route("/runs/{id}", get(routes::get_run))
        .route("/runs/{id}/wait", get(routes::wait_run))
        .route("/runs/{id}/logs", get(routes::run_logs))
        .route("/runs/{id}/cancel", post(routes::cancel_run))
        .route("/runs/{id}/replay", post(routes::replay_run))
        .route("/runs/{id}/reschedule", post(routes::reschedule_run))
        .route("/runs/bulk/{action}", post(routes::bulk_runs))
        .route(
            "/queues",
            get(routes::list_queues).post(routes::create_queue),
        )
        .route("/queues/{name}", get(routes::get_queue))
        .route("/queues/{name}/pause", post(routes::pause_queue))
        .route("/queues/{name}/resume", post(routes::resume_queue))
        .route(
            "/queues/{name}/concurrency/override",
            post(routes::override_queue_limit),
        )
        .route(
            "/queues/{name}/concurrency/reset",
            post(routes::reset_queue_limit),
        )
        .route(
            "/schedules",
            get(routes::list_schedules).post(routes::create_schedule),
        )
        .route(
            "/schedules/{id}",
            get(routes::get_schedule)
                .put(routes::update_schedule)
                .delete(routes::delete_schedule),
        )
        .route("/schedules/{id}/activate", post(routes::activate_schedule))
        .route(
            "/schedules/{id}/deactivate",
            post(routes::deactivate_schedule),
        )
        .route("/audit", get(routes::list_audit))
        .route("/workers", get(routes::list_workers))
        .route("/keys", get(routes::list_keys))
        .route(
            "/openapi.json",
            get(move || routes::openapi_document(Arc::clone(&document))),
        )
        .fallback(|| async {
            ApiError::new(
                kiln_client::ErrorCode::NotFound,
                "no such API route: GET /api/v1/openapi.json lists them",
            )
        });
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(metrics_page::metrics))
        .merge(dashboard::routes())
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` completes, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
