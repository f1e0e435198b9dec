//! The agent's view of a tenant it must realise, converted from the wire type at the boundary.
//! tidy: long because every part of the wire assignment (db, gateway, realtime) is converted and
//! validated at this one boundary, so nothing past it sees a string where a type belongs.

use berqenas_common::net::{DomainName, Ipv4Cidr, PortRange, WgKey};
pub use berqenas_common::tenancy::{AccessMode, DbType, Isolation};
use berqenas_proto::node as pb;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// One tenant as this node must realise it: the part for each role the node has for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub name: String,
    pub revision: u64,
    pub roles: Vec<Role>,
    pub lifecycle: Lifecycle,
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<DbSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,
}

/// What the db role realises for a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbSpec {
    pub db_type: DbType,
    pub isolation: Isolation,
    pub quota_bytes: u64,
    pub connection_limit: u32,
    pub events_per_min: u32,
    pub access_mode: AccessMode,
    /// The tenant's VPN subnet, admitted by pg_hba for vpn-only and hybrid tenants.
    pub vpn_subnet: String,
    pub vpn_enabled: bool,
    pub public_api: bool,
    pub ddl_enabled: bool,
    /// SCRAM-SHA-256 verifier (PostgreSQL) or login hash (SQL Server) of the tenant's password.
    pub password_verifier: String,
    /// Realtime: the devices that may publish events (ids as in their certificates).
    #[serde(default)]
    pub devices: Vec<String>,
    /// Realtime: the customer keys that may subscribe to the tenant's events.
    #[serde(default)]
    pub subscriber_keys: Vec<SubscriberKey>,
    /// Realtime: the devices (also in `devices`) enrolled in public mode, with the fingerprint
    /// recorded at enrollment their publishes must match.
    #[serde(default)]
    pub public_devices: Vec<PublicDevice>,
}

/// A device enrolled in public mode (no VPN): its publishes must carry a customer key of its
/// tenant and a live fingerprint matching this one (lowercase SHA-256 hex each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicDevice {
    pub id: String,
    pub mac_hashes: Vec<String>,
    /// Empty when the device knew no machine id.
    pub machine_id_hash: String,
}

/// A customer API key as a db node sees it: its id (16 hex) and the SHA-256 hex of its secret
/// (64 hex). The secret itself never reaches the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberKey {
    pub id: String,
    pub secret_hash: String,
    /// Unix milliseconds after which the key is refused; 0 = never expires.
    pub expires_at_ms: u64,
}

/// What the gateway role realises for a tenant. Every value is parsed (addresses, networks,
/// keys, names), so renderers write them into nft or netlink without further checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySpec {
    pub vpn_subnet: Ipv4Cidr,
    pub gateway_address: Ipv4Addr,
    /// `bqt{index}`.
    pub interface: String,
    pub listen_port: u16,
    /// Bits per second each way; 0 = no limit.
    #[serde(default)]
    pub bandwidth_bps: u64,
    #[serde(default)]
    pub device_to_device: bool,
    #[serde(default)]
    pub peers: Vec<PeerSpec>,
    #[serde(default)]
    pub exposures: Vec<ExposureSpec>,
    /// In evaluation order (ascending position).
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    #[serde(default)]
    pub blocked_domains: Vec<DomainName>,
}

/// A device of the tenant: a WireGuard peer whose AllowedIPs is `address/32`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSpec {
    pub id: String,
    pub name: String,
    pub public_key: WgKey,
    pub address: Ipv4Addr,
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
    /// Firewall rules only.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceMode {
    Nat,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Allow,
    Deny,
}

/// `public_address:public_port` forwarded to `device_address:port` through the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposureSpec {
    pub id: String,
    pub device_id: String,
    pub device_address: Ipv4Addr,
    pub port: u16,
    pub public_port: u16,
    /// Tcp or Udp.
    pub protocol: Protocol,
    /// Empty: anyone.
    pub allow: Vec<Ipv4Cidr>,
    /// New connections per second; 0 = unlimited.
    pub rate_per_second: u32,
    pub source: SourceMode,
    pub enabled: bool,
}

/// A tenant firewall rule; see the proto's `FirewallRule` for the semantics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    pub id: String,
    pub position: u32,
    pub verdict: Verdict,
    /// Empty: any.
    pub sources: Vec<Ipv4Cidr>,
    /// Empty: any.
    pub destinations: Vec<Ipv4Cidr>,
    /// None: any port.
    pub ports: Option<PortRange>,
    pub protocol: Protocol,
    pub vpn_required: bool,
}

/// A tenant as a db driver sees it: nothing of its gateway part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbTenant {
    pub name: String,
    pub revision: u64,
    pub lifecycle: Lifecycle,
    pub index: u32,
    pub db: DbSpec,
}

/// A tenant as a gateway driver sees it: nothing of its database part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayTenant {
    pub name: String,
    pub revision: u64,
    pub lifecycle: Lifecycle,
    pub index: u32,
    pub gateway: GatewaySpec,
}

/// What every driver needs of the tenants it is handed.
pub trait Tenant: Clone + Send + Sync + Serialize + 'static {
    fn name(&self) -> &str;
    fn lifecycle(&self) -> Lifecycle;
    /// The tenant runs: its users may log in, its devices connect.
    fn runs(&self) -> bool {
        self.lifecycle() == Lifecycle::Run
    }
}

macro_rules! tenant {
    ($($t:ty),*) => {$(
        impl Tenant for $t {
            fn name(&self) -> &str {
                &self.name
            }
            fn lifecycle(&self) -> Lifecycle {
                self.lifecycle
            }
        }
    )*};
}
tenant!(Assignment, DbTenant, GatewayTenant);

impl Assignment {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The db part, when this node has the db role for the tenant.
    pub fn db_tenant(&self) -> Option<DbTenant> {
        let db = self.db.clone().filter(|_| self.has_role(Role::Db))?;
        Some(DbTenant {
            name: self.name.clone(),
            revision: self.revision,
            lifecycle: self.lifecycle,
            index: self.index,
            db,
        })
    }

    /// The gateway part, when this node has the gateway role for the tenant.
    pub fn gateway_tenant(&self) -> Option<GatewayTenant> {
        let gateway = self.gateway.clone().filter(|_| self.has_role(Role::Gateway))?;
        Some(GatewayTenant {
            name: self.name.clone(),
            revision: self.revision,
            lifecycle: self.lifecycle,
            index: self.index,
            gateway,
        })
    }
}

/// A part of a tenant a node provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Gateway,
    Db,
}

/// What the node must do for the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    Run,
    Suspended,
    Deleted,
}

/// Why a wire assignment was refused: which field, never its raw value (it may be anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("tenant name")]
    Name,
    #[error("lifecycle")]
    Lifecycle,
    #[error("roles")]
    Roles,
    #[error("listen port")]
    ListenPort,
    #[error("interface")]
    Interface,
    #[error("database type")]
    DbType,
    #[error("isolation")]
    Isolation,
    #[error("access mode")]
    AccessMode,
    #[error("password verifier")]
    PasswordVerifier,
    #[error("role part missing")]
    MissingPart,
    #[error("vpn subnet")]
    Subnet,
    #[error("peer")]
    Peer,
    #[error("exposure")]
    Exposure,
    #[error("firewall rule")]
    Rule,
    #[error("blocked domain")]
    Domain,
    #[error("realtime device")]
    Device,
    #[error("subscriber key")]
    SubscriberKey,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant assignment {name:?}: {reason}")]
pub struct InvalidAssignment {
    /// The name as received, cut to 64 characters.
    pub name: String,
    pub reason: Invalid,
}

pub(crate) fn name_ok(n: &str) -> bool {
    let mut chars = n.chars();
    (2..=31).contains(&n.len())
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl TryFrom<pb::TenantAssignment> for Assignment {
    type Error = InvalidAssignment;

    fn try_from(value: pb::TenantAssignment) -> Result<Self, Self::Error> {
        // Destructured exhaustively: a new field is a compile error until handled here.
        let pb::TenantAssignment { name, revision, roles, lifecycle, index, db, gateway } = value;
        let bad = |reason: Invalid| InvalidAssignment { name: name.chars().take(64).collect(), reason };
        if !name_ok(&name) {
            return Err(bad(Invalid::Name));
        }
        let lifecycle = match pb::Lifecycle::try_from(lifecycle) {
            Ok(pb::Lifecycle::Run) => Lifecycle::Run,
            Ok(pb::Lifecycle::Suspended) => Lifecycle::Suspended,
            Ok(pb::Lifecycle::Deleted) => Lifecycle::Deleted,
            Ok(pb::Lifecycle::Unspecified) | Err(_) => return Err(bad(Invalid::Lifecycle)),
        };
        let roles: Vec<Role> = roles
            .into_iter()
            .map(|r| match pb::Role::try_from(r) {
                Ok(pb::Role::Gateway) => Ok(Role::Gateway),
                Ok(pb::Role::Db) => Ok(Role::Db),
                Ok(pb::Role::Unspecified) | Err(_) => Err(bad(Invalid::Roles)),
            })
            .collect::<Result<_, _>>()?;
        if roles.is_empty() {
            return Err(bad(Invalid::Roles));
        }
        // Each role the node has for the tenant comes with its part, and only those.
        if roles.contains(&Role::Db) != db.is_some() || roles.contains(&Role::Gateway) != gateway.is_some() {
            return Err(bad(Invalid::MissingPart));
        }
        let db = db.map(|d| db_spec(d).map_err(bad)).transpose()?;
        let gateway = gateway.map(|g| gateway_spec(g).map_err(bad)).transpose()?;
        Ok(Assignment { name, revision, roles, lifecycle, index, db, gateway })
    }
}

/// An IPv4 network in canonical form (`198.18.1.0/24`: no host bits, nothing else).
fn subnet_ok(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else { return false };
    let (Ok(addr), Ok(len)) = (addr.parse::<std::net::Ipv4Addr>(), len.parse::<u8>()) else { return false };
    let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
    len <= 32 && u32::from(addr) & !mask == 0 && s == format!("{addr}/{len}")
}

fn db_spec(d: pb::DbAssignment) -> Result<DbSpec, Invalid> {
    let pb::DbAssignment {
        db_type,
        isolation,
        quota_bytes,
        connection_limit,
        events_per_min,
        access_mode,
        vpn_subnet,
        vpn_enabled,
        public_api,
        password_verifier,
        ddl_enabled,
        devices,
        subscriber_keys,
        // Backups are the scheduler's (`backup/schedule.rs`), taken out in `runtime::accept`:
        // they carry data keys, which never reach applied.json.
        backup: _,
    } = d;
    let db_type = match pb::DbType::try_from(db_type) {
        Ok(pb::DbType::Postgres) => DbType::Postgres,
        Ok(pb::DbType::Mssql) => DbType::Mssql,
        Ok(pb::DbType::Unspecified) | Err(_) => return Err(Invalid::DbType),
    };
    let isolation = match pb::Isolation::try_from(isolation) {
        Ok(pb::Isolation::Schema) => Isolation::Schema,
        Ok(pb::Isolation::Database) => Isolation::Database,
        Ok(pb::Isolation::Unspecified) | Err(_) => return Err(Invalid::Isolation),
    };
    let access_mode = match pb::AccessMode::try_from(access_mode) {
        Ok(pb::AccessMode::Public) => AccessMode::Public,
        Ok(pb::AccessMode::VpnOnly) => AccessMode::VpnOnly,
        Ok(pb::AccessMode::Hybrid) => AccessMode::Hybrid,
        Ok(pb::AccessMode::Unspecified) | Err(_) => return Err(Invalid::AccessMode),
    };
    if !password_verifier.is_empty() && !is_verifier(&password_verifier) && !is_mssql_hash(&password_verifier) {
        return Err(Invalid::PasswordVerifier);
    }
    if !subnet_ok(&vpn_subnet) {
        return Err(Invalid::Subnet);
    }
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut public_devices = Vec::new();
    let devices = devices
        .into_iter()
        .map(|d| {
            let pb::RealtimeDevice { id, name: _, mac_hashes, machine_id_hash, public } = d;
            if !device_id_ok(&id) {
                return Err(Invalid::Device);
            }
            if public {
                let fingerprint_ok = mac_hashes.iter().all(|h| hex(h, 64))
                    && (machine_id_hash.is_empty() || hex(&machine_id_hash, 64))
                    && (!mac_hashes.is_empty() || !machine_id_hash.is_empty());
                if !fingerprint_ok {
                    return Err(Invalid::Device);
                }
                public_devices.push(PublicDevice {
                    id: id.clone(),
                    mac_hashes: mac_hashes.iter().map(|h| h.to_ascii_lowercase()).collect(),
                    machine_id_hash: machine_id_hash.to_ascii_lowercase(),
                });
            }
            Ok(id)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let subscriber_keys = subscriber_keys
        .into_iter()
        .map(|k| {
            let pb::SubscriberKey { id, secret_hash, expires_at_ms } = k;
            (hex(&id, 16) && hex(&secret_hash, 64))
                .then(|| SubscriberKey { id, secret_hash: secret_hash.to_ascii_lowercase(), expires_at_ms })
                .ok_or(Invalid::SubscriberKey)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DbSpec {
        db_type,
        isolation,
        quota_bytes,
        connection_limit,
        events_per_min,
        access_mode,
        vpn_subnet,
        vpn_enabled,
        public_api,
        ddl_enabled,
        password_verifier,
        devices,
        subscriber_keys,
        public_devices,
    })
}

/// A device id as certificates carry it (`berqenas://device/{tenant}/{id}`): 1–64 of
/// `[A-Za-z0-9_-]`.
pub fn device_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn gateway_spec(g: pb::GatewayAssignment) -> Result<GatewaySpec, Invalid> {
    let pb::GatewayAssignment {
        vpn_subnet,
        gateway_address,
        interface,
        listen_port,
        bandwidth_bps,
        device_to_device,
        peers,
        exposures,
        rules,
        blocked_domains,
    } = g;
    let listen_port = u16::try_from(listen_port).map_err(|_| Invalid::ListenPort)?;
    let iface_ok =
        interface.strip_prefix("bqt").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !iface_ok || interface.len() > 15 {
        return Err(Invalid::Interface);
    }
    let vpn_subnet: Ipv4Cidr = vpn_subnet.parse().map_err(|_| Invalid::Subnet)?;
    let gateway_address: Ipv4Addr = gateway_address.parse().map_err(|_| Invalid::Subnet)?;
    if !vpn_subnet.contains(gateway_address) {
        return Err(Invalid::Subnet);
    }
    let in_subnet = |a: &str, e: Invalid| {
        a.parse::<Ipv4Addr>().ok().filter(|ip| vpn_subnet.contains(*ip) && *ip != gateway_address).ok_or(e)
    };
    let cidrs = |v: Vec<String>, e: Invalid| {
        v.iter().map(|c| c.parse::<Ipv4Cidr>().map_err(|_| e)).collect::<Result<Vec<_>, _>>()
    };
    let id_ok = |id: &str| {
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let protocol = |p: i32, any: bool, e: Invalid| match pb::Protocol::try_from(p) {
        Ok(pb::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Ok(Protocol::Udp),
        Ok(pb::Protocol::Any) if any => Ok(Protocol::Any),
        _ => Err(e),
    };
    let peers = peers
        .into_iter()
        .map(|p| {
            if !id_ok(&p.id) {
                return Err(Invalid::Peer);
            }
            Ok(PeerSpec {
                public_key: p.public_key.parse().map_err(|_| Invalid::Peer)?,
                address: in_subnet(&p.address, Invalid::Peer)?,
                id: p.id,
                name: p.name.chars().filter(|c| !c.is_control()).take(64).collect(),
                enabled: p.enabled,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let exposures = exposures
        .into_iter()
        .map(|x| {
            if !id_ok(&x.id) || !id_ok(&x.device_id) {
                return Err(Invalid::Exposure);
            }
            let port = |p: u32| u16::try_from(p).ok().filter(|p| *p != 0).ok_or(Invalid::Exposure);
            Ok(ExposureSpec {
                device_address: in_subnet(&x.device_address, Invalid::Exposure)?,
                port: port(x.port)?,
                public_port: port(x.public_port)?,
                protocol: protocol(x.protocol, false, Invalid::Exposure)?,
                allow: cidrs(x.allow, Invalid::Exposure)?,
                rate_per_second: x.rate_per_second,
                source: match pb::SourceMode::try_from(x.source) {
                    Ok(pb::SourceMode::Nat) => SourceMode::Nat,
                    Ok(pb::SourceMode::Keep) => SourceMode::Keep,
                    _ => return Err(Invalid::Exposure),
                },
                enabled: x.enabled,
                id: x.id,
                device_id: x.device_id,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut rules = rules
        .into_iter()
        .map(|r| {
            if !id_ok(&r.id) {
                return Err(Invalid::Rule);
            }
            let protocol = protocol(r.protocol, true, Invalid::Rule)?;
            let ports = match (r.port_first, r.port_last) {
                (0, 0) => None,
                (a, b) => {
                    let p = |v: u32| u16::try_from(v).map_err(|_| Invalid::Rule);
                    Some(PortRange::new(p(a)?, p(b)?).map_err(|_| Invalid::Rule)?)
                }
            };
            if ports.is_some() && protocol == Protocol::Any {
                return Err(Invalid::Rule);
            }
            Ok(RuleSpec {
                position: r.position,
                verdict: match pb::Verdict::try_from(r.verdict) {
                    Ok(pb::Verdict::Allow) => Verdict::Allow,
                    Ok(pb::Verdict::Deny) => Verdict::Deny,
                    _ => return Err(Invalid::Rule),
                },
                sources: cidrs(r.sources, Invalid::Rule)?,
                destinations: cidrs(r.destinations, Invalid::Rule)?,
                ports,
                protocol,
                vpn_required: r.vpn_required,
                id: r.id,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.sort_by_key(|r| r.position);
    let blocked_domains = blocked_domains
        .iter()
        .map(|d| d.parse::<DomainName>().map_err(|_| Invalid::Domain))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GatewaySpec {
        vpn_subnet,
        gateway_address,
        interface,
        listen_port,
        bandwidth_bps,
        device_to_device,
        peers,
        exposures,
        rules,
        blocked_domains,
    })
}

/// True when `v` is exactly a SQL Server 2012+ login hash (`0x0200`, 4-byte salt, SHA-512, in
/// hex), so it can be written into `CREATE LOGIN … HASHED` as a binary literal.
pub fn is_mssql_hash(v: &str) -> bool {
    v.len() == 6 + 8 + 128 && v.starts_with("0x0200") && v[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// True when `v` has exactly the SCRAM-SHA-256 verifier shape, so it can be written into DDL as
/// a literal without any escaping question.
pub fn is_verifier(v: &str) -> bool {
    let Some(rest) = v.strip_prefix("SCRAM-SHA-256$4096:") else { return false };
    let b64 = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    match rest.split_once('$').and_then(|(salt, keys)| keys.split_once(':').map(|(a, b)| (salt, a, b))) {
        Some((salt, stored, server)) => b64(salt) && b64(stored) && b64(server),
        None => false,
    }
}

/// A valid db-role PostgreSQL tenant for unit tests; tests override what they exercise.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> DbTenant {
    DbTenant {
        name: name.into(),
        revision: 1,
        lifecycle: Lifecycle::Run,
        index: 1,
        db: DbSpec {
            db_type: DbType::Postgres,
            isolation: Isolation::Schema,
            quota_bytes: 1,
            connection_limit: 5,
            events_per_min: 1,
            access_mode: AccessMode::VpnOnly,
            vpn_subnet: "198.18.1.0/24".into(),
            vpn_enabled: true,
            public_api: false,
            ddl_enabled: false,
            password_verifier: String::new(),
            devices: Vec::new(),
            subscriber_keys: Vec::new(),
            public_devices: Vec::new(),
        },
    }
}

#[cfg(test)]
#[path = "assignment_tests.rs"]
mod tests;
