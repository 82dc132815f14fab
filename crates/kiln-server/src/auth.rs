//! Bearer API keys: every `/api` route names the access it needs; the caller's key must allow it.
//! Keys are looked up by their SHA-256 and cached for [`KEY_CACHE_TTL`], so a request costs no
//! extra query and a revoked key stops working within that time.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use kiln_client::{hash_secret, Access, ApiKey, Client, ErrorCode};
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

/// How long a key lookup (found or not) is reused: the longest a revoked key keeps working.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// A key's `last_used_at` is written at most this often.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// Keys kept at most; past it, expired entries are dropped.
const MAX_CACHED_KEYS: usize = 10_000;

/// A key found (or not) by its secret's hash, and when.
type Lookup = (Option<ApiKey>, Instant);

/// Recent key lookups, and when each key's use was last recorded.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    lookups: Mutex<HashMap<[u8; 32], Lookup>>,
    recorded_use: Mutex<HashMap<Uuid, Instant>>,
}

impl KeyCache {
    pub(crate) async fn authenticate(
        &self,
        client: &Client,
        secret: &str,
    ) -> Result<ApiKey, ApiError> {
        let hash = hash_secret(secret);
        let cached = self
            .lookups
            .lock()
            .expect("key cache")
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(key, _)| key.clone());
        let key = match cached {
            Some(key) => key,
            None => {
                let key = client.keys().authenticate(secret).await?;
                // Only keys that exist are cached: random strings cannot evict them.
                if key.is_some() {
                    let mut lookups = self.lookups.lock().expect("key cache");
                    if lookups.len() >= MAX_CACHED_KEYS {
                        lookups.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
                    }
                    lookups.insert(hash, (key.clone(), Instant::now()));
                }
                key
            }
        };
        let key = key.ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "the API key is unknown or revoked: create one with `kiln keys create --name NAME`",
            )
        })?;
        self.record_use(client, &key);
        Ok(key)
    }

    /// Writes `last_used_at` in the background, at most once per [`LAST_USED_EVERY`] per key.
    fn record_use(&self, client: &Client, key: &ApiKey) {
        let due = {
            let mut recorded = self.recorded_use.lock().expect("key use");
            let due = recorded
                .get(&key.id)
                .is_none_or(|at| at.elapsed() >= LAST_USED_EVERY);
            if due {
                recorded.insert(key.id, Instant::now());
            }
            due
        };
        if due {
            let (client, id) = (client.clone(), key.id);
            tokio::spawn(async move {
                if let Err(error) = client.keys().touch(&[id]).await {
                    tracing::warn!(%error, "could not record an API key's use");
                }
            });
        }
    }
}

/// The access a route needs, as a type: `Caller<ReadRuns>`.
pub(crate) trait RequiredAccess {
    /// The access.
    const ACCESS: Access;
    /// How the access reads in a refusal.
    const WHAT: &'static str;
}

macro_rules! access {
    ($($name:ident => $access:ident, $what:literal;)*) => {$(
        #[doc = concat!("Routes that ", $what, ".")]
        #[derive(Debug)]
        pub(crate) struct $name;
        impl RequiredAccess for $name {
            const ACCESS: Access = Access::$access;
            const WHAT: &'static str = $what;
        }
    )*};
}

access! {
    TriggerRuns => Trigger, "trigger runs";
    ReadRuns => ReadRuns, "read runs";
    ReadAll => Read, "read queues, schedules, tasks and the audit log";
    Admin => Admin, "change runs, queues, schedules and keys";
}

/// A caller whose key allows `A`: a client that records its actions as done by the key.
#[derive(Debug)]
pub(crate) struct Caller<A> {
    /// The operations layer, acting as `key:<name>`.
    pub(crate) client: Client,
    _access: PhantomData<A>,
}

impl<A: RequiredAccess> FromRequestParts<AppState> for Caller<A> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret.trim())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "this route needs an API key: send `Authorization: Bearer kiln_sk_...` \
                     (create one with `kiln keys create --name NAME`)",
                )
            })?;
        let key = state.keys.authenticate(&state.client, secret).await?;
        if !key.scope.allows(A::ACCESS) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "the API key {:?} has scope {}, which may not {}: use a key with a wider scope",
                    key.name,
                    key.scope,
                    A::WHAT
                ),
            ));
        }
        Ok(Self {
            client: state.client.acting_as(format!("key:{}", key.name)),
            _access: PhantomData,
        })
    }
}
