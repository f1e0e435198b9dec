//! Berqenas PKI: the cluster certificate authority. Coordinators create it at `init` and keep
//! its key; node agents and devices pin its fingerprint. (CSR signing and mTLS configs build
//! on this in the node-join work.)

#![forbid(unsafe_code)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A cluster CA: its certificate and private key, PEM encoded. The key never leaves coordinators.
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Years a cluster CA is valid for; rotation is planned well before.
pub const CA_VALIDITY_YEARS: i32 = 10;

impl ClusterCa {
    /// Creates a new self-signed CA for `cluster_id`, valid from the start of `year` for ten years.
    pub fn generate(cluster_id: &str, year: i32) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("berqenas cluster CA {cluster_id}"),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Berqenas");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(year, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + CA_VALIDITY_YEARS, 1, 1);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }

    /// `sha256:<hex>` of the DER certificate: what agents pin when they join.
    pub fn fingerprint(&self) -> String {
        fingerprint_der(&self.cert_der)
    }
}

pub fn fingerprint_der(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_ca_with_a_stable_fingerprint() {
        let ca = ClusterCa::generate("test", 2026).expect("ca");
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.key_pem.contains("PRIVATE KEY"));
        let fp = ca.fingerprint();
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64);
        assert_eq!(fp, ca.fingerprint());
        let other = ClusterCa::generate("test", 2026).expect("ca");
        assert_ne!(fp, other.fingerprint(), "each CA has its own key");
        assert!(
            !format!("{ca:?}").contains("PRIVATE"),
            "Debug never shows the key"
        );
    }
}
