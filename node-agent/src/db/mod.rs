//! The `db` role: drivers that give each tenant a database on this node, and the pure renderers
//! of the files around them.
//!
//! - `postgres/`: the PostgreSQL driver (observe, plan, apply, the session guard, sizes).
//! - `pghba.rs`: the managed block of `pg_hba.conf` (pure renderer).
//! - `pgbouncer.rs`: pgBouncer's pools, auth and hba files (pure renderers) and their sync.
//! - `mssql.rs`: the SQL Server driver.
//!
//! The renderers know only assignments and what this module says about them; they never import a
//! driver, so the driver depends on them and not the other way round.

pub mod mssql;
pub mod pgbouncer;
pub mod pghba;
pub mod postgres;

use crate::assignment::{DbTenant, DbType, Isolation};

/// The tenants a PostgreSQL node serves: db role, PostgreSQL.
pub fn postgres_tenants(desired: &[DbTenant]) -> impl Iterator<Item = &DbTenant> {
    desired.iter().filter(|a| a.db.db_type == DbType::Postgres)
}

/// The tenant has its own database rather than a schema in the main one.
pub fn own_database(a: &DbTenant) -> bool {
    a.db.isolation == Isolation::Database
}
