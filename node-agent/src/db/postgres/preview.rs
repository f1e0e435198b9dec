//! What the next full pass of the PostgreSQL driver would change, observed and planned exactly as
//! a pass does, applied nowhere: the SQL (secrets left out), `pg_hba.conf` and pgBouncer's files.
//! The session guard is not started and nothing is written.

use super::{observe, own_database, plan, plan_own_database, postgres_tenants, size, unsupported, PostgresDriver};
use crate::assignment::DbTenant;
use crate::driver::Change;
use sqlx::{ConnectOptions, Connection};
use std::collections::BTreeSet;

fn sql_changes(steps: Vec<super::Step>) -> impl Iterator<Item = Change> {
    steps.into_iter().map(|s| Change::Sql { sql: s.shown().to_string(), tenant: s.tenant })
}

impl PostgresDriver {
    pub(super) async fn changes(&self, desired: &[DbTenant]) -> Result<Vec<Change>, String> {
        let mut changes: Vec<Change> = desired
            .iter()
            .filter_map(|a| Some(Change::Refused { tenant: a.name.clone(), reason: unsupported(a)?.to_string() }))
            .collect();
        let desired: Vec<DbTenant> = desired.iter().filter(|a| unsupported(a).is_none()).cloned().collect();
        let mut conn = self
            .options(None, "berqenas-plan")?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
        let mut observed = observe(&mut conn, None).await.map_err(|e| format!("observing PostgreSQL failed: {e}"))?;
        let (mut databases, mut schemas) = (BTreeSet::new(), BTreeSet::new());
        for a in postgres_tenants(&desired) {
            match own_database(a) {
                true => databases.insert(a.name.clone()),
                false => schemas.insert(a.name.clone()),
            };
        }
        let sizes = size::measure(&mut conn, &schemas, &databases).await?;
        for (name, t) in &mut observed.tenants {
            t.bytes = sizes.get(name).copied().unwrap_or(0);
        }
        changes.extend(sql_changes(plan(&desired, &observed)));
        for a in postgres_tenants(&desired).filter(|a| own_database(a)) {
            if !observed.tenants.get(&a.name).is_some_and(|t| t.database) {
                continue; // made by this pass; its inside is planned once it exists
            }
            let (inner, mut inside) = self.observe_own_database(a, "berqenas-plan").await?;
            let _ = inner.close().await;
            if let Some(t) = inside.tenants.get_mut(&a.name) {
                t.bytes = sizes.get(&a.name).copied().unwrap_or(0);
            }
            changes.extend(sql_changes(plan_own_database(a, &inside)));
        }
        let pooler = match &self.pgbouncer {
            Some(_) => Some(super::apply::pooler_source(&mut conn).await?),
            None => None,
        };
        let (path, existing, wanted) = super::apply::hba_file(&mut conn, &desired, &observed.database, pooler).await?;
        if wanted != existing {
            changes.push(Change::File { path, what: "managed block rewritten, PostgreSQL reloaded" });
        }
        if let Some(config) = &self.pgbouncer {
            let options = self.options(None, "berqenas-plan")?;
            let server = crate::db::pgbouncer::Server {
                host: options.get_host().to_string(),
                port: options.get_port(),
                database: observed.database.clone(),
            };
            for path in crate::db::pgbouncer::pending(config, &desired, &server)? {
                changes.push(Change::File { path, what: "rewritten, pgBouncer reloaded" });
            }
        }
        let _ = conn.close().await;
        Ok(changes)
    }
}
