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

use crate::assignment::{Assignment, DbType, Isolation, Role};

/// The tenants a PostgreSQL node serves: db role, PostgreSQL.
pub fn postgres_tenants(desired: &[Assignment]) -> impl Iterator<Item = &Assignment> {
    desired.iter().filter(|a| a.has_role(Role::Db) && a.db_type == DbType::Postgres)
}

/// The tenant has its own database rather than a schema in the main one.
pub fn own_database(a: &Assignment) -> bool {
    a.isolation == Isolation::Database
}
