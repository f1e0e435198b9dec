//! API keys on the wire: the create body, the key as shown (never its secret's hash) and the one
//! answer that carries the token.

use super::{project, wire_enum};
use crate::state::apikey::{ApiKey, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

wire_enum!(
    Role,
    "`admin`: everything; `customer`: its own tenant; `auditor`: the audit trail and cluster status.",
    [Role::Admin, Role::Customer, Role::Auditor]
);

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyBody {
    pub role: Role,
    /// The one tenant a customer key may touch (required for customer keys, refused for others).
    #[serde(default)]
    pub tenant: Option<String>,
    /// At most 200 printable characters.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub description: Option<String>,
    /// Lifetime such as `30d` or `12h`; no expiry when absent.
    #[serde(default)]
    #[schema(example = "30d")]
    pub expires_in: Option<String>,
}

/// A key as shown: who it is for and when it lapses; the secret is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub role: Role,
    #[schema(value_type = Option<String>)]
    pub tenant: Option<crate::state::names::TenantName>,
    pub description: String,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        project!(k.clone() => ApiKey => ApiKeyView {
            id, role, tenant, description, created_at_ms, expires_at_ms, revoked_at_ms
        } hidden { secret_hash })
    }
}

/// A new key: `token` is shown this once and stored nowhere.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub token: String,
    pub key: ApiKeyView,
}
