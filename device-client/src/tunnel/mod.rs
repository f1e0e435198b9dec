//! The tunnel to the tenant's gateway, per platform: Linux drives WireGuard itself (`linux`),
//! Windows writes a wg-quick file and hands it to the official WireGuard tunnel service
//! (`windows`). `up`/`down` are the commands; `run` calls `apply` when the configuration changes.

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
    fn apply_unsupported() -> anyhow::Result<()> {
        anyhow::bail!("no tunnel driver for {}", std::env::consts::OS)
    }
}

use crate::state::{Device, StateDir};
use anyhow::bail;
use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TunnelStatus {
    /// The interface exists and has the gateway as its peer.
    pub up: bool,
    /// Unix seconds of the gateway's last handshake.
    pub last_handshake: Option<u64>,
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
    Ok(())
}

pub async fn down_command(dir: &StateDir) -> anyhow::Result<()> {
    let device = dir.load()?;
    remove(dir, &device).await?;
    println!("tunnel {} down", device.interface);
    Ok(())
}
