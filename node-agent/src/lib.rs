//! Berqenas node agent: joins the fleet, holds an mTLS stream to any coordinator, and makes its
//! host match the desired state it receives (observe → plan → apply), reporting what it did.
//! It keeps the last applied state when no coordinator is reachable (fail static).
//!
//! - `runtime`, `connect`, `join`, `config`: the agent itself (loop, coordinator link, config).
//! - `assignment`: the desired state of one tenant, converted once from the wire.
//! - `driver`: the trait every role driver implements, and the role split.
//! - `db/`: the database role (PostgreSQL with pg_hba and pgBouncer, SQL Server).
//! - `gateway/`: the gateway role (next: WireGuard and nftables).
//! - `backup/`: the db role's per-tenant backups (pg_dump → zstd → AES-256-GCM → S3) and restores.
//! - `realtime/`: the db role's realtime ingest (devices publish events) and subscribers (SSE).
//! - `host/`: the host's plumbing — running programs, writing files.
//! - `metrics`: the Prometheus metrics and their `/metrics` listener.

pub mod assignment;
pub mod backup;
pub mod config;
pub mod connect;
pub mod db;
pub mod driver;
pub mod gateway;
pub mod host;
pub mod join;
pub mod metrics;
pub mod realtime;
pub mod report;
pub mod runtime;
