//! Events the device publishes to its tenant's realtime ingest. Each gets a client UUID (v4)
//! and is appended to the spool (fsync) before anything is sent; it leaves the spool only when
//! the ingest's `PublishAck` names it, so a crash or a lost connection resends it and the ingest
//! (keyed by that id) stores it once. `local` is the socket (named pipe on Windows) other
//! programs write to, `publish` the stream to the ingest, `spool` the file.

pub mod local;
pub mod public;
pub mod publish;
pub mod spool;

use crate::state::StateDir;
use anyhow::bail;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest accepted event type (the ingest's limit).
pub const MAX_TYPE: usize = 100;
/// Largest accepted payload, compact JSON.
pub const MAX_PAYLOAD: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub payload_json: String,
    pub created_at_ms: i64,
}

impl From<Event> for berqenas_proto::realtime::Event {
    fn from(e: Event) -> Self {
        let Event { id, kind, payload_json, created_at_ms } = e;
        Self { id, r#type: kind, payload_json, created_at_ms }
    }
}

/// A random (v4) UUID, lowercase hyphenated.
pub fn uuid_v4() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

fn valid_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// Validates what a caller sent and makes the event: a new id unless the caller brought a UUID
/// of its own (its retries then stay idempotent end to end).
pub fn new_event(kind: &str, payload: &serde_json::Value, id: Option<&str>) -> anyhow::Result<Event> {
    if kind.is_empty() || kind.chars().count() > MAX_TYPE || kind.chars().any(char::is_control) {
        bail!("the event type must be 1-{MAX_TYPE} printable characters");
    }
    let payload_json = serde_json::to_string(payload)?;
    if payload_json.len() > MAX_PAYLOAD {
        bail!("the payload is larger than {MAX_PAYLOAD} bytes");
    }
    let id = match id {
        Some(id) if valid_uuid(id) => id.to_ascii_lowercase(),
        Some(_) => bail!("an event id must be a UUID"),
        None => uuid_v4()?,
    };
    let created_at_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(0)).unwrap_or(0);
    Ok(Event { id, kind: kind.to_string(), payload_json, created_at_ms })
}

/// `send`: through `run`'s socket when `run` is up (it spools and relays); otherwise spools the
/// event here and publishes the spool directly, waiting for the ingest's acknowledgement.
pub async fn send_command(dir: &StateDir, kind: &str, payload: &str) -> anyhow::Result<()> {
    let value: serde_json::Value =
        serde_json::from_str(payload).map_err(|e| anyhow::anyhow!("--payload is not JSON: {e}"))?;
    let event = new_event(kind, &value, None)?;
    let device = dir.load()?;
    if let Some(reply) = local::try_send(dir, &event).await? {
        println!("{reply}");
        return Ok(());
    }
    let outbox = publish::Outbox::new(spool::Spool::open(dir)?);
    outbox.push(&event)?;
    let id = event.id.clone();
    match publish::deliver(dir, &device.realtime_endpoint, &outbox, &id).await {
        Ok(()) => {
            println!("{}", serde_json::json!({"id": id, "status": "acknowledged"}));
            Ok(())
        }
        Err(e) => bail!("event {id} kept in the spool ({e:#}); `berqenas-device run` or the next `send` delivers it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v4_uuids_and_differ() {
        let a = uuid_v4().unwrap();
        assert!(valid_uuid(&a), "{a}");
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, uuid_v4().unwrap());
    }

    #[test]
    fn bad_events_are_refused_at_the_edge() {
        let p = serde_json::json!({"t": 21.5});
        assert!(new_event("temp", &p, None).is_ok());
        assert!(new_event("", &p, None).is_err());
        assert!(new_event(&"x".repeat(101), &p, None).is_err());
        assert!(new_event("a\nb", &p, None).is_err());
        assert!(new_event("temp", &serde_json::json!("x".repeat(MAX_PAYLOAD)), None).is_err());
        assert!(new_event("temp", &p, Some("not-a-uuid")).is_err());
        let own = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(new_event("temp", &p, Some(own)).unwrap().id, own);
    }
}
