//! The desired-state stream under faults: coordinator death, total control-plane outage,
//! revoked nodes and foreign certificates.

use crate::harness::Fleet;
use berqenas_proto::node as pb;
use berqenas_tests::wait_for;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[test]
fn agent_moves_to_another_coordinator_when_its_own_is_killed() {
    let mut f = Fleet::new(3);
    let a = f.add_agent("both", "gateway,db", "");
    f.ok(0, &["tenant", "create", "--name", "acme", "--wait", "--wait-timeout", "30s"]);
    let connected = wait_for("the agent to connect", Duration::from_secs(10), || f.agent_coordinator(a));
    f.kill_coord(connected);
    let other = (0..3).find(|i| *i != connected).expect("a survivor");
    let t = f.json(other, &["tenant", "create", "--name", "globex", "--wait", "--wait-timeout", "30s"]);
    assert_eq!(t["status"], "active", "{t}");
    assert!(f.agents[a].tenant_files().contains(&"globex".to_string()));
    let now = wait_for("the agent to reconnect elsewhere", Duration::from_secs(10), || f.agent_coordinator(a));
    assert_ne!(now, connected);
}

#[test]
fn agent_keeps_its_state_while_no_coordinator_answers() {
    let mut f = Fleet::new(1);
    let a = f.add_agent("both", "gateway,db", "");
    f.ok(0, &["tenant", "create", "--name", "acme", "--wait", "--wait-timeout", "30s"]);
    f.stop_coord(0);
    // Fail static: nothing is torn down while the control plane is away, across resyncs and
    // an agent restart.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(f.agents[a].tenant_files(), vec!["acme".to_string()]);
    if let Some(mut p) = f.agents[a].proc.take() {
        p.stop(Duration::from_secs(5));
    }
    std::fs::remove_file(f.agents[a].tenants_dir().join("acme.json")).expect("inject drift");
    f.start_agent(a);
    wait_for("the restarted agent to restore its last state offline", Duration::from_secs(10), || {
        (f.agents[a].tenant_files() == vec!["acme".to_string()]).then_some(())
    });
    f.start_coord(0);
    let t = f.json(0, &["tenant", "create", "--name", "globex", "--wait", "--wait-timeout", "30s"]);
    assert_eq!(t["status"], "active");
    let nodes = f.json(0, &["node", "list"]);
    assert!(
        nodes[0]["applied_revision"].as_u64().unwrap_or(0) >= t["revision"].as_u64().unwrap_or(u64::MAX),
        "{nodes}"
    );
}

#[test]
fn revoked_node_and_foreign_certificates_are_refused_at_the_handshake() {
    let mut f = Fleet::new(1);
    let a = f.add_agent("both", "gateway,db", "");
    wait_for("the agent to connect", Duration::from_secs(10), || f.agent_coordinator(a));
    let node_id = f.agents[a].node_id.to_string();
    f.ok(0, &["node", "revoke", &node_id]);
    let node_addr = format!("127.0.0.1:{}", f.coords[0].node);
    let dir = f.agents[a].dir.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    // The revoked node's own certificate no longer gets through.
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).expect("agent file");
    let (ca, cert, key) = (read("ca.pem"), read("node.pem"), read("node.key"));
    let revoked = Arc::new(berqenas_pki::client_config(&ca, Some((&cert, &key))).expect("tls"));
    let err = rt.block_on(async {
        let mut client = berqenas_node_agent::connect::node_client(&node_addr, revoked).await?;
        client.watch(pb::WatchRequest { last_applied_revision: 0 }).await.map_err(anyhow::Error::from)?;
        anyhow::Ok(())
    });
    assert!(err.is_err(), "revoked node must not watch");

    // A certificate from another CA claiming a real node id is refused too.
    let foreign_ca = berqenas_pki::ClusterCa::generate("evil", 2026).expect("ca");
    let kc = berqenas_pki::new_key_and_csr("x").expect("csr");
    let forged = foreign_ca
        .sign_csr(&kc.csr_pem, &berqenas_pki::Identity::Node(1), &[], SystemTime::now(), Duration::from_secs(600))
        .expect("sign");
    let tls = Arc::new(berqenas_pki::client_config(&ca, Some((&forged, &kc.key_pem))).expect("tls"));
    let err = rt.block_on(async {
        let mut client = berqenas_node_agent::connect::node_client(&node_addr, tls).await?;
        client.watch(pb::WatchRequest { last_applied_revision: 0 }).await.map_err(anyhow::Error::from)?;
        anyhow::Ok(())
    });
    assert!(err.is_err(), "a foreign certificate must not watch");

    // Refused handshakes are anonymous: the source's first real attempt is audited as itself, the
    // rest are counted in its summary (each second in this harness, one sample reason per action).
    wait_for("the refused handshakes in the audit trail", Duration::from_secs(15), || {
        let refusals: Vec<String> = f
            .audit()
            .into_iter()
            .filter(|e| {
                (e["action"] == "node.handshake" || e["action"] == "anonymous.refused") && e["outcome"] == "rejected"
            })
            .map(|e| e.to_string().to_lowercase())
            .collect();
        let summarised =
            refusals.iter().any(|r| r.contains("refused anonymous requests") && r.contains("node.handshake"));
        (refusals.iter().any(|r| r.contains("revoked")) && summarised).then_some(())
    });
}

#[test]
fn malformed_and_oversized_reports_are_refused_and_change_nothing() {
    let mut f = Fleet::new(1);
    let a = f.add_agent("both", "gateway,db", "");
    f.ok(0, &["tenant", "create", "--name", "acme", "--wait", "--wait-timeout", "30s"]);
    let before = f.json(0, &["tenant", "get", "acme"]);
    let dir = f.agents[a].dir.clone();
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).expect("agent file");
    let (ca, cert, key) = (read("ca.pem"), read("node.pem"), read("node.key"));
    let tls = Arc::new(berqenas_pki::client_config(&ca, Some((&cert, &key))).expect("tls"));
    let node_addr = format!("127.0.0.1:{}", f.coords[0].node);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    // 5 MB in one message: over the listener's 4 MiB limit.
    let huge = pb::StatusReport {
        applied_revision: 1,
        tenants: vec![pb::TenantStatus {
            name: "acme".into(),
            ready: false,
            reason: "x".repeat(5 << 20),
            revision: 1,
            db_bytes: 0,
            quota_exceeded: false,
            connections: 0,
            gateway: None,
            events_total: 0,
        }],
        capacity: None,
        ..Default::default()
    };
    let result = rt.block_on(async {
        let mut client = berqenas_node_agent::connect::node_client(&node_addr, tls.clone()).await?;
        client.report(tokio_stream::iter(vec![huge])).await.map_err(anyhow::Error::from)?;
        anyhow::Ok(())
    });
    assert!(result.is_err(), "an oversized report is refused");

    // Garbage bytes where a gRPC frame should be: the call fails, the coordinator carries on.
    let garbage = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let tcp = tokio::net::TcpStream::connect(&node_addr).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let mut tls_stream = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await?;
        tls_stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff").await?;
        tls_stream.flush().await?;
        anyhow::Ok(())
    });
    assert!(garbage.is_ok(), "the garbage was sent: {garbage:?}");

    let after = f.json(0, &["tenant", "get", "acme"]);
    assert_eq!(after["status"], "active");
    assert_eq!(after["node_status"], before["node_status"], "nothing changed");
    // The coordinator still serves the real agent.
    let t = f.json(0, &["tenant", "create", "--name", "globex", "--wait", "--wait-timeout", "30s"]);
    assert_eq!(t["status"], "active");
}
