//! The event spool: `spool.jsonl` in the state directory, append-only. A line is either an
//! event (`{"event":{…}}`, appended and fsynced before the event is sent anywhere) or an
//! acknowledgement (`{"ack":"<id>"}`). What is pending is every event without its ack, in the
//! order written. The file is rewritten (atomically) without the acknowledged events when none
//! is pending or many acks piled up. A torn last line (power cut mid-append) is dropped: its
//! event was never acknowledged to the program that sent it.

use super::Event;
use crate::state::StateDir;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

const FILE: &str = "spool.jsonl";
/// Acks after which the file is compacted even though events are still pending.
const COMPACT_AFTER: usize = 1000;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Record {
    Event(Event),
    Ack(String),
}

pub struct Spool {
    path: PathBuf,
    dir: StateDir,
    file: std::fs::File,
    pending: Vec<Event>,
    acks_in_file: usize,
}

fn open_append(path: &PathBuf) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).with_context(|| format!("open {}", path.display()))
}

impl Spool {
    pub fn open(dir: &StateDir) -> anyhow::Result<Self> {
        let path = dir.path(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let mut events = Vec::new();
        let mut acked = HashSet::new();
        let mut dirty = false;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Record>(line) {
                Ok(Record::Event(e)) => events.push(e),
                Ok(Record::Ack(id)) => {
                    acked.insert(id);
                    dirty = true;
                }
                Err(_) => dirty = true,
            }
        }
        let mut seen = HashSet::new();
        let pending: Vec<Event> =
            events.into_iter().filter(|e| !acked.contains(&e.id) && seen.insert(e.id.clone())).collect();
        if dirty {
            write_all(dir, &pending)?;
        }
        let file = open_append(&path)?;
        Ok(Self { path, dir: dir.clone(), file, pending, acks_in_file: 0 })
    }

    /// Appends `event` durably (fsync) and counts it pending.
    pub fn append(&mut self, event: &Event) -> anyhow::Result<()> {
        if self.pending.iter().any(|e| e.id == event.id) {
            return Ok(());
        }
        let mut line = serde_json::to_string(&Record::Event(event.clone()))?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).with_context(|| format!("append to {}", self.path.display()))?;
        self.file.sync_data().with_context(|| format!("sync {}", self.path.display()))?;
        self.pending.push(event.clone());
        Ok(())
    }

    /// Marks `ids` acknowledged. Losing an ack line to a crash only means a resend, which the
    /// ingest stores once: no fsync here.
    pub fn ack(&mut self, ids: &[String]) -> anyhow::Result<()> {
        let ids: HashSet<&String> = ids.iter().collect();
        let before = self.pending.len();
        self.pending.retain(|e| !ids.contains(&e.id));
        let removed = before - self.pending.len();
        if removed == 0 {
            return Ok(());
        }
        if self.pending.is_empty() || self.acks_in_file + removed > COMPACT_AFTER {
            write_all(&self.dir, &self.pending)?;
            self.file = open_append(&self.path)?;
            self.acks_in_file = 0;
            return Ok(());
        }
        let mut text = String::new();
        for id in ids {
            text.push_str(&serde_json::to_string(&Record::Ack(id.clone()))?);
            text.push('\n');
        }
        self.file.write_all(text.as_bytes()).with_context(|| format!("append to {}", self.path.display()))?;
        self.acks_in_file += removed;
        Ok(())
    }

    pub fn pending(&self) -> &[Event] {
        &self.pending
    }
}

fn write_all(dir: &StateDir, pending: &[Event]) -> anyhow::Result<()> {
    let mut text = String::new();
    for e in pending {
        text.push_str(&serde_json::to_string(&Record::Event(e.clone()))?);
        text.push('\n');
    }
    dir.write(FILE, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::new_event;

    fn ev(n: u32) -> Event {
        new_event("t", &serde_json::json!({ "n": n }), None).unwrap()
    }

    #[test]
    fn unacknowledged_events_survive_a_restart_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().to_path_buf());
        let (a, b, c) = (ev(1), ev(2), ev(3));
        {
            let mut s = Spool::open(&dir).unwrap();
            s.append(&a).unwrap();
            s.append(&b).unwrap();
            s.append(&c).unwrap();
            s.append(&b).unwrap(); // a resend by the caller is one event
            s.ack(std::slice::from_ref(&b.id)).unwrap();
        }
        let s = Spool::open(&dir).unwrap();
        assert_eq!(s.pending(), [a.clone(), c.clone()]);
        // Reopening compacted the file: no ack lines left.
        assert!(!std::fs::read_to_string(dir.path(FILE)).unwrap().contains("\"ack\""));
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_everything_acked_empties_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().to_path_buf());
        let a = ev(1);
        {
            let mut s = Spool::open(&dir).unwrap();
            s.append(&a).unwrap();
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path(FILE)).unwrap();
        f.write_all(b"{\"event\":{\"id\":\"half").unwrap();
        drop(f);
        let mut s = Spool::open(&dir).unwrap();
        assert_eq!(s.pending(), std::slice::from_ref(&a));
        s.ack(std::slice::from_ref(&a.id)).unwrap();
        assert!(s.pending().is_empty());
        assert_eq!(std::fs::read_to_string(dir.path(FILE)).unwrap(), "");
    }
}
