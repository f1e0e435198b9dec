//! Decoded `pgoutput` messages → committed rows of the tenant's `events` table, each row's
//! subscriber JSON built once. No IO.

use super::super::pgoutput::{self, Message};
use super::window::{Committed, Cursor};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// Largest payload a row keeps in the window (devices may send at most 64 KiB).
pub const MAX_ROW_PAYLOAD: usize = 256 * 1024;

/// Turns decoded messages into committed rows of `schema.events`; keeps relation ids across
/// calls.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: BTreeMap<u32, Vec<String>>,
    /// The open transaction: its commit LSN and its rows so far (their `end_lsn` set at commit).
    pub(super) txn: Option<(u64, Vec<Committed>)>,
    /// Device ids and event types seen lately, shared by the rows that carry them.
    names: HashSet<Arc<str>>,
}

/// Most names `Decoder::names` holds before it starts over.
const MAX_NAMES: usize = 4_096;

/// The shared copy of `s`.
fn intern(names: &mut HashSet<Arc<str>>, s: Option<&str>) -> Option<Arc<str>> {
    let s = s?;
    if let Some(n) = names.get(s) {
        return Some(n.clone());
    }
    if names.len() >= MAX_NAMES {
        names.clear();
    }
    let n: Arc<str> = Arc::from(s);
    names.insert(n.clone());
    Some(n)
}

fn json_str(s: Option<&str>) -> String {
    match s {
        Some(s) => serde_json::to_string(s).unwrap_or_else(|_| "null".into()),
        None => "null".into(),
    }
}

impl Decoder {
    /// Feeds one message; returns the rows of a transaction when its commit arrives.
    pub fn feed(&mut self, schema: &str, msg: Message, now: Instant) -> Vec<Committed> {
        match msg {
            Message::Begin { final_lsn, .. } => {
                self.txn = Some((final_lsn, Vec::new()));
            }
            Message::Relation { id, namespace, name, columns } => {
                if namespace == schema && name == "events" {
                    self.relations.insert(id, columns);
                } else {
                    self.relations.remove(&id);
                }
            }
            Message::Insert { relation, values } => {
                let (Some(columns), Some((lsn, rows))) = (self.relations.get(&relation), self.txn.as_mut()) else {
                    return Vec::new();
                };
                let get = |name: &str| columns.iter().position(|c| c == name).and_then(|i| values.get(i)?.as_deref());
                // The tenant's own SQL may store far larger documents than devices may send; the
                // window keeps at most MAX_ROW_PAYLOAD of one (readers take the rest from the
                // table by id).
                let payload = match get("payload") {
                    Some(p) if p.len() <= MAX_ROW_PAYLOAD => p,
                    Some(_) => "{\"berqenas_payload_too_large\":true}",
                    None => "null",
                };
                let data = format!(
                    "{{\"id\":{},\"device_id\":{},\"type\":{},\"payload\":{},\"created_at\":{}}}",
                    json_str(get("id")),
                    json_str(get("device_id")),
                    json_str(get("event_type")),
                    payload,
                    json_str(get("created_at")),
                );
                let n = u32::try_from(rows.len()).unwrap_or(u32::MAX);
                rows.push(Committed {
                    cursor: Cursor { lsn: *lsn, n },
                    end_lsn: 0,
                    device: intern(&mut self.names, get("device_id")),
                    kind: intern(&mut self.names, get("event_type")),
                    data: data.into_boxed_str(),
                    at: now,
                });
            }
            Message::Commit { end_lsn, .. } => {
                if let Some((_, rows)) = self.txn.take() {
                    return rows.into_iter().map(|r| Committed { end_lsn, at: now, ..r }).collect();
                }
            }
            Message::Other(_) => {}
        }
        Vec::new()
    }
}

/// Decodes the changes of one SQL read of a slot: their committed rows, and the end LSN of the
/// last commit among them.
pub(super) fn decode(
    decoder: &mut Decoder,
    schema: &str,
    data: Vec<Vec<u8>>,
) -> Result<(Vec<Committed>, Option<u64>), String> {
    let now = Instant::now();
    let mut rows = Vec::new();
    let mut last_end = None;
    for d in data {
        let msg = pgoutput::parse(&d).map_err(|e| e.to_string())?;
        if let Message::Commit { end_lsn, .. } = msg {
            last_end = Some(end_lsn);
        }
        rows.extend(decoder.feed(schema, msg, now));
    }
    Ok((rows, last_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_keeps_only_the_tenants_events_rows_with_their_commit_position() {
        let mut d = Decoder::default();
        let t = Instant::now();
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        d.feed("tenant_acme", Message::Begin { final_lsn: 100, xid: 1 }, t);
        d.feed(
            "tenant_acme",
            Message::Relation {
                id: 1,
                namespace: "tenant_acme".into(),
                name: "events".into(),
                columns: cols(&["id", "device_id", "event_type", "payload", "created_at"]),
            },
            t,
        );
        d.feed(
            "tenant_acme",
            Message::Relation {
                id: 2,
                namespace: "tenant_other".into(),
                name: "events".into(),
                columns: cols(&["id"]),
            },
            t,
        );
        let values = |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>();
        d.feed(
            "tenant_acme",
            Message::Insert {
                relation: 1,
                values: values(&[Some("u1"), Some("plc"), Some("t\"x"), Some("{\"a\":1}"), None]),
            },
            t,
        );
        d.feed("tenant_acme", Message::Insert { relation: 2, values: values(&[Some("u2")]) }, t);
        let rows = d.feed("tenant_acme", Message::Commit { commit_lsn: 100, end_lsn: 140 }, t);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].cursor, Cursor { lsn: 100, n: 0 });
        assert_eq!(rows[0].end_lsn, 140);
        let v: serde_json::Value = serde_json::from_str(&rows[0].data).expect("json");
        assert_eq!(v["type"], "t\"x");
        assert_eq!(v["payload"]["a"], 1);
        assert_eq!(v["created_at"], serde_json::Value::Null);

        // A huge document inserted by the tenant's SQL is not held in the window.
        let huge = format!("\"{}\"", "x".repeat(MAX_ROW_PAYLOAD));
        d.feed("tenant_acme", Message::Begin { final_lsn: 200, xid: 2 }, t);
        d.feed(
            "tenant_acme",
            Message::Insert { relation: 1, values: values(&[Some("u3"), None, None, Some(huge.as_str()), None]) },
            t,
        );
        let rows = d.feed("tenant_acme", Message::Commit { commit_lsn: 200, end_lsn: 240 }, t);
        assert!(rows[0].data.len() < 1_000, "payload left out");
        let v: serde_json::Value = serde_json::from_str(&rows[0].data).expect("json");
        assert_eq!(v["payload"]["berqenas_payload_too_large"], true);
    }
}
