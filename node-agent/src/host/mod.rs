//! The host's plumbing, shared by every driver: the one place that runs external programs
//! (`exec`) and the one way files are written (`files`).

pub mod exec;
pub mod files;
