//! The audit chain: every entry carries the SHA-256 of its predecessor, so editing, removing or
//! reordering a stored entry breaks the chain at that entry, and `verify` names it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub time_ms: u64,
    /// The API key id that acted, or `anonymous` / `system`.
    pub actor: String,
    pub source: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    /// Facts about the change; never secrets.
    pub details: BTreeMap<String, String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The fields an entry is made of before it is chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub time_ms: u64,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub details: BTreeMap<String, String>,
}

/// The hashed form: every field but `hash`, in a fixed order (serde keeps struct order and
/// `BTreeMap` sorts the details), so the bytes are the same on every node.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    time_ms: u64,
    actor: &'a str,
    source: &'a str,
    action: &'a str,
    target: &'a str,
    outcome: Outcome,
    details: &'a BTreeMap<String, String>,
    prev_hash: &'a str,
}

pub fn compute_hash(entry: &AuditEntry) -> String {
    let hashed = Hashed {
        seq: entry.seq,
        time_ms: entry.time_ms,
        actor: &entry.actor,
        source: &entry.source,
        action: &entry.action,
        target: &entry.target,
        outcome: entry.outcome,
        details: &entry.details,
        prev_hash: &entry.prev_hash,
    };
    // Serializing plain strings, integers and a string map cannot fail.
    let bytes = serde_json::to_vec(&hashed).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// One page of the trail, oldest first, with the cursors to continue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub entries: Vec<AuditEntry>,
    /// Older matching entries remain: ask again with `before = older`.
    pub older: Option<u64>,
    /// Newer matching entries remain: ask again with `after = newer`.
    pub newer: Option<u64>,
}

/// The entries with `after < seq < before` that `keep` accepts, at most `limit` of them: the
/// newest ones (reading back from `before` or the end), or with `after` the oldest ones after
/// it. The page says whether more remain in the direction it was read.
pub fn page(
    entries: &[AuditEntry],
    keep: impl Fn(&AuditEntry) -> bool,
    after: Option<u64>,
    before: Option<u64>,
    limit: usize,
) -> Page {
    let lo = after.map_or(0, |a| entries.partition_point(|e| e.seq <= a));
    let hi = before.map_or(entries.len(), |b| entries.partition_point(|e| e.seq < b)).max(lo);
    let range = entries[lo..hi].iter().cloned().map(Ok::<_, std::convert::Infallible>);
    match page_of(range, keep, after.is_some(), limit) {
        Ok(page) => page,
        Err(never) => match never {},
    }
}

/// `page` over a stored range (`after < seq < before`, oldest first, read lazily from either
/// end): `oldest_first` for a page read forward from `after`.
pub fn page_of<E>(
    range: impl DoubleEndedIterator<Item = Result<AuditEntry, E>>,
    keep: impl Fn(&AuditEntry) -> bool,
    oldest_first: bool,
    limit: usize,
) -> Result<Page, E> {
    let take = |entries: &mut dyn Iterator<Item = Result<AuditEntry, E>>| -> Result<(Vec<AuditEntry>, bool), E> {
        let mut taken = Vec::new();
        for entry in entries {
            let entry = entry?;
            if !keep(&entry) {
                continue;
            }
            if taken.len() == limit {
                return Ok((taken, true));
            }
            taken.push(entry);
        }
        Ok((taken, false))
    };
    let mut page = Page::default();
    if oldest_first {
        let (entries, more) = take(&mut range.into_iter())?;
        page.entries = entries;
        if more {
            page.newer = page.entries.last().map(|e| e.seq);
        }
    } else {
        let (mut entries, more) = take(&mut range.rev())?;
        entries.reverse();
        page.entries = entries;
        if more {
            page.older = page.entries.first().map(|e| e.seq);
        }
    }
    Ok(page)
}

/// The end of the chain: the last entry's sequence number and hash (0 and `GENESIS_HASH` before
/// the first entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Self { seq: 0, hash: GENESIS_HASH.to_string() }
    }
}

impl AuditEntry {
    pub fn head(&self) -> Head {
        Head { seq: self.seq, hash: self.hash.clone() }
    }
}

/// The audit trail as the state machine holds it: only the chain's head, plus the entries
/// chained since the store last took them (`take_fresh`, after every applied batch). The trail
/// itself lives in the store; its memory does not grow with history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trail {
    head: Head,
    #[serde(skip)]
    fresh: Vec<AuditEntry>,
}

impl Trail {
    /// A trail whose last stored entry is `head`.
    pub fn from_head(head: Head) -> Self {
        Self { head, fresh: Vec::new() }
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Chains `draft` after the head and keeps it until the store takes it.
    pub fn append(&mut self, draft: Draft) -> &AuditEntry {
        let entry = chain(&self.head, draft);
        self.head = entry.head();
        self.fresh.push(entry);
        &self.fresh[self.fresh.len() - 1]
    }

    /// The entries chained since the last call, oldest first.
    pub fn take_fresh(&mut self) -> Vec<AuditEntry> {
        std::mem::take(&mut self.fresh)
    }

    /// How many entries the trail has (stored and fresh).
    pub fn len(&self) -> u64 {
        self.head.seq
    }

    pub fn is_empty(&self) -> bool {
        self.head.seq == 0
    }

    /// The newest entry not yet taken by the store.
    pub fn last(&self) -> Option<&AuditEntry> {
        self.fresh.last()
    }
}

/// The entries not yet taken by the store (in a unit test, the whole trail).
impl<'a> IntoIterator for &'a Trail {
    type Item = &'a AuditEntry;
    type IntoIter = std::slice::Iter<'a, AuditEntry>;
    fn into_iter(self) -> Self::IntoIter {
        self.fresh.iter()
    }
}

/// Appends `draft` after `head`.
pub fn chain(head: &Head, draft: Draft) -> AuditEntry {
    let (seq, prev_hash) = (head.seq + 1, head.hash.clone());
    let mut entry = AuditEntry {
        seq,
        time_ms: draft.time_ms,
        actor: draft.actor,
        source: draft.source,
        action: draft.action,
        target: draft.target,
        outcome: draft.outcome,
        details: draft.details,
        prev_hash,
        hash: String::new(),
    };
    entry.hash = compute_hash(&entry);
    entry
}

/// The first entry at which the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Break {
    pub seq: u64,
    pub reason: String,
}

/// Walks the chain from the first entry. `Ok(n)` is the number of entries verified.
pub fn verify<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> Result<u64, Break> {
    match verify_stream(entries.into_iter().map(Ok::<_, std::convert::Infallible>)) {
        Ok(verdict) => verdict,
        Err(never) => match never {},
    }
}

/// `verify` over entries read one at a time (from the store), holding one entry at a time.
pub fn verify_stream<E, T: std::borrow::Borrow<AuditEntry>>(
    entries: impl IntoIterator<Item = Result<T, E>>,
) -> Result<Result<u64, Break>, E> {
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS_HASH.to_string();
    for entry in entries {
        let entry = entry?;
        let entry = entry.borrow();
        if entry.seq != expected_seq {
            return Ok(Err(Break {
                seq: expected_seq,
                reason: format!("entry {expected_seq} is missing (found {} in its place)", entry.seq),
            }));
        }
        if entry.prev_hash != prev_hash {
            return Ok(Err(Break { seq: entry.seq, reason: "prev_hash does not match the previous entry".into() }));
        }
        if compute_hash(entry) != entry.hash {
            return Ok(Err(Break {
                seq: entry.seq,
                reason: "content does not match its hash (entry was altered)".into(),
            }));
        }
        prev_hash.clone_from(&entry.hash);
        expected_seq += 1;
    }
    Ok(Ok(expected_seq - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(action: &str) -> Draft {
        Draft {
            time_ms: 1_700_000_000_000,
            actor: "k_admin".into(),
            source: "127.0.0.1".into(),
            action: action.into(),
            target: "tenant/acme".into(),
            outcome: Outcome::Ok,
            details: [("db_quota".to_string(), "5GB".to_string())].into(),
        }
    }

    fn sample_chain(n: usize) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let head = out.last().map(AuditEntry::head).unwrap_or_default();
            let e = chain(&head, draft(&format!("action{i}")));
            out.push(e);
        }
        out
    }

    #[test]
    fn hash_is_deterministic_and_known() {
        let a = chain(&Head::default(), draft("tenant.create"));
        let b = chain(&Head::default(), draft("tenant.create"));
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.seq, 1);
        assert_eq!(a.prev_hash, GENESIS_HASH);
        assert_eq!(a.hash.len(), 64);
        let other = chain(&Head::default(), Draft { outcome: Outcome::Rejected, ..draft("tenant.create") });
        assert_ne!(a.hash, other.hash);
    }

    #[test]
    fn intact_chain_verifies() {
        let entries = sample_chain(5);
        assert_eq!(verify(&entries), Ok(5));
        assert_eq!(entries[3].prev_hash, entries[2].hash);
    }

    #[test]
    fn altered_entry_is_named() {
        let mut entries = sample_chain(5);
        entries[2].target = "tenant/evil".into();
        assert_eq!(verify(&entries).map_err(|b| b.seq), Err(3));
    }

    #[test]
    fn rehashed_alteration_breaks_the_next_link() {
        let mut entries = sample_chain(5);
        entries[2].details.insert("db_quota".into(), "1TB".into());
        entries[2].hash = compute_hash(&entries[2]);
        assert_eq!(verify(&entries).map_err(|b| b.seq), Err(4));
    }

    #[test]
    fn removed_entry_is_named() {
        let mut entries = sample_chain(5);
        entries.remove(1);
        let err = verify(&entries).expect_err("gap");
        assert_eq!(err.seq, 2);
        assert!(err.reason.contains("missing"));
    }

    #[test]
    fn pages_walk_the_whole_trail_both_ways_without_gaps() {
        let all = sample_chain(25);
        let seqs = |p: &Page| p.entries.iter().map(|e| e.seq).collect::<Vec<_>>();
        // Backwards from the newest.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let p = page(&all, |_| true, None, before, 10);
            seen.splice(0..0, seqs(&p));
            match p.older {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        assert_eq!(seen, (1..=25).collect::<Vec<_>>());
        // Forwards from the start.
        let mut seen = Vec::new();
        let mut after = Some(0);
        while let Some(a) = after {
            let p = page(&all, |_| true, Some(a), None, 10);
            seen.extend(seqs(&p));
            after = p.newer;
        }
        assert_eq!(seen, (1..=25).collect::<Vec<_>>());
        // A filter and a window.
        let odd = page(&all, |e| e.seq % 2 == 1, Some(4), Some(12), 100);
        assert_eq!((seqs(&odd), odd.older, odd.newer), (vec![5, 7, 9, 11], None, None));
        let last = page(&all, |_| true, None, None, 3);
        assert_eq!((seqs(&last), last.older), (vec![23, 24, 25], Some(23)));
    }
}
