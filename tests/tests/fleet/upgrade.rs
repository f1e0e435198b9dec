//! A rolling upgrade from the previous release (the commit in `deploy/previous-release`, built by
//! `deploy/previous-release.sh`): a three-coordinator cluster formed on it is upgraded one
//! coordinator at a time, the leader last. While one coordinator runs the previous release — as
//! the leader of two upgraded followers, then as a follower of an upgraded leader — writes through
//! every coordinator succeed, every coordinator reads the same tenants, and two agents, one of
//! each release, stay converged. An op the previous release cannot decode (`snapshot save`'s audit
//! entry) is refused, naming the old coordinator, until every coordinator runs the new release.

use crate::harness::{agent_bin, coordinator_bin, Fleet};
use berqenas_tests::{previous_release_bin, wait_for};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn names(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array().expect("a list").iter().map(|t| t["name"].as_str().expect("name").to_string()).collect()
}

/// Creates one tenant through each coordinator (waiting until its node reports it ready), then
/// checks every coordinator reads them all, linearizably and from its own state.
fn writes_and_reads_agree(f: &Fleet, round: &str, all: &mut BTreeSet<String>) {
    for i in 0..f.coords.len() {
        let name = format!("{round}{}", i + 1);
        let t = f.json(i, &["tenant", "create", "--name", &name, "--wait", "--wait-timeout", "30s"]);
        assert_eq!(t["status"], "active", "{round}: a write through coordinator {}: {t}", i + 1);
        all.insert(name);
    }
    for i in 0..f.coords.len() {
        assert_eq!(&names(&f.json(i, &["tenant", "list"])), all, "{round}: coordinator {} reads", i + 1);
        wait_for(&format!("{round}: coordinator {} to apply every write", i + 1), Duration::from_secs(10), || {
            (&names(&f.json(i, &["tenant", "list", "--stale"])) == all).then_some(())
        });
    }
    // Each tenant is on one or both of the two agents (gateway and db); together they hold every one.
    wait_for(&format!("{round}: the agents to converge"), Duration::from_secs(20), || {
        let held: BTreeSet<String> = f.agents.iter().flat_map(|a| a.tenant_files()).collect();
        (&held == all).then_some(())
    });
}

fn leader(f: &Fleet) -> usize {
    let mut found = None;
    wait_for("a leader", Duration::from_secs(20), || {
        let id = f.json(f.live(), &["cluster", "status"])["leader_id"].as_u64()?;
        found = f.coords.iter().position(|c| c.id == id && c.proc.is_some());
        found.map(|_| ())
    });
    found.expect("a leader")
}

/// Restarts coordinator `i` on `bin` (same data directory), and waits until it has caught up.
fn restart_on(f: &mut Fleet, i: usize, bin: std::path::PathBuf, all: &BTreeSet<String>) {
    f.stop_coord(i);
    f.coord_bins[i] = bin;
    f.start_coord(i);
    wait_for(&format!("coordinator {} to catch up", i + 1), Duration::from_secs(20), || {
        let out = f.cli(i, &["tenant", "list", "--stale", "--output", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (out.status.success() && &names(&v) == all).then_some(())
    });
}

fn snapshot_save(f: &Fleet, i: usize, pass: &std::path::Path) -> std::process::Output {
    let out = pass.with_file_name(format!("save-{i}.bqs"));
    f.cli(
        i,
        &["snapshot", "save", "--out", out.to_str().expect("path"), "--passphrase-file", pass.to_str().expect("path")],
    )
}

#[test]
fn a_cluster_upgraded_one_coordinator_at_a_time_keeps_serving() {
    let (old, old_agent) = (previous_release_bin("berqenas-coordinator"), previous_release_bin("berqenas-node-agent"));
    let mut f = Fleet::with_bins(vec![old.clone(); 3]);
    f.add_agent_as(&old_agent, "old-agent", "gateway,db", "", &[]);
    f.add_agent_as(&agent_bin(), "new-agent", "gateway,db", "", &[]);
    let pass = f.tmp.path().join("passphrase");
    std::fs::write(&pass, "a long test passphrase").expect("passphrase");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut all = BTreeSet::new();
    writes_and_reads_agree(&f, "before", &mut all);

    // The followers first: the previous release leads two upgraded coordinators.
    let old_leader = leader(&f);
    for i in (0..3).filter(|i| *i != old_leader) {
        restart_on(&mut f, i, coordinator_bin(), &all);
    }
    assert_eq!(leader(&f), old_leader, "the previous release still leads");
    writes_and_reads_agree(&f, "oldleader", &mut all);
    let follower = (old_leader + 1) % 3;
    let refused = snapshot_save(&f, follower, &pass);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a new op while the previous release runs");
    assert!(why.contains(&format!("coordinator {} runs an older release", old_leader + 1)), "{why}");

    // The previous release as a follower of an upgraded leader.
    f.stop_coord(old_leader);
    let new_leader = leader(&f);
    assert_ne!(new_leader, old_leader);
    f.start_coord(old_leader);
    writes_and_reads_agree(&f, "oldfollower", &mut all);
    assert_ne!(leader(&f), old_leader, "an upgraded coordinator leads");
    let refused = snapshot_save(&f, new_leader, &pass);
    assert!(!refused.status.success(), "the previous release still runs");

    // The last one: every coordinator on the new release, the old agent still converged.
    restart_on(&mut f, old_leader, coordinator_bin(), &all);
    writes_and_reads_agree(&f, "after", &mut all);
    let saved = snapshot_save(&f, new_leader, &pass);
    assert!(saved.status.success(), "{}", String::from_utf8_lossy(&saved.stderr));
    for i in 0..3 {
        assert_eq!(f.json(i, &["audit", "verify"])["ok"], true);
    }
}
