//! PKI unit tests: issue, verify, wrong CA, expired, revoked, identity parsing — through real
//! TLS handshakes over in-memory pipes.

use super::*;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn ca() -> ClusterCa {
    ClusterCa::generate("test", 2026).expect("ca")
}

fn leaf(
    ca: &ClusterCa,
    id: &Identity,
    names: &[String],
    not_before: SystemTime,
    lifetime: Duration,
) -> (String, String) {
    let kc = new_key_and_csr("host").expect("csr");
    let cert = ca.sign_csr(&kc.csr_pem, id, names, not_before, lifetime).expect("sign");
    (format!("{cert}{}", ca.cert_pem), kc.key_pem)
}

#[derive(Debug)]
struct Revoked(Identity);

impl Revocation for Revoked {
    fn is_revoked(&self, identity: &Identity) -> bool {
        *identity == self.0
    }
}

/// Runs a handshake between the two configs over an in-memory connection.
fn handshake(server: rustls::ServerConfig, client: rustls::ClientConfig) -> Result<Option<Identity>, String> {
    let mut s = rustls::ServerConnection::new(Arc::new(server)).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut c = rustls::ClientConnection::new(Arc::new(client), name).map_err(|e| e.to_string())?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).map_err(|e| e.to_string())?;
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).map_err(|e| e.to_string())?;
            s.process_new_packets().map_err(|e| format!("server: {e}"))?;
        }
        let mut buf = Vec::new();
        s.write_tls(&mut buf).map_err(|e| e.to_string())?;
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).map_err(|e| e.to_string())?;
            c.process_new_packets().map_err(|e| format!("client: {e}"))?;
        }
        if !s.is_handshaking() && !c.is_handshaking() {
            // Flush the client's last flight so the server has seen everything.
            let mut buf = Vec::new();
            c.write_tls(&mut buf).map_err(|e| e.to_string())?;
            if !buf.is_empty() {
                s.read_tls(&mut buf.as_slice()).map_err(|e| e.to_string())?;
                s.process_new_packets().map_err(|e| format!("server: {e}"))?;
            }
            let id = s.peer_certificates().and_then(|c| c.first()).map(|c| peer_identity(c)).transpose();
            return id.map_err(|e| e.to_string());
        }
    }
    Err("handshake did not finish".into())
}

fn server(ca: &ClusterCa, revocation: Arc<dyn Revocation>, auth: ClientAuth) -> rustls::ServerConfig {
    let (chain, key) =
        leaf(ca, &Identity::Coordinator(1), &["127.0.0.1".into()], SystemTime::now(), Duration::from_secs(3600));
    server_config(&ca.cert_pem, &chain, &key, revocation, auth).expect("server config")
}

#[test]
fn identity_round_trip_and_parsing() {
    for id in
        [Identity::Coordinator(1), Identity::Node(42), Identity::Device { tenant: "acme".into(), id: "cam-1".into() }]
    {
        assert_eq!(Identity::parse(&id.uri()), Ok(id));
    }
    for bad in [
        "berqenas://node/0",
        "berqenas://node/01",
        "berqenas://node/x",
        "https://node/1",
        "berqenas://node/1/2",
        "berqenas://device/a/b/c",
        "berqenas://device/a b/c",
    ] {
        assert!(Identity::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn issued_certificate_verifies_and_carries_identity() {
    let ca = ca();
    let (chain, key) = leaf(&ca, &Identity::Node(7), &[], SystemTime::now(), Duration::from_secs(3600));
    let client = client_config(&ca.cert_pem, Some((&chain, &key))).expect("client");
    let id = handshake(server(&ca, Arc::new(NoRevocations), ClientAuth::Required), client).expect("handshake");
    assert_eq!(id, Some(Identity::Node(7)));
}

#[test]
fn csr_cannot_choose_its_identity() {
    let ca = ca();
    let kc = new_key_and_csr("berqenas://coordinator/1").expect("csr");
    let pem =
        ca.sign_csr(&kc.csr_pem, &Identity::Node(9), &[], SystemTime::now(), Duration::from_secs(60)).expect("sign");
    let der = first_cert_der(&pem).expect("der");
    assert_eq!(peer_identity(&der).expect("identity"), Identity::Node(9));
}

#[test]
fn client_from_another_ca_is_refused() {
    let (ours, theirs) = (ca(), ca());
    let (chain, key) = leaf(&theirs, &Identity::Node(7), &[], SystemTime::now(), Duration::from_secs(3600));
    let client = client_config(&ours.cert_pem, Some((&chain, &key))).expect("client");
    let err = handshake(server(&ours, Arc::new(NoRevocations), ClientAuth::Required), client).expect_err("refused");
    assert!(err.contains("server"), "{err}");
}

#[test]
fn expired_client_certificate_is_refused() {
    let ca = ca();
    let long_ago = SystemTime::now() - Duration::from_secs(7200);
    let (chain, key) = leaf(&ca, &Identity::Node(7), &[], long_ago, Duration::from_secs(3600));
    let client = client_config(&ca.cert_pem, Some((&chain, &key))).expect("client");
    let err = handshake(server(&ca, Arc::new(NoRevocations), ClientAuth::Required), client).expect_err("refused");
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[test]
fn revoked_identity_is_refused_at_the_handshake() {
    let ca = ca();
    let (chain, key) = leaf(&ca, &Identity::Node(7), &[], SystemTime::now(), Duration::from_secs(3600));
    let client = client_config(&ca.cert_pem, Some((&chain, &key))).expect("client");
    let err = handshake(server(&ca, Arc::new(Revoked(Identity::Node(7))), ClientAuth::Required), client)
        .expect_err("revoked");
    assert!(err.to_lowercase().contains("revoked"), "{err}");
}

#[test]
fn missing_client_certificate_only_where_optional() {
    let ca = ca();
    let anonymous = client_config(&ca.cert_pem, None).expect("client");
    assert!(handshake(server(&ca, Arc::new(NoRevocations), ClientAuth::Required), anonymous.clone()).is_err());
    assert_eq!(handshake(server(&ca, Arc::new(NoRevocations), ClientAuth::Optional), anonymous), Ok(None));
}

#[test]
fn pinned_client_trusts_only_the_pinned_ca() {
    let ca = ca();
    let good = pinned_client_config(&ca.fingerprint()).expect("client");
    assert_eq!(handshake(server(&ca, Arc::new(NoRevocations), ClientAuth::Optional), good), Ok(None));
    let wrong = pinned_client_config(&ClusterCa::generate("x", 2026).expect("ca").fingerprint()).expect("client");
    let err = handshake(server(&ca, Arc::new(NoRevocations), ClientAuth::Optional), wrong).expect_err("pin mismatch");
    assert!(err.contains("does not match the pin"), "{err}");
}

#[test]
fn a_node_certificate_cannot_serve_as_coordinator() {
    let ca = ca();
    let (chain, key) = leaf(&ca, &Identity::Node(3), &[], SystemTime::now(), Duration::from_secs(3600));
    let impostor =
        server_config(&ca.cert_pem, &chain, &key, Arc::new(NoRevocations), ClientAuth::Optional).expect("config");
    let err = handshake(impostor, client_config(&ca.cert_pem, None).expect("client")).expect_err("not a coordinator");
    assert!(err.contains("is not a coordinator"), "{err}");
}

#[test]
fn ca_round_trips_through_pem_and_keeps_signing() {
    let ca = ca();
    let loaded = ClusterCa::from_pem(&ca.cert_pem, &ca.key_pem).expect("load");
    assert_eq!(loaded.fingerprint(), ca.fingerprint());
    let (chain, key) = leaf(&loaded, &Identity::Node(5), &[], SystemTime::now(), Duration::from_secs(3600));
    let client = client_config(&ca.cert_pem, Some((&chain, &key))).expect("client");
    assert_eq!(
        handshake(server(&ca, Arc::new(NoRevocations), ClientAuth::Required), client),
        Ok(Some(Identity::Node(5)))
    );
}

#[test]
fn renewal_after_two_thirds_of_the_lifetime() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let end = start + Duration::from_secs(3000);
    assert!(!should_renew(start, end, start + Duration::from_secs(1000)));
    assert!(should_renew(start, end, start + Duration::from_secs(2100)));
    assert!(should_renew(start, end, end + Duration::from_secs(1)));
    let ca = ca();
    let kc = new_key_and_csr("h").expect("csr");
    let pem = ca
        .sign_csr(&kc.csr_pem, &Identity::Node(1), &[], SystemTime::now(), Duration::from_secs(86_400))
        .expect("sign");
    let (nb, na) = validity(&first_cert_der(&pem).expect("der")).expect("validity");
    let life = na.duration_since(nb).expect("ordered");
    assert!(life >= Duration::from_secs(86_400) && life <= Duration::from_secs(86_400 + 61), "{life:?}");
}

#[test]
fn generates_a_ca_with_a_stable_fingerprint() {
    let ca = ca();
    assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let fp = ca.fingerprint();
    assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64);
    assert_ne!(fp, ClusterCa::generate("test", 2026).expect("ca").fingerprint());
    assert!(!format!("{ca:?}").contains("PRIVATE"), "Debug never shows the key");
}

#[test]
fn a_server_must_carry_the_identity_the_client_dialed() {
    let ca = ca();
    let (chain, key) =
        leaf(&ca, &Identity::Coordinator(2), &["127.0.0.1".into()], SystemTime::now(), Duration::from_secs(3600));
    let server =
        server_config(&ca.cert_pem, &chain, &key, Arc::new(NoRevocations), ClientAuth::Optional).expect("config");
    let mut s = rustls::ServerConnection::new(Arc::new(server)).expect("server");
    let client = client_config(&ca.cert_pem, None).expect("client");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut c = rustls::ClientConnection::new(Arc::new(client), name).expect("client");
    while c.is_handshaking() {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).expect("write");
        s.read_tls(&mut buf.as_slice()).expect("read");
        s.process_new_packets().expect("server");
        let mut buf = Vec::new();
        s.write_tls(&mut buf).expect("write");
        c.read_tls(&mut buf.as_slice()).expect("read");
        c.process_new_packets().expect("client");
    }
    let leaf = c.peer_certificates().and_then(|certs| certs.first()).map(|c| c.as_ref());
    assert!(expect_identity(leaf, &Identity::Coordinator(2)).is_ok());
    let err = expect_identity(leaf, &Identity::Coordinator(3)).expect_err("another coordinator answers");
    assert!(err.to_string().contains("is berqenas://coordinator/2, not berqenas://coordinator/3"), "{err}");
    assert!(expect_identity(None, &Identity::Coordinator(2)).is_err());
}

#[test]
fn certificates_of_one_key_never_share_a_serial() {
    let ca = ca();
    let kc = new_key_and_csr("host").expect("csr");
    let serial = |id: &Identity| {
        let pem = ca.sign_csr(&kc.csr_pem, id, &[], SystemTime::now(), Duration::from_secs(60)).expect("sign");
        let der = first_cert_der(&pem).expect("der");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        cert.raw_serial().to_vec()
    };
    let device = Identity::Device { tenant: "acme".into(), id: "d5".into() };
    let serials = [serial(&device), serial(&device), serial(&Identity::Node(1))];
    assert_ne!(serials[0], serials[1], "a renewal with the same key");
    assert_ne!(serials[0], serials[2], "another identity with the same key");
    assert!(serials.iter().all(|s| s.len() <= 20 && s[0] & 0x80 == 0), "positive, at most 20 bytes");
}
