//! What the packet path recorded and what stands in its way: per exposure the accepted and
//! dropped packets and the sources seen (read back from the table's dynamic sets, keyed by the
//! exposure's protocol and public port), and base chains of other tables that would drop the
//! flows our table accepts.

use super::observe::{self, Observed};
use super::plan::port_of;
use super::render::{seen, SEEN_TIMEOUT_SECS, TABLE};
use super::NftError;
use crate::assignment::GatewayTenant;
use crate::host::exec;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExposureStatus {
    pub id: String,
    pub accepted_packets: u64,
    pub dropped_packets: u64,
    pub sources: Vec<SourceSeen>,
}

/// A source address seen connecting to an exposure (unix seconds; packets and bytes from it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSeen {
    pub address: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub packets: u64,
    pub bytes: u64,
}

/// Something on the node that keeps the gateway from doing its job, with the remedy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: String,
    pub message: String,
}

/// Pure: the exposures' status from an observation at `now` (unix seconds). An element's
/// `expires` counts down from the set's timeout: `update` (the seen set) restarts it at every
/// packet, `add` (the first set) never does, so both times are `now - (timeout - expires)`.
pub fn exposures_from(
    observed: &Observed,
    desired: &[GatewayTenant],
    now: i64,
) -> BTreeMap<String, Vec<ExposureStatus>> {
    let at = |e: &observe::Element| {
        let elapsed = e.timeout.unwrap_or(SEEN_TIMEOUT_SECS).saturating_sub(e.expires.unwrap_or(0));
        now - i64::try_from(elapsed).unwrap_or(0)
    };
    // Each set's elements by public port (`proto . port`), once: the sets hold every exposure's.
    let by_port = |set: &str| {
        let mut m: ByPort<'_> = BTreeMap::new();
        for e in observed.sets.get(set).into_iter().flatten() {
            m.entry(port_of(&e.key)).or_default().push(e);
        }
        m
    };
    let (seen_by, first_by) = (by_port(seen::SEEN), by_port(seen::FIRST));
    let (accepted, dropped) = (by_port(seen::ACCEPTED), by_port(seen::DROPPED));
    desired
        .iter()
        .map(|t| {
            let list = t
                .gateway
                .exposures
                .iter()
                .map(|x| {
                    let port = format!("{} . {}", protocol(x.protocol), x.public_port);
                    let count =
                        |m: &ByPort<'_>| m.get(port.as_str()).into_iter().flatten().map(|e| e.packets).sum::<u64>();
                    let of = |m| sources_of(m, &port);
                    let first: BTreeMap<String, i64> = of(&first_by).into_iter().map(|(a, e)| (a, at(e))).collect();
                    let mut sources: Vec<SourceSeen> = of(&seen_by)
                        .into_iter()
                        .map(|(address, e)| {
                            let last_seen = at(e);
                            SourceSeen {
                                first_seen: first.get(&address).copied().unwrap_or(last_seen).min(last_seen),
                                address,
                                last_seen,
                                packets: e.packets,
                                bytes: e.bytes,
                            }
                        })
                        .collect();
                    sources.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.address.cmp(&b.address)));
                    ExposureStatus {
                        id: x.id.clone(),
                        accepted_packets: count(&accepted),
                        dropped_packets: count(&dropped),
                        sources,
                    }
                })
                .collect();
            (t.name.clone(), list)
        })
        .collect()
}

/// A set's elements by public port (`proto . port`).
type ByPort<'a> = BTreeMap<&'a str, Vec<&'a observe::Element>>;

/// The elements of `port` (keys `proto . public port . address`) by their address.
fn sources_of<'a>(m: &ByPort<'a>, port: &str) -> Vec<(String, &'a observe::Element)> {
    let prefix = format!("{port} . ");
    m.get(port)
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e.key.strip_prefix(prefix.as_str())?.to_string(), *e)))
        .collect()
}

/// Per tenant, each exposure's counters and the sources seen, read from the table.
pub async fn exposure_status(desired: &[GatewayTenant]) -> Result<BTreeMap<String, Vec<ExposureStatus>>, NftError> {
    Ok(listing().await?.exposures(desired))
}

/// A listing of the table and when it was taken: the exposures' status at that time, which a
/// caller may keep and read again (listing a thousand tenants' table takes seconds).
pub struct Listing {
    pub observed: Observed,
    /// Unix seconds.
    pub at: i64,
}

impl Listing {
    /// Pure: the exposures of `desired` as this listing saw them (one it did not see yet has
    /// zero counts and no sources).
    pub fn exposures(&self, desired: &[GatewayTenant]) -> BTreeMap<String, Vec<ExposureStatus>> {
        exposures_from(&self.observed, desired, self.at)
    }
}

/// Lists the table now.
pub async fn listing() -> Result<Listing, NftError> {
    let observed = super::observe().await?;
    let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    Ok(Listing { observed, at })
}

fn protocol(p: crate::assignment::Protocol) -> &'static str {
    match p {
        crate::assignment::Protocol::Tcp => "tcp",
        crate::assignment::Protocol::Udp => "udp",
        crate::assignment::Protocol::Any => "any",
    }
}

/// A base chain of another table on a hook our flows pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignChain {
    pub family: String,
    pub table: String,
    pub name: String,
    pub hook: String,
    pub policy: String,
}

/// The hooks exposure and tenant flows pass (prerouting and postrouting hold NAT).
const HOOKS: [&str; 3] = ["forward", "prerouting", "postrouting"];

/// Pure: base chains of other tables on our hooks, from `nft -j list chains`. Only families that
/// see IPv4 (`ip`, `inet`).
pub fn foreign_chains(json: &str) -> Result<Vec<ForeignChain>, observe::ParseError> {
    let doc: Value = serde_json::from_str(json).map_err(|e| observe::ParseError(e.to_string()))?;
    let items = doc.get("nftables").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(items
        .iter()
        .filter_map(|i| i.get("chain"))
        .filter(|c| matches!(c["family"].as_str(), Some("ip" | "inet")))
        .filter(|c| !(c["family"] == "inet" && c["table"] == TABLE))
        .filter_map(|c| {
            let hook = c.get("hook")?.as_str()?;
            HOOKS.contains(&hook).then(|| ForeignChain {
                family: c["family"].as_str().unwrap_or_default().to_string(),
                table: c["table"].as_str().unwrap_or_default().to_string(),
                name: c["name"].as_str().unwrap_or_default().to_string(),
                hook: hook.to_string(),
                policy: c["policy"].as_str().unwrap_or("accept").to_string(),
            })
        })
        .collect())
}

/// Pure: how many rules of a chain listing (`nft -j list chain …`) end in drop or reject.
pub fn dropping_rules(json: &str) -> Result<usize, observe::ParseError> {
    let doc: Value = serde_json::from_str(json).map_err(|e| observe::ParseError(e.to_string()))?;
    let items = doc.get("nftables").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(items
        .iter()
        .filter_map(|i| i.get("rule"))
        .filter(|r| {
            r["expr"].as_array().is_some_and(|e| e.iter().any(|x| x.get("drop").is_some() || x.get("reject").is_some()))
        })
        .count())
}

/// Pure: the condition for a foreign chain with `drops` dropping rules (None: it cannot drop).
pub fn condition(c: &ForeignChain, drops: usize) -> Option<Condition> {
    let what = match (c.policy.as_str(), drops) {
        ("drop", _) => "policy drop".to_string(),
        (_, 0) => return None,
        (_, n) => format!("{n} drop/reject rule(s)"),
    };
    let kind = if c.hook == "forward" { "foreign-forward-drop" } else { "foreign-nat-drop" };
    Some(Condition {
        kind: kind.to_string(),
        message: format!(
            "table {} {} chain {} on the {} hook has {what}: packets our table accepts for tenants and exposures \
             can still be dropped there (an accept in one table does not override a drop in another). Remedy: add \
             `iifname \"bqt*\" accept` and `oifname \"bqt*\" accept` at the top of that chain (for Docker, in \
             DOCKER-USER; for firewalld, put bqt* interfaces in a trusted zone), or change its policy",
            c.family, c.table, c.name, c.hook
        ),
    })
}

/// Base chains of other tables on the forward, prerouting or postrouting hook that would drop
/// our flows (policy drop, or rules that drop or reject).
pub async fn foreign_conditions() -> Result<Vec<Condition>, NftError> {
    let timeout = Duration::from_secs(30);
    let chains = foreign_chains(&exec::run("nft", &["-j", "list", "chains"], None, timeout).await?)?;
    let mut out = Vec::new();
    for c in chains {
        let listing = exec::run("nft", &["-j", "list", "chain", &c.family, &c.table, &c.name], None, timeout).await?;
        if let Some(cond) = condition(&c, dropping_rules(&listing)?) {
            out.push(cond);
        }
    }
    Ok(out)
}
