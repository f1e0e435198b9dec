//! Per-tenant backups of the db role: `pg_dump` of the tenant's schema → zstd → AES-256-GCM in
//! 1 MiB chunks with the tenant's data key → an S3 multipart upload, streamed end to end in
//! stages that run at once (`stages.rs`), joined by bounded queues: a few tens of MiB are held
//! whatever the dump's size, and nothing touches the disk. Restore is the way back, into a
//! clone schema or over the live one, as the tenant's owner role.
//!
//! - `format.rs`: the object format (header, sealed chunks), pure.
//! - `pg.rs`: libpq environment, `pg_dump` arguments, the SQL wrapped around a restore, pure.
//! - `store.rs`: the bucket (client, multipart upload, download).
//! - `stages.rs`: the pipelines' stages (reading, zstd, sealing, uploading; downloading, opening).
//! - `manual.rs`: the agent's `backup run|list|restore` command (by hand, with a key file).
//! - `schedule.rs`: the scheduler the coordinators drive (policy, keys, requests, retention).
//! - this file: the two pipelines.
//!
//! A backup is complete only when the upload completed after `pg_dump` exited cleanly; before
//! that the multipart upload is aborted and nothing exists under the key. Its [`Catalogued`]
//! entry is made only then. A restore reads the object twice: once to authenticate every chunk
//! (and check its SHA-256), touching nothing, and once into psql, which commits only after the
//! final chunk authenticated and the SHA-256 matched again.

pub mod format;
pub mod manual;
pub mod pg;
pub mod schedule;
mod stages;
pub mod store;

use crate::host::exec::{self, ExecError, Pipe};
use format::{DataKey, FormatError, Sealer};
use stages::QUEUE;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};
use store::{Store, StoreError};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Bytes per uploaded part (S3's minimum for all but the last is 5 MiB).
pub const PART: usize = 8 << 20;
/// zstd level: fast, still a good ratio on SQL text.
const LEVEL: i32 = 3;
/// The longest a dump or a restore may run.
const DEADLINE: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Url(#[from] pg::UrlError),
    #[error(transparent)]
    Target(#[from] pg::InvalidTarget),
    #[error(transparent)]
    Identity(#[from] pg::IdentityChange),
    #[error("{what}: {error}")]
    Io { what: &'static str, error: std::io::Error },
    #[error("PostgreSQL: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("the object's SHA-256 is {found}, the catalog says {expected}: refusing to restore it")]
    Digest { expected: String, found: String },
    #[error("schema {0} already exists")]
    Exists(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> BackupError {
    move |error| BackupError::Io { what, error }
}

/// The tenant a backup is of, and how to reach its PostgreSQL.
#[derive(Debug, Clone)]
pub struct Source {
    /// The agent's superuser URL (its password goes to pg_dump and psql in their environment).
    pub url: String,
    /// A validated tenant name.
    pub tenant: String,
    /// The tenant has its own database (`tenant_<name>`) rather than a schema in the main one.
    pub own_database: bool,
}

impl Source {
    fn database(&self) -> Result<String, pg::UrlError> {
        if self.own_database {
            Ok(pg::schema(&self.tenant))
        } else {
            pg::main_database(&self.url)
        }
    }
}

/// How far a backup got; sent each time a part's upload completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Bytes pg_dump wrote so far.
    pub dumped: u64,
    /// Bytes of the object sealed so far (uploaded or on their way).
    pub uploaded: u64,
    /// Parts whose upload completed.
    pub parts: usize,
}

/// A completed backup: what the coordinator's catalog records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogued {
    pub key: String,
    /// Size of the object (ciphertext) in bytes.
    pub bytes: u64,
    /// SHA-256 of the object, hex.
    pub sha256: String,
    /// Bytes of the plain dump.
    pub dumped: u64,
    pub duration: Duration,
    pub format_version: u8,
    /// The PostgreSQL server's `server_version_num`.
    pub server_version: u32,
    pub key_id: String,
}

/// The object key of backup `id` of `tenant` taken at `at`: `tenants/{tenant}/{RFC 3339}-{id}.bqb`.
pub fn object_key(tenant: &str, at: SystemTime, id: &str) -> String {
    format!("tenants/{tenant}/{}-{id}.bqb", humantime::format_rfc3339_seconds(at))
}

/// Dumps `source`'s schema into the bucket under `key`, sealed with `data_key`. `progress` is
/// called after each uploaded part.
///
/// Four stages run at once, joined by bounded queues so memory stays bounded whatever the
/// dump's size: reading pg_dump's output (this task), zstd (a blocking thread), sealing and
/// hashing (another), and the part uploads (this task, `stages::UPLOADS` in flight). At most
/// about `(QUEUE / 2) × READ + QUEUE × CHUNK + (UPLOADS + 2) × PART` bytes are held (52 MiB).
pub async fn backup(
    store: &Store,
    source: &Source,
    data_key: &DataKey,
    key: &str,
    mut progress: impl FnMut(Progress),
) -> Result<Catalogued, BackupError> {
    let started = Instant::now();
    let database = source.database()?;
    let env = pg::libpq_env(&source.url, &database)?;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = pg::dump_args(&source.tenant);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sealer = Sealer::new(data_key, rand::random())?;
    let dump = exec::spawn("pg_dump", &args, &env, Pipe::Stdout)?;
    // pg_dump connects and reads the catalogs meanwhile; it is killed (dropped) if either fails,
    // and an upload begun beside a failed version query is aborted.
    let (server_version, upload) = tokio::join!(server_version(&source.url, &database), store.upload(key));
    let (server_version, mut upload) = match (server_version, upload) {
        (Ok(version), Ok(upload)) => (version, upload),
        (Err(e), Ok(upload)) => {
            upload.abort().await;
            return Err(e);
        }
        (Err(e), Err(_)) => return Err(e),
        (Ok(_), Err(e)) => return Err(e.into()),
    };

    // Read buffers are 1 MiB (and the pipe holds another): half a queue of them is enough.
    let (dumped_tx, dumped_rx) = mpsc::channel(QUEUE / 2);
    let (compressed_tx, compressed_rx) = mpsc::channel(QUEUE);
    let (parts_tx, parts_rx) = mpsc::channel(1);
    let (read_buffers, read_back) = stages::Spare::new(stages::READ);
    let (chunks, chunk_back) = stages::Spare::new(format::CHUNK);
    let compressing =
        tokio::task::spawn_blocking(move || stages::compress(dumped_rx, read_back, chunks, compressed_tx));
    let sealing = tokio::task::spawn_blocking(move || stages::seal(sealer, compressed_rx, chunk_back, parts_tx));
    let dumped = AtomicU64::new(0);
    let flowed = tokio::try_join!(
        stages::read_dump(dump, dumped_tx, read_buffers, &dumped),
        stages::send_parts(&mut upload, parts_rx, &dumped, &mut progress)
    );
    // The stages end once the queues around them close; the earliest failed stage is the cause
    // (later ones only saw their input end early).
    let compressed = stages::joined(compressing.await);
    let sealed = stages::joined(sealing.await);
    let result = match (compressed, sealed, flowed) {
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        (Ok(()), Ok(Some(sealed)), Ok(_)) => Ok(sealed),
        (Ok(()), Ok(None), Ok(_)) => Err(io("the backup pipeline")(std::io::Error::other("no final chunk was sealed"))),
    };
    match result {
        Ok(stages::Sealed { bytes, sha256 }) => {
            let completing = Instant::now();
            upload.complete().await?;
            // Its own figure: some stores (s3s-fs) copy and hash the whole object again here.
            tracing::info!(seconds = completing.elapsed().as_secs_f64(), "the store completed the upload");
            Ok(Catalogued {
                key: key.into(),
                bytes,
                sha256,
                dumped: dumped.into_inner(),
                duration: started.elapsed(),
                format_version: format::VERSION,
                server_version,
                key_id: data_key.id.clone(),
            })
        }
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// Authenticates every chunk of `key`, checks its SHA-256 and that the dump never changes its
/// session's identity ([`pg::DumpScan`]), touching nothing.
pub async fn verify(store: &Store, data_key: &DataKey, key: &str, sha256: &str) -> Result<(), BackupError> {
    let found = stages::unseal(store, data_key, key, pg::DumpScan::default(), async { Ok(()) }).await?;
    if found != sha256 {
        return Err(BackupError::Digest { expected: sha256.into(), found });
    }
    Ok(())
}

/// What a restore made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The schema holding the backup's content now: the clone, or the tenant's own.
    pub schema: String,
    /// Overwrite: the schema the live content was moved to.
    pub kept: Option<String>,
}

/// Restores backup `key` (whose catalog SHA-256 is `sha256`) of `source`'s tenant per `mode`.
/// The object is verified whole first; nothing in PostgreSQL changes unless every chunk
/// authenticates, and then everything changes in one transaction.
pub async fn restore(
    store: &Store,
    source: &Source,
    data_key: &DataKey,
    key: &str,
    sha256: &str,
    mode: &pg::Mode,
) -> Result<Restored, BackupError> {
    let tenant = &source.tenant;
    let (made, kept) = match mode {
        pg::Mode::Clone { schema } => (schema.clone(), None),
        pg::Mode::Overwrite { keep } => (pg::schema(tenant), Some(keep.clone())),
    };
    let new_name = match mode {
        pg::Mode::Clone { schema } => schema,
        pg::Mode::Overwrite { keep } => keep,
    };
    pg::check_target(tenant, new_name)?;
    let started = Instant::now();
    verify(store, data_key, key, sha256).await?;
    tracing::info!(tenant, key, took = ?started.elapsed(), "backup verified; replaying it");

    let database = source.database()?;
    let parked = format!("{}_bq_restoring", pg::schema(tenant));
    let grant_create = {
        let mut conn = connect(&source.url, &database).await?;
        let exists: Vec<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1)")
            .bind(vec![new_name.clone(), parked.clone()])
            .fetch_all(&mut conn)
            .await?;
        if let Some(name) = exists.into_iter().next() {
            return Err(BackupError::Exists(name));
        }
        let may: bool = sqlx::query_scalar("SELECT has_database_privilege($1, current_database(), 'CREATE')")
            .bind(pg::owner(tenant))
            .fetch_one(&mut conn)
            .await?;
        !may
    };
    let (before, after) = pg::wrap(tenant, &database, mode, &parked, grant_create);
    let env = pg::libpq_env(&source.url, &database)?;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password"];
    let mut psql = exec::spawn("psql", &args, &env, Pipe::Stdin)?;
    let fed = async {
        let mut stdin = psql.stdin.take().ok_or_else(|| io("psql")(std::io::ErrorKind::BrokenPipe.into()))?;
        stdin.write_all(before.as_bytes()).await.map_err(io("writing to psql"))?;
        let (plain, mut pieces) = mpsc::channel::<Vec<u8>>(QUEUE);
        let writing = async {
            while let Some(piece) = pieces.recv().await {
                stdin.write_all(&piece).await.map_err(io("writing to psql"))?;
            }
            Ok(())
        };
        let found = stages::unseal(store, data_key, key, plain, writing).await?;
        // Read again, the object must still be the one verified.
        if found != sha256 {
            return Err(BackupError::Digest { expected: sha256.into(), found });
        }
        // COMMIT goes last, only after the final chunk authenticated.
        stdin.write_all(after.as_bytes()).await.map_err(io("writing to psql"))?;
        Ok::<_, BackupError>(stdin)
    }
    .await;
    match fed {
        Ok(stdin) => {
            drop(stdin);
            psql.finish(DEADLINE).await?;
        }
        Err(e) => {
            // Killed before it read a COMMIT: the server rolls the transaction back.
            psql.kill().await;
            return Err(e);
        }
    }
    if let Some(keep) = &kept {
        tracing::info!(tenant, kept = %keep, "overwrite restore committed; the previous schema is kept");
    }
    Ok(Restored { schema: made, kept })
}

async fn connect(url: &str, database: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    sqlx::postgres::PgConnectOptions::from_str(url)?
        .database(database)
        .application_name("berqenas-backup")
        .disable_statement_logging()
        .connect()
        .await
}

async fn server_version(url: &str, database: &str) -> Result<u32, BackupError> {
    let mut conn = connect(url, database).await?;
    let v: String = sqlx::query_scalar("SHOW server_version_num").fetch_one(&mut conn).await?;
    Ok(v.parse().unwrap_or(0))
}
