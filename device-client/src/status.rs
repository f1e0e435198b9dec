//! `berqenas-device status`: the device as a coordinator describes it now (one heartbeat, whose
//! answer is stored as `run` stores it; the stored state when none answers), the tunnel (up, last
//! handshake), whether a coordinator accepted the device's certificate, when the certificate
//! expires and how many events wait in the spool. Touches no tunnel.

use crate::state::StateDir;
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Serialize)]
struct Status {
    tenant: String,
    device_id: String,
    device_name: String,
    state: String,
    interface: String,
    address: String,
    tunnel_up: bool,
    last_handshake: Option<u64>,
    coordinator_reachable: bool,
    coordinator_error: Option<String>,
    cert_not_after: Option<u64>,
    realtime_endpoint: String,
    events_pending: usize,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn ago(then: u64, now: u64) -> String {
    let s = now.saturating_sub(then);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

fn until(then: u64, now: u64) -> String {
    if then <= now {
        return "EXPIRED".to_string();
    }
    let s = then - now;
    match s {
        0..=7199 => format!("in {} min", s / 60),
        7200..=172_799 => format!("in {} h", s / 3600),
        _ => format!("in {} days", s / 86400),
    }
}

pub async fn print(dir: &StateDir, json: bool) -> anyhow::Result<()> {
    // A heartbeat, not only a TLS handshake: a revoked certificate is refused after the
    // handshake has completed on the client's side.
    let reach = crate::run::heartbeat_once(dir).await;
    let device = match &reach {
        Ok(d) => d.clone(),
        Err(_) => dir.load()?,
    };
    let tunnel = crate::tunnel::observe(&device).await.unwrap_or_default();
    let cert_not_after = dir.cert_validity().ok().map(|(_, after)| unix(after));
    let events_pending = crate::events::spool::Spool::open(dir).map(|s| s.pending().len()).unwrap_or(0);
    let status = Status {
        tenant: device.tenant,
        device_id: device.device_id,
        device_name: device.device_name,
        state: device.state,
        interface: device.interface,
        address: device.tunnel.address.to_string(),
        tunnel_up: tunnel.up,
        last_handshake: tunnel.last_handshake,
        coordinator_reachable: reach.is_ok(),
        coordinator_error: reach.err().map(|e| format!("{e:#}")),
        cert_not_after,
        realtime_endpoint: device.realtime_endpoint,
        events_pending,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let now = unix(SystemTime::now());
    println!("device:       {} ({}) in tenant {}", status.device_name, status.device_id, status.tenant);
    println!("state:        {}", status.state);
    println!(
        "tunnel:       {} {} ({})",
        status.interface,
        if status.tunnel_up { "up" } else { "down" },
        status.address
    );
    println!("handshake:    {}", status.last_handshake.map_or_else(|| "never".to_string(), |t| ago(t, now)));
    match &status.coordinator_error {
        None => println!("coordinator:  reachable"),
        Some(e) => println!("coordinator:  UNREACHABLE ({e})"),
    }
    println!(
        "certificate:  expires {}",
        status.cert_not_after.map_or_else(|| "unknown".to_string(), |t| until(t, now))
    );
    println!(
        "realtime:     {}",
        if status.realtime_endpoint.is_empty() { "none" } else { status.realtime_endpoint.as_str() }
    );
    println!("events:       {} waiting in the spool", status.events_pending);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_like_a_person_would_say_them() {
        assert_eq!(ago(100, 130), "30 s ago");
        assert_eq!(ago(0, 600), "10 min ago");
        assert_eq!(until(100, 200), "EXPIRED");
        assert_eq!(until(200 + 3 * 86400, 200), "in 3 days");
    }
}
