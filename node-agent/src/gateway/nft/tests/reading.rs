//! Status parsing: exposure counters and sources from the listed table, and foreign drop
//! chains on the forward hook reported as node conditions.

use super::*;

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
