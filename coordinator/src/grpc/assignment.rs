//! The desired state on the wire: a node's `Assignment`s as `pb::TenantAssignment`, every
//! field of the proto messages named (a new field is a compile error until it is handled).

use crate::state::desired::{self, Assignment};
use berqenas_proto::node as pb;

pub(super) fn to_pb(a: &Assignment, backup_key: Option<&crate::backupkey::ClusterKey>) -> pb::TenantAssignment {
    use crate::state::desired::Lifecycle;
    use crate::state::node::NodeRole;
    use crate::state::tenant::{AccessMode, DbType, Isolation};
    let role = |r: &NodeRole| match r {
        NodeRole::Gateway => pb::Role::Gateway,
        NodeRole::Db => pb::Role::Db,
    };
    pb::TenantAssignment {
        name: a.name.clone(),
        revision: a.revision,
        roles: a.roles.iter().map(|r| role(r).into()).collect(),
        lifecycle: match a.lifecycle {
            Lifecycle::Run => pb::Lifecycle::Run,
            Lifecycle::Suspended => pb::Lifecycle::Suspended,
            Lifecycle::Deleted => pb::Lifecycle::Deleted,
        }
        .into(),
        index: a.index,
        db: a.db.as_ref().map(|d| pb::DbAssignment {
            db_type: match d.db_type {
                DbType::Postgres => pb::DbType::Postgres,
                DbType::Mssql => pb::DbType::Mssql,
            }
            .into(),
            isolation: match d.isolation {
                Isolation::Schema => pb::Isolation::Schema,
                Isolation::Database => pb::Isolation::Database,
            }
            .into(),
            quota_bytes: d.quota_bytes,
            connection_limit: d.connection_limit,
            events_per_min: d.events_per_min,
            access_mode: match d.access_mode {
                AccessMode::Public => pb::AccessMode::Public,
                AccessMode::VpnOnly => pb::AccessMode::VpnOnly,
                AccessMode::Hybrid => pb::AccessMode::Hybrid,
            }
            .into(),
            vpn_subnet: d.vpn_subnet.clone(),
            vpn_enabled: d.vpn_enabled,
            public_api: d.public_api,
            password_verifier: d.password_verifier.clone(),
            ddl_enabled: d.ddl_enabled,
            devices: d
                .devices
                .iter()
                .map(|dev| pb::RealtimeDevice {
                    id: dev.id.clone(),
                    name: dev.name.clone(),
                    mac_hashes: dev.mac_hashes.clone(),
                    machine_id_hash: dev.machine_id_hash.clone(),
                    public: dev.public,
                })
                .collect(),
            subscriber_keys: d
                .subscriber_keys
                .iter()
                .map(|k| pb::SubscriberKey {
                    id: k.id.clone(),
                    secret_hash: k.secret_hash.clone(),
                    expires_at_ms: k.expires_at_ms.unwrap_or(0),
                })
                .collect(),
            backup: d.backup.as_ref().and_then(|b| super::backups::part_to_pb(&a.name, b, backup_key)),
        }),
        gateway: a.gateway.as_ref().map(gateway_to_pb),
    }
}

/// The gateway part on the wire: every field of `pb::GatewayAssignment` named.
fn gateway_to_pb(g: &desired::GatewayAssignment) -> pb::GatewayAssignment {
    use crate::state::exposure::{Protocol, SourceMode};
    use crate::state::firewall::{RuleProtocol, Verdict};
    let proto = |p: Protocol| match p {
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Udp => pb::Protocol::Udp,
    };
    pb::GatewayAssignment {
        vpn_subnet: g.vpn_subnet.clone(),
        gateway_address: g.gateway_address.clone(),
        interface: g.interface.clone(),
        listen_port: u32::from(g.listen_port),
        bandwidth_bps: g.bandwidth_bps,
        device_to_device: g.device_to_device,
        peers: g
            .peers
            .iter()
            .map(|d| pb::Peer {
                id: d.id.clone(),
                name: d.name.to_string(),
                public_key: d.public_key.to_string(),
                address: d.address.to_string(),
                // Pending and revoked devices keep their address but are no peer.
                enabled: d.is_active(),
            })
            .collect(),
        exposures: g
            .exposures
            .iter()
            .map(|(x, device_address)| pb::Exposure {
                id: x.id.clone(),
                device_id: x.device_id.clone(),
                device_address: device_address.to_string(),
                port: u32::from(x.port),
                public_port: u32::from(x.public_port),
                protocol: proto(x.protocol).into(),
                allow: x.allow.iter().map(ToString::to_string).collect(),
                rate_per_second: x.rate_per_second,
                source: match x.source {
                    SourceMode::Nat => pb::SourceMode::Nat,
                    SourceMode::Keep => pb::SourceMode::Keep,
                }
                .into(),
                enabled: x.enabled,
            })
            .collect(),
        rules: g
            .rules
            .iter()
            .map(|(r, destinations)| pb::FirewallRule {
                id: r.id.clone(),
                position: r.position,
                verdict: match r.verdict {
                    Verdict::Allow => pb::Verdict::Allow,
                    Verdict::Deny => pb::Verdict::Deny,
                }
                .into(),
                sources: r.sources.iter().map(ToString::to_string).collect(),
                destinations: destinations.iter().map(ToString::to_string).collect(),
                port_first: r.ports.map_or(0, |p| u32::from(p.first)),
                port_last: r.ports.map_or(0, |p| u32::from(p.last)),
                protocol: match r.protocol {
                    RuleProtocol::Tcp => pb::Protocol::Tcp,
                    RuleProtocol::Udp => pb::Protocol::Udp,
                    RuleProtocol::Any => pb::Protocol::Any,
                }
                .into(),
                vpn_required: r.vpn_required,
            })
            .collect(),
        blocked_domains: g.blocked_domains.clone(),
    }
}
