//! `backup run|list|restore --tenant T` and `tenant update --backup-*`: a tenant's backups over
//! the REST API (`/api/v1/tenant/{name}/backups`). `run` and `restore` wait for the tenant's db
//! node to report the end, showing how long they have waited, and fail with its reason.

use super::client::{path_segment, Client, NO_BODY};
use super::output::{print_json, say, Output};
use crate::api::dto::{BackupOutcomeView, BackupsView, RestoreBackupBody, RestoreMode, UpdateTenantBody};
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

/// Polls until the outcome of request `id` shows, printing how long it has waited.
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
            eprintln!("{id}: waiting for the db node ({}s)", waited.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
