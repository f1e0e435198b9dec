//! The agent's view of a tenant it must realise, converted from the wire type at the boundary.

use berqenas_proto::node as pb;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub name: String,
    pub revision: u64,
    pub roles: Vec<String>,
    pub lifecycle: String,
    pub index: u32,
    pub vpn_subnet: String,
    pub gateway_address: String,
    pub interface: String,
    pub listen_port: u16,
    pub db_type: String,
    pub isolation: String,
    pub db_quota_bytes: u64,
    pub connection_limit: u32,
    pub events_per_min: u32,
    pub access_mode: String,
    pub vpn_enabled: bool,
    pub public_api: bool,
    #[serde(default)]
    pub ddl_enabled: bool,
    /// SCRAM-SHA-256 verifier of the tenant's database password (db role only).
    #[serde(default)]
    pub db_password_verifier: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant assignment {name:?}: {reason}")]
pub struct InvalidAssignment {
    pub name: String,
    pub reason: String,
}

fn name_ok(n: &str) -> bool {
    let mut chars = n.chars();
    (2..=31).contains(&n.len())
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl TryFrom<pb::TenantAssignment> for Assignment {
    type Error = InvalidAssignment;

    fn try_from(value: pb::TenantAssignment) -> Result<Self, Self::Error> {
        // Destructured exhaustively: a new field is a compile error until handled here.
        let pb::TenantAssignment {
            name,
            revision,
            roles,
            lifecycle,
            index,
            vpn_subnet,
            gateway_address,
            interface,
            listen_port,
            db_type,
            isolation,
            db_quota_bytes,
            connection_limit,
            events_per_min,
            access_mode,
            vpn_enabled,
            public_api,
            db_password_verifier,
            ddl_enabled,
        } = value;
        let bad = |reason: &str| InvalidAssignment { name: name.chars().take(64).collect(), reason: reason.into() };
        if !name_ok(&name) {
            return Err(bad("tenant name"));
        }
        if !matches!(lifecycle.as_str(), "run" | "suspended" | "deleted") {
            return Err(bad("lifecycle"));
        }
        if roles.is_empty() || roles.iter().any(|r| r != "gateway" && r != "db") {
            return Err(bad("roles"));
        }
        let listen_port = u16::try_from(listen_port).map_err(|_| bad("listen port"))?;
        if !interface.starts_with("bqt") || interface.len() > 15 {
            return Err(bad("interface"));
        }
        if !db_password_verifier.is_empty()
            && !is_verifier(&db_password_verifier)
            && !is_mssql_hash(&db_password_verifier)
        {
            return Err(bad("password verifier"));
        }
        Ok(Assignment {
            name,
            revision,
            roles,
            lifecycle,
            index,
            vpn_subnet,
            gateway_address,
            interface,
            listen_port,
            db_type,
            isolation,
            db_quota_bytes,
            connection_limit,
            events_per_min,
            access_mode,
            vpn_enabled,
            public_api,
            db_password_verifier,
            ddl_enabled,
        })
    }
}

/// True when `v` is exactly a SQL Server 2012+ login hash (`0x0200`, 4-byte salt, SHA-512, in
/// hex), so it can be written into `CREATE LOGIN … HASHED` as a binary literal.
pub fn is_mssql_hash(v: &str) -> bool {
    v.len() == 6 + 8 + 128 && v.starts_with("0x0200") && v[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// True when `v` has exactly the SCRAM-SHA-256 verifier shape, so it can be written into DDL as
/// a literal without any escaping question.
pub fn is_verifier(v: &str) -> bool {
    let Some(rest) = v.strip_prefix("SCRAM-SHA-256$4096:") else { return false };
    let b64 = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    match rest.split_once('$').and_then(|(salt, keys)| keys.split_once(':').map(|(a, b)| (salt, a, b))) {
        Some((salt, stored, server)) => b64(salt) && b64(stored) && b64(server),
        None => false,
    }
}

/// A valid db-role PostgreSQL assignment for unit tests; tests override what they exercise.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> Assignment {
    Assignment {
        name: name.into(),
        revision: 1,
        roles: vec!["db".into()],
        lifecycle: "run".into(),
        index: 1,
        vpn_subnet: "198.18.1.0/24".into(),
        gateway_address: "198.18.1.1".into(),
        interface: "bqt1".into(),
        listen_port: 51821,
        db_type: "postgres".into(),
        isolation: "schema".into(),
        db_quota_bytes: 1,
        connection_limit: 5,
        events_per_min: 1,
        access_mode: "vpn-only".into(),
        vpn_enabled: true,
        public_api: false,
        ddl_enabled: false,
        db_password_verifier: String::new(),
    }
}
