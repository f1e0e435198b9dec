//! WireGuard devices through `wireguard-control`: the kernel module where the host has it,
//! `wireguard-go` (started through `host::exec`, one process per interface) where it does not.
//! Reads a device's key, port and peers with their counters; applies one `DeviceUpdate` per
//! interface holding only the changed peers (never `replace_peers`, which would drop every
//! session and reset the counters metering reads).

use super::plan::{DeviceState, PeerState};
use berqenas_common::net::WgKey;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use wireguard_control::{Backend as WgBackend, Device, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};

/// Which WireGuard implementation serves the tenant interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Kernel,
    Userspace,
}

impl Backend {
    /// The kernel module when it is loaded or installed for the running kernel; wireguard-go
    /// otherwise.
    pub fn detect() -> Self {
        if Path::new("/sys/module/wireguard").exists() || module_installed() {
            Backend::Kernel
        } else {
            Backend::Userspace
        }
    }

    /// As reported to the coordinator (`node list`).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        }
    }

    fn wg(self) -> WgBackend {
        match self {
            Backend::Kernel => WgBackend::Kernel,
            Backend::Userspace => WgBackend::Userspace,
        }
    }
}

fn module_installed() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else { return false };
    let dir = PathBuf::from(format!("/lib/modules/{}/kernel/drivers/net/wireguard", release.trim()));
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

#[derive(Debug, thiserror::Error)]
pub enum WgError {
    #[error("invalid interface name {0}")]
    Name(String),
    #[error("{interface}: {error}")]
    Device {
        interface: String,
        #[source]
        error: std::io::Error,
    },
    #[error("{interface}: wireguard-go did not open its control socket within {}", humantime::format_duration(*after))]
    NoSocket { interface: String, after: Duration },
    #[error(transparent)]
    Exec(#[from] crate::host::exec::ExecError),
    #[error("wireguard task failed: {0}")]
    Task(String),
}

fn iface(name: &str) -> Result<InterfaceName, WgError> {
    name.parse().map_err(|_| WgError::Name(name.to_string()))
}

/// wireguard-go's control socket for `name`.
fn socket(name: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{name}.sock"))
}

fn socket_answers(name: &str) -> bool {
    std::os::unix::net::UnixStream::connect(socket(name)).is_ok()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, WgError> {
    // wireguard-control talks to the device synchronously (a netlink or unix socket round trip);
    // a large peer update takes long enough not to hold a runtime thread for it.
    tokio::task::spawn_blocking(f).await.map_err(|e| WgError::Task(e.to_string()))
}

/// The device `name` as it is now, or None when it has no WireGuard device (no socket, no
/// kernel device).
pub async fn observe(backend: Backend, name: &str) -> Result<Option<DeviceState>, WgError> {
    let interface = iface(name)?;
    if backend == Backend::Userspace && !socket_answers(name) {
        return Ok(None);
    }
    let owned = name.to_string();
    let device = blocking(move || Device::get(&interface, backend.wg())).await?;
    let device = match device {
        Ok(d) => d,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Err(error) => return Err(WgError::Device { interface: owned, error }),
    };
    let peers = device
        .peers
        .into_iter()
        .map(|p| {
            let allowed_ips = p
                .config
                .allowed_ips
                .iter()
                .filter_map(|a| match a.address {
                    IpAddr::V4(v4) => Some((v4, a.cidr)),
                    IpAddr::V6(_) => None,
                })
                .collect();
            let state = PeerState {
                allowed_ips,
                endpoint: p.config.endpoint,
                last_handshake: p.stats.last_handshake_time,
                rx_bytes: p.stats.rx_bytes,
                tx_bytes: p.stats.tx_bytes,
            };
            (WgKey::from_bytes(&p.config.public_key.0), state)
        })
        .collect();
    Ok(Some(DeviceState {
        public_key: device.public_key.map(|k| WgKey::from_bytes(&k.0)),
        listen_port: device.listen_port,
        peers,
    }))
}

/// Starts wireguard-go for `name` (it makes the tun device and its control socket, then runs
/// in the background) and waits for its socket to answer. Kernel links are made with rtnetlink.
pub async fn start_userspace(name: &str) -> Result<(), WgError> {
    let _ = iface(name)?;
    if socket_answers(name) {
        return Ok(());
    }
    // A socket left by a killed wireguard-go would make it refuse to start.
    let _ = std::fs::remove_file(socket(name));
    crate::host::exec::run("wireguard-go", &[name], None, Duration::from_secs(10)).await?;
    let after = Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + after;
    // Polled often: a new interface's pass waits for it (wireguard-go opens it within ms).
    while !socket_answers(name) {
        if tokio::time::Instant::now() > deadline {
            return Err(WgError::NoSocket { interface: name.to_string(), after });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// What to change on one device; built from plan steps, applied in one call.
#[derive(Default)]
pub struct Update {
    private_key: Option<Key>,
    listen_port: Option<u16>,
    add: Vec<(WgKey, Ipv4Addr)>,
    update: Vec<(WgKey, Ipv4Addr)>,
    remove: Vec<WgKey>,
}

impl Update {
    /// Peers this update adds, changes and removes.
    pub fn peer_counts(&self) -> (usize, usize, usize) {
        (self.add.len(), self.update.len(), self.remove.len())
    }

    pub fn configure(&mut self, private_key: Key, listen_port: u16) {
        self.private_key = Some(private_key);
        self.listen_port = Some(listen_port);
    }

    pub fn add_peer(&mut self, key: WgKey, address: Ipv4Addr) {
        self.add.push((key, address));
    }

    pub fn update_peer(&mut self, key: WgKey, address: Ipv4Addr) {
        self.update.push((key, address));
    }

    pub fn remove_peer(&mut self, key: WgKey) {
        self.remove.push(key);
    }

    pub fn is_empty(&self) -> bool {
        self.private_key.is_none() && self.add.is_empty() && self.update.is_empty() && self.remove.is_empty()
    }
}

/// Applies `update` to the device `name` in one request.
pub async fn apply(backend: Backend, name: &str, update: Update) -> Result<(), WgError> {
    if update.is_empty() {
        return Ok(());
    }
    let interface = iface(name)?;
    let mut d = DeviceUpdate::new();
    if let Some(k) = update.private_key {
        d = d.set_private_key(k);
    }
    if let Some(p) = update.listen_port {
        d = d.set_listen_port(p);
    }
    let peer = |k: &WgKey| PeerConfigBuilder::new(&Key(k.bytes()));
    for (k, a) in &update.add {
        d = d.add_peer(peer(k).add_allowed_ip(IpAddr::V4(*a), 32));
    }
    for (k, a) in &update.update {
        d = d.add_peer(peer(k).replace_allowed_ips().add_allowed_ip(IpAddr::V4(*a), 32));
    }
    for k in &update.remove {
        d = d.remove_peer_by_key(&Key(k.bytes()));
    }
    let owned = name.to_string();
    blocking(move || d.apply(&interface, backend.wg()))
        .await?
        .map_err(|error| WgError::Device { interface: owned, error })
}

/// After a userspace link is deleted wireguard-go exits: waits (up to 3 s) until its socket no
/// longer answers, so a new wireguard-go for the same name can start, and removes a socket file
/// it left.
pub async fn stopped(name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while socket_answers(name) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !socket_answers(name) {
        let _ = std::fs::remove_file(socket(name));
    }
}
