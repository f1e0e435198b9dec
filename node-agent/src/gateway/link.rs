//! Links and addresses of the tenant interfaces through rtnetlink (never `ip`): observe the
//! owned links (`bqt*`) of this network namespace with their IPv4 addresses, create a kernel
//! WireGuard link, set MTU and up, add and remove addresses, delete a link. The connected route
//! of the tenant's subnet comes with its address (`gateway_address/prefix`). Only names
//! `plan::owned` accepts are ever changed.

use super::plan::{owned, LinkState};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::AddressFamily;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("netlink: {what}: {error}")]
    Netlink {
        what: String,
        #[source]
        error: rtnetlink::Error,
    },
    #[error("{0} is not an interface the agent owns")]
    NotOwned(String),
    #[error("interface {0} does not exist")]
    Missing(String),
}

/// An owned link as observed, with what kind of device it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: LinkState,
    /// `wireguard` (kernel), `tun` (wireguard-go), or something else.
    pub kind: Option<String>,
}

/// One rtnetlink connection, for one pass.
pub struct Links {
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Links {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |error| LinkError::Netlink { what, error }
}

impl Links {
    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn connect() -> Result<Self, LinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
        Ok(Self { handle, connection: tokio::spawn(connection) })
    }

    /// Every owned link by name, with its IPv4 addresses.
    pub async fn observe(&self) -> Result<BTreeMap<String, Observed>, LinkError> {
        let mut links = BTreeMap::new();
        let mut dump = self.handle.clone().link().get().execute();
        while let Some(msg) = dump.try_next().await.map_err(nl("list links"))? {
            let Some(name) = name_of(&msg) else { continue };
            if !owned(&name) {
                continue;
            }
            let mut mtu = 0;
            let mut kind = None;
            for attr in &msg.attributes {
                match attr {
                    LinkAttribute::Mtu(m) => mtu = *m,
                    LinkAttribute::LinkInfo(infos) => {
                        for info in infos {
                            if let LinkInfo::Kind(k) = info {
                                kind = Some(kind_name(k));
                            }
                        }
                    }
                    _ => {}
                }
            }
            let state = LinkState {
                index: msg.header.index,
                up: msg.header.flags.contains(LinkFlags::Up),
                mtu,
                addresses: Vec::new(),
            };
            links.insert(name, Observed { state, kind });
        }
        let by_index: BTreeMap<u32, String> = links.iter().map(|(n, l)| (l.state.index, n.clone())).collect();
        let mut dump = self.handle.address().get().execute();
        while let Some(msg) = dump.try_next().await.map_err(nl("list addresses"))? {
            let Some(name) = by_index.get(&msg.header.index) else { continue };
            if msg.header.family != AddressFamily::Inet {
                continue;
            }
            let address = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(v4)) => Some(*v4),
                _ => None,
            });
            let address = address.or_else(|| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(v4)) => Some(*v4),
                    _ => None,
                })
            });
            if let (Some(address), Some(link)) = (address, links.get_mut(name)) {
                link.state.addresses.push((address, msg.header.prefix_len));
            }
        }
        Ok(links)
    }

    async fn index(&self, name: &str) -> Result<u32, LinkError> {
        if !owned(name) {
            return Err(LinkError::NotOwned(name.to_string()));
        }
        let mut dump = self.handle.clone().link().get().match_name(name.to_string()).execute();
        match dump.try_next().await {
            Ok(Some(msg)) => Ok(msg.header.index),
            Ok(None) => Err(LinkError::Missing(name.to_string())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => {
                Err(LinkError::Missing(name.to_string()))
            }
            Err(e) => Err(nl(format!("find {name}"))(e)),
        }
    }

    /// Creates a kernel WireGuard link named `name`.
    pub async fn create_wireguard(&self, name: &str) -> Result<(), LinkError> {
        if !owned(name) {
            return Err(LinkError::NotOwned(name.to_string()));
        }
        let msg = rtnetlink::LinkWireguard::new(name).build();
        self.handle.link().add(msg).execute().await.map_err(nl(format!("create {name}")))
    }

    /// Sets the MTU and brings the link up.
    pub async fn up(&self, name: &str, mtu: u32) -> Result<(), LinkError> {
        let index = self.index(name).await?;
        let msg = rtnetlink::LinkUnspec::new_with_index(index).mtu(mtu).up().build();
        self.handle.link().set(msg).execute().await.map_err(nl(format!("set {name} up")))
    }

    pub async fn add_address(&self, name: &str, address: Ipv4Addr, prefix_len: u8) -> Result<(), LinkError> {
        let index = self.index(name).await?;
        self.handle
            .address()
            .add(index, IpAddr::V4(address), prefix_len)
            .execute()
            .await
            .map_err(nl(format!("add {address}/{prefix_len} to {name}")))
    }

    pub async fn remove_address(&self, name: &str, address: Ipv4Addr, prefix_len: u8) -> Result<(), LinkError> {
        let index = self.index(name).await?;
        let mut dump = self.handle.address().get().set_link_index_filter(index).execute();
        while let Some(msg) = dump.try_next().await.map_err(nl(format!("list addresses of {name}")))? {
            let matches = msg.header.prefix_len == prefix_len
                && msg.attributes.iter().any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(v)) if *v == address));
            if matches {
                return self
                    .handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(nl(format!("remove {address}/{prefix_len} from {name}")));
            }
        }
        Ok(())
    }

    /// Deletes the owned link `name`; a link already gone is fine.
    pub async fn delete(&self, name: &str) -> Result<(), LinkError> {
        let index = match self.index(name).await {
            Ok(i) => i,
            Err(LinkError::Missing(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.handle.clone().link().del(index).execute().await.map_err(nl(format!("delete {name}")))
    }
}

fn name_of(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Wireguard => "wireguard".into(),
        InfoKind::Tun => "tun".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// ENODEV: netlink's answer for a link name that does not exist.
const fn libc_enodev() -> i32 {
    19
}
