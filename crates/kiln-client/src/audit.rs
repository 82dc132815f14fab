//! Who acts through a client, and the audit log of what they changed.

pub use kiln_store::audit::AuditEntry;
use kiln_store::audit::{audit_insert, audit_list};

use crate::ClientError;

/// The actor of a client that was given none: an app using the library.
pub const DEFAULT_ACTOR: &str = "client";
/// Entries one audit page holds at most.
pub const MAX_AUDIT_PAGE: u32 = 500;

/// What an operations handle needs: the pool, and who acts (for the audit log).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ops<'a> {
    pub(crate) pool: &'a sqlx::PgPool,
    pub(crate) actor: &'a str,
    pub(crate) client: &'a crate::Client,
}

impl Ops<'_> {
    /// Records a state-changing action that succeeded. The action has happened whatever this
    /// returns, so a failure to record it is logged, not returned.
    pub(crate) async fn audit(&self, action: &str, target: &str, detail: serde_json::Value) {
        if let Err(error) = audit_insert(self.pool, self.actor, action, target, &detail).await {
            tracing::warn!(%error, action, target, "could not record the action in the audit log");
        }
    }
}

/// Reads the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    ops: Ops<'a>,
}

impl<'a> Audit<'a> {
    pub(crate) fn new(ops: Ops<'a>) -> Self {
        Self { ops }
    }

    /// The latest `limit` entries (1 to [`MAX_AUDIT_PAGE`]), newest first, older than entry
    /// `before` when given.
    pub async fn list(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<AuditEntry>, ClientError> {
        if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
            return Err(ClientError::Invalid(format!(
                "an audit page holds 1 to {MAX_AUDIT_PAGE} entries, got {limit}"
            )));
        }
        Ok(audit_list(self.ops.pool, limit, before).await?)
    }
}
