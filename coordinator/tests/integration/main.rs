//! Integration tests of the coordinator: real `berqenas-coordinator` processes on loopback,
//! driven through the CLI and the REST API as a user would.

mod admin;
mod audit;
mod cli;
mod cluster;
mod flood;
mod harness;
mod invariants;
mod peers;
mod secrets;
