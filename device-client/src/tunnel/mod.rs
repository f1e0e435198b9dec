//! The tunnel to the tenant's gateway, per platform: Linux drives WireGuard itself (`linux`),
//! Windows writes a wg-quick file and hands it to the official WireGuard tunnel service
//! (`windows`). `up`/`down` are the commands; `run` calls `apply` when the configuration changes.
//!
//! WireGuard retries an unanswered handshake only after its 5 s REKEY_TIMEOUT, so a first
//! initiation that reached the gateway before it added this peer (or while it restarted) would
//! cost 5 s. `await_handshake` therefore starts fresh initiations (`kick`: the peer re-set, which
//! drops WireGuard's pending handshake, and a packet sent through the tunnel) until the gateway
//! answers or it gives up; `up` and `run` use it.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use self::windows as platform;
#[cfg(not(any(target_os = "linux", windows)))]
mod platform {
    //! No tunnel driver for this OS: refuse rather than pretend.
    use super::TunnelStatus;
    use crate::{
        keys::WgPrivateKey,
        state::{Device, StateDir},
    };
    pub async fn apply(_: &StateDir, _: &Device, _: &WgPrivateKey) -> anyhow::Result<()> {
        anyhow::bail!("no tunnel driver for {}: use `export --format wg-quick`", std::env::consts::OS)
    }
    pub async fn remove(_: &StateDir, _: &Device) -> anyhow::Result<()> {
        apply_unsupported()
    }
    pub async fn observe(_: &Device) -> anyhow::Result<TunnelStatus> {
        Ok(TunnelStatus::default())
    }
    pub async fn kick(_: &Device) -> anyhow::Result<()> {
        apply_unsupported()
    }
    fn apply_unsupported() -> anyhow::Result<()> {
        anyhow::bail!("no tunnel driver for {}", std::env::consts::OS)
    }
}

use crate::state::{Device, StateDir};
use anyhow::bail;
use serde::Serialize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A WireGuard session is dropped this long after its handshake (REJECT_AFTER_TIME) unless a new
/// one came: a last handshake older than this means the gateway does not answer now.
const SESSION_LIFETIME_SECS: u64 = 180;
/// How long `up` (and `run` after it brought the tunnel up) waits for the gateway's handshake.
pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);
/// The first fresh initiation after this long without an answer, then one per `KICK_EVERY`
/// (well above a handshake's round trip, which a fresh initiation would cut short).
const FIRST_KICK: Duration = Duration::from_millis(500);
const KICK_EVERY: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TunnelStatus {
    /// The interface exists and has the gateway as its peer.
    pub up: bool,
    /// Unix seconds of the gateway's last handshake.
    pub last_handshake: Option<u64>,
}

impl TunnelStatus {
    /// The gateway answered a handshake recently enough (`now`: Unix seconds) for the session
    /// to carry packets.
    pub fn live(&self, now: u64) -> bool {
        self.up && self.last_handshake.is_some_and(|t| now.saturating_sub(t) < SESSION_LIFETIME_SECS)
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub async fn apply(dir: &StateDir, d: &Device) -> anyhow::Result<()> {
    match d.state.as_str() {
        "active" => {}
        "pending" => bail!("the device waits for `device approve` on the coordinator"),
        other => bail!("the device is {other}: no tunnel"),
    }
    platform::apply(dir, d, &dir.wg_private_key()?).await
}

pub async fn remove(dir: &StateDir, d: &Device) -> anyhow::Result<()> {
    platform::remove(dir, d).await
}

pub async fn observe(d: &Device) -> anyhow::Result<TunnelStatus> {
    platform::observe(d).await
}

/// Starts a fresh handshake with the gateway now (see the module's comment).
pub async fn kick(d: &Device) -> anyhow::Result<()> {
    platform::kick(d).await
}

/// Whether the tunnel has a live session; a fresh handshake started when it has not.
pub async fn kick_if_silent(d: &Device) -> anyhow::Result<bool> {
    if observe(d).await?.live(unix_now()) {
        return Ok(true);
    }
    kick(d).await?;
    Ok(false)
}

/// Waits up to `within` for a live session with the gateway, starting fresh handshakes while
/// none comes: how long it took, `None` when the gateway did not answer in time.
pub async fn await_handshake(d: &Device, within: Duration) -> anyhow::Result<Option<Duration>> {
    let start = Instant::now();
    let mut next_kick = start + FIRST_KICK;
    loop {
        if observe(d).await?.live(unix_now()) {
            return Ok(Some(start.elapsed()));
        }
        let now = Instant::now();
        if now >= start + within {
            return Ok(None);
        }
        if now >= next_kick {
            kick(d).await?;
            next_kick = Instant::now() + KICK_EVERY;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What `up` and `run` say about the handshake `await_handshake` waited for.
pub fn handshake_text(waited: Option<Duration>) -> String {
    match waited {
        Some(t) => format!("handshake with the gateway after {} ms", t.as_millis()),
        None => format!(
            "no handshake with the gateway within {} s (it may not have added this device yet); \
             `berqenas-device run` keeps trying",
            HANDSHAKE_WAIT.as_secs()
        ),
    }
}

/// `up`: asks a coordinator for the current configuration first (the gateway may have reported
/// its key since enrollment); the stored one when no coordinator answers.
pub async fn up_command(dir: &StateDir) -> anyhow::Result<()> {
    let device = match crate::run::heartbeat_once(dir).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("berqenas-device: no coordinator answered ({e:#}); using the stored configuration");
            dir.load()?
        }
    };
    apply(dir, &device).await?;
    println!(
        "tunnel {} up: {} -> {} via {}",
        device.interface, device.tunnel.address, device.tunnel.subnet, device.tunnel.endpoint
    );
    println!("{}", handshake_text(await_handshake(&device, HANDSHAKE_WAIT).await?));
    Ok(())
}

pub async fn down_command(dir: &StateDir) -> anyhow::Result<()> {
    let device = dir.load()?;
    remove(dir, &device).await?;
    println!("tunnel {} down", device.interface);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_live_only_with_a_handshake_younger_than_its_lifetime() {
        let now = 1_000_000;
        let at = |t: Option<u64>| TunnelStatus { up: true, last_handshake: t };
        assert!(!at(None).live(now), "never answered");
        assert!(at(Some(now - 5)).live(now));
        assert!(!at(Some(now - SESSION_LIFETIME_SECS)).live(now), "expired");
        assert!(!TunnelStatus { up: false, last_handshake: Some(now) }.live(now), "no interface");
    }

    #[test]
    fn up_says_whether_the_gateway_answered() {
        assert_eq!(handshake_text(Some(Duration::from_millis(42))), "handshake with the gateway after 42 ms");
        assert!(handshake_text(None).starts_with("no handshake with the gateway within 5 s"));
    }
}
