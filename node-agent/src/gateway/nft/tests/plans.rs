//! The plan against observations: converged → empty, one tenant changed → only it (replaced,
//! or refilled when only its rules changed), gone tenants removed, hand deletions repaired,
//! earlier layouts upgraded in place.

use super::*;

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
