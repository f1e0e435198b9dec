//! Disk use of PostgreSQL tenants, measured without taking a single lock: a tenant holding
//! `LOCK TABLE … IN ACCESS EXCLUSIVE MODE` must neither stall the agent nor hide its size
//! (`pg_total_relation_size` waits for that lock). The catalogs give each relation's file path
//! (`pg_relation_filepath`, no relation lock); the agent, which runs on the database host, adds
//! up the files of every fork and segment. A database-isolated tenant is its database's size
//! (`pg_database_size`, a directory walk, no lock) minus that of `template1`, which it was
//! copied from.

use sqlx::{PgConnection, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bytes used per tenant name, for the tenants named in `schemas` (isolated by schema in the
/// database `conn` is connected to) and `databases` (isolated by database).
pub async fn measure(
    conn: &mut PgConnection,
    schemas: &BTreeSet<String>,
    databases: &BTreeSet<String>,
) -> Result<BTreeMap<String, u64>, String> {
    let mut sizes = BTreeMap::new();
    if !schemas.is_empty() {
        let data_dir: String = sqlx::query_scalar("SELECT pg_catalog.current_setting('data_directory')")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| format!("cannot read data_directory: {e}"))?;
        let data_dir = PathBuf::from(data_dir);
        if !data_dir.join("base").is_dir() {
            // Never report 0 for a tenant whose files cannot be seen: that would hide its use.
            return Err(format!(
                "cannot read PostgreSQL's data directory {} (the agent must run on the database host)",
                data_dir.display()
            ));
        }
        let names: Vec<String> = schemas.iter().map(|n| format!("tenant_{n}")).collect();
        let rows = sqlx::query(
            "WITH rels AS (SELECT n.nspname::text AS nsp, c.oid, c.reltoastrelid FROM pg_catalog.pg_namespace n \
                           JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid \
                           WHERE n.nspname::text OPERATOR(pg_catalog.=) ANY($1)) \
             SELECT nsp, pg_catalog.pg_relation_filepath(oid) AS path FROM rels \
             UNION ALL SELECT nsp, pg_catalog.pg_relation_filepath(reltoastrelid) FROM rels \
                       WHERE reltoastrelid OPERATOR(pg_catalog.<>) 0 \
             UNION ALL SELECT r.nsp, pg_catalog.pg_relation_filepath(i.indexrelid) FROM rels r \
                       JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) r.reltoastrelid \
                       WHERE r.reltoastrelid OPERATOR(pg_catalog.<>) 0",
        )
        .bind(&names)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| format!("cannot list tenant relations: {e}"))?;
        for n in schemas {
            sizes.insert(n.clone(), 0);
        }
        for row in rows {
            let nsp: String = row.try_get("nsp").map_err(|e| e.to_string())?;
            let path: Option<String> = row.try_get("path").map_err(|e| e.to_string())?;
            let (Some(name), Some(path)) = (nsp.strip_prefix("tenant_"), path) else { continue };
            *sizes.entry(name.to_string()).or_insert(0) += relation_bytes(&data_dir, &path);
        }
    }
    if !databases.is_empty() {
        let names: Vec<String> = databases.iter().map(|n| format!("tenant_{n}")).collect();
        let rows = sqlx::query(
            "SELECT d.datname::text AS db, pg_catalog.pg_database_size(d.oid) AS bytes, \
                    (SELECT pg_catalog.pg_database_size('template1'::pg_catalog.name)) AS base \
             FROM pg_catalog.pg_database d WHERE d.datname::text OPERATOR(pg_catalog.=) ANY($1)",
        )
        .bind(&names)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| format!("cannot measure tenant databases: {e}"))?;
        for row in rows {
            let db: String = row.try_get("db").map_err(|e| e.to_string())?;
            let bytes: i64 = row.try_get("bytes").map_err(|e| e.to_string())?;
            let base: i64 = row.try_get("base").map_err(|e| e.to_string())?;
            if let Some(name) = db.strip_prefix("tenant_") {
                sizes.insert(name.to_string(), u64::try_from(bytes.saturating_sub(base)).unwrap_or(0));
            }
        }
    }
    Ok(sizes)
}

/// Bytes of a relation's files: every fork (main, free space map, visibility map, init) and every
/// 1 GB segment of each. A file that vanished meanwhile (a concurrent drop) counts as 0.
pub fn relation_bytes(data_dir: &Path, relative: &str) -> u64 {
    let mut total = 0;
    for fork in ["", "_fsm", "_vm", "_init"] {
        for segment in 0u32.. {
            let file = match segment {
                0 => format!("{relative}{fork}"),
                n => format!("{relative}{fork}.{n}"),
            };
            match std::fs::metadata(data_dir.join(file)) {
                Ok(m) => total += m.len(),
                Err(_) => break,
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fork_and_segment_counts() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("base/5")).expect("mkdir");
        for (file, len) in [("16384", 1000), ("16384.1", 500), ("16384_fsm", 24), ("16384_vm", 8), ("16385", 7)] {
            std::fs::write(dir.path().join("base/5").join(file), vec![0u8; len]).expect("write");
        }
        assert_eq!(relation_bytes(dir.path(), "base/5/16384"), 1532);
        assert_eq!(relation_bytes(dir.path(), "base/5/99999"), 0, "a dropped relation counts 0");
    }
}
