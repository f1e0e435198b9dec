//! Pure: what the agent's table holds, parsed from `nft -j list table inet berqenas` — chains
//! (rule count, the digest comment of the first rule), sets and maps (their elements), named
//! counters, and the base maps' dispatch elements with the chain each jumps to.

use super::index::{Elements, Ports};
use super::render::maps;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The table exists.
    pub table: bool,
    pub chains: BTreeMap<String, ObservedChain>,
    pub sets: BTreeMap<String, Vec<Element>>,
    /// Which of `sets` are maps.
    pub maps: std::collections::BTreeSet<String>,
    /// Name → (packets, bytes).
    pub counters: BTreeMap<String, (u64, u64)>,
    /// (base map or set, key) → chain jumped to (verdict maps), the data (`expose_dnat`), or
    /// nothing (the base sets `input_ok`, `pings`); indexed by the tenant a jump goes to.
    pub dispatch: Elements,
    /// Public port (`proto . port`) → the tenant whose counts and sources the table's `seen`
    /// sets hold for it: as listed, the tenant whose exposure chain the port dispatches to;
    /// indexed by tenant.
    pub ports: Ports,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedChain {
    pub rules: usize,
    /// The first rule's comment.
    pub comment: Option<String>,
    /// `type/hook/prio/policy` of a base chain.
    pub hook: Option<String>,
}

/// One set element as listed: its key in nft's text form, and for timeouts and counters their
/// current values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub key: String,
    /// Seconds until it expires (sets with timeouts).
    pub expires: Option<u64>,
    pub timeout: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read nft's JSON listing: {0}")]
pub struct ParseError(pub(crate) String);

/// A value of a set key in nft's text form: `tcp`, `15080`, `198.18.1.0/24`, `a . b`.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(c) = o.get("concat").and_then(Value::as_array) {
                return c.iter().map(value_text).collect::<Vec<_>>().join(" . ");
            }
            if let Some(p) = o.get("prefix") {
                return format!("{}/{}", value_text(&p["addr"]), value_text(&p["len"]));
            }
            if let Some(r) = o.get("range").and_then(Value::as_array) {
                return r.iter().map(value_text).collect::<Vec<_>>().join("-");
            }
            if let Some(e) = o.get("elem") {
                return value_text(&e["val"]);
            }
            v.to_string()
        }
        other => other.to_string(),
    }
}

/// The chain a verdict jumps (or goes) to.
fn verdict_chain(v: &Value) -> Option<String> {
    ["jump", "goto"].iter().find_map(|k| v.get(k)?.get("target")?.as_str().map(str::to_string))
}

fn element(v: &Value) -> Element {
    match v.get("elem") {
        Some(e) => Element {
            key: value_text(&e["val"]),
            expires: e.get("expires").and_then(Value::as_u64),
            timeout: e.get("timeout").and_then(Value::as_u64),
            packets: e.pointer("/counter/packets").and_then(Value::as_u64).unwrap_or(0),
            bytes: e.pointer("/counter/bytes").and_then(Value::as_u64).unwrap_or(0),
        },
        None => Element { key: value_text(v), ..Element::default() },
    }
}

/// Parses the listing of the agent's table (`table` is the table's name; objects of other
/// tables in the listing are ignored). The listing's items are read one at a time, never as one
/// tree: at a thousand tenants the tree took ten times the listing's size.
pub fn parse(json: &str, table: &str) -> Result<Observed, ParseError> {
    let mut listing = Listing { table, observed: Observed::default(), found: false };
    let mut de = serde_json::Deserializer::from_str(json);
    serde::de::DeserializeSeed::deserialize(&mut listing, &mut de).map_err(|e| ParseError(e.to_string()))?;
    de.end().map_err(|e| ParseError(e.to_string()))?;
    if !listing.found {
        return Err(ParseError("no \"nftables\" array".into()));
    }
    let mut o = listing.observed;
    o.ports = o
        .dispatch
        .iter()
        .filter(|((map, _), _)| map == maps::EXPOSE_FILTER)
        .filter_map(|((_, key), chain)| Some((key.clone(), super::render::owner_of(chain)?.to_string())))
        .collect();
    Ok(o)
}

/// The listing being read: the top object, whose `nftables` array is folded item by item.
struct Listing<'t> {
    table: &'t str,
    observed: Observed,
    found: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for &mut Listing<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &mut Listing<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("nft's JSON listing")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "nftables" {
                self.found = true;
                map.next_value_seed(Items(&mut *self))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `nftables` array.
struct Items<'a, 't>(&'a mut Listing<'t>);

impl<'de> serde::de::DeserializeSeed<'de> for Items<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Items<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of nft objects")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Value>()? {
            fold(&mut self.0.observed, &item, self.0.table);
        }
        Ok(())
    }
}

/// Adds one listed object to `o` when it belongs to `table`.
fn fold(o: &mut Observed, item: &Value, table: &str) {
    let ours = |v: &Value| v.get("table").and_then(Value::as_str) == Some(table) && v["family"] == "inet";
    if let Some(t) = item.get("table") {
        o.table |= t.get("name").and_then(Value::as_str) == Some(table) && t["family"] == "inet";
    } else if let Some(c) = item.get("chain").filter(|c| ours(c)) {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        let hook = c.get("hook").map(|h| {
            format!(
                "{} {} {} {}",
                c["type"].as_str().unwrap_or(""),
                h.as_str().unwrap_or(""),
                c["prio"],
                c["policy"].as_str().unwrap_or("")
            )
        });
        o.chains.entry(name).or_default().hook = hook;
    } else if let Some(r) = item.get("rule").filter(|r| ours(r)) {
        let chain = o.chains.entry(r["chain"].as_str().unwrap_or_default().to_string()).or_default();
        if chain.rules == 0 {
            chain.comment = r.get("comment").and_then(Value::as_str).map(str::to_string);
        }
        chain.rules += 1;
    } else if let Some(s) = item.get("set").or_else(|| item.get("map")).filter(|s| ours(s)) {
        let name = s["name"].as_str().unwrap_or_default().to_string();
        let elements = s.get("elem").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let mut listed = Vec::with_capacity(elements.len());
        for e in elements {
            match (item.get("map").is_some(), e.as_array()) {
                (true, Some(pair)) if pair.len() == 2 => {
                    let key = value_text(&pair[0]);
                    if maps::ALL.contains(&name.as_str()) {
                        let value = match maps::is_verdict(&name) {
                            true => verdict_chain(&pair[1]),
                            false => Some(value_text(&pair[1])),
                        };
                        if let Some(value) = value {
                            o.dispatch.insert((name.clone(), key.clone()), value);
                        }
                    }
                    listed.push(Element { key: format!("{key} : {}", value_text(&pair[1])), ..Element::default() });
                }
                _ => {
                    let element = element(e);
                    if maps::is_set(&name) {
                        o.dispatch.insert((name.clone(), element.key.clone()), String::new());
                    }
                    listed.push(element)
                }
            }
        }
        if item.get("map").is_some() {
            o.maps.insert(name.clone());
        }
        o.sets.insert(name, listed);
    } else if let Some(c) = item.get("counter").filter(|c| ours(c)) {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        o.counters.insert(name, (c["packets"].as_u64().unwrap_or(0), c["bytes"].as_u64().unwrap_or(0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_becomes_chains_sets_counters_and_dispatch() {
        let json = r#"{"nftables": [
          {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
          {"table": {"family": "inet", "name": "berqenas", "handle": 1}},
          {"table": {"family": "ip", "name": "filter", "handle": 2}},
          {"counter": {"family": "inet", "name": "acme-x-e1-acc", "table": "berqenas", "handle": 3, "packets": 7, "bytes": 420}},
          {"map": {"family": "inet", "name": "fwd_from", "table": "berqenas", "type": "ifname", "handle": 4, "map": "verdict",
                   "elem": [["bqt1", {"jump": {"target": "acme-out"}}]]}},
          {"map": {"family": "inet", "name": "expose_filter", "table": "berqenas", "type": ["inet_proto", "inet_service"], "handle": 7,
                   "map": "verdict", "elem": [[{"concat": ["tcp", 15080]}, {"jump": {"target": "acme-x"}}]]}},
          {"map": {"family": "inet", "name": "expose_dnat", "table": "berqenas", "type": ["inet_proto", "inet_service"], "handle": 8,
                   "map": ["ipv4_addr", "inet_service"], "elem": [[{"concat": ["tcp", 15080]}, {"concat": ["198.18.1.10", 80]}]]}},
          {"set": {"family": "inet", "name": "acme-x-e1-allow", "table": "berqenas", "type": "ipv4_addr", "handle": 9,
                   "flags": ["interval"], "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, "203.0.113.7"]}},
          {"set": {"family": "inet", "name": "acme-x-e1-seen", "table": "berqenas", "type": "ipv4_addr", "handle": 10,
                   "elem": [{"elem": {"val": "203.0.113.7", "timeout": 604800, "expires": 604790,
                              "counter": {"packets": 5, "bytes": 300}}}]}},
          {"chain": {"family": "inet", "table": "berqenas", "name": "forward", "handle": 11, "type": "filter",
                     "hook": "forward", "prio": 0, "policy": "accept"}},
          {"chain": {"family": "inet", "table": "berqenas", "name": "acme-out", "handle": 12}},
          {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1}},
          {"rule": {"family": "inet", "table": "berqenas", "chain": "acme-out", "handle": 13, "comment": "berqenas 00ff", "expr": []}},
          {"rule": {"family": "inet", "table": "berqenas", "chain": "acme-out", "handle": 14, "expr": []}}
        ]}"#;
        let o = parse(json, "berqenas").expect("parses");
        assert!(o.table);
        assert_eq!(o.counters["acme-x-e1-acc"], (7, 420));
        assert_eq!(o.dispatch[&("fwd_from".to_string(), "bqt1".to_string())], "acme-out");
        assert_eq!(o.dispatch[&("expose_filter".to_string(), "tcp . 15080".to_string())], "acme-x");
        assert_eq!(o.dispatch[&("expose_dnat".to_string(), "tcp . 15080".to_string())], "198.18.1.10 . 80");
        assert_eq!(o.ports["tcp . 15080"], "acme", "the port is the tenant's its filter chain is");
        let allow: Vec<&str> = o.sets["acme-x-e1-allow"].iter().map(|e| e.key.as_str()).collect();
        assert_eq!(allow, ["10.0.0.0/8", "203.0.113.7"]);
        let seen = &o.sets["acme-x-e1-seen"][0];
        assert_eq!((seen.key.as_str(), seen.expires, seen.packets, seen.bytes), ("203.0.113.7", Some(604_790), 5, 300));
        let out = &o.chains["acme-out"];
        assert_eq!((out.rules, out.comment.as_deref(), out.hook.is_none()), (2, Some("berqenas 00ff"), true));
        assert_eq!(o.chains["forward"].hook.as_deref(), Some("filter forward 0 accept"));
        assert!(!o.chains.contains_key("FORWARD"), "other tables are not ours");
        assert!(parse("{}", "berqenas").is_err());
    }
}
