//! The agent's one way to run an external program: an explicit program and arguments (never a
//! shell), optional bytes on stdin, a timeout after which the program is killed, and stderr
//! captured into the error. Asynchronous: a slow program holds no runtime thread.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {program}: {error}")]
    Spawn { program: String, error: std::io::Error },
    #[error("{program}: {error}")]
    Io { program: String, error: std::io::Error },
    #[error("{program} did not finish within {}", humantime::format_duration(*after))]
    Timeout { program: String, after: Duration },
    #[error("{program} failed ({status}): {stderr}")]
    Failed { program: String, status: std::process::ExitStatus, stderr: String },
}

/// Runs `program args…` with `stdin`, waiting at most `timeout` (then it is killed); returns its
/// stdout, or an error naming the program with its exit status and stderr.
pub async fn run(program: &str, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Result<String, ExecError> {
    let io = |error| ExecError::Io { program: program.to_string(), error };
    #[allow(clippy::disallowed_methods, reason = "this is the one module that starts processes")]
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| ExecError::Spawn { program: program.to_string(), error })?;
    let work = async {
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(bytes).await.map_err(io)?;
        }
        // stdout and stderr are drained while it runs, so a chatty program never blocks.
        child.wait_with_output().await.map_err(io)
    };
    let output = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ExecError::Timeout { program: program.to_string(), after: timeout })??;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(ExecError::Failed {
            program: program.to_string(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// A program running with its stdin and/or stdout as pipes the caller streams through (for
/// programs whose input or output is too large to hold: `pg_dump`, `psql` on a restore). The
/// environment is the agent's plus `env` (secrets go there, never into `args`). Killed when
/// dropped; [`Streaming::finish`] waits for it and turns a failure into the same [`ExecError`].
pub struct Streaming {
    program: String,
    child: tokio::process::Child,
    pub stdin: Option<tokio::process::ChildStdin>,
    pub stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::task::JoinHandle<String>>,
}

/// Which of the program's standard streams the caller gets as pipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    Stdin,
    Stdout,
}

pub fn spawn(program: &str, args: &[&str], env: &[(&str, &str)], pipe: Pipe) -> Result<Streaming, ExecError> {
    #[allow(clippy::disallowed_methods, reason = "this is the one module that starts processes")]
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(if pipe == Pipe::Stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(if pipe == Pipe::Stdout { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|error| ExecError::Spawn { program: program.to_string(), error })?;
    // stderr is drained while it runs (the last 8 KiB kept), so a chatty program never blocks.
    let stderr = child.stderr.take().map(|mut pipe| {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut kept, mut buf) = (Vec::new(), [0u8; 4096]);
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 8192 {
                    kept.drain(..kept.len() - 8192);
                }
            }
            String::from_utf8_lossy(&kept).trim().to_string()
        })
    });
    Ok(Streaming {
        program: program.to_string(),
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        child,
        stderr,
    })
}

impl Streaming {
    /// Closes stdin (if still open) and waits at most `timeout` for the program to exit.
    pub async fn finish(mut self, timeout: Duration) -> Result<(), ExecError> {
        drop(self.stdin.take());
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.map_err(|error| ExecError::Io { program: self.program.clone(), error })?,
            Err(_) => return Err(ExecError::Timeout { program: self.program.clone(), after: timeout }),
        };
        let stderr = match self.stderr.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => String::new(),
        };
        if status.success() {
            Ok(())
        } else {
            Err(ExecError::Failed { program: self.program.clone(), status, stderr })
        }
    }

    /// Kills the program now (SIGKILL) and reaps it: whatever it was given is abandoned.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A long-lived program spoken to line by line (`nft -i`): its stdin, stdout and stderr are
/// pipes the caller owns. Killed when dropped.
pub struct Interactive {
    child: tokio::process::Child,
    pub stdin: tokio::process::ChildStdin,
    pub stdout: Option<tokio::process::ChildStdout>,
    pub stderr: tokio::process::ChildStderr,
}

/// Starts `program args…` with its three standard streams as pipes (see [`Interactive`]); the
/// environment is the agent's plus `env`.
pub fn interactive(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Interactive, ExecError> {
    let spawn = |error| ExecError::Spawn { program: program.to_string(), error };
    #[allow(clippy::disallowed_methods, reason = "this is the one module that starts processes")]
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn)?;
    let missing = || spawn(std::io::Error::other("a standard stream is not a pipe"));
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = Some(child.stdout.take().ok_or_else(missing)?);
    let stderr = child.stderr.take().ok_or_else(missing)?;
    Ok(Interactive { child, stdin, stdout, stderr })
}

impl Interactive {
    /// True while the program has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_failure_and_timeout_are_reported() {
        let five = Duration::from_secs(5);
        assert_eq!(run("cat", &[], Some(b"hello"), five).await.expect("cat"), "hello");
        let err = run("sh", &["-c", "echo nope >&2; exit 3"], None, five).await.expect_err("fails").to_string();
        assert!(err.contains("nope") && err.contains('3'), "{err}");
        let started = std::time::Instant::now();
        let err = run("sleep", &["5"], None, Duration::from_millis(100)).await.expect_err("times out");
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2), "killed at the timeout");
        assert!(matches!(
            run("/nonexistent/program", &[], None, Duration::from_secs(1)).await,
            Err(ExecError::Spawn { .. })
        ));
    }
}
