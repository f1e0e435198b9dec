//! Unit tests of the pure nft core, by concern: the rendered ruleset for a fixed desired state
//! (exact text; here, with the fixtures the others share), the plan against observations
//! (`plans.rs`), and status parsing (`reading.rs`).
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

mod changes;
mod plans;
mod reading;
