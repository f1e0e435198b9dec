//! The Debian packages (`deploy/package.sh`, cargo-deb) of the three binaries, made from the
//! debug binaries already built (no release build in the tests): they build, lintian finds no
//! error or warning, each lists its binary, unit, man pages and completions; installed with `dpkg --root`
//! into a throwaway root (the maintainer scripts run too, against that root), the service users
//! exist, `/etc/berqenas` and the secrets files have their modes and owners, the units pass
//! `systemd-analyze verify` and stay under an exposure score, the man pages render and the bash completions load. Missing tools
//! (cargo-deb, lintian, dpkg, systemd-analyze, man) fail loudly: `deploy/test.sh` installs them.

use berqenas_tests::workspace_root;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BINS: [&str; 3] = ["berqenas-coordinator", "berqenas-node-agent", "berqenas-device"];

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run ({e}): deploy/test.sh installs it"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `deploy/package.sh` on the debug build, into `dir`; the .deb of each binary. One at a time
/// (`flock`): the script remakes the man pages and completions in target/debug/manual/.
pub(crate) fn build_packages(dir: &Path) -> BTreeMap<&'static str, PathBuf> {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    let lock = target.join("debug/manual.lock");
    let script = workspace_root().join("deploy/package.sh");
    let out = dir.to_str().unwrap();
    ok(
        "flock",
        &[
            lock.to_str().unwrap(),
            script.to_str().unwrap(),
            "--profile",
            "dev",
            "--no-build",
            "--fast",
            "--output",
            out,
        ],
    );
    BINS.iter()
        .map(|bin| {
            let deb = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    name.starts_with(&format!("{bin}_")) && name.ends_with(".deb")
                })
                .unwrap_or_else(|| panic!("no {bin} package in {}", dir.display()));
            (*bin, deb)
        })
        .collect()
}

#[test]
fn packages_build_pass_lintian_and_ship_binary_unit_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let debs = build_packages(dir.path());

    for (bin, deb) in &debs {
        let deb = deb.to_str().unwrap();
        let listing = ok("dpkg-deb", &["-c", deb]);
        let files: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().nth(5)).collect();
        for want in [
            format!("./usr/bin/{bin}"),
            format!("./usr/lib/systemd/system/{bin}.service"),
            format!("./usr/share/man/man1/{bin}.1.gz"),
            format!("./usr/share/man/man1/{bin}-completions.1.gz"),
            format!("./usr/share/bash-completion/completions/{bin}"),
            format!("./usr/share/zsh/vendor-completions/_{bin}"),
            format!("./usr/share/fish/vendor_completions.d/{bin}.fish"),
            format!("./usr/share/{bin}/completions/{bin}.ps1"),
        ] {
            assert!(files.contains(&want.as_str()), "{deb} lacks {want}:\n{listing}");
        }
        // Every subcommand has its page (`run` is the service's).
        let run_page = if *bin == "berqenas-coordinator" { "serve" } else { "run" };
        let page = format!("./usr/share/man/man1/{bin}-{run_page}.1.gz");
        assert!(files.contains(&page.as_str()), "{deb} lacks {page}");
        let line = listing.lines().find(|l| l.ends_with(&format!("./usr/bin/{bin}"))).unwrap();
        assert!(line.starts_with("-rwxr-xr-x 0/0 "), "{line}");
    }

    // The coordinator's flags file is a conffile; its secrets are made by postinst, not shipped.
    let control = dir.path().join("control");
    ok("dpkg-deb", &["-e", debs["berqenas-coordinator"].to_str().unwrap(), control.to_str().unwrap()]);
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/berqenas/coordinator.env");
    let listing = ok("dpkg-deb", &["-c", debs["berqenas-coordinator"].to_str().unwrap()]);
    assert!(!listing.contains("coordinator.secrets"), "{listing}");
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("systemd-sysusers"), "{postinst}");

    // lintian: no error and no warning (an override says its reason in deploy/debian/lintian/).
    let mut args = vec!["--fail-on", "error,warning", "--no-tag-display-limit"];
    args.extend(debs.values().map(|p| p.to_str().unwrap()));
    let out = run("lintian", &args);
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "lintian: {}\n{report}", out.status);
    assert!(!report.lines().any(|l| l.starts_with("E: ") || l.starts_with("W: ")), "lintian:\n{report}");
}

/// The owner and group ids of `name` in `root`'s passwd.
fn ids(root: &Path, name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .unwrap_or_else(|| panic!("no user {name} in the root's passwd:\n{passwd}"));
    let f: Vec<&str> = line.split(':').collect();
    assert_eq!(f[6], "/usr/sbin/nologin", "{line}");
    assert!(f[2].parse::<u32>().unwrap() < 1000, "not a system user: {line}");
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

fn mode_owner(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.permissions().mode() & 0o7777, meta.uid(), meta.gid())
}

#[test]
fn packages_install_into_a_throwaway_root_with_users_private_secrets_and_valid_units() {
    let dir = tempfile::tempdir().unwrap();
    let debs = build_packages(&dir.path().join("debs"));
    // An empty dpkg database in the root; the maintainer scripts run on this host against
    // $DPKG_ROOT (chrootless: the root has no shell of its own), as `dpkg --root` installs do.
    let root = dir.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let root_arg = format!("--root={}", root.display());
    let mut args = vec![root_arg.as_str(), "--force-script-chrootless", "--force-depends", "--install"];
    args.extend(debs.values().map(|p| p.to_str().unwrap()));
    ok("dpkg", &args);

    let (coord_uid, coord_gid) = ids(&root, "berqenas");
    let (agent_uid, agent_gid) = ids(&root, "berqenas-agent");
    assert_ne!(coord_uid, agent_uid);
    assert_eq!(mode_owner(&root.join("etc/berqenas")), (0o755, 0, 0));
    assert_eq!(mode_owner(&root.join("etc/berqenas/coordinator.env")), (0o644, 0, 0));
    // Secrets: readable by the service (its group), by nobody else.
    assert_eq!(mode_owner(&root.join("etc/berqenas/coordinator.secrets")), (0o640, 0, coord_gid));
    assert_eq!(mode_owner(&root.join("etc/berqenas/node-agent.pgpass")), (0o600, agent_uid, agent_gid));
    assert_eq!(mode_owner(&root.join("var/lib/berqenas")), (0o755, 0, 0));
    assert_eq!(mode_owner(&root.join("var/lib/berqenas/coordinator")), (0o700, coord_uid, coord_gid));
    assert_eq!(mode_owner(&root.join("var/lib/berqenas/agent")), (0o700, agent_uid, agent_gid));
    let env = std::fs::read_to_string(root.join("etc/berqenas/coordinator.env")).unwrap();
    assert!(env.contains("BERQENAS_COORDINATOR_ARGS=\"\""), "{env}");

    let units = dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    for bin in BINS {
        // The unit as installed, its programs and man pages found in the root (`verify --root`
        // would want a whole systemd in it).
        let installed = std::fs::read_to_string(root.join(format!("usr/lib/systemd/system/{bin}.service"))).unwrap();
        let unit = units.join(format!("{bin}.service"));
        std::fs::write(&unit, installed.replace("/usr/bin/", &format!("{}/usr/bin/", root.display()))).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .env("MANPATH", root.join("usr/share/man"))
            .output()
            .expect("systemd-analyze cannot run: deploy/test.sh installs systemd");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success() && text.trim().is_empty(),
            "systemd-analyze verify {bin}.service: {}\n{text}",
            out.status
        );
        // Its hardening, as systemd scores it (exposure × 10; 1.5, 3.0 and 2.6 when written):
        // a weakened unit fails here.
        let threshold = match bin {
            "berqenas-coordinator" => "20",
            "berqenas-node-agent" => "35",
            _ => "30",
        };
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", &format!("--threshold={threshold}")])
            .arg(&unit)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{bin}.service exposure above {threshold}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );

        // The top man page renders without a warning.
        let page = root.join(format!("usr/share/man/man1/{bin}.1.gz"));
        let out = Command::new("man").args(["--warnings", "-l"]).arg(&page).env("MANWIDTH", "80").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "man -l {}: {stderr}", page.display());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("SYNOPSIS") && text.contains(bin), "{text}");

        // The bash completion loads and registers for the command.
        let script = root.join(format!("usr/share/bash-completion/completions/{bin}"));
        let probe = format!("source '{}' && complete -p {bin}", script.display());
        let registered = ok("bash", &["-c", &probe]);
        assert!(registered.contains(&format!(" {bin}")), "{registered}");
    }
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/berqenas-coordinator.service")).unwrap();
    assert!(unit.contains("\nUser=berqenas\n") && unit.contains("\nCapabilityBoundingSet=\n"), "{unit}");

    // Purge removes the secrets file postinst made and leaves the cluster's data.
    ok("dpkg", &[root_arg.as_str(), "--force-script-chrootless", "--force-depends", "--purge", "berqenas-coordinator"]);
    assert!(!root.join("etc/berqenas/coordinator.secrets").exists());
    assert!(!root.join("etc/berqenas/coordinator.env").exists());
    assert!(root.join("var/lib/berqenas/coordinator").is_dir());
    assert!(root.join("etc/berqenas/node-agent.pgpass").exists());
}
