//! The three images as `deploy/images/build.sh` makes them (buildah, FROM scratch) from the static
//! musl binaries of the `image-test` profile (deploy/test.sh builds those): each image's
//! configuration (non-root numeric user, entrypoint, volume, OCI labels), its files (the binary
//! and what it needs, no shell anywhere), and then, with podman, the coordinator image initialized
//! and serving: `/healthz` over TLS verified against the cluster CA from the volume, and
//! `berqenas-coordinator cluster status` run inside the container. The agent image's copied host
//! tools (nft, wireguard-go, pg_dump, psql) start in it, and the agent image joins the
//! coordinator's container (token from the environment, CA pinned) and reports in. Where podman
//! cannot start a container on the machine (an OCI runtime refusal), the run part prints NOT RUN
//! with the reason; the build and inspection are checked regardless.

use berqenas_tests::{free_port, wait_for, workspace_root};
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const PROFILE: &str = "image-test";
const TRIPLE: &str = "x86_64-unknown-linux-musl";
const TAG: &str = "image-test";
const UID: u32 = 10001;
const BINS: [&str; 3] = ["berqenas-coordinator", "berqenas-node-agent", "berqenas-device"];
/// Anything that would let someone who got into a container run a script.
const SHELLS: [&str; 6] = ["sh", "bash", "dash", "ash", "busybox", "zsh"];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|c| c.exists()))
        .unwrap_or_else(|| {
            panic!("{name} is missing: deploy/test.sh installs it (apt-get install buildah podman runc)")
        })
}

fn output(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

fn succeed(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn workspace_version() -> String {
    let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("read Cargo.toml");
    let package = manifest.split("[workspace.package]").nth(1).expect("[workspace.package]");
    let line = package.lines().find(|l| l.starts_with("version = ")).expect("version");
    line.trim_start_matches("version = ").trim_matches('"').to_string()
}

/// The images and containers this test made, removed when it ends (also when it fails, after
/// printing the containers' logs).
struct Cleanup {
    podman: PathBuf,
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            if std::thread::panicking() {
                let logs = output(&self.podman, &["logs", c]);
                eprintln!(
                    "----- podman logs {c} -----\n{}{}\n----- end -----",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            // With the anonymous volumes of the image's VOLUMEs the test did not mount.
            let _ = output(&self.podman, &["rm", "--force", "--volumes", "--time", "5", c]);
        }
        for i in &self.images {
            let _ = output(&self.podman, &["rmi", "--force", i]);
        }
    }
}

/// The flags every `podman run` here takes. Podman's defaults raise the container's open-file
/// and process limits past the caller's, which needs CAP_SYS_RESOURCE (root on our test machines
/// lacks it): the container keeps the caller's open-file limit and at most 4,096 processes.
/// crun refuses this machine's hybrid cgroup layout (v1 controllers, one on v2); runc takes it.
fn run_flags() -> Vec<String> {
    use rustix::process::{getrlimit, Resource};
    let nofile = getrlimit(Resource::Nofile);
    let (soft, hard) = (nofile.current.unwrap_or(1 << 20), nofile.maximum.unwrap_or(1 << 20));
    let nproc = getrlimit(Resource::Nproc).current.unwrap_or(4096).min(4096);
    let mut flags = vec![];
    if let Some(runc) =
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| d.join("runc").exists()))
    {
        flags.extend(["--runtime".to_string(), runc.join("runc").to_string_lossy().into_owned()]);
    }
    flags.extend([
        "--ulimit".to_string(),
        format!("nofile={soft}:{hard}"),
        "--ulimit".to_string(),
        format!("nproc={nproc}:{nproc}"),
    ]);
    flags
}

/// `podman run [flags] ARGS…`, the runtime flag first (it is a global option).
fn podman_run(podman: &Path, args: &[&str]) -> Output {
    let flags = run_flags();
    let (global, run): (Vec<&str>, Vec<&str>) = if flags.first().map(String::as_str) == Some("--runtime") {
        (vec![flags[0].as_str(), flags[1].as_str()], flags[2..].iter().map(String::as_str).collect())
    } else {
        (vec![], flags.iter().map(String::as_str).collect())
    };
    let mut all = global;
    all.push("run");
    all.extend(run);
    all.extend(args);
    output(podman, &all)
}

/// Every path in the image (relative, `/`-separated) and whether it is a regular file, read from
/// a buildah working container's mounted root.
fn image_files(buildah: &Path, image: &str) -> Vec<(String, bool)> {
    let id = succeed("buildah from", output(buildah, &["from", "--pull-never", "--quiet", image])).trim().to_string();
    let root = PathBuf::from(succeed("buildah mount", output(buildah, &["mount", &id])).trim());
    let mut files = vec![];
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read image dir") {
            let path = entry.expect("dir entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let rel = path.strip_prefix(&root).expect("under root").to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(path);
            }
            files.push((rel, meta.is_file()));
        }
    }
    let _ = output(buildah, &["umount", &id]);
    let _ = output(buildah, &["rm", &id]);
    files.sort();
    files
}

/// Static (static-pie, as Rust's musl target links): no program interpreter, no shared library.
fn is_static(path: &Path) -> bool {
    let file = path.to_string_lossy();
    let headers = succeed("readelf -l", output(Path::new("readelf"), &["-l", &file]));
    let dynamic = succeed("readelf -d", output(Path::new("readelf"), &["-d", &file]));
    !headers.contains("INTERP") && !dynamic.contains("NEEDED")
}

#[test]
fn images_are_from_scratch_non_root_without_a_shell_and_the_coordinator_serves_in_podman() {
    assert!(
        rustix::process::geteuid().is_root(),
        "building images with buildah needs root (deploy/test.sh runs as root)"
    );
    let buildah = tool("buildah");
    let podman = tool("podman");
    let bin_dir = target_dir().join(TRIPLE).join(PROFILE);
    for b in BINS {
        let path = bin_dir.join(b);
        assert!(
            path.exists(),
            "{} is missing: deploy/images/build.sh --profile {PROFILE} --no-images builds it (deploy/test.sh does)",
            path.display()
        );
        assert!(is_static(&path), "{} is not a static binary", path.display());
    }
    let mut cleanup = Cleanup {
        podman: podman.clone(),
        containers: vec![],
        images: BINS.iter().map(|b| format!("localhost/{b}:{TAG}")).collect(),
    };
    succeed(
        "deploy/images/build.sh",
        output(&workspace_root().join("deploy/images/build.sh"), &["--no-cargo", "--profile", PROFILE, "--tag", TAG]),
    );

    let version = workspace_version();
    for b in BINS {
        let image = format!("localhost/{b}:{TAG}");
        let inspect: Value =
            serde_json::from_str(&succeed("podman image inspect", output(&podman, &["image", "inspect", &image])))
                .expect("inspect json");
        let config = &inspect[0]["Config"];
        assert_eq!(config["User"], format!("{UID}:{UID}"), "{image}: the user is numeric and not root");
        assert_eq!(config["Entrypoint"], serde_json::json!([format!("/usr/local/bin/{b}")]), "{image}: entrypoint");
        // The node agent runs as root with few capabilities (every manifest): its state is root's.
        let state = if b == "berqenas-node-agent" { "/var/lib/berqenas-agent" } else { "/var/lib/berqenas" };
        assert!(config["Volumes"].get(state).is_some(), "{image}: state volume {state}: {config}");
        let labels = &config["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], version.as_str(), "{image}: version label");
        assert_eq!(labels["org.opencontainers.image.title"], b, "{image}: title label");
        assert!(
            labels["org.opencontainers.image.source"].as_str().is_some_and(|s| !s.is_empty()),
            "{image}: source label: {labels}"
        );
        assert_eq!(
            inspect[0]["Annotations"]["org.opencontainers.image.version"],
            version.as_str(),
            "{image}: annotation"
        );
        // FROM scratch: one layer, no history of a base image.
        assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().map(Vec::len), Some(1), "{image}: one layer");

        let files = image_files(&buildah, &image);
        for (path, _) in &files {
            let name = path.rsplit('/').next().unwrap_or(path);
            assert!(!SHELLS.contains(&name), "{image} carries a shell: /{path}");
        }
        let regular: BTreeSet<&str> = files.iter().filter(|(_, f)| *f).map(|(p, _)| p.as_str()).collect();
        let binary = format!("usr/local/bin/{b}");
        assert!(regular.contains(binary.as_str()), "{image}: no /{binary}: {regular:?}");
        match b {
            // The coordinator's image is its binary and the two files naming its user.
            "berqenas-coordinator" => {
                assert_eq!(regular, BTreeSet::from(["etc/group", "etc/passwd", binary.as_str()]), "{image}'s files")
            }
            "berqenas-node-agent" => {
                for needed in [
                    "usr/sbin/nft",
                    "usr/bin/wireguard-go",
                    "usr/bin/pg_dump",
                    "usr/bin/psql",
                    "etc/ssl/certs/ca-certificates.crt",
                ] {
                    assert!(regular.contains(needed), "{image}: no /{needed}");
                }
            }
            _ => assert!(regular.contains("usr/bin/wireguard-go"), "{image}: no wireguard-go"),
        }
    }

    // Can this machine start a container at all? An OCI runtime refusal (no cgroups, no user
    // namespaces, a locked-down kernel) is the machine's, not the image's: say so loudly.
    let coordinator = format!("localhost/berqenas-coordinator:{TAG}");
    let probe = podman_run(&podman, &["--rm", "--network", "host", &coordinator, "--version"]);
    if !probe.status.success() {
        let stderr = String::from_utf8_lossy(&probe.stderr);
        if stderr.contains("OCI") || stderr.contains("runc") || stderr.contains("crun") {
            eprintln!("\n==> NOT RUN: podman cannot start containers on this machine: {}", stderr.trim());
            eprintln!("==> NOT RUN: the images were built and inspected; running them was not checked\n");
            return;
        }
        panic!("podman run {coordinator} --version failed: {stderr}");
    }
    assert!(String::from_utf8_lossy(&probe.stdout).contains(&version), "--version in the container");

    // No shell to exec into, as any user.
    let shell =
        podman_run(&podman, &["--rm", "--network", "host", "--entrypoint", "/bin/sh", &coordinator, "-c", "true"]);
    assert!(!shell.status.success(), "the coordinator image ran /bin/sh");

    // The node agent's copied host tools run in its image (their libraries came along).
    let agent = format!("localhost/berqenas-node-agent:{TAG}");
    for (program, says) in [
        ("/usr/sbin/nft", "nftables"),
        ("/usr/bin/wireguard-go", "wireguard-go"),
        ("/usr/bin/pg_dump", "pg_dump (PostgreSQL)"),
        ("/usr/bin/psql", "psql (PostgreSQL)"),
        ("/usr/local/bin/berqenas-node-agent", version.as_str()),
    ] {
        let out = succeed(
            program,
            podman_run(&podman, &["--rm", "--network", "none", "--entrypoint", program, &agent, "--version"]),
        );
        assert!(out.contains(says), "{program} --version in the agent image: {out}");
    }
    let device = format!("localhost/berqenas-device:{TAG}");
    let out = succeed("device --version", podman_run(&podman, &["--rm", "--network", "none", &device, "--version"]));
    assert!(out.contains(&version), "berqenas-device --version: {out}");

    // The coordinator: init into a volume owned by the image's user, then serve from it with the
    // REST API over TLS (host networking, loopback ports).
    let data = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::chown(data.path(), Some(UID), Some(UID)).expect("chown the volume to the image's user");
    let volume = format!("{}:/var/lib/berqenas", data.path().display());
    let (raft, api, node) = (free_port(), free_port(), free_port());
    let init = succeed(
        "init in the container",
        podman_run(
            &podman,
            &[
                "--rm",
                "--network",
                "host",
                "--volume",
                &volume,
                &coordinator,
                "init",
                "--data-dir",
                "/var/lib/berqenas",
                "--id",
                "1",
                "--raft-listen",
                &format!("127.0.0.1:{raft}"),
                "--api-listen",
                &format!("127.0.0.1:{api}"),
                "--node-listen",
                &format!("127.0.0.1:{node}"),
                "--output",
                "json",
            ],
        ),
    );
    let init: Value = serde_json::from_str(&init).expect("init json");
    let key = init["admin_api_key"].as_str().expect("admin key").to_string();
    let owner = std::fs::metadata(data.path().join("node.json")).expect("node.json").uid();
    assert_eq!(owner, UID, "the coordinator wrote its data as uid {UID}");

    let name = format!("berqenas-image-test-{}", std::process::id());
    cleanup.containers.push(name.clone());
    succeed(
        "podman run -d serve",
        podman_run(
            &podman,
            &[
                "--detach",
                "--name",
                &name,
                "--network",
                "host",
                "--volume",
                &volume,
                &coordinator,
                "serve",
                "--data-dir",
                "/var/lib/berqenas",
                "--api-tls",
                "on",
            ],
        ),
    );
    let ca = data.path().join("ca.pem");
    let url = format!("https://127.0.0.1:{api}/healthz");
    let body = wait_for("/healthz over TLS from the container", Duration::from_secs(60), || {
        let out = output(Path::new("curl"), &["-sS", "--max-time", "2", "--cacert", &ca.to_string_lossy(), &url]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(body.trim(), "ok");
    // Plain HTTP is not served on that port.
    let plain = output(Path::new("curl"), &["-sS", "--max-time", "2", &format!("http://127.0.0.1:{api}/healthz")]);
    assert!(!plain.status.success() || !String::from_utf8_lossy(&plain.stdout).contains("ok"), "plain HTTP answered");

    // The server process runs as the image's user.
    let pid = succeed("podman inspect pid", output(&podman, &["inspect", "--format", "{{.State.Pid}}", &name]));
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).expect("container process status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == UID.to_string()), "container process: {uid_line}");

    // The CLI inside the container against it; the key travels in the environment (podman's
    // `-e NAME` takes the value from its own environment), never on a command line.
    let endpoint = format!("https://127.0.0.1:{api}");
    let cli = |args: &[&str]| -> Value {
        let out = Command::new(&podman)
            .args(["exec", "--env", "BERQENAS_API_KEY", &name, "/usr/local/bin/berqenas-coordinator"])
            .args(["--endpoint", &endpoint, "--ca-cert", "/var/lib/berqenas/ca.pem", "--output", "json"])
            .args(args)
            .env("BERQENAS_API_KEY", &key)
            .stdin(Stdio::null())
            .output()
            .expect("podman exec");
        serde_json::from_str(&succeed(&format!("{args:?} in the container"), out)).expect("json")
    };
    let status = cli(&["cluster", "status"]);
    assert_eq!(status["node_id"], 1, "{status}");
    assert_eq!(status["leader_id"], 1, "{status}");
    assert_eq!(status["state"], "Leader", "{status}");

    // The agent's image joins it (token from the environment, the CA pinned) and reports in.
    let token = cli(&["node", "token", "create", "--roles", "db", "--ttl", "10m"]);
    let agent_data = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::chown(agent_data.path(), Some(UID), Some(UID)).expect("chown");
    let agent_volume = format!("{}:/var/lib/berqenas", agent_data.path().display());
    let flags = run_flags();
    let (global, run) = flags.split_at(if flags.first().map(String::as_str) == Some("--runtime") { 2 } else { 0 });
    let join = Command::new(&podman)
        .args(global)
        .arg("run")
        .args(run)
        .args(["--rm", "--network", "host", "--env", "BERQENAS_JOIN_TOKEN", "--volume", &agent_volume, &agent, "join"])
        .args([
            "--coordinator",
            &format!("https://127.0.0.1:{node}"),
            "--ca-pin",
            token["ca_fingerprint"].as_str().unwrap(),
        ])
        .args([
            "--roles",
            "db",
            "--data-dir",
            "/var/lib/berqenas",
            "--driver",
            "dir",
            "--driver-path",
            "/var/lib/berqenas/db",
        ])
        .env("BERQENAS_JOIN_TOKEN", token["token"].as_str().expect("token"))
        .stdin(Stdio::null())
        .output()
        .expect("podman run join");
    succeed("the agent image's join", join);
    let agent_name = format!("berqenas-image-test-agent-{}", std::process::id());
    cleanup.containers.push(agent_name.clone());
    let metrics = format!("127.0.0.1:{}", free_port());
    succeed(
        "podman run -d the agent",
        podman_run(
            &podman,
            &[
                "--detach",
                "--name",
                &agent_name,
                "--network",
                "host",
                "--volume",
                &agent_volume,
                &agent,
                "run",
                "--config",
                "/var/lib/berqenas/agent.toml",
                "--metrics-listen",
                &metrics,
            ],
        ),
    );
    wait_for("the agent container's first report", Duration::from_secs(60), || {
        let nodes = cli(&["node", "list"]);
        nodes
            .as_array()
            .and_then(|n| n.first())
            .is_some_and(|n| n["last_seen_ms"].as_u64().unwrap_or(0) > 0)
            .then_some(())
    });
    succeed("podman stop the agent", output(&podman, &["stop", "--time", "20", &agent_name]));

    let exec_shell = output(&podman, &["exec", &name, "/bin/sh", "-c", "true"]);
    assert!(!exec_shell.status.success(), "a shell ran inside the coordinator's container");

    // SIGTERM ends it cleanly.
    succeed("podman stop", output(&podman, &["stop", "--time", "20", &name]));
    let code =
        succeed("podman inspect exit code", output(&podman, &["inspect", "--format", "{{.State.ExitCode}}", &name]));
    assert_eq!(code.trim(), "0", "the coordinator's exit code after SIGTERM");
}
