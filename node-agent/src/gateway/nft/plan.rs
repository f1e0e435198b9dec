//! Pure: what to change so that the observed table becomes the rendered ruleset — the base part
//! created or repaired, each tenant whose part differs replaced whole (or only its chains
//! refilled when nothing but their rules differ), parts of gone tenants removed, blocked-domain sets refreshed — and the `nft -f` script of each step. A converged
//! host yields an empty plan.

use super::observe::{Element, Observed, ObservedChain};
use super::render::{maps, owner_of, seen, Part, Ruleset, BLOCK_TIMEOUT_SECS, TABLE};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The agent's table is missing: create it with the base part.
    CreateTable,
    /// The base part differs (a base chain or map missing or changed).
    RepairBase { why: String },
    /// The tenant's part differs: replace it whole, in one transaction.
    Replace { tenant: String, why: String },
    /// Only the rules of the tenant's chains differ (its chains, sets and dispatch elements are
    /// as wanted): each chain flushed and its rules added, in one transaction. No element of a
    /// verdict map changes, so the kernel does not validate the whole table again.
    Refill { tenant: String, why: String },
    /// Objects of a tenant this node no longer serves.
    Remove { tenant: String },
    /// The tenant's blocked-domain addresses changed or are near their timeout.
    RefreshBlocked { tenant: String, addresses: Vec<Ipv4Addr> },
    /// Public ports (`proto . port`) whose counts and sources seen belong to no one now, or to
    /// another tenant than the one that recorded them: their elements of the table's `seen`,
    /// `first`, `accepted` and `dropped` sets are deleted (a tenant never sees another's sources).
    Forget { ports: Vec<String> },
}

impl Step {
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Step::CreateTable | Step::RepairBase { .. } | Step::Forget { .. } => None,
            Step::Replace { tenant, .. }
            | Step::Refill { tenant, .. }
            | Step::Remove { tenant }
            | Step::RefreshBlocked { tenant, .. } => Some(tenant),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Step::CreateTable => format!("create table inet {TABLE} with its base chains and maps"),
            Step::RepairBase { why } => format!("repair the base chains ({why})"),
            Step::Replace { why, .. } => format!("replace the tenant's chains, sets and dispatch ({why})"),
            Step::Refill { why, .. } => format!("refill the tenant's chains with its rules ({why})"),
            Step::Remove { .. } => "remove the chains, sets and counters of a tenant no longer served".into(),
            Step::RefreshBlocked { addresses, .. } => {
                format!("refresh blocked-domain addresses ({} addresses)", addresses.len())
            }
            Step::Forget { ports } => {
                format!("forget the counts and sources seen of public ports {}", ports.join(", "))
            }
        }
    }
}

/// Pure: the steps from `observed` to `desired`. `blocked` holds each tenant's wanted blocked
/// addresses; `now_ok` elements expiring later than half the timeout are left alone.
pub fn plan(desired: &Ruleset, observed: &Observed, blocked: &BTreeMap<String, BTreeSet<Ipv4Addr>>) -> Vec<Step> {
    plan_scoped(desired, observed, blocked, None)
}

/// Like `plan`, looking only at the tenants in `scope` (and the base part): the others are
/// known to be as the table holds them (see `sync_changes`), so they need no comparison.
pub fn plan_only(
    desired: &Ruleset,
    observed: &Observed,
    blocked: &BTreeMap<String, BTreeSet<Ipv4Addr>>,
    scope: &BTreeSet<&str>,
) -> Vec<Step> {
    plan_scoped(desired, observed, blocked, Some(scope))
}

fn plan_scoped(
    desired: &Ruleset,
    observed: &Observed,
    blocked: &BTreeMap<String, BTreeSet<Ipv4Addr>>,
    scope: Option<&BTreeSet<&str>>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if !observed.table {
        steps.push(Step::CreateTable);
    } else if let Some(why) = differs(&desired.base, observed, None, Compare::All) {
        steps.push(Step::RepairBase { why });
    }
    let by_owner = dispatch_by_owner(observed, scope);
    let owners: BTreeSet<&str> = match scope {
        None => observed
            .chains
            .keys()
            .chain(observed.sets.keys())
            .chain(observed.counters.keys())
            .filter_map(|n| owner_of(n))
            .chain(by_owner.keys().map(String::as_str))
            .collect(),
        Some(scope) => scope
            .iter()
            .copied()
            .filter(|t| {
                owned(&observed.chains, t).next().is_some()
                    || owned(&observed.sets, t).next().is_some()
                    || owned(&observed.counters, t).next().is_some()
                    || by_owner.contains_key(*t)
            })
            .collect(),
    };
    for gone in owners.iter().filter(|o| !desired.tenants.contains_key(**o)) {
        steps.push(Step::Remove { tenant: gone.to_string() });
    }
    let tenants: Box<dyn Iterator<Item = (&String, &Part)>> = match scope {
        None => Box::new(desired.tenants.iter()),
        Some(scope) => Box::new(scope.iter().filter_map(|t| desired.tenants.get_key_value(*t))),
    };
    for (name, part) in tenants {
        if let Some(why) = differs(part, observed, Some((name, &by_owner)), Compare::All) {
            let tenant = name.clone();
            match differs(part, observed, Some((name, &by_owner)), Compare::AllButRules) {
                None => steps.push(Step::Refill { tenant, why }),
                Some(_) => steps.push(Step::Replace { tenant, why }),
            }
        }
        let want: Vec<Ipv4Addr> = blocked.get(name).map(|b| b.iter().copied().collect()).unwrap_or_default();
        let set = part.blocked_set.as_deref().and_then(|s| observed.sets.get(s));
        let have: Vec<Ipv4Addr> = {
            let mut v: Vec<Ipv4Addr> = set.into_iter().flatten().filter_map(|e| e.key.parse().ok()).collect();
            v.sort();
            v
        };
        let stale = set.into_iter().flatten().any(|e| e.expires.is_some_and(|x| x < BLOCK_TIMEOUT_SECS / 2));
        if want != have || (stale && !want.is_empty()) {
            steps.push(Step::RefreshBlocked { tenant: name.clone(), addresses: want });
        }
    }
    let ports = forgotten(desired, observed, scope);
    if !ports.is_empty() {
        steps.push(Step::Forget { ports });
    }
    steps
}

/// The public ports whose recorded counts and sources no longer belong to who recorded them:
/// a port the table knows as one tenant's (`observed.ports`) that no tenant (or another one)
/// holds now; on a full plan also a port whose elements are in the sets but that no tenant
/// holds. A scoped plan looks at the ports of the tenants in `scope` only (found by index).
fn forgotten(desired: &Ruleset, observed: &Observed, scope: Option<&BTreeSet<&str>>) -> Vec<String> {
    let in_scope = |t: &str| scope.is_none_or(|s| s.contains(t));
    // The first tenant by name holding a port has it (as `render` gives it out).
    let mut out: BTreeSet<String> = BTreeSet::new();
    let mut check = |key: &str, had: &str| {
        let now = desired.tenants.holder(key);
        if (in_scope(had) || now.is_some_and(in_scope)) && now != Some(had) {
            out.insert(key.to_string());
        }
    };
    match scope {
        None => observed.ports.iter().for_each(|(key, had)| check(key, had)),
        Some(scope) => {
            // A port recorded as a tenant in scope, or held by one: the only ones that can
            // qualify (a port whose recorder and holder are both out of scope does not).
            let recorded = scope.iter().flat_map(|t| observed.ports.of(t));
            let held = scope.iter().filter_map(|t| desired.tenants.get(*t)).flat_map(|p| p.ports.iter());
            let keys: BTreeSet<&String> = recorded.chain(held).collect();
            for key in keys {
                if let Some(had) = observed.ports.get(key) {
                    check(key, had);
                }
            }
        }
    }
    if scope.is_none() {
        for set in seen::ALL {
            for e in observed.sets.get(set).into_iter().flatten() {
                let port = port_of(&e.key);
                if desired.tenants.holder(port).is_none() && !observed.ports.contains_key(port) {
                    out.insert(port.to_string());
                }
            }
        }
    }
    out.into_iter().collect()
}

/// `tcp . 15080` of a `seen`-set key (`tcp . 15080 . 203.0.113.7`, or itself).
pub fn port_of(key: &str) -> &str {
    match key.match_indices(" . ").nth(1) {
        Some((at, _)) => &key[..at],
        None => key,
    }
}

/// The names in `m` owned by `tenant` (`<tenant>-…`): a range of the sorted keys, so finding one
/// tenant's objects costs the same however many other tenants there are.
fn owned<'a, V>(m: &'a BTreeMap<String, V>, tenant: &'a str) -> impl Iterator<Item = &'a String> + 'a {
    let prefix = format!("{tenant}-");
    m.range(prefix.clone()..)
        .map(|(k, _)| k)
        .take_while(move |k| k.starts_with(&prefix))
        .filter(move |k| owner_of(k) == Some(tenant))
}

/// Dispatch elements by their owner (see `owned_elements`), in key order: each tenant's check
/// looks at its own elements only. For a scope, found by index (the cost of a one-tenant plan
/// does not grow with the tenants in the table).
type ByOwner<'a> = BTreeMap<String, Vec<(&'a (String, String), &'a String)>>;

fn dispatch_by_owner<'a>(o: &'a Observed, scope: Option<&BTreeSet<&str>>) -> ByOwner<'a> {
    let owners: BTreeSet<&str> = match scope {
        Some(scope) => scope.clone(),
        None => o.dispatch.owners().chain(o.ports.owners()).collect(),
    };
    let mut by: ByOwner<'_> = BTreeMap::new();
    for owner in owners {
        let elements = owned_elements(o, owner);
        if !elements.is_empty() {
            by.insert(owner.to_string(), elements);
        }
    }
    by
}

/// The listed dispatch elements `tenant` owns, in key order: those of the verdict maps jumping
/// to its chains; the input sets' elements of the interfaces whose `fwd_from` element jumps to
/// its chain; the DNAT map's elements of the public ports known to be its (`Observed::ports`).
fn owned_elements<'a>(o: &'a Observed, tenant: &str) -> Vec<(&'a (String, String), &'a String)> {
    let mut out = Vec::new();
    for key in o.dispatch.jumping_to(tenant) {
        out.extend(o.dispatch.get_key_value(key));
        if key.0 == maps::FROM_TENANT {
            out.extend(input_entries(o, &key.1));
        }
    }
    for port in o.ports.of(tenant) {
        out.extend(o.dispatch.get_key_value(&(maps::EXPOSE_DNAT.to_string(), port.clone())));
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// The input sets' elements (`input_ok`, `pings`) whose interface (`maps::interface_of`) is
/// `iface`.
fn input_entries<'a>(o: &'a Observed, iface: &str) -> Vec<(&'a (String, String), &'a String)> {
    let ok = o.dispatch.get_key_value(&(maps::INPUT_OK.to_string(), iface.to_string()));
    let mut out: Vec<_> = ok.into_iter().collect();
    let pings = o
        .dispatch
        .range((maps::PINGS.to_string(), iface.to_string())..)
        .take_while(|((m, k), _)| m == maps::PINGS && k.starts_with(iface))
        .filter(|((m, k), _)| maps::interface_of(m, k) == Some(iface));
    out.extend(pings);
    out
}

/// The input sets' elements (`input_ok`, `pings`) of interface `iface`, whoever they are known
/// to belong to: a tenant's replacement deletes them, so a suspended tenant never keeps one.
fn input_elements<'a>(o: &'a Observed, iface: &str) -> Vec<(&'a str, &'a str)> {
    let pings = format!("{iface} . ");
    let ok = o.dispatch.get_key_value(&(maps::INPUT_OK.to_string(), iface.to_string()));
    let ping = o
        .dispatch
        .range((maps::PINGS.to_string(), pings.clone())..)
        .take_while(|((m, k), _)| m == maps::PINGS && k.starts_with(&pings));
    ok.into_iter().chain(ping).map(|((m, k), _)| (m.as_str(), k.as_str())).collect()
}

/// What `differs` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    All,
    /// Everything but the chains' rules (their number and the digest the first one carries).
    AllButRules,
}

/// Why `part` is not what the table holds, or None when it is (for a tenant, also: nothing of
/// it is there that the part does not have).
fn differs(part: &Part, o: &Observed, tenant: Option<(&str, &ByOwner<'_>)>, compare: Compare) -> Option<String> {
    for (i, c) in part.chains.iter().enumerate() {
        let Some(oc) = o.chains.get(&c.name) else { return Some(format!("chain {} missing", c.name)) };
        if compare == Compare::All && oc.rules != c.rules.len() {
            return Some(format!("chain {} has {} rules, not {}", c.name, oc.rules, c.rules.len()));
        }
        if compare == Compare::All
            && i == 0
            && oc.comment.as_deref() != Some(format!("berqenas {}", part.digest).as_str())
        {
            return Some("changed".into());
        }
        if c.hook.is_some() && !oc.hook.as_deref().is_some_and(|h| h.ends_with(" accept")) {
            return Some(format!("chain {} is not a base chain with policy accept", c.name));
        }
    }
    for s in &part.sets {
        if !o.sets.contains_key(&s.name) {
            return Some(format!("{} {} missing", s.keyword, s.name));
        }
    }
    for d in &part.dispatch {
        if o.dispatch.get(&(d.map.to_string(), d.key.clone())) != Some(&d.value) {
            return Some(format!("{} element {} missing", d.map, d.key));
        }
    }
    let Some((tenant, by_owner)) = tenant else {
        // The base part: a set or map of an earlier version of it (no owner) is stale.
        return stale_base_sets(part, o).next().map(|s| format!("stale set or map {s}"));
    };
    if let Some(c) = owned(&o.chains, tenant).find(|c| !part.chains.iter().any(|p| &p.name == *c)) {
        return Some(format!("stale chain {c}"));
    }
    if let Some(s) = owned(&o.sets, tenant).find(|s| !part.sets.iter().any(|p| &p.name == *s)) {
        return Some(format!("stale set {s}"));
    }
    if let Some(c) = owned(&o.counters, tenant).next() {
        return Some(format!("stale counter {c}"));
    }
    let wanted: BTreeSet<(&str, &str)> = part.dispatch.iter().map(|d| (d.map, d.key.as_str())).collect();
    let elements = by_owner.get(tenant).into_iter().flatten();
    if let Some(((m, k), _)) =
        elements.map(|(key, c)| (*key, *c)).find(|((m, k), _)| !wanted.contains(&(m.as_str(), k.as_str())))
    {
        return Some(format!("stale {m} element {k}"));
    }
    None
}

/// The base part's sets and maps the table has and `base` does not (an earlier version's).
fn stale_base_sets<'a>(base: &'a Part, o: &'a Observed) -> impl Iterator<Item = &'a String> + 'a {
    o.sets.keys().filter(|n| owner_of(n).is_none() && !base.sets.iter().any(|s| &s.name == *n))
}

/// The `nft -f` script of each step, in order. Each script is one transaction on its own; run
/// together they are one transaction too. Dispatch elements deleted by an earlier step are not
/// deleted again.
pub fn scripts(steps: &[Step], desired: &Ruleset, observed: &Observed) -> Vec<(Step, String)> {
    let t = format!("inet {TABLE}");
    let mut deleted: BTreeSet<(String, String)> = BTreeSet::new();
    let mut out = Vec::new();
    // Removals first: a public port or interface moving to another tenant is free when added.
    let order = |s: &Step| match s {
        Step::CreateTable | Step::RepairBase { .. } => 0,
        Step::Remove { .. } => 1,
        Step::Replace { .. } | Step::Refill { .. } => 2,
        Step::Forget { .. } => 3,
        Step::RefreshBlocked { .. } => 4,
    };
    let mut sorted: Vec<&Step> = steps.iter().collect();
    sorted.sort_by_key(|s| order(s));
    let scope: BTreeSet<&str> = steps.iter().filter_map(Step::tenant).collect();
    let by_owner = dispatch_by_owner(observed, Some(&scope));
    // The elements jumping to `tenant`'s chains, and those on `keys` (whoever has them), each
    // deleted once: looked up by owner and key, not by scanning every tenant's elements.
    let mut delete_elements = |s: &mut String, tenant: &str, keys: &[(&str, &str)]| {
        let own = by_owner.get(tenant).into_iter().flatten().map(|(key, _)| (key.0.as_str(), key.1.as_str()));
        let taken =
            keys.iter().copied().filter(|(m, k)| observed.dispatch.contains_key(&(m.to_string(), k.to_string())));
        let mut all: Vec<(&str, &str)> = own.chain(taken).collect();
        all.sort();
        for (map, key) in all {
            if deleted.insert((map.to_string(), key.to_string())) {
                writeln!(s, "delete element {t} {map} {{ {} }}", maps::key_text(map, key)).ok();
            }
        }
    };
    for step in sorted {
        let mut s = String::new();
        match step {
            Step::CreateTable => {
                writeln!(s, "add table {t}").ok();
                s.push_str(&desired.base.script());
            }
            Step::RepairBase { .. } => {
                writeln!(s, "add table {t}").ok();
                for set in &desired.base.sets {
                    writeln!(s, "add {} {t} {} {{ {} }}", set.keyword, set.name, set.spec).ok();
                }
                for c in desired.base.chains.iter().filter(|c| observed.chains.contains_key(&c.name)) {
                    writeln!(s, "flush chain {t} {}\ndelete chain {t} {}", c.name, c.name).ok();
                }
                // Unused once the base chains are gone; their elements go with them.
                for name in stale_base_sets(&desired.base, observed) {
                    let keyword = if observed.maps.contains(name) { "map" } else { "set" };
                    writeln!(s, "delete {keyword} {t} {name}").ok();
                }
                s.push_str(&desired.base.script());
            }
            Step::Remove { tenant } => {
                delete_elements(&mut s, tenant, &[]);
                clear(&mut s, observed, tenant, |_| false, |_| false);
            }
            Step::Replace { tenant, .. } => {
                let Some(part) = desired.tenants.get(tenant) else { continue };
                let mut wanted: Vec<(&str, &str)> = part.dispatch.iter().map(|d| (d.map, d.key.as_str())).collect();
                let iface = part.dispatch.iter().find(|d| d.map == maps::FROM_TENANT).map(|d| d.key.as_str());
                wanted.extend(iface.map(|i| input_elements(observed, i)).unwrap_or_default());
                // Its own elements, and any other element on a key it is about to take.
                delete_elements(&mut s, tenant, &wanted);
                let chain_kept = |n: &str| part.chains.iter().any(|c| c.name == n);
                let set_kept = |n: &str| part.sets.iter().any(|c| c.name == n);
                clear(&mut s, observed, tenant, chain_kept, set_kept);
                s.push_str(&part.script());
            }
            Step::Refill { tenant, .. } => {
                let Some(part) = desired.tenants.get(tenant) else { continue };
                for c in &part.chains {
                    writeln!(s, "flush chain {t} {}", c.name).ok();
                    for r in &c.rules {
                        writeln!(s, "add rule {t} {} {r}", c.name).ok();
                    }
                }
            }
            Step::Forget { ports } => {
                // Added first, so that deleting one that is not there (never counted, or timed
                // out since it was listed) is no error.
                let mut forget = |set: &str, key: &str| {
                    writeln!(s, "add element {t} {set} {{ {key} }}\ndelete element {t} {set} {{ {key} }}").ok();
                };
                for port in ports {
                    forget(seen::ACCEPTED, port);
                    forget(seen::DROPPED, port);
                }
                let ports: BTreeSet<&str> = ports.iter().map(String::as_str).collect();
                for set in [seen::SEEN, seen::FIRST] {
                    for e in observed.sets.get(set).into_iter().flatten().filter(|e| ports.contains(port_of(&e.key))) {
                        forget(set, &e.key);
                    }
                }
            }
            Step::RefreshBlocked { tenant, addresses } => {
                let Some(set) = desired.tenants.get(tenant).and_then(|p| p.blocked_set.as_deref()) else { continue };
                // The set exists once its part is there (a replacement in the same batch adds it).
                writeln!(s, "add set {t} {set} {{ type ipv4_addr; flags timeout; }}\nflush set {t} {set}").ok();
                if !addresses.is_empty() {
                    let elements: Vec<String> =
                        addresses.iter().map(|a| format!("{a} timeout {BLOCK_TIMEOUT_SECS}s")).collect();
                    writeln!(s, "add element {t} {set} {{ {} }}", elements.join(", ")).ok();
                }
            }
        }
        out.push((step.clone(), s));
    }
    out
}

/// Empties the observed chains of `tenant` and deletes those not `chain_kept`; deletes its
/// sets, maps and counters not `set_kept`.
fn clear(
    s: &mut String,
    observed: &Observed,
    tenant: &str,
    chain_kept: impl Fn(&str) -> bool,
    set_kept: impl Fn(&str) -> bool,
) {
    let t = format!("inet {TABLE}");
    for c in owned(&observed.chains, tenant) {
        writeln!(s, "flush chain {t} {c}").ok();
    }
    for c in owned(&observed.chains, tenant).filter(|c| !chain_kept(c)) {
        writeln!(s, "delete chain {t} {c}").ok();
    }
    for name in owned(&observed.sets, tenant).filter(|n| !set_kept(n)) {
        let keyword = if observed.maps.contains(name) { "map" } else { "set" };
        writeln!(s, "delete {keyword} {t} {name}").ok();
    }
    for c in owned(&observed.counters, tenant).filter(|c| !set_kept(c)) {
        writeln!(s, "delete counter {t} {c}").ok();
    }
}

/// Pure: what the table lists right after `ruleset` (with `blocked`) was applied in full, as far
/// as planning looks (chains with their rule counts and digest, sets, counters, dispatch). Sets
/// other than the blocked ones are listed empty.
pub fn as_applied(ruleset: &Ruleset, blocked: &BTreeMap<String, BTreeSet<Ipv4Addr>>) -> Observed {
    let mut o = Observed { table: true, ..Observed::default() };
    for part in std::iter::once(&ruleset.base).chain(ruleset.tenants.values()) {
        add_applied(&mut o, part, blocked);
    }
    o
}

/// Adds what `part` (with `blocked`) lists once applied to `o` (see `as_applied`).
pub fn add_applied(o: &mut Observed, part: &Part, blocked: &BTreeMap<String, BTreeSet<Ipv4Addr>>) {
    for (i, c) in part.chains.iter().enumerate() {
        let chain = ObservedChain {
            rules: c.rules.len(),
            comment: (i == 0).then(|| format!("berqenas {}", part.digest)),
            hook: c.hook.map(|_| "accept".to_string()).map(|p| format!("hooked {p}")),
        };
        o.chains.insert(c.name.clone(), chain);
    }
    for set in &part.sets {
        let elements: Vec<Element> = if Some(&set.name) == part.blocked_set.as_ref() {
            let owner = part.owner.as_deref().unwrap_or_default();
            let addresses = blocked.get(owner).into_iter().flatten();
            addresses
                .map(|a| Element { key: a.to_string(), expires: Some(BLOCK_TIMEOUT_SECS), ..Element::default() })
                .collect()
        } else {
            Vec::new()
        };
        if set.keyword == "map" {
            o.maps.insert(set.name.clone());
        }
        o.sets.insert(set.name.clone(), elements);
    }
    if let Some(owner) = &part.owner {
        for key in &part.ports {
            if !o.ports.contains_key(key) {
                o.ports.insert(key.clone(), owner.clone());
            }
        }
    }
    for d in &part.dispatch {
        o.dispatch.insert((d.map.to_string(), d.key.clone()), d.value.clone());
    }
}

/// Takes out of `o` what `add_applied` put in for `part`: `as_applied` of a ruleset without
/// `part` is `as_applied` of the ruleset with `remove_applied` of the part (the names of
/// different parts never meet: they are prefixed by their owner, dispatch keys are unique).
pub fn remove_applied(o: &mut Observed, part: &Part) {
    for c in &part.chains {
        o.chains.remove(&c.name);
    }
    for set in &part.sets {
        o.maps.remove(&set.name);
        o.sets.remove(&set.name);
    }
    for key in &part.ports {
        if o.ports.get(key) == part.owner.as_ref() {
            o.ports.remove(key);
        }
    }
    for d in &part.dispatch {
        let key = (d.map.to_string(), d.key.clone());
        if o.dispatch.get(&key) == Some(&d.value) {
            o.dispatch.remove(&key);
        }
    }
}
