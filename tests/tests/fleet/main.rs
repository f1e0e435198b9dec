//! End-to-end: real coordinator and node-agent processes on loopback. Agents join with tokens,
//! receive desired state over mTLS, report readiness; coordinators die and agents move on.

mod attacks;
mod db;
mod harness;
mod join;
mod lab;
mod mssql;
mod plan;
mod stream;
