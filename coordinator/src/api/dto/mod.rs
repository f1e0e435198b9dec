//! The REST API's wire types, one file per resource: request bodies and queries with the
//! constraints the OpenAPI document states, and the views answers are made of. Shared by the
//! handlers (`api/`) and the CLI client (`cli/`), so both speak exactly one contract. Views convert
//! from the stored types (`From<&Tenant> for TenantView`); the stored types know nothing of HTTP.

pub mod apikey;
pub mod audit;
pub mod backup;
pub mod billing;
pub mod branding;
pub mod cluster;
pub mod device;
pub mod devicetoken;
pub mod gateway;
pub mod node;
pub mod tenant;
pub mod usage;
pub mod user;

pub use apikey::*;
pub use audit::*;
pub use backup::*;
pub use billing::*;
pub use branding::*;
pub use cluster::*;
pub use device::*;
pub use devicetoken::*;
pub use gateway::*;
pub use node::*;
pub use tenant::*;
pub use usage::*;
pub use user::*;

use crate::server::Consistency;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::ToSchema;

/// Every refusal: `{"error": code, "message": text}`; `leader` names the leader's API address
/// when the request must be sent there (421).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `invalid_input`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `rate_limited`, `quota_exhausted`, `body_too_large`, `not_leader`, `no_leader`, …
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// `?consistency=`: how fresh a read must be.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// `stale` answers from this coordinator's own state without asking the leader.
    #[serde(default)]
    pub consistency: Option<Consistency>,
}

/// The schema of an enum stored in the domain: its serde names, listed once here. The match makes
/// a new variant a compile error until it is listed.
macro_rules! wire_enum {
    ($ty:ty, $doc:literal, [$($variant:path),+ $(,)?]) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, Type};
                let _listed_exhaustively = |v: $ty| match v {
                    $($variant)|+ => (),
                };
                let names: Vec<serde_json::Value> =
                    [$($variant),+].into_iter().filter_map(|v| serde_json::to_value(v).ok()).collect();
                ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names)).description(Some($doc)).into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}
pub(crate) use wire_enum;

/// Builds `$Dst` from `$src` naming each field once: `shown` fields move over through `Into`,
/// `with` fields are computed from the source field of the same name, `hidden` fields are dropped.
/// The destructuring is exhaustive, so a new source field is a compile error here until it is
/// shown or hidden (a view never shows a new stored field, a secret say, by accident).
macro_rules! project {
    ($src:expr => $Src:ident => $Dst:ident { $($shown:ident),* $(,)? }
        $(with { $($with:ident: $val:expr),* $(,)? })? $(hidden { $($hidden:ident),* $(,)? })?) => {{
        let $Src { $($shown,)* $($($with,)*)? $($($hidden: _,)*)? } = $src;
        #[allow(clippy::useless_conversion)]
        let projected = $Dst { $($shown: $shown.into(),)* $($($with: $val,)*)? };
        projected
    }};
}
pub(crate) use project;

wire_enum!(Consistency, "How fresh a read must be.", [Consistency::Linearizable, Consistency::Stale]);

/// `^…$` of a name part of a node label or selector (`validate_label_part`).
pub const LABEL_PART_PATTERN: &str = "^[A-Za-z0-9._-]{1,63}$";

/// A map of labels: at most 16, each key and value a label part.
fn labels_schema() -> ObjectBuilder {
    let part = || ObjectBuilder::new().schema_type(Type::String).pattern(Some(LABEL_PART_PATTERN));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(part()))
        .additional_properties(Some(part()))
        .max_properties(Some(crate::state::tenant::MAX_SELECTOR_LABELS))
}

/// `labels_schema`, for a field that may be absent or null.
pub fn optional_labels() -> Schema {
    labels_schema().schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::Object, Type::Null])).into()
}

/// `^…$` of a disk quota as the API takes it: a positive whole number without leading zeros and a
/// unit, at most 1 PB (fewer digits for the larger units).
pub const QUOTA_PATTERN: &str =
    "^([1-9][0-9]{0,5}(B|kB|KB|KiB|MB|MiB)|[1-9][0-9]{0,4}(GB|GiB)|[1-9][0-9]{0,2}TB|[1-9][0-9]?TiB)$";
/// `^…$` of a token lifetime: a whole number and a unit, from 1s to 7d.
pub const TTL_PATTERN: &str = "^(([1-9][0-9]{0,4}|[1-5][0-9]{5}|60[0-3][0-9]{3}|604[0-7][0-9]{2}|604800)s|([1-9][0-9]{0,3}|100[0-7][0-9]|10080)m|([1-9][0-9]?|1[0-5][0-9]|16[0-8])h|[1-7]d)$";
/// `^…$` of an API key lifetime: a whole number and a unit.
pub const LIFETIME_PATTERN: &str = "^[1-9][0-9]{0,5}(s|m|h|d)$";

/// `digits unit` with no leading zero and at most `max_digits` digits, as the patterns say.
fn number_and_unit(raw: &str, max_digits: usize) -> Option<(u64, &str)> {
    let split = raw.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = raw.split_at(split);
    if digits.is_empty() || digits.len() > max_digits || digits.starts_with('0') {
        return None;
    }
    Some((digits.parse().ok()?, unit))
}

/// A disk quota exactly as `QUOTA_PATTERN` admits it (the domain's own reason first, when it
/// refuses the size itself).
pub fn parse_quota(field: &str, raw: &str) -> Result<crate::state::quota::ByteSize, String> {
    let size = crate::state::quota::ByteSize::parse(raw).map_err(|e| format!("{field}: {e}"))?;
    let refused = || format!("{field} {raw:?} must be a whole number and a unit such as 500MB, 5GB or 1TiB");
    let (_, unit) = number_and_unit(raw, 6).ok_or_else(refused)?;
    let max_digits = match unit {
        "B" | "kB" | "KB" | "KiB" | "MB" | "MiB" => 6,
        "GB" | "GiB" => 5,
        "TB" => 3,
        "TiB" => 2,
        _ => return Err(refused()),
    };
    number_and_unit(raw, max_digits).ok_or_else(refused)?;
    Ok(size)
}

/// Seconds of `n` of `unit` (s, m, h or d).
fn seconds(n: u64, unit: &str) -> Option<u64> {
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(per)
}

/// Most a join token may live.
pub const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// A token lifetime exactly as `TTL_PATTERN` admits it; one hour when absent.
pub fn parse_ttl(raw: Option<&str>) -> Result<std::time::Duration, String> {
    let Some(raw) = raw else { return Ok(std::time::Duration::from_secs(3600)) };
    let secs = number_and_unit(raw, 6).and_then(|(n, unit)| seconds(n, unit));
    match secs.map(std::time::Duration::from_secs) {
        Some(ttl) if ttl <= MAX_TOKEN_TTL => Ok(ttl),
        _ => Err(format!("ttl {raw:?} must be a whole number of s, m, h or d between 1s and 7d")),
    }
}

/// An API key lifetime exactly as `LIFETIME_PATTERN` admits it.
pub fn parse_lifetime(raw: &str) -> Result<std::time::Duration, String> {
    number_and_unit(raw, 6)
        .and_then(|(n, unit)| seconds(n, unit))
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("expires_in {raw:?} must be a whole number of s, m, h or d, such as 30d"))
}

/// `^…$` of `since`: an age, or a UTC time to the second. (Any valid calendar day is taken; the
/// pattern names days up to the 28th so that every string it admits is a real date.)
pub const SINCE_PATTERN: &str = "^([1-9][0-9]{0,5}(s|m|h|d)|(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z)$";

/// `since` as the API takes it: an age (`parse_lifetime`) back from `now_ms`, or a time
/// `YYYY-MM-DDTHH:MM:SSZ` from 1970 on.
pub fn parse_since(raw: &str, now_ms: u64) -> Result<u64, String> {
    if let Ok(age) = parse_lifetime(raw) {
        return Ok(now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
    }
    let shape = raw.len() == 20
        && raw.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !shape {
        return Err(format!(
            "since {raw:?} must be an RFC 3339 time such as 2024-05-01T00:00:00Z or an age such as 1h"
        ));
    }
    crate::time::parse_since(raw, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_whole_numbers_and_units_up_to_a_petabyte() {
        for ok in ["1B", "500MB", "5GB", "99999GiB", "999TB", "99TiB", "1TB"] {
            assert!(parse_quota("db_quota", ok).is_ok(), "{ok}");
        }
        for bad in ["0GB", "05GB", "5 GB", "5G", "5XB", "lots", "1000TB", "100TiB", "", "GB", "1234567MB"] {
            assert!(parse_quota("db_quota", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ttls_run_from_a_second_to_a_week() {
        assert_eq!(parse_ttl(None), Ok(std::time::Duration::from_secs(3600)));
        for (raw, secs) in [("1s", 1), ("604800s", 604_800), ("10080m", 604_800), ("168h", 604_800), ("7d", 604_800)] {
            assert_eq!(parse_ttl(Some(raw)), Ok(std::time::Duration::from_secs(secs)), "{raw}");
        }
        for bad in ["0s", "604801s", "10081m", "169h", "8d", "1h30m", "1 h", "01h", "1w", ""] {
            assert!(parse_ttl(Some(bad)).is_err(), "{bad}");
        }
        assert!(parse_lifetime("30d").is_ok() && parse_lifetime("0d").is_err() && parse_lifetime("1y").is_err());
    }

    #[test]
    fn since_is_an_age_or_a_utc_time() {
        assert_eq!(parse_since("1h", 7_200_000), Ok(3_600_000));
        assert_eq!(parse_since("1970-01-01T00:00:10Z", 0), Ok(10_000));
        assert!(parse_since("2024-01-31T23:59:59Z", 0).is_ok());
        for bad in ["yesterday-ish", "2024-02-30T00:00:00Z", "1969-12-31T00:00:00Z", "2024-01-01 00:00:00", "1h30m"] {
            assert!(parse_since(bad, 0).is_err(), "{bad}");
        }
    }
}
