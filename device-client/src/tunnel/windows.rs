//! The tunnel on Windows: the official WireGuard for Windows drives wireguard-nt. `apply` writes
//! the tunnel as a wg-quick file in the state directory (whose ACL admits only SYSTEM and
//! Administrators) and installs it with `wireguard.exe /installtunnelservice PATH` (a service
//! `WireGuardTunnel$<name>` that WireGuard keeps up); `remove` uninstalls it; `observe` asks
//! `wg.exe show <name> latest-handshakes`; `kick` does nothing (the service retries handshakes
//! itself). Programs start only through `exec`.

use super::TunnelStatus;
use crate::keys::WgPrivateKey;
use crate::state::{Device, StateDir};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

fn program_dir() -> PathBuf {
    let base = std::env::var_os("ProgramFiles").map_or_else(|| PathBuf::from(r"C:\Program Files"), PathBuf::from);
    base.join("WireGuard")
}

/// `BERQENAS_WIREGUARD_DIR` overrides where wireguard.exe and wg.exe are.
fn tool(name: &str) -> String {
    let dir = std::env::var_os("BERQENAS_WIREGUARD_DIR").map_or_else(program_dir, PathBuf::from);
    dir.join(name).to_string_lossy().into_owned()
}

/// The tunnel name is the file's stem, so the file is named after the interface.
fn conf_path(dir: &StateDir, d: &Device) -> PathBuf {
    dir.path(&format!("{}.conf", d.interface))
}

pub async fn apply(dir: &StateDir, d: &Device, key: &WgPrivateKey) -> anyhow::Result<()> {
    let text = crate::export::wg_quick(d, key)?;
    let path = conf_path(dir, d);
    let unchanged = std::fs::read_to_string(&path).is_ok_and(|old| old == text);
    if unchanged && observe(d).await?.up {
        return Ok(());
    }
    berqenas_common::files::write_atomic(&path, text.as_bytes(), 0o600)
        .with_context(|| format!("write {}", path.display()))?;
    let wireguard = tool("wireguard.exe");
    // Installing over an installed tunnel fails; a missing one makes uninstall fail: ignore it.
    let _ = crate::exec::run(&wireguard, &["/uninstalltunnelservice", &d.interface], Duration::from_secs(30)).await;
    let path = path.to_string_lossy().into_owned();
    crate::exec::run(&wireguard, &["/installtunnelservice", &path], Duration::from_secs(30)).await?;
    Ok(())
}

pub async fn remove(dir: &StateDir, d: &Device) -> anyhow::Result<()> {
    crate::exec::run(&tool("wireguard.exe"), &["/uninstalltunnelservice", &d.interface], Duration::from_secs(30))
        .await?;
    let _ = std::fs::remove_file(conf_path(dir, d));
    Ok(())
}

pub async fn observe(d: &Device) -> anyhow::Result<TunnelStatus> {
    let Ok(out) =
        crate::exec::run(&tool("wg.exe"), &["show", &d.interface, "latest-handshakes"], Duration::from_secs(10)).await
    else {
        return Ok(TunnelStatus::default());
    };
    let line = out.lines().find(|l| l.starts_with(&d.tunnel.gateway_public_key));
    let last_handshake =
        line.and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse::<u64>().ok()).filter(|s| *s > 0);
    Ok(TunnelStatus { up: line.is_some(), last_handshake })
}

/// Nothing: the WireGuard tunnel service owns the session (and its handshake retries); re-setting
/// its peer from outside would fight the service. `up` still waits for and reports the handshake.
pub async fn kick(_: &Device) -> anyhow::Result<()> {
    Ok(())
}
