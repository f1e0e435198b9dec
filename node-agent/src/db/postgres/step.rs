//! A PostgreSQL plan step: one statement with what the planner knows about it — the tenant it is
//! for, its kind and whether it carries a secret. `apply` decides where and how to run a step from
//! these alone, never from its text.

/// What a step is, set by the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Node bootstrap (PUBLIC's defaults in a database), before any tenant's steps.
    Bootstrap,
    /// Touches only the tenant's own objects (its roles, schema, tables): may run on one of the
    /// pass's extra connections.
    Tenant,
    /// Updates a row every tenant shares (the database's ACL): concurrent updates of one catalog
    /// row fail ("tuple concurrently updated"), so it runs on the pass's own connection, after the
    /// tenant steps, one at a time.
    SharedRow,
    /// Refused by PostgreSQL inside a transaction block (`CREATE/DROP DATABASE`): runs alone, on
    /// the pass's own connection.
    OutsideTransaction,
    /// Takes the tenant's login away: its open sessions are ended once the pass has run it.
    Offboard,
    /// Removes a tenant no longer desired (`DROP OWNED` updates shared rows): its steps run
    /// together on the pass's own connection.
    Purge,
}

/// One SQL statement and the tenant it is for (None: node bootstrap). A tenant's consecutive
/// steps run as one transaction; `commit_before` ends the one before it, so what came first holds
/// even when this part fails.
#[derive(Clone, PartialEq, Eq)]
pub struct Step {
    pub tenant: Option<String>,
    pub sql: String,
    pub kind: StepKind,
    pub commit_before: bool,
    /// The statement with its secret left out, when it carries one.
    redacted: Option<String>,
}

impl Step {
    pub(super) fn node(sql: String) -> Self {
        Self { tenant: None, sql, kind: StepKind::Bootstrap, commit_before: false, redacted: None }
    }

    pub(super) fn new(tenant: &str, sql: Sql) -> Self {
        Self {
            tenant: Some(tenant.to_string()),
            sql: sql.sql,
            kind: sql.kind,
            commit_before: false,
            redacted: sql.redacted,
        }
    }

    /// The statement sets a password verifier (or another secret).
    pub fn carries_secret(&self) -> bool {
        self.redacted.is_some()
    }

    /// What logs and `plan` print: the statement, with any secret left out.
    pub fn shown(&self) -> &str {
        self.redacted.as_deref().unwrap_or(&self.sql)
    }
}

impl std::fmt::Debug for Step {
    /// Never the secret, whoever prints a plan.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("tenant", &self.tenant)
            .field("sql", &self.shown())
            .field("kind", &self.kind)
            .field("commit_before", &self.commit_before)
            .finish()
    }
}

/// A tenant statement before it is placed in a plan: what the planners' helpers return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sql {
    sql: String,
    kind: StepKind,
    redacted: Option<String>,
}

impl Sql {
    pub(super) fn kind(sql: String, kind: StepKind) -> Self {
        Self { sql, kind, redacted: None }
    }

    /// `sql` carries a secret; `redacted` is the same statement without it.
    pub(super) fn secret(sql: String, redacted: String) -> Self {
        Self { sql, kind: StepKind::Tenant, redacted: Some(redacted) }
    }
}

impl From<String> for Sql {
    fn from(sql: String) -> Self {
        Self::kind(sql, StepKind::Tenant)
    }
}

/// The statements of one part of a tenant's plan, in order.
#[derive(Debug, Default)]
pub(super) struct Stmts(pub(super) Vec<Sql>);

impl Stmts {
    pub(super) fn push(&mut self, sql: impl Into<Sql>) {
        self.0.push(sql.into());
    }

    pub(super) fn extend(&mut self, other: Stmts) {
        self.0.extend(other.0);
    }
}

/// A tenant's steps: `first` in one transaction, then `then` in a second one.
pub(super) fn tenant_steps(name: &str, first: Stmts, then: Stmts) -> impl Iterator<Item = Step> + '_ {
    let first = first.0.into_iter().map(move |sql| Step::new(name, sql));
    let then =
        then.0.into_iter().enumerate().map(move |(i, sql)| Step { commit_before: i == 0, ..Step::new(name, sql) });
    first.chain(then)
}
