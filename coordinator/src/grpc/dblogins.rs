//! PostgreSQL logins on the node wire: a report's `DbLogin`s converted once into
//! `state::dblogin::DbLogin` (every field checked: a tenant name, a role of that tenant, a client
//! address that parses, a failure the state knows), and those not yet recorded written, one
//! `Op::DbLogin` (one audit entry) each, in the node's order. What a report carries beyond
//! `MAX_REPORTED` is not even looked at; the state takes at most `dblogin::MAX_PER_REPORT`.
//! While a coordinator of an older release answers (the op is new), nothing is written and the
//! report is taken all the same: the logins wait in the agent's outbox.

use crate::server::Coordinator;
use crate::state::dblogin::{is_role_of, Client, DbLogin, Failure};
use crate::state::names::TenantName;
use crate::state::{Command, Op};
use berqenas_proto::node as pb;

/// Most logins read from one report.
pub const MAX_REPORTED: usize = 1024;

/// Why a reported login was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDbLogin {
    #[error("login {0}: no sequence number")]
    NoSeq(u64),
    #[error("login {0}: not a tenant name")]
    Tenant(u64),
    #[error("login {0}: not a role of its tenant")]
    Role(u64),
    #[error("login {0}: not a client address")]
    Client(u64),
    #[error("login {0}: unknown failure reason")]
    Failure(u64),
}

impl TryFrom<&pb::DbLogin> for DbLogin {
    type Error = InvalidDbLogin;

    fn try_from(raw: &pb::DbLogin) -> Result<Self, Self::Error> {
        let pb::DbLogin { seq, tenant, role, success, client, at_ms, reason, count } = raw;
        let seq = *seq;
        if seq == 0 {
            return Err(InvalidDbLogin::NoSeq(seq));
        }
        let tenant = TenantName::parse(tenant).map_err(|_| InvalidDbLogin::Tenant(seq))?;
        if !is_role_of(role, &tenant) {
            return Err(InvalidDbLogin::Role(seq));
        }
        let client = match client.as_str() {
            "" => None,
            "local" => Some(Client::Local),
            other => Some(Client::Socket(other.parse().map_err(|_| InvalidDbLogin::Client(seq))?)),
        };
        let failure = match (*success, reason.as_str()) {
            (true, _) => None,
            (false, r) => Some(Failure::parse(r).ok_or(InvalidDbLogin::Failure(seq))?),
        };
        Ok(DbLogin { seq, tenant, role: role.clone(), failure, client, at_ms: *at_ms, count: (*count).max(1) })
    }
}

/// The valid logins of a report (invalid ones are logged and left out).
pub(super) fn parse(node: u64, raw: &[pb::DbLogin]) -> Vec<DbLogin> {
    raw.iter()
        .take(MAX_REPORTED)
        .filter_map(|l| match DbLogin::try_from(l) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!(node, error = %e, "a reported login was dropped");
                None
            }
        })
        .collect()
}

/// Writes the logins of node `id`'s report that are not recorded yet (`dblogin::to_record`).
pub(super) async fn record(c: &Coordinator, id: u64, src: &str, logins: &[DbLogin]) -> Result<(), tonic::Status> {
    if logins.is_empty() {
        return Ok(());
    }
    for new in c.read(|d| crate::state::dblogin::to_record(&d.state, id, logins)) {
        let meta = super::node_meta(id, src);
        match c.write(Command { meta, op: Op::DbLogin(new) }).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(node = id, error = %e, "a reported login was not recorded"),
            // Mid-upgrade: the logins wait in the agent's outbox until every coordinator knows
            // the op; the rest of the report goes on.
            Err(e @ crate::server::WriteError::OlderRelease { .. }) => {
                tracing::debug!(node = id, error = %e, "logins are recorded once every coordinator is upgraded");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> pb::DbLogin {
        pb::DbLogin {
            seq: 7,
            tenant: "acme".into(),
            role: "tenant_acme_user".into(),
            success: false,
            client: "192.0.2.9:50432".into(),
            at_ms: 1_700_000_000_123,
            reason: "wrong password".into(),
            count: 0,
        }
    }

    #[test]
    fn reported_logins_are_typed_once_and_anything_else_is_refused() {
        let l = DbLogin::try_from(&raw()).expect("valid");
        assert_eq!(l.failure, Some(Failure::WrongPassword));
        assert_eq!(l.client, Some(Client::Socket("192.0.2.9:50432".parse().expect("addr"))));
        assert_eq!(l.count, 1, "a count of 0 is one attempt");
        let bad = |f: fn(&mut pb::DbLogin)| {
            let mut r = raw();
            f(&mut r);
            DbLogin::try_from(&r)
        };
        assert_eq!(bad(|r| r.seq = 0), Err(InvalidDbLogin::NoSeq(0)));
        assert_eq!(bad(|r| r.tenant = "Acme\n".into()), Err(InvalidDbLogin::Tenant(7)));
        assert_eq!(bad(|r| r.role = "tenant_globex_user".into()), Err(InvalidDbLogin::Role(7)));
        assert_eq!(bad(|r| r.role = "tenant_acme_user\",\"x\":\"".into()), Err(InvalidDbLogin::Role(7)));
        assert_eq!(bad(|r| r.client = "10.0.0.1\nforged".into()), Err(InvalidDbLogin::Client(7)));
        assert_eq!(
            bad(|r| r.reason = "password authentication failed: hunter2".into()),
            Err(InvalidDbLogin::Failure(7))
        );
        let ok = bad(|r| {
            r.success = true;
            r.client = "local".into();
        })
        .expect("a success over the socket");
        assert_eq!((ok.failure, ok.client), (None, Some(Client::Local)));
        assert_eq!(parse(1, &[raw(), pb::DbLogin::default()]).len(), 1);
    }
}
