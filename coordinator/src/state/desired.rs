//! The desired state of one node: a pure function of the replicated state. Any coordinator
//! computes the same answer for the same applied index, so any of them can serve a watch.

use super::apikey::Role;
use super::device::Device;
use super::exposure::Exposure;
use super::firewall::{Destination, FirewallRule, LabelSelector};
use super::gateway::Ipv4Cidr;
use super::names::TenantName;
use super::node::NodeRole;
use super::tenant::{AccessMode, DbType, Isolation, Tenant, TenantStatus};
use super::{Op, State};
use std::collections::BTreeSet;

/// What a node must do for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lifecycle {
    Run,
    Suspended,
    Deleted,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Run => "run",
            Lifecycle::Suspended => "suspended",
            Lifecycle::Deleted => "deleted",
        }
    }

    pub fn of(status: TenantStatus) -> Self {
        match status {
            TenantStatus::Provisioning | TenantStatus::Active | TenantStatus::QuotaExceeded => Lifecycle::Run,
            TenantStatus::Suspended => Lifecycle::Suspended,
            TenantStatus::Deleting | TenantStatus::DeletedPendingPurge => Lifecycle::Deleted,
        }
    }
}

/// One tenant as one node must realise it: the part for each role the node has for it, and
/// nothing of the others (a gateway never receives the database password verifier). Readiness
/// (provisioning vs active) is not part of it, so a node reporting ready does not change what
/// it is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    pub revision: u64,
    pub roles: BTreeSet<NodeRole>,
    pub lifecycle: Lifecycle,
    pub index: u32,
    pub db: Option<DbAssignment>,
    pub gateway: Option<GatewayAssignment>,
}

/// What the tenant's db node realises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbAssignment {
    pub db_type: DbType,
    pub isolation: Isolation,
    pub quota_bytes: u64,
    pub connection_limit: u32,
    pub events_per_min: u32,
    pub access_mode: AccessMode,
    pub vpn_subnet: String,
    pub vpn_enabled: bool,
    pub public_api: bool,
    pub ddl_enabled: bool,
    pub password_verifier: String,
    /// Realtime ingest: the devices that may publish (active: approved, enabled, not revoked).
    pub devices: Vec<IngestDevice>,
    /// The tenant's customer API keys that may subscribe (not revoked), with their expiry.
    pub subscriber_keys: Vec<SubscriberKey>,
    /// Backups (PostgreSQL, once the tenant has a data key).
    pub backup: Option<super::backup::desired::BackupPart>,
}

/// A device that may publish events into its tenant's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestDevice {
    pub id: String,
    pub name: String,
    /// As it last reported them (empty for a device registered by key).
    pub mac_hashes: Vec<String>,
    pub machine_id_hash: String,
    /// Enrolled in public mode: the hashes above are then the fingerprint recorded at
    /// enrollment (its publishes must match them), not the last reported.
    pub public: bool,
}

/// A customer key as its tenant's db node needs it to check subscribers: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberKey {
    pub id: String,
    pub secret_hash: String,
    /// `None`: never.
    pub expires_at_ms: Option<u64>,
}

/// The tenant's active devices, in name order.
fn ingest_devices(state: &State, t: &Tenant) -> Vec<IngestDevice> {
    state
        .devices_of(&t.name)
        .into_iter()
        .filter(|d| d.is_active())
        .map(|d| {
            // A public device's heartbeats must not move what its publishes are checked against
            // (a stolen certificate would heartbeat its own fingerprint first).
            let fingerprint = d.public_fingerprint.as_ref().or(d.fingerprint.as_ref());
            IngestDevice {
                id: d.id.clone(),
                name: d.name.to_string(),
                mac_hashes: fingerprint.map(|f| f.mac_hashes.clone()).unwrap_or_default(),
                machine_id_hash: fingerprint.map(|f| f.machine_id_hash.clone()).unwrap_or_default(),
                public: d.public_fingerprint.is_some(),
            }
        })
        .collect()
}

/// The tenant's customer keys that are not revoked, in id order.
fn subscriber_keys(state: &State, t: &Tenant) -> Vec<SubscriberKey> {
    state
        .api_keys
        .values()
        .filter(|k| k.role == Role::Customer && k.tenant.as_ref() == Some(&t.name) && k.revoked_at_ms.is_none())
        .map(|k| SubscriberKey { id: k.id.clone(), secret_hash: k.secret_hash.clone(), expires_at_ms: k.expires_at_ms })
        .collect()
}

impl State {
    /// The tenant whose db node's ingest part (active devices, customer keys) `op` may change,
    /// as this state knows it before `op` runs.
    pub(super) fn ingest_change(&self, op: &Op) -> Option<TenantName> {
        let customer_of = |key: &super::apikey::ApiKey| match key.role {
            Role::Customer => key.tenant.clone(),
            Role::Admin | Role::Auditor => None,
        };
        match op {
            Op::AddDevice(d) => Some(d.tenant.clone()),
            Op::EnrollDevice(e) => Some(e.tenant.clone()),
            Op::RemoveDevice { tenant, .. }
            | Op::EnableDevice { tenant, .. }
            | Op::ApproveDevice { tenant, .. }
            | Op::RevokeDevice { tenant, .. }
            | Op::ExpireDevice { tenant, .. } => Some(tenant.clone()),
            // The db node checks public-mode devices against their fingerprint.
            Op::DeviceHeartbeat(h) => self
                .devices
                .get(&h.device_id)
                .filter(|d| d.is_active() && d.fingerprint.as_ref() != Some(&h.fingerprint))
                .map(|d| d.tenant.clone()),
            Op::CreateApiKey(key) => customer_of(key),
            Op::RevokeApiKey { id } => self.api_keys.get(id).and_then(customer_of),
            _ => None,
        }
    }
}

/// What the tenant's gateway node realises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAssignment {
    pub vpn_subnet: String,
    pub gateway_address: String,
    pub interface: String,
    pub listen_port: u16,
    pub bandwidth_bps: u64,
    pub device_to_device: bool,
    /// Every device of the tenant, disabled ones marked (they keep their address).
    pub peers: Vec<Device>,
    /// Every exposure with its device's address.
    pub exposures: Vec<(Exposure, std::net::Ipv4Addr)>,
    /// Rules in evaluation order, each with its sources (in the rule) and destinations (beside
    /// it) resolved: the networks named and the /32 of each device named or selected by label
    /// now (`resolve`). A rule that can match nothing is left out.
    pub rules: Vec<(FirewallRule, Vec<Ipv4Cidr>)>,
    pub blocked_domains: Vec<String>,
}

/// A rule's sources and destinations as its gateway matches them: the networks it names, the
/// addresses of the devices it names, and those of the tenant's active devices its label
/// selectors pick now. `None` when a side names something but resolves to nothing (a selector
/// no active device matches): the rule then matches no packet and is left out, as an empty side
/// would mean "any".
fn resolve(r: &FirewallRule, devices: &[&Device]) -> Option<(Vec<Ipv4Cidr>, Vec<Ipv4Cidr>)> {
    fn selected<'a>(devices: &'a [&Device], selector: &'a LabelSelector) -> impl Iterator<Item = Ipv4Cidr> + 'a {
        devices.iter().filter(move |d| d.is_active() && selector.selects(&d.labels)).map(|d| Ipv4Cidr::host(d.address))
    }
    let mut sources = r.sources.clone();
    sources.extend(selected(devices, &r.source_labels));
    let mut destinations: Vec<Ipv4Cidr> = r
        .destinations
        .iter()
        .filter_map(|d| match d {
            Destination::Cidr(c) => Some(*c),
            Destination::Device { id, .. } => {
                devices.iter().find(|dev| &dev.id == id).map(|dev| Ipv4Cidr::host(dev.address))
            }
        })
        .collect();
    destinations.extend(selected(devices, &r.destination_labels));
    let names_sources = !r.sources.is_empty() || !r.source_labels.is_empty();
    let names_destinations = !r.destinations.is_empty() || !r.destination_labels.is_empty();
    if (names_sources && sources.is_empty()) || (names_destinations && destinations.is_empty()) {
        return None;
    }
    Some((sources, destinations))
}

fn gateway_part(state: &State, t: &Tenant) -> GatewayAssignment {
    let devices = state.devices_of(&t.name);
    let address_of = |id: &str| devices.iter().find(|d| d.id == id).map(|d| d.address);
    let exposures =
        state.exposures_of(&t.name).into_iter().filter_map(|x| Some((x.clone(), address_of(&x.device_id)?))).collect();
    let rules = state
        .rules_of(&t.name)
        .into_iter()
        .filter_map(|r| {
            let (sources, destinations) = resolve(r, &devices)?;
            Some((FirewallRule { sources, ..r.clone() }, destinations))
        })
        .collect();
    GatewayAssignment {
        vpn_subnet: t.network.vpn_subnet.clone(),
        gateway_address: t.network.gateway_address.clone(),
        interface: t.network.interface.clone(),
        listen_port: t.network.listen_port,
        bandwidth_bps: t.bandwidth_bps,
        device_to_device: t.device_to_device,
        // Without what devices report about themselves (heartbeats, connects): a heartbeat must
        // not send the gateway a new desired state.
        peers: devices
            .into_iter()
            .map(|d| Device { last_connect: None, last_seen_ms: None, fingerprint: None, ..d.clone() })
            .collect(),
        exposures,
        rules,
        blocked_domains: t.blocked_domains.iter().map(ToString::to_string).collect(),
    }
}

fn assignment(state: &State, t: &Tenant, roles: BTreeSet<NodeRole>) -> Assignment {
    let db = roles.contains(&NodeRole::Db).then(|| DbAssignment {
        db_type: t.db_type,
        isolation: t.isolation,
        quota_bytes: t.db_quota_bytes,
        connection_limit: t.connection_limit,
        events_per_min: t.events_per_min,
        access_mode: t.access_mode,
        vpn_subnet: t.network.vpn_subnet.clone(),
        vpn_enabled: t.vpn_enabled,
        public_api: t.public_api,
        ddl_enabled: t.ddl_enabled,
        password_verifier: t.db_password_verifier.clone(),
        devices: ingest_devices(state, t),
        subscriber_keys: subscriber_keys(state, t),
        backup: super::backup::desired::part(state, t),
    });
    let gateway = roles.contains(&NodeRole::Gateway).then(|| gateway_part(state, t));
    Assignment {
        name: t.name.to_string(),
        // The gateway also needs the tenant's gateway changes, the db node its ingest changes.
        revision: {
            let gateway = if roles.contains(&NodeRole::Gateway) { t.gateway_revision } else { 0 };
            let ingest = if roles.contains(&NodeRole::Db) { t.ingest_revision } else { 0 };
            t.revision.max(gateway).max(ingest)
        },
        roles,
        lifecycle: Lifecycle::of(t.status),
        index: t.network.index,
        db,
        gateway,
    }
}

/// The tenants placed on `node_id`, in name order. A revoked or unknown node gets nothing.
pub fn for_node(state: &State, node_id: u64) -> Option<Vec<Assignment>> {
    let node = state.nodes.get(&node_id)?;
    if node.revoked {
        return None;
    }
    let mut out = Vec::new();
    for t in state.tenants.values() {
        let mut roles = BTreeSet::new();
        if t.placement.db_node == Some(node_id) {
            roles.insert(NodeRole::Db);
        }
        if t.placement.gateway_node == Some(node_id) {
            roles.insert(NodeRole::Gateway);
        }
        if !roles.is_empty() {
            out.push(assignment(state, t, roles));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests_support::{booted, create, register};

    #[test]
    fn node_sees_only_its_tenants_with_its_roles() {
        let mut s = booted();
        register(&mut s, 1, &[NodeRole::Gateway]);
        register(&mut s, 2, &[NodeRole::Db]);
        create(&mut s, "acme");
        create(&mut s, "globex");
        let gw = for_node(&s, 1).expect("node 1 exists");
        assert_eq!(gw.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), vec!["acme", "globex"]);
        assert!(gw.iter().all(|a| a.roles == [NodeRole::Gateway].into()));
        assert!(gw.iter().all(|a| a.gateway.is_some() && a.db.is_none()), "a gateway gets no database part");
        let db = for_node(&s, 2).expect("node 2 exists");
        assert!(db.iter().all(|a| a.roles == [NodeRole::Db].into() && a.lifecycle == Lifecycle::Run));
        assert!(db.iter().all(|a| a.db.is_some() && a.gateway.is_none()), "a db node gets no gateway part");
        assert_eq!(for_node(&s, 3), None);
    }

    #[test]
    fn readiness_does_not_change_the_desired_state() {
        let mut s = booted();
        register(&mut s, 1, &[NodeRole::Gateway, NodeRole::Db]);
        create(&mut s, "acme");
        let before = for_node(&s, 1);
        if let Some(t) = s.tenants.values_mut().next() {
            t.status = TenantStatus::Active;
        }
        assert_eq!(for_node(&s, 1), before);
    }
}
