//! `snapshot save` (a running coordinator's data through the admin API, sealed into a file with a
//! passphrase) and `snapshot restore` (offline: the file into a new data directory, as a
//! single-coordinator cluster with the same cluster id, CA, backup key, state and audit trail).
//! The file format is `snapshotfile`.

use super::client::Client;
use super::output::{print_json, say, Output};
use super::NodeAddrs;
use crate::snapshotfile::{self, Sealer, Taken};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Save the contacted coordinator's data (state, audit trail, cluster CA and backup key)
    /// into FILE, sealed with the passphrase in --passphrase-file (mode 0600). Audited.
    Save {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// A file (owner-only) holding the passphrase; never give it on the command line.
        #[arg(long, value_name = "FILE")]
        passphrase_file: PathBuf,
    },
    /// Offline: restore a saved FILE into a new, empty data directory as a single-coordinator
    /// cluster (same cluster id, CA and backup key; a new membership of this one coordinator).
    Restore(Box<RestoreArgs>),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// The new data directory: absent or empty.
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: PathBuf,
    /// The restored coordinator's id (default 1) and addresses.
    #[command(flatten)]
    pub addrs: NodeAddrs,
}

pub async fn save(client: &Client, out: &Path, passphrase_file: &Path, output: Output) -> anyhow::Result<()> {
    let passphrase = snapshotfile::read_passphrase(passphrase_file)?;
    let mut resp = client.download("/api/v1/cluster/snapshot").await?;
    // The `Taken` line first: it names what the header says in clear.
    let mut first = Vec::new();
    let rest = loop {
        let chunk = resp.chunk().await.context("read the snapshot")?.context("the snapshot ended early")?;
        first.extend_from_slice(&chunk);
        if let Some(at) = first.iter().position(|b| *b == b'\n') {
            break first.split_off(at + 1);
        }
        if first.len() > 1 << 20 {
            bail!("unexpected answer: no snapshot header");
        }
    };
    let taken: Taken = serde_json::from_slice(&first).context("unexpected snapshot header")?;
    let mut file = berqenas_common::files::AtomicFile::create(out, crate::datadir::FILE_MODE)
        .with_context(|| format!("create {}", out.display()))?;
    let mut bytes = (first.len() + rest.len()) as u64;
    {
        let mut sealer = Sealer::new(std::io::BufWriter::new(file.file()?), &passphrase, taken.about.clone())?;
        sealer.write(&first)?;
        sealer.write(&rest)?;
        while let Some(chunk) = resp.chunk().await.context("read the snapshot")? {
            bytes += chunk.len() as u64;
            sealer.write(&chunk)?;
        }
        sealer.finish()?.flush()?;
    }
    file.commit().with_context(|| format!("write {}", out.display()))?;
    let about = &taken.about;
    match output {
        Output::Json => print_json(&json!({"file": out, "bytes": bytes, "about": about})),
        Output::Table | Output::Csv => say(format_args!(
            "saved coordinator {}'s snapshot of cluster {} (log index {}, {} tenants, {} audit entries) to {}",
            about.node_id,
            about.cluster_id,
            about.last_applied_index,
            about.tenants,
            about.audit_entries,
            out.display()
        )),
    }
    Ok(())
}

/// Removes a half-made data directory unless the restore completed.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn restore(a: RestoreArgs, output: Output) -> anyhow::Result<()> {
    let target = &a.data_dir;
    match std::fs::read_dir(target).map(|mut entries| entries.next().is_some()) {
        Ok(true) => bail!("{} is not empty; restore needs a new data directory", target.display()),
        Ok(false) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", target.display())),
    }
    let id = a.addrs.id.unwrap_or(1);
    if id == 0 {
        bail!("node id must be 1 or greater");
    }
    let passphrase = snapshotfile::read_passphrase(&a.passphrase_file)?;
    let mut input =
        BufReader::new(std::fs::File::open(&a.input).with_context(|| format!("open {}", a.input.display()))?);
    let (header, aad) = snapshotfile::read_header(&mut input)?;

    // Everything is made in a directory beside the target and renamed into place at the end.
    let name = target.file_name().context("the data directory needs a name")?.to_string_lossy().into_owned();
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    crate::datadir::create(&staging).with_context(|| format!("create {}", staging.display()))?;
    let mut guard = Staging(Some(staging.clone()));

    // The whole file is authenticated before anything is installed.
    let opened_path = staging.join("opened.part");
    let opened = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::File::options().read(true).write(true).create_new(true),
        crate::datadir::FILE_MODE,
    )
    .open(&opened_path)
    .context("create a scratch file")?;
    std::fs::remove_file(&opened_path).context("unlink the scratch file")?;
    {
        let mut w = std::io::BufWriter::new(&opened);
        snapshotfile::open_all(&mut input, &header, &aad, &passphrase, &mut w)?;
        w.flush()?;
    }
    let mut opened = BufReader::new(opened);
    opened.rewind()?;
    let mut line = Vec::new();
    opened.read_until(b'\n', &mut line)?;
    let taken: Taken = serde_json::from_slice(&line).context("the sealed content has no snapshot header")?;
    if taken.about != header.about {
        bail!("the sealed content does not match the file's header");
    }
    let at = opened.stream_position()?;
    let mut opened = opened.into_inner();
    opened.seek(std::io::SeekFrom::Start(at))?;

    let config = a.addrs.config(id);
    config.save(&staging)?;
    match &taken.backup_key {
        Some(hex_key) => {
            let bytes: [u8; 32] = hex::decode(hex_key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .context("the cluster backup key in the file is malformed")?;
            let key = crate::backupkey::ClusterKey::from_bytes(bytes);
            if Some(&key.id) != taken.about.backup_key_id.as_ref() {
                bail!("the cluster backup key in the file does not match its id");
            }
            key.save(&staging)?;
        }
        None => tracing::warn!("the file holds no cluster backup key: backups of the saved cluster cannot be restored"),
    }
    let data =
        crate::raft::store::restore(&staging.join("raft.redb"), &taken.raft, id, config.node(), Box::new(opened))
            .context("restore the state")?;
    if data.state.retired_coordinators.contains(&id) {
        bail!("coordinator id {id} was removed from the saved cluster and is never reused; pick another --id");
    }
    let settings = data.state.settings.as_ref().context("the snapshot holds no initialized cluster")?;
    let ca = berqenas_pki::ClusterCa::from_pem(&settings.ca_cert_pem, &settings.ca_key_pem.0)
        .context("the cluster CA in the snapshot")?;
    crate::transport::Identity { dir: staging.clone() }.issue(&ca, id, &config.names())?;
    crate::datadir::tighten(&staging)?;
    if target.exists() {
        std::fs::remove_dir(target).with_context(|| format!("replace the empty {}", target.display()))?;
    }
    std::fs::rename(&staging, target).with_context(|| format!("move the restored data to {}", target.display()))?;
    guard.0 = None;
    std::fs::File::open(&parent).and_then(|d| d.sync_all()).ok();
    let about = &taken.about;
    match output {
        Output::Json => print_json(&json!({"data_dir": target, "node_id": id, "about": about})),
        Output::Table | Output::Csv => {
            say(format_args!(
                "restored cluster {} (log index {}, {} tenants, {} audit entries) into {} as its only coordinator, id {id}",
                about.cluster_id,
                about.last_applied_index,
                about.tenants,
                about.audit_entries,
                target.display()
            ));
            say(format_args!("start it with: berqenas-coordinator serve --data-dir {}", target.display()));
        }
    }
    Ok(())
}
