//! Backups of the coordinators' own data: `snapshot save` from a running three-coordinator
//! cluster, `snapshot restore` into a fresh data directory, and the restored single coordinator
//! serving the same tenants, keys and audit trail. A damaged file is refused and creates nothing.

use crate::harness::{stderr, Cluster, Coord, BIN};
use berqenas_tests::run;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const PASSPHRASE: &str = "a long test passphrase\n";

fn tenants(c: &Cluster, idx: usize) -> Vec<(String, String)> {
    let v = c.json(idx, &["tenant", "list"]);
    let mut all: Vec<(String, String)> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|t| (t["name"].as_str().expect("name").into(), t["status"].as_str().expect("status").into()))
        .collect();
    all.sort();
    all
}

/// The audit entry with sequence number `seq`.
fn audit_entry(c: &Cluster, idx: usize, seq: u64) -> Value {
    let before = (seq + 1).to_string();
    let page = c.json(idx, &["audit", "list", "--before", &before, "--limit", "1"]);
    let entry = page.as_array().and_then(|p| p.first()).cloned().expect("an entry");
    assert_eq!(entry["seq"], seq);
    entry
}

fn restore(file: &Path, dir: &Path, pass: &Path, coord: &Coord) -> std::process::Output {
    let listen = coord.listen();
    let args = [
        "snapshot",
        "restore",
        "--in",
        file.to_str().expect("path"),
        "--data-dir",
        dir.to_str().expect("path"),
        "--passphrase-file",
        pass.to_str().expect("path"),
        "--id",
        "1",
        "--raft-listen",
        &listen.raft,
        "--api-listen",
        &listen.api,
        "--node-listen",
        &listen.node,
        "--output",
        "json",
    ];
    run(Path::new(BIN), &args, &[])
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    names.sort();
    names
}

#[test]
fn a_saved_snapshot_restores_into_a_fresh_data_dir_and_serves_the_same_state() {
    let c = Cluster::three();
    c.ok(0, &["tenant", "create", "--name", "acme", "--db-quota", "5GB"]);
    c.ok(0, &["tenant", "create", "--name", "globex"]);
    c.ok(0, &["tenant", "suspend", "globex"]);
    let customer = c.json(0, &["apikey", "create", "--role", "customer", "--tenant", "acme"])["token"]
        .as_str()
        .expect("token")
        .to_string();
    let refused = c.cli_as(0, "bqk_0000000000000000_00", &["tenant", "list"]);
    assert!(!refused.status.success(), "a bogus key is refused (and audited)");

    let work = tempfile::tempdir().expect("tmp");
    let pass = work.path().join("passphrase");
    std::fs::write(&pass, PASSPHRASE).expect("passphrase");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let file = work.path().join("cluster.bqs");
    let (file_s, pass_s) = (file.to_str().expect("path"), pass.to_str().expect("path"));

    // A passphrase file others can read is refused before anything is fetched.
    let out = c.cli(1, &["snapshot", "save", "--out", file_s, "--passphrase-file", pass_s]);
    assert!(!out.status.success() && stderr(&out).contains("owner only"), "{}", stderr(&out));
    assert!(!file.exists());
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // A customer key cannot take the cluster's data.
    let out = c.cli_as(0, &customer, &["snapshot", "save", "--out", file_s, "--passphrase-file", pass_s]);
    assert!(!out.status.success() && stderr(&out).contains("(403)"), "{}", stderr(&out));
    assert!(!file.exists());

    // Saved through a follower: its own snapshot, after catching up with the leader.
    let saved = c.json(1, &["snapshot", "save", "--out", file_s, "--passphrase-file", pass_s]);
    let about = &saved["about"];
    assert_eq!(about["node_id"], 2);
    assert_eq!(about["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(about["tenants"], 2);
    let mode = std::fs::metadata(&file).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(entries(work.path()), ["cluster.bqs", "passphrase"], "no temp file left");
    let head_seq = about["audit_entries"].as_u64().expect("audit entries");
    let head = audit_entry(&c, 0, head_seq);
    assert_eq!(head["hash"], about["audit_head"]);
    let before = (head_seq + 1).to_string();
    let page = c.json(0, &["audit", "list", "--before", &before, "--limit", "20"]);
    let saves: Vec<&Value> =
        page.as_array().expect("page").iter().filter(|e| e["action"] == "cluster.snapshot-save").collect();
    assert!(saves.iter().any(|e| e["outcome"] == "rejected"), "the customer's attempt is audited too: {saves:?}");
    let save = saves.iter().find(|e| e["outcome"] == "ok").map(|e| (*e).clone());
    let save = save.expect("the save is audited, and the snapshot holds its entry");
    assert_eq!((save["target"].as_str(), save["outcome"].as_str()), (Some("coordinator/2"), Some("ok")), "{save}");

    // Nothing secret is in clear in the file.
    let bytes = std::fs::read(&file).expect("read file");
    let backup_key = std::fs::read_to_string(c.nodes[0].dir.join("backup.key")).expect("backup key");
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("PRIVATE KEY") && !text.contains(backup_key.trim()) && !text.contains("acme"));

    let want_tenants = tenants(&c, 0);
    let restored = Coord::new(1, work.path().join("restored"));

    // Damaged files: refused with a clear error, nothing created.
    let damaged = |name: &str, content: &[u8], expect: &str| {
        let path = work.path().join(name);
        std::fs::write(&path, content).expect("write");
        let out = restore(&path, &restored.dir, &pass, &restored);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr(&out).contains(expect), "{name}: {}", stderr(&out));
        assert!(!restored.dir.exists(), "{name} created the data dir");
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(entries(work.path()), ["cluster.bqs", "passphrase"], "{name} left something behind");
    };
    damaged("truncated", &bytes[..bytes.len() - 100], "truncated");
    damaged("cut-header", &bytes[..40], "not a coordinator snapshot file");
    let mut flipped = bytes.clone();
    let at = bytes.len() / 2;
    flipped[at] ^= 0x01;
    damaged("flipped", &flipped, "does not authenticate");
    let wrong = work.path().join("wrong-passphrase");
    std::fs::write(&wrong, "another long passphrase").expect("write");
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = restore(&file, &restored.dir, &wrong, &restored);
    assert!(stderr(&out).contains("wrong passphrase"), "{}", stderr(&out));
    assert!(!restored.dir.exists());
    std::fs::remove_file(&wrong).expect("rm");
    // A data dir that holds anything is refused.
    std::fs::create_dir(&restored.dir).expect("mkdir");
    std::fs::write(restored.dir.join("keep"), b"x").expect("write");
    let out = restore(&file, &restored.dir, &pass, &restored);
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert_eq!(entries(&restored.dir), ["keep"]);
    std::fs::remove_dir_all(&restored.dir).expect("rm");

    let out = restore(&file, &restored.dir, &pass, &restored);
    assert!(out.status.success(), "restore: {}", stderr(&out));
    let backup_restored = std::fs::read_to_string(restored.dir.join("backup.key")).expect("backup key restored");
    assert_eq!(backup_restored.trim(), backup_key.trim(), "the cluster backup key comes back");
    let mode = std::fs::metadata(&restored.dir).expect("dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    let cluster_id = c.json(0, &["cluster", "status"])["cluster_id"].clone();
    let admin = c.key.clone();
    drop(c); // the saved cluster is gone
    let tmp = tempfile::tempdir().expect("tmp");
    let mut r = Cluster { nodes: vec![restored], key: admin, serve_args: Vec::new(), tmp };
    r.start(0);

    let status = r.json(0, &["cluster", "status"]);
    assert_eq!(status["cluster_id"], cluster_id, "the same cluster");
    let members: Vec<u64> =
        status["members"].as_array().expect("members").iter().map(|m| m["id"].as_u64().expect("id")).collect();
    assert_eq!(members, [1], "a single-coordinator cluster");
    assert_eq!(tenants(&r, 0), want_tenants);
    let verified = r.json(0, &["audit", "verify"]);
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["total"].as_u64().expect("total") >= head_seq);
    assert_eq!(audit_entry(&r, 0, head_seq), head, "the same audit head");
    // The keys still work, with their roles: the customer sees its tenant only.
    let own = r.cli_as(0, &customer, &["tenant", "get", "acme"]);
    assert!(own.status.success(), "{}", stderr(&own));
    let other = r.cli_as(0, &customer, &["tenant", "get", "globex"]);
    assert!(!other.status.success());
    // And it takes writes.
    r.ok(0, &["tenant", "create", "--name", "initech"]);
    r.ok(0, &["tenant", "resume", "globex"]);
    assert_eq!(r.json(0, &["audit", "verify"])["ok"], true);
}
