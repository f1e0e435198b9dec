//! Pure: which tenant gets a tenant interface or a public port that several want — the first by
//! name, and of a tenant's exposures the first in its list — and so which exposures are live and
//! which parts are refused. `decide` keeps what it decided and the claims, indexed by interface
//! and port, so a change decides again only for the tenants sharing an interface or a port with a
//! changed one: one tenant's change costs a comparison per tenant, not a decision over all.

use crate::assignment::{GatewayTenant, Lifecycle, Protocol};
use berqenas_common::net::PortRange;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A public port as claimed: (protocol as nft names it, port).
type PortKey = (&'static str, u16);

/// What a tenant was given and decided.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Given {
    tenant: GatewayTenant,
    /// Per exposure: live (rendered) or not; None when the tenant is not served at all (its
    /// interface is another tenant's).
    live: Option<Vec<bool>>,
    /// Why parts of it are left out, in its exposures' order.
    refused: Vec<String>,
}

/// One tenant's decision while deciding for all.
struct Decided<'a> {
    tenant: &'a GatewayTenant,
    live: Option<Vec<bool>>,
    refused: Vec<String>,
}

/// What `decide` decided before, and the claims it decided from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// The node's public port range the claims were decided for; None when the next `decide`
    /// decides for all (nothing decided yet, or a name given twice).
    range: Option<PortRange>,
    /// Every tenant given (deleted ones aside) by name.
    given: BTreeMap<String, Given>,
    /// Interface → the tenants wanting it.
    interfaces: BTreeMap<String, BTreeSet<String>>,
    /// Public port → the (tenant, exposure index) wanting it: enabled exposures of running
    /// tenants inside the node's range.
    ports: BTreeMap<PortKey, BTreeSet<(String, usize)>>,
    /// The tenants with refused parts, and why.
    refusals: BTreeMap<String, Vec<String>>,
}

/// What became of a tenant whose decision or inputs may have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not given any more (or deleted), or not served: its part, if any, goes.
    Unserved,
    /// Served; `rerender` when the tenant or its live exposures changed.
    Served { rerender: bool },
}

pub fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Any => "any",
    }
}

impl Inputs {
    pub fn new() -> Self {
        Inputs::default()
    }

    /// The tenant as given and its live exposures, when it is served.
    pub fn served(&self, name: &str) -> Option<(&GatewayTenant, &[bool])> {
        let g = self.given.get(name)?;
        Some((&g.tenant, g.live.as_deref()?))
    }

    /// The refused parts, by tenant name then in each tenant's order.
    pub fn refused(&self) -> Vec<(String, String)> {
        self.refusals.iter().flat_map(|(t, why)| why.iter().map(move |w| (t.clone(), w.clone()))).collect()
    }

    /// Decides for `tenants` (deleted ones are as absent), returning the tenants whose outcome
    /// may differ from the last call's, by name.
    pub fn decide(&mut self, range: PortRange, tenants: &[GatewayTenant]) -> BTreeMap<String, Outcome> {
        let mut now: HashMap<&str, &GatewayTenant> = HashMap::with_capacity(tenants.len());
        let mut twice = false;
        for t in tenants.iter().filter(|t| t.lifecycle != Lifecycle::Deleted) {
            twice |= now.insert(t.name.as_str(), t).is_some();
        }
        if twice || self.range != Some(range) {
            return self.decide_all(range, tenants, twice);
        }
        // The tenants changed, new or gone: one comparison per tenant.
        let mut changed: BTreeSet<String> = BTreeSet::new();
        let mut matched = 0;
        for (name, t) in &now {
            match self.given.get(*name) {
                Some(g) if g.tenant == **t => matched += 1,
                Some(_) => {
                    matched += 1;
                    changed.insert(name.to_string());
                }
                None => {
                    changed.insert(name.to_string());
                }
            }
        }
        if matched < self.given.len() {
            changed.extend(self.given.keys().filter(|n| !now.contains_key(n.as_str())).cloned());
        }
        if changed.is_empty() {
            return BTreeMap::new();
        }
        // Their claims out of the index, their new ones in; the interfaces and ports involved.
        let mut interfaces: BTreeSet<String> = BTreeSet::new();
        let mut ports: BTreeSet<PortKey> = BTreeSet::new();
        let mut before: BTreeMap<String, Given> = BTreeMap::new();
        for name in &changed {
            if let Some(old) = self.given.remove(name) {
                interfaces.insert(old.tenant.gateway.interface.clone());
                ports.extend(claims(&old.tenant, range).map(|(k, _)| k));
                self.unclaim(&old.tenant, range);
                before.insert(name.clone(), old);
            }
            if let Some(t) = now.get(name.as_str()) {
                interfaces.insert(t.gateway.interface.clone());
                ports.extend(claims(t, range).map(|(k, _)| k));
                self.claim(t, range);
                let g = Given { tenant: (*t).clone(), live: None, refused: Vec::new() };
                self.given.insert(name.clone(), g);
            }
        }
        // Who may decide differently: the changed tenants, those wanting one of their
        // interfaces (whose ports may be claimed or released by that), and those wanting one of
        // the ports of either.
        let mut affected: BTreeSet<String> = changed.clone();
        for i in &interfaces {
            for name in self.interfaces.get(i).into_iter().flatten() {
                if affected.insert(name.clone()) {
                    if let Some(g) = self.given.get(name) {
                        ports.extend(claims(&g.tenant, range).map(|(k, _)| k));
                    }
                }
            }
        }
        for p in &ports {
            affected.extend(self.ports.get(p).into_iter().flatten().map(|(n, _)| n.clone()));
        }
        let mut out = BTreeMap::new();
        for name in affected {
            // Changed ones were compared above; the others are as given before.
            let was = match before.remove(&name) {
                Some(old) => Some((false, old.live)),
                None if changed.contains(&name) => None,
                None => self.given.get(&name).map(|g| (true, g.live.clone())),
            };
            let outcome = match self.given.contains_key(&name) {
                false => {
                    self.refusals.remove(&name);
                    Outcome::Unserved
                }
                true => {
                    let (live, refused) = self.decide_one(&name, range);
                    self.record(&name, live, refused, was)
                }
            };
            out.insert(name, outcome);
        }
        out
    }

    /// Decides for every tenant in name order (as render always did), and indexes the claims
    /// again unless a name is given twice.
    fn decide_all(&mut self, range: PortRange, tenants: &[GatewayTenant], twice: bool) -> BTreeMap<String, Outcome> {
        let mut before = std::mem::take(&mut self.given);
        *self = Inputs::default();
        let mut sorted: Vec<&GatewayTenant> = tenants.iter().filter(|t| t.lifecycle != Lifecycle::Deleted).collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut decided: BTreeMap<&str, Decided<'_>> = BTreeMap::new();
        let mut ports: BTreeMap<PortKey, &str> = BTreeMap::new();
        let mut interfaces: BTreeMap<&str, &str> = BTreeMap::new();
        for t in sorted {
            // A name given twice: its refusals add up, the last one served is served.
            let entry =
                decided.entry(t.name.as_str()).or_insert(Decided { tenant: t, live: None, refused: Vec::new() });
            if let Some(other) = interfaces.get(t.gateway.interface.as_str()) {
                entry.refused.push(format!("interface {} belongs to tenant {other}", t.gateway.interface));
                continue;
            }
            interfaces.insert(&t.gateway.interface, &t.name);
            entry.tenant = t;
            let mut live = Vec::with_capacity(t.gateway.exposures.len());
            for x in &t.gateway.exposures {
                if !x.enabled || t.lifecycle != Lifecycle::Run {
                    live.push(false);
                    continue;
                }
                if !range.contains(x.public_port) {
                    entry.refused.push(format!("exposure {}: public port {} outside {range}", x.id, x.public_port));
                    live.push(false);
                    continue;
                }
                match ports.get(&(proto(x.protocol), x.public_port)) {
                    Some(owner) => {
                        let why = format!("exposure {}: public port {} taken by tenant {owner}", x.id, x.public_port);
                        entry.refused.push(why);
                        live.push(false);
                    }
                    None => {
                        ports.insert((proto(x.protocol), x.public_port), &t.name);
                        live.push(true);
                    }
                }
            }
            entry.live = Some(live);
        }
        let mut out = BTreeMap::new();
        for (name, Decided { tenant: t, live, refused }) in decided {
            if !twice {
                self.claim(t, range);
            }
            self.given.insert(name.to_string(), Given { tenant: t.clone(), live: None, refused: Vec::new() });
            let was = before.remove(name).map(|w| (w.tenant == *t, w.live));
            out.insert(name.to_string(), self.record(name, live, refused, was));
        }
        for gone in before.into_keys() {
            out.insert(gone, Outcome::Unserved);
        }
        self.range = (!twice).then_some(range);
        out
    }

    /// Stores a tenant's decision (its `given` entry holds the tenant already) and tells what
    /// became of it against `was`: whether it was given the same, and its live exposures then
    /// (None when it was not given).
    fn record(
        &mut self,
        name: &str,
        live: Option<Vec<bool>>,
        refused: Vec<String>,
        was: Option<(bool, Option<Vec<bool>>)>,
    ) -> Outcome {
        match refused.is_empty() {
            true => self.refusals.remove(name),
            false => self.refusals.insert(name.to_string(), refused.clone()),
        };
        let Some(g) = self.given.get_mut(name) else { return Outcome::Unserved };
        g.live = live;
        g.refused = refused;
        match &g.live {
            None => Outcome::Unserved,
            Some(live) => {
                let same = was.is_some_and(|(same, was)| same && was.as_ref() == Some(live));
                Outcome::Served { rerender: !same }
            }
        }
    }

    /// One tenant's decision from the indexed claims (all of them current).
    fn decide_one(&self, name: &str, range: PortRange) -> (Option<Vec<bool>>, Vec<String>) {
        let Some(t) = self.given.get(name).map(|g| &g.tenant) else { return (None, Vec::new()) };
        let iface = &t.gateway.interface;
        if let Some(other) = self.interface_holder(iface).filter(|o| *o != name) {
            return (None, vec![format!("interface {iface} belongs to tenant {other}")]);
        }
        let mut refused = Vec::new();
        let mut live = Vec::with_capacity(t.gateway.exposures.len());
        for (i, x) in t.gateway.exposures.iter().enumerate() {
            if !x.enabled || t.lifecycle != Lifecycle::Run {
                live.push(false);
            } else if !range.contains(x.public_port) {
                refused.push(format!("exposure {}: public port {} outside {range}", x.id, x.public_port));
                live.push(false);
            } else {
                match self.port_holder(&(proto(x.protocol), x.public_port)) {
                    Some((owner, at)) if owner == name && at == i => live.push(true),
                    holder => {
                        let owner = holder.map_or(name, |(o, _)| o);
                        refused
                            .push(format!("exposure {}: public port {} taken by tenant {owner}", x.id, x.public_port));
                        live.push(false);
                    }
                }
            }
        }
        (Some(live), refused)
    }

    /// The first tenant by name wanting `iface`.
    fn interface_holder(&self, iface: &str) -> Option<&str> {
        self.interfaces.get(iface).and_then(|s| s.first()).map(String::as_str)
    }

    /// The first claim on `port` by a tenant that has its own interface.
    fn port_holder(&self, port: &PortKey) -> Option<(&str, usize)> {
        let holds = |name: &str| {
            let iface = self.given.get(name).map(|g| g.tenant.gateway.interface.as_str());
            iface.and_then(|i| self.interface_holder(i)) == Some(name)
        };
        self.ports.get(port)?.iter().find(|(n, _)| holds(n)).map(|(n, i)| (n.as_str(), *i))
    }

    fn claim(&mut self, t: &GatewayTenant, range: PortRange) {
        self.interfaces.entry(t.gateway.interface.clone()).or_default().insert(t.name.clone());
        for (key, i) in claims(t, range) {
            self.ports.entry(key).or_default().insert((t.name.clone(), i));
        }
    }

    fn unclaim(&mut self, t: &GatewayTenant, range: PortRange) {
        if let Some(set) = self.interfaces.get_mut(&t.gateway.interface) {
            set.remove(&t.name);
            if set.is_empty() {
                self.interfaces.remove(&t.gateway.interface);
            }
        }
        for (key, i) in claims(t, range) {
            if let Some(set) = self.ports.get_mut(&key) {
                set.remove(&(t.name.clone(), i));
                if set.is_empty() {
                    self.ports.remove(&key);
                }
            }
        }
    }
}

/// The public ports a tenant wants, with the index of the exposure wanting each: its enabled
/// exposures inside `range` while it runs.
fn claims(t: &GatewayTenant, range: PortRange) -> impl Iterator<Item = (PortKey, usize)> + '_ {
    let runs = t.lifecycle == Lifecycle::Run;
    t.gateway
        .exposures
        .iter()
        .enumerate()
        .filter(move |(_, x)| runs && x.enabled && range.contains(x.public_port))
        .map(|(i, x)| ((proto(x.protocol), x.public_port), i))
}
