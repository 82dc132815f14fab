//! `client.keys()`: API keys of the HTTP API. A key's secret is shown once, when it is created;
//! Kiln keeps only its SHA-256 and a short prefix to recognise it by.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use kiln_store::api_key::{
    api_key_find_live, api_key_insert, api_key_list, api_key_revoke, api_key_touch, ApiKeyRow,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::audit::Ops;
use crate::ClientError;

/// What every secret starts with, so a leaked one is easy to recognise and to scan for.
pub const SECRET_PREFIX: &str = "kiln_sk_";
/// Random bytes in a secret (256 bits), written as hex after [`SECRET_PREFIX`].
const SECRET_BYTES: usize = 32;
/// Characters of the secret kept for display (the prefix and the first 4 hex digits).
const DISPLAY_PREFIX_LEN: usize = SECRET_PREFIX.len() + 4;
/// Longest key name.
pub const MAX_KEY_NAME: usize = 100;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Trigger runs and read runs: what an app needs to trigger and wait.
    Trigger,
    /// Read everything.
    Read,
    /// Everything, operator actions and key changes included.
    Admin,
}

/// What a request needs its key to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Trigger runs.
    Trigger,
    /// Read runs (and wait for them).
    ReadRuns,
    /// Read anything else (queues, schedules, tasks, keys, audit).
    Read,
    /// Change anything (cancel, replay, pause, schedules, keys).
    Admin,
}

impl Scope {
    /// The scope's name (`trigger`, `read`, `admin`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }

    /// True when a key of this scope may do `access`.
    pub const fn allows(self, access: Access) -> bool {
        match self {
            Self::Admin => true,
            Self::Read => matches!(access, Access::ReadRuns | Access::Read),
            Self::Trigger => matches!(access, Access::Trigger | Access::ReadRuns),
        }
    }
}

impl FromStr for Scope {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "trigger" => Ok(Self::Trigger),
            "read" => Ok(Self::Read),
            "admin" => Ok(Self::Admin),
            other => Err(ClientError::Invalid(format!(
                "unknown key scope {other:?}: use trigger, read or admin"
            ))),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKey {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// The start of its secret, to recognise it by (`kiln_sk_3f9a`).
    pub prefix: String,
    /// What it may do.
    pub scope: Scope,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used (updated about once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked key is refused.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = ClientError;

    fn try_from(row: ApiKeyRow) -> Result<Self, ClientError> {
        Ok(Self {
            id: row.id,
            scope: row.scope.parse()?,
            name: row.name,
            prefix: row.prefix,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        })
    }
}

/// A key just created: the only time its secret is known.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The stored key.
    pub key: ApiKey,
    /// The secret to give the app (`kiln_sk_...`); Kiln cannot show it again.
    pub secret: String,
}

/// The SHA-256 of a secret, as stored.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Creates, lists, revokes and checks API keys.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    ops: Ops<'a>,
}

impl<'a> Keys<'a> {
    pub(crate) fn new(ops: Ops<'a>) -> Self {
        Self { ops }
    }

    /// Creates a key named `name` with `scope` and returns its secret (shown only now).
    pub async fn create(&self, name: &str, scope: Scope) -> Result<CreatedKey, ClientError> {
        if name.trim().is_empty() || name.chars().count() > MAX_KEY_NAME {
            return Err(ClientError::Invalid(format!(
                "a key name must be 1 to {MAX_KEY_NAME} characters, got {}",
                name.chars().count()
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(ClientError::Invalid(
                "a key name may not hold control characters".into(),
            ));
        }
        let mut random = [0u8; SECRET_BYTES];
        getrandom::fill(&mut random)
            .map_err(|e| ClientError::Invalid(format!("the system's random source failed: {e}")))?;
        let secret = format!("{SECRET_PREFIX}{}", hex(&random));
        let row = api_key_insert(
            self.ops.pool,
            name,
            &secret[..DISPLAY_PREFIX_LEN],
            &hash_secret(&secret),
            scope.as_str(),
        )
        .await?;
        let key = ApiKey::try_from(row)?;
        self.ops
            .audit("key.create", name, serde_json::json!({ "scope": scope }))
            .await;
        Ok(CreatedKey { key, secret })
    }

    /// Every key, live and revoked, oldest first.
    pub async fn list(&self) -> Result<Vec<ApiKey>, ClientError> {
        api_key_list(self.ops.pool)
            .await?
            .into_iter()
            .map(ApiKey::try_from)
            .collect()
    }

    /// Revokes the live key named `name`: it is refused from then on.
    pub async fn revoke(&self, name: &str) -> Result<ApiKey, ClientError> {
        let row = api_key_revoke(self.ops.pool, name).await?.ok_or_else(|| {
            ClientError::NotFound(format!(
                "no live API key is named {name:?}: `kiln keys list` shows them"
            ))
        })?;
        self.ops
            .audit("key.revoke", name, serde_json::Value::Null)
            .await;
        ApiKey::try_from(row)
    }

    /// The live key whose secret is `secret`, if any.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>, ClientError> {
        api_key_find_live(self.ops.pool, &hash_secret(secret))
            .await?
            .map(ApiKey::try_from)
            .transpose()
    }

    /// Records that these keys were used now.
    pub async fn touch(&self, ids: &[Uuid]) -> Result<(), ClientError> {
        Ok(api_key_touch(self.ops.pool, ids).await?)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_allow_what_their_names_say() {
        use Access::*;
        let table = [
            (Scope::Trigger, [true, true, false, false]),
            (Scope::Read, [false, true, true, false]),
            (Scope::Admin, [true, true, true, true]),
        ];
        for (scope, allowed) in table {
            for (access, want) in [Trigger, ReadRuns, Read, Admin].into_iter().zip(allowed) {
                assert_eq!(scope.allows(access), want, "{scope} {access:?}");
            }
        }
    }

    #[test]
    fn the_stored_hash_is_the_sha256_of_the_secret() {
        assert_eq!(
            hex(&hash_secret("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
