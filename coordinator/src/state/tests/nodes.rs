//! State-machine tests of the node and cluster commands: join tokens, coordinator ids.

use super::*;

#[test]
fn removed_coordinator_ids_are_retired() {
    let mut s = booted("10.50.0.0/16");
    let _ = s.apply(2, &cmd(2, Op::Membership { action: Action::ClusterRemove, node_id: 3, details: BTreeMap::new() }));
    assert!(s.retired_coordinators.contains(&3));
}

#[test]
fn join_tokens_are_single_use_expiring_and_bound_to_roles() {
    let mut s = booted("198.18.0.0/15");
    let _ = s.apply(2, &cmd(2, Op::CreateJoinToken(join_token("t1", &[NodeRole::Db], 100))));
    let _ = s.apply(3, &cmd(3, Op::CreateJoinToken(join_token("t2", &[NodeRole::Db], 100))));
    let _ = s.apply(4, &cmd(4, Op::CreateJoinToken(join_token("t3", &[NodeRole::Db], 5))));

    assert!(matches!(join(&mut s, 5, "t1", "wrong", &[NodeRole::Db]), Err(DomainError::Rejected(_))));
    assert!(matches!(join(&mut s, 6, "t1", "secret", &[NodeRole::Gateway]), Err(DomainError::Invalid(_))));
    let first = join(&mut s, 7, "t1", "secret", &[NodeRole::Db]);
    match first {
        Ok(Reply::Node(n)) => {
            assert_eq!(n.id, 1);
            assert_eq!(n.labels.get("region").map(String::as_str), Some("ist"), "token labels apply");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(join(&mut s, 8, "t1", "secret", &[NodeRole::Db]), Err(DomainError::Rejected(_))), "reused");
    assert!(matches!(join(&mut s, 9, "t3", "secret", &[NodeRole::Db]), Err(DomainError::Rejected(_))), "expired");
    assert!(matches!(join(&mut s, 10, "nope", "secret", &[NodeRole::Db]), Err(DomainError::Rejected(_))));
    match join(&mut s, 11, "t2", "secret", &[NodeRole::Db]) {
        Ok(Reply::Node(n)) => assert_eq!(n.id, 2, "ids are never reused"),
        other => panic!("{other:?}"),
    }
    let last = s.audit.last().expect("audited");
    assert_eq!(last.action, "node.join");
    assert!(!format!("{:?}", s.audit).contains(&apikey::hash_secret("secret")), "no token hash in audit");
}

#[test]
fn revoked_join_tokens_cannot_be_spent_and_used_ones_cannot_be_revoked() {
    let mut s = booted("198.18.0.0/15");
    let mut ct = join_token("ct", &[], 100);
    ct.coordinator_id = Some(4);
    let _ = s.apply(2, &cmd(2, Op::CreateJoinToken(ct)));
    let _ = s.apply(3, &cmd(3, Op::CreateJoinToken(join_token("nt", &[NodeRole::Db], 100))));
    let _ = s.apply(4, &cmd(4, Op::CreateJoinToken(join_token("used", &[NodeRole::Db], 100))));
    assert!(join(&mut s, 5, "used", "secret", &[NodeRole::Db]).is_ok());
    for (i, id) in [(6, "ct"), (7, "nt")] {
        let (r, touched) = s.apply(i, &cmd(i, Op::RevokeJoinToken { id: id.into() }));
        assert_eq!(r, Ok(Reply::Done));
        assert!(touched.contains(&Touched::JoinToken(id.into())));
        assert_eq!(s.join_tokens[id].revoked_at_ms, Some(i));
    }
    let spend = Op::JoinCoordinator { token_id: "ct".into(), secret_hash: apikey::hash_secret("secret"), id: 4 };
    assert!(matches!(s.apply(8, &cmd(8, spend)).0, Err(DomainError::Rejected(m)) if m.contains("revoked")));
    assert!(matches!(join(&mut s, 9, "nt", "secret", &[NodeRole::Db]), Err(DomainError::Rejected(_))));
    let again = s.apply(10, &cmd(10, Op::RevokeJoinToken { id: "ct".into() })).0;
    assert!(matches!(again, Err(DomainError::Conflict(m)) if m.contains("already revoked")));
    let used = s.apply(11, &cmd(11, Op::RevokeJoinToken { id: "used".into() })).0;
    assert!(matches!(used, Err(DomainError::Conflict(m)) if m.contains("was used")));
    let missing = s.apply(12, &cmd(12, Op::RevokeJoinToken { id: "nope".into() })).0;
    assert!(matches!(missing, Err(DomainError::NotFound(_))));
}
