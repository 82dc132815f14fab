//! The web dashboard at `/`: server-rendered HTML (maud escapes everything it prints), one small
//! embedded script for live refresh and confirmations, no build step. Every page reads and acts
//! through the client's operations layer, as the API and the CLI do.
//!
//! Pages: runs (filters in the URL, cursor pages, live refresh), a run (timings, payload,
//! output, error chain, attempts, logs, children; cancel, replay with an edited payload,
//! reschedule), tasks (with a Test form that triggers a run), queues (pause, resume, limit
//! override), schedules (create, edit, activate, with the cron expression checked as it is
//! typed) and workers. Sign-in takes an admin API
//! key; `kiln dev` turns on development mode, where no sign-in is asked and every page says so.

mod bulk;
mod layout;
mod queues;
mod runs;
mod schedules;
mod session;
mod tasks;
mod workers;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;

use crate::{ApiError, AppState};
pub(crate) use layout::error_page;
pub use session::{KEY_LIST_TTL, SESSION_TTL};

/// What the dashboard keeps between requests.
#[derive(Debug)]
pub(crate) struct DashboardState {
    signer: session::Signer,
    live_keys: session::LiveKeys,
    jobs: bulk::Jobs,
}

impl DashboardState {
    pub(crate) fn new(secret: Option<&[u8]>) -> Arc<Self> {
        Arc::new(Self {
            signer: session::Signer::new(secret),
            live_keys: session::LiveKeys::default(),
            jobs: bulk::Jobs::default(),
        })
    }
}

/// The dashboard's routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/runs", get(runs::list))
        .route("/runs/bulk", post(bulk::confirm))
        .route("/runs/bulk/start", post(bulk::start))
        .route("/bulk/{id}", get(bulk::progress))
        .route("/runs/{id}", get(runs::detail))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/replay", post(runs::replay))
        .route("/runs/{id}/reschedule", post(runs::reschedule))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::detail))
        .route("/tasks/{id}/test", post(tasks::test))
        .route("/schedules", get(schedules::list).post(schedules::create))
        .route("/schedules/check", get(schedules::check))
        .route("/schedules/{id}", get(schedules::edit_page))
        .route("/schedules/{id}/{action}", post(schedules::act))
        .route("/queues", get(queues::list))
        .route("/queues/{name}", get(queues::detail))
        .route("/queues/{name}/{action}", post(queues::act))
        .route("/workers", get(workers::list))
        .route("/assets/{file}", get(asset))
        .layer(axum::middleware::map_response(secure_headers))
}

/// Headers every dashboard response carries: scripts and styles only from this server, no
/// framing, no sniffing.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// A form body as name/value pairs (names may repeat).
pub(crate) fn form_pairs(body: &Bytes) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_bytes(body).map_err(|e| {
        ApiError::new(
            kiln_client::ErrorCode::InvalidRequest,
            format!("the form could not be read: {e}"),
        )
    })
}

/// A form's name/value pairs, after checking its CSRF token.
pub(crate) fn checked_form(
    session: &session::Session,
    body: &Bytes,
) -> Result<Vec<(String, String)>, ApiError> {
    let form = form_pairs(body)?;
    session.check_csrf(&form)?;
    Ok(form)
}

/// The first value of `name` in a form.
pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Where to go after a sign-in: a path on this site, never another site.
fn safe_next(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or("/runs")
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let query: Vec<(String, String)> = query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let next = safe_next(field(&query, "next")).to_owned();
    login_form(&state, &headers, &next, None, StatusCode::OK)
}

fn login_form(
    state: &AppState,
    headers: &HeaderMap,
    next: &str,
    problem: Option<&str>,
    status: StatusCode,
) -> Response {
    if state.config.dashboard_dev_mode {
        return Redirect::to(next).into_response();
    }
    let (token, set_cookie) = session::login_token(state, headers);
    let body = html! {
        main class="signin" {
            h1 { "Kiln" }
            p { "Sign in with an API key of scope " code { "admin" } "." }
            @if let Some(problem) = problem {
                p class="flash error" role="alert" { (problem) }
            }
            form method="post" action="/login" {
                input type="hidden" name=(session::CSRF_FIELD) value=(token);
                input type="hidden" name="next" value=(next);
                label for="key" { "API key" }
                input id="key" name="key" type="password" autocomplete="off" required
                    placeholder="kiln_sk_..." autofocus;
                button type="submit" { "Sign in" }
            }
            p class="hint" { "Create a key with " code { "kiln keys create --name NAME --scope admin" } "." }
        }
    };
    let mut response = (status, layout::bare("Sign in", body)).into_response();
    if let Some(set_cookie) = set_cookie {
        if let Ok(value) = HeaderValue::from_str(&set_cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match form_pairs(&body) {
        Ok(form) => form,
        Err(error) => return error_page(error),
    };
    let next = safe_next(field(&form, "next")).to_owned();
    let token = field(&form, session::CSRF_FIELD).unwrap_or_default();
    if !session::login_token_holds(&state, &headers, token) {
        return login_form(
            &state,
            &headers,
            &next,
            Some("The sign-in form expired: try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let secret = field(&form, "key").unwrap_or_default().trim();
    let key = match state.keys.authenticate(&state.client, secret).await {
        Ok(key) => key,
        Err(error) if error.code == kiln_client::ErrorCode::Unauthorized => {
            return login_form(
                &state,
                &headers,
                &next,
                Some("That API key is unknown or revoked."),
                StatusCode::UNAUTHORIZED,
            )
        }
        Err(error) => return error_page(error),
    };
    if !key.scope.allows(kiln_client::Access::Admin) {
        let message = format!(
            "The key {:?} has scope {}; the dashboard needs a key of scope admin.",
            key.name, key.scope
        );
        return login_form(
            &state,
            &headers,
            &next,
            Some(&message),
            StatusCode::FORBIDDEN,
        );
    }
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&session::session_cookie(&state, &key)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(session: session::Session, body: Bytes) -> Response {
    if let Err(error) = checked_form(&session, &body) {
        return error_page(error);
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&session::cleared_session_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The embedded stylesheet and script, cached by browsers for a year: their URLs change with
/// their content.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "dashboard.css" => (layout::CSS, "text/css; charset=utf-8"),
        "dashboard.js" => (layout::JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}
