//! Windows-only pieces: the state directory's ACL (`acl`), what the fingerprint reads from the
//! system (`system`: adapter MACs, MachineGuid, OS version) and the Windows service (`service`).
//! `acl` and `system` call Win32 directly and are the only places of the crate with `unsafe`.

pub mod acl;
pub mod service;
pub mod system;
