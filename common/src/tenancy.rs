//! The tenant settings both the coordinator (stored tenants, the REST API) and the node agent
//! (its assignment) speak: one definition, one JSON spelling (kebab-case) on both sides.

use serde::{Deserialize, Serialize};

/// The tenant's database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum DbType {
    Postgres,
    Mssql,
}

/// `schema`: a schema in a shared database (the default); `database`: a database of its own
/// (seed 002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    Schema,
    Database,
}

/// Who may connect: anyone, VPN clients only, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum AccessMode {
    Public,
    VpnOnly,
    Hybrid,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Public => "public",
            AccessMode::VpnOnly => "vpn-only",
            AccessMode::Hybrid => "hybrid",
        }
    }

    /// Whether clients outside the tenant's VPN subnet may connect.
    pub fn admits_public(self) -> bool {
        self != AccessMode::VpnOnly
    }

    /// The mode implied by the seed's two switches when the caller names none.
    pub fn implied(vpn_enabled: bool, public_api: bool) -> Self {
        match (vpn_enabled, public_api) {
            (true, true) => AccessMode::Hybrid,
            (true, false) => AccessMode::VpnOnly,
            (false, _) => AccessMode::Public,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_spelling_is_kebab_case_and_as_str_agrees() {
        for mode in [AccessMode::Public, AccessMode::VpnOnly, AccessMode::Hybrid] {
            assert_eq!(serde_json::to_value(mode).ok(), Some(serde_json::Value::from(mode.as_str())));
        }
        assert_eq!(serde_json::to_string(&DbType::Mssql).ok().as_deref(), Some("\"mssql\""));
        assert_eq!(serde_json::to_string(&Isolation::Database).ok().as_deref(), Some("\"database\""));
    }
}
