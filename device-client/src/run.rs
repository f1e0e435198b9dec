//! `berqenas-device run`, the service: every minute (jittered; as often as the coordinator asks,
//! for an ephemeral device) a heartbeat with the fingerprint
//! and the tunnel's state over mTLS, which also brings the current tunnel configuration, device
//! state, realtime endpoint and coordinator list; the certificate renewed when two thirds of its
//! life are gone, with jittered exponential backoff while no coordinator answers. Apart from it,
//! every 10 s (and at once after a heartbeat), the tunnel re-applied when its configuration
//! changed or it went missing (then the gateway's handshake awaited), a fresh handshake started
//! when the session is not live, taken down when the device is no longer active. Beside them, the
//! local event socket and the relay to the ingest.

use crate::connect;
use crate::enroll::{coordinator_list, state_name, tunnel_from_pb};
use crate::events::publish::{self, Backoff, Outbox};
use crate::events::{local, spool::Spool};
use crate::state::{valid_endpoint, Device, StateDir};
use crate::tunnel;
use anyhow::{bail, Context};
use berqenas_proto::device as pb;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

fn log(msg: impl std::fmt::Display) {
    eprintln!("berqenas-device: {msg}");
}

/// Heartbeat interval: `BERQENAS_DEVICE_HEARTBEAT_SECS` (tests), else what the coordinator
/// asked for (an ephemeral device beats several times within its offline time), else 60 s.
fn interval(device: &Device) -> Duration {
    let asked = device.heartbeat_seconds.map(u64::from);
    let secs =
        std::env::var("BERQENAS_DEVICE_HEARTBEAT_SECS").ok().and_then(|s| s.parse().ok()).or(asked).unwrap_or(60);
    Duration::from_secs(secs).max(Duration::from_secs(1))
}

/// One heartbeat: reports, then stores what the coordinator answered. Returns the device as
/// stored now.
pub async fn heartbeat_once(dir: &StateDir) -> anyhow::Result<Device> {
    let device = dir.load()?;
    let status = tunnel::observe(&device).await.unwrap_or_default();
    let mut client = connect::coordinator(dir, &device.coordinators).await?;
    let request = pb::HeartbeatRequest {
        fingerprint: Some(crate::fingerprint::collect().into()),
        last_handshake: status.last_handshake.and_then(|s| i64::try_from(s).ok()).unwrap_or(0),
        tunnel_up: status.up,
    };
    let resp = client
        .heartbeat(request)
        .await
        .map_err(|s| anyhow::anyhow!("heartbeat refused ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    let pb::HeartbeatResponse { state, tunnel, realtime_endpoint, coordinators, heartbeat_seconds } = resp;
    let mut next = device.clone();
    let state = state_name(state);
    if state != "unknown" {
        next.state = state.to_string();
    }
    if let Some(t) = tunnel {
        next.tunnel = tunnel_from_pb(t)?;
    }
    if valid_endpoint(&realtime_endpoint) {
        next.realtime_endpoint = realtime_endpoint;
    }
    if heartbeat_seconds > 0 {
        next.heartbeat_seconds = Some(heartbeat_seconds);
    }
    let mut named = coordinators;
    named.extend(device.coordinators.iter().cloned());
    next.coordinators = coordinator_list(None, named);
    if next != device {
        dir.save(&next)?;
    }
    Ok(next)
}

/// Renews the certificate when less than a third of its life is left: a new key made here, a
/// CSR sent, key and chain replaced together (one file). Returns whether it renewed.
pub async fn renew_if_due(dir: &StateDir, device: &Device) -> anyhow::Result<bool> {
    let (not_before, not_after) = dir.cert_validity()?;
    if !berqenas_pki::should_renew(not_before, not_after, SystemTime::now()) {
        return Ok(false);
    }
    renew(dir, device).await?;
    Ok(true)
}

/// `renew`: a new TLS key made here and a certificate for it, whatever the old one's age.
pub async fn renew_command(dir: &StateDir) -> anyhow::Result<()> {
    let device = dir.load()?;
    renew(dir, &device).await?;
    let (_, not_after) = dir.cert_validity()?;
    let left = not_after.duration_since(SystemTime::now()).unwrap_or_default();
    println!("certificate renewed: valid for {} h", left.as_secs() / 3600);
    Ok(())
}

async fn renew(dir: &StateDir, device: &Device) -> anyhow::Result<()> {
    let kc = berqenas_pki::new_key_and_csr("berqenas device")?;
    let mut client = connect::coordinator(dir, &device.coordinators).await?;
    let resp = client
        .renew(pb::DeviceRenewRequest { csr_pem: kc.csr_pem.clone() })
        .await
        .map_err(|s| anyhow::anyhow!("renewal refused ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    let identity = berqenas_pki::peer_identity(&berqenas_pki::first_cert_der(&resp.cert_chain_pem)?)?;
    match identity {
        berqenas_pki::Identity::Device { tenant, id } if tenant == device.tenant && id == device.device_id => {}
        other => bail!("the coordinator renewed the certificate as {other}"),
    }
    dir.save_tls_identity(&kc.key_pem, &resp.cert_chain_pem)
}

/// Brings the tunnel to what `device` says, only when something changed or it is gone.
async fn keep_tunnel(dir: &StateDir, device: &Device, applied: &mut Option<Device>) -> anyhow::Result<()> {
    if device.state != "active" {
        let up = tunnel::observe(device).await.map(|s| s.up).unwrap_or(false);
        if applied.take().is_some() || up {
            tunnel::remove(dir, device).await?;
            log(format!("the device is {}: tunnel {} down", device.state, device.interface));
        }
        return Ok(());
    }
    if !device.tunnel.ready() {
        return Ok(());
    }
    let up = tunnel::observe(device).await.map(|s| s.up).unwrap_or(false);
    if applied.as_ref() != Some(device) || !up {
        tunnel::apply(dir, device).await.context("bring the tunnel up")?;
        log(format!("tunnel {} up: {} via {}", device.interface, device.tunnel.address, device.tunnel.endpoint));
        *applied = Some(device.clone());
        let waited = tunnel::await_handshake(device, tunnel::HANDSHAKE_WAIT).await?;
        log(tunnel::handshake_text(waited));
    } else {
        // A gateway that restarted or lost the peer answers the next fresh initiation at once,
        // not after WireGuard's own retry interval.
        tunnel::kick_if_silent(device).await?;
    }
    Ok(())
}

/// Tunnel upkeep interval: 10 s, or `BERQENAS_DEVICE_TUNNEL_CHECK_SECS` (tests).
fn tunnel_interval() -> Duration {
    let secs = std::env::var("BERQENAS_DEVICE_TUNNEL_CHECK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    Duration::from_secs(secs).max(Duration::from_secs(1))
}

/// Heartbeats (and renewals) for ever; wakes the tunnel upkeep after each answer.
async fn heartbeats(dir: &StateDir, changed: &Notify) {
    let mut backoff = Backoff::new(Duration::from_secs(300));
    loop {
        let result = async {
            let device = heartbeat_once(dir).await?;
            changed.notify_one();
            if renew_if_due(dir, &device).await? {
                log("certificate renewed");
            }
            anyhow::Ok(device)
        }
        .await;
        let wait = match result {
            Ok(device) => {
                backoff.reset();
                // ±10 %: a fleet restarted together does not heartbeat together.
                let mut r = [0u8; 1];
                let _ = getrandom::getrandom(&mut r);
                interval(&device).mul_f64(0.9 + f64::from(r[0]) / 255.0 * 0.2)
            }
            Err(e) => {
                let wait = backoff.next_delay();
                log(format!("{e:#}; retrying in {:.1} s", wait.as_secs_f64()));
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Keeps the tunnel as the stored configuration says, checked every few seconds whether or not
/// a coordinator answers (a deleted link or a dead wireguard-go comes back), and at once when a
/// heartbeat brought something new.
async fn tunnel_upkeep(dir: &StateDir, changed: &Notify) {
    let mut applied = None;
    let mut last_error = String::new();
    loop {
        let result = match dir.load() {
            Ok(device) => keep_tunnel(dir, &device, &mut applied).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => last_error.clear(),
            Err(e) => {
                // Said once per distinct failure, not every few seconds.
                let text = format!("{e:#}");
                if text != last_error {
                    log(&text);
                    last_error = text;
                }
                applied = None;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(tunnel_interval()) => {}
            () = changed.notified() => {}
        }
    }
}

/// Runs until `shutdown` resolves. The tunnel is left as it is (`down` takes it down).
pub async fn run(dir: StateDir, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let device = dir.load()?;
    log(format!("running as device {} ({}) of tenant {}", device.device_name, device.device_id, device.tenant));
    let outbox = Arc::new(Outbox::new(Spool::open(&dir)?));
    let server = tokio::spawn(local::serve(dir.clone(), outbox.clone()));
    let relay = tokio::spawn(publish::relay(dir.clone(), outbox.clone()));
    let changed = Notify::new();
    let result = tokio::select! {
        () = heartbeats(&dir, &changed) => Ok(()),
        () = tunnel_upkeep(&dir, &changed) => Ok(()),
        () = shutdown => Ok(()),
        r = server => match r {
            Ok(Err(e)) => Err(e),
            _ => Err(anyhow::anyhow!("the event socket stopped")),
        },
    };
    relay.abort();
    result
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
