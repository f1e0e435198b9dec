//! Attacks on enrolled devices' identities against a real coordinator process: a CSR asking
//! for other identities and usages, certificates presented to services of another kind (device
//! to Node and Raft, node to Device, none, a removed device's), a pending device looked for in
//! what the gateway and the db node are handed, and a device flapping its fingerprint to flood
//! the log. The token and input attacks are in `enroll_attacks`.

use crate::enroll::{audit, db_part, identity, mtls, new_token, next_state, pinned, request, state_where};
use crate::enroll_attacks::{hb, join_node, node_client, tls};
use crate::harness::Cluster;
use berqenas_pki::Identity;
use berqenas_proto::device::device_client::DeviceClient;
use berqenas_proto::device::{DeviceRenewRequest, DeviceState};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A CSR that asks for everything it should not get: a coordinator's and another tenant's
/// device identity (URI SANs, the first one a coordinator), a host name, an address, a common
/// name, certificate signing and code signing. Returns (csr, key).
fn hostile_csr() -> (String, String) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType};
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, "berqenas://coordinator/1");
    params.subject_alt_names = vec![
        SanType::URI("berqenas://coordinator/1".try_into().expect("uri")),
        SanType::URI("berqenas://device/globex/d1".try_into().expect("uri")),
        SanType::DnsName("localhost".try_into().expect("dns")),
        SanType::IpAddress("127.0.0.1".parse().expect("ip")),
    ];
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::CodeSigning,
    ];
    let csr = params.serialize_request(&key).expect("csr");
    (csr.pem().expect("pem"), key.serialize_pem())
}

/// Asserts the leaf of `chain_pem` carries `want` and nothing the CSR asked for: one SAN (the
/// identity URI), that URI as common name, no CA, digital signature only, server and client
/// auth only, at most a day (and the minute of clock slack) of life.
fn assert_only(chain_pem: &str, want: &Identity) {
    use x509_parser::extensions::GeneralName;
    let der = berqenas_pki::first_cert_der(chain_pem).expect("der");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let sans = cert.subject_alternative_name().expect("san").expect("a san").value.general_names.clone();
    assert_eq!(sans.len(), 1, "only the identity: {sans:?}");
    assert!(matches!(sans[0], GeneralName::URI(u) if u == want.uri()), "{sans:?}");
    let cns: Vec<&str> = cert.subject().iter_common_name().filter_map(|c| c.as_str().ok()).collect();
    assert_eq!(cns, vec![want.uri().as_str()]);
    assert!(cert.basic_constraints().expect("bc").is_none_or(|b| !b.value.ca), "never a CA");
    let ku = cert.key_usage().expect("ku").expect("key usage").value;
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign(), "{ku:?}");
    let eku = cert.extended_key_usage().expect("eku").expect("eku").value;
    assert!(eku.server_auth && eku.client_auth && !eku.code_signing && !eku.any, "{eku:?}");
    let v = cert.validity();
    assert!(v.not_after.timestamp() - v.not_before.timestamp() <= 86_400 + 60, "{v:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_csr_gets_only_the_identity_the_coordinator_chose_on_enroll_and_renew() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["tenant", "create", "--name", "globex"]);
    let (token, pin, _) = new_token(&c, "acme", &[]);
    let (csr, key) = hostile_csr();
    let enrolled = pinned(&c, &pin).enroll(request(&token, 1, &csr)).await.expect("enrolled").into_inner();
    let me = Identity::Device { tenant: "acme".into(), id: enrolled.device_id.clone() };
    assert_only(&enrolled.cert_chain_pem, &me);

    // Renewing with the same hostile CSR: still only its own identity.
    let mut dev = mtls(&c, &enrolled.ca_pem, &enrolled.cert_chain_pem, &key);
    let renewed = dev.renew(DeviceRenewRequest { csr_pem: csr.clone() }).await.expect("renewed").into_inner();
    assert_only(&renewed.cert_chain_pem, &me);
    assert_eq!(identity(&renewed.cert_chain_pem), me);
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_are_honoured_only_by_the_service_of_their_kind() {
    use berqenas_proto::node::{RenewRequest, StatusReport, WatchRequest};
    use berqenas_proto::raft::raft_client::RaftClient;
    use berqenas_proto::raft::RaftRequest;
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let (token, pin, _) = new_token(&c, "acme", &[]);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let enrolled = pinned(&c, &pin).enroll(request(&token, 1, &kc.csr_pem)).await.expect("enrolled").into_inner();
    let device_tls = tls(&enrolled.ca_pem, &enrolled.cert_chain_pem, &kc.key_pem);

    // A device is not a node: Watch, Report and Renew of the Node service refuse it.
    let mut as_node = node_client(&c, device_tls.clone());
    let watch = as_node.watch(WatchRequest { last_applied_revision: 0 }).await;
    assert_eq!(watch.err().map(|s| s.code()), Some(tonic::Code::PermissionDenied), "Watch");
    let report = as_node.report(tokio_stream::iter(vec![StatusReport::default()])).await;
    assert_eq!(report.err().map(|s| s.code()), Some(tonic::Code::PermissionDenied), "Report");
    let renew = as_node.renew(RenewRequest { csr_pem: kc.csr_pem.clone() }).await;
    assert_eq!(renew.err().map(|s| s.code()), Some(tonic::Code::PermissionDenied), "a node certificate for a device");

    // Nor a coordinator: no Raft RPC is served to it.
    let raft_addr = c.nodes[0].listen().raft;
    let mut raft = RaftClient::new(berqenas_coordinator::transport::channel(&raft_addr, device_tls).expect("channel"));
    let req = || RaftRequest { from: 2, target: 1, payload: b"{}".to_vec() };
    assert!(raft.hello(req()).await.is_err(), "Hello");
    assert!(raft.vote(req()).await.is_err(), "Vote");
    assert!(raft.append_entries(req()).await.is_err(), "AppendEntries");
    assert!(raft.forward(req()).await.is_err(), "Forward");
    assert!(raft.read_index(req()).await.is_err(), "ReadIndex");
    assert!(raft.install_snapshot(req()).await.is_err(), "InstallSnapshot");

    // A node is not a device: Heartbeat and Renew of the Device service refuse it.
    let (node_tls, node_id) = join_node(&c, &["gateway"]).await;
    let mut as_device = DeviceClient::new(
        berqenas_coordinator::transport::channel(&c.nodes[0].listen().node, node_tls).expect("channel"),
    );
    let status = as_device.heartbeat(hb("6.1")).await.expect_err("a node heartbeating as a device");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    assert!(status.message().contains(&format!("node/{node_id}")), "{status}");
    let status = as_device.renew(DeviceRenewRequest { csr_pem: kc.csr_pem.clone() }).await.expect_err("renew");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");

    // Without any certificate, neither service serves anything but Enroll/Join.
    let anon = Arc::new(RwLock::new(Arc::new(berqenas_pki::pinned_client_config(&pin).expect("tls"))));
    let mut anon_device =
        DeviceClient::new(berqenas_coordinator::transport::channel(&c.nodes[0].listen().node, anon).expect("ch"));
    let status = anon_device.heartbeat(hb("6.1")).await.expect_err("no certificate");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");

    // A removed device's certificate is refused like a revoked one's (its id is never reused).
    c.json(0, &["device", "rm", &enrolled.device_name, "--tenant", "acme"]);
    let gone = mtls(&c, &enrolled.ca_pem, &enrolled.cert_chain_pem, &kc.key_pem).heartbeat(hb("6.1")).await;
    assert!(gone.is_err(), "a removed device's certificate: {gone:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_device_is_never_a_peer_nor_a_publisher_until_approved_and_may_renew() {
    use berqenas_proto::node::WatchRequest;
    let c = Cluster::single();
    let (node_tls, _) = join_node(&c, &["gateway", "db"]).await;
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let mut watch =
        node_client(&c, node_tls).watch(WatchRequest { last_applied_revision: 0 }).await.expect("watch").into_inner();
    next_state(&mut watch, Duration::from_secs(10)).await;

    let (manual, pin, _) = new_token(&c, "acme", &["--approve", "manual"]);
    let (auto, _, _) = new_token(&c, "acme", &[]);
    let mut client = pinned(&c, &pin);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let pending = client.enroll(request(&manual, 1, &kc.csr_pem)).await.expect("pending").into_inner();
    assert_eq!(pending.state(), DeviceState::Pending);
    let active = client.enroll(request(&auto, 2, &kc.csr_pem)).await.expect("active").into_inner();

    // Every desired state until the active device shows up: the pending one is no enabled peer
    // and not among the devices that may publish.
    let never_pending = |state: &berqenas_proto::node::DesiredState| {
        let t = state.tenants.iter().find(|t| t.name == "acme").expect("acme");
        let peers = &t.gateway.as_ref().expect("gw").peers;
        assert!(!peers.iter().any(|p| p.id == pending.device_id && p.enabled), "a pending peer: {peers:?}");
        let db = db_part(state, "acme");
        assert!(!db.devices.iter().any(|d| d.id == pending.device_id), "a pending publisher: {:?}", db.devices);
        db.devices.iter().any(|d| d.id == active.device_id)
    };
    loop {
        if never_pending(&next_state(&mut watch, Duration::from_secs(5)).await) {
            break;
        }
    }

    // Pending, it heartbeats (told it is pending) and renews its own identity only.
    let mut dev = mtls(&c, &pending.ca_pem, &pending.cert_chain_pem, &kc.key_pem);
    assert_eq!(dev.heartbeat(hb("6.1")).await.expect("heartbeat").into_inner().state(), DeviceState::Pending);
    let renewed = dev.renew(DeviceRenewRequest { csr_pem: kc.csr_pem.clone() }).await.expect("renew").into_inner();
    assert_eq!(identity(&renewed.cert_chain_pem), identity(&pending.cert_chain_pem));

    // Approved: a peer and a publisher.
    c.json(0, &["device", "approve", &pending.device_name, "--tenant", "acme"]);
    // Within 5 s or `state_where` fails: a publisher once approved.
    let state = state_where(&mut watch, Duration::from_secs(5), |s| {
        db_part(s, "acme").devices.iter().any(|d| d.id == pending.device_id)
    })
    .await;
    let t = state.tenants.iter().find(|t| t.name == "acme").expect("acme");
    assert!(t.gateway.as_ref().expect("gw").peers.iter().any(|p| p.id == pending.device_id && p.enabled));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_flapping_its_fingerprint_cannot_flood_the_log() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let (token, pin, _) = new_token(&c, "acme", &[]);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let enrolled = pinned(&c, &pin).enroll(request(&token, 1, &kc.csr_pem)).await.expect("enrolled").into_inner();
    let mut dev = mtls(&c, &enrolled.ca_pem, &enrolled.cert_chain_pem, &kc.key_pem);
    for i in 0..60 {
        let os = if i % 2 == 0 { "6.2" } else { "6.1" };
        let beat = dev.heartbeat(hb(os)).await.expect("every heartbeat is answered").into_inner();
        assert_eq!(beat.state(), DeviceState::Active);
    }
    let written = audit(&c)
        .into_iter()
        .filter(|e| e["action"] == "device.heartbeat" && e["details"]["id"] == enrolled.device_id.as_str())
        .count();
    assert!(written <= 5, "60 flapping heartbeats wrote {written} log entries");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_looping_on_renewal_is_stopped_after_a_few() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let (token, pin, _) = new_token(&c, "acme", &[]);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let enrolled = pinned(&c, &pin).enroll(request(&token, 1, &kc.csr_pem)).await.expect("enrolled").into_inner();
    let mut dev = mtls(&c, &enrolled.ca_pem, &enrolled.cert_chain_pem, &kc.key_pem);
    let mut codes = Vec::new();
    for _ in 0..30 {
        let renewed = dev.renew(DeviceRenewRequest { csr_pem: kc.csr_pem.clone() }).await;
        codes.push(renewed.map(|_| ()).map_err(|s| s.code()));
    }
    let granted = codes.iter().filter(|c| c.is_ok()).count();
    assert!((1..=10).contains(&granted), "{granted} of 30 back-to-back renewals granted");
    assert!(codes[granted..].iter().all(|c| *c == Err(tonic::Code::ResourceExhausted)), "{codes:?}");
    // The device itself still works.
    assert_eq!(dev.heartbeat(hb("6.1")).await.expect("heartbeat").into_inner().state(), DeviceState::Active);
}
