//! State-machine tests of API keys: scoping, revocation, break-glass, the re-check at apply.

use super::*;

#[test]
fn api_keys_scoping_and_revocation() {
    let mut s = booted("10.50.0.0/16");
    let customer =
        ApiKey { id: "00000000000000bb".into(), role: Role::Customer, tenant: Some(name("acme")), ..admin_key() };
    let r = s.apply(2, &cmd(2, Op::CreateApiKey(customer.clone()))).0;
    assert!(matches!(r, Err(DomainError::NotFound(_))), "customer key needs an existing tenant");
    tenant(create(&mut s, 3, "acme"));
    let r = s.apply(4, &cmd(4, Op::CreateApiKey(customer.clone()))).0;
    match r {
        Ok(Reply::ApiKey(k)) => assert!(k.secret_hash.is_empty(), "replies never carry the hash"),
        other => panic!("{other:?}"),
    }
    let _ = s.apply(5, &cmd(5, Op::RevokeApiKey { id: customer.id.clone() }));
    assert_eq!(s.api_keys[&customer.id].revoked_at_ms, Some(5));
    assert!(matches!(
        s.apply(6, &cmd(6, Op::RevokeApiKey { id: customer.id.clone() })).0,
        Err(DomainError::Conflict(_))
    ));
}

#[test]
fn last_lasting_admin_key_cannot_be_revoked() {
    let mut s = booted("10.50.0.0/16");
    let first = admin_key().id;
    let revoke = |s: &mut State, i: u64, id: &str| s.apply(i, &cmd(i, Op::RevokeApiKey { id: id.into() })).0;
    let r = revoke(&mut s, 2, &first);
    assert!(matches!(&r, Err(DomainError::Conflict(m)) if m.contains("last active admin key")), "{r:?}");
    assert_eq!(s.api_keys[&first].revoked_at_ms, None, "still usable");
    assert_eq!(s.audit.last().map(|e| e.outcome), Some(audit::Outcome::Rejected));

    // An auditor or an admin key that expires is no replacement.
    for (i, k) in [key("00000000000000bb", Role::Auditor, None), key("00000000000000cc", Role::Admin, Some(1_000))]
        .into_iter()
        .enumerate()
    {
        let i = 3 + i as u64;
        assert!(s.apply(i, &cmd(i, Op::CreateApiKey(k))).0.is_ok());
    }
    assert!(matches!(revoke(&mut s, 5, &first), Err(DomainError::Conflict(_))));
    // The expiring admin key may go: a lasting one remains.
    assert!(revoke(&mut s, 6, "00000000000000cc").is_ok());

    assert!(s.apply(7, &cmd(7, Op::CreateApiKey(key("00000000000000dd", Role::Admin, None)))).0.is_ok());
    assert!(revoke(&mut s, 8, &first).is_ok(), "another lasting admin key exists");
    assert!(matches!(revoke(&mut s, 9, "00000000000000dd"), Err(DomainError::Conflict(_))));
}

#[test]
fn recovered_admin_key_is_added_and_audited_as_break_glass() {
    let mut s = booted("10.50.0.0/16");
    let recovered = key("00000000000000ee", Role::Admin, None);
    let op = Op::RecoverAdmin { key: recovered.clone(), host: "coord-1".into() };
    let r = s.apply(
        2,
        &Command {
            meta: Meta {
                time_ms: 2,
                actor: "break-glass".into(),
                source: "host/coord-1".into(),
                key_role: None,
                user_generation: None,
            },
            op,
        },
    );
    assert!(r.0.is_ok(), "{r:?}");
    assert_eq!(s.api_keys.get(&recovered.id), Some(&recovered));
    let e = s.audit.last().expect("audited");
    assert_eq!(
        (e.action.as_str(), e.target.as_str(), e.outcome),
        ("apikey.recovered", "apikey/00000000000000ee", audit::Outcome::Ok)
    );
    assert_eq!(e.details.get("host").map(String::as_str), Some("coord-1"));
    // Only admin keys can be recovered this way.
    let customer = ApiKey { id: "00000000000000ff".into(), role: Role::Customer, ..recovered };
    let r = s.apply(3, &cmd(3, Op::RecoverAdmin { key: customer, host: "coord-1".into() })).0;
    assert!(matches!(r, Err(DomainError::Invalid(_))), "{r:?}");
}

#[test]
fn a_key_revoked_earlier_in_the_log_cannot_act_through_a_lagging_follower() {
    let mut s = booted("10.50.0.0/16");
    let second = key("00000000000000bb", Role::Admin, None);
    let (r, _) = s.apply(2, &as_key(2, &admin_key().id, Role::Admin, Op::CreateApiKey(second.clone())));
    assert!(r.is_ok(), "{r:?}");
    // The first admin revokes the second at time 10 ...
    let (r, _) = s.apply(3, &as_key(10, &admin_key().id, Role::Admin, Op::RevokeApiKey { id: second.id.clone() }));
    assert!(r.is_ok(), "{r:?}");
    // ... while a follower that had not seen it yet accepted the second key at time 9 and
    // forwarded its command, which the leader's log puts after the revocation.
    let forged = key("00000000000000cc", Role::Admin, None);
    let keys_before = s.api_keys.len();
    let (r, touched) = s.apply(4, &as_key(9, &second.id, Role::Admin, Op::CreateApiKey(forged.clone())));
    assert!(matches!(&r, Err(DomainError::Forbidden(m)) if m.to_string().contains("revoked")), "{r:?}");
    assert_eq!(s.api_keys.len(), keys_before, "no key was made");
    assert!(!s.api_keys.contains_key(&forged.id));
    assert_eq!(touched, vec![], "only the audit entry is written");
    let entry = s.audit.last().expect("audited");
    assert_eq!((entry.action.as_str(), entry.target.as_str()), ("apikey.create", "apikey/00000000000000cc"));
    assert_eq!(entry.outcome, audit::Outcome::Rejected);
    assert_eq!(entry.actor, second.id);
    assert!(entry.details.get("reason").is_some_and(|m| m.contains("revoked")), "{entry:?}");
}

#[test]
fn keys_are_rechecked_at_apply_for_existence_role_and_expiry() {
    let mut s = booted("10.50.0.0/16");
    let admin = admin_key().id;
    let expiring = key("00000000000000dd", Role::Admin, Some(50));
    let auditor = key("00000000000000ee", Role::Auditor, None);
    for (i, k) in [(2, &expiring), (3, &auditor)] {
        let (r, _) = s.apply(i, &as_key(i, &admin, Role::Admin, Op::CreateApiKey(k.clone())));
        assert!(r.is_ok(), "{r:?}");
    }
    let create = |s: &mut State, i: u64, t: u64, actor: &str, role: Role| {
        s.apply(i, &as_key(t, actor, role, Op::CreateTenant(spec("acme")))).0
    };
    let refused = |r: &Response, why: &str| matches!(r, Err(DomainError::Forbidden(m)) if m.to_string().contains(why));
    assert!(refused(&create(&mut s, 4, 10, "00000000000000ff", Role::Admin), "does not exist"));
    assert!(refused(&create(&mut s, 5, 60, &expiring.id, Role::Admin), "expired"));
    assert!(refused(&create(&mut s, 6, 10, &auditor.id, Role::Admin), "not the admin key"));
    assert!(refused(&create(&mut s, 7, 10, &auditor.id, Role::Auditor), "may not change"));
    assert!(s.tenants.is_empty(), "nothing refused was created");
    assert!(create(&mut s, 8, 40, &expiring.id, Role::Admin).is_ok(), "usable until it expires");
    // An edge refusal of any key is only audited, never re-checked.
    let op = Op::Rejected { action: Action::TenantGet, target: "tenant/x".into(), reason: "forbidden".into() };
    let (r, _) = s.apply(9, &as_key(10, "00000000000000ff", Role::Customer, op));
    assert!(matches!(r, Err(DomainError::Rejected(_))), "{r:?}");
}
