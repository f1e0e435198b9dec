//! rustls configurations: servers that verify client certificates against the cluster CA and
//! refuse revoked identities during the handshake; clients that verify a coordinator by the CA
//! (not by host name, since lab and NAT addresses vary) or, when joining, by a pinned CA fingerprint.

use crate::{fingerprint_der, Identity, PkiError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// Answers whether an identity has been revoked (backed by the replicated state).
pub trait Revocation: Send + Sync + std::fmt::Debug {
    fn is_revoked(&self, identity: &Identity) -> bool;
}

/// Nothing is revoked (for clients and tests).
#[derive(Debug)]
pub struct NoRevocations;

impl Revocation for NoRevocations {
    fn is_revoked(&self, _: &Identity) -> bool {
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a valid, unrevoked certificate.
    Required,
    /// A client may connect without a certificate (joining with a token); one that presents a
    /// certificate must present a valid, unrevoked one.
    Optional,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| PkiError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(PkiError::Pem("no certificate found".into()));
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem(e.to_string()))
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, PkiError> {
    let mut store = RootCertStore::empty();
    for c in certs(ca_pem)? {
        store.add(c)?;
    }
    Ok(Arc::new(store))
}

/// The identity in a certificate's URI SAN.
pub fn peer_identity(cert_der: &[u8]) -> Result<Identity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Certificate(e.to_string()))?
        .ok_or_else(|| PkiError::Certificate("no subject alternative name".into()))?;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            return Ok(Identity::parse(uri)?);
        }
    }
    Err(PkiError::Certificate("no berqenas identity in the certificate".into()))
}

/// Checks that a verified peer's leaf certificate names `expected`: a caller that dialed
/// coordinator N must reach N, not whichever coordinator of the cluster now answers there.
pub fn expect_identity(leaf: Option<&[u8]>, expected: &Identity) -> Result<(), PkiError> {
    let leaf = leaf.ok_or_else(|| PkiError::Certificate("the peer presented no certificate".into()))?;
    let found = peer_identity(leaf)?;
    if found != *expected {
        return Err(PkiError::Certificate(format!("the peer is {found}, not {expected}")));
    }
    Ok(())
}

#[derive(Debug)]
struct RevocationAwareVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revocation: Arc<dyn Revocation>,
    mandatory: bool,
}

impl ClientCertVerifier for RevocationAwareVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let identity = peer_identity(end_entity).map_err(|e| Error::General(e.to_string()))?;
        if self.revocation.is_revoked(&identity) {
            return Err(Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server presenting `chain_pem` (leaf first, then the CA) and verifying clients against `ca_pem`.
pub fn server_config(
    ca_pem: &str,
    chain_pem: &str,
    key_pem: &str,
    revocation: Arc<dyn Revocation>,
    auth: ClientAuth,
) -> Result<rustls::ServerConfig, PkiError> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Certificate(e.to_string()))?;
    let verifier = Arc::new(RevocationAwareVerifier { inner, revocation, mandatory: auth == ClientAuth::Required });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(chain_pem)?, key(key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Verifies a server by chain to `roots` and requires a coordinator identity; host names are
/// not checked because the identity is in the URI SAN.
#[derive(Debug)]
struct CoordinatorVerifier {
    roots: Option<Arc<RootCertStore>>,
    /// When joining: the CA is taken from the presented chain if its fingerprint matches.
    pin: Option<String>,
    /// The identity the server must have: a coordinator, or (a device reaching the realtime
    /// ingest on a db node) a node.
    server: ServerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    Coordinator,
    Node,
}

impl CoordinatorVerifier {
    fn webpki(&self, intermediates: &[CertificateDer<'_>]) -> Result<Arc<WebPkiServerVerifier>, Error> {
        let roots = match (&self.roots, &self.pin) {
            (Some(r), _) => r.clone(),
            (None, Some(pin)) => {
                let ca = intermediates
                    .iter()
                    .find(|c| fingerprint_der(c) == *pin)
                    .ok_or_else(|| Error::General(format!("the coordinator's CA does not match the pin {pin}")))?;
                let mut store = RootCertStore::empty();
                store.add(ca.clone().into_owned())?;
                Arc::new(store)
            }
            (None, None) => return Err(Error::General("no trust anchor".into())),
        };
        WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| Error::General(e.to_string()))
    }
}

impl ServerCertVerifier for CoordinatorVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verifier = self.webpki(intermediates)?;
        match verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(_)
            | Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {}
            Err(e) => return Err(e),
        }
        match (peer_identity(end_entity), self.server) {
            (Ok(Identity::Coordinator(_)), ServerKind::Coordinator) | (Ok(Identity::Node(_)), ServerKind::Node) => {
                Ok(ServerCertVerified::assertion())
            }
            (Ok(other), ServerKind::Node) => Err(Error::General(format!("{other} is not a node"))),
            (Ok(other), ServerKind::Coordinator) => Err(Error::General(format!("{other} is not a coordinator"))),
            (Err(e), _) => Err(Error::General(e.to_string())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

fn finish(verifier: CoordinatorVerifier, client_cert: Option<(&str, &str)>) -> Result<rustls::ClientConfig, PkiError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match client_cert {
        Some((chain, k)) => builder.with_client_auth_cert(certs(chain)?, key(k)?)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A client that trusts coordinators certified by `ca_pem` and presents `client_cert` if given.
pub fn client_config(ca_pem: &str, client_cert: Option<(&str, &str)>) -> Result<rustls::ClientConfig, PkiError> {
    finish(CoordinatorVerifier { roots: Some(roots(ca_pem)?), pin: None, server: ServerKind::Coordinator }, client_cert)
}

/// A device's client for the realtime ingest: trusts a node (`berqenas://node/{id}`) certified
/// by `ca_pem` and presents the device's certificate.
pub fn node_client_config(ca_pem: &str, client_cert: (&str, &str)) -> Result<rustls::ClientConfig, PkiError> {
    finish(CoordinatorVerifier { roots: Some(roots(ca_pem)?), pin: None, server: ServerKind::Node }, Some(client_cert))
}

/// A standard client (host names checked) trusting `ca_pem`: for the REST API, whose
/// certificate may come from the cluster CA or from the operator's own CA.
pub fn webpki_client_config(ca_pem: &str) -> Result<rustls::ClientConfig, PkiError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A standard client (host names checked) trusting only `ca_pem`, presenting `client_cert` if
/// given, without ALPN: for an operator's own service outside the cluster (a SIEM).
pub fn external_client_config(
    ca_pem: &str,
    client_cert: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, PkiError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    Ok(match client_cert {
        Some((chain, k)) => builder.with_client_auth_cert(certs(chain)?, key(k)?)?,
        None => builder.with_no_client_auth(),
    })
}

/// A server for the REST API: no client certificates (callers use API keys).
pub fn api_server_config(chain_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, PkiError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs(chain_pem)?, key(key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client for joining: no certificate of its own; trusts the coordinator only if the CA in
/// the presented chain has the pinned `sha256:` fingerprint.
pub fn pinned_client_config(pin: &str) -> Result<rustls::ClientConfig, PkiError> {
    finish(CoordinatorVerifier { roots: None, pin: Some(pin.to_string()), server: ServerKind::Coordinator }, None)
}
