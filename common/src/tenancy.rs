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

/// Why a login as a tenant's role failed: the SQLSTATEs of a refused connection, named. The
/// db node reports these names (never PostgreSQL's message text, which may quote what the
/// client sent) and the coordinator's audit entry records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoginFailure {
    /// 28P01: the password (or SCRAM proof) was wrong, or the role does not exist.
    WrongPassword,
    /// 28000: refused by `pg_hba.conf`, or the role may not log in (a suspended tenant).
    NotAuthorized,
    /// 42501: no CONNECT on the database.
    NoConnectPrivilege,
    /// 53300: the role's (or the server's) connection limit.
    TooManyConnections,
    /// 3D000: the database named does not exist.
    NoSuchDatabase,
}

impl LoginFailure {
    pub const ALL: [LoginFailure; 5] = [
        LoginFailure::WrongPassword,
        LoginFailure::NotAuthorized,
        LoginFailure::NoConnectPrivilege,
        LoginFailure::TooManyConnections,
        LoginFailure::NoSuchDatabase,
    ];

    /// The name on the wire and in the audit entry.
    pub const fn as_str(self) -> &'static str {
        match self {
            LoginFailure::WrongPassword => "wrong password",
            LoginFailure::NotAuthorized => "not authorized",
            LoginFailure::NoConnectPrivilege => "no connect privilege",
            LoginFailure::TooManyConnections => "too many connections",
            LoginFailure::NoSuchDatabase => "no such database",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The failure a FATAL error with this SQLSTATE means for a connecting client; `None`: not
    /// a refused login.
    pub fn from_sqlstate(code: &str) -> Option<Self> {
        Some(match code {
            "28P01" => LoginFailure::WrongPassword,
            "28000" => LoginFailure::NotAuthorized,
            "42501" => LoginFailure::NoConnectPrivilege,
            "53300" => LoginFailure::TooManyConnections,
            "3D000" => LoginFailure::NoSuchDatabase,
            _ => return None,
        })
    }
}
