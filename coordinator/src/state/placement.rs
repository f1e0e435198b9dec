//! Placement: a pure function that picks the db and gateway nodes for a new tenant from the
//! registered nodes, by free capacity and labels. No IO; the state machine calls it.

use super::node::{Node, NodeRole};
use super::tenant::DbType;
use std::collections::{BTreeMap, BTreeSet};

/// What placement needs to know about the tenant.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub db_type: DbType,
    pub db_quota_bytes: u64,
    pub needs_gateway: bool,
    pub dedicated: bool,
    pub node_selector: &'a BTreeMap<String, String>,
}

/// What is already placed on a node, per role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    pub db_tenants: u32,
    pub db_quota_bytes: u64,
    pub gateway_tenants: u32,
    /// The node hosts a dedicated tenant: nothing else may join it.
    pub has_dedicated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub db_node: u64,
    pub gateway_node: Option<u64>,
}

/// The engines a db node serves: label `engines=postgres,mssql`; postgres when unlabelled.
fn serves_engine(node: &Node, db_type: DbType) -> bool {
    let engine = match db_type {
        DbType::Postgres => "postgres",
        DbType::Mssql => "mssql",
    };
    match node.labels.get("engines") {
        Some(list) => list.split(',').any(|e| e.trim() == engine),
        None => db_type == DbType::Postgres,
    }
}

/// Why one node was passed over; the first reason is kept per node.
fn refusal(node: &Node, role: NodeRole, req: &Request<'_>, load: &Load) -> Option<String> {
    if !node.roles.contains(&role) {
        return Some("role missing".into());
    }
    if node.cordoned {
        return Some("cordoned".into());
    }
    if let Some((k, v)) = req.node_selector.iter().find(|(k, v)| node.labels.get(*k) != Some(*v)) {
        return Some(format!("label {k}={v} missing"));
    }
    if req.dedicated {
        if !node.is_dedicated() {
            return Some("not labelled dedicated=true".into());
        }
        if load.db_tenants + load.gateway_tenants > 0 {
            return Some("dedicated node already in use".into());
        }
    } else if node.is_dedicated() || load.has_dedicated {
        return Some("reserved for a dedicated tenant".into());
    }
    match role {
        NodeRole::Db => {
            if !serves_engine(node, req.db_type) {
                return Some("engine not served".into());
            }
            if load.db_tenants >= node.capacity.max_tenants {
                return Some("tenant limit reached".into());
            }
            let free = node.capacity.disk_bytes.saturating_sub(load.db_quota_bytes);
            if free < req.db_quota_bytes {
                return Some(format!("{free} bytes free, {} needed", req.db_quota_bytes));
            }
        }
        NodeRole::Gateway => {
            if load.gateway_tenants >= node.capacity.max_tenants {
                return Some("tenant limit reached".into());
            }
        }
    }
    None
}

fn choose(
    nodes: &[Node],
    loads: &BTreeMap<u64, Load>,
    role: NodeRole,
    req: &Request<'_>,
    exclude_other_than: Option<u64>,
) -> Result<u64, String> {
    let empty = Load::default();
    let mut reasons = Vec::new();
    let mut best: Option<(u64, u64)> = None; // (score, node id); higher score wins, lower id breaks ties
    for node in nodes {
        if let Some(only) = exclude_other_than {
            if node.id != only {
                continue;
            }
        }
        let load = loads.get(&node.id).unwrap_or(&empty);
        if let Some(reason) = refusal(node, role, req, load) {
            reasons.push(format!("node {}: {reason}", node.id));
            continue;
        }
        let score = match role {
            NodeRole::Db => node.capacity.disk_bytes.saturating_sub(load.db_quota_bytes),
            NodeRole::Gateway => u64::from(node.capacity.max_tenants - load.gateway_tenants),
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, node.id));
        }
    }
    let role_name = match role {
        NodeRole::Db => "db",
        NodeRole::Gateway => "gateway",
    };
    match best {
        Some((_, id)) => Ok(id),
        None if nodes.is_empty() => Err(format!("no {role_name} node fits: no nodes are registered")),
        None => Err(format!("no {role_name} node fits ({})", reasons.join("; "))),
    }
}

/// Picks the nodes for a tenant. A dedicated tenant gets a db node and, when it needs one, the
/// gateway on the same dedicated node when it has the role, so nothing else shares its host.
pub fn place(nodes: &[Node], loads: &BTreeMap<u64, Load>, req: &Request<'_>) -> Result<Decision, String> {
    let db_node = choose(nodes, loads, NodeRole::Db, req, None)?;
    let gateway_node = if req.needs_gateway {
        let same_host = req.dedicated.then_some(db_node);
        let mut loads_with_db = loads.clone();
        if req.dedicated {
            // The db placement above is not in `loads` yet; the dedicated node is free by construction.
            loads_with_db.remove(&db_node);
        }
        Some(choose(nodes, &loads_with_db, NodeRole::Gateway, req, same_host)?)
    } else {
        None
    };
    Ok(Decision { db_node, gateway_node })
}

/// Roles a set of nodes offers, for error messages and status.
pub fn roles_offered(nodes: &[Node]) -> BTreeSet<NodeRole> {
    nodes.iter().flat_map(|n| n.roles.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::node::NodeCapacity;

    fn node(id: u64, roles: &[NodeRole], disk_gb: u64, labels: &[(&str, &str)]) -> Node {
        Node {
            id,
            roles: roles.iter().copied().collect(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            capacity: NodeCapacity {
                cpus: 2,
                memory_bytes: 4 << 30,
                disk_bytes: disk_gb * 1_000_000_000,
                max_tenants: 100,
            },
            address: format!("192.0.2.{id}"),
            last_seen_ms: 0,
            cordoned: false,
            revoked: false,
            applied_revision: 0,
            gateway: Default::default(),
            realtime_address: None,
            db_logins_recorded: 0,
        }
    }

    fn request(quota_gb: u64, selector: &BTreeMap<String, String>) -> Request<'_> {
        Request {
            db_type: DbType::Postgres,
            db_quota_bytes: quota_gb * 1_000_000_000,
            needs_gateway: true,
            dedicated: false,
            node_selector: selector,
        }
    }

    const BOTH: &[NodeRole] = &[NodeRole::Db, NodeRole::Gateway];

    #[test]
    fn picks_node_with_most_free_disk() {
        let nodes = vec![node(1, BOTH, 100, &[]), node(2, BOTH, 200, &[])];
        let mut loads = BTreeMap::new();
        loads.insert(2, Load { db_tenants: 1, db_quota_bytes: 150_000_000_000, ..Load::default() });
        let sel = BTreeMap::new();
        let d = place(&nodes, &loads, &request(5, &sel)).expect("fits");
        assert_eq!(d.db_node, 1);
    }

    #[test]
    fn separate_gateway_and_db_roles() {
        let nodes = vec![node(1, &[NodeRole::Gateway], 0, &[]), node(2, &[NodeRole::Db], 50, &[])];
        let sel = BTreeMap::new();
        let d = place(&nodes, &BTreeMap::new(), &request(5, &sel)).expect("fits");
        assert_eq!(d, Decision { db_node: 2, gateway_node: Some(1) });
    }

    #[test]
    fn no_nodes_registered_is_a_clear_reason() {
        let sel = BTreeMap::new();
        let err = place(&[], &BTreeMap::new(), &request(5, &sel)).expect_err("nothing fits");
        assert_eq!(err, "no db node fits: no nodes are registered");
    }

    #[test]
    fn no_node_fits_names_each_refusal() {
        let nodes = vec![node(1, &[NodeRole::Gateway], 0, &[]), node(2, &[NodeRole::Db], 1, &[])];
        let sel = BTreeMap::new();
        let err = place(&nodes, &BTreeMap::new(), &request(5, &sel)).expect_err("quota too big");
        assert!(err.contains("node 1: role missing"), "{err}");
        assert!(err.contains("node 2: 1000000000 bytes free, 5000000000 needed"), "{err}");
    }

    #[test]
    fn labels_select_nodes() {
        let nodes = vec![node(1, BOTH, 100, &[("region", "ist")]), node(2, BOTH, 500, &[("region", "fra")])];
        let sel: BTreeMap<String, String> = [("region".to_string(), "ist".to_string())].into();
        let d = place(&nodes, &BTreeMap::new(), &request(5, &sel)).expect("fits");
        assert_eq!(d, Decision { db_node: 1, gateway_node: Some(1) });
    }

    #[test]
    fn dedicated_tenant_goes_alone_on_dedicated_node() {
        let nodes = vec![node(1, BOTH, 500, &[]), node(2, BOTH, 100, &[("dedicated", "true")])];
        let sel = BTreeMap::new();
        let mut req = request(5, &sel);
        req.dedicated = true;
        let d = place(&nodes, &BTreeMap::new(), &req).expect("dedicated node free");
        assert_eq!(d, Decision { db_node: 2, gateway_node: Some(2) });

        // Once used, the dedicated node takes no second dedicated tenant...
        let mut loads = BTreeMap::new();
        loads.insert(2, Load { db_tenants: 1, gateway_tenants: 1, has_dedicated: true, ..Load::default() });
        let err = place(&nodes, &loads, &req).expect_err("dedicated node taken");
        assert!(err.contains("node 2: dedicated node already in use"), "{err}");

        // ...and ordinary tenants never land on it.
        let ordinary = place(&nodes, &BTreeMap::new(), &request(5, &sel)).expect("fits on node 1");
        assert_eq!(ordinary.db_node, 1);
        let only_dedicated = vec![nodes[1].clone()];
        let err = place(&only_dedicated, &BTreeMap::new(), &request(5, &sel)).expect_err("reserved");
        assert!(err.contains("reserved for a dedicated tenant"), "{err}");
    }

    #[test]
    fn cordoned_and_full_nodes_are_skipped() {
        let mut a = node(1, BOTH, 500, &[]);
        a.cordoned = true;
        let mut b = node(2, BOTH, 500, &[]);
        b.capacity.max_tenants = 1;
        let mut loads = BTreeMap::new();
        loads.insert(2, Load { db_tenants: 1, gateway_tenants: 1, ..Load::default() });
        let sel = BTreeMap::new();
        let err = place(&[a, b], &loads, &request(1, &sel)).expect_err("none free");
        assert!(err.contains("node 1: cordoned") && err.contains("node 2: tenant limit reached"), "{err}");
    }

    #[test]
    fn mssql_needs_an_engine_label() {
        let nodes = vec![node(1, BOTH, 500, &[]), node(2, BOTH, 100, &[("engines", "postgres,mssql")])];
        let sel = BTreeMap::new();
        let mut req = request(5, &sel);
        req.db_type = DbType::Mssql;
        assert_eq!(place(&nodes, &BTreeMap::new(), &req).map(|d| d.db_node), Ok(2));
    }

    #[test]
    fn no_gateway_needed_without_vpn() {
        let nodes = vec![node(1, &[NodeRole::Db], 500, &[])];
        let sel = BTreeMap::new();
        let mut req = request(5, &sel);
        req.needs_gateway = false;
        assert_eq!(place(&nodes, &BTreeMap::new(), &req), Ok(Decision { db_node: 1, gateway_node: None }));
    }
}
