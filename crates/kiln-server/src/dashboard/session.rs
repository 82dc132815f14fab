//! Signing in to the dashboard: an admin API key traded for a signed session cookie, a CSRF
//! token derived from the session for every form, and development mode, where no sign-in is
//! asked for (and every page says so).
//!
//! The cookie holds the key's id and an expiry, signed with HMAC-SHA256 under the server's
//! session secret; nothing is stored server-side. Each request checks the signature, the expiry,
//! and that the key is still live (revoking a key ends its sessions within [`KEY_LIST_TTL`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use kiln_client::{Access, ApiKey, Client};
use sha2::Sha256;
use uuid::Uuid;

use crate::AppState;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "kiln_session";
/// The cookie that ties the sign-in form to the browser that loaded it.
const LOGIN_COOKIE: &str = "kiln_login";
/// How long a session lasts after signing in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long the list of keys is reused to check that a session's key is still live.
pub const KEY_LIST_TTL: Duration = Duration::from_secs(5);
/// The name of the form field carrying the CSRF token.
pub(crate) const CSRF_FIELD: &str = "_csrf";

type HmacSha256 = Hmac<Sha256>;

/// The secret sessions and CSRF tokens are signed with.
#[derive(Clone)]
pub(crate) struct Signer {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer over `secret`, or over 32 random bytes (sessions then end when the process
    /// stops, and each server of several signs its own).
    pub(crate) fn new(secret: Option<&[u8]>) -> Self {
        let secret = match secret {
            Some(secret) => secret.to_vec(),
            None => {
                let mut bytes = vec![0u8; 32];
                getrandom::fill(&mut bytes).expect("the OS random source works");
                bytes
            }
        };
        Self { secret }
    }

    fn sign(&self, what: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key size");
        mac.update(what.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn verify(&self, what: &str, signature: &str) -> bool {
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key size");
        mac.update(what.as_bytes());
        mac.verify_slice(&signature).is_ok()
    }

    /// The cookie value of a session of `key` ending at `expires` (unix seconds).
    fn session_value(&self, key: Uuid, expires: i64) -> String {
        let body = format!("v1.{}.{expires}", key.simple());
        let signature = self.sign(&body);
        format!("{body}.{signature}")
    }

    /// The key id of a session cookie whose signature holds and that has not expired.
    fn open_session(&self, value: &str, now: i64) -> Option<Uuid> {
        let (body, signature) = value.rsplit_once('.')?;
        if !self.verify(body, signature) {
            return None;
        }
        let mut parts = body.split('.');
        let (Some("v1"), Some(key), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let expires: i64 = expires.parse().ok()?;
        (expires > now).then_some(())?;
        key.parse().ok()
    }

    /// The CSRF token of the session `value` (the dev session when `None`).
    fn csrf_for(&self, session: Option<&str>) -> String {
        self.sign(&format!("csrf|{}", session.unwrap_or("dev")))
    }
}

/// The live keys, read at most once per [`KEY_LIST_TTL`].
#[derive(Debug, Default)]
pub(crate) struct LiveKeys {
    read: Mutex<Option<(Instant, Vec<ApiKey>)>>,
}

impl LiveKeys {
    async fn find(&self, client: &Client, id: Uuid) -> Result<Option<ApiKey>, Response> {
        let cached = self
            .read
            .lock()
            .expect("key list")
            .as_ref()
            .filter(|(at, _)| at.elapsed() < KEY_LIST_TTL)
            .map(|(_, keys)| keys.iter().find(|k| k.id == id).cloned());
        let found = match cached {
            Some(found) => found,
            None => {
                let keys = client
                    .keys()
                    .list()
                    .await
                    .map_err(|e| super::error_page(e.into()))?;
                let found = keys.iter().find(|k| k.id == id).cloned();
                *self.read.lock().expect("key list") = Some((Instant::now(), keys));
                found
            }
        };
        Ok(found.filter(|k| k.revoked_at.is_none() && k.scope.allows(Access::Admin)))
    }
}

/// A signed-in operator (or development mode): what every dashboard page and form needs.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// Who acts: the key's name, or `dev`.
    pub(crate) who: String,
    /// The token every form of this session carries.
    pub(crate) csrf: String,
    /// Development mode: no sign-in was asked for.
    pub(crate) dev: bool,
    /// The operations layer, recording actions as done by this operator.
    pub(crate) client: Client,
}

impl Session {
    /// Refuses a form whose CSRF token is not this session's.
    pub(crate) fn check_csrf(&self, form: &[(String, String)]) -> Result<(), crate::ApiError> {
        let sent = form
            .iter()
            .find(|(name, _)| name == CSRF_FIELD)
            .map(|(_, v)| v.as_str());
        if sent == Some(self.csrf.as_str()) {
            Ok(())
        } else {
            Err(crate::ApiError::new(
                kiln_client::ErrorCode::Forbidden,
                "this form's security token is missing or stale: reload the page and try again",
            ))
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A request from another site (its `Origin` names another host) is refused before any form
/// is read: with SameSite=Strict cookies and the CSRF token, a third line of defence.
fn cross_site(parts: &Parts) -> bool {
    parts.method != Method::GET
        && parts.method != Method::HEAD
        && cross_site_headers(&parts.headers)
}

fn sign_in_redirect(parts: &Parts) -> Response {
    let next = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    Redirect::to(&format!("/login?{query}")).into_response()
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if cross_site(parts) {
            return Err(super::error_page(crate::ApiError::new(
                kiln_client::ErrorCode::Forbidden,
                "a form from another site was refused",
            )));
        }
        let dashboard = &state.dashboard;
        if state.config.dashboard_dev_mode {
            return Ok(Self {
                who: "dev".to_owned(),
                csrf: dashboard.signer.csrf_for(None),
                dev: true,
                client: state.client.acting_as("dashboard:dev"),
            });
        }
        let Some(value) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(sign_in_redirect(parts));
        };
        let Some(key_id) = dashboard.signer.open_session(value, now_unix()) else {
            return Err(sign_in_redirect(parts));
        };
        let Some(key) = dashboard.live_keys.find(&state.client, key_id).await? else {
            return Err(sign_in_redirect(parts));
        };
        Ok(Self {
            csrf: dashboard.signer.csrf_for(Some(value)),
            client: state.client.acting_as(format!("dashboard:{}", key.name)),
            who: key.name,
            dev: false,
        })
    }
}

/// The sign-in form's token, tied to the browser by [`LOGIN_COOKIE`]: returns the token and
/// the cookie to set.
pub(crate) fn login_token(state: &AppState, headers: &HeaderMap) -> (String, Option<String>) {
    let signer = &state.dashboard.signer;
    match cookie(headers, LOGIN_COOKIE).filter(|n| n.len() == 32) {
        Some(nonce) => (signer.sign(&format!("login|{nonce}")), None),
        None => {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).expect("the OS random source works");
            let nonce: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let token = signer.sign(&format!("login|{nonce}"));
            let set = format!("{LOGIN_COOKIE}={nonce}; Path=/login; HttpOnly; SameSite=Strict");
            (token, Some(set))
        }
    }
}

/// Whether a sign-in form's token is the one [`login_token`] gave this browser.
pub(crate) fn login_token_holds(state: &AppState, headers: &HeaderMap, token: &str) -> bool {
    cookie(headers, LOGIN_COOKIE).is_some_and(|nonce| {
        state
            .dashboard
            .signer
            .verify(&format!("login|{nonce}"), token)
    }) && !cross_site_headers(headers)
}

fn cross_site_headers(headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) => {
            origin.split_once("://").map_or(origin, |(_, rest)| rest) != host
        }
        _ => false,
    }
}

/// The `Set-Cookie` value that starts a session of `key`.
pub(crate) fn session_cookie(state: &AppState, key: &ApiKey) -> String {
    let expires = now_unix() + SESSION_TTL.as_secs() as i64;
    let value = state.dashboard.signer.session_value(key.id, expires);
    format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends the session.
pub(crate) fn cleared_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_only_with_its_signature_and_before_its_expiry() {
        let signer = Signer::new(Some(b"secret"));
        let key = Uuid::now_v7();
        let value = signer.session_value(key, 2_000);
        assert_eq!(signer.open_session(&value, 1_999), Some(key));
        assert_eq!(signer.open_session(&value, 2_000), None);
        let forged = value.replace(".2000.", ".9000.");
        assert_eq!(signer.open_session(&forged, 1_999), None);
        let other = Signer::new(Some(b"another secret"));
        assert_eq!(other.open_session(&value, 1_999), None);
        assert_eq!(signer.open_session("v1.garbage", 0), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_per_secret() {
        let signer = Signer::new(Some(b"secret"));
        assert_ne!(signer.csrf_for(Some("a")), signer.csrf_for(Some("b")));
        assert_ne!(
            signer.csrf_for(None),
            Signer::new(Some(b"other")).csrf_for(None)
        );
        assert_eq!(signer.csrf_for(Some("a")), signer.csrf_for(Some("a")));
    }
}
