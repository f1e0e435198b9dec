//! A tenant's firewall: ordered allow/deny rules (by source network or devices selected by
//! label, destination network, device or devices selected by label, port or range, protocol),
//! `vpn-required` rules, and blocked domains. Rules are evaluated by ascending position, the
//! first match decides. Pure, like the rest of `state`.

use super::action::details;
use super::device::{changeable, DeviceName};
use super::gateway::{Ipv4Cidr, PortRange};
use super::names::TenantName;
use super::{At, Cx, DomainError, Handled, Reply, Response, State, Touched};
use berqenas_common::net::DomainName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleProtocol {
    Tcp,
    Udp,
    Any,
}

/// A destination as stored: a network, or a device (sent to the gateway as its /32, so the rule
/// follows the device's address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Destination {
    Cidr(Ipv4Cidr),
    Device { id: String, name: DeviceName },
}

/// A destination as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NewDestination {
    Cidr(Ipv4Cidr),
    Device(DeviceName),
}

/// Devices chosen by their labels: a device is selected when it carries every pair (as a
/// token's labels: at most `MAX_DEVICE_LABELS` pairs, each key and value a label part). Empty:
/// selects no device this way. Resolved to the addresses of the tenant's active devices each
/// time the gateway's desired state is built (`desired::gateway_part`), so a device enrolled
/// later with the labels is covered, and one removed, disabled or revoked is not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>", into = "BTreeMap<String, String>")]
pub struct LabelSelector(BTreeMap<String, String>);

impl LabelSelector {
    pub fn new(pairs: BTreeMap<String, String>) -> Result<Self, String> {
        super::devicetoken::check_labels(&pairs)?;
        Ok(LabelSelector(pairs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Whether a device with `labels` is selected (never, by an empty selector).
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.0.is_empty() && self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl TryFrom<BTreeMap<String, String>> for LabelSelector {
    type Error = String;
    fn try_from(pairs: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        Self::new(pairs)
    }
}

impl From<LabelSelector> for BTreeMap<String, String> {
    fn from(s: LabelSelector) -> Self {
        s.0
    }
}

/// `k=v,k2=v2` (label parts hold no `=` or `,`).
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&pairs.join(","))
    }
}

/// Most sources or destinations per rule, rules per tenant, blocked domains per tenant.
pub const MAX_NETWORKS: usize = 64;
pub const MAX_RULES: usize = 1000;
pub const MAX_DOMAINS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    /// `r{raft index of its creation}` (`At::id`).
    pub id: String,
    pub tenant: TenantName,
    pub position: u32,
    pub verdict: Verdict,
    /// Empty (and no `source_labels`): any source.
    pub sources: Vec<Ipv4Cidr>,
    /// The tenant's devices carrying these labels, as sources beside `sources`.
    #[serde(default, skip_serializing_if = "LabelSelector::is_empty")]
    pub source_labels: LabelSelector,
    /// Empty (and no `destination_labels`): any destination.
    pub destinations: Vec<Destination>,
    /// The tenant's devices carrying these labels, as destinations beside `destinations`.
    #[serde(default, skip_serializing_if = "LabelSelector::is_empty")]
    pub destination_labels: LabelSelector,
    /// `None`: any port.
    pub ports: Option<PortRange>,
    pub protocol: RuleProtocol,
    /// Traffic to the destinations/ports only from inside the tenant subnet (verdict and sources
    /// unused).
    pub vpn_required: bool,
    pub created_at_ms: u64,
}

impl FirewallRule {
    pub fn names_device(&self, id: &str) -> bool {
        self.destinations.iter().any(|d| matches!(d, Destination::Device { id: d, .. } if d == id))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRule {
    pub tenant: TenantName,
    /// `None`: after the tenant's last rule.
    pub position: Option<u32>,
    pub verdict: Verdict,
    pub sources: Vec<Ipv4Cidr>,
    #[serde(default)]
    pub source_labels: LabelSelector,
    pub destinations: Vec<NewDestination>,
    #[serde(default)]
    pub destination_labels: LabelSelector,
    pub ports: Option<PortRange>,
    pub protocol: RuleProtocol,
    pub vpn_required: bool,
}

impl NewRule {
    pub fn check(&self) -> Result<(), String> {
        if self.ports.is_some() && self.protocol == RuleProtocol::Any {
            return Err("a port or port range needs protocol tcp or udp".into());
        }
        if self.sources.len() > MAX_NETWORKS || self.destinations.len() > MAX_NETWORKS {
            return Err(format!("at most {MAX_NETWORKS} sources and {MAX_NETWORKS} destinations"));
        }
        if self.ports.is_some_and(|p| p.first == 0 || p.first > p.last) {
            return Err("ports must be a range first-last within 1-65535".into());
        }
        if self.vpn_required && !(self.sources.is_empty() && self.source_labels.is_empty()) {
            return Err("a vpn-required rule admits only the tenant subnet: it takes no sources".into());
        }
        if self.vpn_required
            && self.destinations.is_empty()
            && self.destination_labels.is_empty()
            && self.ports.is_none()
        {
            return Err("a vpn-required rule names destinations or ports".into());
        }
        Ok(())
    }
}

impl State {
    /// A tenant's rules in evaluation order.
    pub fn rules_of(&self, tenant: &TenantName) -> Vec<&FirewallRule> {
        let mut out: Vec<&FirewallRule> = self.firewall_rules.values().filter(|r| &r.tenant == tenant).collect();
        out.sort_by_key(|r| (r.position, r.id.clone()));
        out
    }

    pub(super) fn add_firewall_rule(&mut self, cx: Cx<'_>, new: &NewRule) -> Handled {
        let mut d = details(&[
            ("verdict", format!("{:?}", new.verdict).to_lowercase()),
            ("protocol", format!("{:?}", new.protocol).to_lowercase()),
            ("vpn_required", new.vpn_required.to_string()),
        ]);
        let join = |v: Vec<String>| if v.is_empty() { "any".to_string() } else { v.join(",") };
        d.insert("sources".into(), join(new.sources.iter().map(ToString::to_string).collect()));
        let dests = new.destinations.iter().map(|d| match d {
            NewDestination::Cidr(c) => c.to_string(),
            NewDestination::Device(n) => format!("device/{n}"),
        });
        d.insert("destinations".into(), join(dests.collect()));
        for (key, selector) in [("source_labels", &new.source_labels), ("destination_labels", &new.destination_labels)]
        {
            if !selector.is_empty() {
                d.insert(key.into(), selector.to_string());
            }
        }
        d.insert("ports".into(), new.ports.map_or("any".into(), |p| p.to_string()));
        let result = self.insert_rule(cx.at, new, cx.touched);
        if let Ok(Reply::FirewallRule(r)) = &result {
            d.insert("id".into(), r.id.clone());
            d.insert("position".into(), r.position.to_string());
        }
        (result, cx.facts.with(d))
    }

    fn insert_rule(&mut self, at: At, new: &NewRule, touched: &mut Vec<Touched>) -> Response {
        new.check().map_err(DomainError::Invalid)?;
        changeable(self, &new.tenant)?;
        let existing = self.rules_of(&new.tenant);
        if existing.len() >= MAX_RULES {
            return Err(DomainError::Exhausted(format!("tenant {} has {MAX_RULES} rules already", new.tenant)));
        }
        let position = match new.position {
            Some(p) if existing.iter().any(|r| r.position == p) => {
                return Err(DomainError::Conflict(format!("tenant {} has a rule at position {p} already", new.tenant)))
            }
            Some(p) => p,
            None => {
                existing.iter().map(|r| r.position).max().map_or(Some(10), |p| p.checked_add(10)).ok_or_else(|| {
                    DomainError::Exhausted("no position left after the last rule; give one with position".into())
                })?
            }
        };
        let mut destinations = Vec::with_capacity(new.destinations.len());
        for d in &new.destinations {
            destinations.push(match d {
                NewDestination::Cidr(c) => Destination::Cidr(*c),
                NewDestination::Device(name) => {
                    // Named in the body, not addressed: a conflict with the tenant's state.
                    let dev = self
                        .device(&new.tenant, name)
                        .ok_or_else(|| DomainError::Conflict(format!("tenant {} has no device {name}", new.tenant)))?;
                    Destination::Device { id: dev.id.clone(), name: name.clone() }
                }
            });
        }
        let rule = FirewallRule {
            id: at.id('r'),
            tenant: new.tenant.clone(),
            position,
            verdict: new.verdict,
            sources: new.sources.clone(),
            source_labels: new.source_labels.clone(),
            destinations,
            destination_labels: new.destination_labels.clone(),
            ports: new.ports,
            protocol: new.protocol,
            vpn_required: new.vpn_required,
            created_at_ms: at.now,
        };
        self.firewall_rules.insert(rule.id.clone(), rule.clone());
        touched.push(Touched::FirewallRule(rule.id.clone()));
        Ok(Reply::FirewallRule(Box::new(rule)))
    }

    pub(super) fn remove_firewall_rule(&mut self, cx: Cx<'_>, tenant: &TenantName, id: &str) -> Handled {
        let result = changeable(self, tenant).map(|_| ()).and_then(|()| match self.firewall_rules.get(id) {
            Some(r) if &r.tenant == tenant => {
                let rule = r.clone();
                self.firewall_rules.remove(id);
                cx.touched.push(Touched::FirewallRule(id.to_string()));
                Ok(Reply::FirewallRule(Box::new(rule)))
            }
            _ => Err(DomainError::NotFound(format!("firewall rule {id} of tenant {tenant} not found"))),
        });
        (result, cx.facts)
    }

    /// Blocks (or unblocks) a domain for the tenant's devices.
    pub(super) fn block_domain(
        &mut self,
        cx: Cx<'_>,
        tenant: &TenantName,
        domain: &DomainName,
        blocked: bool,
    ) -> Handled {
        let facts = cx.facts.with(details(&[("domain", domain.to_string())]));
        let result = changeable(self, tenant).map(|_| ()).and_then(|()| {
            let t = self.tenants.get_mut(tenant).ok_or_else(|| super::tenant::not_found(tenant))?;
            match (blocked, t.blocked_domains.contains(domain)) {
                (true, true) => return Err(DomainError::Conflict(format!("{domain} is already blocked for {tenant}"))),
                (false, false) => return Err(DomainError::NotFound(format!("{domain} is not blocked for {tenant}"))),
                (true, false) if t.blocked_domains.len() >= MAX_DOMAINS => {
                    return Err(DomainError::Exhausted(format!("tenant {tenant} blocks {MAX_DOMAINS} domains already")))
                }
                (true, false) => t.blocked_domains.insert(domain.clone()),
                (false, true) => t.blocked_domains.remove(domain),
            };
            t.updated_at_ms = cx.at.now;
            cx.touched.push(Touched::Tenant(tenant.clone()));
            Ok(Reply::Tenant(Box::new(t.clone())))
        });
        (result, facts)
    }
}
