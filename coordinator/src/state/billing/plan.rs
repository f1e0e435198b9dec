//! Price plans, one per tier, as the coordinator's `--billing-plans` TOML file states them:
//! currency (ISO 4217 with its minor unit), base fee, prices per unit and included amounts. Money
//! is exact (`rust_decimal`, written as strings in the file, never floats); a plan cannot be
//! constructed invalid (negative price, unknown currency, a tier without a plan).

use super::super::tenant::Tier;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Currencies a plan may use and their minor units (ISO 4217 exponent).
const CURRENCIES: &[(&str, u32)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("CAD", 2),
    ("CHF", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("NOK", 2),
    ("PLN", 2),
    ("SEK", 2),
    ("TRY", 2),
    ("USD", 2),
];

/// Prices have at most this many decimal places (a fraction of a cent per unit is allowed).
pub const PRICE_DECIMALS: u32 = 6;
/// No price, fee or included amount is above this (keeps every product far from overflow).
const MAX_AMOUNT: i64 = 1_000_000_000;
/// Longest payment terms, in days.
const MAX_TERMS_DAYS: u32 = 365;

/// An ISO 4217 currency this coordinator knows the minor unit of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, InvalidPlan> {
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == raw)
            .map(|&(code, minor_units)| Currency { code, minor_units })
            .ok_or_else(|| InvalidPlan::Currency(raw.chars().take(16).collect()))
    }

    pub fn code(self) -> &'static str {
        self.code
    }

    /// Decimal places of the currency's minor unit (2 for USD, 0 for JPY, 3 for KWD).
    pub fn minor_units(self) -> u32 {
        self.minor_units
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidPlan;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Currency::parse(&value)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Currency::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.code.to_string()
    }
}

/// A plan or plan file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPlan {
    #[error("unknown currency {0:?}: use an ISO 4217 code this coordinator knows (USD, EUR, GBP, TRY, CHF, JPY, …)")]
    Currency(String),
    #[error("plan {tier}: {field} is negative ({value})")]
    Negative { tier: String, field: &'static str, value: Decimal },
    #[error("plan {tier}: {field} {value} has more than {max} decimal places")]
    Precision { tier: String, field: &'static str, value: Decimal, max: u32 },
    #[error("plan {tier}: {field} {value} is above 1000000000")]
    TooLarge { tier: String, field: &'static str, value: Decimal },
    #[error("plan {tier}: {field} {value:?} is not a decimal number (write it as a string, e.g. \"0.10\")")]
    NotDecimal { tier: String, field: &'static str, value: String },
    #[error("plan {tier}: payment_terms_days {days} is above 365")]
    Terms { tier: String, days: u32 },
    #[error("no plan for tier {0}: every tier (free, premium, enterprise) needs one")]
    MissingTier(&'static str),
    #[error("unknown tier {0:?}: the tiers are free, premium and enterprise")]
    UnknownTier(String),
    #[error("plan file: {0}")]
    Syntax(String),
}

/// One tier's prices. Units: disk in GB-months (10^9 bytes for a whole period), events per
/// million, VPN traffic per GB (10^9 bytes, received and sent added together), connections
/// above the included peak per connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricePlan {
    pub tier: Tier,
    pub currency: Currency,
    /// The seller as printed on invoices (free text, escaped wherever it is rendered).
    #[serde(default)]
    pub issuer: String,
    pub base_fee: Decimal,
    pub disk_gb_month: Decimal,
    pub events_million: Decimal,
    pub vpn_gb: Decimal,
    pub extra_connection: Decimal,
    pub included_disk_gb_months: Decimal,
    pub included_events_millions: Decimal,
    pub included_vpn_gb: Decimal,
    pub included_connections: u32,
    /// An issued invoice is due this many days after it was issued.
    pub payment_terms_days: u32,
}

impl PricePlan {
    /// The plan's invariants (also re-checked at apply: a plan reaches the state only in a command).
    pub fn check(&self) -> Result<(), InvalidPlan> {
        let tier = tier_name(self.tier).to_string();
        let money = [("base_fee", self.base_fee, self.currency.minor_units)];
        let prices = [
            ("disk_gb_month", self.disk_gb_month),
            ("events_million", self.events_million),
            ("vpn_gb", self.vpn_gb),
            ("extra_connection", self.extra_connection),
            ("included_disk_gb_months", self.included_disk_gb_months),
            ("included_events_millions", self.included_events_millions),
            ("included_vpn_gb", self.included_vpn_gb),
        ];
        let all = money.into_iter().chain(prices.into_iter().map(|(f, v)| (f, v, PRICE_DECIMALS)));
        for (field, value, max) in all {
            if value.is_sign_negative() && !value.is_zero() {
                return Err(InvalidPlan::Negative { tier, field, value });
            }
            if value.normalize().scale() > max {
                return Err(InvalidPlan::Precision { tier, field, value, max });
            }
            if value > Decimal::from(MAX_AMOUNT) {
                return Err(InvalidPlan::TooLarge { tier, field, value });
            }
        }
        if self.payment_terms_days > MAX_TERMS_DAYS {
            return Err(InvalidPlan::Terms { tier, days: self.payment_terms_days });
        }
        Ok(())
    }
}

pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Free => "free",
        Tier::Premium => "premium",
        Tier::Enterprise => "enterprise",
    }
}

/// Every tier's plan, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricePlans {
    plans: BTreeMap<&'static str, PricePlan>,
}

/// One plan as the file writes it: money as decimal strings (a TOML float is refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    currency: String,
    base_fee: String,
    disk_gb_month: String,
    events_million: String,
    vpn_gb: String,
    extra_connection: String,
    #[serde(default)]
    included_disk_gb_months: Option<String>,
    #[serde(default)]
    included_events_millions: Option<String>,
    #[serde(default)]
    included_vpn_gb: Option<String>,
    #[serde(default)]
    included_connections: u32,
    #[serde(default = "default_terms")]
    payment_terms_days: u32,
}

fn default_terms() -> u32 {
    14
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    issuer: String,
    plans: BTreeMap<String, RawPlan>,
}

const TIERS: [Tier; 3] = [Tier::Free, Tier::Premium, Tier::Enterprise];

impl PricePlans {
    /// Parses and checks a plan file (see README "Billing" for its shape).
    pub fn from_toml(text: &str) -> Result<Self, InvalidPlan> {
        let raw: RawFile = toml::from_str(text).map_err(|e| InvalidPlan::Syntax(e.message().to_string()))?;
        let mut plans = BTreeMap::new();
        for (name, raw_plan) in raw.plans {
            let tier = TIERS
                .into_iter()
                .find(|t| tier_name(*t) == name)
                .ok_or_else(|| InvalidPlan::UnknownTier(name.chars().take(32).collect()))?;
            let plan = raw_plan.into_plan(tier, &raw.issuer)?;
            plans.insert(tier_name(tier), plan);
        }
        for tier in TIERS {
            if !plans.contains_key(tier_name(tier)) {
                return Err(InvalidPlan::MissingTier(tier_name(tier)));
            }
        }
        Ok(PricePlans { plans })
    }

    pub fn for_tier(&self, tier: Tier) -> Option<&PricePlan> {
        self.plans.get(tier_name(tier))
    }
}

impl RawPlan {
    fn into_plan(self, tier: Tier, issuer: &str) -> Result<PricePlan, InvalidPlan> {
        let name = tier_name(tier);
        let dec = |field: &'static str, raw: &str| {
            Decimal::from_str_exact(raw.trim()).map_err(|_| InvalidPlan::NotDecimal {
                tier: name.to_string(),
                field,
                value: raw.chars().take(32).collect(),
            })
        };
        let opt =
            |field: &'static str, raw: &Option<String>| raw.as_deref().map_or(Ok(Decimal::ZERO), |r| dec(field, r));
        let plan = PricePlan {
            tier,
            currency: Currency::parse(self.currency.trim())?,
            issuer: issuer.to_string(),
            base_fee: dec("base_fee", &self.base_fee)?,
            disk_gb_month: dec("disk_gb_month", &self.disk_gb_month)?,
            events_million: dec("events_million", &self.events_million)?,
            vpn_gb: dec("vpn_gb", &self.vpn_gb)?,
            extra_connection: dec("extra_connection", &self.extra_connection)?,
            included_disk_gb_months: opt("included_disk_gb_months", &self.included_disk_gb_months)?,
            included_events_millions: opt("included_events_millions", &self.included_events_millions)?,
            included_vpn_gb: opt("included_vpn_gb", &self.included_vpn_gb)?,
            included_connections: self.included_connections,
            payment_terms_days: self.payment_terms_days,
        };
        plan.check()?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
issuer = "Berqenas Cloud & Co <billing>"
[plans.free]
currency = "USD"
base_fee = "0"
disk_gb_month = "0.25"
events_million = "2"
vpn_gb = "0.05"
extra_connection = "1"
included_disk_gb_months = "0.1"
included_connections = 5
[plans.premium]
currency = "USD"
base_fee = "49.00"
disk_gb_month = "0.125"
events_million = "1.50"
vpn_gb = "0.02"
extra_connection = "0.75"
included_disk_gb_months = "10"
included_events_millions = "1"
included_vpn_gb = "50"
included_connections = 20
payment_terms_days = 30
[plans.enterprise]
currency = "EUR"
base_fee = "499"
disk_gb_month = "0.1"
events_million = "1"
vpn_gb = "0.01"
extra_connection = "0.5"
"#;

    #[test]
    fn a_plan_file_reads_into_exact_plans() {
        let plans = PricePlans::from_toml(FILE).expect("valid file");
        let premium = plans.for_tier(Tier::Premium).expect("premium");
        assert_eq!(premium.base_fee, Decimal::new(4900, 2));
        assert_eq!(premium.disk_gb_month.to_string(), "0.125");
        assert_eq!(premium.included_connections, 20);
        assert_eq!(premium.payment_terms_days, 30);
        assert_eq!(premium.issuer, "Berqenas Cloud & Co <billing>");
        let free = plans.for_tier(Tier::Free).expect("free");
        assert_eq!((free.included_vpn_gb, free.payment_terms_days), (Decimal::ZERO, 14));
        assert_eq!(plans.for_tier(Tier::Enterprise).expect("enterprise").currency.code(), "EUR");
    }

    fn refused(edit: (&str, &str)) -> String {
        let text = FILE.replacen(edit.0, edit.1, 1);
        assert_ne!(text, FILE, "the edit {edit:?} applies");
        PricePlans::from_toml(&text).expect_err("refused").to_string()
    }

    #[test]
    fn bad_plans_are_refused_with_a_clear_error() {
        assert!(refused(("vpn_gb = \"0.05\"", "vpn_gb = \"-0.05\"")).contains("plan free: vpn_gb is negative"));
        assert!(refused(("currency = \"EUR\"", "currency = \"XYZ\"")).contains("unknown currency \"XYZ\""));
        assert!(refused(("[plans.enterprise]", "[plans.platinum]")).contains("unknown tier \"platinum\""));
        let without_enterprise = FILE.split("[plans.enterprise]").next().expect("head");
        let missing = PricePlans::from_toml(without_enterprise).expect_err("refused").to_string();
        assert!(missing.contains("no plan for tier enterprise"), "{missing}");
        assert!(refused(("base_fee = \"49.00\"", "base_fee = \"49.005\"")).contains("more than 2 decimal places"));
        assert!(refused(("vpn_gb = \"0.02\"", "vpn_gb = \"0.0000001\"")).contains("more than 6 decimal places"));
        assert!(refused(("vpn_gb = \"0.02\"", "vpn_gb = 0.02")).contains("plan file"), "floats are refused");
        assert!(refused(("vpn_gb = \"0.02\"", "vpn_gb = \"two\"")).contains("not a decimal number"));
        assert!(refused(("payment_terms_days = 30", "payment_terms_days = 999")).contains("payment_terms_days 999"));
        assert!(refused(("included_connections = 20", "included_conections = 20")).contains("plan file"));
    }

    #[test]
    fn currencies_know_their_minor_unit() {
        assert_eq!(Currency::parse("JPY").map(Currency::minor_units), Ok(0));
        assert_eq!(Currency::parse("KWD").map(Currency::minor_units), Ok(3));
        assert_eq!(Currency::parse("TRY").map(Currency::minor_units), Ok(2));
        assert!(Currency::parse("usd").is_err(), "codes are upper case");
        let json = serde_json::to_string(&Currency::parse("EUR").expect("known")).expect("serializes");
        assert_eq!(json, "\"EUR\"");
        assert!(serde_json::from_str::<Currency>("\"ZZZ\"").is_err());
    }
}
