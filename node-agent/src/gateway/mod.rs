//! The `gateway` role's room. The next issue puts its driver here: WireGuard interfaces (one per
//! tenant, `bqt<index>`) and the nftables ruleset that keeps tenants apart, each as
//! observe → plan (pure, printable) → apply, like `db/postgres`. Until then a node's gateway
//! assignments go to the `dir` driver (`driver::DirDriver`) when configured, and are reported not
//! ready otherwise.

pub mod nft;
