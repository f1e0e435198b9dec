//! The audit trail on the wire: page queries with their cursor headers, the entry as shown, the
//! chain verification.

use super::{project, wire_enum};
use crate::server::Consistency;
use crate::state::audit::{AuditEntry, Break, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

wire_enum!(Outcome, "Whether the command was carried out or refused.", [Outcome::Ok, Outcome::Rejected]);

/// Paging of the audit trail: a page is the newest entries read back from `before` (or the end),
/// or the oldest from `after`; these headers say where the next page starts.
pub const NEXT_BEFORE: &str = "x-audit-next-before";
pub const NEXT_AFTER: &str = "x-audit-next-after";
pub const DEFAULT_AUDIT_PAGE: u32 = 1000;
pub const MAX_AUDIT_PAGE: u32 = 100_000;

/// `GET /api/v1/audit` filters (with a `PageQuery`).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilterQuery {
    /// Only entries about this tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// RFC 3339 time, or an age such as `1h`.
    #[serde(default)]
    #[param(example = "1h")]
    pub since: Option<String>,
}

/// A page of entries: at most `limit`, before or after a sequence number.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// At most this many entries per page (default 1000).
    #[serde(default)]
    #[param(minimum = 1, maximum = 100_000)]
    pub limit: Option<u32>,
    /// Only entries older than this sequence number (the `x-audit-next-before` of a page).
    #[serde(default)]
    pub before: Option<u64>,
    /// Only entries newer than this sequence number, oldest first (`x-audit-next-after`).
    #[serde(default)]
    pub after: Option<u64>,
    #[serde(default, skip_serializing)]
    pub consistency: Option<Consistency>,
}

/// An entry of the chain as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    #[schema(minimum = 1)]
    pub seq: u64,
    pub time_ms: u64,
    /// The API key id that acted, or `anonymous` / `system`.
    #[schema(example = "0123456789abcdef")]
    pub actor: String,
    pub source: String,
    #[schema(example = "tenant.create")]
    pub action: String,
    #[schema(example = "tenant/acme")]
    pub target: String,
    pub outcome: Outcome,
    /// Facts about the change; never secrets.
    pub details: BTreeMap<String, String>,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub prev_hash: String,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub hash: String,
}

impl From<&AuditEntry> for AuditEntryView {
    fn from(e: &AuditEntry) -> Self {
        project!(e.clone() => AuditEntry => AuditEntryView {
            seq, time_ms, actor, source, action, target, outcome, details, prev_hash, hash
        })
    }
}

/// The result of walking the chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    /// Entries verified before the first break (all of them when ok).
    pub verified: u64,
    pub total: u64,
    pub broken: Option<BreakView>,
}

/// The first entry at which the chain is broken.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BreakView {
    pub seq: u64,
    pub reason: String,
}

impl From<Break> for BreakView {
    fn from(b: Break) -> Self {
        project!(b => Break => BreakView { seq, reason })
    }
}
