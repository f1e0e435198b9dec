//! The CLI's API commands: each subcommand as REST calls through `client`, answers printed by
//! `output`.

use super::*;

pub(super) async fn tenant(client: &Client, cmd: TenantCmd, out: Output) -> anyhow::Result<()> {
    let path = |n: &str| format!("/api/v1/tenant/{}", client::path_segment(n));
    let v = match cmd {
        TenantCmd::Create(c) => {
            let mut body = Map::new();
            body.insert("name".into(), c.name.into());
            insert_opt(&mut body, "db_quota", c.db_quota);
            insert_opt(&mut body, "vpn_enabled", c.vpn.map(Switch::on));
            insert_opt(&mut body, "public_api", c.public_api.map(Switch::on));
            insert_opt(&mut body, "ddl_enabled", c.ddl.map(Switch::on));
            insert_opt(&mut body, "tier", c.tier);
            insert_opt(&mut body, "db_type", c.db);
            insert_opt(&mut body, "access_mode", c.access);
            insert_opt(&mut body, "isolation", c.isolation);
            insert_opt(&mut body, "connection_limit", c.connection_limit);
            insert_opt(&mut body, "events_per_min", c.events_per_min);
            if c.dedicated {
                body.insert("dedicated".into(), true.into());
            }
            if !c.node_selector.is_empty() {
                body.insert("node_selector".into(), Value::Object(parse_selector(&c.node_selector)?));
            }
            let wait = match c.wait {
                true => Some(humantime::parse_duration(&c.wait_timeout).context("--wait-timeout")?),
                false => None,
            };
            let created = client.send("POST", "/api/v1/tenant", Some(Value::Object(body))).await?;
            let login = (created["db_user"].clone(), created["db_password"].clone());
            let mut shown = match wait {
                Some(timeout) => wait_active(client, &created, timeout).await?,
                None => created,
            };
            if out == Output::Table {
                output::tenant(out, &shown);
                say(format_args!("db user           {}", login.0.as_str().unwrap_or("-")));
                say(format_args!("db password       {}   (shown once; store it now)", login.1.as_str().unwrap_or("-")));
                return Ok(());
            }
            shown["db_user"] = login.0;
            shown["db_password"] = login.1;
            shown
        }
        TenantCmd::Get { name } => client.get(&path(&name)).await?,
        TenantCmd::List { status } => {
            let query: Vec<(&str, String)> = status.into_iter().map(|s| ("status", s)).collect();
            let v = client.get_query("/api/v1/tenants", &query).await?;
            output::tenants(out, &v);
            return Ok(());
        }
        TenantCmd::Update(u) => {
            let mut body = Map::new();
            insert_opt(&mut body, "db_quota", u.db_quota);
            insert_opt(&mut body, "vpn_enabled", u.vpn.map(Switch::on));
            insert_opt(&mut body, "public_api", u.public_api.map(Switch::on));
            insert_opt(&mut body, "ddl_enabled", u.ddl.map(Switch::on));
            insert_opt(&mut body, "tier", u.tier);
            insert_opt(&mut body, "access_mode", u.access);
            insert_opt(&mut body, "connection_limit", u.connection_limit);
            insert_opt(&mut body, "events_per_min", u.events_per_min);
            if body.is_empty() {
                bail!("tenant update needs at least one field to change");
            }
            client.send("PATCH", &path(&u.name), Some(Value::Object(body))).await?
        }
        TenantCmd::Suspend { name } => client.send("POST", &format!("{}/suspend", path(&name)), None).await?,
        TenantCmd::Resume { name } => client.send("POST", &format!("{}/resume", path(&name)), None).await?,
        TenantCmd::Delete { name } => client.send("DELETE", &path(&name), None).await?,
        TenantCmd::Restore { name } => client.send("POST", &format!("{}/restore", path(&name)), None).await?,
        TenantCmd::Purge { name, force } => {
            let q = if force { "?force=true" } else { "" };
            client.send("POST", &format!("{}/purge{q}", path(&name)), None).await?
        }
    };
    output::tenant(out, &v);
    Ok(())
}

/// Polls the tenant until it is active; prints each new status line to stderr while waiting.
pub(super) async fn wait_active(
    client: &Client,
    created: &Value,
    timeout: std::time::Duration,
) -> anyhow::Result<Value> {
    let name = created["name"].as_str().context("create returned no name")?.to_string();
    let path = format!("/api/v1/tenant/{}", client::path_segment(&name));
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let t = client.get(&path).await?;
        let status = t["status"].as_str().unwrap_or("unknown").to_string();
        if status == "active" {
            return Ok(t);
        }
        let line = format!("{status}: {}", t["status_reason"].as_str().unwrap_or("-"));
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
            let mut body = Map::new();
            body.insert("role".into(), role.into());
            insert_opt(&mut body, "tenant", tenant);
            insert_opt(&mut body, "description", description);
            insert_opt(&mut body, "expires_in", expires_in);
            let v = client.send("POST", "/api/v1/apikeys", Some(Value::Object(body))).await?;
            match out {
                Output::Json => output::print_json(&v),
                Output::Table => {
                    say(format_args!(
                        "created API key {} ({})",
                        v["key"]["id"].as_str().unwrap_or("?"),
                        v["key"]["role"].as_str().unwrap_or("?")
                    ));
                    say(format_args!("token (shown once, store it now): {}", v["token"].as_str().unwrap_or("?")));
                }
            }
        }
        ApiKeyCmd::List => output::api_keys(out, &client.get("/api/v1/apikeys").await?),
        ApiKeyCmd::Revoke { id } => {
            let v = client.send("DELETE", &format!("/api/v1/apikeys/{}", client::path_segment(&id)), None).await?;
            match out {
                Output::Json => output::print_json(&v),
                Output::Table => say(format_args!("revoked API key {}", v["id"].as_str().unwrap_or("?"))),
            }
        }
    }
    Ok(())
}

pub(super) async fn audit(client: &Client, cmd: AuditCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::List { tenant, since, limit, before, after } => {
            let mut query = Vec::new();
            if let Some(t) = tenant {
                query.push(("tenant", t));
            }
            if let Some(s) = since {
                query.push(("since", s));
            }
            if let Some(l) = limit {
                query.push(("limit", l.to_string()));
            }
            if let Some(b) = before {
                query.push(("before", b.to_string()));
            }
            if let Some(a) = after {
                query.push(("after", a.to_string()));
            }
            let (v, headers) = client.get_with_headers("/api/v1/audit", &query).await?;
            output::audit(out, &v);
            for (header, flag) in
                [(crate::api::audit_trail::NEXT_BEFORE, "--before"), (crate::api::audit_trail::NEXT_AFTER, "--after")]
            {
                if let Some(seq) = headers.get(header).and_then(|h| h.to_str().ok()) {
                    eprintln!("more entries: repeat with {flag} {seq}");
                }
            }
        }
        AuditCmd::Verify => {
            let v = client.get("/api/v1/audit/verify").await?;
            let ok = v["ok"].as_bool().unwrap_or(false);
            match out {
                Output::Json => output::print_json(&v),
                Output::Table if ok => say(format_args!("audit chain intact: {} entries verified", v["verified"])),
                Output::Table => {}
            }
            if !ok {
                bail!(
                    "audit chain broken at entry {}: {}",
                    v["broken"]["seq"],
                    v["broken"]["reason"].as_str().unwrap_or("unknown")
                );
            }
        }
        AuditCmd::Export { format: _ } => {
            // The whole trail, oldest first, a page at a time.
            let mut after = 0u64;
            loop {
                let query = [("after", after.to_string()), ("limit", "10000".to_string())];
                let (v, headers) = client.get_with_headers("/api/v1/audit", &query).await?;
                for entry in v.as_array().into_iter().flatten() {
                    say(format_args!("{}", serde_json::to_string(entry)?));
                }
                let next =
                    headers.get(crate::api::audit_trail::NEXT_AFTER).and_then(|h| h.to_str().ok()?.parse::<u64>().ok());
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
    let (v, action) = match cmd {
        NodeCmd::List => {
            output::nodes(out, &client.get("/api/v1/nodes").await?);
            return Ok(());
        }
        NodeCmd::Token(NodeTokenCmd::Create { roles, ttl, labels }) => {
            let body = json!({"roles": roles, "ttl": ttl, "labels": parse_selector(&labels)?});
            let v = client.send("POST", "/api/v1/nodes/tokens", Some(body)).await?;
            match out {
                Output::Json => output::print_json(&v),
                Output::Table => {
                    say(format_args!("join token (one use, shown once): {}", v["token"].as_str().unwrap_or("?")));
                    say(format_args!("CA fingerprint to pin: {}", v["ca_fingerprint"].as_str().unwrap_or("?")));
                    say(format_args!(
                        "expires: {}",
                        v["join_token"]["expires_at_ms"].as_u64().map(crate::time::rfc3339).unwrap_or_default()
                    ));
                }
            }
            return Ok(());
        }
        NodeCmd::Revoke { id } => (client.send("POST", &format!("/api/v1/nodes/{id}/revoke"), None).await?, "revoked"),
        NodeCmd::Cordon { id } => (client.send("POST", &format!("/api/v1/nodes/{id}/cordon"), None).await?, "cordoned"),
        NodeCmd::Uncordon { id } => {
            (client.send("POST", &format!("/api/v1/nodes/{id}/uncordon"), None).await?, "uncordoned")
        }
    };
    match out {
        Output::Json => output::print_json(&v),
        Output::Table => say(format_args!("{action} node {}", v["id"])),
    }
    Ok(())
}

pub(super) async fn cluster(client: &Client, cmd: ClusterCmd, out: Output) -> anyhow::Result<()> {
    let v = match cmd {
        ClusterCmd::Status => client.get("/api/v1/cluster").await?,
        ClusterCmd::Token(ClusterTokenCmd::Create { id, ttl }) => {
            let v = client.send("POST", "/api/v1/cluster/tokens", Some(json!({"id": id, "ttl": ttl}))).await?;
            match out {
                Output::Json => output::print_json(&v),
                Output::Table => {
                    say(format_args!(
                        "coordinator token for id {id} (one use, shown once): {}",
                        v["token"].as_str().unwrap_or("?")
                    ));
                    say(format_args!("CA fingerprint to pin: {}", v["ca_fingerprint"].as_str().unwrap_or("?")));
                    say(format_args!(
                        "start it with: berqenas-coordinator serve --data-dir DIR --id {id} --raft-listen … --api-listen … \\\n  --join https://COORDINATOR:7301 --token TOKEN --ca-pin {}",
                        v["ca_fingerprint"].as_str().unwrap_or("?")
                    ));
                }
            }
            return Ok(());
        }
        ClusterCmd::Token(ClusterTokenCmd::List) => {
            let v = client.get("/api/v1/cluster/tokens").await?;
            output::coordinator_tokens(out, &v);
            return Ok(());
        }
        ClusterCmd::Token(ClusterTokenCmd::Revoke { id }) => {
            let v =
                client.send("DELETE", &format!("/api/v1/cluster/tokens/{}", client::path_segment(&id)), None).await?;
            match out {
                Output::Json => output::print_json(&v),
                Output::Table => output::coordinator_tokens(out, &Value::Array(vec![v])),
            }
            return Ok(());
        }
        ClusterCmd::AddLearner { id, raft_addr, api_addr, node_addr } => {
            let body = json!({"id": id, "raft_addr": raft_addr, "api_addr": api_addr, "node_addr": node_addr});
            client.send("POST", "/api/v1/cluster/learners", Some(body)).await?
        }
        ClusterCmd::Promote { id } => client.send("POST", "/api/v1/cluster/voters", Some(json!({"id": id}))).await?,
        ClusterCmd::Remove { id } => client.send("DELETE", &format!("/api/v1/cluster/members/{id}"), None).await?,
    };
    output::cluster(out, &v);
    Ok(())
}
