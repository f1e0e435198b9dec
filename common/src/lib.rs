//! Small pieces both the coordinator and the node agent need, written once.

pub mod files;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "manual")]
pub mod manual;
pub mod net;
pub mod tenancy;
