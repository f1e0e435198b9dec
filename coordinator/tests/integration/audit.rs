//! The audit chain on disk: tampering with a stored entry is detected and named.

use crate::harness::{stderr, Cluster};
use berqenas_coordinator::state::audit::AuditEntry;
use redb::{Database, ReadableTable};

#[test]
fn tampered_audit_entry_is_named_by_verify() {
    let mut c = Cluster::single();
    c.ok(0, &["tenant", "create", "--name", "acme", "--db-quota", "5GB"]);
    c.ok(0, &["tenant", "create", "--name", "globex"]);
    c.ok(0, &["tenant", "suspend", "acme"]);
    let out = c.ok(0, &["audit", "verify"]);
    assert!(out.contains("audit chain intact"), "{out}");
    c.stop(0);

    // Rewrite entry 3 (globex's creation) as an attacker with disk access would.
    {
        let db = Database::open(c.nodes[0].dir.join("raft.redb")).expect("open store");
        let txn = db.begin_write().expect("write txn");
        {
            let mut table = txn.open_table(berqenas_coordinator::raft::store::AUDIT).expect("audit table");
            let mut entry: AuditEntry = {
                let raw = table.get(3).expect("read").expect("entry 3 exists");
                serde_json::from_slice(raw.value()).expect("entry decodes")
            };
            assert_eq!(entry.target, "tenant/globex");
            entry.target = "tenant/initech".into();
            table.insert(3, serde_json::to_vec(&entry).expect("encode").as_slice()).expect("write");
        }
        txn.commit().expect("commit");
    }

    c.start(0);
    let out = c.cli(0, &["audit", "verify"]);
    assert!(!out.status.success(), "verify must fail on a tampered chain");
    let err = stderr(&out);
    assert!(err.contains("audit chain broken at entry 3"), "{err}");
    let v = c.json_allow_fail(0, &["audit", "verify"]);
    assert_eq!(v["ok"], false);
    assert_eq!(v["broken"]["seq"], 3);
    assert_eq!(v["verified"], 2);
}
