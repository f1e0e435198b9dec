//! `backup run|list|restore --tenant T` and `tenant update --backup-*`: a tenant's backups over
//! the REST API (`/api/v1/tenant/{name}/backups`). `run` and `restore` wait for the tenant's db
//! node to report the end, showing how far the backup got (bytes dumped and uploaded, as the db
//! node reports them) or how long they have waited, and fail with its reason.

use super::client::{path_segment, Client, NO_BODY};
use super::output::{print_json, say, Output};
use crate::api::dto::{
    BackupOutcomeView, BackupProgressView, BackupsView, RestoreBackupBody, RestoreMode, UpdateTenantBody,
};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use std::time::{Duration, Instant};

/// `tenant update` flags for the backup policy.
#[derive(Debug, Args)]
pub struct PolicySettings {
    /// Time between scheduled backups: 1h, 30m, 1d (5 minutes to a week).
    #[arg(long)]
    pub backup_interval: Option<String>,
    /// Keep the newest N backups.
    #[arg(long)]
    pub backup_keep: Option<u32>,
    /// Remove backups older than N days (the newest is always kept).
    #[arg(long)]
    pub backup_days: Option<u32>,
}

impl PolicySettings {
    pub fn apply(self, body: &mut UpdateTenantBody) -> anyhow::Result<()> {
        if let Some(raw) = self.backup_interval {
            let d = humantime::parse_duration(raw.trim()).with_context(|| format!("--backup-interval {raw:?}"))?;
            body.backup_interval_s = Some(u32::try_from(d.as_secs()).context("--backup-interval is too long")?);
        }
        body.backup_keep = self.backup_keep;
        body.backup_days = self.backup_days;
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Back the tenant up now and wait for the upload to complete.
    Run {
        #[arg(long)]
        tenant: String,
        /// Return once asked, without waiting.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value = "30m")]
        wait_timeout: String,
    },
    /// The tenant's backups, its policy and what is under way.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Restore the newest backup taken at or before a time (UTC).
    Restore {
        #[arg(long)]
        tenant: String,
        /// 2026-11-22T10:00, 2026-11-22T10:00:00Z or `now`.
        #[arg(long)]
        at: String,
        #[arg(long, value_parser = ["clone", "overwrite"])]
        mode: String,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value = "30m")]
        wait_timeout: String,
    },
    /// Give the tenant a new data key (admin): backups from now on are sealed with it; older
    /// backups keep restoring with the key they were sealed with.
    RotateKey {
        #[arg(long)]
        tenant: String,
    },
    /// On a coordinator host, offline: make this coordinator's cluster backup key
    /// (DATA_DIR/backup.key, 0600) for a cluster initialised before backups existed, or install
    /// the one another coordinator of the cluster holds (`--from`). Restart the coordinator
    /// after. Refused when the data directory already has one.
    InitKey {
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Another coordinator's backup.key (64 hex digits) to install instead of a new key:
        /// every coordinator of a cluster must hold the same one.
        #[arg(long)]
        from: Option<std::path::PathBuf>,
    },
}

/// `backup init-key`: the cluster backup key made (or installed from `from`) in `data_dir`,
/// never over an existing one. Returns the key's id (never the key).
pub fn init_key(data_dir: &std::path::Path, from: Option<&std::path::Path>, out: Output) -> anyhow::Result<()> {
    use crate::backupkey::ClusterKey;
    anyhow::ensure!(data_dir.is_dir(), "{} is not a directory", data_dir.display());
    if let Some(held) = ClusterKey::load(data_dir)? {
        bail!("{} already holds cluster backup key {}: nothing changed", ClusterKey::path(data_dir).display(), held.id);
    }
    let key = match from {
        Some(file) => {
            let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            anyhow::ensure!(
                file.file_name() == Some(std::ffi::OsStr::new(crate::backupkey::FILE)),
                "--from must name a {} file",
                crate::backupkey::FILE
            );
            ClusterKey::load(dir)?.with_context(|| format!("{} does not exist", file.display()))?
        }
        None => ClusterKey::generate()?,
    };
    key.save(data_dir)?;
    if out == Output::Json {
        print_json(&serde_json::json!({ "cluster_key_id": key.id, "file": ClusterKey::path(data_dir) }));
    } else {
        say(format_args!(
            "cluster backup key {} written to {} (0600); every coordinator of the cluster must hold this same file              (`backup init-key --from`), then restart each",
            key.id,
            ClusterKey::path(data_dir).display()
        ));
    }
    Ok(())
}

/// A time as `--at` takes it: RFC 3339 in UTC, seconds optional; `now`.
pub fn parse_at(raw: &str, now_ms: u64) -> anyhow::Result<u64> {
    let raw = raw.trim();
    if raw == "now" {
        return Ok(now_ms);
    }
    let full = if raw.len() == 16 { format!("{raw}:00") } else { raw.to_string() };
    let t = humantime::parse_rfc3339_weak(&full)
        .with_context(|| format!("--at {raw:?}: expected a UTC time such as 2026-11-22T10:00"))?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).context("--at is before 1970")?.as_millis();
    u64::try_from(ms).context("--at is out of range")
}

fn path(tenant: &str) -> String {
    format!("/api/v1/tenant/{}/backups", path_segment(tenant))
}

pub async fn run(client: &Client, cmd: BackupCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        BackupCmd::List { tenant } => {
            let v: BackupsView = client.get(&path(&tenant)).await?;
            list(out, &v);
        }
        BackupCmd::Run { tenant, no_wait, wait_timeout } => {
            let v: BackupsView = client.send(Method::POST, &path(&tenant), NO_BODY).await?;
            let id = v.run.as_ref().map(|r| r.id.clone()).context("the coordinator answered without a request")?;
            if no_wait {
                return show(out, &v);
            }
            let timeout = humantime::parse_duration(&wait_timeout).context("--wait-timeout")?;
            let done = wait(client, &tenant, &id, timeout, |v| v.last_run.clone()).await?;
            let v: BackupsView = client.get(&path(&tenant)).await?;
            if !done.ok {
                bail!("backup {id} of {tenant} failed: {}", done.reason.unwrap_or_default());
            }
            let made = done.made.unwrap_or_default();
            match v.backups.iter().find(|b| b.id == made) {
                Some(b) if out == Output::Json => print_json(b),
                Some(b) => say(format_args!(
                    "backup {} of {tenant} done: {} ({} bytes, dump {} bytes, {} ms)",
                    b.id, b.object, b.bytes, b.dumped, b.duration_ms
                )),
                None => say(format_args!("backup {made} of {tenant} done")),
            }
        }
        BackupCmd::RotateKey { tenant } => {
            let v: BackupsView = client.send(Method::POST, &format!("{}/rotate-key", path(&tenant)), NO_BODY).await?;
            if out == Output::Json {
                print_json(&v);
            } else {
                let key = v.current_key.unwrap_or_default();
                say(format_args!("tenant {tenant}'s backups are sealed with data key {key} from now on"));
            }
        }
        BackupCmd::InitKey { .. } => bail!("`backup init-key` runs on a coordinator host, not through the API"),
        BackupCmd::Restore { tenant, at, mode, no_wait, wait_timeout } => {
            let mode = if mode == "overwrite" { RestoreMode::Overwrite } else { RestoreMode::Clone };
            let body = RestoreBackupBody { at_ms: parse_at(&at, crate::time::now_ms())?, mode };
            let v: BackupsView = client.send(Method::POST, &format!("{}/restore", path(&tenant)), Some(&body)).await?;
            let r = v.restore.clone().context("the coordinator answered without a request")?;
            if no_wait {
                return show(out, &v);
            }
            let timeout = humantime::parse_duration(&wait_timeout).context("--wait-timeout")?;
            let done = wait(client, &tenant, &r.id, timeout, |v| v.last_restore.clone()).await?;
            if !done.ok {
                bail!("restore {} of {tenant} failed: {}", r.id, done.reason.unwrap_or_default());
            }
            if out == Output::Json {
                print_json(&done);
            } else {
                say(format_args!(
                    "restored backup {} of {tenant} into {}{}",
                    r.backup.unwrap_or_default(),
                    done.made.unwrap_or_default(),
                    done.kept.map(|k| format!("; the previous schema is kept as {k}")).unwrap_or_default()
                ));
            }
        }
    }
    Ok(())
}

fn show(out: Output, v: &BackupsView) -> anyhow::Result<()> {
    list(out, v);
    Ok(())
}

/// Polls until the outcome of request `id` shows, printing every 5 s how far it got (a backup's
/// bytes, when the coordinator has the node's word) or how long it has waited.
async fn wait(
    client: &Client,
    tenant: &str,
    id: &str,
    timeout: Duration,
    outcome: impl Fn(&BackupsView) -> Option<BackupOutcomeView>,
) -> anyhow::Result<BackupOutcomeView> {
    let started = Instant::now();
    let mut said = Duration::ZERO;
    loop {
        let v: BackupsView = client.get(&path(tenant)).await?;
        if let Some(o) = outcome(&v).filter(|o| o.id == id) {
            return Ok(o);
        }
        let waited = started.elapsed();
        if waited >= timeout {
            bail!("request {id} of {tenant} has not finished after {}", humantime::format_duration(timeout));
        }
        if waited >= said + Duration::from_secs(5) {
            said = waited;
            match v.progress.as_ref().filter(|p| p.request.as_deref() == Some(id)) {
                Some(p) => eprintln!("{id}: {} ({}s)", progress_line(p), waited.as_secs()),
                None => eprintln!("{id}: waiting for the db node ({}s)", waited.as_secs()),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `dumped 412.3 MB, uploaded 150.1 MB in 18 parts`.
fn progress_line(p: &BackupProgressView) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    format!("dumped {:.1} MB, uploaded {:.1} MB in {} parts", mb(p.dumped), mb(p.uploaded), p.parts)
}

fn list(out: Output, v: &BackupsView) {
    if out == Output::Json {
        return print_json(v);
    }
    say(format_args!(
        "policy: every {}, keep {} for {} days",
        humantime::format_duration(Duration::from_secs(u64::from(v.policy.interval_s))),
        v.policy.keep_count,
        v.policy.keep_days
    ));
    say(format_args!(
        "{:<14} {:<21} {:>12} {:>12} {:>9}  {:<10} OBJECT",
        "ID", "TAKEN", "BYTES", "DUMPED", "MS", "KEY"
    ));
    for b in &v.backups {
        let object = if b.expiring { format!("{} (expiring)", b.object) } else { b.object.clone() };
        say(format_args!(
            "{:<14} {:<21} {:>12} {:>12} {:>9}  {:<10} {object}",
            b.id, b.taken_at, b.bytes, b.dumped, b.duration_ms, b.key_id
        ));
    }
    if let Some(f) = &v.last_failure {
        say(format_args!("last failure: {} ({} attempts since the last backup): {}", f.at, f.failures, f.reason));
    }
    if let Some(r) = &v.run {
        say(format_args!("running: {}{}", r.id, if r.final_backup { " (final backup before purge)" } else { "" }));
    }
    if let Some(p) = &v.progress {
        say(format_args!("under way: {} {}", p.request.as_deref().unwrap_or("scheduled"), progress_line(p)));
    }
    if let Some(r) = &v.restore {
        say(format_args!("restoring: {} from {}", r.id, r.backup.clone().unwrap_or_default()));
    }
    for (what, o) in [("last run", &v.last_run), ("last restore", &v.last_restore)] {
        if let Some(o) = o {
            let result =
                if o.ok { "ok".to_string() } else { format!("failed: {}", o.reason.clone().unwrap_or_default()) };
            say(format_args!("{what}: {} {result}", o.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_times_are_utc_with_optional_seconds() {
        assert_eq!(parse_at("2026-11-22T10:00", 0).expect("minutes"), 1_795_341_600_000);
        assert_eq!(parse_at("2026-11-22T10:00:00Z", 0).expect("rfc 3339"), 1_795_341_600_000);
        assert_eq!(parse_at("now", 7).expect("now"), 7);
        assert!(parse_at("yesterday", 0).is_err());
        assert!(parse_at("2026-13-22T10:00", 0).is_err());
    }
}
