//! PostgreSQL logins of tenant roles as security events (issue 12): a db node reads its
//! PostgreSQL's log and reports each login and failed login of a tenant's role, numbered by the
//! node; each becomes one `db.login` / `db.login-failed` audit entry of that tenant by the node,
//! naming the role, the client address, the time and (failures) why. Recorded once: a node's
//! numbers only grow and the node's row keeps the newest one recorded
//! (`Node::db_logins_recorded`), which its desired state carries back so the agent forgets what
//! is recorded. Bounded: at most `MAX_PER_REPORT` logins are taken from one report, in order,
//! the rest wait for the next (the agent folds identical attempts into one with a count and
//! caps what one tenant adds per read). Pure.

pub use berqenas_common::tenancy::LoginFailure as Failure;

use super::action::details;
use super::names::TenantName;
use super::{Cx, DomainError, Handled, Reply, State, Touched};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// Most logins recorded from one report (the rest are taken from the next ones).
pub const MAX_PER_REPORT: usize = 64;

/// Where a client connected from, as PostgreSQL logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Client {
    Socket(SocketAddr),
    /// The server's Unix socket.
    Local,
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Socket(a) => write!(f, "{a}"),
            Client::Local => f.write_str("local"),
        }
    }
}

/// One login (or failed login) of a tenant's role, as a db node reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbLogin {
    /// The node's number for it (consecutive on the node, never reused).
    pub seq: u64,
    pub tenant: TenantName,
    /// One of the tenant's roles: `tenant_{name}_user` or `tenant_{name}_owner`.
    pub role: String,
    /// `None`: it succeeded.
    pub failure: Option<Failure>,
    pub client: Option<Client>,
    /// Unix milliseconds, as PostgreSQL logged it.
    pub at_ms: u64,
    /// Identical attempts folded into this one (at least 1).
    pub count: u32,
}

/// Whether `role` is one of `tenant`'s roles.
pub fn is_role_of(role: &str, tenant: &TenantName) -> bool {
    role.strip_prefix("tenant_")
        .and_then(|r| r.strip_prefix(tenant.as_str()))
        .is_some_and(|rest| rest == "_user" || rest == "_owner")
}

/// A login reported by node `node_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDbLogin {
    pub node_id: u64,
    pub login: DbLogin,
}

/// The logins of node `node_id`'s report to record now: newer than the node's last recorded one,
/// of tenants whose db role the node holds, in order, at most `MAX_PER_REPORT`. The edge
/// proposes one command for each, in this order.
pub fn to_record(state: &State, node_id: u64, reported: &[DbLogin]) -> Vec<NewDbLogin> {
    let Some(node) = state.nodes.get(&node_id) else { return Vec::new() };
    let mut logins: Vec<&DbLogin> = reported.iter().filter(|l| l.seq > node.db_logins_recorded).collect();
    logins.sort_by_key(|l| l.seq);
    logins.dedup_by_key(|l| l.seq);
    logins
        .into_iter()
        .filter(|l| {
            state.tenants.get(&l.tenant).is_some_and(|t| t.placement.db_node == Some(node_id))
                && is_role_of(&l.role, &l.tenant)
        })
        .take(MAX_PER_REPORT)
        .map(|l| NewDbLogin { node_id, login: l.clone() })
        .collect()
}

impl State {
    /// Records a login: only from the tenant's db node, for one of its roles, and only one the
    /// node has not had recorded (its number is past the node's last).
    pub(super) fn db_login(&mut self, cx: Cx<'_>, new: &NewDbLogin) -> Handled {
        let l = &new.login;
        let mut facts = vec![
            ("node", new.node_id.to_string()),
            ("role", l.role.clone()),
            ("client", l.client.map_or_else(|| "unknown".to_string(), |c| c.to_string())),
            ("at", crate::time::rfc3339(l.at_ms)),
            ("seq", l.seq.to_string()),
        ];
        if let Some(f) = l.failure {
            facts.push(("failure", f.as_str().to_string()));
        }
        if l.count > 1 {
            facts.push(("count", l.count.to_string()));
        }
        let facts = cx.facts.with(details(&facts));
        let result = (|| {
            let t = self.tenants.get(&l.tenant).ok_or_else(|| super::tenant::not_found(&l.tenant))?;
            if t.placement.db_node != Some(new.node_id) {
                return Err(DomainError::Rejected(format!("node {} is not the db node of {}", new.node_id, l.tenant)));
            }
            if !is_role_of(&l.role, &l.tenant) {
                return Err(DomainError::Invalid(format!("{} is not a role of {}", l.role, l.tenant)));
            }
            let node = self.nodes.get_mut(&new.node_id).ok_or_else(|| DomainError::NotFound("node".into()))?;
            if l.seq <= node.db_logins_recorded {
                return Err(DomainError::Conflict(format!("login {} of node {} is recorded", l.seq, new.node_id)));
            }
            node.db_logins_recorded = l.seq;
            cx.touched.push(Touched::Node(new.node_id));
            Ok(Reply::Done)
        })();
        (result, facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_belong_to_exactly_their_tenant() {
        let t = |n: &str| TenantName::parse(n).expect("name");
        assert!(is_role_of("tenant_acme_user", &t("acme")));
        assert!(is_role_of("tenant_acme_owner", &t("acme")));
        assert!(!is_role_of("tenant_acme_user", &t("ac")));
        assert!(!is_role_of("tenant_acme_users", &t("acme")));
        assert!(!is_role_of("postgres", &t("acme")));
        assert!(is_role_of("tenant_ab_user_user", &t("ab_user")));
        assert!(!is_role_of("tenant_ab_user_user", &t("ab")));
    }

    use crate::state::node::NodeRole;
    use crate::state::tests_support::{booted, create, next_index, register};
    use crate::state::{Command, Meta, Op, Response};

    fn login(seq: u64, tenant: &str, failure: Option<Failure>) -> DbLogin {
        DbLogin {
            seq,
            tenant: TenantName::parse(tenant).expect("name"),
            role: format!("tenant_{tenant}_user"),
            failure,
            client: Some(Client::Socket("192.0.2.9:50432".parse().expect("addr"))),
            at_ms: 1_700_000_000_000,
            count: 1,
        }
    }

    fn run(s: &mut State, new: NewDbLogin) -> Response {
        let i = next_index(s);
        let meta =
            Meta { time_ms: i, actor: "node/1".into(), source: "t".into(), key_role: None, user_generation: None };
        s.apply(i, &Command { meta, op: Op::DbLogin(new) }).0
    }

    #[test]
    fn a_reported_login_is_audited_once_for_its_tenant_by_its_db_node() {
        let mut s = booted();
        register(&mut s, 1, &[NodeRole::Gateway, NodeRole::Db]);
        create(&mut s, "acme");
        create(&mut s, "globex");
        let reported =
            vec![login(2, "acme", Some(Failure::WrongPassword)), login(1, "acme", None), login(3, "nobody", None)];

        let new = to_record(&s, 1, &reported);
        assert_eq!(new.iter().map(|n| n.login.seq).collect::<Vec<_>>(), vec![1, 2], "in order, placed tenants only");
        assert!(to_record(&s, 2, &reported).is_empty(), "not node 2's tenants");
        for n in &new {
            assert_eq!(run(&mut s, n.clone()), Ok(Reply::Done));
        }
        let entry = s.audit.last().expect("audited").clone();
        assert_eq!((entry.action.as_str(), entry.target.as_str()), ("db.login-failed", "tenant/acme"));
        let d = |k: &str| entry.details.get(k).map(String::as_str);
        assert_eq!(
            (d("role"), d("client"), d("failure")),
            (Some("tenant_acme_user"), Some("192.0.2.9:50432"), Some("wrong password"))
        );
        assert_eq!((d("node"), d("seq"), d("count")), (Some("1"), Some("2"), None));
        assert_eq!(s.nodes[&1].db_logins_recorded, 2);

        // Repeated in the next report: nothing more to record, and a replay is refused.
        assert!(to_record(&s, 1, &reported).is_empty());
        let again = run(&mut s, new[0].clone());
        assert!(matches!(again, Err(DomainError::Conflict(_))), "{again:?}");
        // Only the tenant's db node, only the tenant's roles.
        let mut forged = NewDbLogin { node_id: 2, login: login(9, "acme", None) };
        assert!(matches!(run(&mut s, forged.clone()), Err(DomainError::Rejected(_))));
        forged.node_id = 1;
        forged.login.role = "tenant_globex_user".into();
        assert!(matches!(run(&mut s, forged), Err(DomainError::Invalid(_))));
    }

    #[test]
    fn one_report_records_at_most_its_bound_and_the_rest_wait() {
        let mut s = booted();
        register(&mut s, 1, &[NodeRole::Gateway, NodeRole::Db]);
        create(&mut s, "acme");
        let flood: Vec<DbLogin> = (1..=1000).map(|i| login(i, "acme", Some(Failure::WrongPassword))).collect();
        let first = to_record(&s, 1, &flood);
        assert_eq!(first.len(), MAX_PER_REPORT);
        for n in first {
            assert_eq!(run(&mut s, n), Ok(Reply::Done));
        }
        let next = to_record(&s, 1, &flood);
        assert_eq!(next.first().map(|n| n.login.seq), Some(MAX_PER_REPORT as u64 + 1), "taken up where it stopped");
    }
}
