//! A calendar provider on loopback that behaves like Google Calendar's events API, so the sync
//! tasks talk real HTTP: paged event lists, sync tokens for incremental syncs, access tokens that
//! expire (401) and are refreshed, rate limits (429 with `Retry-After`) and server errors (503).
//!
//! - `GET /calendars/{ws}/events?pageToken=&syncToken=&maxResults=` with `Authorization: Bearer`
//!   answers `{ items, nextPageToken?, nextSyncToken? }`; with a sync token, only events changed
//!   since it (deleted ones with `status: "cancelled"`).
//! - `POST /oauth/token` with `{ ws_id, refresh_token }` answers `{ access_token }`.
//!
//! Faults are deterministic: every `rate_limit_every`-th authorized request gets a 429, every
//! `server_error_every`-th a 503, an access token expires after `token_uses` requests, and
//! workspaces in `broken` always get a 500.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// One event as the provider serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEvent {
    /// The provider's id.
    pub id: String,
    /// `confirmed`, or `cancelled` for a deleted event (incremental syncs only).
    pub status: String,
    /// Title.
    pub summary: String,
    /// Start.
    pub start: DateTime<Utc>,
    /// End.
    pub end: DateTime<Utc>,
}

/// One page of events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventPage {
    /// The events.
    pub items: Vec<ProviderEvent>,
    /// Token of the next page, if any.
    #[serde(rename = "nextPageToken", skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// On the last page: the token for the next incremental sync.
    #[serde(rename = "nextSyncToken", skip_serializing_if = "Option::is_none")]
    pub next_sync_token: Option<String>,
}

/// Which requests fail.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every n-th authorized request answers 429 (0: never).
    pub rate_limit_every: u32,
    /// Every n-th authorized request answers 503 (0: never).
    pub server_error_every: u32,
    /// An access token expires after this many requests (0: never).
    pub token_uses: u32,
    /// Workspaces whose calendar always answers 500.
    pub broken: HashSet<String>,
}

#[derive(Debug, Clone)]
struct StoredEvent {
    event: ProviderEvent,
    /// Change sequence number: incremental syncs return events changed after a token's number.
    seq: u64,
    deleted: bool,
}

#[derive(Debug, Default)]
struct Calendar {
    events: BTreeMap<String, StoredEvent>,
    access_token: String,
    token_uses: u32,
    refresh_token: String,
    requests: u32,
}

/// Counts of what the provider answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// 200s.
    pub ok: u32,
    /// 401s (expired token).
    pub unauthorized: u32,
    /// 429s.
    pub rate_limited: u32,
    /// 5xx.
    pub server_errors: u32,
    /// Token refreshes.
    pub refreshes: u32,
}

#[derive(Debug, Default)]
struct Inner {
    calendars: HashMap<String, Calendar>,
    seq: u64,
    faults: Faults,
    served: Served,
    /// Authorized requests so far, across calendars: the fault counters count these.
    requests: u32,
}

/// The provider's state, shared by its HTTP server and by whoever seeds and changes calendars.
#[derive(Debug, Clone, Default)]
pub struct Provider {
    inner: Arc<Mutex<Inner>>,
}

/// Credentials a workspace's connection starts with.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The access token.
    pub access_token: String,
    /// The refresh token.
    pub refresh_token: String,
}

impl Provider {
    /// A provider with these faults and no calendars.
    pub fn new(faults: Faults) -> Self {
        let provider = Self::default();
        provider.inner.lock().expect("provider").faults = faults;
        provider
    }

    /// Creates (or resets) a workspace's calendar with `events` events over the coming weeks,
    /// and returns the credentials its connection uses.
    pub fn seed_calendar(&self, ws_id: &str, events: usize) -> Credentials {
        let mut inner = self.inner.lock().expect("provider");
        let base = Utc::now()
            .date_naive()
            .and_hms_opt(8, 0, 0)
            .expect("a time")
            .and_utc();
        let mut calendar = Calendar {
            access_token: format!("at-{ws_id}-{}", fastrand::u64(..)),
            refresh_token: format!("rt-{ws_id}-{}", fastrand::u64(..)),
            ..Calendar::default()
        };
        for i in 0..events {
            inner.seq += 1;
            let start = base + Duration::hours(24 * (i as i64 / 4) + 2 * (i as i64 % 4));
            let id = format!("evt-{ws_id}-{i}");
            calendar.events.insert(
                id.clone(),
                StoredEvent {
                    event: ProviderEvent {
                        id,
                        status: "confirmed".into(),
                        summary: format!("Meeting {i} of {ws_id}"),
                        start,
                        end: start + Duration::minutes(45),
                    },
                    seq: inner.seq,
                    deleted: false,
                },
            );
        }
        let credentials = Credentials {
            access_token: calendar.access_token.clone(),
            refresh_token: calendar.refresh_token.clone(),
        };
        inner.calendars.insert(ws_id.to_owned(), calendar);
        credentials
    }

    /// Changes a calendar as its owner would: renames one event, deletes one, adds one.
    pub fn edit_calendar(&self, ws_id: &str) {
        let mut inner = self.inner.lock().expect("provider");
        inner.seq += 1;
        let seq = inner.seq;
        let Some(calendar) = inner.calendars.get_mut(ws_id) else {
            return;
        };
        let live: Vec<String> = calendar
            .events
            .iter()
            .filter(|(_, e)| !e.deleted)
            .map(|(id, _)| id.clone())
            .collect();
        if let Some(first) = live.first() {
            let e = calendar.events.get_mut(first).expect("live event");
            e.event.summary = format!("{} (moved)", e.event.summary);
            e.seq = seq;
        }
        if let Some(last) = live.last().filter(|_| live.len() > 1) {
            let e = calendar.events.get_mut(last).expect("live event");
            e.deleted = true;
            e.seq = seq;
        }
        // Calendars keep whole seconds.
        let start = (Utc::now() + Duration::days(3))
            .with_nanosecond(0)
            .expect("zero nanoseconds is valid");
        let id = format!("evt-{ws_id}-new-{seq}");
        calendar.events.insert(
            id.clone(),
            StoredEvent {
                event: ProviderEvent {
                    id,
                    status: "confirmed".into(),
                    summary: "Added later".into(),
                    start,
                    end: start + Duration::minutes(30),
                },
                seq,
                deleted: false,
            },
        );
    }

    /// The events a workspace's calendar holds now (deleted ones left out), by id.
    pub fn events(&self, ws_id: &str) -> Vec<ProviderEvent> {
        let inner = self.inner.lock().expect("provider");
        inner
            .calendars
            .get(ws_id)
            .map(|c| {
                c.events
                    .values()
                    .filter(|e| !e.deleted)
                    .map(|e| e.event.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What the provider answered so far.
    pub fn served(&self) -> Served {
        self.inner.lock().expect("provider").served
    }

    /// Serves the API on a loopback port; returns its base URL. The server runs until the
    /// runtime stops.
    pub async fn serve(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/calendars/{ws}/events", get(list_events))
            .route("/oauth/token", post(refresh_token))
            .with_state(self.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the calendar provider stopped");
            }
        });
        Ok(format!("http://{addr}"))
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
    #[serde(rename = "syncToken")]
    sync_token: Option<String>,
    #[serde(rename = "maxResults")]
    max_results: Option<usize>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "message": message } })),
    )
        .into_response()
}

async fn list_events(
    State(provider): State<Provider>,
    Path(ws): Path<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let mut guard = provider.inner.lock().expect("provider");
    // Borrow fields apart (the calendar and the counters) through a plain reference.
    let inner = &mut *guard;
    let faults = inner.faults.clone();
    if faults.broken.contains(&ws) {
        inner.served.server_errors += 1;
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "calendar backend unavailable for this account",
        );
    }
    let seq_now = inner.seq;
    let Some(calendar) = inner.calendars.get_mut(&ws) else {
        return error(StatusCode::NOT_FOUND, "no such calendar");
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(calendar.access_token.as_str()) {
        inner.served.unauthorized += 1;
        return error(StatusCode::UNAUTHORIZED, "invalid credentials");
    }
    calendar.requests += 1;
    if faults.token_uses > 0 {
        calendar.token_uses += 1;
        if calendar.token_uses > faults.token_uses {
            // The token expired: a new one must be obtained with the refresh token.
            calendar.access_token = format!("expired-{}", fastrand::u64(..));
            inner.served.unauthorized += 1;
            return error(StatusCode::UNAUTHORIZED, "access token expired");
        }
    }
    inner.requests += 1;
    let n = inner.requests;
    if faults.rate_limit_every > 0 && n % faults.rate_limit_every == 0 {
        inner.served.rate_limited += 1;
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("0"));
        return response;
    }
    if faults.server_error_every > 0 && n % faults.server_error_every == 0 {
        inner.served.server_errors += 1;
        return error(StatusCode::SERVICE_UNAVAILABLE, "backend error");
    }
    // The page: events in id order; an incremental sync lists changes after its token.
    let since: Option<u64> = match &query.sync_token {
        Some(token) => match token.strip_prefix("s").and_then(|s| s.parse().ok()) {
            Some(seq) => Some(seq),
            None => {
                return error(
                    StatusCode::GONE,
                    "sync token is no longer valid; do a full sync",
                )
            }
        },
        None => None,
    };
    let (offset, snapshot) = match &query.page_token {
        Some(token) => {
            let parsed = token
                .strip_prefix("p")
                .and_then(|t| t.split_once(':'))
                .and_then(|(o, s)| Some((o.parse::<usize>().ok()?, s.parse::<u64>().ok()?)));
            match parsed {
                Some(p) => p,
                None => return error(StatusCode::BAD_REQUEST, "bad page token"),
            }
        }
        None => (0, seq_now),
    };
    let max = query.max_results.unwrap_or(25).clamp(1, 250);
    let selected: Vec<ProviderEvent> = calendar
        .events
        .values()
        .filter(|e| e.seq <= snapshot)
        .filter(|e| match since {
            Some(since) => e.seq > since,
            None => !e.deleted,
        })
        .map(|e| {
            let mut event = e.event.clone();
            if e.deleted {
                event.status = "cancelled".into();
            }
            event
        })
        .collect();
    let items: Vec<ProviderEvent> = selected.iter().skip(offset).take(max).cloned().collect();
    let more = offset + items.len() < selected.len();
    inner.served.ok += 1;
    Json(EventPage {
        items,
        next_page_token: more.then(|| format!("p{}:{snapshot}", offset + max)),
        next_sync_token: (!more).then(|| format!("s{snapshot}")),
    })
    .into_response()
}

#[derive(Debug, Deserialize)]
struct RefreshRequest {
    ws_id: String,
    refresh_token: String,
}

async fn refresh_token(
    State(provider): State<Provider>,
    Json(request): Json<RefreshRequest>,
) -> Response {
    let mut inner = provider.inner.lock().expect("provider");
    let Some(calendar) = inner.calendars.get_mut(&request.ws_id) else {
        return error(StatusCode::NOT_FOUND, "no such calendar");
    };
    if calendar.refresh_token != request.refresh_token {
        return error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    calendar.access_token = format!("at-{}-{}", request.ws_id, fastrand::u64(..));
    calendar.token_uses = 0;
    let token = calendar.access_token.clone();
    inner.served.refreshes += 1;
    Json(serde_json::json!({ "access_token": token })).into_response()
}
