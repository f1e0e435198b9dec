//! Changes between resyncs: `update` (conflicts decided again only around the changed tenants,
//! only their parts rendered) and `plan_only` (only their objects looked up, by index) give
//! exactly what a full `render` and `plan` give, over many random changes with interface and
//! port conflicts; and one tenant's change among a thousand decides for that tenant alone.

use super::*;
use crate::gateway::nft::claims::Outcome;

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A tenant from a small pool of names and interfaces (so they collide), with a random
/// lifecycle and exposures: on public ports of a small pool when `shared` (so they collide too),
/// else on ports of its own (as the coordinator gives them out, see `random_changes`).
fn random_tenant(rng: &mut Rng, name: &str, shared: bool) -> GatewayTenant {
    let mut t = tenant(name, 1 + rng.below(6) as u8);
    t.lifecycle = match rng.below(10) {
        0 => Lifecycle::Deleted,
        1 | 2 => Lifecycle::Suspended,
        _ => Lifecycle::Run,
    };
    t.gateway.device_to_device = rng.chance(50);
    for i in 0..rng.below(4) {
        // 15000-15004 (or the tenant's own four) inside the node's range, 16000 outside it.
        let own = 15100 + 4 * NAMES.iter().position(|n| *n == name).unwrap_or_default() as u16;
        let first = if shared { 15000 } else { own };
        let public = if rng.chance(10) { 16000 } else { first + rng.below(if shared { 5 } else { 4 }) as u16 };
        let mut x = exposure(&format!("e{i}"), 80 + i as u16, public, &[], 0, SourceMode::Nat);
        x.protocol = [Protocol::Tcp, Protocol::Udp, Protocol::Any][rng.below(3) as usize];
        x.enabled = rng.chance(80);
        if rng.chance(30) {
            x.source = SourceMode::Keep;
        }
        t.gateway.exposures.push(x);
    }
    t
}

const NAMES: [&str; 10] = ["acme", "beta", "corp", "delta", "echo", "fox", "golf", "hotel", "india", "juliet"];

#[test]
fn random_changes_update_and_plan_exactly_as_a_full_render_and_plan() {
    random_changes(Rng(0x9e37_79b9_7f4a_7c15), false);
}

#[test]
fn random_changes_with_public_ports_wanted_by_several_tenants_update_as_a_full_render() {
    random_changes(Rng(0x2545_f491_4f6c_dd1d), true);
}

/// 600 rounds of random changes; with `shared` ports also the parts of several tenants hold one
/// port, which the coordinator never hands out: then only `update` is compared (a scoped plan
/// leaves a port's DNAT element to the first tenant by name holding the port, as before).
fn random_changes(mut rng: Rng, shared: bool) {
    let node = node();
    let blocked = BTreeMap::new();
    let mut desired: Vec<GatewayTenant> = NAMES[..6].iter().map(|n| random_tenant(&mut rng, n, shared)).collect();
    let mut ruleset = Ruleset::new(base_part(&node));
    let mut inputs = render::Inputs::new();
    update(&node, &desired, &mut ruleset, &mut inputs);
    assert_eq!(ruleset, render(&node, &desired));
    for round in 0..600 {
        let before = ruleset.clone();
        // One to three tenants changed, added or removed; now and then a name given twice.
        for _ in 0..1 + rng.below(3) {
            let name = NAMES[rng.below(NAMES.len() as u64) as usize];
            let at = desired.iter().position(|t| t.name == name);
            match (at, rng.below(10)) {
                (Some(i), 0 | 1) => {
                    desired.remove(i);
                }
                (Some(i), 2) => {
                    let t = &mut desired[i].gateway;
                    t.device_to_device = !t.device_to_device;
                }
                (Some(i), 3) => {
                    let x = desired[i].gateway.exposures.first_mut();
                    x.into_iter().for_each(|x| x.enabled = !x.enabled);
                }
                (_, 4) if rng.chance(20) => desired.push(random_tenant(&mut rng, name, shared)),
                (_, 5) => {
                    // A name given twice lasts a round or two.
                    let mut seen = BTreeSet::new();
                    desired.retain(|t| seen.insert(t.name.clone()));
                }
                (Some(i), _) => desired[i] = random_tenant(&mut rng, name, shared),
                (None, _) => {
                    desired.insert(rng.below(desired.len() as u64 + 1) as usize, random_tenant(&mut rng, name, shared))
                }
            }
        }
        let replaced = update(&node, &desired, &mut ruleset, &mut inputs);
        let full = render(&node, &desired);
        assert_eq!(ruleset, full, "round {round}: {desired:#?}");
        // Every part that differs is reported with what it was; nothing else is.
        let names: BTreeSet<&String> = before.tenants.keys().chain(full.tenants.keys()).collect();
        for name in names {
            let (was, now) = (before.tenants.get(name), full.tenants.get(name));
            match replaced.get(name) {
                Some(previous) => assert_eq!(previous.as_ref(), was, "round {round}: {name}'s previous part"),
                None => assert_eq!(was, now, "round {round}: {name} changed but was not reported"),
            }
        }
        // The changed tenants' plan is the whole plan, against the table as listed or as applied.
        let scope: BTreeSet<&str> = replaced.keys().map(String::as_str).collect();
        if shared {
            continue;
        }
        for observed in [applied(&before, &blocked), plan::as_applied(&before, &blocked)] {
            let whole = plan(&full, &observed, &blocked);
            assert_eq!(plan::plan_only(&full, &observed, &blocked, &scope), whole, "round {round}");
            let scoped = scripts(&whole, &full, &observed);
            assert!(scoped.iter().all(|(_, s)| !s.is_empty()), "round {round}: {scoped:?}");
        }
    }
}

#[test]
fn one_change_among_a_thousand_tenants_decides_for_that_tenant_alone() {
    let node = node();
    let mut desired: Vec<GatewayTenant> = (0..1000u32)
        .map(|i| {
            let mut t = tenant(&format!("t{i}"), 1);
            t.gateway.interface = format!("bqt{i}");
            let port = 15000 + (i % 1000) as u16;
            t.gateway.exposures = vec![exposure("e1", 80, port, &[], 0, SourceMode::Nat)];
            t
        })
        .collect();
    let mut inputs = render::Inputs::new();
    let all = inputs.decide(node.public_ports, &desired);
    assert_eq!(all.len(), 1000, "the first decision is for all");
    assert!(inputs.decide(node.public_ports, &desired).is_empty(), "nothing changed, nothing decided");
    desired[500].gateway.device_to_device = true;
    let one = inputs.decide(node.public_ports, &desired);
    assert_eq!(one, BTreeMap::from([("t500".to_string(), Outcome::Served { rerender: true })]));
    // t7 asks for t600's port: both decided again (t600 keeps it: t600 < t7 by name).
    desired[7].gateway.exposures[0].public_port = 15600;
    let two = inputs.decide(node.public_ports, &desired);
    let names: Vec<&str> = two.keys().map(String::as_str).collect();
    assert_eq!(names, ["t600", "t7"]);
    assert_eq!(two["t600"], Outcome::Served { rerender: false }, "its part is as it was");
    assert_eq!(
        inputs.refused(),
        [("t7".to_string(), "exposure e1: public port 15600 taken by tenant t600".to_string())]
    );
}
