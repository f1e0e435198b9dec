//! The `db` role driver for PostgreSQL: one schema and two roles per tenant, in one database
//! (or in its own, with database isolation). `observe` reads the catalogs (short-lived superuser
//! connection), `plan` (pure) lists the SQL that makes the host match the desired state — empty
//! when it already does — and `apply` runs it; the session guard (`guard`) enforces the limits
//! between passes. Identifiers come only from validated tenant names (`[a-z][a-z0-9_]{1,30}`) and
//! are quoted; the password verifier is checked to be exactly a SCRAM verifier before it becomes
//! a literal; everything else is an integer. Nothing user-typed is formatted into SQL.
//!
//! Per tenant `t`: schema `tenant_t` owned by NOLOGIN `tenant_t_owner`; LOGIN NOINHERIT
//! `tenant_t_user` with the SCRAM verifier, CONNECTION LIMIT, search_path, temp_file_limit,
//! statement and idle-in-transaction timeouts, no logging below PANIC; CONNECT on the database,
//! USAGE on its schema, DML on its tables (default privileges of the owner); the seed's `events`
//! table. Node bootstrap revokes PUBLIC's CONNECT/TEMP on the database, everything on schema
//! `public`, the large-object creators, and what would show one tenant another's work.
//!
//! - `plan.rs`: observed and desired as plain data, and the pure planners.
//! - `observe.rs`: the catalog queries (none waits for a lock a tenant can hold).
//! - `step.rs`: a plan step — its statement, tenant, kind and whether it carries a secret.
//! - `preview.rs`: what the next full pass would change, applying nothing (`plan` command).
//! - `apply.rs`: running a plan (per-tenant transactions, parallel connections), `pg_hba.conf`.
//! - `logins/`: logins and failed logins of tenant roles read from the server's jsonlog (its own
//!   task, started by the runtime), reported as security events.
//! - this file: the driver — full and incremental passes, sizes, the guard, pgBouncer.

mod apply;
pub mod guard;
pub mod logins;
mod observe;
mod plan;
mod preview;
pub mod size;
mod step;

pub use plan::{changed, over_quota, plan, plan_own_database, MAX_OBJECTS};
pub use plan::{Observed, ObservedRole, ObservedTenant};
pub use step::{Step, StepKind};

use crate::assignment::{DbTenant, DbType};
use crate::db::{own_database, postgres_tenants};
use crate::driver::{Change, Driver, Status, Usage};
use apply::{apply, pooler_source, sync_hba};
use observe::observe;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Makes a PostgreSQL database match the `db` assignments of this node.
pub struct PostgresDriver {
    /// Superuser connection URL of the node's PostgreSQL (stays on the node).
    url: String,
    /// pgBouncer in front of it, when tenants connect through one.
    pgbouncer: Option<crate::config::PgBouncerConfig>,
    /// A full pass (every tenant observed, disk use measured) runs at least this often; the
    /// passes in between — a burst of creates, one changed tenant — observe and converge only
    /// the tenants whose assignment changed or that were not converged yet.
    full_interval: Duration,
    full_at: Option<Instant>,
    /// Shared with the session guard ([`guard`]): the tenants it watches, the latest
    /// sizes (measured by it or by a full pass), tenants it found over quota, and the wake-up.
    guard: Arc<guard::Shared>,
    limits: guard::Limits,
    guard_started: Option<Instant>,
    /// The pooler's per-source connection limit was in place at the last look (checked on
    /// full passes).
    pooler_firewall: bool,
    /// Usage per tenant as last observed.
    usage: BTreeMap<String, Usage>,
    /// Whether each tenant's last plan held it over its quota (its writes revoked).
    planned_over: BTreeMap<String, bool>,
    /// Tenants the last passes left converged, with the assignment they were converged to.
    converged: BTreeMap<String, DbTenant>,
}

impl PostgresDriver {
    pub fn new(
        url: String,
        pgbouncer: Option<crate::config::PgBouncerConfig>,
        full_interval: Duration,
        limits: guard::Limits,
    ) -> Self {
        Self {
            url,
            pgbouncer,
            full_interval,
            full_at: None,
            guard: Arc::default(),
            limits,
            guard_started: None,
            pooler_firewall: false,
            usage: BTreeMap::new(),
            planned_over: BTreeMap::new(),
            converged: BTreeMap::new(),
        }
    }

    /// Fills in each observed tenant's bytes from the latest measurement.
    fn sizes(&self, observed: &mut Observed) {
        let sizes = self.guard.sizes.lock().map(|s| s.clone()).unwrap_or_default();
        for (name, t) in &mut observed.tenants {
            t.bytes = sizes.get(name).copied().unwrap_or(0);
        }
    }

    /// Connection options for the main database, or `database` on the same server, as
    /// `application`. Statement logging is off: statements carry password verifiers. Every
    /// session of the agent pins `search_path` to `pg_catalog` alone — an unqualified function,
    /// operator or type can then only be the system's, never one a tenant planted in a schema
    /// it owns (`public` of its own database, say) — and waits at most 5 s for a lock a tenant
    /// holds, so that tenant alone fails.
    fn options(&self, database: Option<&str>, application: &str) -> Result<PgConnectOptions, String> {
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?
            .disable_statement_logging()
            .application_name(application)
            .options([("search_path", "pg_catalog"), ("lock_timeout", "5s"), ("statement_timeout", "120s")]);
        Ok(match database {
            Some(d) => options.database(d),
            None => options,
        })
    }

    async fn pass(&mut self, desired: &[DbTenant]) -> crate::driver::PassResult {
        if self.guard_started.is_none() {
            let options = self.options(None, "berqenas-guard")?;
            tokio::spawn(guard::run(options, self.guard.clone(), self.limits));
            self.guard_started = Some(Instant::now());
        }
        let watched = postgres_tenants(desired)
            .map(|a| {
                let w =
                    guard::Watched { quota: a.db.quota_bytes, own_database: own_database(a), ddl: a.db.ddl_enabled };
                (a.name.clone(), w)
            })
            .collect();
        if let Ok(mut t) = self.guard.tenants.lock() {
            *t = watched;
        }
        // Tenants the guard caught over quota are converged again now, with its measurement.
        let pending: Vec<String> = self.guard.pending.lock().map(|p| p.iter().cloned().collect()).unwrap_or_default();
        for name in &pending {
            self.converged.remove(name);
        }
        let (started, full) = (Instant::now(), self.full_at.is_none_or(|t| t.elapsed() >= self.full_interval));
        let result = match tokio::time::timeout(PASS_DEADLINE, self.converge(desired, full)).await {
            Ok(r) => r,
            Err(_) => Err(format!("the pass did not finish within {}", humantime::format_duration(PASS_DEADLINE))),
        };
        if let Ok(mut p) = self.guard.pending.lock() {
            p.retain(|name| !self.converged.contains_key(name) && desired.iter().any(|a| &a.name == name));
        }
        self.planned_over.retain(|name, _| desired.iter().any(|a| &a.name == name));
        let enforced = self
            .planned_over
            .iter()
            .filter(|(name, over)| **over && self.converged.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        if let Ok(mut e) = self.guard.enforced.lock() {
            *e = enforced;
        }
        if result.is_err() {
            // Whatever happened, the next pass looks at everything again.
            self.full_at = None;
            self.converged.clear();
        } else if full {
            self.full_at = Some(started);
        }
        result
    }

    async fn converge(&mut self, desired: &[DbTenant], full: bool) -> crate::driver::PassResult {
        // Between full passes: only what changed, what is not converged yet, and what went away.
        let only: Option<Vec<String>> = (!full).then(|| changed(desired, &self.converged));
        if only.as_ref().is_some_and(Vec::is_empty) {
            return Ok((BTreeMap::new(), self.cached_usage(desired)));
        }
        let work: Vec<DbTenant> = match &only {
            None => desired.to_vec(),
            Some(names) => desired.iter().filter(|a| names.contains(&a.name)).cloned().collect(),
        };
        let mut conn = self
            .options(None, "berqenas-agent")?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
        let mut observed =
            observe(&mut conn, only.as_deref()).await.map_err(|e| format!("observing PostgreSQL failed: {e}"))?;
        if full {
            self.usage.clear();
            self.converged.clear();
            let (mut databases, mut schemas) = (BTreeSet::new(), BTreeSet::new());
            for a in postgres_tenants(desired) {
                match own_database(a) {
                    true => databases.insert(a.name.clone()),
                    false => schemas.insert(a.name.clone()),
                };
            }
            let sizes = size::measure(&mut conn, &schemas, &databases).await?;
            if let Ok(mut known) = self.guard.sizes.lock() {
                *known = sizes;
            }
        }
        self.sizes(&mut observed);
        for a in work.iter().filter(|a| !own_database(a)) {
            if let Some(o) = observed.tenants.get(&a.name) {
                let u = Usage { db_bytes: o.bytes, quota_exceeded: over_quota(a, o), connections: o.connections };
                self.usage.insert(a.name.clone(), u);
                self.planned_over.insert(a.name.clone(), over_quota(a, o));
            }
        }
        let mut errors = BTreeMap::new();
        let options = self.options(None, "berqenas-agent")?;
        apply(&mut conn, Some(&options), plan(&work, &observed), &mut errors).await?;
        for a in postgres_tenants(&work).filter(|a| own_database(a)) {
            if errors.contains_key(&a.name) {
                continue;
            }
            match self.own_database_pass(a).await {
                Ok(Some(u)) => {
                    self.usage.insert(a.name.clone(), u);
                }
                Ok(None) => {}
                Err(e) => {
                    errors.insert(a.name.clone(), e);
                }
            }
        }
        // The files follow the whole desired state (cheap: compared, written only on change).
        let pooler = match &self.pgbouncer {
            Some(_) => Some(pooler_source(&mut conn).await?),
            None => None,
        };
        let mut node_failure = false;
        let mut failed = |what: &str, e: String| {
            tracing::warn!(error = %e, "{what} not in sync");
            node_failure = true;
            for a in postgres_tenants(desired) {
                errors.entry(a.name.clone()).or_insert_with(|| e.clone());
            }
        };
        if let Err(e) = sync_hba(&mut conn, desired, &observed.database, pooler).await {
            failed("pg_hba.conf", e);
        }
        // Limits nobody enforces are not limits: a guard that stopped working is a node failure.
        if let Some(e) =
            self.guard_started.filter(|t| t.elapsed() > GUARD_GRACE).and_then(|_| self.guard.failure(GUARD_GRACE))
        {
            failed("the session guard", e);
        }
        if let Some(config) = &self.pgbouncer {
            let options = self.options(None, "berqenas-agent")?;
            let server = crate::db::pgbouncer::Server {
                host: options.get_host().to_string(),
                port: options.get_port(),
                database: observed.database.clone(),
            };
            if let Err(e) = crate::db::pgbouncer::sync(config, desired, &server) {
                failed("pgBouncer", e);
            }
            if full || !self.pooler_firewall {
                self.pooler_firewall = false;
                match crate::db::pgbouncer::sync_firewall(config).await {
                    Ok(()) => self.pooler_firewall = true,
                    Err(e) => failed("pgBouncer's connection limit per source", e),
                }
            }
        }
        let _ = conn.close().await;
        if node_failure {
            // Files or pgBouncer out of sync: no tenant is converged until a pass fixes them.
            self.converged.clear();
            return Ok((errors, self.cached_usage(desired)));
        }
        for a in postgres_tenants(&work) {
            if errors.contains_key(&a.name) {
                self.converged.remove(&a.name);
            } else {
                self.converged.insert(a.name.clone(), a.clone());
            }
        }
        self.converged.retain(|n, _| desired.iter().any(|a| &a.name == n));
        Ok((errors, self.cached_usage(desired)))
    }

    /// The last usage figures of the desired tenants.
    fn cached_usage(&mut self, desired: &[DbTenant]) -> BTreeMap<String, Usage> {
        self.usage.retain(|n, _| desired.iter().any(|a| &a.name == n));
        desired.iter().filter_map(|a| Some((a.name.clone(), *self.usage.get(&a.name)?))).collect()
    }

    /// Connects to a database-isolated tenant's own database as `application` and observes the
    /// inside: only this tenant's schema counts there (the roles of all tenants are visible).
    async fn observe_own_database(
        &self,
        a: &DbTenant,
        application: &str,
    ) -> Result<(sqlx::PgConnection, plan::Observed), String> {
        let database = format!("tenant_{}", a.name);
        let mut conn = self
            .options(Some(&database), application)?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to database {database}: {e}"))?;
        let mut observed = observe(&mut conn, Some(std::slice::from_ref(&a.name)))
            .await
            .map_err(|e| format!("observing database {database} failed: {e}"))?;
        observed.tenants.retain(|name, _| *name == a.name);
        Ok((conn, observed))
    }

    /// Observes and converges the inside of a database-isolated tenant's own database.
    async fn own_database_pass(&mut self, a: &DbTenant) -> Result<Option<Usage>, String> {
        let (mut conn, mut observed) = self.observe_own_database(a, "berqenas-agent").await?;
        self.sizes(&mut observed);
        let usage = observed.tenants.get(&a.name).map(|o| Usage {
            db_bytes: o.bytes,
            quota_exceeded: over_quota(a, o),
            connections: o.connections,
        });
        self.planned_over.insert(a.name.clone(), usage.is_some_and(|u| u.quota_exceeded));
        let mut errors = BTreeMap::new();
        apply(&mut conn, None, plan_own_database(a, &observed), &mut errors).await?;
        let _ = conn.close().await;
        match errors.remove(&a.name) {
            Some(e) => Err(e),
            None => Ok(usage),
        }
    }
}

/// The session guard not completing a tick for this long fails every tenant of the node.
const GUARD_GRACE: Duration = Duration::from_secs(10);

/// A pass that takes longer than this fails (every statement also has a 120 s timeout and a 5 s
/// lock timeout).
const PASS_DEADLINE: Duration = Duration::from_secs(600);

#[async_trait::async_trait]
impl Driver<DbTenant> for PostgresDriver {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.guard.wake.clone())
    }

    async fn preview(&mut self, desired: &[DbTenant]) -> Result<Vec<Change>, String> {
        self.changes(desired).await
    }

    async fn reconcile(&mut self, desired: &[DbTenant]) -> Vec<Status> {
        // What this driver cannot provide is reported, never silently provided differently.
        let (supported, refused_here): (Vec<DbTenant>, Vec<DbTenant>) =
            desired.iter().cloned().partition(|a| unsupported(a).is_none());
        let result = self.pass(&supported).await;
        let refused = refused_here.iter().filter_map(|a| Some((a.name.clone(), unsupported(a)?.to_string()))).collect();
        crate::driver::statuses(&supported, &result, refused)
    }
}

/// Why this driver cannot provide an assignment, if it cannot.
pub fn unsupported(a: &DbTenant) -> Option<&'static str> {
    match a.db.db_type {
        DbType::Postgres => None,
        DbType::Mssql => Some("this node's driver serves PostgreSQL only"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_assignments_are_named_not_served_differently() {
        let a = |name: &str| crate::assignment::fixture(name);
        let mut mssql = a("acme");
        mssql.db.db_type = DbType::Mssql;
        assert_eq!(unsupported(&mssql), Some("this node's driver serves PostgreSQL only"));
        let mut per_db = a("acme");
        per_db.db.isolation = crate::assignment::Isolation::Database;
        assert_eq!(unsupported(&per_db), None);
        // An isolation this agent does not know never gets this far: the assignment is refused
        // at the wire (`assignment::tests::unknown_wire_values_are_refused_naming_the_field`).
        assert_eq!(unsupported(&a("acme")), None);
    }
}
