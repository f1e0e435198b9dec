//! Berqenas PKI: the cluster CA, CSRs built on the host that keeps the key, leaf certificates
//! whose identity is a URI SAN (`berqenas://node/{id}`, `berqenas://coordinator/{id}`,
//! `berqenas://device/{tenant}/{id}`), and rustls configurations that verify peers against the
//! cluster CA, refuse revoked identities during the handshake, and pin the CA when joining.

#![forbid(unsafe_code)]

mod identity;
mod tls;

pub use identity::{Identity, InvalidIdentity};
pub use tls::{
    api_server_config, client_config, expect_identity, external_client_config, node_client_config, peer_identity,
    pinned_client_config, server_config, webpki_client_config, ClientAuth, NoRevocations, Revocation,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid certificate: {0}")]
    Certificate(String),
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Identity(#[from] InvalidIdentity),
}

/// A cluster CA able to sign. The key never leaves coordinators.
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: Vec<u8>,
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

/// Years a cluster CA is valid for; rotation is planned well before.
pub const CA_VALIDITY_YEARS: i32 = 10;

fn unix_to_offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

impl ClusterCa {
    /// Creates a new self-signed CA for `cluster_id`, valid from the start of `year` for ten years.
    pub fn generate(cluster_id: &str, year: i32) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("berqenas cluster CA {cluster_id}"));
        params.distinguished_name.push(DnType::OrganizationName, "Berqenas");
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = rcgen::date_time_ymd(year, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + CA_VALIDITY_YEARS, 1, 1);
        let issuer = params.self_signed(&key)?;
        Ok(Self { cert_pem: issuer.pem(), key_pem: key.serialize_pem(), cert_der: issuer.der().to_vec(), issuer, key })
    }

    /// Loads a CA from its PEM certificate and key, ready to sign.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        // Re-signing the same subject with the same key yields an issuer rcgen can sign with; the
        // certificate handed out stays the original one.
        let issuer = params.self_signed(&key)?;
        let cert_der = first_cert_der(cert_pem)?;
        Ok(Self { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), cert_der, issuer, key })
    }

    /// `sha256:<hex>` of the DER certificate: what agents pin when they join.
    pub fn fingerprint(&self) -> String {
        fingerprint_der(&self.cert_der)
    }

    /// Signs a CSR into a leaf for `identity`. Only the CSR's public key is used: the subject,
    /// SANs, usages and lifetime are ours, so a host cannot ask for another identity.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        extra_names: &[String],
        not_before: SystemTime,
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Certificate(format!("unreadable CSR: {e}")))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, identity.uri());
        let mut sans = vec![SanType::URI(identity.uri().try_into()?)];
        for name in extra_names {
            match name.parse::<std::net::IpAddr>() {
                Ok(ip) => sans.push(SanType::IpAddress(ip)),
                Err(_) => sans.push(SanType::DnsName(name.clone().try_into()?)),
            }
        }
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = unix_to_offset(not_before - Duration::from_secs(60));
        params.not_after = unix_to_offset(not_before + lifetime);
        params.serial_number = Some(random_serial()?);
        csr.params = params;
        Ok(csr.signed_by(&self.issuer, &self.key)?.pem())
    }
}

/// 16 random bytes, positive. rcgen's default is a hash of the public key, so every certificate
/// of one key (a renewal with the same key, two identities asked for with one key) would share
/// issuer and serial, which RFC 5280 forbids.
fn random_serial() -> Result<rcgen::SerialNumber, PkiError> {
    let mut serial = [0u8; 16];
    getrandom::getrandom(&mut serial).map_err(|e| PkiError::Certificate(format!("no randomness for a serial: {e}")))?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&serial))
}

/// A private key made on this host and the CSR that carries its public half.
pub struct KeyAndCsr {
    pub key_pem: String,
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr").finish_non_exhaustive()
    }
}

/// Generates a key pair and a CSR. The key stays with the caller; only the CSR travels.
pub fn new_key_and_csr(common_name: &str) -> Result<KeyAndCsr, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr { key_pem: key.serialize_pem(), csr_pem: csr.pem()? })
}

pub fn fingerprint_der(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// DER of the first certificate in a PEM bundle.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let cert = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| PkiError::Pem("no certificate found".into()))?
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    Ok(cert.to_vec())
}

/// Validity window of a certificate.
pub fn validity(cert_der: &[u8]) -> Result<(SystemTime, SystemTime), PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    let v = cert.validity();
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    Ok((at(v.not_before.timestamp()), at(v.not_after.timestamp())))
}

/// True when less than a third of the certificate's lifetime is left (or it has expired).
pub fn should_renew(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    match not_after.duration_since(now) {
        Ok(left) => left < lifetime / 3,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests;
