//! This coordinator's own key, certificate chain and cluster CA in its data dir, and the TLS
//! configs built from them.

use super::{ClientTls, ServerTls};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Lifetime of a coordinator's own certificate; renewed when a third is left.
pub const COORDINATOR_CERT_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// This coordinator's key, certificate chain and the cluster CA, in its data dir.
pub struct Identity {
    pub dir: PathBuf,
}

impl Identity {
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("coordinator.key")
    }
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("coordinator.pem")
    }
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn exists(&self) -> bool {
        self.key_path().exists() && self.cert_path().exists() && self.ca_path().exists()
    }

    pub fn save(&self, key_pem: &str, chain_pem: &str, ca_pem: &str) -> anyhow::Result<()> {
        // Every file of the data dir is 0600, certificates included (see `datadir`).
        write_file(&self.key_path(), key_pem.as_bytes())?;
        write_file(&self.cert_path(), chain_pem.as_bytes())?;
        write_file(&self.ca_path(), ca_pem.as_bytes())
    }

    pub fn read(&self) -> anyhow::Result<(String, String, String)> {
        let r = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
        Ok((r(&self.ca_path())?, r(&self.cert_path())?, r(&self.key_path())?))
    }

    /// TLS configs for the Raft listener (coordinators only) and for dialing peers.
    pub fn configs(&self, revocation: Arc<dyn berqenas_pki::Revocation>) -> anyhow::Result<(ServerTls, ClientTls)> {
        let (ca, chain, key) = self.read()?;
        let server = berqenas_pki::server_config(&ca, &chain, &key, revocation, berqenas_pki::ClientAuth::Required)?;
        let client = berqenas_pki::client_config(&ca, Some((&chain, &key)))?;
        Ok((Arc::new(RwLock::new(Arc::new(server))), Arc::new(RwLock::new(Arc::new(client)))))
    }

    /// Whether the certificate is missing or has less than a third of its life left.
    pub fn needs_renewal(&self) -> bool {
        let Ok(pem) = std::fs::read_to_string(self.cert_path()) else { return true };
        let Ok(der) = berqenas_pki::first_cert_der(&pem) else { return true };
        match berqenas_pki::validity(&der) {
            Ok((nb, na)) => berqenas_pki::should_renew(nb, na, std::time::SystemTime::now()),
            Err(_) => true,
        }
    }

    /// Issues a fresh certificate for coordinator `id` with the CA (held by coordinators), valid
    /// for `names` too (its advertised hosts), so the REST API can present it.
    pub fn issue(&self, ca: &berqenas_pki::ClusterCa, id: u64, names: &[String]) -> anyhow::Result<()> {
        let kc = berqenas_pki::new_key_and_csr("coordinator")?;
        let cert = ca.sign_csr(
            &kc.csr_pem,
            &berqenas_pki::Identity::Coordinator(id),
            names,
            std::time::SystemTime::now(),
            COORDINATOR_CERT_LIFETIME,
        )?;
        self.save(&kc.key_pem, &format!("{cert}{}", ca.cert_pem), &ca.cert_pem)
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::datadir::write_private(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// Whether `name` can go into a certificate as a DNS name or IP address.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        && !name.starts_with('-')
}
