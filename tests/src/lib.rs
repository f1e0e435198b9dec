//! The harness end-to-end tests share: real processes of the project's binaries with their logs
//! captured (and printed when a test fails), free loopback ports, and deadline-based waiting.
//! Everything it starts is killed when dropped.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it starts the project's binaries and lab tools, and a failed setup step is a failed test"
)]

pub mod bench;
pub mod coordinator;
pub mod etcd;
pub mod lab;
pub mod panel;
pub mod pgbouncer;
pub mod ports;
pub mod postgres;
pub mod realtime;
pub mod s3;
#[cfg(test)]
mod tidy;
pub mod webdriver;

pub use ports::free_port;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some` or `timeout` passes; panics naming `what` on timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A long-running process whose stdout and stderr go to a log file. Killed on drop; when the
/// test is panicking, its log is printed so the failure can be read.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[&str], log_dir: &Path) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::options().create(true).append(true).open(&log).expect("create process log");
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", program.display()));
        Self { name: name.to_string(), child: Some(child), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL: the process gets no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let started = Instant::now();
            while started.elapsed() < grace {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}\n----- end of {} -----", self.name, self.log_text(), self.name);
        }
    }
}

/// Runs a command to completion and returns its output.
pub fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

/// A binary of this workspace, built by `cargo build --workspace --bins` (deploy/test.sh does it
/// before running the tests).
pub fn workspace_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins; deploy/test.sh does)",
        path.display()
    );
    path
}

/// A binary of the previous release (the commit in `deploy/previous-release`), built by
/// `deploy/previous-release.sh` into `target/previous-release/` (deploy/test.sh runs it). Fails
/// loudly, naming the command, when it is missing or was built from another commit.
pub fn previous_release_bin(name: &str) -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let dir = target.join("previous-release");
    let path = dir.join(name);
    let build = "run deploy/previous-release.sh (it builds the commit in deploy/previous-release)";
    assert!(path.exists(), "{} is missing: {build}", path.display());
    let want = std::fs::read_to_string(root.join("deploy/previous-release")).expect("read deploy/previous-release");
    let built = std::fs::read_to_string(dir.join("commit")).unwrap_or_default();
    assert_eq!(built.trim(), want.trim(), "{} was built from another commit: {build}", path.display());
    path
}

/// The workspace's root directory (for files under `deploy/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
