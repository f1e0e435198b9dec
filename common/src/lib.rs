//! Small pieces both the coordinator and the node agent need, written once.

pub mod files;
pub mod net;
pub mod tenancy;
