//! The realtime role against real components: a throwaway PostgreSQL (wal_level = logical) with
//! tenants made by the PostgreSQL driver, a test cluster CA signing the node's and the devices'
//! certificates, the realtime server on loopback (the agent's module, not its binary), a tonic
//! client presenting device certificates, and an HTTP client reading Server-Sent Events.

use berqenas_node_agent::driver::Driver;
use berqenas_proto::realtime::{Event, PublishRequest};
use berqenas_tests::postgres::Postgres;
use berqenas_tests::realtime::{customer_key, device, event, ingest, serve, tenant, uuid, Pki, SseReader};
use std::time::Duration;
use tonic::Code;

pub(crate) struct Env {
    pub(crate) url: String,
    pub(crate) db: sqlx::PgPool,
    pub(crate) pki: Pki,
    _pg: Postgres,
    pub(crate) tmp: tempfile::TempDir,
}

/// PostgreSQL on loopback with `tenants` made by the agent's PostgreSQL driver.
pub(crate) async fn env(tenants: &[berqenas_node_agent::assignment::DbTenant]) -> Env {
    let tmp = tempfile::tempdir().expect("tmp");
    let pg = Postgres::start_loopback(tmp.path());
    let url = format!("postgres://postgres:{}@127.0.0.1:{}/postgres", pg.password, pg.port);
    let mut driver = berqenas_node_agent::db::postgres::PostgresDriver::new(
        url.clone(),
        None,
        Duration::from_secs(10),
        Default::default(),
    );
    let statuses = driver.reconcile(tenants).await;
    assert!(statuses.iter().all(|s| s.ready), "tenants made: {statuses:?}");
    let db = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&url).await.expect("connect");
    Env { url, db, pki: Pki::new(), _pg: pg, tmp }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Publishes `batches` on one stream; the acks, or the status the stream ended with.
async fn publish(
    client: &mut berqenas_proto::realtime::ingest_client::IngestClient<tonic::transport::Channel>,
    batches: Vec<Vec<Event>>,
) -> Result<Vec<Vec<String>>, tonic::Status> {
    let reqs = batches.into_iter().map(|events| PublishRequest { events }).collect::<Vec<_>>();
    let mut acks = client.publish(tokio_stream::iter(reqs)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(a) = acks.message().await? {
        out.push(a.ids);
    }
    Ok(out)
}

async fn count(db: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.expect(sql)
}

#[test]
fn realtime_ingest_stores_each_event_once_after_commit_and_keeps_devices_in_their_tenant() {
    runtime().block_on(async {
        let mut acme = tenant("acme", 1, &["plc-1", "plc-2"], &[], 1_000_000);
        let globex = tenant("globex", 2, &["plc-1"], &[], 5);
        let e = env(&[acme.clone(), globex.clone()]).await;
        let (rt, port, _server) = serve(&e.pki, &e.url, &[acme.clone(), globex.clone()]).await;

        // Published, acknowledged after commit, stored once even when the batch is resent.
        let mut plc1 = ingest(port, e.pki.client(Some(&device("acme", "plc-1")))).await;
        let batch: Vec<Event> = (0..3).map(|i| event(&uuid(), "temp", &format!("{{\"c\": {i}}}"))).collect();
        let ids: Vec<String> = batch.iter().map(|e| e.id.clone()).collect();
        let acks = publish(&mut plc1, vec![batch.clone()]).await.expect("published");
        assert_eq!(acks, vec![ids.clone()]);
        let stored = "SELECT count(*) FROM tenant_acme.events WHERE device_id = 'plc-1'";
        assert_eq!(count(&e.db, stored).await, 3);
        assert_eq!(publish(&mut plc1, vec![batch.clone(), batch]).await.expect("resent").len(), 2);
        assert_eq!(count(&e.db, stored).await, 3, "resends never duplicate");
        let payload: serde_json::Value =
            sqlx::query_scalar("SELECT payload FROM tenant_acme.events WHERE id = $1::text::uuid")
                .bind(&ids[2])
                .fetch_one(&e.db)
                .await
                .expect("row");
        assert_eq!(payload["c"], 2);
        assert_eq!(count(&e.db, "SELECT count(*) FROM tenant_globex.events").await, 0, "plc-1 of acme wrote only acme");

        // Identity comes from the certificate only.
        let refused = |r: Result<Vec<Vec<String>>, tonic::Status>| r.expect_err("refused").code();
        let one = || vec![vec![event(&uuid(), "t", "1")]];
        let mut stranger = ingest(port, e.pki.client(Some(&device("acme", "plc-9")))).await;
        assert_eq!(refused(publish(&mut stranger, one()).await), Code::PermissionDenied, "not in the assignment");
        let mut elsewhere = ingest(port, e.pki.client(Some(&device("umbrella", "plc-1")))).await;
        assert_eq!(refused(publish(&mut elsewhere, one()).await), Code::PermissionDenied, "tenant not here");
        let mut anonymous = ingest(port, e.pki.client(None)).await;
        assert_eq!(refused(publish(&mut anonymous, one()).await), Code::Unauthenticated);
        let mut node = ingest(port, e.pki.client(Some(&berqenas_pki::Identity::Node(2)))).await;
        assert_eq!(refused(publish(&mut node, one()).await), Code::Unauthenticated, "a node is not a device");
        let other_ca = Pki::new();
        let foreign = e.pki.client_signed_by(&other_ca.ca, Some(&device("acme", "plc-1")));
        let handshake = tokio::time::timeout(Duration::from_secs(5), async {
            let mut c = ingest(port, foreign).await;
            publish(&mut c, one()).await
        });
        let refused_handshake = handshake.await.expect("answered");
        assert!(refused_handshake.is_err(), "a certificate of another CA is refused");
        assert_eq!(count(&e.db, stored).await, 3);
        let bad = vec![vec![event("not-a-uuid", "t", "1")]];
        assert_eq!(refused(publish(&mut plc1, bad).await), Code::InvalidArgument);

        // A device removed from the assignment is refused on its next batch.
        let mut plc2 = ingest(port, e.pki.client(Some(&device("acme", "plc-2")))).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut acks = plc2.publish(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("open").into_inner();
        tx.send(PublishRequest { events: vec![event(&uuid(), "t", "1")] }).await.expect("send");
        assert!(acks.message().await.expect("ack").is_some());
        acme.db.devices = vec!["plc-1".into()];
        rt.set(&[acme.clone(), globex.clone()]);
        tx.send(PublishRequest { events: vec![event(&uuid(), "t", "1")] }).await.expect("send");
        assert_eq!(acks.message().await.expect_err("refused").code(), Code::PermissionDenied);

        // Over the events/min quota (globex: 5) the stream ends with RESOURCE_EXHAUSTED.
        let mut g = ingest(port, e.pki.client(Some(&device("globex", "plc-1")))).await;
        let five = (0..5).map(|_| event(&uuid(), "t", "1")).collect();
        assert_eq!(publish(&mut g, vec![five]).await.expect("within quota").len(), 1);
        assert_eq!(refused(publish(&mut g, one()).await), Code::ResourceExhausted);
        assert_eq!(count(&e.db, "SELECT count(*) FROM tenant_globex.events").await, 5);

        // Usage: events stored, resends not counted.
        let usage = rt.events_total();
        assert_eq!((usage.get("acme").copied(), usage.get("globex").copied()), (Some(4), Some(5)));
    });
}

/// Subscribes to `tenant` with `key` after `cursor`; waits while the feed starts (503).
async fn subscribe(
    http: &reqwest::Client,
    port: u16,
    tenant: &str,
    key: &str,
    cursor: Option<&str>,
) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut req = http.get(format!("https://127.0.0.1:{port}/v1/tenants/{tenant}/events")).bearer_auth(key);
        if let Some(c) = cursor {
            req = req.header("Last-Event-ID", c);
        }
        let resp = req.send().await.expect("subscribe");
        if resp.status() != 503 || tokio::time::Instant::now() > deadline {
            return resp;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Inserts rows as the tenant's own database user (its SQL, not the ingest).
async fn tenant_sql(db: &sqlx::PgPool, tenant: &str, kinds: &[&str]) {
    let mut tx = db.begin().await.expect("begin");
    sqlx::query(&format!("SET LOCAL ROLE tenant_{tenant}_user")).execute(&mut *tx).await.expect("role");
    for k in kinds {
        sqlx::query(&format!(
            "INSERT INTO tenant_{tenant}.events (device_id, event_type, payload) VALUES ('app', $1, '{{}}')"
        ))
        .bind(k)
        .execute(&mut *tx)
        .await
        .expect("insert");
    }
    tx.commit().await.expect("commit");
}

async fn kinds(reader: &mut SseReader, n: usize) -> (Vec<String>, String) {
    let mut out = Vec::new();
    let mut last = String::new();
    for _ in 0..n {
        let (id, data) = reader.next(Duration::from_secs(10)).await.expect("an event");
        let v: serde_json::Value = serde_json::from_str(&data).expect("json");
        out.push(v["type"].as_str().unwrap_or_default().to_string());
        last = id;
    }
    (out, last)
}

#[test]
fn realtime_subscribers_get_every_committed_row_in_order_and_resume_exactly_after_a_disconnect_and_a_restart() {
    runtime().block_on(async {
        let (key_a, sub_a) = customer_key(0xa1);
        let (key_b, sub_b) = customer_key(0xb2);
        let acme = tenant("acme", 1, &["plc-1"], &[sub_a], 1_000_000);
        let globex = tenant("globex", 2, &["plc-1"], &[sub_b], 1_000_000);
        let all = [acme, globex];
        let e = env(&all).await;
        let (rt, port, server) = serve(&e.pki, &e.url, &all).await;
        let http = e.pki.http_client();

        // Keys are per tenant: B's key cannot read A's stream; no key is 401.
        assert_eq!(subscribe(&http, port, "acme", &key_b, None).await.status(), 403);
        assert_eq!(subscribe(&http, port, "globex", &key_a, None).await.status(), 403);
        let anonymous = http.get(format!("https://127.0.0.1:{port}/v1/tenants/acme/events")).send().await.expect("get");
        assert_eq!(anonymous.status(), 401);

        // Every committed row, whatever inserted it, in commit order.
        let resp = subscribe(&http, port, "acme", &key_a, None).await;
        assert_eq!(resp.status(), 200);
        let mut a = SseReader::new(resp);
        let mut b = SseReader::new(subscribe(&http, port, "globex", &key_b, None).await);
        tenant_sql(&e.db, "acme", &["sql-1"]).await;
        let mut plc = ingest(port, e.pki.client(Some(&device("acme", "plc-1")))).await;
        publish(&mut plc, vec![vec![event(&uuid(), "dev-1", "{}"), event(&uuid(), "dev-2", "{}")]]).await.expect("pub");
        tenant_sql(&e.db, "acme", &["sql-2"]).await;
        let (got, cursor) = kinds(&mut a, 4).await;
        assert_eq!(got, ["sql-1", "dev-1", "dev-2", "sql-2"]);
        assert!(b.next(Duration::from_millis(500)).await.is_none(), "globex sees nothing of acme");
        // The live slot is followed over a replication connection (rows are sent as they
        // commit), not polled through SQL.
        let streamed = "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s \
                        ON s.active_pid = r.pid WHERE s.slot_name = 'berqenas_rt_acme'";
        assert_eq!(count(&e.db, streamed).await, 1, "acme's live slot is streamed");

        // Disconnected; rows committed meanwhile; the resume gets exactly those.
        drop(a);
        tenant_sql(&e.db, "acme", &["gap-1", "gap-2"]).await;
        tenant_sql(&e.db, "acme", &["gap-3"]).await;
        let mut a = SseReader::new(subscribe(&http, port, "acme", &key_a, Some(&cursor)).await);
        let (got, _) = kinds(&mut a, 3).await;
        assert_eq!(got, ["gap-1", "gap-2", "gap-3"]);
        assert!(a.next(Duration::from_millis(500)).await.is_none(), "nothing repeated");
        drop(a);

        // The agent restarts (its window is gone from memory); rows committed while it is down;
        // the same cursor still resumes exactly, from the keep slot.
        server.abort();
        rt.shutdown();
        drop(rt);
        tenant_sql(&e.db, "acme", &["down-1"]).await;
        let (rt2, port2, _server2) = serve(&e.pki, &e.url, &all).await;
        let mut a = SseReader::new(subscribe(&http, port2, "acme", &key_a, Some(&cursor)).await);
        let (got, _) = kinds(&mut a, 4).await;
        assert_eq!(got, ["gap-1", "gap-2", "gap-3", "down-1"]);
        assert!(a.next(Duration::from_millis(500)).await.is_none(), "nothing repeated after the restart");

        // A cursor older than the window is refused rather than resumed with a hole.
        let old = subscribe(&http, port2, "acme", &key_a, Some("000000000000000000000000")).await;
        assert_eq!(old.status(), 410);

        // Filters: by type.
        let resp = http
            .get(format!("https://127.0.0.1:{port2}/v1/tenants/acme/events?type=only-this"))
            .bearer_auth(&key_a)
            .send()
            .await
            .expect("get");
        let mut f = SseReader::new(resp);
        tenant_sql(&e.db, "acme", &["other", "only-this"]).await;
        let (got, _) = kinds(&mut f, 1).await;
        assert_eq!(got, ["only-this"]);

        // The key removed from the assignment: the open stream ends at its next row, and a new
        // subscription is refused.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut keyless = all.clone();
        keyless[0].db.subscriber_keys.clear();
        rt2.set(&keyless);
        tenant_sql(&e.db, "acme", &["only-this"]).await;
        assert!(f.next(Duration::from_secs(5)).await.is_none(), "the stream of a revoked key ends");
        assert_eq!(subscribe(&http, port2, "acme", &key_a, None).await.status(), 403);
        drop(f);

        // Purged from this node: its slots and publication go (before its data would).
        rt2.set(&all[1..]);
        rt2.converge().await;
        let objects = |t: &'static str| {
            let db = e.db.clone();
            async move {
                let slots: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $1")
                        .bind(format!("berqenas\\_rt%\\_{t}"))
                        .fetch_one(&db)
                        .await
                        .expect("slots");
                let publications: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_publication WHERE pubname = $1")
                    .bind(format!("berqenas_rt_{t}"))
                    .fetch_one(&db)
                    .await
                    .expect("publications");
                (slots, publications)
            }
        };
        assert_eq!(objects("acme").await, (0, 0), "acme's slots and publication dropped");
        assert_eq!(objects("globex").await, (2, 1), "globex keeps its own");
    });
}

/// The realtime role in a process of its own (`bench-realtime serve`: the agent's module for
/// `bench_tenant()`), listening on `port`.
pub(crate) fn ingest_process(e: &Env, port: u16) -> berqenas_tests::Proc {
    let dir = e.tmp.path().to_string_lossy().into_owned();
    let p = berqenas_tests::Proc::spawn(
        &format!("ingest-{port}"),
        std::path::Path::new(env!("CARGO_BIN_EXE_bench-realtime")),
        &["serve", &e.url, &dir, &port.to_string()],
        e.tmp.path(),
    );
    berqenas_tests::wait_for("the ingest to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    p
}

#[test]
fn realtime_ingest_sigkilled_mid_stream_keeps_every_acknowledged_event_once() {
    let rt = runtime();
    let bench = berqenas_tests::realtime::bench_tenant();
    let e = rt.block_on(env(std::slice::from_ref(&bench)));
    berqenas_tests::realtime::write_node_files(&e.pki, e.tmp.path());
    let batches: Vec<Vec<Event>> =
        (0..200).map(|_| (0..50).map(|i| event(&uuid(), "load", &format!("{{\"i\": {i}}}"))).collect()).collect();
    let port = berqenas_tests::free_port();
    let mut first = ingest_process(&e, port);
    let acked: Vec<String> = rt.block_on(async {
        let mut client = ingest(port, e.pki.client(Some(&device("bench", "dev-0")))).await;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let mut acks =
            client.publish(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("open").into_inner();
        let sender = {
            let batches = batches.clone();
            tokio::spawn(async move {
                for b in batches {
                    if tx.send(PublishRequest { events: b }).await.is_err() {
                        return;
                    }
                }
            })
        };
        let mut acked = Vec::new();
        while let Ok(Some(a)) = acks.message().await {
            acked.extend(a.ids);
            if acked.len() >= 20 * 50 {
                // SIGKILL, with batches in flight: no flush, no goodbye.
                first.kill();
            }
        }
        sender.abort();
        acked
    });
    eprintln!("acknowledged before the kill: {}", acked.len());
    assert!(acked.len() >= 1000 && acked.len() < 10_000, "killed mid-stream after {} acks", acked.len());
    rt.block_on(async {
        let present: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_bench.events WHERE id::text = ANY($1)")
            .bind(&acked)
            .fetch_one(&e.db)
            .await
            .expect("count");
        assert_eq!(present as usize, acked.len(), "every acknowledged event is stored");
    });
    // The device resends everything it has not seen acknowledged (here: all) to the restarted
    // ingest; each event is stored once.
    let port2 = berqenas_tests::free_port();
    let _second = ingest_process(&e, port2);
    rt.block_on(async {
        let mut client = ingest(port2, e.pki.client(Some(&device("bench", "dev-0")))).await;
        let acks = publish(&mut client, batches).await.expect("resent");
        assert_eq!(acks.len(), 200);
        assert_eq!(count(&e.db, "SELECT count(*) FROM tenant_bench.events").await, 10_000, "each event once");
    });
}

#[test]
fn realtime_serves_a_tenant_with_its_own_database_and_lets_its_purge_drop_the_database() {
    runtime().block_on(async {
        let (key, sub) = customer_key(0x5c);
        let mut solo = tenant("solo", 3, &["plc-1"], &[sub], 1_000_000);
        solo.db.isolation = berqenas_node_agent::assignment::Isolation::Database;
        let e = env(std::slice::from_ref(&solo)).await;
        let (rt, port, _server) = serve(&e.pki, &e.url, std::slice::from_ref(&solo)).await;
        let http = e.pki.http_client();
        let mut reader = SseReader::new(subscribe(&http, port, "solo", &key, None).await);
        let mut plc = ingest(port, e.pki.client(Some(&device("solo", "plc-1")))).await;
        publish(&mut plc, vec![vec![event(&uuid(), "in-own-db", "{}")]]).await.expect("published");
        let (got, _) = kinds(&mut reader, 1).await;
        assert_eq!(got, ["in-own-db"]);
        drop(reader);

        // Purged: the realtime role lets go of the database first, so the driver can drop it.
        rt.set(&[]);
        rt.converge().await;
        let mut driver = berqenas_node_agent::db::postgres::PostgresDriver::new(
            e.url.clone(),
            None,
            Duration::from_secs(10),
            Default::default(),
        );
        driver.reconcile(&[]).await;
        assert_eq!(count(&e.db, "SELECT count(*) FROM pg_database WHERE datname = 'tenant_solo'").await, 0);
        assert_eq!(count(&e.db, "SELECT count(*) FROM pg_replication_slots").await, 0);
    });
}

#[test]
fn realtime_runs_in_the_agent_binary_with_its_node_certificate_and_follows_the_tenants_it_is_given() {
    use crate::harness::Fleet;
    let mut f = Fleet::new(1);
    let pg = Postgres::start_loopback(f.tmp.path());
    let url = format!("postgres://postgres:{}@127.0.0.1:{}/postgres", pg.password, pg.port);
    let port = berqenas_tests::free_port();
    let listen = format!("127.0.0.1:{port}");
    f.add_agent_with_driver(
        "db1",
        "db",
        "",
        &["--driver", "postgres", "--driver-url", &url, "--realtime-listen", &listen],
    );
    let toml = std::fs::read_to_string(f.agents[0].dir.join("agent.toml")).expect("agent.toml");
    assert!(toml.contains("[realtime]") && toml.contains(&listen), "{toml}");
    f.ok(0, &["tenant", "create", "--name", "acme", "--vpn", "disabled", "--wait", "--wait-timeout", "30s"]);
    let ca = std::fs::read_to_string(f.agents[0].dir.join("ca.pem")).expect("ca");
    let http = berqenas_tests::realtime::node_http_client(&ca);
    let rt = runtime();
    rt.block_on(async {
        let db = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.expect("connect");
        let slots =
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('berqenas_rt_acme', 'berqenas_rtk_acme')";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while count(&db, slots).await < 2 {
            assert!(tokio::time::Instant::now() < deadline, "the agent made acme's slots");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The node's own certificate on the realtime port; a key this tenant does not have is
        // refused (this coordinator sends no subscriber keys yet).
        let (key, _) = customer_key(0x33);
        let resp = http
            .get(format!("https://{listen}/v1/tenants/acme/events"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("the agent serves the realtime port");
        assert_eq!(resp.status(), 403);
        drop(resp);
        // Deleted, the data (and the feed) stay; purged, the agent drops the tenant's slots.
        f.ok(0, &["tenant", "delete", "acme"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(count(&db, slots).await, 2, "a deleted tenant can be restored");
        f.ok(0, &["tenant", "purge", "acme", "--force"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while count(&db, slots).await > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the agent dropped acme's slots");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}
