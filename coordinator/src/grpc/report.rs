//! Node reports as the node listener takes them: the gateway's per-tenant status, conditions and
//! backend validated and bounded at the edge, and what of a report is durable (`significant`).

use crate::server::Coordinator;
use crate::state::gateway::{
    ExposureStatus, GatewayTenantStatus, NodeCondition, PeerStatus, SourceSeen, WgBackend, MAX_CONDITIONS,
    MAX_REPORTED_EXPOSURES, MAX_REPORTED_PEERS, MAX_REPORTED_SOURCES,
};
use crate::state::node::Report;
use crate::state::{Command, Op};
use berqenas_proto::node as pb;

/// A report without its usage samples: sizes, session counts and the gateway's peer and exposure
/// counters change on every pass and are written with the periodic refresh, not each time (the
/// gateway's public key, backend and conditions are durable and written when they change).
pub(super) fn significant(r: &Report) -> Report {
    let mut r = r.clone();
    for s in r.tenants.values_mut() {
        s.db_bytes = 0;
        s.connections = 0;
        s.events_total = 0;
        s.gateway = s.gateway.as_ref().map(GatewayTenantStatus::durable);
    }
    r
}

/// New VPN sessions in `report` are security events: one `Op::DeviceConnect` (one audit entry by
/// node `id`) each, whether or not the rest of the report is due (the agent repeats a session
/// start in every report; the state records it once).
pub(super) async fn record_connects(c: &Coordinator, id: u64, src: &str, report: &Report) -> Result<(), tonic::Status> {
    for connect in c.read(|d| crate::state::connect::in_report(&d.state, report)) {
        let meta = super::node_meta(id, src);
        match c.write(Command { meta, op: Op::DeviceConnect(connect) }).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(node = id, error = %e, "a reported connect was not recorded"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What a gateway reports about one tenant interface, validated and bounded: keys that parse,
/// addresses that parse, ids of the shape the state uses; more than the bounds is dropped.
pub(super) fn gateway_status(g: &pb::GatewayStatus) -> GatewayTenantStatus {
    let ms = |secs: i64| u64::try_from(secs).ok().filter(|s| *s > 0).map(|s| s.saturating_mul(1000));
    let id_ok = |id: &str| {
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    GatewayTenantStatus {
        public_key: g.public_key.parse().ok(),
        peers: g
            .peers
            .iter()
            .take(MAX_REPORTED_PEERS)
            .filter_map(|p| {
                Some(PeerStatus {
                    public_key: p.public_key.parse().ok()?,
                    last_handshake_ms: ms(p.last_handshake),
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                    endpoint: p.endpoint.parse().ok(),
                    session_start_ms: ms(p.session_start),
                })
            })
            .collect(),
        exposures: g
            .exposures
            .iter()
            .take(MAX_REPORTED_EXPOSURES)
            .filter(|x| id_ok(&x.id))
            .map(|x| ExposureStatus {
                id: x.id.clone(),
                accepted_packets: x.accepted_packets,
                dropped_packets: x.dropped_packets,
                sources: x
                    .sources
                    .iter()
                    .take(MAX_REPORTED_SOURCES)
                    .filter_map(|s| {
                        Some(SourceSeen {
                            address: s.address.parse().ok()?,
                            first_seen_ms: ms(s.first_seen).unwrap_or(0),
                            last_seen_ms: ms(s.last_seen).unwrap_or(0),
                            packets: s.packets,
                            bytes: s.bytes,
                        })
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// A node's conditions, bounded and stripped of control characters.
pub(super) fn conditions(raw: &[pb::NodeCondition]) -> Vec<NodeCondition> {
    let clean = |s: &str, max: usize| s.chars().filter(|c| !c.is_control()).take(max).collect::<String>();
    raw.iter()
        .take(MAX_CONDITIONS)
        .map(|c| NodeCondition { kind: clean(&c.kind, 64), message: clean(&c.message, 500) })
        .filter(|c| !c.kind.is_empty())
        .collect()
}

pub(super) fn wireguard_backend(raw: &str) -> Option<WgBackend> {
    match raw {
        "kernel" => Some(WgBackend::Kernel),
        "userspace" => Some(WgBackend::Userspace),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::node::NodeTenantStatus;

    fn key(b: u8) -> String {
        berqenas_common::net::WgKey::from_bytes(&[b; 32]).to_string()
    }

    #[test]
    fn gateway_status_is_parsed_bounded_and_only_its_key_is_significant() {
        let raw = pb::GatewayStatus {
            public_key: key(1),
            peers: vec![
                pb::PeerStatus {
                    public_key: key(2),
                    last_handshake: 1_700_000_000,
                    rx_bytes: 5,
                    tx_bytes: 6,
                    endpoint: "203.0.113.10:43210".into(),
                    session_start: 1_699_999_990,
                },
                pb::PeerStatus { public_key: "not a key".into(), ..Default::default() },
                pb::PeerStatus { public_key: key(3), endpoint: "somewhere".into(), ..Default::default() },
            ],
            exposures: vec![
                pb::ExposureStatus {
                    id: "exp7".into(),
                    accepted_packets: 10,
                    dropped_packets: 2,
                    sources: vec![
                        pb::SourceSeen {
                            address: "203.0.113.7".into(),
                            first_seen: 1,
                            last_seen: 2,
                            packets: 3,
                            bytes: 4,
                        },
                        pb::SourceSeen { address: "nope".into(), first_seen: 1, last_seen: 2, packets: 3, bytes: 4 },
                    ],
                },
                pb::ExposureStatus { id: "x;drop".into(), ..Default::default() },
            ],
        };
        let g = gateway_status(&raw);
        assert_eq!(g.public_key.as_ref().map(ToString::to_string), Some(key(1)));
        assert_eq!(g.peers.len(), 2, "an unparsable key is dropped");
        assert_eq!(g.peers[0].last_handshake_ms, Some(1_700_000_000_000));
        assert_eq!(g.peers[0].endpoint, "203.0.113.10:43210".parse().ok());
        assert_eq!(g.peers[0].session_start_ms, Some(1_699_999_990_000));
        assert_eq!((g.peers[1].endpoint, g.peers[1].session_start_ms), (None, None), "unparsable or absent");
        assert_eq!(g.exposures.len(), 1, "an id of the wrong shape is dropped");
        assert_eq!(g.exposures[0].sources.len(), 1);
        assert_eq!(g.exposures[0].sources[0].first_seen_ms, 1000);

        let status = |g: GatewayTenantStatus| NodeTenantStatus {
            ready: true,
            reason: None,
            revision: 1,
            db_bytes: 0,
            quota_exceeded: false,
            connections: 0,
            gateway: Some(g),
            events_total: 0,
        };
        let report = |g: GatewayTenantStatus| Report {
            node_id: 1,
            applied_revision: 1,
            tenants: [("acme".to_string(), status(g))].into(),
            capacity: None,
            wireguard_backend: wireguard_backend("userspace"),
            conditions: conditions(&[pb::NodeCondition { kind: "x".into(), message: "m\n".into() }]),
        };
        let mut more = g.clone();
        more.peers[0].rx_bytes += 1000;
        more.exposures[0].accepted_packets += 1;
        assert_eq!(significant(&report(g.clone())), significant(&report(more)), "counters are samples");
        let mut rekeyed = g.clone();
        rekeyed.public_key = key(9).parse().ok();
        assert_ne!(significant(&report(g)), significant(&report(rekeyed)), "the public key is durable");
        assert_eq!(wireguard_backend("kernel"), Some(WgBackend::Kernel));
        assert_eq!(wireguard_backend("ebpf"), None);
        assert_eq!(conditions(&[pb::NodeCondition { kind: "k".into(), message: "a\nb".into() }])[0].message, "ab");
    }
}
