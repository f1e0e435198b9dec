//! The agent's one way to run an external program: an explicit program and arguments (never a
//! shell), optional bytes on stdin, a timeout after which the program is killed, and stderr
//! captured into the error.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `program args…` with `stdin`, waiting at most `timeout`; returns stdout, or an error
/// naming the program with its exit status and stderr.
pub fn run(program: &str, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Result<String, String> {
    #[allow(clippy::disallowed_methods, reason = "this is the one module that starts processes")]
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes).map_err(|e| format!("{program}: writing its input: {e}"))?;
    }
    // Drained while it runs, so a chatty program never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} did not finish within {}", humantime::format_duration(timeout)));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("{program}: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(format!("{program} failed ({status}): {}", stderr.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_failure_and_timeout_are_reported() {
        assert_eq!(run("cat", &[], Some(b"hello"), Duration::from_secs(5)).as_deref(), Ok("hello"));
        let err = run("sh", &["-c", "echo nope >&2; exit 3"], None, Duration::from_secs(5)).expect_err("fails");
        assert!(err.contains("nope") && err.contains('3'), "{err}");
        let err = run("sleep", &["5"], None, Duration::from_millis(100)).expect_err("times out");
        assert!(err.contains("did not finish"), "{err}");
        assert!(run("/nonexistent/program", &[], None, Duration::from_secs(1)).is_err());
    }
}
