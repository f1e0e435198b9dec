//! The packages' systemd units under a real systemd. A container (`systemd-nspawn`, a network
//! namespace of its own) boots this host's systemd on a throwaway overlay of the host's root (the
//! upper layer is a tmpfs: the host's files never change), starting from Debian's stock users
//! (`base-passwd`) and an empty dpkg override list. In it the three packages are installed with
//! `dpkg -i` (maintainer scripts and `systemd-sysusers` as on a real host), a coordinator is
//! bootstrapped as its unit's comment says and started by systemd, a node agent joins with a
//! token from its environment and is started by systemd, and a tenant placed on it becomes
//! active: its WireGuard interface (wireguard-go) and the nftables table are made from inside
//! the agent unit's sandbox. Each service runs as its own user with exactly the capabilities its
//! unit lists and `no_new_privs`, and the coordinator's state survives a restart.
//! Missing tools (systemd-nspawn, nsenter) fail loudly: `deploy/test.sh` installs them.

use crate::packages::build_packages;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One booted container; powered off, unmounted and removed when dropped.
struct Container {
    _dir: tempfile::TempDir,
    upper: PathBuf,
    root: PathBuf,
    nspawn: Child,
    pid1: u32,
}

fn mount(args: &[&str]) {
    let out = Command::new("mount").args(args).output().expect("mount");
    assert!(out.status.success(), "mount {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Container {
    fn boot(debs: &Path) -> Container {
        let dir = tempfile::tempdir().unwrap();
        let (upper, root) = (dir.path().join("upper"), dir.path().join("root"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        mount(&["-t", "tmpfs", "-o", "size=2g,mode=0700", "tmpfs", upper.to_str().unwrap()]);
        for d in ["up", "work"] {
            std::fs::create_dir(upper.join(d)).unwrap();
        }
        let layers = format!("lowerdir=/,upperdir={0}/up,workdir={0}/work", upper.display());
        mount(&["-t", "overlay", "overlay", "-o", &layers, root.to_str().unwrap()]);
        // Debian's stock users and groups (this host's own may be anything), and a dpkg override
        // list without the host's groups.
        let etc = root.join("etc");
        let passwd = std::fs::read_to_string("/usr/share/base-passwd/passwd.master").expect("base-passwd");
        let group = std::fs::read_to_string("/usr/share/base-passwd/group.master").expect("base-passwd");
        let names = |s: &str, tail: &str| -> String {
            s.lines().filter_map(|l| l.split(':').next()).map(|n| format!("{n}{tail}\n")).collect()
        };
        std::fs::write(etc.join("passwd"), &passwd).unwrap();
        std::fs::write(etc.join("group"), &group).unwrap();
        std::fs::write(etc.join("shadow"), names(&passwd, ":*:20000:0:99999:7:::")).unwrap();
        std::fs::write(etc.join("gshadow"), names(&group, ":*::")).unwrap();
        let id: String = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap().trim().replace('-', "");
        std::fs::write(etc.join("machine-id"), format!("{id}\n")).unwrap();
        std::fs::write(root.join("var/lib/dpkg/statoverride"), "").unwrap();
        let inside = root.join("opt/berqenas-debs");
        std::fs::create_dir_all(&inside).unwrap();
        for deb in std::fs::read_dir(debs).unwrap() {
            let deb = deb.unwrap().path();
            std::fs::copy(&deb, inside.join(deb.file_name().unwrap())).unwrap();
        }

        let machine = format!("bq-units-{}", std::process::id());
        let nspawn = Command::new("systemd-nspawn")
            .args(["--quiet", "--keep-unit", "--register=no", "--private-network", "--bind=/dev/net/tun"])
            .arg("-D")
            .arg(&root)
            .args(["-M", &machine, "--boot", "systemd.unit=basic.target"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-nspawn cannot run: deploy/test.sh installs systemd-container");
        let mut c = Container { _dir: dir, upper, root, pid1: 0, nspawn };
        let deadline = Instant::now() + Duration::from_secs(60);
        c.pid1 = loop {
            let out = Command::new("pgrep").args(["--parent", &c.nspawn.id().to_string()]).output().unwrap();
            if let Some(pid) = String::from_utf8_lossy(&out.stdout).lines().next().and_then(|l| l.trim().parse().ok()) {
                break pid;
            }
            assert!(c.nspawn.try_wait().unwrap().is_none(), "systemd-nspawn exited");
            assert!(Instant::now() < deadline, "the container's systemd did not start");
            std::thread::sleep(Duration::from_millis(100));
        };
        // `--wait` returns once the boot is done: running, or degraded when some unit failed.
        let state = loop {
            let out = c.sh("systemctl is-system-running --wait", &[]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" || Instant::now() > deadline {
                break state;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(state == "running" || state == "degraded", "the container's systemd: {state}");
        c
    }

    /// `sh -c script` in all of the container's namespaces, with `env` added.
    fn sh(&self, script: &str, env: &[(&str, &str)]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid1.to_string(), "-a", "sh", "-c", script])
            .envs(env.iter().copied())
            .output()
            .expect("nsenter cannot run: deploy/test.sh installs util-linux")
    }

    fn ok(&self, script: &str, env: &[(&str, &str)]) -> String {
        let out = self.sh(script, env);
        assert!(
            out.status.success(),
            "in the container: {script}: {}\n{}{}\njournal:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&self.sh("journalctl -b --no-pager -n 60 -u 'berqenas*'", &[]).stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Uid, CapEff and NoNewPrivs of a unit's main process.
    fn process(&self, unit: &str) -> (String, String, String) {
        let status = self.ok(&format!("cat /proc/$(systemctl show -p MainPID --value {unit})/status"), &[]);
        let field = |name: &str| -> String {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
                .unwrap_or_else(|| panic!("{unit}: no {name} in\n{status}"))
        };
        (field("Uid"), field("CapEff"), field("NoNewPrivs"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.pid1 != 0 {
            let _ = self.sh("systemctl poweroff --no-block", &[]);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.nspawn.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        for m in [&self.root, &self.upper] {
            let _ = Command::new("umount").arg(m).status();
        }
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_packages_units_run_a_coordinator_and_a_gateway_under_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let debs = dir.path().join("debs");
    build_packages(&debs);
    let c = Container::boot(&debs);
    c.ok("dpkg -i /opt/berqenas-debs/*.deb", &[]);
    let uid = |user: &str| c.ok(&format!("id -u {user}"), &[]).trim().to_string();
    let (coordinator_uid, agent_uid) = (uid("berqenas"), uid("berqenas-agent"));

    // Bootstrap as the unit's comment says, then systemd runs it.
    let init = json(&c.ok(
        "umask 077; runuser -u berqenas -- berqenas-coordinator init --data-dir /var/lib/berqenas/coordinator \
         --id 1 --raft-listen 127.0.0.1:7101 --api-listen 127.0.0.1:7201 --node-listen 127.0.0.1:7301 \
         --vpn-pool 198.18.0.0/15 --output json",
        &[],
    ));
    let key = init["admin_api_key"].as_str().expect("admin key").to_string();
    let admin = [("BERQENAS_ENDPOINT", "http://127.0.0.1:7201"), ("BERQENAS_API_KEY", key.as_str())];
    let serving = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.sh("berqenas-coordinator tenant list --output json", &admin).status.success() {
            assert!(Instant::now() < deadline, "the coordinator does not answer {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    c.ok("systemctl start berqenas-coordinator", &[]);
    serving("once started by systemd");
    assert_eq!(c.ok("systemctl is-active berqenas-coordinator", &[]).trim(), "active");
    assert_eq!(
        c.process("berqenas-coordinator"),
        (coordinator_uid, "0000000000000000".into(), "1".into()),
        "the coordinator runs as berqenas, no capability, no_new_privs"
    );

    // A gateway + db agent joins (the token only in its environment) and systemd runs it.
    let token =
        json(&c.ok("berqenas-coordinator node token create --roles gateway,db --ttl 10m --output json", &admin));
    let join_token = token["token"].as_str().expect("token");
    let pin = token["ca_fingerprint"].as_str().expect("pin");
    c.ok(
        &format!(
            "runuser -w BERQENAS_JOIN_TOKEN -u berqenas-agent -- berqenas-node-agent join \
             --coordinator https://127.0.0.1:7301 --ca-pin {pin} --roles gateway,db --address 198.51.100.10 \
             --data-dir /var/lib/berqenas/agent --driver none --public-address 198.51.100.10 \
             --public-ports 15000-15099 >/dev/null"
        ),
        &[("BERQENAS_JOIN_TOKEN", join_token)],
    );
    c.ok("systemctl start berqenas-node-agent", &[]);
    c.ok("berqenas-coordinator tenant create --name acme --output json", &admin);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = json(&c.ok("berqenas-coordinator tenant get acme --output json", &admin));
        if t["status"] == "active" {
            break;
        }
        assert!(Instant::now() < deadline, "acme never became active: {t}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // What the agent made from inside its sandbox: the tenant's WireGuard interface and the table.
    assert!(c.ok("ip -o link show bqt1", &[]).contains("bqt1"));
    assert!(c.ok("nft list tables", &[]).contains("table inet berqenas"));
    // CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_KILL, CAP_NET_ADMIN: the
    // unit's list, nothing more.
    assert_eq!(
        c.process("berqenas-node-agent"),
        (agent_uid, "000000000000102f".into(), "1".into()),
        "the agent runs as berqenas-agent with its unit's capabilities only"
    );
    let nodes = json(&c.ok("berqenas-coordinator node list --output json", &admin));
    assert_eq!(
        (nodes[0]["gateway"]["wireguard_backend"].as_str(), nodes[0]["gateway"]["conditions"].as_array().map(Vec::len)),
        (Some("userspace"), Some(0)),
        "{nodes}"
    );

    // A stop ends within the unit's TimeoutStopSec (no SIGKILL, though agents hold streams), and
    // the coordinator's state is in its StateDirectory: the restart serves the same tenant.
    c.ok("systemctl restart berqenas-coordinator", &[]);
    let journal = c.ok("journalctl -b --no-pager -u berqenas-coordinator", &[]);
    assert!(!journal.contains("timed out") && !journal.contains("SIGKILL"), "{journal}");
    serving("after a restart");
    let t = json(&c.ok("berqenas-coordinator tenant get acme --output json", &admin));
    assert_eq!(t["status"], "active", "{t}");
}
