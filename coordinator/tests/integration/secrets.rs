//! Secrets at rest and in the trail: the data directory is private whatever the umask, the audit
//! trail pages with cursors instead of a silent cap, and anonymous callers cannot write into a
//! customer's view of its tenant's trail.

use crate::harness::{stderr, Cluster, BIN};
use berqenas_tests::coordinator::{admin_key, init_args, serve_args, Coord};
use berqenas_tests::{run, wait_for, Proc};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// `BIN args…` under umask 022, as a default shell or service would run it.
fn umask_022(args: &[String]) -> Vec<String> {
    let mut all = vec!["-c".to_string(), "umask 022; exec \"$0\" \"$@\"".to_string(), BIN.to_string()];
    all.extend(args.iter().cloned());
    all
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).expect("metadata").permissions().mode() & 0o7777
}

/// Every directory under `dir` (itself included) and every file in them, with its mode.
fn modes(dir: &Path) -> Vec<(String, bool, u32)> {
    let mut out = vec![(dir.display().to_string(), true, mode(dir))];
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(modes(&path));
        } else {
            out.push((path.display().to_string(), false, mode(&path)));
        }
    }
    out
}

fn assert_private(dir: &Path) {
    let all = modes(dir);
    assert!(all.iter().any(|(p, _, _)| p.ends_with("raft.redb")), "{all:?}");
    for (path, is_dir, mode) in &all {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{path} is {mode:o}, want {want:o}");
    }
}

#[test]
fn data_dir_is_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut coord = Coord::new(1, tmp.path().join("c1"));
    let init = umask_022(&init_args(&coord.dir, &coord.listen(), "198.18.0.0/15"));
    let init: Vec<&str> = init.iter().map(String::as_str).collect();
    let key = admin_key(&run(Path::new("/bin/sh"), &init, &[]));
    assert_private(&coord.dir);

    // A data dir left wide by an older version (or by hand) is made private again at `serve`.
    std::fs::set_permissions(&coord.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    assert!(coord.dir.join("backup.key").exists(), "init makes the cluster backup key");
    for f in ["raft.redb", "node.json", "coordinator.key", "backup.key"] {
        std::fs::set_permissions(coord.dir.join(f), std::fs::Permissions::from_mode(0o644)).expect("chmod file");
    }
    let serve = umask_022(&serve_args(&coord.dir, 1, &coord.listen()));
    let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
    coord.proc = Some(Proc::spawn("coordinator-1", Path::new("/bin/sh"), &serve, tmp.path()));
    let port = coord.api;
    wait_for("coordinator API to listen", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
    let endpoint = coord.endpoint();
    let env = [("BERQENAS_ENDPOINT", endpoint.as_str()), ("BERQENAS_API_KEY", key.as_str())];
    let out = run(Path::new(BIN), &["tenant", "create", "--name", "acme"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_private(&coord.dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_pages_with_cursors_cover_the_whole_trail() {
    let c = Cluster::single();
    let base = c.nodes[0].endpoint();
    let http = reqwest::Client::new();
    for _ in 0..30 {
        let r = http.get(format!("{base}/api/v1/tenants?status=bogus")).bearer_auth(&c.key).send().await;
        assert_eq!(r.expect("request").status().as_u16(), 400);
    }
    let total = c.json(0, &["audit", "verify"])["total"].as_u64().expect("total");
    assert!(total > 30);

    // Backwards with the CLI: each page tells how to get the next one.
    let mut seen: Vec<u64> = Vec::new();
    let mut args: Vec<String> = ["audit", "list", "--limit", "7", "--output", "json"].map(String::from).to_vec();
    loop {
        let out = c.cli(0, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", stderr(&out));
        let page: Value = serde_json::from_slice(&out.stdout).expect("JSON page");
        let seqs: Vec<u64> = page.as_array().expect("array").iter().filter_map(|e| e["seq"].as_u64()).collect();
        assert!(seqs.len() <= 7);
        seen.splice(0..0, seqs);
        let err = stderr(&out);
        match err.split("repeat with --before ").nth(1) {
            Some(rest) => {
                let next = rest.trim().to_string();
                args =
                    ["audit", "list", "--limit", "7", "--output", "json", "--before", &next].map(String::from).to_vec();
            }
            None => break,
        }
    }
    assert_eq!(seen, (1..=total).collect::<Vec<_>>(), "every entry exactly once");

    // Forwards over REST: the header names the cursor.
    let resp =
        http.get(format!("{base}/api/v1/audit?after=10&limit=5")).bearer_auth(&c.key).send().await.expect("page");
    assert_eq!(resp.headers().get("x-audit-next-after").and_then(|h| h.to_str().ok()), Some("15"));
    let page: Value = resp.json().await.expect("JSON");
    assert_eq!(
        page.as_array().map(|a| a.iter().filter_map(|e| e["seq"].as_u64()).collect::<Vec<_>>()),
        Some(vec![11, 12, 13, 14, 15])
    );

    // Export walks every page.
    let export = c.ok(0, &["audit", "export"]);
    assert!(export.lines().count() as u64 >= total, "{} lines for {total} entries", export.lines().count());
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_refusals_never_appear_in_a_tenant_audit() {
    let c = Cluster::single();
    let base = c.nodes[0].endpoint();
    let http = reqwest::Client::new();
    c.ok(0, &["tenant", "create", "--name", "acme"]);
    c.ok(0, &["tenant", "create", "--name", "globex"]);
    let acme = c.json(0, &["apikey", "create", "--role", "customer", "--tenant", "acme"]);
    let (acme_id, acme) = (acme["key"]["id"].as_str().expect("id"), acme["token"].as_str().expect("token"));
    let globex = c.json(0, &["apikey", "create", "--role", "customer", "--tenant", "globex"]);
    let (globex_id, globex) = (globex["key"]["id"].as_str().expect("id"), globex["token"].as_str().expect("token"));

    // Anonymous callers, a forged key and another tenant's customer all aim at acme.
    let forged = format!("bqk_0123456789abcdef_{}", "0".repeat(64));
    for key in [None, Some(forged.as_str()), Some(globex)] {
        let mut get = http.get(format!("{base}/api/v1/tenant/acme"));
        let mut patch = http.patch(format!("{base}/api/v1/tenant/acme")).json(&json!({"db_quota": "1TB"}));
        let mut audit = http.get(format!("{base}/api/v1/tenant/acme/audit"));
        if let Some(k) = key {
            (get, patch, audit) = (get.bearer_auth(k), patch.bearer_auth(k), audit.bearer_auth(k));
        }
        for req in [get, patch, audit] {
            let status = req.send().await.expect("request").status().as_u16();
            assert!(status == 401 || status == 403, "refused: {status}");
        }
    }
    // acme's own customer is refused something too: that refusal is acme's to see.
    let own = http.delete(format!("{base}/api/v1/tenant/acme")).bearer_auth(acme).send().await.expect("delete");
    assert_eq!(own.status().as_u16(), 403);

    let trail: Value = http
        .get(format!("{base}/api/v1/tenant/acme/audit"))
        .bearer_auth(acme)
        .send()
        .await
        .expect("tenant audit")
        .json()
        .await
        .expect("JSON");
    let entries = trail.as_array().expect("array");
    assert!(entries.iter().any(|e| e["action"] == "tenant.create" && e["outcome"] == "ok"), "{trail}");
    assert!(entries.iter().any(|e| e["actor"] == acme_id && e["outcome"] == "rejected"), "own refusal shown: {trail}");
    for e in entries {
        assert_ne!(e["actor"], "anonymous", "anonymous refusal in the tenant's audit: {e}");
        assert_ne!(e["actor"], globex_id, "another tenant's key in acme's audit: {e}");
    }
}

/// `backup rotate-key` of acme through `coord`, started for it and stopped after: its refusal.
fn rotate_refusal(tmp: &Path, coord: &mut Coord, key: &str) -> String {
    let serve = serve_args(&coord.dir, 1, &coord.listen());
    let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
    coord.proc = Some(Proc::spawn("coordinator-1", Path::new(BIN), &serve, tmp));
    let port = coord.api;
    wait_for("coordinator API to listen", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
    let endpoint = coord.endpoint();
    let env = [("BERQENAS_ENDPOINT", endpoint.as_str()), ("BERQENAS_API_KEY", key)];
    wait_for("acme to exist", Duration::from_secs(20), || {
        let out = run(Path::new(BIN), &["tenant", "create", "--name", "acme"], &env);
        (out.status.success() || stderr(&out).contains("already exists")).then_some(())
    });
    let out = run(Path::new(BIN), &["backup", "rotate-key", "--tenant", "acme"], &env);
    assert!(!out.status.success(), "no data key to rotate here");
    coord.proc.take().expect("running").stop(Duration::from_secs(10));
    stderr(&out)
}

#[test]
fn a_cluster_initialised_before_backups_gets_its_backup_key_from_init_key() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut coord = Coord::new(1, tmp.path().join("c1"));
    let init = init_args(&coord.dir, &coord.listen(), "198.18.0.0/15");
    let init: Vec<&str> = init.iter().map(String::as_str).collect();
    let key = admin_key(&run(Path::new(BIN), &init, &[]));
    // As a data directory made before backups existed: no backup.key.
    let file = coord.dir.join("backup.key");
    std::fs::remove_file(&file).expect("remove backup.key");
    let err = rotate_refusal(tmp.path(), &mut coord, &key);
    assert!(err.contains("no cluster backup key"), "{err}");

    let dir = coord.dir.to_str().expect("utf-8").to_string();
    let made = umask_022(&["backup".into(), "init-key".into(), "--data-dir".into(), dir.clone()]);
    let made: Vec<&str> = made.iter().map(String::as_str).collect();
    let out = run(Path::new("/bin/sh"), &made, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&file), 0o600, "private whatever the umask");
    let hex = std::fs::read_to_string(&file).expect("backup.key");
    assert_eq!(hex.trim().len(), 64);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("cluster backup key") && !said.contains(hex.trim()), "names the key, never shows it: {said}");

    // Never over an existing key; another coordinator installs the same one with --from.
    let again = run(Path::new(BIN), &["backup", "init-key", "--data-dir", &dir], &[]);
    assert!(!again.status.success() && stderr(&again).contains("already holds"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(&file).expect("backup.key"), hex, "unchanged");
    let other = tmp.path().join("c2");
    std::fs::create_dir(&other).expect("c2");
    let other_dir = other.to_str().expect("utf-8");
    let garbage = tmp.path().join("g").join("backup.key");
    std::fs::create_dir(garbage.parent().expect("parent")).expect("g");
    std::fs::write(&garbage, "not a key").expect("garbage");
    for from in [garbage.to_str().expect("utf-8"), tmp.path().join("c1").join("raft.redb").to_str().expect("utf-8")] {
        let out = run(Path::new(BIN), &["backup", "init-key", "--data-dir", other_dir, "--from", from], &[]);
        assert!(!out.status.success(), "--from {from} was taken");
        assert!(!other.join("backup.key").exists(), "a refused --from writes nothing");
    }
    let file_arg = file.to_str().expect("utf-8");
    let out = run(Path::new(BIN), &["backup", "init-key", "--data-dir", other_dir, "--from", file_arg], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(other.join("backup.key")).expect("copied"), hex);
    assert_eq!(mode(&other.join("backup.key")), 0o600);

    // Restarted, the coordinator holds it: a rotation now fails only for want of a data key
    // (the tenant is on no db node here), no longer for want of the cluster key.
    let err = rotate_refusal(tmp.path(), &mut coord, &key);
    assert!(err.contains("has no data key yet"), "{err}");
}
