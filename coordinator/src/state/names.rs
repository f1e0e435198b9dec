//! Validated names: tenants, API key ids and node labels. An invalid name cannot be constructed.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("tenant name must be 2 to 31 characters, got {0}")]
    Length(usize),
    #[error("tenant name must start with a lowercase letter a-z")]
    Start,
    #[error("tenant name may contain only lowercase letters, digits and '_', found {0:?}")]
    Character(char),
    #[error("tenant name {0:?} is reserved")]
    Reserved(String),
}

/// Names no tenant may take: they collide with PostgreSQL's own objects or the platform's.
const RESERVED: &[&str] = &[
    "public",
    "postgres",
    "template0",
    "template1",
    "information_schema",
    "berqenas",
    "admin",
    "root",
    "system",
    "default",
    "all",
    "none",
    "user",
    "current_user",
    "session_user",
];

/// A tenant name: `^[a-z][a-z0-9_]{1,30}$`, not reserved. It becomes part of SQL
/// identifiers (`tenant_{name}`), so this check is the first line of defence.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantName(String);

impl TenantName {
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let len = raw.chars().count();
        if !(2..=31).contains(&len) {
            return Err(InvalidName::Length(len));
        }
        let mut chars = raw.chars();
        match chars.next() {
            Some(c) if c.is_ascii_lowercase() => {}
            _ => return Err(InvalidName::Start),
        }
        if let Some(bad) = chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')) {
            return Err(InvalidName::Character(bad));
        }
        if RESERVED.contains(&raw) || raw.starts_with("pg_") || raw.starts_with("bq_") {
            return Err(InvalidName::Reserved(raw.to_string()));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantName {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TenantName> for String {
    fn from(value: TenantName) -> Self {
        value.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a node label key or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InvalidLabel {
    #[error("label part {0:?} must be 1 to 63 characters")]
    Length(String),
    #[error("label part {0:?} contains {1:?}")]
    Character(String, char),
}

/// A node label key or value: `[A-Za-z0-9._-]{1,63}`.
pub fn validate_label_part(part: &str) -> Result<(), InvalidLabel> {
    if part.is_empty() || part.len() > 63 {
        return Err(InvalidLabel::Length(part.to_string()));
    }
    if let Some(bad) = part.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(InvalidLabel::Character(part.to_string(), bad));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in ["acme", "a1", "acme_corp_2", &"a".repeat(31)] {
            assert!(TenantName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(TenantName::parse("Acme"), Err(InvalidName::Start));
        assert_eq!(TenantName::parse("aCme"), Err(InvalidName::Character('C')));
        assert_eq!(TenantName::parse("a"), Err(InvalidName::Length(1)));
        assert_eq!(TenantName::parse(&"a".repeat(32)), Err(InvalidName::Length(32)));
        assert_eq!(TenantName::parse("1acme"), Err(InvalidName::Start));
        assert_eq!(TenantName::parse("acme;drop"), Err(InvalidName::Character(';')));
        assert_eq!(TenantName::parse("ac'me"), Err(InvalidName::Character('\'')));
        assert_eq!(TenantName::parse("a$(id)"), Err(InvalidName::Character('$')));
        assert_eq!(TenantName::parse("acme-x"), Err(InvalidName::Character('-')));
        assert_eq!(TenantName::parse("açme"), Err(InvalidName::Character('ç')));
        for reserved in ["public", "postgres", "pg_catalog", "pg_x", "template1", "berqenas"] {
            assert_eq!(TenantName::parse(reserved), Err(InvalidName::Reserved(reserved.into())));
        }
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<TenantName>("\"acme\"").is_ok());
        assert!(serde_json::from_str::<TenantName>("\"Acme\"").is_err());
    }
}
