//! The CLI's API commands: each subcommand as REST calls through `client` with the API's own
//! request and response types (`api::dto`), answers printed by `output`.

use super::client::{path_segment, NO_BODY};
use super::*;
use crate::api::dto::{
    AddLearnerBody, ApiKeyView, AuditEntryView, AuditFilterQuery, AuditVerification, ClusterStatus, CoordinatorToken,
    CreateApiKeyBody, CreateCoordinatorTokenBody, CreateJoinTokenBody, CreateTenantBody, CreatedApiKey,
    CreatedJoinToken, CreatedTenant, NodeView, PageQuery, PromoteBody, TenantView, NEXT_AFTER, NEXT_BEFORE,
};
use reqwest::Method;

fn tenant_path(name: &str) -> String {
    format!("/api/v1/tenant/{}", path_segment(name))
}

pub(super) async fn tenant(client: &Client, cmd: TenantCmd, out: Output) -> anyhow::Result<()> {
    let shown: TenantView = match cmd {
        TenantCmd::Create(c) => return create_tenant(client, c, out).await,
        TenantCmd::Get { name } => client.get(&tenant_path(&name)).await?,
        TenantCmd::List { status } => {
            let query: Vec<(&str, String)> = status.into_iter().map(|s| ("status", s)).collect();
            let (tenants, _): (Vec<TenantView>, _) = client.get_with_headers("/api/v1/tenants", &query).await?;
            output::tenants(out, &tenants);
            return Ok(());
        }
        TenantCmd::Update(u) => {
            let mut body = u.settings.body()?;
            u.backup.apply(&mut body)?;
            if body == Default::default() {
                bail!("tenant update needs at least one field to change");
            }
            client.send(Method::PATCH, &tenant_path(&u.name), Some(&body)).await?
        }
        TenantCmd::Suspend { name } => lifecycle(client, &name, "suspend").await?,
        TenantCmd::Resume { name } => lifecycle(client, &name, "resume").await?,
        TenantCmd::Delete { name } => client.send(Method::DELETE, &tenant_path(&name), NO_BODY).await?,
        TenantCmd::Restore { name } => lifecycle(client, &name, "restore").await?,
        TenantCmd::Purge { name, force } => {
            let action = if force { "purge?force=true" } else { "purge" };
            lifecycle(client, &name, action).await?
        }
    };
    output::tenant(out, &shown);
    Ok(())
}

async fn lifecycle(client: &Client, name: &str, action: &str) -> anyhow::Result<TenantView> {
    client.send(Method::POST, &format!("{}/{action}", tenant_path(name)), NO_BODY).await
}

async fn create_tenant(client: &Client, c: CreateTenant, out: Output) -> anyhow::Result<()> {
    let s = c.settings.body()?;
    if s.bandwidth.is_some() || s.device_to_device.is_some() {
        bail!("--bandwidth and --device-to-device are set with `tenant update` once the tenant exists");
    }
    let body = CreateTenantBody {
        name: c.name,
        db_quota: s.db_quota,
        vpn_enabled: s.vpn_enabled,
        public_api: s.public_api,
        ddl_enabled: s.ddl_enabled,
        tier: s.tier,
        db_type: wire(c.db)?,
        isolation: wire(c.isolation)?,
        access_mode: s.access_mode,
        connection_limit: s.connection_limit,
        events_per_min: s.events_per_min,
        dedicated: c.dedicated.then_some(true),
        node_selector: Some(parse_selector(&c.node_selector)?).filter(|sel| !sel.is_empty()),
    };
    let wait = match c.wait {
        true => Some(humantime::parse_duration(&c.wait_timeout).context("--wait-timeout")?),
        false => None,
    };
    let mut created: CreatedTenant = client.send(Method::POST, "/api/v1/tenant", Some(&body)).await?;
    if let Some(timeout) = wait {
        created.tenant = wait_active(client, &created.tenant.name.to_string(), timeout).await?;
    }
    match out {
        Output::Json => output::print_json(&created),
        Output::Table | Output::Csv => {
            output::tenant(out, &created.tenant);
            say(format_args!("db user           {}", created.db_user));
            say(format_args!("db password       {}   (shown once; store it now)", created.db_password));
        }
    }
    Ok(())
}

/// Polls the tenant until it is active; prints each new status line to stderr while waiting.
async fn wait_active(client: &Client, name: &str, timeout: std::time::Duration) -> anyhow::Result<TenantView> {
    let path = tenant_path(name);
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let t: TenantView = client.get(&path).await?;
        if t.status == crate::state::tenant::TenantStatus::Active {
            return Ok(t);
        }
        let line = format!("{}: {}", t.status.as_str(), t.status_reason.as_deref().unwrap_or("-"));
        if started.elapsed() >= timeout {
            bail!("tenant {name} is not active after {}: {line}", humantime::format_duration(timeout));
        }
        if line != last {
            eprintln!("waiting for {name}: {line}");
            last = line;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

pub(super) async fn apikey(client: &Client, cmd: ApiKeyCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        ApiKeyCmd::Create { role, tenant, description, expires_in } => {
            let role = wire(Some(role))?.context("--role is required")?;
            let body = CreateApiKeyBody { role, tenant, description, expires_in };
            let created: CreatedApiKey = client.send(Method::POST, "/api/v1/apikeys", Some(&body)).await?;
            match out {
                Output::Json => output::print_json(&created),
                Output::Table | Output::Csv => {
                    say(format_args!("created API key {} ({})", created.key.id, output::wire_name(&created.key.role)));
                    say(format_args!("token (shown once, store it now): {}", created.token));
                }
            }
        }
        ApiKeyCmd::List => output::api_keys(out, &client.get::<Vec<ApiKeyView>>("/api/v1/apikeys").await?),
        ApiKeyCmd::Revoke { id } => {
            let key: ApiKeyView =
                client.send(Method::DELETE, &format!("/api/v1/apikeys/{}", path_segment(&id)), NO_BODY).await?;
            match out {
                Output::Json => output::print_json(&key),
                Output::Table | Output::Csv => say(format_args!("revoked API key {}", key.id)),
            }
        }
    }
    Ok(())
}

/// `GET /api/v1/audit`'s two query parts in one query string.
#[derive(serde::Serialize)]
struct AuditListQuery {
    #[serde(flatten)]
    filter: AuditFilterQuery,
    #[serde(flatten)]
    page: PageQuery,
}

pub(super) async fn audit(client: &Client, cmd: AuditCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::List { tenant, since, limit, before, after } => {
            let query = AuditListQuery {
                filter: AuditFilterQuery { tenant, since },
                page: PageQuery { limit, before, after, consistency: None },
            };
            let (entries, headers): (Vec<AuditEntryView>, _) = client.get_with_headers("/api/v1/audit", &query).await?;
            output::audit(out, &entries);
            for (header, flag) in [(NEXT_BEFORE, "--before"), (NEXT_AFTER, "--after")] {
                if let Some(seq) = headers.get(header).and_then(|h| h.to_str().ok()) {
                    eprintln!("more entries: repeat with {flag} {seq}");
                }
            }
        }
        AuditCmd::Verify => {
            let v: AuditVerification = client.get("/api/v1/audit/verify").await?;
            match out {
                Output::Json => output::print_json(&v),
                Output::Table | Output::Csv if v.ok => {
                    say(format_args!("audit chain intact: {} entries verified", v.verified))
                }
                Output::Table | Output::Csv => {}
            }
            if let Some(broken) = v.broken.filter(|_| !v.ok) {
                bail!("audit chain broken at entry {}: {}", broken.seq, broken.reason);
            }
            if !v.ok {
                bail!("audit chain broken");
            }
        }
        AuditCmd::Export { format: _ } => {
            // The whole trail, oldest first, a page at a time.
            let mut after = 0u64;
            loop {
                let page = PageQuery { limit: Some(10_000), before: None, after: Some(after), consistency: None };
                let (entries, headers): (Vec<AuditEntryView>, _) =
                    client.get_with_headers("/api/v1/audit", &page).await?;
                for entry in &entries {
                    say(format_args!("{}", serde_json::to_string(entry)?));
                }
                let next = headers.get(NEXT_AFTER).and_then(|h| h.to_str().ok()?.parse::<u64>().ok());
                match next {
                    Some(seq) if seq > after => after = seq,
                    _ => break,
                }
            }
        }
    }
    Ok(())
}

pub(super) async fn node(client: &Client, cmd: NodeCmd, out: Output) -> anyhow::Result<()> {
    let (action, verb) = match cmd {
        NodeCmd::List => {
            output::nodes(out, &client.get::<Vec<NodeView>>("/api/v1/nodes").await?);
            return Ok(());
        }
        NodeCmd::Show { id } => {
            let nodes = client.get::<Vec<NodeView>>("/api/v1/nodes").await?;
            let node = nodes.iter().find(|n| n.id == id).with_context(|| format!("node {id} not found"))?;
            output::node(out, node);
            return Ok(());
        }
        NodeCmd::Token(NodeTokenCmd::Create { roles, ttl, labels }) => {
            let roles = roles.into_iter().map(|r| wire(Some(r))).collect::<anyhow::Result<Option<Vec<_>>>>()?;
            let body = CreateJoinTokenBody {
                roles: roles.unwrap_or_default(),
                ttl: Some(ttl),
                labels: Some(parse_selector(&labels)?),
            };
            let created: CreatedJoinToken = client.send(Method::POST, "/api/v1/nodes/tokens", Some(&body)).await?;
            match out {
                Output::Json => output::print_json(&created),
                Output::Table | Output::Csv => {
                    say(format_args!("join token (one use, shown once): {}", created.token));
                    say(format_args!("CA fingerprint to pin: {}", created.ca_fingerprint));
                    say(format_args!("expires: {}", crate::time::rfc3339(created.join_token.expires_at_ms)));
                }
            }
            return Ok(());
        }
        NodeCmd::Revoke { id } => ((id, "revoke"), "revoked"),
        NodeCmd::Cordon { id } => ((id, "cordon"), "cordoned"),
        NodeCmd::Uncordon { id } => ((id, "uncordon"), "uncordoned"),
    };
    let (id, action) = action;
    let node: NodeView = client.send(Method::POST, &format!("/api/v1/nodes/{id}/{action}"), NO_BODY).await?;
    match out {
        Output::Json => output::print_json(&node),
        Output::Table | Output::Csv => say(format_args!("{verb} node {}", node.id)),
    }
    Ok(())
}

pub(super) async fn cluster(client: &Client, cmd: ClusterCmd, out: Output) -> anyhow::Result<()> {
    let status: ClusterStatus = match cmd {
        ClusterCmd::Status => client.get("/api/v1/cluster").await?,
        ClusterCmd::Token(ClusterTokenCmd::Create { id, ttl }) => {
            let body = CreateCoordinatorTokenBody { id, ttl: Some(ttl) };
            let created: CreatedJoinToken = client.send(Method::POST, "/api/v1/cluster/tokens", Some(&body)).await?;
            match out {
                Output::Json => output::print_json(&created),
                Output::Table | Output::Csv => {
                    let pin = &created.ca_fingerprint;
                    say(format_args!("coordinator token for id {id} (one use, shown once): {}", created.token));
                    say(format_args!("CA fingerprint to pin: {pin}"));
                    say(format_args!(
                        "start it with: berqenas-coordinator serve --data-dir DIR --id {id} --raft-listen … --api-listen … \\\n  --join https://COORDINATOR:7301 --token TOKEN --ca-pin {pin}"
                    ));
                }
            }
            return Ok(());
        }
        ClusterCmd::Token(ClusterTokenCmd::List) => {
            output::coordinator_tokens(out, &client.get::<Vec<CoordinatorToken>>("/api/v1/cluster/tokens").await?);
            return Ok(());
        }
        ClusterCmd::Token(ClusterTokenCmd::Revoke { id }) => {
            let token: CoordinatorToken =
                client.send(Method::DELETE, &format!("/api/v1/cluster/tokens/{}", path_segment(&id)), NO_BODY).await?;
            match out {
                Output::Json => output::print_json(&token),
                Output::Table | Output::Csv => output::coordinator_tokens(out, &[token]),
            }
            return Ok(());
        }
        ClusterCmd::AddLearner { id, raft_addr, api_addr, node_addr } => {
            let body = AddLearnerBody { id, raft_addr, api_addr, node_addr };
            client.send(Method::POST, "/api/v1/cluster/learners", Some(&body)).await?
        }
        ClusterCmd::Promote { id } => {
            client.send(Method::POST, "/api/v1/cluster/voters", Some(&PromoteBody { id })).await?
        }
        ClusterCmd::Remove { id } => {
            client.send(Method::DELETE, &format!("/api/v1/cluster/members/{id}"), NO_BODY).await?
        }
    };
    output::cluster(out, &status);
    Ok(())
}
