//! Events as devices send them, checked before anything reaches the database: a UUID id, a
//! short type, a JSON payload of bounded size, a plausible timestamp. Pure; no IO.

use berqenas_proto::realtime as pb;

/// Most events in one `PublishRequest`.
pub const MAX_BATCH: usize = 1_000;
/// Largest payload of one event, in bytes of JSON text.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Longest event type, in characters (the column is `varchar(100)`).
pub const MAX_TYPE_CHARS: usize = 100;
/// Latest `created_at_ms` accepted (year 3000): later is a client bug, not a time.
const MAX_CREATED_MS: i64 = 32_503_680_000_000;

/// One event ready for the `events` table; every field checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Lowercase canonical UUID.
    pub id: String,
    pub device: String,
    pub kind: String,
    pub payload: String,
    /// Unix milliseconds; 0 = the commit's time.
    pub created_ms: i64,
}

/// Why an event was refused, naming the field (never echoing the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("the batch is empty or holds more than {MAX_BATCH} events")]
    BatchSize,
    #[error("event {0}: id is not a UUID")]
    Id(usize),
    #[error("event {0}: type must be 1 to {MAX_TYPE_CHARS} printable characters")]
    Type(usize),
    #[error("event {0}: payload is larger than {MAX_PAYLOAD} bytes")]
    TooLarge(usize),
    #[error("event {0}: payload is not valid JSON (or holds a NUL character)")]
    Payload(usize),
    #[error("event {0}: created_at_ms is out of range")]
    CreatedAt(usize),
}

/// The canonical lowercase form of a UUID in the 8-4-4-4-12 hex form, or None.
pub fn uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        };
        if !ok {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

/// Checks a batch from `device`; the whole batch is refused when one event is invalid (the
/// device must not believe part of it was stored).
pub fn validate(events: Vec<pb::Event>, device: &str) -> Result<Vec<Row>, InvalidEvent> {
    if events.is_empty() || events.len() > MAX_BATCH {
        return Err(InvalidEvent::BatchSize);
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let pb::Event { id, r#type, payload_json, created_at_ms } = e;
            let id = uuid(&id).ok_or(InvalidEvent::Id(i))?;
            let chars = r#type.chars().count();
            if chars == 0 || chars > MAX_TYPE_CHARS || r#type.chars().any(char::is_control) {
                return Err(InvalidEvent::Type(i));
            }
            if payload_json.len() > MAX_PAYLOAD {
                return Err(InvalidEvent::TooLarge(i));
            }
            // jsonb refuses \u0000 in strings: refused here, so one event cannot fail the batch
            // it is written with.
            if payload_json.contains("\\u0000") || serde_json::from_str::<serde::de::IgnoredAny>(&payload_json).is_err()
            {
                return Err(InvalidEvent::Payload(i));
            }
            if !(0..=MAX_CREATED_MS).contains(&created_at_ms) {
                return Err(InvalidEvent::CreatedAt(i));
            }
            Ok(Row { id, device: device.to_string(), kind: r#type, payload: payload_json, created_ms: created_at_ms })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, kind: &str, payload: &str) -> pb::Event {
        pb::Event { id: id.into(), r#type: kind.into(), payload_json: payload.into(), created_at_ms: 0 }
    }

    const ID: &str = "6F9619FF-8B86-D011-B42D-00C04FC964FF";

    #[test]
    fn valid_batch_becomes_rows_with_canonical_ids_and_the_certificates_device() {
        let rows = validate(vec![ev(ID, "temp", r#"{"c": 21.5}"#)], "plc-1").expect("valid");
        assert_eq!(rows[0].id, ID.to_ascii_lowercase());
        assert_eq!(rows[0].device, "plc-1");
    }

    #[test]
    fn one_bad_event_refuses_the_batch_naming_it() {
        let bad = |e: pb::Event| validate(vec![ev(ID, "t", "1"), e], "d").expect_err("refused");
        assert_eq!(bad(ev("not-a-uuid", "t", "1")), InvalidEvent::Id(1));
        assert_eq!(bad(ev(&ID.replace('F', "G"), "t", "1")), InvalidEvent::Id(1));
        assert_eq!(bad(ev(ID, "", "1")), InvalidEvent::Type(1));
        assert_eq!(bad(ev(ID, &"x".repeat(101), "1")), InvalidEvent::Type(1));
        assert_eq!(bad(ev(ID, "a\nb", "1")), InvalidEvent::Type(1));
        assert_eq!(bad(ev(ID, "t", "{")), InvalidEvent::Payload(1));
        assert_eq!(bad(ev(ID, "t", r#""a\u0000""#)), InvalidEvent::Payload(1));
        assert_eq!(bad(ev(ID, "t", "'); DROP TABLE events; --")), InvalidEvent::Payload(1));
        assert_eq!(bad(ev(ID, "t", &format!("\"{}\"", "a".repeat(MAX_PAYLOAD)))), InvalidEvent::TooLarge(1));
        assert_eq!(bad(pb::Event { created_at_ms: -1, ..ev(ID, "t", "1") }), InvalidEvent::CreatedAt(1));
        assert_eq!(validate(vec![], "d"), Err(InvalidEvent::BatchSize));
        assert_eq!(validate(vec![ev(ID, "t", "1"); MAX_BATCH + 1], "d"), Err(InvalidEvent::BatchSize));
        assert!(validate(vec![ev(ID, &"é".repeat(100), "1")], "d").is_ok(), "100 characters, not bytes");
    }
}
