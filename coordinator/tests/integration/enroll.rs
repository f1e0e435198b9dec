//! Device enrollment against a real coordinator process: tokens from the CLI, the `Device` gRPC
//! service over TLS pinned to the CA (as `berqenas-device enroll` does), then mTLS with the
//! certificate it issued. The attacks are performed, not simulated: token reuse past its uses,
//! an expired and a revoked token, a tampered CSR, another tenant's customer key, and a revoked
//! device's certificate.

use crate::harness::{stderr, Cluster};
use berqenas_coordinator::state::gateway::WgKey;
use berqenas_pki::Identity;
use berqenas_proto::device::device_client::DeviceClient;
use berqenas_proto::device::{DeviceRenewRequest, DeviceState, EnrollRequest, Fingerprint, HeartbeatRequest};
use serde_json::Value;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::transport::Channel;

pub(super) fn wg(b: u8) -> String {
    WgKey::from_bytes(&[b; 32]).to_string()
}

pub(super) fn fingerprint(os_version: &str) -> Fingerprint {
    Fingerprint {
        mac_hashes: vec!["a".repeat(64)],
        machine_id_hash: "b".repeat(64),
        os_name: "linux".into(),
        os_version: os_version.into(),
        arch: "x86_64".into(),
        client_version: "0.1.0".into(),
    }
}

/// A token for `tenant` from the CLI: (token, CA pin, the whole answer).
pub(super) fn new_token(c: &Cluster, tenant: &str, extra: &[&str]) -> (String, String, Value) {
    let mut args = vec!["device", "token", "create", "--tenant", tenant];
    args.extend(extra);
    let created = c.json(0, &args);
    let token = created["token"].as_str().expect("token").to_string();
    let pin = created["ca_fingerprint"].as_str().expect("pin").to_string();
    (token, pin, created)
}

/// A client of the node listener that trusts the coordinator by the pinned CA, without a
/// certificate of its own (enrollment).
pub(super) fn pinned(c: &Cluster, pin: &str) -> DeviceClient<Channel> {
    let addr = c.nodes[0].listen().node;
    berqenas_tests::wait_for("the node listener", Duration::from_secs(20), || {
        std::net::TcpStream::connect(&addr).ok().map(|_| ())
    });
    let tls = Arc::new(RwLock::new(Arc::new(berqenas_pki::pinned_client_config(pin).expect("tls"))));
    DeviceClient::new(berqenas_coordinator::transport::channel(&c.nodes[0].listen().node, tls).expect("channel"))
}

/// A client presenting a device certificate (mTLS); every call of a fresh client is a fresh
/// connection, so a fresh handshake.
pub(super) fn mtls(c: &Cluster, ca_pem: &str, chain_pem: &str, key_pem: &str) -> DeviceClient<Channel> {
    let config = berqenas_pki::client_config(ca_pem, Some((chain_pem, key_pem))).expect("tls");
    let tls = Arc::new(RwLock::new(Arc::new(config)));
    DeviceClient::new(berqenas_coordinator::transport::channel(&c.nodes[0].listen().node, tls).expect("channel"))
}

pub(super) fn request(token: &str, key: u8, csr_pem: &str) -> EnrollRequest {
    EnrollRequest {
        token: token.into(),
        wg_public_key: wg(key),
        csr_pem: csr_pem.into(),
        fingerprint: Some(fingerprint("6.1")),
        name: String::new(),
    }
}

pub(super) fn identity(chain_pem: &str) -> Identity {
    berqenas_pki::peer_identity(&berqenas_pki::first_cert_der(chain_pem).expect("cert")).expect("identity")
}

pub(super) fn devices(c: &Cluster, tenant: &str) -> Vec<Value> {
    c.json(0, &["device", "list", "--tenant", tenant]).as_array().cloned().unwrap_or_default()
}

/// The newest audit entries (up to 500), newest first.
pub(super) fn audit(c: &Cluster) -> Vec<Value> {
    c.json(0, &["audit", "list", "--limit", "500"]).as_array().cloned().unwrap_or_default()
}

/// A CSR whose signature no longer matches its content (one bit of the signature flipped).
fn tampered(csr_pem: &str) -> String {
    use base64::Engine;
    let b64: String = csr_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
    format!("-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n", lines.join("\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolled_device_is_listed_renews_heartbeats_and_is_cut_off_when_revoked() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let (token, pin, created) =
        new_token(&c, "acme", &["--name", "plc1", "--labels", "site=ist", "line=2", "--ttl", "1h"]);
    let command = created["command"].as_str().expect("command");
    assert!(
        command.starts_with("berqenas-device enroll --coordinator https://")
            && command.contains(&format!("--token {token}"))
            && command.ends_with(&format!("--ca-pin {pin}")),
        "{command}"
    );
    assert!(token.starts_with(created["device_token"]["prefix"].as_str().expect("prefix")));

    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let enrolled = pinned(&c, &pin).enroll(request(&token, 1, &kc.csr_pem)).await.expect("enrolled").into_inner();
    assert_eq!((enrolled.tenant.as_str(), enrolled.device_name.as_str()), ("acme", "plc1"));
    assert_eq!(enrolled.state(), DeviceState::Active);
    assert_eq!(
        identity(&enrolled.cert_chain_pem),
        Identity::Device { tenant: "acme".into(), id: enrolled.device_id.clone() }
    );
    let tunnel = enrolled.tunnel.clone().expect("tunnel");
    assert_eq!((tunnel.address.as_str(), tunnel.subnet.as_str()), ("198.18.1.2", "198.18.1.0/24"));
    assert_eq!((tunnel.gateway_address.as_str(), tunnel.keepalive_seconds), ("198.18.1.1", 25));
    assert_eq!(enrolled.labels.get("site").map(String::as_str), Some("ist"));
    assert!(enrolled.coordinators.iter().any(|a| *a == c.nodes[0].listen().node), "{:?}", enrolled.coordinators);

    let listed = devices(&c, "acme");
    assert_eq!(listed.len(), 1);
    let d = &listed[0];
    assert_eq!(
        (d["name"].as_str(), d["address"].as_str(), d["state"].as_str()),
        (Some("plc1"), Some("198.18.1.2"), Some("active"))
    );
    assert_eq!(d["labels"], serde_json::json!({"site": "ist", "line": "2"}));
    assert_eq!(d["fingerprint"]["os_name"], "linux");
    let table = c.ok(0, &["device", "list", "--tenant", "acme"]);
    assert!(table.contains("line=2,site=ist"), "{table}");

    // mTLS with the certificate it was given: heartbeat (a fingerprint change is written and
    // audited), renew (a fresh certificate of the same identity), heartbeat with the new one.
    let mut dev = mtls(&c, &enrolled.ca_pem, &enrolled.cert_chain_pem, &kc.key_pem);
    let hb = |os: &str| HeartbeatRequest { fingerprint: Some(fingerprint(os)), last_handshake: 0, tunnel_up: false };
    let beat = dev.heartbeat(hb("6.1")).await.expect("heartbeat").into_inner();
    assert_eq!((beat.state(), beat.tunnel.map(|t| t.address)), (DeviceState::Active, Some("198.18.1.2".into())));
    dev.heartbeat(hb("6.2")).await.expect("heartbeat");
    let changed = audit(&c).into_iter().find(|e| e["action"] == "device.heartbeat" && e["details"]["changed"] == "os");
    assert!(changed.is_some(), "a fingerprint change is audited");
    let renewed_key = berqenas_pki::new_key_and_csr("device").expect("key");
    let renewed =
        dev.renew(DeviceRenewRequest { csr_pem: renewed_key.csr_pem.clone() }).await.expect("renewed").into_inner();
    assert_ne!(renewed.cert_chain_pem, enrolled.cert_chain_pem);
    assert_eq!(identity(&renewed.cert_chain_pem), identity(&enrolled.cert_chain_pem));
    mtls(&c, &enrolled.ca_pem, &renewed.cert_chain_pem, &renewed_key.key_pem)
        .heartbeat(hb("6.2"))
        .await
        .expect("the renewed certificate works");

    // Revoked: the open connection's next call is refused, and a new handshake is refused.
    let revoked = c.json(0, &["device", "revoke", "plc1", "--tenant", "acme"]);
    assert_eq!(revoked["state"], "revoked");
    let status = dev.heartbeat(hb("6.2")).await.expect_err("refused on the open connection");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    for (chain, key) in [(&enrolled.cert_chain_pem, &kc.key_pem), (&renewed.cert_chain_pem, &renewed_key.key_pem)] {
        let refused = mtls(&c, &enrolled.ca_pem, chain, key).heartbeat(hb("6.2")).await;
        assert!(refused.is_err(), "a revoked device's certificate is refused at the handshake: {refused:?}");
    }
    let renew = mtls(&c, &enrolled.ca_pem, &renewed.cert_chain_pem, &renewed_key.key_pem)
        .renew(DeviceRenewRequest { csr_pem: renewed_key.csr_pem.clone() })
        .await;
    assert!(renew.is_err(), "no renewal for a revoked device");
    // The row stays, revoked, with its address taken.
    let listed = devices(&c, "acme");
    assert_eq!((listed[0]["state"].as_str(), listed[0]["address"].as_str()), (Some("revoked"), Some("198.18.1.2")));
}

#[tokio::test(flavor = "multi_thread")]
async fn reused_expired_revoked_tokens_and_tampered_csrs_are_refused_and_audited() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let (token, pin, _) = new_token(&c, "acme", &["--uses", "2"]);
    let mut client = pinned(&c, &pin);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");

    // A tampered CSR is refused before the token is spent, and audited (the source's first
    // refusal is written as itself).
    let status = client.enroll(request(&token, 1, &tampered(&kc.csr_pem))).await.expect_err("tampered CSR");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(status.message().contains("CSR"), "{status}");
    let entry = audit(&c).into_iter().find(|e| e["action"] == "device.enroll" && e["outcome"] == "rejected");
    let entry = entry.expect("the tampered CSR is audited");
    assert!(entry["details"]["reason"].as_str().is_some_and(|r| r.contains("CSR")), "{entry}");

    // Two uses, then refused; each attempt is its own audit entry with its cause.
    let first = client.enroll(request(&token, 1, &kc.csr_pem)).await.expect("first use").into_inner();
    let second = client.enroll(request(&token, 2, &kc.csr_pem)).await.expect("second use").into_inner();
    assert_ne!(first.device_name, second.device_name);
    let status = client.enroll(request(&token, 3, &kc.csr_pem)).await.expect_err("a third use");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), "device token is invalid, expired, revoked or used up");
    let listed = c.json(0, &["device", "token", "list", "--tenant", "acme"]);
    assert_eq!((listed[0]["uses"].as_u64(), listed[0]["max_uses"].as_u64()), (Some(2), Some(2)));

    // Revoked: refused; the devices it enrolled stay.
    let (revoked, _, created) = new_token(&c, "acme", &["--uses", "unlimited"]);
    let id = created["device_token"]["id"].as_str().expect("id");
    let shown = c.json(0, &["device", "token", "revoke", id, "--tenant", "acme"]);
    assert!(shown[0]["revoked_at_ms"].as_u64().is_some(), "{shown}");
    let status = client.enroll(request(&revoked, 4, &kc.csr_pem)).await.expect_err("revoked token");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    // Expired (1 s).
    let (expired, _, _) = new_token(&c, "acme", &["--ttl", "1s"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = client.enroll(request(&expired, 5, &kc.csr_pem)).await.expect_err("expired token");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    // A guessed secret for a real id.
    let forged = format!("{}{}", &revoked[..21], "0".repeat(64));
    assert!(client.enroll(request(&forged, 6, &kc.csr_pem)).await.is_err());

    assert_eq!(devices(&c, "acme").len(), 2, "only the two real uses enrolled a device");
    let causes: Vec<String> = audit(&c)
        .into_iter()
        .filter(|e| e["action"] == "device.enroll" && e["outcome"] == "rejected")
        .filter_map(|e| e["details"]["cause"].as_str().map(str::to_string))
        .collect();
    for cause in ["used up", "revoked", "expired"] {
        assert!(causes.iter().any(|c| c == cause), "{cause} is audited: {causes:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_approval_leaves_a_device_pending_and_another_tenants_key_cannot_touch_tokens() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["tenant", "create", "--name", "globex"]);
    let (token, pin, _) = new_token(&c, "acme", &["--approve", "manual", "--ephemeral", "30m"]);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let enrolled = pinned(&c, &pin).enroll(request(&token, 1, &kc.csr_pem)).await.expect("enrolled").into_inner();
    assert_eq!(enrolled.state(), DeviceState::Pending);
    let name = enrolled.device_name.clone();
    let shown = c.json(0, &["device", "show", &name, "--tenant", "acme"]);
    assert_eq!((shown["state"].as_str(), shown["ephemeral_ms"].as_u64()), (Some("pending"), Some(1_800_000)));
    // A pending device may heartbeat and is told it is pending.
    let mut dev = mtls(&c, &enrolled.ca_pem, &enrolled.cert_chain_pem, &kc.key_pem);
    let hb = HeartbeatRequest { fingerprint: Some(fingerprint("6.1")), last_handshake: 0, tunnel_up: false };
    assert_eq!(dev.heartbeat(hb.clone()).await.expect("heartbeat").into_inner().state(), DeviceState::Pending);
    assert_eq!(c.json(0, &["device", "approve", &name, "--tenant", "acme"])["state"], "active");
    assert_eq!(dev.heartbeat(hb).await.expect("heartbeat").into_inner().state(), DeviceState::Active);

    // A customer key of globex: its own tokens yes, acme's never (403, audited).
    let key = c.json(0, &["apikey", "create", "--role", "customer", "--tenant", "globex"]);
    let key = key["token"].as_str().expect("key").to_string();
    let acme_token =
        c.json(0, &["device", "token", "list", "--tenant", "acme"])[0]["id"].as_str().expect("id").to_string();
    for args in [
        vec!["device", "token", "create", "--tenant", "acme"],
        vec!["device", "token", "list", "--tenant", "acme"],
        vec!["device", "token", "revoke", &acme_token, "--tenant", "acme"],
        vec!["device", "approve", &name, "--tenant", "acme"],
    ] {
        let out = c.cli_as(0, &key, &args);
        assert!(!out.status.success(), "`{}` must be refused", args.join(" "));
        assert!(stderr(&out).contains("(403)"), "`{}`: {}", args.join(" "), stderr(&out));
    }
    let refused: Vec<Value> = audit(&c)
        .into_iter()
        .filter(|e| e["outcome"] == "rejected" && e["target"].as_str().is_some_and(|t| t.starts_with("tenant/acme")))
        .collect();
    for action in ["device.token.create", "device.token.list", "device.token.revoke"] {
        assert!(refused.iter().any(|e| e["action"] == action), "{action} refusal audited: {refused:#?}");
    }
    let own = c.cli_as(0, &key, &["device", "token", "create", "--tenant", "globex", "--output", "json"]);
    assert!(own.status.success(), "{}", stderr(&own));
    let listed = c.json(0, &["device", "token", "list", "--tenant", "acme"]);
    assert!(listed[0]["revoked_at_ms"].is_null(), "acme's token is untouched");
}

/// The next desired state that is not a bookmark, within `within`.
pub(super) async fn next_state(
    stream: &mut tonic::Streaming<berqenas_proto::node::DesiredState>,
    within: Duration,
) -> berqenas_proto::node::DesiredState {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("a new desired state in time")
            .expect("stream")
            .expect("open stream");
        if !msg.bookmark {
            return msg;
        }
    }
}

/// The first non-bookmark desired state within `within` for which `wanted` holds: other
/// changes (a backup data key made by the leader, usage) may come between an action and the
/// state that shows it.
pub(super) async fn state_where(
    stream: &mut tonic::Streaming<berqenas_proto::node::DesiredState>,
    within: Duration,
    wanted: impl Fn(&berqenas_proto::node::DesiredState) -> bool,
) -> berqenas_proto::node::DesiredState {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let state = next_state(stream, deadline.saturating_duration_since(tokio::time::Instant::now())).await;
        if wanted(&state) {
            return state;
        }
    }
}

pub(super) fn db_part(state: &berqenas_proto::node::DesiredState, tenant: &str) -> berqenas_proto::node::DbAssignment {
    let t = state.tenants.iter().find(|t| t.name == tenant).expect("the tenant is assigned");
    t.db.clone().expect("a db part")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_db_node_advertises_its_realtime_address_and_hears_of_devices_and_keys_within_seconds() {
    use berqenas_proto::node::node_client::NodeClient;
    use berqenas_proto::node::{JoinRequest, WatchRequest};
    let c = Cluster::single();
    let created = c.json(0, &["node", "token", "create", "--roles", "gateway,db"]);
    let (node_token, pin) =
        (created["token"].as_str().expect("token"), created["ca_fingerprint"].as_str().expect("pin"));
    let addr = c.nodes[0].listen().node;
    let kc = berqenas_pki::new_key_and_csr("node").expect("key");
    let join = |realtime: &str| JoinRequest {
        token: node_token.into(),
        csr_pem: kc.csr_pem.clone(),
        roles: vec!["db".into(), "gateway".into()],
        address: "127.0.0.1".into(),
        realtime_address: realtime.into(),
        capacity: Some(berqenas_proto::node::Capacity {
            cpus: 2,
            memory_bytes: 1 << 33,
            disk_bytes: 1 << 40,
            max_tenants: 100,
        }),
        ..Default::default()
    };
    // Wait for the node listener through a pinned client.
    let _ = pinned(&c, pin);
    let tls = Arc::new(RwLock::new(Arc::new(berqenas_pki::pinned_client_config(pin).expect("tls"))));
    let mut joiner = NodeClient::new(berqenas_coordinator::transport::channel(&addr, tls).expect("channel"));
    for bad in ["192.0.2.10", "192.0.2.10:0", "192.0.2.10:99999", "a b:7401"] {
        let status = joiner.join(join(bad)).await.expect_err("a malformed realtime address");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}: {status}");
    }
    let joined = joiner.join(join("192.0.2.10:7401")).await.expect("joined").into_inner();
    let nodes = c.json(0, &["node", "list"]);
    assert_eq!(nodes[0]["realtime_address"], "192.0.2.10:7401");
    assert!(c.ok(0, &["node", "list"]).contains("192.0.2.10:7401"));

    c.json(0, &["tenant", "create", "--name", "acme"]);
    let config = berqenas_pki::client_config(&joined.ca_pem, Some((&joined.cert_chain_pem, &kc.key_pem))).expect("tls");
    let mut agent = NodeClient::new(
        berqenas_coordinator::transport::channel(&addr, Arc::new(RwLock::new(Arc::new(config)))).expect("channel"),
    );
    let mut watch = agent.watch(WatchRequest { last_applied_revision: 0 }).await.expect("watch").into_inner();
    let first = next_state(&mut watch, Duration::from_secs(10)).await;
    let part = db_part(&first, "acme");
    assert!(part.devices.is_empty() && part.subscriber_keys.is_empty(), "{part:?}");
    let revision = first.tenants.iter().find(|t| t.name == "acme").map(|t| t.revision).expect("acme");

    // A device enrolls: the db node hears of it within seconds, and the device learns where to
    // publish.
    let (token, pin, _) = new_token(&c, "acme", &[]);
    let dk = berqenas_pki::new_key_and_csr("device").expect("key");
    let enrolled = pinned(&c, &pin).enroll(request(&token, 1, &dk.csr_pem)).await.expect("enrolled").into_inner();
    assert_eq!(enrolled.realtime_endpoint, "192.0.2.10:7401");
    let state = state_where(&mut watch, Duration::from_secs(5), |s| {
        db_part(s, "acme").devices.iter().any(|d| d.id == enrolled.device_id)
    })
    .await;
    let t = state.tenants.iter().find(|t| t.name == "acme").expect("acme");
    assert!(t.revision > revision, "a newer revision for the db node");
    let part = db_part(&state, "acme");
    assert_eq!(
        part.devices.iter().map(|d| (d.id.as_str(), d.name.as_str())).collect::<Vec<_>>(),
        vec![(enrolled.device_id.as_str(), enrolled.device_name.as_str())]
    );
    assert_eq!(
        (part.devices[0].mac_hashes.clone(), part.devices[0].machine_id_hash.clone()),
        (vec!["a".repeat(64)], "b".repeat(64))
    );
    let gateway = t.gateway.clone().expect("a gateway part");
    assert!(gateway.peers.iter().any(|p| p.id == enrolled.device_id && p.enabled), "a peer of the gateway");

    // A customer key may subscribe: its id and hash (never the secret) reach the db node.
    let key = c.json(0, &["apikey", "create", "--role", "customer", "--tenant", "acme"]);
    let secret = key["token"].as_str().expect("token");
    let state =
        state_where(&mut watch, Duration::from_secs(5), |s| !db_part(s, "acme").subscriber_keys.is_empty()).await;
    let part = db_part(&state, "acme");
    assert_eq!(part.subscriber_keys.len(), 1);
    let (id, hashed) = berqenas_coordinator::state::apikey::split_token(secret).expect("key shape");
    assert_eq!(part.subscriber_keys[0].id, id);
    assert_eq!(part.subscriber_keys[0].secret_hash, berqenas_coordinator::state::apikey::hash_secret(hashed));

    // Revoked: gone from the db node's list and from the gateway's peers within seconds.
    let started = std::time::Instant::now();
    c.json(0, &["device", "revoke", &enrolled.device_name, "--tenant", "acme"]);
    // Within 5 s or `state_where` fails: a revoked device may not publish.
    let state = state_where(&mut watch, Duration::from_secs(5), |s| db_part(s, "acme").devices.is_empty()).await;
    let t = state.tenants.iter().find(|t| t.name == "acme").expect("acme");
    assert!(t.gateway.as_ref().expect("gw").peers.iter().all(|p| !p.enabled), "no peer for a revoked device");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_attempts_are_rate_limited_per_source() {
    let c = Cluster::single_with(&["--enroll-rate", "0.01", "--enroll-burst", "3"]);
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let (token, pin, _) = new_token(&c, "acme", &["--uses", "unlimited"]);
    let mut client = pinned(&c, &pin);
    let kc = berqenas_pki::new_key_and_csr("device").expect("key");
    let mut codes = Vec::new();
    for key in 1..=5 {
        codes.push(client.enroll(request(&token, key, &kc.csr_pem)).await.map(|_| ()).map_err(|s| s.code()));
    }
    assert_eq!(
        codes,
        vec![Ok(()), Ok(()), Ok(()), Err(tonic::Code::ResourceExhausted), Err(tonic::Code::ResourceExhausted)],
        "a burst of 3, then refused"
    );
    assert_eq!(devices(&c, "acme").len(), 3);
}

/// An ephemeral device (`--ephemeral 1m`, the shortest) that goes silent is removed by the
/// leader's sweep (`serve --expiry-interval 1s`) once a minute has passed, not before: gone from
/// the list, its removal audited, its certificate refused, its address handed to the next
/// device. One enrolled with it that heartbeats as often as it is asked stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_ephemeral_device_is_removed_after_its_offline_time_and_a_live_one_stays() {
    let c = Cluster::single_with(&["--expiry-interval", "1s"]);
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let (token, pin, _) = new_token(&c, "acme", &["--name", "cam", "--uses", "3", "--ephemeral", "1m"]);
    let silent_key = berqenas_pki::new_key_and_csr("device").expect("key");
    let enrolled_at = std::time::Instant::now();
    let silent = pinned(&c, &pin).enroll(request(&token, 1, &silent_key.csr_pem)).await.expect("enrolled").into_inner();
    assert_eq!(silent.heartbeat_seconds, 15, "a quarter of its offline time");
    let live_key = berqenas_pki::new_key_and_csr("device").expect("key");
    let live = pinned(&c, &pin).enroll(request(&token, 2, &live_key.csr_pem)).await.expect("enrolled").into_inner();
    assert_eq!(
        (silent.tunnel.clone().expect("tunnel").address.as_str(), live.device_name.as_str()),
        ("198.18.1.2", "cam-2")
    );
    let shown = c.json(0, &["device", "show", "cam", "--tenant", "acme"]);
    assert_eq!(shown["ephemeral_ms"].as_u64(), Some(60_000), "{shown}");

    // The live one heartbeats as asked until the silent one is gone.
    let mut client = mtls(&c, &live.ca_pem, &live.cert_chain_pem, &live_key.key_pem);
    let every = Duration::from_secs(u64::from(live.heartbeat_seconds));
    let beats = tokio::spawn(async move {
        loop {
            let hb = HeartbeatRequest { fingerprint: Some(fingerprint("6.1")), last_handshake: 0, tunnel_up: true };
            let answer = client.heartbeat(hb).await.expect("a live device's heartbeat").into_inner();
            assert_eq!(answer.heartbeat_seconds, 15);
            tokio::time::sleep(every).await;
        }
    });
    let names = |c: &Cluster| -> Vec<String> {
        devices(c, "acme").iter().filter_map(|d| d["name"].as_str().map(str::to_string)).collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while names(&c).contains(&"cam".to_string()) {
        assert!(std::time::Instant::now() < deadline, "the silent ephemeral device is still there after 2 min");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let gone_after = enrolled_at.elapsed();
    assert!(!beats.is_finished(), "the live device's heartbeats failed");
    beats.abort();
    assert!(gone_after >= Duration::from_secs(60), "removed after {gone_after:?}, before its offline time");
    assert_eq!(names(&c), ["cam-2"], "the device that heartbeats stays");

    let expired: Vec<Value> = audit(&c).into_iter().filter(|e| e["action"] == "device.expire").collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0]["target"], "tenant/acme/device/cam", "{expired:?}");
    assert_eq!(expired[0]["outcome"], "ok", "{expired:?}");
    assert_eq!(expired[0]["details"]["id"].as_str(), Some(silent.device_id.as_str()), "{expired:?}");
    let hb = HeartbeatRequest { fingerprint: Some(fingerprint("6.1")), last_handshake: 0, tunnel_up: false };
    let refused = mtls(&c, &silent.ca_pem, &silent.cert_chain_pem, &silent_key.key_pem).heartbeat(hb).await;
    assert!(refused.is_err(), "the removed device's certificate is refused: {refused:?}");
    // Its address is free again: the next device gets it.
    let next_key = berqenas_pki::new_key_and_csr("device").expect("key");
    let next = pinned(&c, &pin).enroll(request(&token, 3, &next_key.csr_pem)).await.expect("enrolled").into_inner();
    assert_eq!(next.tunnel.expect("tunnel").address, "198.18.1.2", "the expired device's address is reused");
}
