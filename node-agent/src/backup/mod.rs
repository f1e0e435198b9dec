//! Per-tenant backups of the db role: `pg_dump` of the tenant's schema → zstd → AES-256-GCM in
//! 1 MiB chunks with the tenant's data key → an S3 multipart upload, streamed end to end (at
//! most two parts, 8 MiB each — one filling, one uploading — are held; nothing touches the
//! disk). Restore is the way back, into a
//! clone schema or over the live one, as the tenant's owner role.
//!
//! - `format.rs`: the object format (header, sealed chunks), pure.
//! - `pg.rs`: libpq environment, `pg_dump` arguments, the SQL wrapped around a restore, pure.
//! - `store.rs`: the bucket (client, multipart upload, download).
//! - `manual.rs`: the agent's `backup run|list|restore` command (by hand, with a key file).
//! - `schedule.rs`: the scheduler the coordinators drive (policy, keys, requests, retention).
//! - this file: the two pipelines.
//!
//! A backup is complete only when the upload completed after `pg_dump` exited cleanly; before
//! that the multipart upload is aborted and nothing exists under the key. Its [`Catalogued`]
//! entry is made only then. A restore reads the object twice: once to authenticate every chunk
//! (and check its SHA-256), touching nothing, and once into psql, which commits only after the
//! final chunk authenticated.

pub mod format;
pub mod manual;
pub mod pg;
pub mod schedule;
pub mod store;

use crate::host::exec::{self, ExecError, Pipe};
use aws_sdk_s3::types::CompletedPart;
use format::{DataKey, FormatError, Opener, Sealer, CHUNK};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};
use store::{Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Accumulates sealed frames into parts and uploads each as it fills, one part in flight while
/// the next one fills (so pg_dump is not held up by the upload; at most two parts in memory).
struct Sink {
    upload: store::Upload,
    part: Vec<u8>,
    in_flight: Option<tokio::task::JoinHandle<Result<CompletedPart, StoreError>>>,
    hash: Sha256,
    bytes: u64,
}

impl Sink {
    /// Adds sealed bytes; true when a part finished uploading meanwhile.
    async fn push(&mut self, frame_bytes: &[u8]) -> Result<bool, BackupError> {
        self.hash.update(frame_bytes);
        self.bytes += frame_bytes.len() as u64;
        self.part.extend_from_slice(frame_bytes);
        if self.part.len() < PART {
            return Ok(false);
        }
        let part = std::mem::replace(&mut self.part, Vec::with_capacity(PART + CHUNK));
        let finished = self.settle().await?;
        self.in_flight = Some(tokio::spawn(self.upload.send_part(part)));
        Ok(finished)
    }

    /// Waits for the part in flight, if any; true when there was one.
    async fn settle(&mut self) -> Result<bool, BackupError> {
        let Some(task) = self.in_flight.take() else { return Ok(false) };
        let done =
            task.await.map_err(|e| BackupError::Io { what: "the part upload", error: std::io::Error::other(e) })??;
        self.upload.record(done);
        Ok(true)
    }
}

/// Dumps `source`'s schema into the bucket under `key`, sealed with `data_key`. `progress` is
/// called after each uploaded part.
pub async fn backup(
    store: &Store,
    source: &Source,
    data_key: &DataKey,
    key: &str,
    mut progress: impl FnMut(Progress),
) -> Result<Catalogued, BackupError> {
    let started = Instant::now();
    let database = source.database()?;
    let server_version = server_version(&source.url, &database).await?;
    let env = pg::libpq_env(&source.url, &database)?;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = pg::dump_args(&source.tenant);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut dump = exec::spawn("pg_dump", &args, &env, Pipe::Stdout)?;
    let mut sink = Sink {
        upload: store.upload(key).await?,
        part: Vec::with_capacity(PART + CHUNK),
        in_flight: None,
        hash: Sha256::new(),
        bytes: 0,
    };
    let salt: [u8; 32] = rand::random();
    let result = async {
        let mut sealer = Sealer::new(data_key, salt)?;
        let mut frame = sealer.header().to_vec();
        let mut zstd = zstd::stream::write::Encoder::new(Vec::with_capacity(2 * CHUNK), LEVEL).map_err(io("zstd"))?;
        let mut stdout = dump.stdout.take().ok_or_else(|| io("pg_dump")(std::io::ErrorKind::BrokenPipe.into()))?;
        let (mut buf, mut dumped) = (vec![0u8; 256 << 10], 0u64);
        loop {
            let n = stdout.read(&mut buf).await.map_err(io("reading pg_dump's output"))?;
            if n == 0 {
                break;
            }
            dumped += n as u64;
            zstd.write_all(&buf[..n]).map_err(io("zstd"))?;
            while zstd.get_ref().len() >= CHUNK {
                let rest = zstd.get_mut().split_off(CHUNK);
                let chunk = std::mem::replace(zstd.get_mut(), rest);
                sealer.seal(&chunk, false, &mut frame);
                if sink.push(&frame).await? {
                    progress(Progress { dumped, uploaded: sink.bytes, parts: sink.upload.parts() });
                }
                frame.clear();
            }
        }
        // The dump is whole only if pg_dump says so: a failed dump never completes the upload.
        dump.finish(DEADLINE).await?;
        let mut rest = zstd.finish().map_err(io("zstd"))?;
        while rest.len() > CHUNK {
            let tail = rest.split_off(CHUNK);
            sealer.seal(&rest, false, &mut frame);
            rest = tail;
        }
        sealer.seal(&rest, true, &mut frame);
        sink.push(&frame).await?;
        sink.settle().await?;
        let last = std::mem::take(&mut sink.part);
        if !last.is_empty() || sink.upload.parts() == 0 {
            sink.upload.part(last).await?;
        }
        progress(Progress { dumped, uploaded: sink.bytes, parts: sink.upload.parts() });
        Ok::<u64, BackupError>(dumped)
    }
    .await;
    if let Some(task) = sink.in_flight.take() {
        task.abort();
    }
    let Sink { upload, hash, bytes, .. } = sink;
    match result {
        Ok(dumped) => {
            upload.complete().await?;
            Ok(Catalogued {
                key: key.into(),
                bytes,
                sha256: hex::encode(hash.finalize()),
                dumped,
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
    let mut body = store.download(key).await?;
    let (mut opener, mut hash) = (Opener::new(data_key.clone()), Sha256::new());
    let mut zstd = zstd::stream::write::Decoder::new(Vec::with_capacity(4 * CHUNK)).map_err(io("zstd"))?;
    let mut scan = pg::DumpScan::default();
    while let Some(bytes) = body.next().await {
        let bytes =
            bytes.map_err(|e| BackupError::Io { what: "reading the object", error: std::io::Error::other(e) })?;
        hash.update(&bytes);
        opener.feed(&bytes, |chunk| {
            zstd.write_all(chunk).map_err(io("zstd"))?;
            scan.feed(zstd.get_ref())?;
            zstd.get_mut().clear();
            Ok::<_, BackupError>(())
        })?;
    }
    opener.finish()?;
    zstd.flush().map_err(io("zstd"))?;
    scan.feed(zstd.get_ref())?;
    scan.finish()?;
    let found = hex::encode(hash.finalize());
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
    verify(store, data_key, key, sha256).await?;

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
        let mut body = store.download(key).await?;
        let mut opener = Opener::new(data_key.clone());
        let mut zstd = zstd::stream::write::Decoder::new(Vec::with_capacity(4 * CHUNK)).map_err(io("zstd"))?;
        while let Some(bytes) = body.next().await {
            let bytes =
                bytes.map_err(|e| BackupError::Io { what: "reading the object", error: std::io::Error::other(e) })?;
            let mut plain = Vec::new();
            opener.feed(&bytes, |chunk| {
                zstd.write_all(chunk).map_err(io("zstd"))?;
                plain.append(zstd.get_mut());
                Ok::<_, BackupError>(())
            })?;
            stdin.write_all(&plain).await.map_err(io("writing to psql"))?;
        }
        opener.finish()?;
        zstd.flush().map_err(io("zstd"))?;
        stdin.write_all(zstd.get_ref()).await.map_err(io("writing to psql"))?;
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
