//! A long-lived `nft -i` (interactive) per network namespace, for changes between resyncs: the
//! process, its cache and its netlink socket live across changes, so a change costs no process
//! start, no refetch of the table while nothing else changed it (nft compares the ruleset's
//! generation), and no RCU grace period at exit (a one-shot `nft` that deleted anything waits
//! for one when it closes its socket).
//!
//! One change is one line (nft runs each line as one transaction) followed by an end marker, a
//! line nft's parser refuses: nft echoes it on stderr after its error header, so what stderr
//! holds before that header is the change's answer (nothing when it was applied). A timeout, a
//! dead process, output that is not that shape, or any output on stdout ends the session (the
//! next change starts a new one) and tells the caller what it can know: applied, refused (an nft
//! transaction is all or nothing, so nothing was applied), not sent, or unknown.

use crate::host::exec::{self, Interactive};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest change sent through a session (larger ones, a cold load, go to `nft -f`).
pub const MAX_LINE: usize = 1 << 20;
/// Changes after which a session is started anew: nft keeps every line in its command history.
const MAX_CHANGES: u64 = 512;
/// Most stderr lines read for one answer (an error echoes the line at fault).
const MAX_ANSWER_LINES: usize = 4096;

/// What became of a change given to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// nft applied it (one transaction, committed).
    Applied,
    /// nft refused it, with its error text: nothing of it was applied.
    Refused(String),
    /// It was not sent (no session, or it does not fit one line): nothing was applied.
    NotSent(String),
    /// It was sent but the answer is missing or not understood: it may have been applied.
    Unknown(String),
}

struct Session {
    nft: Interactive,
    /// Set by the task draining stdout when nft writes anything there (it never should).
    spoke: Arc<AtomicBool>,
    /// stderr bytes read but not yet taken as lines.
    pending: Vec<u8>,
    changes: u64,
}

/// Sessions by network namespace (the inode of `/proc/thread-self/ns/net`): a driver living on
/// a thread of another namespace gets that namespace's nft.
static SESSIONS: tokio::sync::Mutex<BTreeMap<u64, Session>> = tokio::sync::Mutex::const_new(BTreeMap::new());

fn namespace() -> Option<u64> {
    std::fs::metadata("/proc/thread-self/ns/net").ok().map(|m| m.ino())
}

/// The one-line form of an `nft -f` script (its lines joined by `;`), or why it has none: a
/// script with comments, continuations or carriage returns, or a large one, is left to `nft -f`.
pub fn one_line(script: &str) -> Result<String, String> {
    if script.contains(['#', '\\', '\r', '\0']) {
        return Err("the script has characters a one-line change does not carry".into());
    }
    let line = script.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    match line.len() {
        n if n > MAX_LINE => Err(format!("the change is {n} bytes, more than a session takes")),
        _ => Ok(line),
    }
}

/// Runs `script` (an `nft -f` script, one transaction) through this namespace's session,
/// starting one when there is none; waits at most `timeout` for the answer.
pub async fn run(script: &str, timeout: Duration) -> Outcome {
    let line = match one_line(script) {
        Ok(l) => l,
        Err(why) => return Outcome::NotSent(why),
    };
    let Some(ns) = namespace() else { return Outcome::NotSent("cannot tell the network namespace".into()) };
    let mut sessions = SESSIONS.lock().await;
    let reuse = sessions.get_mut(&ns).is_some_and(|s| s.nft.running() && s.changes < MAX_CHANGES);
    if !reuse {
        sessions.remove(&ns);
        match start() {
            Ok(s) => {
                sessions.insert(ns, s);
            }
            Err(e) => return Outcome::NotSent(format!("cannot start nft -i: {e}")),
        }
    }
    let Some(session) = sessions.get_mut(&ns) else { return Outcome::NotSent("no session".into()) };
    let outcome = session.change(&line, timeout).await;
    if outcome != Outcome::Applied || session.spoke.load(Ordering::Relaxed) {
        // Whatever went wrong, the next change starts from a fresh process.
        sessions.remove(&ns);
    }
    outcome
}

/// Ends this namespace's session (the next change starts a new one).
pub async fn end() {
    if let Some(ns) = namespace() {
        SESSIONS.lock().await.remove(&ns);
    }
}

fn start() -> Result<Session, exec::ExecError> {
    // nft writes its command history to $HOME/.nft.history when its input ends: not ours to
    // write, so its HOME is a directory that does not exist.
    let mut nft = exec::interactive("nft", &["-i"], &[("HOME", "/nonexistent")])?;
    let spoke = Arc::new(AtomicBool::new(false));
    if let Some(mut stdout) = nft.stdout.take() {
        let spoke = spoke.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                spoke.store(true, Ordering::Relaxed);
            }
        });
    }
    Ok(Session { nft, spoke, pending: Vec::new(), changes: 0 })
}

impl Session {
    async fn change(&mut self, line: &str, timeout: Duration) -> Outcome {
        self.changes += 1;
        let marker = format!("berqenas-end-{}", self.changes);
        let text = format!("{line}\n{marker}\n");
        if let Err(e) = self.nft.stdin.write_all(text.as_bytes()).await {
            // nft reads a whole line before it runs it: a line it did not get whole was not run.
            return Outcome::NotSent(format!("writing to nft -i: {e}"));
        }
        if let Err(e) = self.nft.stdin.flush().await {
            return Outcome::Unknown(format!("writing to nft -i: {e}"));
        }
        match tokio::time::timeout(timeout, self.answer(&marker)).await {
            Err(_) => Outcome::Unknown(format!("nft -i did not answer within {}", humantime::format_duration(timeout))),
            Ok(Err(e)) => Outcome::Unknown(e),
            Ok(Ok(lines)) => judge(lines),
        }
    }

    /// The stderr lines before the marker's echo (the marker's own error header last), having
    /// read the caret line after it.
    async fn answer(&mut self, marker: &str) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await?;
            if line == marker {
                break;
            }
            if lines.len() == MAX_ANSWER_LINES {
                return Err("nft -i wrote more than an answer holds".into());
            }
            lines.push(line);
        }
        let carets = self.line().await?;
        match carets.trim().chars().all(|c| c == '^') && !carets.trim().is_empty() {
            true => Ok(lines),
            false => Err(format!("unexpected nft -i output after its end marker: {carets}")),
        }
    }

    async fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let rest = self.pending.split_off(at + 1);
                let mut line = std::mem::replace(&mut self.pending, rest);
                line.pop();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            let mut buf = [0u8; 8192];
            match self.nft.stderr.read(&mut buf).await {
                Ok(0) => return Err("nft -i exited".into()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("reading from nft -i: {e}")),
            }
        }
    }
}

/// The outcome told by the stderr lines before the marker's echo: only the marker's error
/// header when the change was applied; error text before it when the change was refused.
fn judge(mut lines: Vec<String>) -> Outcome {
    match lines.pop() {
        Some(header) if header.starts_with("Error: ") => {}
        _ => return Outcome::Unknown(format!("unexpected nft -i answer: {}", lines.join(" | "))),
    }
    match lines.first() {
        None => Outcome::Applied,
        Some(first) if first.starts_with("Error: ") => {
            let text: Vec<&str> = lines.iter().map(String::as_str).filter(|l| l.starts_with("Error: ")).collect();
            Outcome::Refused(text.join("; "))
        }
        Some(_) => Outcome::Unknown(format!("unexpected nft -i answer: {}", lines.join(" | "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_becomes_one_line_of_commands() {
        let script = "add table inet berqenas\nadd set inet berqenas s { type ipv4_addr; flags timeout; }\n\n";
        assert_eq!(
            one_line(script).expect("fits"),
            "add table inet berqenas; add set inet berqenas s { type ipv4_addr; flags timeout; }"
        );
        assert!(one_line("add table inet x # note\n").is_err(), "a comment would swallow what follows");
        assert!(one_line("add table inet x \\\n").is_err());
        assert!(one_line(&"add table inet x\n".repeat(MAX_LINE / 10)).is_err(), "too large for a session");
    }

    #[test]
    fn answers_are_judged_by_what_precedes_the_marker() {
        let header = || "Error: syntax error, unexpected newline, expecting string".to_string();
        assert_eq!(judge(vec![header()]), Outcome::Applied);
        let refused = judge(vec![
            "Error: Could not process rule: No such file or directory".into(),
            "add rule inet berqenas t1-in accept".into(),
            "^^^^^".into(),
            header(),
        ]);
        assert_eq!(refused, Outcome::Refused("Error: Could not process rule: No such file or directory".into()));
        assert!(matches!(judge(vec!["Warning: something".into(), header()]), Outcome::Unknown(_)));
        assert!(matches!(judge(vec![]), Outcome::Unknown(_)));
        assert!(matches!(judge(vec!["nft> ".into()]), Outcome::Unknown(_)));
    }
}
