//! Pure: the agent's nftables ruleset for a gateway node as data (`Ruleset`: the base part and
//! one part per tenant), and the `nft -f` script text that creates each part. No IO.
//!
//! tidy: long because the base part and the tenant part are one design (the base maps and sets
//! a tenant's rules use, and the cost notes that decide what is a set, a chain or a rule).

use super::claims::{proto, Outcome};
use super::index::Parts;
use crate::assignment::{ExposureSpec, GatewayTenant, Protocol, RuleSpec, SourceMode, Verdict};
use crate::config::GatewayConfig;
use berqenas_common::net::Ipv4Cidr;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

/// The agent's one table (`inet` family). Everything the agent owns lives in it: the base part's
/// objects have names without `-`; a tenant's objects are named `<tenant>-…`.
pub const TABLE: &str = "berqenas";
/// How long a source stays in the "seen" sets after its last (first) packet.
pub const SEEN_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Sources remembered over all exposures of the node (new ones are not recorded when full; the
/// packet is not affected).
pub const SEEN_SIZE: u32 = 262_144;
/// Every key an exposure counter set can hold (two protocols × every port): those sets never
/// fill, so the `update` that counts a dropped packet never fails and skips the drop.
pub const COUNTED_SIZE: u32 = 131_072;

/// The base part's sets that the exposures' rules fill from the packet path, one for the whole
/// table (a named set per tenant costs every load and every change: nft caches all of them).
/// Keys start with `protocol . public port`, which one exposure owns at a time: an exposure's
/// elements are those of its port, deleted when the port leaves it (see `plan::Step::Forget`).
pub mod seen {
    /// `proto . port . source` → packets and bytes, refreshed at every packet (last seen).
    pub const SEEN: &str = "seen";
    /// `proto . port . source`, added once (first seen).
    pub const FIRST: &str = "first";
    /// `proto . port` → packets accepted by the exposure's filter.
    pub const ACCEPTED: &str = "accepted";
    /// `proto . port` → packets the exposure's filter dropped (allowlist, rate limit).
    pub const DROPPED: &str = "dropped";
    pub const ALL: [&str; 4] = [SEEN, FIRST, ACCEPTED, DROPPED];
}
/// Destinations no tenant device may reach through the gateway, whatever its rules say.
pub const LINK_LOCAL: &str = "169.254.0.0/16";
/// Lifetime of a blocked domain's address in the tenant's set; refreshed at half of it.
pub const BLOCK_TIMEOUT_SECS: u64 = 24 * 3600;

/// An exposure's allowlist of up to this many networks is matched by compares in one rule
/// (`ip saddr != a ip saddr != b … drop`: dropped when none matches); a longer one by an
/// anonymous set (a set is a load's costliest object, a few compares per packet are not).
pub const ALLOW_RULES: usize = 8;

/// Base maps dispatching to tenant chains (key → `jump <tenant>-…`), the DNAT data map, and
/// the base sets of running tenants' interfaces for the input hook.
pub mod maps {
    /// Forwarded packets from a tenant interface (`iifname`).
    pub const FROM_TENANT: &str = "fwd_from";
    /// Forwarded packets to a tenant interface (`oifname`).
    pub const TO_TENANT: &str = "fwd_to";
    /// Interfaces of running tenants: answers to what the gateway opened are accepted from
    /// them (a set: no chain per tenant on the input hook).
    pub const INPUT_OK: &str = "input_ok";
    /// `interface . gateway address` of running tenants: pings of its own gateway address.
    pub const PINGS: &str = "pings";
    /// Source NAT of exposure flows leaving through a tenant interface (`oifname`).
    pub const POST: &str = "post_to";
    /// Filtering of packets to an exposure (`meta l4proto . th dport` on the public address).
    pub const EXPOSE_FILTER: &str = "expose_filter";
    /// DNAT of packets to an exposure: a data map (`proto . port` → device address . port), not
    /// a verdict map, so an exposure's DNAT is an element, no chain.
    pub const EXPOSE_DNAT: &str = "expose_dnat";
    pub const ALL: [&str; 7] = [FROM_TENANT, TO_TENANT, INPUT_OK, PINGS, POST, EXPOSE_FILTER, EXPOSE_DNAT];

    /// The maps whose values are verdicts (`jump <chain>`); the others hold data or are sets.
    pub fn is_verdict(map: &str) -> bool {
        matches!(map, FROM_TENANT | TO_TENANT | POST | EXPOSE_FILTER)
    }

    /// The sets (elements without a value).
    pub fn is_set(map: &str) -> bool {
        matches!(map, INPUT_OK | PINGS)
    }

    /// The interface an element of an interface-keyed map or set is for.
    pub fn interface_of<'a>(map: &str, key: &'a str) -> Option<&'a str> {
        match map {
            FROM_TENANT | TO_TENANT | INPUT_OK | POST => Some(key),
            PINGS => key.split(" . ").next(),
            _ => None,
        }
    }

    /// An element's key as written in a script (interface names quoted).
    pub fn key_text(map: &str, key: &str) -> String {
        match (map, interface_of(map, key)) {
            (PINGS, Some(i)) => format!("\"{i}\"{}", &key[i.len()..]),
            (_, Some(i)) => format!("\"{i}\""),
            (_, None) => key.to_string(),
        }
    }
}

/// The whole ruleset the node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub base: Part,
    /// By tenant name, with the tenants holding each public port.
    pub tenants: Parts,
    /// Parts of a tenant left out, and why (a public port outside the node's range or taken by
    /// another tenant, an interface another tenant has): reported, never served differently.
    pub refused: Vec<(String, String)>,
}

/// One owner's objects: the base part (owner None) or a tenant's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub owner: Option<String>,
    pub chains: Vec<Chain>,
    pub sets: Vec<Set>,
    /// The `proto . public port` keys whose counts and sources seen (in the table's `seen`
    /// sets) are this part's: every exposure's, live or not (a suspension or a disabled
    /// exposure keeps them; an exposure removed, or its port given to another tenant, loses
    /// them, see `plan::Step::Forget`).
    pub ports: Vec<String>,
    /// Elements this part adds to the base maps.
    pub dispatch: Vec<Dispatch>,
    /// Digest of everything above, carried as the comment of the first chain's first rule, so
    /// a part changed by the agent or by hand is recognised on the next observation.
    pub digest: String,
    /// For a tenant: the blocked-domain set's name (its elements are kept apart, see `blocked`).
    pub blocked_set: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// `type … hook … priority …; policy accept;` for a base chain.
    pub hook: Option<&'static str>,
    pub rules: Vec<String>,
}

/// A named set or map. Its elements are never rendered: they are filled by the packet path
/// (sources seen), the blocked-domain refresh or the tenants' dispatch elements, and a
/// replacement never flushes them. What a part knows statically is written in its rules
/// (plain matches, or an anonymous set only for an allowlist of several networks): the kernel
/// finds a named set by walking the table's list of sets, so every named set makes every later
/// set and set reference of a load slower (O(sets²) for a cold load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    /// `set` or `map`.
    pub keyword: &'static str,
    /// The declaration body: `type …; flags …;`.
    pub spec: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dispatch {
    pub map: &'static str,
    /// As `nft` lists it: `bqt1` (interface maps) or `tcp . 15080`.
    pub key: String,
    /// As `nft` lists it: the chain jumped to (verdict maps) or the data (`198.18.1.10 . 80`).
    pub value: String,
}

impl Dispatch {
    /// The key as written in a script.
    pub fn key_text(&self) -> String {
        maps::key_text(self.map, &self.key)
    }

    /// The element as written in a script: the key, and the value for a map.
    pub fn element_text(&self) -> String {
        match (maps::is_set(self.map), maps::is_verdict(self.map)) {
            (true, _) => self.key_text(),
            (false, true) => format!("{} : jump {}", self.key_text(), self.value),
            (false, false) => format!("{} : {}", self.key_text(), self.value),
        }
    }
}

/// Pure: the ruleset for `tenants` on this node. Deleted tenants have no part; suspended ones
/// keep their exposures' counts and sources seen but forward and expose nothing.
pub fn render(node: &GatewayConfig, tenants: &[GatewayTenant]) -> Ruleset {
    let mut ruleset = Ruleset::new(base_part(node));
    update(node, tenants, &mut ruleset, &mut Inputs::default());
    ruleset
}

/// What the parts were rendered from and the conflicts decided (see `claims`).
pub use super::claims::Inputs;

/// What `update` changed: the tenants whose part is new, different or gone, each with its
/// previous part (None for a new tenant).
pub type Replaced = BTreeMap<String, Option<Part>>;

/// Pure: brings `ruleset` (rendered from `inputs`) to what `render` gives for `tenants`,
/// rendering only the parts of tenants whose inputs changed: one tenant's change costs its own
/// part, not a thousand. The conflicts (ports, interfaces) are decided as `render` decides them,
/// again only for the tenants sharing an interface or a port with a changed one (see `claims`),
/// so a freed port goes to the next tenant wanting it.
pub fn update(node: &GatewayConfig, tenants: &[GatewayTenant], ruleset: &mut Ruleset, inputs: &mut Inputs) -> Replaced {
    let mut replaced = Replaced::new();
    for (name, outcome) in inputs.decide(node.public_ports, tenants) {
        match outcome {
            Outcome::Unserved => {
                if let Some(previous) = ruleset.tenants.remove(&name) {
                    replaced.insert(name, Some(previous));
                }
            }
            Outcome::Served { rerender } => {
                if !rerender && ruleset.tenants.contains_key(&name) {
                    continue;
                }
                let Some((t, live)) = inputs.served(&name) else { continue };
                let exposures: Vec<(&ExposureSpec, bool)> =
                    t.gateway.exposures.iter().zip(live.iter().copied()).collect();
                let part = tenant_part(t, &exposures);
                let previous = ruleset.tenants.insert(name.clone(), part);
                replaced.insert(name, previous);
            }
        }
    }
    let base = base_part(node);
    if base != ruleset.base {
        ruleset.base = base;
    }
    ruleset.refused = inputs.refused();
    replaced
}

/// The base part: hooks that dispatch by interface or public port to tenant chains (one map
/// lookup per packet, however many tenants), and drop what reaches or leaves a tenant interface
/// no tenant owns.
pub fn base_part(node: &GatewayConfig) -> Part {
    let public = node.public_address;
    // The operator's protected networks: before any tenant's rules get a say.
    let protected = (!node.protected_networks.is_empty())
        .then(|| format!("iifname \"bqt*\" {}drop", match_networks("daddr", &node.protected_networks)));
    let map =
        |name: &str, key: &str| Set { name: name.to_string(), keyword: "map", spec: format!("type {key} : verdict;") };
    let set = |name: &str, spec: &str| Set { name: name.to_string(), keyword: "set", spec: spec.to_string() };
    let chain =
        |name: &str, hook: &'static str, rules: Vec<String>| Chain { name: name.into(), hook: Some(hook), rules };
    let mut part = Part {
        owner: None,
        chains: vec![
            chain(
                "forward_hook",
                "type filter hook forward priority filter; policy accept;",
                protected
                    .into_iter()
                    .chain([
                        format!("iifname vmap @{}", maps::FROM_TENANT),
                        format!("oifname vmap @{}", maps::TO_TENANT),
                        "iifname \"bqt*\" drop".into(),
                        "oifname \"bqt*\" drop".into(),
                    ])
                    .collect(),
            ),
            chain(
                "input_hook",
                "type filter hook input priority filter; policy accept;",
                vec![
                    "iifname \"bqt*\" meta nfproto ipv6 drop".into(),
                    format!("iifname @{} ct state established,related accept", maps::INPUT_OK),
                    format!("icmp type echo-request iifname . ip daddr @{} accept", maps::PINGS),
                    // No host service is reachable from a tenant (nor from a suspended one).
                    "iifname \"bqt*\" drop".into(),
                ],
            ),
            chain(
                "expose_hook",
                "type filter hook prerouting priority mangle; policy accept;",
                vec![format!("ip daddr {public} meta l4proto . th dport vmap @{}", maps::EXPOSE_FILTER)],
            ),
            chain(
                "dnat_hook",
                "type nat hook prerouting priority dstnat; policy accept;",
                vec![format!("ip daddr {public} dnat ip to meta l4proto . th dport map @{}", maps::EXPOSE_DNAT)],
            ),
            chain(
                "snat_hook",
                "type nat hook postrouting priority srcnat; policy accept;",
                vec![
                    format!("oifname vmap @{}", maps::POST),
                    // Devices reaching out (where their rules allow) leave as the gateway.
                    "iifname \"bqt*\" oifname != \"bqt*\" masquerade".into(),
                ],
            ),
        ],
        sets: vec![
            set(
                seen::SEEN,
                &format!(
                    "{SOURCE_KEY}; size {SEEN_SIZE}; flags dynamic,timeout; timeout {SEEN_TIMEOUT_SECS}s; counter;"
                ),
            ),
            set(
                seen::FIRST,
                &format!("{SOURCE_KEY}; size {SEEN_SIZE}; flags dynamic,timeout; timeout {SEEN_TIMEOUT_SECS}s;"),
            ),
            set(seen::ACCEPTED, &format!("{PORT_KEY}; size {COUNTED_SIZE}; flags dynamic; counter;")),
            set(seen::DROPPED, &format!("{PORT_KEY}; size {COUNTED_SIZE}; flags dynamic; counter;")),
            map(maps::FROM_TENANT, "ifname"),
            map(maps::TO_TENANT, "ifname"),
            set(maps::INPUT_OK, "type ifname;"),
            set(maps::PINGS, "type ifname . ipv4_addr;"),
            map(maps::POST, "ifname"),
            map(maps::EXPOSE_FILTER, "inet_proto . inet_service"),
            Set {
                name: maps::EXPOSE_DNAT.into(),
                keyword: "map",
                spec: "type inet_proto . inet_service : ipv4_addr . inet_service;".into(),
            },
        ],
        ports: Vec::new(),
        dispatch: Vec::new(),
        digest: String::new(),
        blocked_set: None,
    };
    seal(&mut part);
    part
}

/// The networks in canonical nft text, with networks inside another one left out (an interval
/// set refuses overlapping elements); a /32 is written as its address, as nft lists it.
pub fn networks(cidrs: &[Ipv4Cidr]) -> Vec<String> {
    let mut sorted: Vec<Ipv4Cidr> = cidrs.to_vec();
    sorted.sort_by_key(|c| (c.prefix_len(), u32::from(c.addr())));
    let mut kept: Vec<Ipv4Cidr> = Vec::new();
    for c in sorted {
        if !kept.iter().any(|k| k.contains(c.addr())) {
            kept.push(c);
        }
    }
    kept.sort_by_key(|c| (u32::from(c.addr()), c.prefix_len()));
    kept.iter()
        .map(|c| match c.prefix_len() {
            32 => c.addr().to_string(),
            _ => c.to_string(),
        })
        .collect()
}

/// `ip saddr 1.2.3.4 ` or `ip saddr { a, b } ` (empty when `cidrs` is empty: any).
fn match_networks(field: &str, cidrs: &[Ipv4Cidr]) -> String {
    let n = networks(cidrs);
    match n.len() {
        0 => String::new(),
        1 => format!("ip {field} {} ", n[0]),
        _ => format!("ip {field} {{ {} }} ", n.join(", ")),
    }
}

fn match_ports(protocol: Protocol, ports: Option<berqenas_common::net::PortRange>) -> String {
    match (protocol, ports) {
        (Protocol::Any, _) => String::new(),
        (p, None) => format!("meta l4proto {} ", proto(p)),
        (p, Some(r)) => format!("{} dport {r} ", proto(p)),
    }
}

/// A firewall rule as seen from outside the tenant (`inbound`) or from its devices.
fn rule_text(r: &RuleSpec, inbound: bool) -> String {
    let ports = match_ports(r.protocol, r.ports);
    let comment = format!("comment \"rule {}\"", r.id);
    if r.vpn_required {
        // Reachable from inside the subnet only, whatever exposures say.
        let verdict = if inbound { "drop" } else { "accept" };
        return format!("{}{ports}{verdict} {comment}", match_networks("daddr", &r.destinations));
    }
    let verdict = match r.verdict {
        Verdict::Allow => "accept",
        Verdict::Deny => "drop",
    };
    format!(
        "{}{}{ports}{verdict} {comment}",
        match_networks("saddr", &r.sources),
        match_networks("daddr", &r.destinations)
    )
}

/// The key of the source-tracking sets (`seen`, `first`).
const SOURCE_KEY: &str = "type inet_proto . inet_service . ipv4_addr";
/// The key of the exposure counter sets (`accepted`, `dropped`).
const PORT_KEY: &str = "type inet_proto . inet_service";
/// An exposure's packet as `PORT_KEY`.
const PORT: &str = "meta l4proto . th dport";

fn tenant_part(t: &GatewayTenant, exposures: &[(&ExposureSpec, bool)]) -> Part {
    let n = &t.name;
    let g = &t.gateway;
    let iface = &g.interface;
    let runs = t.lifecycle == crate::assignment::Lifecycle::Run;
    let subnet = g.vpn_subnet;
    let mut chains = Vec::new();
    let mut sets = Vec::new();
    let mut dispatch = Vec::new();
    let chain = |name: String, rules: Vec<String>| Chain { name, hook: None, rules };
    let set = |name: String, spec: &str| Set { name, keyword: "set", spec: spec.to_string() };
    // Bytes per second each way; a burst of 1/5 s lets TCP reach the rate, not overshoot it.
    let police = |rules: &mut Vec<String>| {
        if g.bandwidth_bps > 0 && runs {
            let bytes = (g.bandwidth_bps / 8).max(1);
            let burst = (bytes / 5).max(16 * 1024);
            rules.push(format!("limit rate over {bytes} bytes/second burst {burst} bytes drop"));
        }
    };
    // The blocked-domain set exists only for a tenant that lists domains.
    let blocked = (!g.blocked_domains.is_empty()).then(|| format!("{n}-blocked"));
    let live: Vec<&ExposureSpec> = exposures.iter().filter(|(_, on)| *on).map(|(x, _)| *x).collect();

    // From the tenant's devices (forwarded).
    let mut out = vec!["meta nfproto ipv6 drop".to_string()];
    if runs {
        police(&mut out);
        out.push("ct state established,related accept".into());
        out.push("ct state invalid drop".into());
        out.push(format!("ip saddr != {subnet} drop"));
        out.push(format!("oifname \"bqt*\" oifname != \"{iface}\" drop"));
        if let Some(b) = &blocked {
            out.push(format!("ip daddr @{b} drop"));
        }
        // Link-local destinations (cloud metadata services at 169.254.169.254 hand out the
        // host's credentials) stay out of reach whatever the tenant's rules allow.
        out.push(format!("ip daddr {LINK_LOCAL} drop"));
        out.extend(g.rules.iter().map(|r| rule_text(r, false)));
        let d2d = if g.device_to_device { "accept" } else { "drop" };
        out.push(format!("oifname \"{iface}\" {d2d}"));
    }
    out.push("drop".into());
    chains.push(chain(format!("{n}-out"), out));

    // To the tenant's devices from outside the tenant (forwarded).
    let mut inbound = vec!["meta nfproto ipv6 drop".to_string()];
    if runs {
        police(&mut inbound);
        inbound.push("ct state established,related accept".into());
        inbound.push("ct state invalid drop".into());
        inbound.extend(g.rules.iter().map(|r| rule_text(r, true)));
        // DNATed flows of its exposures, one rule per device port (only a flow's first packet
        // gets here: established ones were accepted above).
        inbound.extend(unique(live.iter().map(|x| format!("ct status dnat {} accept", target(x)))));
    }
    inbound.push("drop".into());
    chains.push(chain(format!("{n}-in"), inbound));

    // To the gateway itself: pings of the tenant's own gateway address and answers to what the
    // gateway opened, nothing else — the host's own services (ssh, the agent, a database on the
    // same host) listen on every address, the tenant's `.1` included. Elements of the base
    // sets the input hook looks up (a running tenant's only), no chain of its own.
    if runs {
        dispatch.push(Dispatch { map: maps::INPUT_OK, key: iface.clone(), value: String::new() });
        let pings = format!("{iface} . {}", g.gateway_address);
        dispatch.push(Dispatch { map: maps::PINGS, key: pings, value: String::new() });
    }

    // Exposure flows: DNAT on the way in (an element of the base map `expose_dnat`, no chain),
    // masquerade (source nat) on the way to the device. Nat chains: only a flow's first packet
    // walks them.
    let masq = live.iter().filter(|x| x.source == SourceMode::Nat);
    let masq = masq.map(|x| format!("ct status dnat {} snat ip to {}", target(x), g.gateway_address));
    chains.push(chain(format!("{n}-snat"), unique(masq)));
    if let Some(b) = &blocked {
        sets.push(set(b.clone(), "type ipv4_addr; flags timeout;"));
    }

    // Filtering of the exposures: one chain for all of them (a chain per exposure costs nft's
    // cache and the kernel's validation of every change). Each exposure's checks match its
    // protocol and public port; sources seen and counts go to the table's sets (see `seen`),
    // keyed by protocol and public port, so a tenant has no named set or counter of its own
    // (but a blocked-domain set).
    let source = "meta l4proto . th dport . ip saddr";
    let dropped = format!("update @{} {{ {PORT} counter }} drop", seen::DROPPED);
    let ports = unique(exposures.iter().map(|(x, _)| format!("{} . {}", proto(x.protocol), x.public_port)));
    let filter = format!("{n}-x");
    let mut rules = Vec::new();
    for x in &live {
        let port = format!("meta l4proto {} th dport {}", proto(x.protocol), x.public_port);
        // A few networks are compares in one rule (none matching: dropped); a longer list an
        // anonymous interval set, which costs a load as much as a named one.
        let allow = networks(&x.allow);
        match allow.len() {
            0 => {}
            1..=ALLOW_RULES => {
                let none_of: String = allow.iter().map(|a| format!("ip saddr != {a} ")).collect();
                rules.push(format!("{port} {none_of}{dropped}"));
            }
            _ => rules.push(format!("{port} ip saddr != {{ {} }} {dropped}", allow.join(", "))),
        }
        if x.rate_per_second > 0 {
            let r = x.rate_per_second;
            rules.push(format!("{port} ct state new limit rate over {r}/second burst {r} packets {dropped}"));
        }
        let key = format!("{} . {}", proto(x.protocol), x.public_port);
        dispatch.push(Dispatch { map: maps::EXPOSE_FILTER, key: key.clone(), value: filter.clone() });
        dispatch.push(Dispatch { map: maps::EXPOSE_DNAT, key, value: format!("{} . {}", x.device_address, x.port) });
    }
    if !live.is_empty() {
        // What passed its exposure's checks.
        rules.push(format!("update @{} {{ {source} counter }}", seen::SEEN));
        rules.push(format!("add @{} {{ {source} }}", seen::FIRST));
        rules.push(format!("update @{} {{ {PORT} counter }}", seen::ACCEPTED));
        chains.push(chain(filter, rules));
    }
    dispatch.push(Dispatch { map: maps::FROM_TENANT, key: iface.clone(), value: format!("{n}-out") });
    dispatch.push(Dispatch { map: maps::TO_TENANT, key: iface.clone(), value: format!("{n}-in") });
    dispatch.push(Dispatch { map: maps::POST, key: iface.clone(), value: format!("{n}-snat") });
    let mut part =
        Part { owner: Some(n.clone()), chains, sets, ports, dispatch, digest: String::new(), blocked_set: blocked };
    seal(&mut part);
    part
}

/// `meta l4proto tcp ip daddr 198.18.1.10 th dport 5432`: the device end of an exposure's flow.
fn target(x: &ExposureSpec) -> String {
    format!("meta l4proto {} ip daddr {} th dport {}", proto(x.protocol), x.device_address, x.port)
}

/// The texts in their first order, each once.
fn unique(texts: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in texts {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Computes the part's digest and writes it as the comment of its first chain's first rule.
fn seal(part: &mut Part) {
    part.digest = String::new();
    let digest = format!("{:016x}", fnv1a(part.script().as_bytes()));
    if let Some(first) = part.chains.first_mut().and_then(|c| c.rules.first_mut()) {
        let _ = write!(first, " comment \"berqenas {digest}\"");
    }
    part.digest = digest;
}

/// FNV-1a, 64 bits: change detection, not security (the agent compares its own output).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

impl Part {
    /// The `nft -f` lines that create this part in a table that has none of it (each `add` of a
    /// chain, set or counter that exists is harmless; see `plan` for clearing what is there).
    pub fn script(&self) -> String {
        let mut s = String::new();
        let t = format!("inet {TABLE}");
        for c in &self.chains {
            match c.hook {
                Some(h) => writeln!(s, "add chain {t} {} {{ {h} }}", c.name),
                None => writeln!(s, "add chain {t} {}", c.name),
            }
            .ok();
        }
        for set in &self.sets {
            writeln!(s, "add {} {t} {} {{ {} }}", set.keyword, set.name, set.spec).ok();
        }
        for c in &self.chains {
            for r in &c.rules {
                writeln!(s, "add rule {t} {} {r}", c.name).ok();
            }
        }
        for d in &self.dispatch {
            writeln!(s, "add element {t} {} {{ {} }}", d.map, d.element_text()).ok();
        }
        s
    }
}

impl Ruleset {
    /// The base part and no tenant.
    pub fn new(base: Part) -> Self {
        Ruleset { base, tenants: Parts::default(), refused: Vec::new() }
    }

    /// The whole ruleset as one script for an empty host (what a cold start loads).
    pub fn script(&self) -> String {
        let mut s = format!("add table inet {TABLE}\n");
        s.push_str(&self.base.script());
        for p in self.tenants.values() {
            s.push_str(&p.script());
        }
        s
    }
}

/// The owner of an object of the agent's table: `Some(tenant)` for `<tenant>-…`, None for the
/// base part's (no `-`).
pub fn owner_of(name: &str) -> Option<&str> {
    name.split_once('-').map(|(t, _)| t)
}

/// The blocked addresses of a tenant: the resolved addresses of its listed domains (a
/// suspended tenant forwards nothing anyway).
pub fn blocked(t: &GatewayTenant, resolved: &BTreeMap<String, Vec<Ipv4Addr>>) -> BTreeSet<Ipv4Addr> {
    t.gateway.blocked_domains.iter().filter_map(|d| resolved.get(d.as_str())).flatten().copied().collect()
}
