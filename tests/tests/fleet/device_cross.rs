//! The device client's cross builds run, not only compile: the Windows build
//! (`x86_64-pc-windows-gnu`) under Wine (`wine64`), the static `aarch64-unknown-linux-musl`
//! build under `qemu-aarch64-static` and the static (glibc `crt-static`)
//! `armv7-unknown-linux-gnueabihf` build under `qemu-arm-static` (no armhf loader or libraries
//! where qemu looks, so only a static binary starts), each for `--help`, `fingerprint`, `export` (compared byte
//! for byte with the native build), `enroll` up to the connection (the state directory is made
//! and, on Windows, restricted by its ACL), `send` with no ingest (the event stays in the
//! spool), and `run` with `send` through its local socket (a named pipe under Wine). Missing
//! toolchains or cross binaries fail loudly: `deploy/test.sh` installs and builds them.

use berqenas_tests::{free_port, wait_for, workspace_bin, workspace_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A WireGuard private key for the prepared state (not a secret of anything).
const WG_KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// A cross binary built with the `device` profile.
fn cross_bin(triple: &str, name: &str) -> PathBuf {
    let path = target_dir().join(triple).join("device").join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --profile device -p berqenas-device --target {triple}` (deploy/test.sh does)",
        path.display()
    );
    path
}

fn tool(path: &str) -> PathBuf {
    let found = if path.starts_with('/') {
        Some(PathBuf::from(path)).filter(|p| p.exists())
    } else {
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(path)).find(|c| c.exists()))
    };
    found.unwrap_or_else(|| {
        panic!("{path} is missing: deploy/test.sh installs it (wine64, qemu-user-static, gcc-mingw-w64-x86-64)")
    })
}

/// How to start one build of the client, and how it spells paths (also used by `device_enroll`).
pub struct Client {
    pub name: &'static str,
    program: PathBuf,
    prefix: Vec<String>,
    env: Vec<(String, String)>,
    pub windows: bool,
    /// What its `fingerprint` reports as `arch` (Rust's `std::env::consts::ARCH` of the build).
    pub arch: &'static str,
    /// Windows: the shared Wine prefix, held exclusively (its server is killed by `end_wine`,
    /// so two tests must not use it at once); released when the client is dropped.
    _wine: Option<std::fs::File>,
}

impl Client {
    pub fn native() -> Self {
        Self {
            name: "native",
            program: workspace_bin("berqenas-device"),
            prefix: vec![],
            env: vec![],
            windows: false,
            arch: std::env::consts::ARCH,
            _wine: None,
        }
    }

    /// A static Linux build run under qemu-user.
    fn qemu(name: &'static str, triple: &str, qemu: &str, arch: &'static str) -> Self {
        let exe = cross_bin(triple, "berqenas-device");
        Self {
            name,
            program: tool(qemu),
            prefix: vec![exe.to_string_lossy().into_owned()],
            env: vec![],
            windows: false,
            arch,
            _wine: None,
        }
    }

    pub fn aarch64() -> Self {
        Self::qemu("aarch64", "aarch64-unknown-linux-musl", "qemu-aarch64-static", "aarch64")
    }

    pub fn armv7() -> Self {
        Self::qemu("armv7", "armv7-unknown-linux-gnueabihf", "qemu-arm-static", "arm")
    }

    /// The .exe copied into `dir` beside the `ProcessPrng` shim (Wine 8's bcryptprimitives.dll
    /// lacks the function Rust's std imports), built here from deploy/wine/processprng.c.
    pub fn windows(dir: &Path) -> Self {
        let exe = dir.join("berqenas-device.exe");
        std::fs::copy(cross_bin("x86_64-pc-windows-gnu", "berqenas-device.exe"), &exe).expect("copy the exe");
        let src = workspace_root().join("deploy/wine");
        let out = Command::new(tool("x86_64-w64-mingw32-gcc"))
            .args(["-shared", "-O2", "-s", "-o"])
            .arg(dir.join("bcryptprimitives.dll"))
            .arg(src.join("processprng.c"))
            .arg(src.join("bcryptprimitives.def"))
            .arg("-lbcrypt")
            .output()
            .expect("run mingw gcc");
        assert!(out.status.success(), "build the ProcessPrng shim: {}", String::from_utf8_lossy(&out.stderr));
        let prefix = target_dir().join("wine-prefix");
        std::fs::create_dir_all(&prefix).expect("wine prefix");
        let lock = std::fs::File::create(target_dir().join("wine-prefix.lock")).expect("wine prefix lock");
        lock.lock().expect("lock the wine prefix");
        let client = Self {
            name: "windows",
            program: tool("/usr/lib/wine/wine64"),
            prefix: vec![exe.to_string_lossy().into_owned()],
            env: vec![
                ("WINEPREFIX".into(), prefix.to_string_lossy().into_owned()),
                ("WINEDEBUG".into(), "-all".into()),
                // No "install Mono/Gecko?" dialogs when the prefix is made.
                ("WINEDLLOVERRIDES".into(), "mscoree,mshtml=".into()),
            ],
            windows: true,
            arch: "x86_64",
            _wine: Some(lock),
        };
        // The prefix's server (persistent until `end_wine`) and system processes, started
        // first with no inherited output, so the client's commands do not start them.
        let mut server = Command::new(tool("/usr/lib/wine/wineserver"));
        server.arg("-p").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut boot = Command::new(tool("/usr/lib/wine/wine64"));
        boot.arg("wineboot").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in &client.env {
            server.env(k, v);
            boot.env(k, v);
        }
        assert!(server.status().expect("start wineserver").success(), "wineserver -p failed");
        assert!(boot.status().expect("wineboot").success(), "wineboot failed");
        client
    }

    /// `p` as this build reads it (Wine maps the Unix root to drive Z:).
    pub fn path(&self, p: &Path) -> String {
        if self.windows {
            format!("Z:{}", p.to_string_lossy().replace('/', "\\"))
        } else {
            p.to_string_lossy().into_owned()
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.prefix).args(args).stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // Wine looks for DLLs in the working directory too: run from a neutral one.
        cmd.current_dir("/");
        cmd
    }

    /// Runs to completion. Output goes through files, not pipes: a Wine command may start the
    /// prefix's system processes (services.exe, …), which inherit its handles and would keep a
    /// pipe open long after the command ended.
    pub fn run(&self, args: &[&str]) -> Output {
        let dir = tempfile::tempdir().expect("output dir");
        let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
        let status = self
            .command(args)
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .status()
            .unwrap_or_else(|e| panic!("run the {} client: {e}", self.name));
        Output { status, stdout: std::fs::read(&out_path).unwrap(), stderr: std::fs::read(&err_path).unwrap() }
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} client {args:?} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Ends every Wine process of this prefix (a killed loader's `run` child among them).
    pub fn end_wine(&self) {
        if self.windows {
            let mut server = Command::new(tool("/usr/lib/wine/wineserver"));
            server.arg("-k");
            for (k, v) in &self.env {
                server.env(k, v);
            }
            let _ = server.status();
        }
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{} client {args:?} succeeded", self.name);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// A state directory as enrollment leaves it (pending approval, so `run` touches no network
/// interface), with coordinators and an ingest on ports nothing listens on.
fn prepared_state(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let closed = free_port();
    let device = serde_json::json!({
        "tenant": "acme",
        "device_id": "d7",
        "device_name": "plc1",
        "state": "pending",
        "tunnel": {
            "address": "198.18.1.10",
            "subnet": "198.18.1.0/24",
            "gateway_address": "198.18.1.1",
            "gateway_public_key": "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
            "endpoint": "203.0.113.1:51820",
            "keepalive_seconds": 25,
            "source_keep": false
        },
        "realtime_endpoint": format!("127.0.0.1:{closed}"),
        "coordinators": [format!("127.0.0.1:{closed}")],
        "labels": {},
        "interface": "bqd0"
    });
    std::fs::write(state.join("device.json"), serde_json::to_string_pretty(&device).unwrap()).unwrap();
    std::fs::write(state.join("wg.key"), format!("{WG_KEY}\n")).unwrap();
    state
}

fn spool_lines(state: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("spool.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("spool line is JSON"))
        .collect()
}

/// Everything a cross build must do without a tunnel driver; `native` is the reference output.
fn exercise(client: &Client, dir: &Path) {
    let help = client.ok(&["--help"]);
    for cmd in ["enroll", "up", "down", "status", "run", "send", "export", "fingerprint"] {
        assert!(help.contains(cmd), "{} --help lacks {cmd}: {help}", client.name);
    }

    let fp: serde_json::Value = serde_json::from_str(&client.ok(&["fingerprint"])).expect("fingerprint is JSON");
    let os = if client.windows { "windows" } else { "linux" };
    assert_eq!(fp["os_name"], os, "{fp}");
    assert_eq!(fp["arch"], client.arch, "{fp}");
    let hex64 =
        |v: &serde_json::Value| v.as_str().is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(hex64(&fp["machine_id_hash"]), "machine id (MachineGuid or /etc/machine-id) hashed: {fp}");
    let macs = fp["mac_hashes"].as_array().expect("mac_hashes");
    assert!(!macs.is_empty() && macs.iter().all(hex64), "{fp}");
    assert!(fp["os_version"].as_str().is_some_and(|v| !v.is_empty()), "{fp}");

    // export: the same file as the native build writes, byte for byte.
    let state = prepared_state(dir);
    let native_state = prepared_state(&dir.join("native"));
    std::fs::copy(state.join("device.json"), native_state.join("device.json")).unwrap();
    let native =
        Client::native().ok(&["--state-dir", native_state.to_str().unwrap(), "export", "--format", "wg-quick"]);
    let sd = client.path(&state);
    let exported = client.ok(&["--state-dir", &sd, "export", "--format", "wg-quick"]);
    assert_eq!(exported, native, "{} export differs from the native one", client.name);
    assert!(
        exported.contains(&format!("PrivateKey = {WG_KEY}\n")) && exported.contains("AllowedIPs = 198.18.1.0/24\n")
    );
    let qr = client.ok(&["--state-dir", &sd, "export", "--format", "qr"]);
    assert!(qr.lines().count() > 20 && qr.contains('█'), "{qr}");

    // enroll: a bad pin is refused before any connection; with a good one the keys are made,
    // the state directory is made (and restricted), and the closed port is reported.
    let fresh = client.path(&dir.join("fresh"));
    let coordinator = format!("https://127.0.0.1:{}", free_port());
    let err = client.fails(&[
        "--state-dir",
        &fresh,
        "enroll",
        "--coordinator",
        &coordinator,
        "--token",
        "bqd_a_b",
        "--ca-pin",
        "sha256:00",
    ]);
    assert!(err.contains("--ca-pin must be"), "{err}");
    let pin = format!("sha256:{}", "ab".repeat(32));
    let err = client.fails(&[
        "--state-dir",
        &fresh,
        "enroll",
        "--coordinator",
        &coordinator,
        "--token",
        "bqd_a_b",
        "--ca-pin",
        &pin,
    ]);
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("bqd_a_b"), "the token is never printed: {err}");
    assert!(dir.join("fresh/wg.key").exists(), "the WireGuard key was made and stored");
    assert!(!dir.join("fresh/device.json").exists(), "no half enrollment");

    // send without `run` and without an ingest: refused, but the event waits in the spool.
    let err = client.fails(&["--state-dir", &sd, "send", "--type", "door", "--payload", r#"{"open":true}"#]);
    assert!(err.contains("kept in the spool"), "{err}");
    let spooled = spool_lines(&state);
    assert_eq!(spooled.len(), 1, "{spooled:?}");
    assert_eq!(spooled[0]["event"]["type"], "door");
    assert_eq!(spooled[0]["event"]["payload_json"], r#"{"open":true}"#);
    let err = client.fails(&["--state-dir", &sd, "send", "--type", "door", "--payload", "{not json"]);
    assert!(err.contains("not JSON"), "{err}");

    // run + send: through the local socket (named pipe under Wine); `run` spools it.
    let mut run = client.command(&["--state-dir", &sd, "run"]);
    let log = std::fs::File::create(dir.join(format!("run-{}.log", client.name))).unwrap();
    run.stdout(log.try_clone().unwrap()).stderr(log);
    let mut child = run.spawn().expect("start run");
    let reply = wait_for("run to take events on its local socket", Duration::from_secs(60), || {
        let out = client.run(&["--state-dir", &sd, "send", "--type", "temp", "--payload", r#"{"c":21.5}"#]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && stdout.contains("spooled")).then_some(stdout)
    });
    let _ = child.kill();
    let _ = child.wait();
    let reply: serde_json::Value = serde_json::from_str(reply.trim()).expect("reply is JSON");
    let id = reply["id"].as_str().expect("an id").to_string();
    assert!(spool_lines(&state).iter().any(|l| l["event"]["id"] == id.as_str() && l["event"]["type"] == "temp"));
    let log = std::fs::read_to_string(dir.join(format!("run-{}.log", client.name))).unwrap();
    assert!(log.contains("running as device plc1"), "{log}");
}

#[test]
fn windows_build_runs_under_wine() {
    let exe = cross_bin("x86_64-pc-windows-gnu", "berqenas-device.exe");
    let size = std::fs::metadata(&exe).unwrap().len();
    assert!(size < 10 * 1024 * 1024, "the Windows binary is {size} bytes, over 10 MB");
    let dir = tempfile::tempdir().unwrap();
    let client = Client::windows(dir.path());
    exercise(&client, dir.path());
    client.end_wine();
}

#[test]
fn aarch64_static_build_runs_under_qemu() {
    let exe = cross_bin("aarch64-unknown-linux-musl", "berqenas-device");
    let size = std::fs::metadata(&exe).unwrap().len();
    assert!(size < 10 * 1024 * 1024, "the static aarch64 binary is {size} bytes, over 10 MB");
    let dir = tempfile::tempdir().unwrap();
    exercise(&Client::aarch64(), dir.path());
}

#[test]
fn armv7_static_build_runs_under_qemu() {
    let exe = cross_bin("armv7-unknown-linux-gnueabihf", "berqenas-device");
    let size = std::fs::metadata(&exe).unwrap().len();
    assert!(size < 10 * 1024 * 1024, "the static armv7 binary is {size} bytes, over 10 MB");
    let dir = tempfile::tempdir().unwrap();
    exercise(&Client::armv7(), dir.path());
}
