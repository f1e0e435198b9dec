//! A period of usage and billing: one calendar month in UTC (`2026-11`), half-open `[first day
//! 00:00, next month's first day 00:00)`, hour-aligned as the usage ledger is; and the UTC date
//! of an instant (`2026-11-03`).

use serde::{Deserialize, Serialize};
use std::fmt;

const MS_PER_DAY: u64 = 86_400_000;

/// A calendar month, 2000-01 to 9999-12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Period {
    year: u16,
    month: u8,
}

/// The `^…$` pattern of a period as the API and CLI take it.
pub const PERIOD_PATTERN: &str = "^[2-9][0-9]{3}-(0[1-9]|1[0-2])$";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("period {0:?} must be a month as YYYY-MM, from 2000-01 to 9999-12")]
pub struct InvalidPeriod(pub String);

impl Period {
    pub fn new(year: u16, month: u8) -> Result<Self, InvalidPeriod> {
        if (2000..=9999).contains(&year) && (1..=12).contains(&month) {
            Ok(Period { year, month })
        } else {
            Err(InvalidPeriod(format!("{year:04}-{month:02}")))
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidPeriod> {
        let refused = || InvalidPeriod(raw.chars().take(16).collect());
        let (y, m) = raw.split_once('-').ok_or_else(refused)?;
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(y, 4) || !digits(m, 2) {
            return Err(refused());
        }
        let year: u16 = y.parse().map_err(|_| refused())?;
        let month: u8 = m.parse().map_err(|_| refused())?;
        Period::new(year, month).map_err(|_| refused())
    }

    pub fn year(self) -> u16 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }

    /// The month after this one (9999-12 has none).
    pub fn next(self) -> Option<Period> {
        match self.month {
            12 => Period::new(self.year.checked_add(1)?, 1).ok(),
            m => Some(Period { year: self.year, month: m + 1 }),
        }
    }

    /// Unix milliseconds of the first instant of the month.
    pub fn from_ms(self) -> u64 {
        days_from_civil(u64::from(self.year), u64::from(self.month)) * MS_PER_DAY
    }

    /// Unix milliseconds of the first instant after the month.
    pub fn to_ms(self) -> u64 {
        let (y, m) = if self.month == 12 {
            (u64::from(self.year) + 1, 1)
        } else {
            (u64::from(self.year), u64::from(self.month) + 1)
        };
        days_from_civil(y, m) * MS_PER_DAY
    }

    /// The month holding `ms` (instants before 2000 give 2000-01, after 9999 give 9999-12).
    pub fn of(ms: u64) -> Self {
        match civil_from_days(ms / MS_PER_DAY) {
            (year, ..) if year < 2000 => Period { year: 2000, month: 1 },
            (year, month, _) => match u16::try_from(year) {
                Ok(year) if year <= 9999 => Period { year, month: month as u8 },
                _ => Period { year: 9999, month: 12 },
            },
        }
    }

    /// Hours in the month (672, 696, 720 or 744).
    pub fn hours(self) -> u64 {
        (self.to_ms() - self.from_ms()) / 3_600_000
    }
}

/// Days from 1970-01-01 to the first of month `m` of year `y` (proleptic Gregorian, y ≥ 1970;
/// H. Hinnant's `days_from_civil`).
fn days_from_civil(y: u64, m: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01 as (year, month, day) (`civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(month <= 2), month, day)
}

/// `2026-11-03` for the UTC day holding `ms`.
pub fn date(ms: u64) -> String {
    let (y, m, d) = civil_from_days(ms / MS_PER_DAY);
    format!("{y:04}-{m:02}-{d:02}")
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl TryFrom<String> for Period {
    type Error = InvalidPeriod;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Period::parse(&value)
    }
}

impl From<Period> for String {
    fn from(value: Period) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        let nov = Period::parse("2026-11").expect("valid");
        assert_eq!(nov.from_ms(), 1_793_491_200_000, "2026-11-01T00:00:00Z");
        assert_eq!(nov.to_ms(), 1_796_083_200_000, "2026-12-01T00:00:00Z");
        assert_eq!(nov.hours(), 720);
        assert_eq!(Period::parse("2026-12").map(|p| p.to_ms()), Ok(1_798_761_600_000), "2027-01-01");
        assert_eq!(Period::parse("2028-02").map(Period::hours), Ok(696), "leap February");
        assert_eq!(Period::parse("2026-02").map(Period::hours), Ok(672));
        assert_eq!(Period::parse("2000-03").map(Period::hours), Ok(744));
        assert_eq!(nov.next().map(|p| p.to_string()), Some("2026-12".into()));
        assert_eq!(Period::parse("2026-12").ok().and_then(Period::next).map(|p| p.to_string()), Some("2027-01".into()));
        assert_eq!(Period::of(nov.from_ms() + 29 * MS_PER_DAY), nov);
        assert_eq!(Period::of(nov.to_ms()).to_string(), "2026-12");
        assert_eq!(Period::of(0).to_string(), "2000-01");
        assert_eq!(date(nov.from_ms() + 2 * MS_PER_DAY + 5), "2026-11-03");
        assert_eq!(date(nov.to_ms() + MS_PER_DAY - 1), "2026-12-01");
        assert_eq!(date(Period::parse("2028-03").expect("valid").from_ms() - 1), "2028-02-29");
    }

    #[test]
    fn malformed_periods_are_refused() {
        for bad in ["2026-13", "2026-00", "1999-12", "2026-1", "26-11", "2026/11", "2026-11-01", "", "२०२६-११"]
        {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }
}
