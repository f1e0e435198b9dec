//! What a SIEM receives for one audit entry (pure): the entry as one JSON object (`event`), that
//! object as an RFC 5424 syslog message (`rfc5424`), framed by octet counting (RFC 6587 §3.4.1,
//! as RFC 5425 requires over TLS), or as one line of an HTTPS batch (`json_lines`).

use crate::state::audit::{AuditEntry, Outcome};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

/// Facility 13, "log audit" (RFC 5424 table 1).
const FACILITY_LOG_AUDIT: u8 = 13;
/// Severity 5 (notice) for an accepted change, 4 (warning) for a refusal.
const NOTICE: u8 = 5;
const WARNING: u8 = 4;

/// Who sends: the RFC 5424 HOSTNAME and PROCID of every message of this coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// printable US-ASCII, at most 255 characters, or `-`.
    pub hostname: String,
    /// The cluster the trail belongs to (so a SIEM fed by two clusters keeps two sequences).
    pub cluster: String,
    /// The forwarding coordinator's id.
    pub coordinator: u64,
}

impl Origin {
    /// `hostname` kept only if it is printable US-ASCII without spaces (RFC 5424 §6.2.4),
    /// clipped to 255; else `-`.
    pub fn new(hostname: &str, cluster: &str, coordinator: u64) -> Self {
        let hostname = hostname.trim();
        let printable = !hostname.is_empty() && hostname.bytes().all(|b| (33..=126).contains(&b));
        let hostname = if printable { hostname.chars().take(255).collect() } else { "-".to_string() };
        Self { hostname, cluster: cluster.to_string(), coordinator }
    }
}

/// One audit entry as the SIEM sees it. `seq` is the chain's sequence: consecutive, so a gap is
/// a lost message; `hash` and `prev_hash` let the SIEM check the chain itself.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub cluster: &'a str,
    pub seq: u64,
    /// RFC 3339, milliseconds, UTC.
    pub time: String,
    pub time_ms: u64,
    pub actor: &'a str,
    pub source: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: Outcome,
    pub details: &'a BTreeMap<String, String>,
    pub prev_hash: &'a str,
    pub hash: &'a str,
}

pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn event<'a>(origin: &'a Origin, e: &'a AuditEntry) -> Event<'a> {
    Event {
        cluster: &origin.cluster,
        seq: e.seq,
        time: rfc3339_ms(e.time_ms),
        time_ms: e.time_ms,
        actor: &e.actor,
        source: &e.source,
        action: &e.action,
        target: &e.target,
        outcome: e.outcome,
        details: &e.details,
        prev_hash: &e.prev_hash,
        hash: &e.hash,
    }
}

/// The entry as one line of JSON (no newline inside: serde_json escapes control characters).
pub fn json(origin: &Origin, e: &AuditEntry) -> String {
    // A struct of strings, integers and a string map always serializes.
    serde_json::to_string(&event(origin, e)).unwrap_or_default()
}

/// `<PRI>1 TIMESTAMP HOSTNAME berqenas coordinator-N audit - {json}`: no structured data, the
/// JSON event as MSG (MSG-ANY: no BOM). The timestamp is the entry's, not the send time.
pub fn rfc5424(origin: &Origin, e: &AuditEntry) -> String {
    let severity = match e.outcome {
        Outcome::Ok => NOTICE,
        Outcome::Rejected => WARNING,
    };
    let pri = u16::from(FACILITY_LOG_AUDIT) * 8 + u16::from(severity);
    format!(
        "<{pri}>1 {} {} berqenas coordinator-{} audit - {}",
        rfc3339_ms(e.time_ms),
        origin.hostname,
        origin.coordinator,
        json(origin, e)
    )
}

/// RFC 6587 octet counting: `MSG-LEN SP SYSLOG-MSG`, the length in bytes.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// The framed messages of a batch, back to back.
pub fn syslog_batch(origin: &Origin, entries: &[AuditEntry]) -> Vec<u8> {
    entries.iter().flat_map(|e| frame(&rfc5424(origin, e))).collect()
}

/// An HTTPS batch: one JSON event per line (`application/x-ndjson`).
pub fn json_lines(origin: &Origin, entries: &[AuditEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        out.push_str(&json(origin, e));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(outcome: Outcome) -> AuditEntry {
        AuditEntry {
            seq: 42,
            time_ms: 1_764_684_000_123,
            actor: "k1".into(),
            source: "127.0.0.1".into(),
            action: "firewall.add".into(),
            target: "tenant/acme/firewall/rule/r1".into(),
            outcome,
            details: [("note".to_string(), "line\nbreak é".to_string())].into(),
            prev_hash: "a".repeat(64),
            hash: "b".repeat(64),
        }
    }

    #[test]
    fn an_accepted_change_is_a_notice_of_facility_log_audit_with_the_entry_as_json() {
        let origin = Origin::new("coord-a.example", "c0ffee", 2);
        let msg = rfc5424(&origin, &entry(Outcome::Ok));
        let (head, body) = msg.split_once(" - ").expect("no structured data");
        assert_eq!(head, "<109>1 2025-12-02T14:00:00.123Z coord-a.example berqenas coordinator-2 audit");
        let v: serde_json::Value = serde_json::from_str(body).expect("MSG is JSON");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["cluster"], "c0ffee");
        assert_eq!(v["outcome"], "ok");
        assert_eq!(v["hash"], "b".repeat(64));
        assert_eq!(v["prev_hash"], "a".repeat(64));
        assert_eq!(v["details"]["note"], "line\nbreak é");
        assert!(!msg.contains('\n'), "one message is one line");
    }

    #[test]
    fn a_refusal_is_a_warning() {
        let msg = rfc5424(&Origin::new("h", "c", 1), &entry(Outcome::Rejected));
        assert!(msg.starts_with("<108>1 "), "{msg}");
    }

    #[test]
    fn octet_counting_counts_bytes_not_characters() {
        assert_eq!(frame("é"), b"2 \xc3\xa9".to_vec());
        let batch = syslog_batch(&Origin::new("h", "c", 1), &[entry(Outcome::Ok), entry(Outcome::Ok)]);
        let text = String::from_utf8(batch).expect("utf-8");
        let (len, rest) = text.split_once(' ').expect("length");
        let len: usize = len.parse().expect("number");
        assert!(rest[len..].starts_with(&format!("{len} <109>1")), "the second frame follows the first exactly");
    }

    #[test]
    fn a_hostname_that_is_not_printable_ascii_becomes_nil() {
        assert_eq!(Origin::new("bad host", "c", 1).hostname, "-");
        assert_eq!(Origin::new("", "c", 1).hostname, "-");
        assert_eq!(Origin::new("höst", "c", 1).hostname, "-");
        assert_eq!(Origin::new("db-1.example\n", "c", 1).hostname, "db-1.example");
    }

    #[test]
    fn json_lines_are_one_event_per_line() {
        let body = json_lines(&Origin::new("h", "c", 1), &[entry(Outcome::Ok), entry(Outcome::Rejected)]);
        let lines: Vec<_> = body.lines().collect();
        assert_eq!(lines.len(), 2);
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
            assert_eq!(v["seq"], 42);
        }
    }
}
