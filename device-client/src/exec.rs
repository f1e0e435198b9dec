//! The device client's one way to run an external program (wireguard-go on Linux without the
//! kernel module; wireguard.exe / wg.exe on Windows): an explicit program and arguments (never a
//! shell), a timeout after which the program is killed, stderr captured into the error. The
//! same shape as the node agent's `host::exec`.

use anyhow::bail;
use std::process::Stdio;
use std::time::Duration;

/// Runs `program args…`, waiting at most `timeout`; returns its stdout, or an error naming the
/// program with its exit status and stderr.
pub async fn run(program: &str, args: &[&str], timeout: Duration) -> anyhow::Result<String> {
    #[allow(clippy::disallowed_methods, reason = "this is the device client's one module that starts processes")]
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|e| anyhow::anyhow!("{program}: {e}"))?,
        Err(_) => bail!("{program} did not finish within {} s", timeout.as_secs()),
    };
    if !output.status.success() {
        bail!("{program} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_failure_and_timeout_are_reported() {
        let five = Duration::from_secs(5);
        assert_eq!(run("echo", &["hello"], five).await.unwrap(), "hello\n");
        let err = run("sh", &["-c", "echo nope >&2; exit 3"], five).await.unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains('3'), "{err}");
        assert!(run("sleep", &["5"], Duration::from_millis(100)).await.unwrap_err().to_string().contains("within"));
        assert!(run("/nonexistent/program", &[], five).await.is_err());
    }
}
