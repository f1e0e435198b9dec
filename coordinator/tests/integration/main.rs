//! Integration tests of the coordinator: real `berqenas-coordinator` processes on loopback,
//! driven through the CLI and the REST API as a user would.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: it starts the project's binaries and lab tools, and a failed setup step is a failed test"
)]

mod admin;
mod audit;
mod billing;
mod cli;
mod cluster;
mod crash;
mod enroll;
mod enroll_attacks;
mod enroll_identity;
mod flood;
mod gateway;
mod harness;
mod invariants;
mod peers;
mod secrets;
mod siem;
mod snapshot;
mod users;
