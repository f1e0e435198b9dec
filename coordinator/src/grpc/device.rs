//! The `Device` gRPC service (`berqenas-device`), on the node listener beside `Node`. `Enroll`
//! runs over TLS without a client certificate (the device token is the credential): rate limited
//! per source, validated (WireGuard key, CSR, name, fingerprint) before the token is spent, bogus
//! tokens counted and summarised like bogus joins, every token spent or refused in Raft with its
//! audit entry; the CSR is signed as `berqenas://device/{tenant}/{id}` for `DEVICE_CERT_LIFETIME`.
//! It answers once the tenant's gateway has reported the new peer applied (at most
//! `GATEWAY_WAIT`, then with `gateway_has_peer` false), so the device's first handshake is not
//! dropped by a gateway that does not know it yet.
//! `Renew` and `Heartbeat` need the device's certificate (a revoked, removed or unknown device
//! is refused at the handshake by `StateRevocation`, and again here for open connections);
//! `Renew` at most `RENEWALS_PER_WINDOW` times per device per `RENEW_WINDOW`.
//! Heartbeats are written to Raft only when the fingerprint changed, on a device's first
//! heartbeat this coordinator sees, or `presence::seen_refresh_ms` after the last write (5 min; a
//! quarter of an ephemeral device's offline time) — and at
//! most `WRITES_PER_WINDOW` times per `WRITE_WINDOW` per device (a device flapping its
//! fingerprint is answered, its further changes recorded once the window has passed).

use super::error::internal;
use crate::server::{cluster_ca, Consistency, Coordinator};
use crate::state::action::Action;
use crate::state::apikey::hash_secret;
use crate::state::device::{Device, DeviceName, DeviceState};
use crate::state::devicetoken::{split_device_token, Enrollment, TOKEN_REFUSED};
use crate::state::gateway::WgKey;
use crate::state::names::TenantName;
use crate::state::presence::{heartbeat_ms, seen_refresh_ms, Fingerprint, Heartbeat, SEEN_REFRESH_MS};
use crate::state::{Command, Meta, Op, Reply, State};
use berqenas_pki::Identity;
use berqenas_proto::device as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tonic::{Request, Response, Status};

/// Lifetime of device certificates; the client renews when a third is left.
pub const DEVICE_CERT_LIFETIME: Duration = Duration::from_secs(86_400);
/// Largest CSR taken.
const MAX_CSR_BYTES: usize = 8192;
/// Most MAC hashes a fingerprint may carry.
const MAX_MACS: usize = 64;
/// Most heartbeat writes of one device per `WRITE_WINDOW` on this coordinator.
const WRITES_PER_WINDOW: u32 = 4;
const WRITE_WINDOW: Duration = Duration::from_secs(60);
/// Past this many devices in the write cache, the ones no longer in the state are dropped.
const WRITTEN_PRUNE_AT: usize = 10_000;

/// A device's heartbeat writes as this coordinator made them.
struct Written {
    /// The fingerprint last written, and when.
    fingerprint: Fingerprint,
    at: Instant,
    /// The current window's start and the writes made in it.
    window: Instant,
    count: u32,
}

impl Written {
    /// Whether a heartbeat reporting `fp` at `now` is written: a change, or a refresh is due
    /// (`refresh` after the last write), and the device has writes left in its window.
    fn due(&self, fp: &Fingerprint, now: Instant, refresh: Duration) -> bool {
        let wanted = self.fingerprint != *fp || now.duration_since(self.at) >= refresh;
        let spent = if now.duration_since(self.window) >= WRITE_WINDOW { 0 } else { self.count };
        wanted && spent < WRITES_PER_WINDOW
    }

    /// Counts a write of `fp` at `now`.
    fn record(&mut self, fp: Fingerprint, now: Instant) {
        if now.duration_since(self.window) >= WRITE_WINDOW {
            (self.window, self.count) = (now, 0);
        }
        self.count += 1;
        (self.fingerprint, self.at) = (fp, now);
    }
}

/// Longest `Enroll` waits for the tenant's gateway to report the new peer applied (it answers
/// then anyway, saying so; the client's own handshake retries cover the rest).
const GATEWAY_WAIT: Duration = Duration::from_secs(3);

/// Most certificate renewals of one device per `RENEW_WINDOW` on this coordinator (a client
/// renews when a third of the day's lifetime is left; each renewal costs a CSR check and a
/// signature, which a device looping on it must not turn into the coordinator's whole CPU).
const RENEWALS_PER_WINDOW: u32 = 10;
const RENEW_WINDOW: Duration = Duration::from_secs(600);

pub struct DeviceService {
    c: Arc<Coordinator>,
    /// Per device id: its heartbeat writes (the heartbeat write policy).
    written: Mutex<HashMap<String, Written>>,
    /// Per device id: the current renewal window's start and the renewals made in it.
    renewals: Mutex<HashMap<String, (Instant, u32)>>,
}

impl DeviceService {
    pub fn new(c: Arc<Coordinator>) -> Self {
        Self { c, written: Mutex::new(HashMap::new()), renewals: Mutex::new(HashMap::new()) }
    }

    /// Counts a renewal of device `id`; `Err(wait)` past its budget.
    fn charge_renewal(&self, id: &str) -> Result<(), Status> {
        let mut renewals = self.renewals.lock().map_err(|e| internal("renewal cache", e))?;
        let now = Instant::now();
        if renewals.len() >= WRITTEN_PRUNE_AT {
            renewals.retain(|_, (start, _)| now.duration_since(*start) < RENEW_WINDOW);
        }
        let (start, count) = renewals.entry(id.to_string()).or_insert((now, 0));
        if now.duration_since(*start) >= RENEW_WINDOW {
            (*start, *count) = (now, 0);
        }
        if *count >= RENEWALS_PER_WINDOW {
            let wait = RENEW_WINDOW.saturating_sub(now.duration_since(*start));
            return Err(Status::resource_exhausted(format!(
                "too many certificate renewals; retry in {} s",
                wait.as_secs().max(1)
            )));
        }
        *count += 1;
        Ok(())
    }
}

/// Lowercase hex SHA-256.
fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Printable text of at most 64 characters.
fn short_text(field: &str, s: &str) -> Result<String, String> {
    if s.chars().count() > 64 || s.chars().any(char::is_control) {
        return Err(format!("fingerprint {field} must be at most 64 printable characters"));
    }
    Ok(s.to_string())
}

/// A fingerprint as the domain takes it: hashes in their shape, texts short, MACs sorted.
pub fn fingerprint(f: Option<pb::Fingerprint>) -> Result<Fingerprint, String> {
    let pb::Fingerprint { mut mac_hashes, machine_id_hash, os_name, os_version, arch, client_version } =
        f.ok_or("a fingerprint is required")?;
    if mac_hashes.len() > MAX_MACS || !mac_hashes.iter().all(|h| is_hash(h)) {
        return Err(format!("fingerprint mac_hashes: at most {MAX_MACS} lowercase hex SHA-256 hashes"));
    }
    if !machine_id_hash.is_empty() && !is_hash(&machine_id_hash) {
        return Err("fingerprint machine_id_hash must be a lowercase hex SHA-256 hash or empty".into());
    }
    mac_hashes.sort();
    mac_hashes.dedup();
    Ok(Fingerprint {
        mac_hashes,
        machine_id_hash,
        os_name: short_text("os_name", &os_name)?,
        os_version: short_text("os_version", &os_version)?,
        arch: short_text("arch", &arch)?,
        client_version: short_text("client_version", &client_version)?,
    })
}

/// An enroll request checked into the command's parts (the tenant is found on the token later).
fn validate_enroll(
    req: &pb::EnrollRequest,
) -> Result<(String, String, Option<DeviceName>, WgKey, Fingerprint), String> {
    let (id, secret) = split_device_token(&req.token).ok_or("malformed device token")?;
    let key: WgKey = req.wg_public_key.parse().map_err(|e| format!("wg_public_key: {e}"))?;
    let name = if req.name.is_empty() { None } else { Some(DeviceName::parse(&req.name).map_err(|e| e.to_string())?) };
    if req.csr_pem.len() > MAX_CSR_BYTES {
        return Err("CSR is too large".into());
    }
    let fp = fingerprint(req.fingerprint.clone())?;
    Ok((id.to_ascii_lowercase(), hash_secret(secret), name, key, fp))
}

/// The tenant of the token `id` when `secret_hash` is its secret's (spent or not: the state
/// machine gives a holder of the real secret the precise, audited refusal).
fn token_tenant(state: &State, id: &str, secret_hash: &str) -> Option<TenantName> {
    use subtle::ConstantTimeEq;
    let t = state.device_tokens.get(id)?;
    bool::from(t.secret_hash.as_bytes().ct_eq(secret_hash.as_bytes())).then(|| t.tenant.clone())
}

/// The (tenant, device id) in the verified client certificate.
fn device_identity<T>(req: &Request<T>) -> Result<(String, String), Status> {
    let certs = req.peer_certs().ok_or_else(|| Status::unauthenticated("a device certificate is required"))?;
    let leaf = certs.first().ok_or_else(|| Status::unauthenticated("a device certificate is required"))?;
    match berqenas_pki::peer_identity(leaf) {
        Ok(Identity::Device { tenant, id }) => Ok((tenant, id)),
        Ok(other) => Err(Status::permission_denied(format!("{other} is not a device"))),
        Err(e) => Err(Status::unauthenticated(e.to_string())),
    }
}

/// The device the certificate names, as long as it exists and is not revoked.
fn live_device(state: &State, tenant: &str, id: &str) -> Result<Device, Status> {
    state
        .devices
        .get(id)
        .filter(|d| d.tenant.as_str() == tenant && d.revoked_at_ms.is_none())
        .cloned()
        .ok_or_else(|| Status::permission_denied(format!("device {tenant}/{id} is revoked or unknown")))
}

fn state_pb(d: &Device) -> pb::DeviceState {
    match d.state() {
        DeviceState::Active => pb::DeviceState::Active,
        DeviceState::Pending => pb::DeviceState::Pending,
        // A revoked device never gets this far; the client treats both as "no tunnel".
        DeviceState::Disabled | DeviceState::Revoked => pb::DeviceState::Disabled,
    }
}

/// What the device needs now: its tunnel, the realtime endpoint, the coordinators.
fn world(c: &Coordinator, d: &Device) -> (pb::TunnelConfig, String, Vec<String>) {
    c.read(|data| {
        let s = &data.state;
        let t = crate::state::wgquick::tunnel(s, d);
        let tunnel = pb::TunnelConfig {
            address: t.address.to_string(),
            subnet: t.subnet,
            gateway_address: t.gateway_address,
            gateway_public_key: t.gateway_public_key.unwrap_or_default(),
            endpoint: t.endpoint.unwrap_or_default(),
            keepalive_seconds: t.keepalive_seconds,
            source_keep: t.source_keep,
        };
        let realtime = s
            .tenants
            .get(&d.tenant)
            .and_then(|t| t.placement.db_node)
            .and_then(|n| s.nodes.get(&n)?.realtime_address.clone())
            .unwrap_or_default();
        let coordinators = data
            .membership
            .membership()
            .nodes()
            .filter(|(_, n)| !n.node_addr.is_empty())
            .map(|(_, n)| n.node_addr.clone())
            .collect();
        (tunnel, realtime, coordinators)
    })
}

fn source<T>(req: &Request<T>) -> (Option<std::net::IpAddr>, String) {
    let ip = req.remote_addr().map(|a| a.ip());
    (ip, ip.map_or_else(|| "unknown".into(), |ip| ip.to_string()))
}

impl DeviceService {
    /// An enrollment refused before it reached Raft: counted for its source (one audit entry per
    /// source per window at most, like bogus joins) and answered with `code`, or
    /// `ResourceExhausted` once the source is over its limit.
    async fn refuse(&self, ip: Option<std::net::IpAddr>, code: tonic::Code, reason: String) -> Status {
        tracing::debug!(source = ?ip, reason, "refused an enrollment");
        let refusal = crate::refusals::Refusal {
            source: ip,
            action: Action::DeviceEnroll,
            target: "device",
            reason: &reason,
            sample: true,
        };
        self.c.refuse(refusal).await;
        match self.c.admission.charge_anonymous(ip) {
            Ok(()) => Status::new(code, reason),
            Err(wait) => Status::resource_exhausted(format!(
                "too many refused attempts from this address; retry in {} s ({reason})",
                wait.as_secs().max(1)
            )),
        }
    }

    /// Waits (at most `GATEWAY_WAIT`) until the tenant's gateway has reported applying the
    /// desired state that holds the new `device`, so the device's first handshake finds its
    /// peer there. False when it has not by then, the device is not active (pending devices
    /// get no peer) or the tenant has no gateway.
    async fn await_gateway(&self, device: &Device) -> bool {
        if !device.is_active() {
            return false;
        }
        let Some(revision) = self.c.read(|d| d.state.tenants.get(&device.tenant).map(|t| t.gateway_revision)) else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + GATEWAY_WAIT;
        let mut applied = self.c.applied.clone();
        loop {
            match self.c.read(|d| d.state.gateway_applied(&device.tenant, revision)) {
                Some(true) => return true,
                None => return false,
                Some(false) => {}
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    /// The token's tenant as this coordinator knows it; when it does not, after catching up
    /// with the leader (a token minted a moment ago elsewhere). Never a Raft write.
    async fn tenant_of_token(&self, id: &str, secret_hash: &str) -> Option<TenantName> {
        if let Some(t) = self.c.read(|d| token_tenant(&d.state, id, secret_hash)) {
            return Some(t);
        }
        if let Err(e) = self.c.read_barrier(Consistency::Linearizable).await {
            tracing::debug!(error = %e, "could not catch up with the leader to check a device token");
            return None;
        }
        self.c.read(|d| token_tenant(&d.state, id, secret_hash))
    }
}

#[tonic::async_trait]
impl pb::device_server::Device for DeviceService {
    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let (ip, src) = source(&request);
        if let Err(wait) = self.c.admission.charge_enrollment(ip) {
            let reason =
                format!("too many enrollment attempts from this address; retry in {} s", wait.as_secs().max(1));
            let refusal = crate::refusals::Refusal {
                source: ip,
                action: Action::DeviceEnroll,
                target: "device",
                reason: &reason,
                sample: true,
            };
            self.c.refuse(refusal).await;
            return Err(Status::resource_exhausted(reason));
        }
        let req = request.into_inner();
        let ca = cluster_ca(&self.c)
            .ok_or_else(|| Status::unavailable("this coordinator has no cluster CA yet"))?
            .map_err(|e| internal("loading the cluster CA", e))?;
        let checked = validate_enroll(&req).and_then(|v| {
            // Refuse a tampered or unusable CSR before the token is spent (its signature is checked).
            let probe = Identity::Device { tenant: "probe".into(), id: "d1".into() };
            ca.sign_csr(&req.csr_pem, &probe, &[], SystemTime::now(), Duration::from_secs(60))
                .map_err(|e| format!("unusable CSR: {e}"))?;
            Ok(v)
        });
        let (token_id, secret_hash, name, public_key, fingerprint) = match checked {
            Ok(v) => v,
            Err(reason) => return Err(self.refuse(ip, tonic::Code::InvalidArgument, reason).await),
        };
        let Some(tenant) = self.tenant_of_token(&token_id, &secret_hash).await else {
            return Err(self.refuse(ip, tonic::Code::PermissionDenied, TOKEN_REFUSED.into()).await);
        };
        let enrollment = Enrollment { token_id: token_id.clone(), secret_hash, tenant, name, public_key, fingerprint };
        let meta = Meta {
            time_ms: crate::time::now_ms(),
            actor: format!("devicetoken/{token_id}"),
            source: src.clone(),
            key_role: None,
            user_generation: None,
        };
        let device = match self.c.write(Command { meta, op: Op::EnrollDevice(enrollment) }).await? {
            Ok(Reply::Device(d)) => d,
            Ok(other) => return Err(internal("enroll", format!("unexpected reply {other:?}"))),
            Err(e) => {
                tracing::warn!(source = %src, reason = %e, "refused an enrollment");
                return Err(e.into());
            }
        };
        // Answer once this coordinator has applied it, so the device's first mTLS call here
        // finds it (a follower may otherwise still call it unknown).
        if let Err(e) = self.c.read_barrier(Consistency::Linearizable).await {
            tracing::warn!(error = %e, "enrollment applied on the leader but not yet here");
        }
        let identity = Identity::Device { tenant: device.tenant.to_string(), id: device.id.clone() };
        let cert = ca
            .sign_csr(&req.csr_pem, &identity, &[], SystemTime::now(), DEVICE_CERT_LIFETIME)
            .map_err(|e| internal("signing a device certificate", e))?;
        let gateway_has_peer = self.await_gateway(&device).await;
        if !gateway_has_peer && device.is_active() {
            tracing::info!(tenant = %device.tenant, device = %device.name, "the gateway has not confirmed the new peer yet");
        }
        let (tunnel, realtime_endpoint, coordinators) = world(&self.c, &device);
        tracing::info!(tenant = %device.tenant, device = %device.name, source = %src, gateway_has_peer, "device enrolled");
        Ok(Response::new(pb::EnrollResponse {
            tenant: device.tenant.to_string(),
            device_id: device.id.clone(),
            device_name: device.name.to_string(),
            cert_chain_pem: format!("{cert}{}", ca.cert_pem),
            ca_pem: ca.cert_pem.clone(),
            tunnel: Some(tunnel),
            realtime_endpoint,
            state: state_pb(&device).into(),
            coordinators,
            labels: device.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            gateway_has_peer,
            heartbeat_seconds: heartbeat_seconds(&device),
        }))
    }

    async fn renew(
        &self,
        request: Request<pb::DeviceRenewRequest>,
    ) -> Result<Response<pb::DeviceRenewResponse>, Status> {
        let (tenant, id) = device_identity(&request)?;
        self.c.read(|d| live_device(&d.state, &tenant, &id))?;
        self.charge_renewal(&id)?;
        let ca = cluster_ca(&self.c)
            .ok_or_else(|| Status::unavailable("this coordinator has no cluster CA yet"))?
            .map_err(|e| internal("loading the cluster CA", e))?;
        let req = request.into_inner();
        if req.csr_pem.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument("CSR is too large"));
        }
        let identity = Identity::Device { tenant: tenant.clone(), id: id.clone() };
        let cert = ca
            .sign_csr(&req.csr_pem, &identity, &[], SystemTime::now(), DEVICE_CERT_LIFETIME)
            .map_err(|e| Status::invalid_argument(format!("unusable CSR: {e}")))?;
        tracing::info!(tenant, device = id, "renewed a device certificate");
        Ok(Response::new(pb::DeviceRenewResponse { cert_chain_pem: format!("{cert}{}", ca.cert_pem) }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (tenant, id) = device_identity(&request)?;
        let (_, src) = source(&request);
        let device = self.c.read(|d| live_device(&d.state, &tenant, &id))?;
        let fp = fingerprint(request.into_inner().fingerprint).map_err(Status::invalid_argument)?;
        // Decided and counted under one lock, so concurrent heartbeats of one device (many
        // connections) cannot all pass the check before any of them is counted.
        let due = {
            let mut written = self.written.lock().map_err(|e| internal("heartbeat cache", e))?;
            let now = Instant::now();
            let refresh = Duration::from_millis(seen_refresh_ms(&device));
            let due = written.get(&id).is_none_or(|w| w.due(&fp, now, refresh));
            if due {
                if written.len() >= WRITTEN_PRUNE_AT {
                    self.c.read(|d| written.retain(|id, _| d.state.devices.contains_key(id)));
                }
                written
                    .entry(id.clone())
                    .or_insert_with(|| Written { fingerprint: fp.clone(), at: now, window: now, count: 0 })
                    .record(fp.clone(), now);
            }
            due
        };
        if due {
            let meta = Meta {
                time_ms: crate::time::now_ms(),
                actor: format!("device/{tenant}/{id}"),
                source: src,
                key_role: None,
                user_generation: None,
            };
            let op = Op::DeviceHeartbeat(Heartbeat {
                tenant: device.tenant.clone(),
                device_id: id.clone(),
                fingerprint: fp.clone(),
            });
            let outcome = self.c.write(Command { meta, op }).await;
            if !matches!(outcome, Ok(Ok(_))) {
                // Not recorded: the next heartbeat tries again (its budget stays spent).
                if let Ok(mut written) = self.written.lock() {
                    let stale = Instant::now().checked_sub(Duration::from_millis(SEEN_REFRESH_MS));
                    if let (Some(w), Some(stale)) = (written.get_mut(&id), stale) {
                        w.at = stale;
                    }
                }
            }
            if let Err(e) = outcome? {
                return Err(e.into());
            }
        }
        let (tunnel, realtime_endpoint, coordinators) = world(&self.c, &device);
        Ok(Response::new(pb::HeartbeatResponse {
            state: state_pb(&device).into(),
            tunnel: Some(tunnel),
            realtime_endpoint,
            coordinators,
            heartbeat_seconds: heartbeat_seconds(&device),
        }))
    }
}

/// `presence::heartbeat_ms` in whole seconds, as the wire carries it.
fn heartbeat_seconds(device: &Device) -> u32 {
    u32::try_from(heartbeat_ms(device) / 1000).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> pb::Fingerprint {
        pb::Fingerprint {
            mac_hashes: vec!["b".repeat(64), "a".repeat(64)],
            machine_id_hash: "c".repeat(64),
            os_name: "linux".into(),
            os_version: "6.1".into(),
            arch: "x86_64".into(),
            client_version: "0.1.0".into(),
        }
    }

    #[test]
    fn a_flapping_fingerprint_is_written_a_few_times_per_window() {
        let f = |os: &str| fingerprint(Some(pb::Fingerprint { os_version: os.into(), ..fp() })).expect("valid");
        let t0 = Instant::now();
        let mut w = Written { fingerprint: f("6.1"), at: t0, window: t0, count: 1 };
        let refresh = Duration::from_millis(SEEN_REFRESH_MS);
        assert!(!w.due(&f("6.1"), t0, refresh), "unchanged: not due before the refresh");
        let mut writes = 1;
        for i in 0..100u64 {
            let (now, os) = (t0 + Duration::from_millis(i), if i % 2 == 0 { "6.2" } else { "6.1" });
            if w.due(&f(os), now, refresh) {
                w.record(f(os), now);
                writes += 1;
            }
        }
        assert_eq!(writes, WRITES_PER_WINDOW, "then nothing more in the window");
        let later = t0 + WRITE_WINDOW;
        let pending = if w.fingerprint == f("6.1") { f("6.2") } else { f("6.1") };
        assert!(w.due(&pending, later, refresh), "the change is written once the window has passed");
    }

    #[test]
    fn an_ephemeral_device_is_asked_to_heartbeat_and_written_often_enough_to_outlive_its_offline_time() {
        use crate::state::devicetoken::MIN_EPHEMERAL_MS;
        use crate::state::presence::HEARTBEAT_MS;
        let device = |ephemeral_ms: Option<u64>| Device {
            id: "d1".into(),
            tenant: TenantName::parse("acme").expect("name"),
            name: DeviceName::parse("cam").expect("name"),
            public_key: WgKey::from_bytes(&[1; 32]),
            address: "198.18.1.2".parse().expect("ip"),
            enabled: true,
            created_at_ms: 0,
            updated_at_ms: 0,
            last_connect: None,
            labels: Default::default(),
            token_id: None,
            pending: false,
            revoked_at_ms: None,
            ephemeral_ms,
            fingerprint: None,
            public_fingerprint: None,
            last_seen_ms: None,
        };
        assert_eq!((heartbeat_seconds(&device(None)), seen_refresh_ms(&device(None))), (60, SEEN_REFRESH_MS));
        for offline in [MIN_EPHEMERAL_MS, 2 * 60_000, 10 * 60_000, 3_600_000, 30 * 86_400_000] {
            let d = device(Some(offline));
            // The oldest a running device's last-seen gets: a refresh, plus a heartbeat late by its jitter.
            let stalest = seen_refresh_ms(&d) + heartbeat_ms(&d) * 11 / 10;
            assert!(stalest * 100 <= offline * 55, "{offline} ms: last-seen up to {stalest} ms old");
            assert!(heartbeat_ms(&d) <= HEARTBEAT_MS && heartbeat_seconds(&d) >= 15, "{offline}");
        }
    }

    #[test]
    fn fingerprints_are_checked_and_sorted() {
        let f = fingerprint(Some(fp())).expect("valid");
        assert_eq!(f.mac_hashes, vec!["a".repeat(64), "b".repeat(64)]);
        assert!(fingerprint(None).is_err());
        for bad in [
            pb::Fingerprint { mac_hashes: vec!["A".repeat(64)], ..fp() },
            pb::Fingerprint { mac_hashes: vec!["a".repeat(63)], ..fp() },
            pb::Fingerprint { mac_hashes: vec!["a".repeat(64); MAX_MACS + 1], ..fp() },
            pb::Fingerprint { machine_id_hash: "zz".into(), ..fp() },
            pb::Fingerprint { os_name: "x".repeat(65), ..fp() },
            pb::Fingerprint { os_version: "6.1\n".into(), ..fp() },
        ] {
            assert!(fingerprint(Some(bad.clone())).is_err(), "{bad:?}");
        }
    }
}
