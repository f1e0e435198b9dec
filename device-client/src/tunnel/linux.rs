//! The tunnel on Linux: a WireGuard interface (`bqd0` unless enrollment named another) through
//! `wireguard-control` — the kernel module when the host has it, `wireguard-go` (started
//! through `exec`) otherwise — with the device's address /32, a route to the tenant subnet and
//! one peer, the gateway. With `source_keep`, replies from the tunnel address go back through
//! the tunnel: a default route in table 51820 and a rule `from ADDRESS lookup 51820`. Links,
//! addresses, routes and rules through rtnetlink (never `ip`); only the named interface is
//! ever touched.

use super::TunnelStatus;
use crate::export::SOURCE_KEEP_TABLE;
use crate::keys::WgPrivateKey;
use crate::state::{Device, StateDir};
use anyhow::{bail, Context};
use futures::TryStreamExt;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};
use wireguard_control::{Backend, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};

/// Priority of the source-keep rule (before `main` at 32766).
const RULE_PRIORITY: u32 = 10_000;
const MTU: u32 = 1420;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
/// Where `kick`'s datagram goes (RFC 863 discard).
const DISCARD_PORT: u16 = 9;

fn backend() -> Backend {
    match std::env::var("BERQENAS_DEVICE_WG").as_deref() {
        Ok("userspace") => return Backend::Userspace,
        Ok("kernel") => return Backend::Kernel,
        _ => {}
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let module = PathBuf::from(format!("/lib/modules/{}/kernel/drivers/net/wireguard", release.trim()));
    if Path::new("/sys/module/wireguard").exists() || std::fs::read_dir(module).is_ok_and(|mut d| d.next().is_some()) {
        Backend::Kernel
    } else {
        Backend::Userspace
    }
}

fn iface(name: &str) -> anyhow::Result<InterfaceName> {
    name.parse().map_err(|_| anyhow::anyhow!("invalid interface name {name:?}"))
}

fn socket(name: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{name}.sock"))
}

fn socket_answers(name: &str) -> bool {
    std::os::unix::net::UnixStream::connect(socket(name)).is_ok()
}

fn netlink() -> anyhow::Result<Handle> {
    let (connection, handle, _) = rtnetlink::new_connection().context("open a netlink socket")?;
    tokio::spawn(connection);
    Ok(handle)
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// Ok for success or "already there".
fn tolerate_exists(r: Result<(), rtnetlink::Error>, what: &str) -> anyhow::Result<()> {
    match r {
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        other => other.with_context(|| what.to_string()),
    }
}

async fn link_index(handle: &Handle, name: &str) -> anyhow::Result<Option<u32>> {
    let mut dump = handle.link().get().match_name(name.to_string()).execute();
    match dump.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("find {name}")),
    }
}

async fn create(handle: &Handle, name: &str, backend: Backend) -> anyhow::Result<u32> {
    match backend {
        Backend::Kernel => {
            let msg = rtnetlink::LinkWireguard::new(name).build();
            tolerate_exists(handle.link().add(msg).execute().await, &format!("create {name}"))?;
        }
        Backend::Userspace => {
            // A socket left by a killed wireguard-go would make it refuse to start.
            let _ = std::fs::remove_file(socket(name));
            crate::exec::run("wireguard-go", &[name], Duration::from_secs(10)).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !socket_answers(name) {
                if tokio::time::Instant::now() > deadline {
                    bail!("wireguard-go did not open its control socket for {name}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    link_index(handle, name).await?.with_context(|| format!("{name} vanished right after it was made"))
}

async fn resolve(endpoint: &str) -> anyhow::Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host(endpoint).await.with_context(|| format!("resolve {endpoint}"))?;
    addrs.find(SocketAddr::is_ipv4).with_context(|| format!("{endpoint} has no IPv4 address"))
}

fn gateway_key(d: &Device) -> anyhow::Result<Key> {
    Key::from_base64(&d.tunnel.gateway_public_key).map_err(|_| anyhow::anyhow!("the stored gateway key is invalid"))
}

/// The gateway as `d` describes it: endpoint, allowed addresses (everything with source keep),
/// keepalive.
fn gateway_peer(d: &Device, gateway: &Key, endpoint: SocketAddr) -> anyhow::Result<PeerConfigBuilder> {
    let t = &d.tunnel;
    let (allowed, allowed_len) = if t.source_keep { (Ipv4Addr::UNSPECIFIED, 0) } else { t.subnet_parts()? };
    let keepalive = u16::try_from(t.keepalive_seconds).unwrap_or(u16::MAX);
    let peer = PeerConfigBuilder::new(gateway)
        .set_endpoint(endpoint)
        .replace_allowed_ips()
        .add_allowed_ip(IpAddr::V4(allowed), allowed_len);
    Ok(if keepalive > 0 {
        peer.set_persistent_keepalive_interval(keepalive)
    } else {
        peer.unset_persistent_keepalive()
    })
}

/// A fresh handshake with the gateway: the peer removed and added again (a new peer has no
/// pending handshake, so WireGuard initiates at once instead of after REKEY_TIMEOUT; its
/// keepalive is sent as soon as it is set), then one UDP datagram to the gateway address
/// (discard port) through the tunnel for a peer without keepalive.
pub async fn kick(d: &Device) -> anyhow::Result<()> {
    let name = d.interface.as_str();
    let backend = backend();
    if backend == Backend::Userspace && !socket_answers(name) {
        bail!("{name} is not running");
    }
    let interface = iface(name)?;
    let gateway = gateway_key(d)?;
    let add = DeviceUpdate::new().add_peer(gateway_peer(d, &gateway, resolve(&d.tunnel.endpoint).await?)?);
    let remove = DeviceUpdate::new().remove_peer_by_key(&gateway);
    tokio::task::spawn_blocking(move || {
        remove.apply(&interface, backend).and_then(|()| add.apply(&interface, backend))
    })
    .await
    .context("wireguard task")?
    .with_context(|| format!("re-set the gateway peer on {name}"))?;
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.context("bind a UDP socket")?;
    // Best effort: the packet only has to reach WireGuard's queue (an unreachable reply is fine).
    let _ = socket.send_to(&[0], (d.tunnel.gateway_address, DISCARD_PORT)).await;
    Ok(())
}

/// Makes the tunnel match `d`: creates what is missing, changes what differs, keeps the
/// gateway's session when its key is unchanged. Idempotent.
pub async fn apply(_: &StateDir, d: &Device, key: &WgPrivateKey) -> anyhow::Result<()> {
    let name = d.interface.as_str();
    let t = &d.tunnel;
    if !t.ready() {
        bail!("the gateway has not reported its key and endpoint yet");
    }
    let backend = backend();
    let handle = netlink()?;
    let index = match link_index(&handle, name).await? {
        Some(i) if backend == Backend::Kernel || socket_answers(name) => i,
        Some(i) => {
            // A tun link whose wireguard-go died: start over.
            handle.link().del(i).execute().await.with_context(|| format!("delete the stale {name}"))?;
            create(&handle, name, backend).await?
        }
        None => create(&handle, name, backend).await?,
    };
    let interface = iface(name)?;
    let gateway = gateway_key(d)?;
    let endpoint = resolve(&t.endpoint).await?;
    let existing = tokio::task::spawn_blocking(move || wireguard_control::Device::get(&interface, backend))
        .await
        .context("wireguard task")?
        .with_context(|| format!("read {name}"))?;
    let mut update = DeviceUpdate::new().set_private_key(Key(key.bytes()));
    for p in &existing.peers {
        if p.config.public_key != gateway {
            update = update.remove_peer_by_key(&p.config.public_key);
        }
    }
    update = update.add_peer(gateway_peer(d, &gateway, endpoint)?);
    tokio::task::spawn_blocking(move || update.apply(&interface, backend))
        .await
        .context("wireguard task")?
        .with_context(|| format!("configure {name}"))?;

    tolerate_exists(
        handle.address().add(index, IpAddr::V4(t.address), 32).replace().execute().await,
        &format!("add {}/32 to {name}", t.address),
    )?;
    let up = rtnetlink::LinkUnspec::new_with_index(index).mtu(MTU).up().build();
    handle.link().set(up).execute().await.with_context(|| format!("set {name} up"))?;
    let (net, len) = t.subnet_parts()?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(net, len).output_interface(index).build();
    handle.route().add(route).replace().execute().await.with_context(|| format!("route {} via {name}", t.subnet))?;
    remove_source_rules(&handle, None).await?;
    if t.source_keep {
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .output_interface(index)
            .table_id(SOURCE_KEEP_TABLE)
            .build();
        handle.route().add(default).replace().execute().await.context("default route of the source-keep table")?;
        let rule = handle
            .rule()
            .add()
            .v4()
            .source_prefix(t.address, 32)
            .table_id(SOURCE_KEEP_TABLE)
            .priority(RULE_PRIORITY)
            .action(RuleAction::ToTable);
        tolerate_exists(rule.execute().await, "add the source-keep rule")?;
    }
    Ok(())
}

/// Deletes our source-keep rules (those pointing at our table), all of them or those from
/// `only`.
async fn remove_source_rules(handle: &Handle, only: Option<Ipv4Addr>) -> anyhow::Result<()> {
    let mut dump = handle.rule().get(IpVersion::V4).execute();
    let mut ours = Vec::new();
    while let Some(msg) = dump.try_next().await.context("list rules")? {
        let table = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                RuleAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(msg.header.table));
        let source = msg.attributes.iter().find_map(|a| match a {
            RuleAttribute::Source(IpAddr::V4(s)) => Some(*s),
            _ => None,
        });
        let priority = msg.attributes.iter().any(|a| matches!(a, RuleAttribute::Priority(p) if *p == RULE_PRIORITY));
        if table == SOURCE_KEEP_TABLE && priority && only.is_none_or(|o| source == Some(o)) {
            ours.push(msg);
        }
    }
    for msg in ours {
        handle.rule().del(msg).execute().await.context("remove the source-keep rule")?;
    }
    Ok(())
}

/// Deletes the interface (wireguard-go exits with it) and the source-keep rule.
pub async fn remove(_: &StateDir, d: &Device) -> anyhow::Result<()> {
    let handle = netlink()?;
    remove_source_rules(&handle, Some(d.tunnel.address)).await?;
    if let Some(index) = link_index(&handle, &d.interface).await? {
        handle.link().del(index).execute().await.with_context(|| format!("delete {}", d.interface))?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while socket_answers(&d.interface) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !socket_answers(&d.interface) {
        let _ = std::fs::remove_file(socket(&d.interface));
    }
    Ok(())
}

/// Whether the interface is there and configured, and the gateway's last handshake.
pub async fn observe(d: &Device) -> anyhow::Result<TunnelStatus> {
    let handle = netlink()?;
    if link_index(&handle, &d.interface).await?.is_none() {
        return Ok(TunnelStatus::default());
    }
    let backend = backend();
    if backend == Backend::Userspace && !socket_answers(&d.interface) {
        return Ok(TunnelStatus::default());
    }
    let interface = iface(&d.interface)?;
    let device = tokio::task::spawn_blocking(move || wireguard_control::Device::get(&interface, backend))
        .await
        .context("wireguard task")?;
    let Ok(device) = device else { return Ok(TunnelStatus::default()) };
    let gateway = gateway_key(d).ok();
    let peer = device.peers.iter().find(|p| Some(&p.config.public_key) == gateway.as_ref());
    let last_handshake = peer
        .and_then(|p| p.stats.last_handshake_time)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .filter(|s| *s > 0);
    Ok(TunnelStatus { up: peer.is_some(), last_handshake })
}
