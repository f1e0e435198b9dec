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

#[test]
fn gateway_settings_belong_to_the_gateway_role_and_reports_keep_backend_and_conditions() {
    use crate::state::gateway::{GatewaySettings, NodeCondition, PortRange, WgBackend};
    let mut s = booted("198.18.0.0/15");
    let _ = s.apply(2, &cmd(2, Op::CreateJoinToken(join_token("t1", &[NodeRole::Db, NodeRole::Gateway], 100))));
    let settings = GatewaySettings {
        public_address: "198.51.100.10".parse().expect("ip"),
        public_ports: PortRange::new(15000, 15999).expect("range"),
    };
    let mut n = node(0, &[]);
    n.roles = [NodeRole::Db].into();
    n.gateway.settings = Some(settings);
    let op =
        |n: &Node| Op::JoinNode { token_id: "t1".into(), secret_hash: apikey::hash_secret("secret"), node: n.clone() };
    let refused = s.apply(3, &cmd(3, op(&n))).0;
    assert!(matches!(&refused, Err(DomainError::Invalid(m)) if m.contains("gateway role only")), "{refused:?}");
    assert!(s.nodes.is_empty(), "nothing changed");
    n.roles = [NodeRole::Gateway].into();
    n.gateway.wireguard_backend = Some(WgBackend::Kernel);
    let id = match s.apply(4, &cmd(4, op(&n))).0 {
        Ok(Reply::Node(n)) => n.id,
        other => panic!("{other:?}"),
    };
    assert_eq!(s.nodes[&id].gateway.settings, Some(settings));
    assert_eq!(s.nodes[&id].gateway.wireguard_backend, None, "the backend comes from reports, not the join");
    let condition = NodeCondition { kind: "foreign-forward-drop".into(), message: "table inet fw drops".into() };
    let report = node::Report {
        node_id: id,
        applied_revision: 4,
        tenants: BTreeMap::new(),
        capacity: None,
        wireguard_backend: Some(WgBackend::Userspace),
        conditions: vec![condition.clone()],
    };
    assert_eq!(s.apply(5, &cmd(5, Op::NodeReport(report))).0, Ok(Reply::Done));
    assert_eq!(s.nodes[&id].gateway.wireguard_backend, Some(WgBackend::Userspace));
    assert_eq!(s.nodes[&id].gateway.conditions, vec![condition]);
    let entry = s.audit.last().expect("audited");
    assert_eq!(entry.details.get("conditions").map(String::as_str), Some("foreign-forward-drop"));
}
