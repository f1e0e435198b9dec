//! Byte sizes for quotas: `5GB`, `500MB`, `1TiB`. Decimal units (kB/KB, MB, GB, TB) are powers of
//! 1000, binary units (KiB, MiB, GiB, TiB) powers of 1024, as on disks and invoices.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest quota accepted: 1 PB. Anything above is a typo, not a plan.
pub const MAX_BYTES: u64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidByteSize {
    #[error("size {0:?} is empty")]
    Empty(String),
    #[error("size {0:?} must be a whole number followed by a unit such as MB, GB, GiB or TiB")]
    Format(String),
    #[error("size {0:?} has unknown unit {1:?}; use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB")]
    Unit(String, String),
    #[error("size {0:?} must be greater than zero")]
    Zero(String),
    #[error("size {0:?} is larger than the 1 PB limit")]
    TooLarge(String),
}

/// A number of bytes, parsed from a human size. Serialized as the byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    pub const fn bytes(self) -> u64 {
        self.0
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidByteSize> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(InvalidByteSize::Empty(raw.to_string()));
        }
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() || digits.len() > 19 {
            return Err(InvalidByteSize::Format(raw.to_string()));
        }
        let number: u64 = digits.parse().map_err(|_| InvalidByteSize::Format(raw.to_string()))?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" | "KB" | "k" | "K" => 1_000,
            "MB" | "M" => 1_000_000,
            "GB" | "G" => 1_000_000_000,
            "TB" | "T" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => return Err(InvalidByteSize::Unit(raw.to_string(), other.to_string())),
        };
        let bytes = number.checked_mul(multiplier).ok_or_else(|| InvalidByteSize::TooLarge(raw.to_string()))?;
        if bytes == 0 {
            return Err(InvalidByteSize::Zero(raw.to_string()));
        }
        if bytes > MAX_BYTES {
            return Err(InvalidByteSize::TooLarge(raw.to_string()));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for ByteSize {
    /// Shows the largest unit that divides the size exactly, so `5GB` prints as `5GB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: &[(u64, &str)] = &[
            (1 << 40, "TiB"),
            (1_000_000_000_000, "TB"),
            (1 << 30, "GiB"),
            (1_000_000_000, "GB"),
            (1 << 20, "MiB"),
            (1_000_000, "MB"),
            (1 << 10, "KiB"),
            (1_000, "kB"),
        ];
        for (size, unit) in UNITS {
            if self.0 >= *size && self.0.is_multiple_of(*size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_binary_units() {
        assert_eq!(ByteSize::parse("5GB").map(ByteSize::bytes), Ok(5_000_000_000));
        assert_eq!(ByteSize::parse("500MB").map(ByteSize::bytes), Ok(500_000_000));
        assert_eq!(ByteSize::parse("1TiB").map(ByteSize::bytes), Ok(1 << 40));
        assert_eq!(ByteSize::parse("64KiB").map(ByteSize::bytes), Ok(65_536));
        assert_eq!(ByteSize::parse(" 10 GiB ").map(ByteSize::bytes), Ok(10 << 30));
        assert_eq!(ByteSize::parse("1024").map(ByteSize::bytes), Ok(1024));
    }

    #[test]
    fn refuses_malformed_sizes() {
        assert!(matches!(ByteSize::parse(""), Err(InvalidByteSize::Empty(_))));
        assert!(matches!(ByteSize::parse("GB"), Err(InvalidByteSize::Format(_))));
        assert!(matches!(ByteSize::parse("-5GB"), Err(InvalidByteSize::Format(_))));
        assert!(matches!(ByteSize::parse("1.5GB"), Err(InvalidByteSize::Unit(_, _))));
        assert!(matches!(ByteSize::parse("5XB"), Err(InvalidByteSize::Unit(_, _))));
        assert!(matches!(ByteSize::parse("0GB"), Err(InvalidByteSize::Zero(_))));
        assert!(matches!(ByteSize::parse("2000TB"), Err(InvalidByteSize::TooLarge(_))));
        assert!(matches!(ByteSize::parse("99999999999999999TiB"), Err(InvalidByteSize::TooLarge(_))));
        assert!(matches!(ByteSize::parse("5GB; DROP"), Err(InvalidByteSize::Unit(_, _))));
    }

    #[test]
    fn displays_canonical_unit() {
        assert_eq!(ByteSize::parse("5GB").map(|s| s.to_string()), Ok("5GB".to_string()));
        assert_eq!(ByteSize::parse("1TiB").map(|s| s.to_string()), Ok("1TiB".to_string()));
        assert_eq!(ByteSize::from_bytes(1500).to_string(), "1500B");
    }
}
