//! End-to-end: real coordinator and node-agent processes on loopback. Agents join with tokens,
//! receive desired state over mTLS, report readiness; coordinators die and agents move on.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it starts the project's binaries and lab tools, and a failed setup step is a failed test"
)]

mod attacks;
mod backup;
mod backup_e2e;
mod db;
mod db_logins;
mod device_cross;
mod device_e2e;
mod device_enroll;
mod device_events;
mod device_full;
mod device_handshake;
mod device_tunnel;
mod gateway;
mod gateway_control;
mod gateway_e2e;
mod gateway_labels;
mod gateway_nft;
mod harness;
mod join;
mod lab;
mod metrics;
mod mssql;
mod packages;
mod panel;
mod plan;
mod realtime;
mod realtime_publish;
mod stream;
mod units;
mod upgrade;
mod usage;
