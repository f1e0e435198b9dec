//! Berqenas node agent: joins the fleet, holds an mTLS stream to any coordinator, and makes its
//! host match the desired state it receives (observe → plan → apply), reporting what it did.
//! It keeps the last applied state when no coordinator is reachable (fail static).

pub mod assignment;
pub mod config;
pub mod connect;
pub mod driver;
pub mod exec;
pub mod join;
pub mod mssql;
pub mod pgbouncer;
pub mod pgguard;
pub mod pghba;
pub mod pgsize;
pub mod postgres;
pub mod runtime;
