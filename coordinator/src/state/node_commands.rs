//! The state machine's node commands: registration, joins with tokens, coordinator tokens,
//! token revocation, and node reports. Pure, like the rest of `state`.

use super::*;

impl State {
    pub(super) fn register_node(&mut self, index: u64, now: u64, node: &Node, touched: &mut Vec<Touched>) -> Response {
        if node.roles.is_empty() {
            return Err(DomainError::Invalid("a node needs at least one role".into()));
        }
        let mut node = node.clone();
        node.last_seen_ms = now;
        self.nodes.insert(node.id, node.clone());
        touched.push(Touched::Node(node.id));
        // Tenants that waited for a node may fit now.
        let waiting: Vec<TenantName> = self
            .tenants
            .values()
            .filter(|t| t.placement.db_node.is_none() && t.status == TenantStatus::Provisioning)
            .map(|t| t.name.clone())
            .collect();
        for name in waiting {
            if let Some(mut t) = self.tenants.get(&name).cloned() {
                self.place(&mut t);
                if t.placement.db_node.is_some() {
                    t.revision = index;
                    t.updated_at_ms = now;
                    self.tenants.insert(name.clone(), t);
                    touched.push(Touched::Tenant(name));
                }
            }
        }
        Ok(Reply::Node(Box::new(node)))
    }

    pub(super) fn join_node(
        &mut self,
        index: u64,
        now: u64,
        token_id: &str,
        secret_hash: &str,
        request: &Node,
        touched: &mut Vec<Touched>,
    ) -> Response {
        use subtle::ConstantTimeEq;
        let refused = || DomainError::Rejected("join token is invalid, expired or already used".into());
        let token = self.join_tokens.get(token_id).ok_or_else(refused)?;
        let matches: bool = token.secret_hash.as_bytes().ct_eq(secret_hash.as_bytes()).into();
        if !matches
            || token.used_at_ms.is_some()
            || token.revoked_at_ms.is_some()
            || now >= token.expires_at_ms
            || token.coordinator_id.is_some()
        {
            return Err(refused());
        }
        if !request.roles.is_subset(&token.roles) || request.roles.is_empty() {
            return Err(DomainError::Invalid(format!(
                "requested roles {} are not within the token's roles {}",
                roles_text(&request.roles),
                roles_text(&token.roles)
            )));
        }
        let id = self.next_node_id.max(1);
        self.next_node_id = id + 1;
        touched.push(Touched::Counters);
        let mut labels = token.labels.clone();
        for (k, v) in &request.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let node = Node { id, labels, revoked: false, applied_revision: 0, cordoned: false, ..request.clone() };
        if let Some(t) = self.join_tokens.get_mut(token_id) {
            t.used_at_ms = Some(now);
            t.used_by_node = Some(id);
        }
        touched.push(Touched::JoinToken(token_id.to_string()));
        self.register_node(index, now, &node, touched)
    }

    pub(super) fn spend_coordinator_token(
        &mut self,
        now: u64,
        token_id: &str,
        secret_hash: &str,
        id: u64,
        touched: &mut Vec<Touched>,
    ) -> Response {
        use subtle::ConstantTimeEq;
        let refused =
            || DomainError::Rejected("coordinator token is invalid, expired, used, revoked or for another id".into());
        let token = self.join_tokens.get_mut(token_id).ok_or_else(refused)?;
        let matches: bool = token.secret_hash.as_bytes().ct_eq(secret_hash.as_bytes()).into();
        if !matches
            || token.used_at_ms.is_some()
            || token.revoked_at_ms.is_some()
            || now >= token.expires_at_ms
            || token.coordinator_id != Some(id)
        {
            return Err(refused());
        }
        if self.retired_coordinators.contains(&id) {
            return Err(DomainError::Conflict(format!("coordinator id {id} was removed and is never reused")));
        }
        token.used_at_ms = Some(now);
        touched.push(Touched::JoinToken(token_id.to_string()));
        Ok(Reply::Done)
    }

    /// Revokes a join token that has not been spent; a used or revoked one is a conflict.
    pub(super) fn revoke_join_token(&mut self, now: u64, id: &str, touched: &mut Vec<Touched>) -> Response {
        let token =
            self.join_tokens.get_mut(id).ok_or_else(|| DomainError::NotFound(format!("join token {id} not found")))?;
        if token.revoked_at_ms.is_some() {
            return Err(DomainError::Conflict(format!("join token {id} is already revoked")));
        }
        if let Some(used) = token.used_at_ms {
            return Err(DomainError::Conflict(format!(
                "join token {id} was used at {}; remove the member it admitted instead",
                crate::time::rfc3339(used)
            )));
        }
        token.revoked_at_ms = Some(now);
        touched.push(Touched::JoinToken(id.to_string()));
        Ok(Reply::Done)
    }

    pub(super) fn node_report(
        &mut self,
        now: u64,
        report: &Report,
        touched: &mut Vec<Touched>,
    ) -> (Response, BTreeMap<String, String>) {
        let mut details = BTreeMap::new();
        let Some(node) = self.nodes.get_mut(&report.node_id) else {
            return (Err(DomainError::NotFound(format!("node {} not found", report.node_id))), details);
        };
        if node.revoked {
            return (Err(DomainError::Rejected(format!("node {} is revoked", report.node_id))), details);
        }
        node.last_seen_ms = now;
        node.applied_revision = node.applied_revision.max(report.applied_revision);
        if let Some(c) = &report.capacity {
            node.capacity = c.clone();
        }
        touched.push(Touched::Node(report.node_id));
        details.insert("applied_revision".into(), report.applied_revision.to_string());
        for (name, status) in &report.tenants {
            let Ok(name) = TenantName::parse(name) else { continue };
            let Some(t) = self.tenants.get_mut(&name) else { continue };
            let placed_here =
                t.placement.db_node == Some(report.node_id) || t.placement.gateway_node == Some(report.node_id);
            if !placed_here {
                continue;
            }
            t.node_status.insert(report.node_id, status.clone());
            let before = t.status;
            refresh_readiness(t);
            if t.status != before {
                details.insert(format!("tenant/{name}"), t.status.as_str().to_string());
            }
            touched.push(Touched::Tenant(name));
        }
        (Ok(Reply::Done), details)
    }
}

pub(super) fn roles_text(roles: &BTreeSet<NodeRole>) -> String {
    roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect::<Vec<_>>().join(",")
}
