//! The status report an agent sends (pure): the driver's per-tenant statuses, the gateway's
//! peers and exposures, the node's conditions and the db role's logins, in their wire form.
//! `runtime.rs` adds what other tasks hold (backup events, the logins outbox) when it sends one.

use crate::driver::{NodeStatus, Status};
use berqenas_proto::node as pb;
use std::time::SystemTime;

/// A login waiting in the outbox, as the wire carries it.
pub fn login_pb(l: &crate::db::postgres::logins::Login) -> pb::DbLogin {
    pb::DbLogin {
        seq: l.seq,
        tenant: l.tenant.clone(),
        role: l.role.clone(),
        success: l.failure.is_none(),
        client: l.client.clone().unwrap_or_default(),
        at_ms: l.at_ms,
        reason: l.failure.map(|f| f.as_str().to_string()).unwrap_or_default(),
        count: l.count,
    }
}

fn unix_seconds(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn gateway_pb(g: &crate::gateway::GatewayStatus) -> pb::GatewayStatus {
    pb::GatewayStatus {
        public_key: g.public_key.as_ref().map(|k| k.as_str().to_string()).unwrap_or_default(),
        peers: g
            .peers
            .iter()
            .map(|p| pb::PeerStatus {
                public_key: p.public_key.as_str().to_string(),
                last_handshake: unix_seconds(p.last_handshake),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                endpoint: p.endpoint.map(|e| e.to_string()).unwrap_or_default(),
                session_start: unix_seconds(p.session_start),
            })
            .collect(),
        exposures: g
            .exposures
            .iter()
            .map(|x| pb::ExposureStatus {
                id: x.id.clone(),
                accepted_packets: x.accepted_packets,
                dropped_packets: x.dropped_packets,
                sources: x
                    .sources
                    .iter()
                    .map(|s| pb::SourceSeen {
                        address: s.address.clone(),
                        first_seen: s.first_seen,
                        last_seen: s.last_seen,
                        packets: s.packets,
                        bytes: s.bytes,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The report of one reconcile pass at `revision`.
pub fn to_pb(
    revision: u64,
    statuses: &[Status],
    capacity: pb::Capacity,
    node: &NodeStatus,
    events: &std::collections::BTreeMap<String, u64>,
) -> pb::StatusReport {
    pb::StatusReport {
        applied_revision: revision,
        tenants: statuses
            .iter()
            .map(|s| pb::TenantStatus {
                name: s.name.clone(),
                ready: s.ready,
                reason: s.reason.clone().unwrap_or_default(),
                revision,
                db_bytes: s.usage.map_or(0, |u| u.db_bytes),
                quota_exceeded: s.usage.is_some_and(|u| u.quota_exceeded),
                connections: s.usage.map_or(0, |u| u.connections),
                gateway: s.gateway.as_ref().map(gateway_pb),
                events_total: events.get(&s.name).copied().unwrap_or(0),
            })
            .collect(),
        capacity: Some(capacity),
        wireguard_backend: node.wireguard_backend.unwrap_or_default().to_string(),
        conditions: node
            .conditions
            .iter()
            .map(|c| pb::NodeCondition { kind: c.kind.clone(), message: c.message.clone() })
            .collect(),
        backups: Vec::new(),
        backup_progress: Vec::new(),
        db_logins: Vec::new(),
    }
}
