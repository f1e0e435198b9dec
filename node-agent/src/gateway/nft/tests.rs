//! Unit tests of the pure nft core: the rendered ruleset for a fixed desired state (exact text),
//! the plan against observations (converged → empty, one tenant changed → only it, gone tenants
//! removed, hand deletions repaired), and status parsing.
//!
//! tidy: long because the exact-text snapshots of the base and a tenant part are long by nature.

use super::observe::{Element, ObservedChain};
use super::plan::{self, plan, scripts, Step};
use super::render::*;
use super::*;
use crate::assignment::{ExposureSpec, GatewaySpec, Lifecycle, Protocol, RuleSpec, SourceMode, Verdict};

fn node() -> GatewayConfig {
    GatewayConfig {
        public_address: "198.51.100.10".parse().expect("ip"),
        public_ports: "15000-15999".parse().expect("range"),
        protected_networks: Vec::new(),
    }
}

fn exposure(id: &str, port: u16, public_port: u16, allow: &[&str], rate: u32, source: SourceMode) -> ExposureSpec {
    ExposureSpec {
        id: id.into(),
        device_id: "d1".into(),
        device_address: "198.18.1.10".parse().expect("ip"),
        port,
        public_port,
        protocol: Protocol::Tcp,
        allow: allow.iter().map(|a| a.parse().expect("cidr")).collect(),
        rate_per_second: rate,
        source,
        enabled: true,
    }
}

pub(crate) fn tenant(name: &str, index: u8) -> GatewayTenant {
    GatewayTenant {
        name: name.into(),
        revision: 1,
        lifecycle: Lifecycle::Run,
        index: u32::from(index),
        gateway: GatewaySpec {
            vpn_subnet: format!("198.18.{index}.0/24").parse().expect("cidr"),
            gateway_address: format!("198.18.{index}.1").parse().expect("ip"),
            interface: format!("bqt{index}"),
            listen_port: 51820 + u16::from(index),
            bandwidth_bps: 0,
            device_to_device: false,
            peers: Vec::new(),
            exposures: Vec::new(),
            rules: Vec::new(),
            blocked_domains: Vec::new(),
        },
    }
}

fn acme() -> GatewayTenant {
    let mut t = tenant("acme", 1);
    t.gateway.bandwidth_bps = 50_000_000;
    t.gateway.device_to_device = true;
    t.gateway.exposures = vec![
        exposure("e1", 5432, 15432, &["203.0.113.7/32", "203.0.113.0/24", "192.0.2.0/25"], 100, SourceMode::Keep),
        exposure("e2", 80, 15080, &[], 0, SourceMode::Nat),
    ];
    t.gateway.rules = vec![
        RuleSpec {
            id: "r1".into(),
            position: 1,
            verdict: Verdict::Deny,
            sources: vec!["203.0.113.8/32".parse().expect("cidr")],
            destinations: Vec::new(),
            ports: Some("5432".parse().expect("port")),
            protocol: Protocol::Tcp,
            vpn_required: false,
        },
        RuleSpec {
            id: "r2".into(),
            position: 2,
            verdict: Verdict::Allow,
            sources: Vec::new(),
            destinations: vec!["203.0.113.0/24".parse().expect("cidr"), "192.0.2.1/32".parse().expect("cidr")],
            ports: None,
            protocol: Protocol::Any,
            vpn_required: false,
        },
        RuleSpec {
            id: "r3".into(),
            position: 3,
            verdict: Verdict::Allow,
            sources: Vec::new(),
            destinations: vec!["198.18.1.20/32".parse().expect("cidr")],
            ports: Some("22-23".parse().expect("range")),
            protocol: Protocol::Tcp,
            vpn_required: true,
        },
    ];
    t.gateway.blocked_domains = vec!["blocked.example.com".parse().expect("domain")];
    t
}

#[test]
fn tenant_part_renders_exactly() {
    let r = render(&node(), &[acme()]);
    assert!(r.refused.is_empty());
    let part = &r.tenants["acme"];
    let expected = format!(
        r#"add chain inet berqenas acme-out
add chain inet berqenas acme-in
add chain inet berqenas acme-snat
add chain inet berqenas acme-x
add set inet berqenas acme-blocked {{ type ipv4_addr; flags timeout; }}
add rule inet berqenas acme-out meta nfproto ipv6 drop comment "berqenas {digest}"
add rule inet berqenas acme-out limit rate over 6250000 bytes/second burst 1250000 bytes drop
add rule inet berqenas acme-out ct state established,related accept
add rule inet berqenas acme-out ct state invalid drop
add rule inet berqenas acme-out ip saddr != 198.18.1.0/24 drop
add rule inet berqenas acme-out oifname "bqt*" oifname != "bqt1" drop
add rule inet berqenas acme-out ip daddr @acme-blocked drop
add rule inet berqenas acme-out ip daddr 169.254.0.0/16 drop
add rule inet berqenas acme-out ip saddr 203.0.113.8 tcp dport 5432 drop comment "rule r1"
add rule inet berqenas acme-out ip daddr {{ 192.0.2.1, 203.0.113.0/24 }} accept comment "rule r2"
add rule inet berqenas acme-out ip daddr 198.18.1.20 tcp dport 22-23 accept comment "rule r3"
add rule inet berqenas acme-out oifname "bqt1" accept
add rule inet berqenas acme-out drop
add rule inet berqenas acme-in meta nfproto ipv6 drop
add rule inet berqenas acme-in limit rate over 6250000 bytes/second burst 1250000 bytes drop
add rule inet berqenas acme-in ct state established,related accept
add rule inet berqenas acme-in ct state invalid drop
add rule inet berqenas acme-in ip saddr 203.0.113.8 tcp dport 5432 drop comment "rule r1"
add rule inet berqenas acme-in ip daddr {{ 192.0.2.1, 203.0.113.0/24 }} accept comment "rule r2"
add rule inet berqenas acme-in ip daddr 198.18.1.20 tcp dport 22-23 drop comment "rule r3"
add rule inet berqenas acme-in ct status dnat meta l4proto tcp ip daddr 198.18.1.10 th dport 5432 accept
add rule inet berqenas acme-in ct status dnat meta l4proto tcp ip daddr 198.18.1.10 th dport 80 accept
add rule inet berqenas acme-in drop
add rule inet berqenas acme-snat ct status dnat meta l4proto tcp ip daddr 198.18.1.10 th dport 80 snat ip to 198.18.1.1
add rule inet berqenas acme-x meta l4proto tcp th dport 15432 ip saddr != 192.0.2.0/25 ip saddr != 203.0.113.0/24 update @dropped {{ meta l4proto . th dport counter }} drop
add rule inet berqenas acme-x meta l4proto tcp th dport 15432 ct state new limit rate over 100/second burst 100 packets update @dropped {{ meta l4proto . th dport counter }} drop
add rule inet berqenas acme-x update @seen {{ meta l4proto . th dport . ip saddr counter }}
add rule inet berqenas acme-x add @first {{ meta l4proto . th dport . ip saddr }}
add rule inet berqenas acme-x update @accepted {{ meta l4proto . th dport counter }}
add element inet berqenas input_ok {{ "bqt1" }}
add element inet berqenas pings {{ "bqt1" . 198.18.1.1 }}
add element inet berqenas expose_filter {{ tcp . 15432 : jump acme-x }}
add element inet berqenas expose_dnat {{ tcp . 15432 : 198.18.1.10 . 5432 }}
add element inet berqenas expose_filter {{ tcp . 15080 : jump acme-x }}
add element inet berqenas expose_dnat {{ tcp . 15080 : 198.18.1.10 . 80 }}
add element inet berqenas fwd_from {{ "bqt1" : jump acme-out }}
add element inet berqenas fwd_to {{ "bqt1" : jump acme-in }}
add element inet berqenas post_to {{ "bqt1" : jump acme-snat }}
"#,
        digest = part.digest
    );
    assert_eq!(part.script(), expected);
}

#[test]
fn base_part_renders_exactly() {
    let base = render(&node(), &[]).base;
    let expected = format!(
        r#"add chain inet berqenas forward_hook {{ type filter hook forward priority filter; policy accept; }}
add chain inet berqenas input_hook {{ type filter hook input priority filter; policy accept; }}
add chain inet berqenas expose_hook {{ type filter hook prerouting priority mangle; policy accept; }}
add chain inet berqenas dnat_hook {{ type nat hook prerouting priority dstnat; policy accept; }}
add chain inet berqenas snat_hook {{ type nat hook postrouting priority srcnat; policy accept; }}
add set inet berqenas seen {{ type inet_proto . inet_service . ipv4_addr; size 262144; flags dynamic,timeout; timeout 604800s; counter; }}
add set inet berqenas first {{ type inet_proto . inet_service . ipv4_addr; size 262144; flags dynamic,timeout; timeout 604800s; }}
add set inet berqenas accepted {{ type inet_proto . inet_service; size 131072; flags dynamic; counter; }}
add set inet berqenas dropped {{ type inet_proto . inet_service; size 131072; flags dynamic; counter; }}
add map inet berqenas fwd_from {{ type ifname : verdict; }}
add map inet berqenas fwd_to {{ type ifname : verdict; }}
add set inet berqenas input_ok {{ type ifname; }}
add set inet berqenas pings {{ type ifname . ipv4_addr; }}
add map inet berqenas post_to {{ type ifname : verdict; }}
add map inet berqenas expose_filter {{ type inet_proto . inet_service : verdict; }}
add map inet berqenas expose_dnat {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}
add rule inet berqenas forward_hook iifname vmap @fwd_from comment "berqenas {digest}"
add rule inet berqenas forward_hook oifname vmap @fwd_to
add rule inet berqenas forward_hook iifname "bqt*" drop
add rule inet berqenas forward_hook oifname "bqt*" drop
add rule inet berqenas input_hook iifname "bqt*" meta nfproto ipv6 drop
add rule inet berqenas input_hook iifname @input_ok ct state established,related accept
add rule inet berqenas input_hook icmp type echo-request iifname . ip daddr @pings accept
add rule inet berqenas input_hook iifname "bqt*" drop
add rule inet berqenas expose_hook ip daddr 198.51.100.10 meta l4proto . th dport vmap @expose_filter
add rule inet berqenas dnat_hook ip daddr 198.51.100.10 dnat ip to meta l4proto . th dport map @expose_dnat
add rule inet berqenas snat_hook oifname vmap @post_to
add rule inet berqenas snat_hook iifname "bqt*" oifname != "bqt*" masquerade
"#,
        digest = base.digest
    );
    assert_eq!(base.script(), expected);
}

#[test]
fn suspended_tenant_forwards_and_exposes_nothing_but_keeps_its_counters() {
    let mut t = acme();
    t.lifecycle = Lifecycle::Suspended;
    let part = &render(&node(), &[t]).tenants["acme"];
    let rules = |name: &str| part.chains.iter().find(|c| c.name == name).map(|c| c.rules.len()).expect("chain");
    assert_eq!((rules("acme-out"), rules("acme-in")), (2, 2), "ipv6 drop + drop");
    assert!(part.dispatch.iter().all(|d| !d.map.starts_with("expose")), "no exposure reachable");
    assert!(part.dispatch.iter().all(|d| !maps::is_set(d.map)), "no ping or answer to the gateway");
    assert_eq!(part.ports, ["tcp . 15432", "tcp . 15080"], "counts and sources survive a suspension");
}

#[test]
fn conflicting_ports_and_interfaces_are_refused_not_shared() {
    let mut b = tenant("beta", 2);
    b.gateway.exposures = vec![exposure("b1", 22, 15432, &[], 0, SourceMode::Nat)];
    let mut c = tenant("gamma", 3);
    c.gateway.interface = "bqt1".into();
    let mut outside = tenant("delta", 4);
    outside.gateway.exposures = vec![exposure("o1", 22, 80, &[], 0, SourceMode::Nat)];
    let r = render(&node(), &[acme(), b, c, outside]);
    let reasons: Vec<String> = r.refused.iter().map(|(t, why)| format!("{t}: {why}")).collect();
    assert_eq!(
        reasons,
        [
            "beta: exposure b1: public port 15432 taken by tenant acme",
            "delta: exposure o1: public port 80 outside 15000-15999",
            "gamma: interface bqt1 belongs to tenant acme",
        ]
    );
    assert!(!r.tenants.contains_key("gamma"));
    assert!(r.tenants["beta"].dispatch.iter().all(|d| d.map != maps::EXPOSE_FILTER));
}

#[test]
fn overlapping_networks_collapse_for_interval_sets() {
    let cidrs: Vec<berqenas_common::net::Ipv4Cidr> =
        ["10.1.0.0/16", "10.0.0.0/8", "10.2.3.4/32", "192.0.2.7/32", "192.0.2.7/32"]
            .iter()
            .map(|c| c.parse().expect("cidr"))
            .collect();
    assert_eq!(networks(&cidrs), ["10.0.0.0/8", "192.0.2.7"]);
}

/// What the table would list right after `ruleset` was applied.
fn applied(ruleset: &Ruleset, blocked: &BTreeMap<String, BTreeSet<Ipv4Addr>>) -> Observed {
    let mut o = Observed { table: true, ..Observed::default() };
    for part in std::iter::once(&ruleset.base).chain(ruleset.tenants.values()) {
        for c in &part.chains {
            o.chains.insert(
                c.name.clone(),
                ObservedChain {
                    rules: c.rules.len(),
                    comment: c
                        .rules
                        .first()
                        .and_then(|r| r.split("comment \"").nth(1))
                        .map(|c| c.trim_end_matches('"').to_string()),
                    hook: c.hook.map(|_| "filter forward 0 accept".to_string()),
                },
            );
        }
        for s in &part.sets {
            let mut elements: Vec<Element> = Vec::new();
            if Some(&s.name) == part.blocked_set.as_ref() {
                let owner = part.owner.clone().unwrap_or_default();
                elements = blocked
                    .get(&owner)
                    .into_iter()
                    .flatten()
                    .map(|a| Element {
                        key: a.to_string(),
                        expires: Some(BLOCK_TIMEOUT_SECS - 10),
                        ..Element::default()
                    })
                    .collect();
            }
            if s.keyword == "map" {
                o.maps.insert(s.name.clone());
            }
            o.sets.insert(s.name.clone(), elements);
        }
        for d in &part.dispatch {
            o.dispatch.insert((d.map.to_string(), d.key.clone()), d.value.clone());
            // As a listing tells it: a port is the tenant's whose exposure chain it reaches.
            if d.map == maps::EXPOSE_FILTER {
                o.ports.insert(d.key.clone(), part.owner.clone().unwrap_or_default());
            }
        }
    }
    o
}

fn blocked_acme() -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    BTreeMap::from([("acme".to_string(), BTreeSet::from(["203.0.113.9".parse().expect("ip")]))])
}

#[test]
fn the_table_as_applied_plans_nothing() {
    let r = render(&node(), &[acme(), tenant("beta", 2)]);
    let blocked = blocked_acme();
    assert_eq!(plan(&r, &plan::as_applied(&r, &blocked), &blocked), []);
    // A change on top of it plans only that change.
    let mut beta = tenant("beta", 2);
    beta.gateway.device_to_device = true;
    let after = render(&node(), &[acme(), beta]);
    assert_eq!(
        plan(&after, &plan::as_applied(&r, &blocked), &blocked),
        [Step::Refill { tenant: "beta".into(), why: "changed".into() }]
    );
}

#[test]
fn converged_host_yields_empty_plan() {
    let r = render(&node(), &[acme(), tenant("beta", 2)]);
    let blocked = blocked_acme();
    assert_eq!(plan(&r, &applied(&r, &blocked), &blocked), []);
}

#[test]
fn empty_host_gets_the_table_and_every_tenant() {
    let r = render(&node(), &[acme(), tenant("beta", 2)]);
    let steps = plan(&r, &Observed::default(), &blocked_acme());
    let kinds: Vec<String> = steps.iter().map(|s| format!("{:?}", std::mem::discriminant(s))).collect();
    assert_eq!(steps[0], Step::CreateTable);
    assert!(matches!(&steps[1], Step::Replace { tenant, why } if tenant == "acme" && why == "chain acme-out missing"));
    assert!(
        matches!(&steps[2], Step::RefreshBlocked { tenant, addresses } if tenant == "acme" && addresses.len() == 1)
    );
    assert!(matches!(&steps[3], Step::Replace { tenant, .. } if tenant == "beta"));
    assert_eq!(kinds.len(), 4);
    let s = scripts(&steps, &r, &Observed::default());
    assert!(s[0].1.starts_with("add table inet berqenas\n"));
    assert!(!s.iter().any(|(_, s)| s.contains("delete ")), "nothing to delete on an empty host");
}

/// Blocked addresses by tenant.
type Blocked = BTreeMap<String, BTreeSet<Ipv4Addr>>;

/// acme and beta as applied, then beta changed by `change`: (before, after, observed, blocked, steps).
fn beta_changed(change: impl FnOnce(&mut GatewayTenant)) -> (Ruleset, Ruleset, Observed, Blocked, Vec<Step>) {
    let before = render(&node(), &[acme(), tenant("beta", 2)]);
    let blocked = blocked_acme();
    let observed = applied(&before, &blocked);
    let mut beta = tenant("beta", 2);
    change(&mut beta);
    let after = render(&node(), &[acme(), beta]);
    let steps = plan(&after, &observed, &blocked);
    (before, after, observed, blocked, steps)
}

#[test]
fn one_tenant_changed_replaces_only_it() {
    let (_, after, observed, _, steps) = beta_changed(|beta| {
        beta.gateway.device_to_device = true;
        beta.gateway.interface = "bqt9".into();
    });
    assert_eq!(steps, [Step::Replace { tenant: "beta".into(), why: "changed".into() }]);
    let s = &scripts(&steps, &after, &observed)[0].1;
    assert!(!s.contains("acme"), "acme untouched: {s}");
    assert!(s.contains("delete element inet berqenas fwd_from { \"bqt2\" }\n"), "{s}");
    assert!(s.contains("add element inet berqenas fwd_from { \"bqt9\" : jump beta-out }\n"), "{s}");
    assert!(s.contains("flush chain inet berqenas beta-out\n"), "{s}");
    assert!(s.contains("add rule inet berqenas beta-out oifname \"bqt9\" accept\n"), "{s}");
    assert!(!s.contains("delete chain"), "kept chains are flushed, not deleted: {s}");
}

#[test]
fn a_change_of_rules_only_refills_the_tenants_chains() {
    let (before, after, observed, blocked, steps) = beta_changed(|beta| beta.gateway.device_to_device = true);
    assert_eq!(steps, [Step::Refill { tenant: "beta".into(), why: "changed".into() }]);
    let s = &scripts(&steps, &after, &observed)[0].1;
    assert!(!s.contains("acme"), "acme untouched: {s}");
    assert!(s.contains("flush chain inet berqenas beta-out\n"), "{s}");
    assert!(s.contains("add rule inet berqenas beta-out oifname \"bqt2\" accept\n"), "{s}");
    assert!(!s.contains("element") && !s.contains("delete") && !s.contains("add chain"), "only rules: {s}");
    let part = &after.tenants["beta"];
    assert_eq!(s.lines().filter(|l| l.starts_with("flush chain")).count(), part.chains.len());
    let rules: usize = part.chains.iter().map(|c| c.rules.len()).sum();
    assert_eq!(s.lines().filter(|l| l.starts_with("add rule")).count(), rules);
    // Once refilled, the table is as wanted.
    let mut now = observed.clone();
    plan::remove_applied(&mut now, &before.tenants["beta"]);
    plan::add_applied(&mut now, part, &blocked);
    assert_eq!(plan(&after, &now, &blocked), []);
}

#[test]
fn removed_exposure_and_gone_tenant_are_cleaned_up() {
    let before = render(&node(), &[acme(), tenant("beta", 2)]);
    let blocked = blocked_acme();
    let mut observed = applied(&before, &blocked);
    // A map of an earlier version of the agent is deleted with its tenant.
    observed.sets.insert("beta-dnat".into(), Vec::new());
    observed.maps.insert("beta-dnat".into());
    let source = |port: u16| Element { key: format!("tcp . {port} . 203.0.113.7"), ..Element::default() };
    observed.sets.insert("seen".into(), vec![source(15080), source(15432)]);
    let mut a = acme();
    a.gateway.exposures.remove(0);
    let after = render(&node(), &[a]);
    let steps = plan(&after, &observed, &blocked);
    assert_eq!(steps[0], Step::Remove { tenant: "beta".into() });
    assert!(matches!(&steps[1], Step::Replace { tenant, .. } if tenant == "acme"));
    let s = scripts(&steps, &after, &observed);
    assert!(
        s[0].1.contains("delete chain inet berqenas beta-out\n")
            && s[0].1.contains("delete map inet berqenas beta-dnat\n")
    );
    assert!(s[0].1.contains("delete element inet berqenas post_to { \"bqt2\" }\n"));
    let acme_script = &s[1].1;
    assert!(acme_script.contains("delete element inet berqenas expose_filter { tcp . 15432 }\n"), "{acme_script}");
    assert!(acme_script.contains("delete element inet berqenas expose_dnat { tcp . 15432 }\n"), "{acme_script}");
    assert!(!acme_script.contains("th dport 15432"), "the removed exposure's checks are gone: {acme_script}");
    assert!(acme_script.contains("flush chain inet berqenas acme-x\n"), "{acme_script}");
    // The removed exposure's counts and sources are forgotten, the kept one's are not.
    assert_eq!(steps[2], Step::Forget { ports: vec!["tcp . 15432".into()] });
    let forget = &s[2].1;
    assert!(forget.contains("delete element inet berqenas accepted { tcp . 15432 }\n"), "{forget}");
    assert!(forget.contains("delete element inet berqenas seen { tcp . 15432 . 203.0.113.7 }\n"), "{forget}");
    assert!(!forget.contains("15080"), "{forget}");
}

#[test]
fn named_sets_of_an_earlier_version_are_replaced_by_rules() {
    // Before, a tenant's exposures, source NAT choices, DNAT targets and allowlists were named
    // sets and a map; a table from then is replaced once, its old sets deleted.
    let r = render(&node(), &[acme()]);
    let blocked = blocked_acme();
    let mut o = applied(&r, &blocked);
    for old in ["acme-exposed", "acme-masq", "acme-allow", "acme-dnat"] {
        o.sets.insert(old.into(), vec![Element { key: "tcp . 198.18.1.10 . 80".into(), ..Element::default() }]);
    }
    o.maps.insert("acme-dnat".into());
    let steps = plan(&r, &o, &blocked);
    assert_eq!(steps, [Step::Replace { tenant: "acme".into(), why: "stale set acme-allow".into() }]);
    let s = &scripts(&steps, &r, &o)[0].1;
    for gone in ["set inet berqenas acme-exposed", "set inet berqenas acme-masq", "map inet berqenas acme-dnat"] {
        assert!(s.contains(&format!("delete {gone}\n")), "{s}");
    }
    assert!(!s.contains("flush set"), "no set of the part has rendered elements: {s}");
}

#[test]
fn a_tenant_without_blocked_domains_has_no_blocked_set() {
    let part = &render(&node(), &[tenant("beta", 2)]).tenants["beta"];
    let names: Vec<&str> = part.sets.iter().map(|s| s.name.as_str()).collect();
    assert!(names.is_empty(), "sources seen go to the table's sets: {names:?}");
    assert_eq!(part.blocked_set, None);
    assert!(!part.script().contains("@beta-blocked"));
}

#[test]
fn an_exposure_allowing_one_network_compares_without_a_set() {
    let mut t = acme();
    t.gateway.exposures = vec![exposure("e1", 5432, 15432, &["192.0.2.0/25"], 0, SourceMode::Keep)];
    let part = &render(&node(), &[t]).tenants["acme"];
    let x = part.chains.iter().find(|c| c.name == "acme-x").expect("chain");
    assert_eq!(
        x.rules[0],
        "meta l4proto tcp th dport 15432 ip saddr != 192.0.2.0/25 update @dropped { meta l4proto . th dport counter } drop"
    );
    let snat = part.chains.iter().find(|c| c.name == "acme-snat").expect("chain");
    assert!(snat.rules.is_empty(), "no exposure with source nat: no rule (nothing to source-nat)");
    assert!(!part.chains.iter().any(|c| c.name.starts_with("acme-a-")), "no allowlist chain");
}

#[test]
fn a_long_allowlist_is_one_interval_set_in_the_rule() {
    let mut t = acme();
    let nets: Vec<String> = (0..=ALLOW_RULES).map(|i| format!("192.0.2.{}/32", i * 2)).collect();
    let nets: Vec<&str> = nets.iter().map(String::as_str).collect();
    t.gateway.exposures = vec![exposure("e1", 5432, 15432, &nets, 0, SourceMode::Keep)];
    let part = &render(&node(), &[t]).tenants["acme"];
    let x = part.chains.iter().find(|c| c.name == "acme-x").expect("chain");
    assert!(
        x.rules[0].starts_with("meta l4proto tcp th dport 15432 ip saddr != { 192.0.2.0, 192.0.2.2, "),
        "{}",
        x.rules[0]
    );
    assert!(!part.chains.iter().any(|c| c.name == "acme-a-e1"));
}

#[test]
fn hand_changes_are_repaired() {
    let r = render(&node(), &[acme(), tenant("beta", 2)]);
    let blocked = blocked_acme();
    let mut o = applied(&r, &blocked);
    o.chains.remove("acme-in");
    o.dispatch.remove(&("fwd_to".to_string(), "bqt1".to_string()));
    o.chains.get_mut("beta-out").expect("chain").rules -= 1;
    o.chains.insert("beta-extra".into(), ObservedChain::default());
    o.chains.get_mut("forward_hook").expect("base").rules = 1;
    let steps = plan(&r, &o, &blocked);
    assert_eq!(
        steps,
        [
            Step::RepairBase { why: "chain forward_hook has 1 rules, not 4".into() },
            Step::Replace { tenant: "acme".into(), why: "chain acme-in missing".into() },
            Step::Replace { tenant: "beta".into(), why: "chain beta-out has 7 rules, not 8".into() },
        ]
    );
    // Blocked addresses near their timeout, or changed, are refreshed alone.
    let mut o = applied(&r, &blocked);
    o.sets.get_mut("acme-blocked").expect("set")[0].expires = Some(60);
    assert_eq!(
        plan(&r, &o, &blocked),
        [Step::RefreshBlocked { tenant: "acme".into(), addresses: vec!["203.0.113.9".parse().expect("ip")] }]
    );
    let s = &scripts(&plan(&r, &o, &blocked), &r, &o)[0].1;
    assert!(s.ends_with("flush set inet berqenas acme-blocked\nadd element inet berqenas acme-blocked { 203.0.113.9 timeout 86400s }\n"), "{s}");
}

#[test]
fn hostile_names_never_reach_a_script_unparsed() {
    // Everything written into a script is a parsed value or a name checked at the wire edge;
    // the wire conversion refuses the rest (see assignment tests). Domain names never appear.
    let r = render(&node(), &[acme()]);
    assert!(!r.script().contains("example.com"));
}

#[test]
fn exposure_status_reads_counters_and_sources() {
    let r = render(&node(), &[acme()]);
    let mut o = applied(&r, &BTreeMap::new());
    let counted = |packets| Element { key: "tcp . 15432".into(), packets, ..Element::default() };
    o.sets.insert("accepted".into(), vec![counted(12)]);
    o.sets.insert("dropped".into(), vec![counted(3)]);
    o.sets.insert(
        "seen".into(),
        vec![Element {
            key: "tcp . 15432 . 203.0.113.7".into(),
            expires: Some(SEEN_TIMEOUT_SECS - 5),
            timeout: Some(SEEN_TIMEOUT_SECS),
            packets: 12,
            bytes: 900,
        }],
    );
    o.sets.insert(
        "first".into(),
        vec![Element {
            key: "tcp . 15432 . 203.0.113.7".into(),
            expires: Some(SEEN_TIMEOUT_SECS - 100),
            timeout: Some(SEEN_TIMEOUT_SECS),
            ..Element::default()
        }],
    );
    let s = status::exposures_from(&o, &[acme()], 1_000_000);
    let e1 = &s["acme"][0];
    assert_eq!((e1.id.as_str(), e1.accepted_packets, e1.dropped_packets), ("e1", 12, 3));
    assert_eq!(
        e1.sources,
        [SourceSeen {
            address: "203.0.113.7".into(),
            first_seen: 1_000_000 - 100,
            last_seen: 1_000_000 - 5,
            packets: 12,
            bytes: 900
        }]
    );
    assert!(s["acme"][1].sources.is_empty());
}

#[test]
fn foreign_drop_chains_become_conditions() {
    let chains = r#"{"nftables": [
      {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "inet", "table": "berqenas", "name": "forward", "handle": 2, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
      {"chain": {"family": "ip6", "table": "filter", "name": "FORWARD", "handle": 3, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "inet", "table": "fw", "name": "in", "handle": 4, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "inet", "table": "fw", "name": "pre", "handle": 5, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}
    ]}"#;
    let found = status::foreign_chains(chains).expect("parses");
    let names: Vec<String> = found.iter().map(|c| format!("{} {} {}", c.family, c.table, c.name)).collect();
    assert_eq!(names, ["ip filter FORWARD", "inet fw pre"], "not ours, not ip6, not input");
    let rules = r#"{"nftables": [
      {"rule": {"family": "inet", "table": "fw", "chain": "pre", "handle": 6, "expr": [{"match": {}}, {"drop": null}]}},
      {"rule": {"family": "inet", "table": "fw", "chain": "pre", "handle": 7, "expr": [{"accept": null}]}}
    ]}"#;
    assert_eq!(status::dropping_rules(rules).expect("parses"), 1);
    let c = status::condition(&found[0], 0).expect("policy drop");
    assert_eq!(c.kind, "foreign-forward-drop");
    assert!(c.message.contains("table ip filter chain FORWARD") && c.message.contains("Remedy"), "{}", c.message);
    assert_eq!(status::condition(&found[1], 1).expect("a drop rule").kind, "foreign-nat-drop");
    assert_eq!(status::condition(&found[1], 0), None);
}

#[test]
fn protected_networks_are_dropped_before_any_tenant_rule() {
    let mut n = node();
    n.protected_networks = vec!["192.0.2.0/24".parse().expect("net"), "203.0.113.10/32".parse().expect("net")];
    let base = base_part(&n);
    let forward = base.chains.iter().find(|c| c.name == "forward_hook").expect("forward hook");
    assert!(
        forward.rules[0].starts_with("iifname \"bqt*\" ip daddr { 192.0.2.0/24, 203.0.113.10 } drop"),
        "before the tenant dispatch: {:?}",
        forward.rules
    );
    assert_eq!(forward.rules[1], "iifname vmap @fwd_from");
    let plain = base_part(&node());
    let first = &plain.chains.iter().find(|c| c.name == "forward_hook").expect("hook").rules[0];
    assert!(first.starts_with("iifname vmap @fwd_from"), "none protected: no rule: {first}");
}

#[test]
fn updating_the_changed_parts_gives_what_a_full_render_and_plan_give() {
    let mut other = tenant("other", 2);
    other.gateway.exposures = vec![exposure("e9", 22, 15022, &[], 0, SourceMode::Keep)];
    let before = vec![acme(), other.clone(), tenant("gone", 3), tenant("same", 4)];
    let mut ruleset = render(&node(), &[]);
    let mut inputs = render::Inputs::new();
    update(&node(), &before, &mut ruleset, &mut inputs);
    assert_eq!(ruleset, render(&node(), &before));
    let had = blocked_acme();
    let mut observed = plan::as_applied(&ruleset, &had);
    // One tenant changed, one new, one gone, one taking a port another frees, blocked emptied.
    let mut changed = acme();
    changed.gateway.device_to_device = false;
    changed.gateway.exposures.retain(|x| x.public_port != 15080);
    other.gateway.exposures.push(exposure("e8", 80, 15080, &[], 0, SourceMode::Nat));
    let after = vec![changed, other, tenant("same", 4), tenant("new", 5)];
    let replaced = update(&node(), &after, &mut ruleset, &mut inputs);
    let full = render(&node(), &after);
    assert_eq!(ruleset, full);
    let names: BTreeSet<&str> = replaced.keys().map(String::as_str).collect();
    assert_eq!(names, ["acme", "gone", "new", "other"].into_iter().collect());
    let blocked = BTreeMap::new();
    let mut scope = names.clone();
    scope.insert("acme");
    assert_eq!(plan::plan_only(&full, &observed, &blocked, &scope), plan(&full, &observed, &blocked));
    for name in &scope {
        match replaced.get(*name) {
            Some(previous) => previous.iter().for_each(|p| plan::remove_applied(&mut observed, p)),
            None => full.tenants.get(*name).iter().for_each(|p| plan::remove_applied(&mut observed, p)),
        }
    }
    for part in scope.iter().filter_map(|n| full.tenants.get(*n)) {
        plan::add_applied(&mut observed, part, &blocked);
    }
    assert_eq!(observed, plan::as_applied(&full, &blocked));
    assert!(update(&node(), &after, &mut ruleset, &mut inputs).is_empty(), "nothing new: nothing rendered");
}

#[test]
fn a_port_given_to_another_tenant_loses_the_first_ones_counts_and_sources() {
    let blocked = blocked_acme();
    let before = render(&node(), &[acme(), tenant("beta", 2)]);
    let mut observed = plan::as_applied(&before, &blocked);
    observed
        .sets
        .insert("seen".into(), vec![Element { key: "tcp . 15080 . 203.0.113.7".into(), ..Element::default() }]);
    // Suspended or with the exposure disabled, acme keeps them.
    let mut suspended = acme();
    suspended.lifecycle = Lifecycle::Suspended;
    suspended.gateway.exposures[1].enabled = false;
    let kept = render(&node(), &[suspended, tenant("beta", 2)]);
    assert!(!plan(&kept, &observed, &blocked).iter().any(|s| matches!(s, Step::Forget { .. })));
    // Port 15080 moves from acme to beta: forgotten, whether planned in full or for the two.
    let mut a = acme();
    a.gateway.exposures.remove(1);
    let mut b = tenant("beta", 2);
    b.gateway.exposures = vec![exposure("b1", 22, 15080, &[], 0, SourceMode::Nat)];
    let after = render(&node(), &[a, b]);
    let forget = Step::Forget { ports: vec!["tcp . 15080".into()] };
    assert!(plan(&after, &observed, &blocked).contains(&forget));
    let scope = BTreeSet::from(["acme", "beta"]);
    let steps = plan::plan_only(&after, &observed, &blocked, &scope);
    assert!(steps.contains(&forget), "{steps:?}");
    let s: String = scripts(&steps, &after, &observed).into_iter().map(|(_, s)| s).collect();
    assert!(s.contains("delete element inet berqenas seen { tcp . 15080 . 203.0.113.7 }\n"), "{s}");
    assert!(s.contains("delete element inet berqenas dropped { tcp . 15080 }\n"), "{s}");
    // A full plan also forgets elements of a port no tenant holds (an earlier agent's).
    let mut stray = plan::as_applied(&render(&node(), &[acme()]), &blocked);
    stray.sets.insert("accepted".into(), vec![Element { key: "udp . 15999".into(), ..Element::default() }]);
    let steps = plan(&render(&node(), &[acme()]), &stray, &blocked);
    assert_eq!(steps, [Step::Forget { ports: vec!["udp . 15999".into()] }]);
}

#[test]
fn a_table_of_the_previous_layout_is_upgraded_in_place() {
    // Before: DNAT by a verdict map to a chain per tenant, a chain, two counters per exposure
    // and two source sets per tenant.
    let r = render(&node(), &[acme()]);
    let blocked = blocked_acme();
    let mut o = applied(&r, &blocked);
    o.sets.insert("expose_nat".into(), Vec::new());
    o.maps.insert("expose_nat".into());
    o.chains.insert("acme-dnat".into(), ObservedChain::default());
    o.chains.insert("acme-x-e1".into(), ObservedChain::default());
    o.counters.insert("acme-x-e1-acc".into(), (1, 60));
    o.sets.insert("acme-seen".into(), Vec::new());
    let steps = plan(&r, &o, &blocked);
    assert_eq!(
        steps,
        [
            Step::RepairBase { why: "stale set or map expose_nat".into() },
            Step::Replace { tenant: "acme".into(), why: "stale chain acme-dnat".into() },
        ]
    );
    let s = scripts(&steps, &r, &o);
    let base = &s[0].1;
    let (hook, map) =
        (base.find("delete chain inet berqenas dnat_hook\n"), base.find("delete map inet berqenas expose_nat\n"));
    assert!(hook.is_some() && map.is_some() && hook < map, "the map is deleted once no rule uses it: {base}");
    for gone in [
        "chain inet berqenas acme-dnat",
        "chain inet berqenas acme-x-e1",
        "counter inet berqenas acme-x-e1-acc",
        "set inet berqenas acme-seen",
    ] {
        assert!(s[1].1.contains(&format!("delete {gone}\n")), "{}", s[1].1);
    }
}

#[test]
fn a_suspended_tenant_loses_its_input_elements_even_with_its_dispatch_gone() {
    let blocked = blocked_acme();
    let running = render(&node(), &[acme()]);
    let mut suspended = acme();
    suspended.lifecycle = Lifecycle::Suspended;
    let after = render(&node(), &[suspended]);
    for hand_deleted in [false, true] {
        let mut o = applied(&running, &blocked);
        if hand_deleted {
            // Its `fwd_from` element is what tells whose the input elements are.
            o.dispatch.remove(&("fwd_from".to_string(), "bqt1".to_string()));
        }
        let steps = plan(&after, &o, &blocked);
        assert!(matches!(&steps[0], Step::Replace { tenant, .. } if tenant == "acme"), "{steps:?}");
        let s = &scripts(&steps, &after, &o)[0].1;
        assert!(s.contains("delete element inet berqenas input_ok { \"bqt1\" }\n"), "{s}");
        assert!(s.contains("delete element inet berqenas pings { \"bqt1\" . 198.18.1.1 }\n"), "{s}");
        assert!(!s.contains("add element inet berqenas input_ok"), "{s}");
    }
}
