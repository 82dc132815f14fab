//! Test support: a database with the test tasks registered, API keys of each scope, the router
//! called in-process, and a check of every response against the OpenAPI document.

#![allow(dead_code, unreachable_pub)]

pub mod schema;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use kiln_client::{Client, Scope};
use kiln_server::{app, openapi_json, AppState, ServerConfig};
use kiln_tests::TestDb;
use serde_json::Value;
use tower::ServiceExt;

/// A router over a fresh database, with one key of each scope.
pub struct Api {
    pub db: TestDb,
    pub client: Client,
    pub state: AppState,
    pub admin: String,
    pub trigger: String,
    pub read: String,
    document: Value,
}

impl Api {
    pub async fn new() -> Self {
        Self::with_config(ServerConfig::default()).await
    }

    pub async fn with_config(config: ServerConfig) -> Self {
        let (db, client) = kiln_tests::registered().await;
        let keys = client.acting_as("cli:test");
        let admin = keys
            .keys()
            .create("ops", Scope::Admin)
            .await
            .unwrap()
            .secret;
        let trigger = keys
            .keys()
            .create("app", Scope::Trigger)
            .await
            .unwrap()
            .secret;
        let read = keys
            .keys()
            .create("viewer", Scope::Read)
            .await
            .unwrap()
            .secret;
        let state = AppState::new(client.clone(), config);
        Self {
            db,
            client,
            state,
            admin,
            trigger,
            read,
            document: openapi_json(),
        }
    }

    /// Sends a request and checks the answer against the document's schema for this route and
    /// status. `body` is sent as JSON text (a `Value::String` is sent as raw text).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, value) = self.send(method.clone(), uri, key, body).await;
        schema::check_response(&self.document, &method, uri, status, &value);
        (status, value)
    }

    /// Sends a request without checking the answer against the document (for routes the
    /// document does not have, such as a mistyped path).
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.send_with_headers(method, uri, key, body, &[]).await
    }

    /// [`Api::send`] with extra request headers.
    pub async fn send_with_headers(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let body = match body {
            Some(Value::String(raw)) => Body::from(raw),
            Some(value) => Body::from(value.to_string()),
            None => Body::empty(),
        };
        let request = request
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{method} {uri} answered {status} with a body that is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    pub async fn get(&self, uri: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, Some(key), None).await
    }

    pub async fn post(&self, uri: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, uri, Some(key), Some(body)).await
    }
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// The error message of an error body.
pub fn message(body: &Value) -> &str {
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}
