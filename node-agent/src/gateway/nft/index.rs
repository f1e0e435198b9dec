//! Pure: maps of the agent's table that keep an index by owner (tenant) beside their entries,
//! so that one tenant's objects are found by a lookup, not by scanning every tenant's: the base
//! maps' dispatch elements (`Elements`), the public ports' recorded owners (`Ports`), and the
//! rendered parts with the tenants holding each public port (`Parts`). Reads go through `Deref`
//! to the entries; every write goes through `insert`/`remove`, which keep the index true.

use super::render::{maps, owner_of, Part};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

/// A base map or set's element: (map or set name, key as nft lists it).
pub type ElementKey = (String, String);

/// The base maps' and sets' elements (key → chain jumped to, data, or nothing), indexed by the
/// owner of the chain a verdict map's element jumps to (`<tenant>-…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements {
    entries: BTreeMap<ElementKey, String>,
    by_owner: BTreeMap<String, BTreeSet<ElementKey>>,
}

/// The tenant an element is indexed under: the owner of the chain a verdict map's element jumps
/// to (the other maps' and sets' elements are found through those, see `plan`).
fn jump_owner<'a>((map, _): &ElementKey, value: &'a str) -> Option<&'a str> {
    maps::is_verdict(map).then(|| owner_of(value)).flatten()
}

impl Elements {
    pub fn insert(&mut self, key: ElementKey, value: String) -> Option<String> {
        if let Some(owner) = jump_owner(&key, &value) {
            self.by_owner.entry(owner.to_string()).or_default().insert(key.clone());
        }
        let was =
            self.entries.get(&key).and_then(|p| jump_owner(&key, p)).filter(|w| Some(*w) != jump_owner(&key, &value));
        if let Some(was) = was.map(str::to_string) {
            remove_indexed(&mut self.by_owner, was.as_str(), &key);
        }
        self.entries.insert(key, value)
    }

    pub fn remove(&mut self, key: &ElementKey) -> Option<String> {
        let previous = self.entries.remove(key)?;
        if let Some(owner) = jump_owner(key, &previous) {
            remove_indexed(&mut self.by_owner, owner, key);
        }
        Some(previous)
    }

    /// The verdict maps' elements jumping to `tenant`'s chains, in key order.
    pub fn jumping_to<'a>(&'a self, tenant: &str) -> impl Iterator<Item = &'a ElementKey> + 'a {
        self.by_owner.get(tenant).into_iter().flatten()
    }

    /// The tenants some verdict map's element jumps to.
    pub fn owners(&self) -> impl Iterator<Item = &str> {
        self.by_owner.keys().map(String::as_str)
    }
}

impl Deref for Elements {
    type Target = BTreeMap<ElementKey, String>;
    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl FromIterator<(ElementKey, String)> for Elements {
    fn from_iter<I: IntoIterator<Item = (ElementKey, String)>>(iter: I) -> Self {
        let mut d = Elements::default();
        for (k, v) in iter {
            d.insert(k, v);
        }
        d
    }
}

/// Public port (`proto . port`) → the tenant the table's counts and sources seen of it belong
/// to, indexed by that tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ports {
    entries: BTreeMap<String, String>,
    by_owner: BTreeMap<String, BTreeSet<String>>,
}

impl Ports {
    pub fn insert(&mut self, port: String, owner: String) -> Option<String> {
        self.by_owner.entry(owner.clone()).or_default().insert(port.clone());
        let previous = self.entries.insert(port.clone(), owner.clone());
        if let Some(p) = previous.as_ref().filter(|p| **p != owner) {
            remove_indexed(&mut self.by_owner, p, &port);
        }
        previous
    }

    pub fn remove(&mut self, port: &str) -> Option<String> {
        let previous = self.entries.remove(port)?;
        remove_indexed(&mut self.by_owner, &previous, port);
        Some(previous)
    }

    /// The ports recorded as `tenant`'s, in order.
    pub fn of<'a>(&'a self, tenant: &str) -> impl Iterator<Item = &'a String> + 'a {
        self.by_owner.get(tenant).into_iter().flatten()
    }

    /// The tenants some port is recorded as.
    pub fn owners(&self) -> impl Iterator<Item = &str> {
        self.by_owner.keys().map(String::as_str)
    }
}

impl Deref for Ports {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl FromIterator<(String, String)> for Ports {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut p = Ports::default();
        for (k, v) in iter {
            p.insert(k, v);
        }
        p
    }
}

/// The tenants' rendered parts by tenant name, with the tenants whose part holds each public
/// port (`Part::ports`), so the holder of a port is a lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parts {
    entries: BTreeMap<String, Part>,
    holders: BTreeMap<String, BTreeSet<String>>,
}

impl Parts {
    pub fn insert(&mut self, tenant: String, part: Part) -> Option<Part> {
        let previous = self.remove(&tenant);
        for port in &part.ports {
            self.holders.entry(port.clone()).or_default().insert(tenant.clone());
        }
        self.entries.insert(tenant, part);
        previous
    }

    pub fn remove(&mut self, tenant: &str) -> Option<Part> {
        let previous = self.entries.remove(tenant)?;
        for port in &previous.ports {
            remove_indexed(&mut self.holders, port, tenant);
        }
        Some(previous)
    }

    /// The first tenant by name whose part holds `port` (the one `render` gives it to).
    pub fn holder(&self, port: &str) -> Option<&str> {
        self.holders.get(port).and_then(|h| h.first()).map(String::as_str)
    }
}

impl Deref for Parts {
    type Target = BTreeMap<String, Part>;
    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

/// Takes `item` out of `index[key]`, and the entry when it is left empty.
fn remove_indexed<K, Q, T, R>(index: &mut BTreeMap<K, BTreeSet<T>>, key: &Q, item: &R)
where
    K: Ord + Borrow<Q>,
    Q: Ord + ?Sized,
    T: Ord + Borrow<R>,
    R: Ord + ?Sized,
{
    if let Some(set) = index.get_mut(key) {
        set.remove(item);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(map: &str, key: &str) -> ElementKey {
        (map.to_string(), key.to_string())
    }

    /// The same entries inserted afresh: the index as it must be.
    fn rebuilt(d: &Elements) -> Elements {
        d.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[test]
    fn elements_are_found_by_the_tenant_they_jump_to_after_any_change() {
        let mut d = Elements::default();
        d.insert(key(maps::FROM_TENANT, "bqt1"), "acme-out".into());
        d.insert(key(maps::EXPOSE_FILTER, "tcp . 15080"), "acme-x".into());
        d.insert(key(maps::EXPOSE_DNAT, "tcp . 15080"), "198.18.1.10 . 80".into());
        d.insert(key(maps::INPUT_OK, "bqt1"), String::new());
        let acme: Vec<&ElementKey> = d.jumping_to("acme").collect();
        assert_eq!(acme, [&key(maps::EXPOSE_FILTER, "tcp . 15080"), &key(maps::FROM_TENANT, "bqt1")]);
        // An element given to another tenant moves in the index; a removed one leaves it.
        d.insert(key(maps::FROM_TENANT, "bqt1"), "beta-out".into());
        assert_eq!(d.jumping_to("beta").collect::<Vec<_>>(), [&key(maps::FROM_TENANT, "bqt1")]);
        d.remove(&key(maps::EXPOSE_FILTER, "tcp . 15080"));
        assert_eq!(d.jumping_to("acme").count(), 0);
        assert_eq!(d.owners().collect::<Vec<_>>(), ["beta"], "no tenant left without elements");
        assert_eq!(d, rebuilt(&d));
        assert_eq!(d.remove(&key(maps::FROM_TENANT, "bqt9")), None);
    }

    #[test]
    fn ports_and_parts_are_found_by_tenant_after_any_change() {
        let mut p = Ports::default();
        p.insert("tcp . 15080".into(), "acme".into());
        p.insert("tcp . 15081".into(), "acme".into());
        p.insert("tcp . 15080".into(), "beta".into());
        assert_eq!(p.of("acme").collect::<Vec<_>>(), ["tcp . 15081"]);
        assert_eq!(p.of("beta").collect::<Vec<_>>(), ["tcp . 15080"]);
        p.remove("tcp . 15081");
        assert_eq!(p.owners().collect::<Vec<_>>(), ["beta"]);
        assert_eq!(p, p.iter().map(|(k, v)| (k.clone(), v.clone())).collect());

        let part = |owner: &str, ports: &[&str]| Part {
            owner: Some(owner.into()),
            chains: Vec::new(),
            sets: Vec::new(),
            ports: ports.iter().map(|p| p.to_string()).collect(),
            dispatch: Vec::new(),
            digest: String::new(),
            blocked_set: None,
        };
        let mut parts = Parts::default();
        parts.insert("beta".into(), part("beta", &["tcp . 15080"]));
        parts.insert("acme".into(), part("acme", &["tcp . 15080", "udp . 53"]));
        assert_eq!(parts.holder("tcp . 15080"), Some("acme"), "the first by name");
        parts.insert("acme".into(), part("acme", &["udp . 53"]));
        assert_eq!(parts.holder("tcp . 15080"), Some("beta"));
        parts.remove("beta");
        assert_eq!(parts.holder("tcp . 15080"), None);
        assert_eq!(parts.holder("udp . 53"), Some("acme"));
    }
}
