//! Identities carried in certificates as URI SANs.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    Coordinator(u64),
    Node(u64),
    Device { tenant: String, id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identity {0:?}")]
pub struct InvalidIdentity(pub String);

const PREFIX: &str = "berqenas://";

fn valid_part(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Identity {
    pub fn uri(&self) -> String {
        match self {
            Identity::Coordinator(id) => format!("{PREFIX}coordinator/{id}"),
            Identity::Node(id) => format!("{PREFIX}node/{id}"),
            Identity::Device { tenant, id } => format!("{PREFIX}device/{tenant}/{id}"),
        }
    }

    pub fn parse(uri: &str) -> Result<Self, InvalidIdentity> {
        let bad = || InvalidIdentity(uri.chars().take(128).collect());
        let rest = uri.strip_prefix(PREFIX).ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let number = |s: &str| -> Result<u64, InvalidIdentity> {
            if s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(bad)
        };
        match parts.as_slice() {
            ["coordinator", id] => Ok(Identity::Coordinator(number(id)?)),
            ["node", id] => Ok(Identity::Node(number(id)?)),
            ["device", tenant, id] if valid_part(tenant) && valid_part(id) => {
                Ok(Identity::Device { tenant: tenant.to_string(), id: id.to_string() })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}
