//! Coordinators SIGKILLed while concurrent clients write through the REST API: after the restart
//! every acknowledged write is on every node, the nodes converge on one state and one audit
//! chain, and the chain verifies. Also journals left as a power cut leaves them (which a SIGKILL
//! cannot: the page cache keeps what was written): a torn record at the end, and an applied state
//! ahead of the journal's end; and a leader frozen with writes in flight.

use crate::harness::Cluster;
use berqenas_tests::wait_for;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Concurrent clients.
const WRITERS: usize = 8;
/// Tenants the clients may create in one test: each takes a /24 of the test pool (512 of them).
const MAX_CREATES: usize = 200;
/// Serve flags of every test here: a snapshot (and a purge of the log behind it) every 20
/// entries, so kills land in snapshots and purges as well as in appends and flushes.
const SERVE: [&str; 4] = ["--snapshot-logs", "20", "--admin-key-rate", "0"];

/// What the clients were told succeeded, and what they tried.
#[derive(Default)]
struct Record {
    created: Vec<String>,
    /// Per client: the last value of its own tenant's `events_per_min` acknowledged, and the
    /// last one tried (a client tries increasing values, one request at a time).
    updates: BTreeMap<usize, (Option<u64>, u64)>,
    acks: usize,
    /// Failed requests by what they got (a status and its body, or the transport error).
    failures: BTreeMap<String, usize>,
}

/// `WRITERS` clients writing through the REST API of every node in turn: creates of new tenants
/// and updates of each client's own tenant (`own<N>`), recording each acknowledged write.
struct Load {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    key: String,
    record: Arc<Mutex<Record>>,
    creates: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Creates the clients' own tenants.
    fn new(c: &Cluster) -> Self {
        let leader = wait_for("a leader", Duration::from_secs(10), || c.leader_seen_by(0));
        for w in 0..WRITERS {
            c.ok(c.index_of(leader), &["tenant", "create", "--name", &format!("own{w}")]);
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        let record = Record { updates: (0..WRITERS).map(|w| (w, (None, 2_000))).collect(), ..Record::default() };
        Self {
            rt,
            http,
            key: c.key.clone(),
            record: Arc::new(Mutex::new(record)),
            creates: Arc::default(),
            tasks: Vec::new(),
        }
    }

    /// Starts the clients against `nodes` (round `round` names its tenants).
    fn start(&mut self, c: &Cluster, nodes: &[usize], round: usize) {
        let bases: Arc<Vec<String>> = Arc::new(nodes.iter().map(|&i| c.nodes[i].endpoint()).collect());
        for w in 0..WRITERS {
            let (http, key, record, creates, bases) =
                (self.http.clone(), self.key.clone(), self.record.clone(), self.creates.clone(), bases.clone());
            self.tasks.push(self.rt.spawn(async move {
                for op in 0usize.. {
                    let base = &bases[(w + op) % bases.len()];
                    let ok = if op % 4 == 3 && creates.fetch_add(1, Ordering::Relaxed) < MAX_CREATES {
                        let name = format!("r{round}w{w}n{op}");
                        let sent =
                            http.post(format!("{base}/api/v1/tenant")).bearer_auth(&key).json(&json!({"name": name}));
                        let ok = outcome(sent, &record).await;
                        if ok {
                            record.lock().expect("record").created.push(name);
                        }
                        ok
                    } else {
                        let value = {
                            let mut r = record.lock().expect("record");
                            let tried = &mut r.updates.get_mut(&w).expect("client").1;
                            *tried += 1;
                            *tried
                        };
                        let sent = http
                            .patch(format!("{base}/api/v1/tenant/own{w}"))
                            .bearer_auth(&key)
                            .json(&json!({"events_per_min": value}));
                        let ok = outcome(sent, &record).await;
                        if ok {
                            record.lock().expect("record").updates.get_mut(&w).expect("client").0 = Some(value);
                        }
                        ok
                    };
                    if ok {
                        record.lock().expect("record").acks += 1;
                    } else {
                        // A node down or between leaders: no busy loop meanwhile.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
    }

    fn acks(&self) -> usize {
        self.record.lock().expect("record").acks
    }

    /// Waits until `more` writes beyond the present ones are acknowledged.
    fn wait_for_acks(&self, more: usize) {
        let target = self.acks() + more;
        let started = Instant::now();
        while self.acks() < target {
            if started.elapsed() > Duration::from_secs(30) {
                let record = self.record.lock().expect("record");
                panic!("{} of {target} writes acknowledged after 30 s; failures: {:#?}", record.acks, record.failures);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients: a request still in flight is not acknowledged.
    fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = self.rt.block_on(task);
        }
    }

    fn get(&self, base: &str, path: &str) -> Result<Value, String> {
        self.rt.block_on(async {
            let resp = self.http.get(format!("{base}{path}")).bearer_auth(&self.key).send().await;
            let resp = resp.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("{path}: {}", resp.status()));
            }
            resp.json().await.map_err(|e| e.to_string())
        })
    }

    /// What node `idx` holds in its own state machine: its tenants, its audit trail's newest
    /// entry and the chain's verification.
    fn view(&self, c: &Cluster, idx: usize) -> Result<NodeView, String> {
        let base = c.nodes[idx].endpoint();
        let tenants = self.get(&base, "/api/v1/tenants?consistency=stale")?;
        let newest = self.get(&base, "/api/v1/audit?limit=1&consistency=stale")?;
        let verified = self.get(&base, "/api/v1/audit/verify?consistency=stale")?;
        Ok(NodeView { tenants, newest: newest[0].clone(), verified })
    }

    /// Whether `view` holds every acknowledged write: every tenant created, and each client's
    /// tenant at its last acknowledged value or a later one it tried.
    fn missing(&self, view: &NodeView) -> Option<String> {
        let record = self.record.lock().expect("record");
        let tenants: BTreeMap<&str, &Value> =
            view.tenants.as_array().into_iter().flatten().filter_map(|t| Some((t["name"].as_str()?, t))).collect();
        let lost: Vec<&String> = record.created.iter().filter(|n| !tenants.contains_key(n.as_str())).collect();
        if !lost.is_empty() {
            return Some(format!("{} acknowledged creates missing: {lost:?}", lost.len()));
        }
        for (w, (acked, tried)) in &record.updates {
            let have = tenants.get(format!("own{w}").as_str()).and_then(|t| t["events_per_min"].as_u64());
            let floor = acked.unwrap_or(0);
            if !have.is_some_and(|v| v >= floor && v <= *tried) {
                return Some(format!(
                    "own{w} has events_per_min {have:?}, acknowledged {acked:?}, tried up to {tried}"
                ));
            }
        }
        None
    }

    /// After a restart: every node holds every acknowledged write, all of them converge on the
    /// same tenants and the same audit head, and each node's chain verifies.
    fn check(&self, c: &Cluster, what: &str) {
        let nodes: Vec<usize> = (0..c.nodes.len()).collect();
        wait_for("a leader after the restart", Duration::from_secs(20), || c.leader_seen_by(0));
        for &i in &nodes {
            let held = poll(&format!("{what}: node {} holds every acknowledged write", c.nodes[i].id), || {
                let view = self.view(c, i)?;
                self.missing(&view).map_or(Ok(()), Err)
            });
            self.fail_with_diagnosis(c, held);
        }
        let converged = poll(&format!("{what}: the nodes converge on one state and one audit chain"), || {
            let views = nodes.iter().map(|&i| self.view(c, i)).collect::<Result<Vec<_>, _>>()?;
            for (i, v) in views.iter().enumerate() {
                if v.verified["ok"] != true {
                    return Err(format!("node {}'s audit chain does not verify: {}", c.nodes[i].id, v.verified));
                }
            }
            let first = &views[0];
            for (i, v) in views.iter().enumerate().skip(1) {
                if v.newest != first.newest || v.verified["total"] != first.verified["total"] {
                    return Err(format!(
                        "audit heads differ: node {} {} / {} entries, node {} {} / {} entries",
                        c.nodes[0].id,
                        first.newest["seq"],
                        first.verified["total"],
                        c.nodes[i].id,
                        v.newest["seq"],
                        v.verified["total"]
                    ));
                }
                if v.tenants != first.tenants {
                    return Err(format!("tenants differ between node {} and node {}", c.nodes[0].id, c.nodes[i].id));
                }
            }
            Ok(())
        });
        self.fail_with_diagnosis(c, converged);
        self.fail_with_diagnosis(c, self.applied_once(c));
    }

    /// Whether no update was applied twice: a client tries each value once, so two audit
    /// entries of one tenant with one value mean a write proposed again after it was applied.
    fn applied_once(&self, c: &Cluster) -> Result<(), String> {
        let trail = self.get(&c.nodes[0].endpoint(), "/api/v1/audit?limit=100000&consistency=stale")?;
        let mut seen = BTreeMap::new();
        for e in trail.as_array().into_iter().flatten().filter(|e| e["action"] == "tenant.update") {
            let key = (e["target"].to_string(), e["details"]["events_per_min"].to_string());
            if let Some(first) = seen.insert(key, e["seq"].clone()) {
                return Err(format!("an update was applied twice: audit {first} and {} are {e}", e["seq"]));
            }
        }
        Ok(())
    }

    /// Panics with `outcome`'s complaint and what every node says of itself and of the
    /// acknowledged writes.
    fn fail_with_diagnosis(&self, c: &Cluster, outcome: Result<(), String>) {
        let Err(complaint) = outcome else { return };
        let mut diagnosis = complaint;
        for (i, node) in c.nodes.iter().enumerate() {
            let status = self.get(&node.endpoint(), "/api/v1/cluster").map(|s| {
                let keys =
                    ["state", "leader_id", "term", "last_log_index", "last_applied", "snapshot_index", "purged_index"];
                keys.iter().map(|k| format!("{k} {}", s[*k])).collect::<Vec<_>>().join(", ")
            });
            let missing = self.view(c, i).map(|v| self.missing(&v).unwrap_or_else(|| "holds every write".into()));
            diagnosis += &format!("\nnode {}: {status:?}; {missing:?}", node.id);
        }
        if let Some(keep) = std::env::var_os("BERQENAS_KEEP_CRASH_DIR") {
            let _ = berqenas_tests::run(
                Path::new("cp"),
                &["-a", c.tmp.path().to_str().unwrap_or("."), keep.to_str().unwrap_or("/tmp")],
                &[],
            );
        }
        panic!("{diagnosis}");
    }
}

struct NodeView {
    tenants: Value,
    newest: Value,
    verified: Value,
}

/// Sends a write: whether it was acknowledged (a failure is counted by what it got).
async fn outcome(sent: reqwest::RequestBuilder, record: &Mutex<Record>) -> bool {
    let failure = match sent.send().await {
        Ok(resp) if resp.status().is_success() => return true,
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            format!("{status} {}", body.chars().take(160).collect::<String>())
        }
        Err(e) if e.is_timeout() => "timed out".into(),
        Err(e) if e.is_connect() => "no connection".into(),
        Err(e) => format!("{e}"),
    };
    *record.lock().expect("record").failures.entry(failure).or_default() += 1;
    false
}

/// Polls `f` until it answers `Ok` (30 s at most), then panics with its last complaint.
fn poll<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let started = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() > Duration::from_secs(30) => {
                return Err(format!("{what}: still not so after 30 s: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// SIGKILL of the coordinators at `idx`, sent to all of them before any is reaped.
fn kill_at_once(c: &mut Cluster, idx: &[usize]) {
    let pids: Vec<String> = idx.iter().filter_map(|&i| c.nodes[i].proc.as_ref()).map(|p| p.pid().to_string()).collect();
    let args: Vec<&str> = std::iter::once("-KILL").chain(pids.iter().map(String::as_str)).collect();
    let out = berqenas_tests::run(Path::new("kill"), &args, &[]);
    assert!(out.status.success(), "kill {args:?}: {}", crate::harness::stderr(&out));
    for &i in idx {
        c.kill(i);
    }
}

/// Where a SIGKILL left each of the stopped coordinators at `idx` (printed: what the restart has
/// to re-apply or fetch is the point of these tests).
fn report(c: &Cluster, idx: &[usize], what: &str) {
    for &i in idx {
        let dir = &c.nodes[i].dir;
        let records = newest_segment(dir).map(|(_, r)| r).unwrap_or_default();
        eprintln!(
            "{what}: node {} stopped with applied {:?}, committed {:?}, purged {:?}, journal up to {:?}",
            c.nodes[i].id,
            stored_index(dir, "sm_meta", "last_applied"),
            stored_index(dir, "raft_meta", "committed"),
            stored_index(dir, "raft_meta", "last_purged"),
            records.last().map(|r| r.index),
        );
    }
}

/// A point in the load that differs from round to round and run to run: 30 to 90 more
/// acknowledged writes.
fn some_acks() -> usize {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    30 + (nanos as usize / 1_000) % 60
}

#[test]
fn sigkill_during_concurrent_writes_loses_no_acknowledged_write_on_any_node() {
    let mut c = Cluster::three_with(&SERVE);
    let mut load = Load::new(&c);
    let all = [0, 1, 2];
    for round in 0..4 {
        load.start(&c, &all, round);
        load.wait_for_acks(some_acks());
        let leader = c.index_of(c.leader_seen_by(0).or_else(|| c.leader_seen_by(1)).expect("a leader"));
        match round {
            1 => {
                // The leader first; the others keep taking writes, then go too.
                kill_at_once(&mut c, &[leader]);
                load.wait_for_acks(some_acks());
                let rest: Vec<usize> = all.into_iter().filter(|i| *i != leader).collect();
                kill_at_once(&mut c, &rest);
            }
            3 => {
                // A follower falls behind the others' snapshots and purges, comes back into the
                // load, and everyone goes while it catches up (installing a snapshot, often).
                let follower = all.into_iter().find(|i| *i != leader).expect("a follower");
                kill_at_once(&mut c, &[follower]);
                load.wait_for_acks(some_acks());
                c.start(follower);
                load.wait_for_acks(some_acks() / 6);
                kill_at_once(&mut c, &all);
            }
            _ => kill_at_once(&mut c, &all),
        }
        load.stop();
        report(&c, &all, &format!("round {round}"));
        for i in all {
            c.start(i);
        }
        load.check(&c, &format!("round {round}"));
    }
    let record = load.record.lock().expect("record");
    assert!(record.acks >= 90 && record.created.len() >= 10, "{} writes acknowledged", record.acks);
}

#[test]
fn sigkill_during_concurrent_writes_loses_no_acknowledged_write_on_a_single_coordinator() {
    let mut c = Cluster::single_with(&SERVE);
    let mut load = Load::new(&c);
    for round in 0..3 {
        load.start(&c, &[0], round);
        load.wait_for_acks(some_acks());
        kill_at_once(&mut c, &[0]);
        load.stop();
        report(&c, &[0], &format!("round {round}"));
        c.start(0);
        load.check(&c, &format!("round {round}"));
    }
    let record = load.record.lock().expect("record");
    assert!(record.acks >= 90 && record.created.len() >= 10, "{} writes acknowledged", record.acks);
}

/// One record of a journal segment: its index, where it starts and how long it is in all.
#[derive(Debug, Clone, Copy)]
struct JournalRecord {
    index: u64,
    offset: u64,
    bytes: u64,
}

/// The newest segment of the journal of the (stopped) coordinator in `dir`, and its records
/// (`len: u32 | crc32: u32 | index: u64 | payload`, up to the first zero length or bad record).
/// None when the journal holds no segment (all purged behind a snapshot).
fn newest_segment(dir: &Path) -> Option<(PathBuf, Vec<JournalRecord>)> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("raft-log"))
        .expect("journal directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let path = segments.pop()?;
    let data = std::fs::read(&path).expect("read the segment");
    let mut records = Vec::new();
    let mut at = 0usize;
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        if len == 0 || at + 16 + len > data.len() {
            break;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&data[at + 8..at + 16 + len]);
        if h.finalize() != crc {
            break;
        }
        let index = u64::from_le_bytes(data[at + 8..at + 16].try_into().expect("8 bytes"));
        records.push(JournalRecord { index, offset: at as u64, bytes: 16 + len as u64 });
        at += 16 + len;
    }
    Some((path, records))
}

/// The index of a log id stored as JSON under `key` in `table` of the coordinator's store in
/// `dir`, read from a copy (opening a crashed store repairs it: the coordinator does that itself).
fn stored_index(dir: &Path, table: &str, key: &str) -> Option<u64> {
    let copy = tempfile::tempdir().expect("temp dir");
    std::fs::copy(dir.join("raft.redb"), copy.path().join("raft.redb")).expect("copy the store");
    let db = redb::Database::open(copy.path().join("raft.redb")).expect("open the copy");
    let txn = db.begin_read().expect("read");
    let table = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new(table)).expect("table");
    let value = table.get(key).expect("get")?;
    let id: Value = serde_json::from_slice(value.value()).expect("JSON log id");
    id["index"].as_u64()
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::options().write(true).open(path).expect("open the segment");
    file.write_all_at(bytes, offset).expect("write the segment");
}

/// Tears the end of the journal of the stopped coordinator in `dir` as a power cut tears it: a
/// record half written after the last one and, when the last record is past the commit the node
/// had made durable (so it may never have reached the disk either), that record's last byte.
/// Answers whether it tore a whole record too.
fn tear(dir: &Path) -> bool {
    let (segment, records) = newest_segment(dir).expect("a journal segment");
    let last = *records.last().expect("the journal holds records");
    let end = last.offset + last.bytes;
    let mut torn = Vec::new();
    torn.extend_from_slice(&400u32.to_le_bytes());
    torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    torn.extend_from_slice(&(last.index + 1).to_le_bytes());
    torn.extend_from_slice(&[b'{'; 200]);
    write_at(&segment, end, &torn);
    let committed = stored_index(dir, "raft_meta", "committed");
    let tore_last = committed.is_none_or(|c| last.index > c);
    if tore_last {
        write_at(&segment, end - 1, &[0xff]);
    }
    eprintln!("torn: a half record after {}, that record torn too: {tore_last}", last.index);
    tore_last
}

/// The leader SIGKILLed during the load and its journal's end torn (a leader sends its entries
/// before its own fsync ends, so a power cut can take them from its disk alone): it starts,
/// drops the torn tail, and catches up from the new leader with every acknowledged write. Three
/// times, so the tear lands on different records and nodes.
#[test]
fn torn_journal_tail_of_a_killed_leader_is_dropped_and_refilled_from_the_new_leader() {
    let mut c = Cluster::three_with(&SERVE);
    let mut load = Load::new(&c);
    let all = [0, 1, 2];
    let mut tears: BTreeMap<usize, usize> = BTreeMap::new();
    for round in 0..3 {
        load.start(&c, &all, round);
        load.wait_for_acks(some_acks());
        let leader = c.index_of(c.leader_seen_by(0).or_else(|| c.leader_seen_by(1)).expect("a leader"));
        kill_at_once(&mut c, &[leader]);
        report(&c, &[leader], &format!("round {round}"));
        tear(&c.nodes[leader].dir);
        *tears.entry(leader).or_default() += 1;
        // The others elect a leader and go on; the torn node comes back into the load.
        load.wait_for_acks(some_acks());
        c.start(leader);
        load.wait_for_acks(some_acks() / 6);
        load.stop();
        load.check(&c, &format!("round {round}, torn node {}", c.nodes[leader].id));
    }
    for (idx, n) in tears {
        let log = c.nodes[idx].proc.as_ref().expect("running").log_text();
        let cut = log.matches("cut the log's torn tail").count();
        assert!(cut >= n, "node {}: {n} torn tails, {cut} cut", c.nodes[idx].id);
    }
}

/// A coordinator whose applied state is ahead of its own journal, as a leader's is when a power
/// cut takes the entries the two followers made durable, and it applied, before its own fsync
/// did: it starts with the log purged up to the applied position, serves, and a coordinator
/// joining afterwards catches up from it (through a snapshot that covers that position: the
/// one taken before the cut does not).
#[test]
fn state_ahead_of_the_journal_starts_serves_and_brings_a_new_member_up() {
    let mut c = Cluster::single_with(&SERVE);
    // Writes until a snapshot was taken and 8 entries were applied after it.
    let mut names = Vec::new();
    let (status, snapshot) = loop {
        let name = format!("ahead_{}", names.len());
        c.ok(0, &["tenant", "create", "--name", &name]);
        names.push(name);
        let status = c.json(0, &["cluster", "status"]);
        let (snapshot, applied) = (status["snapshot_index"].as_u64(), status["last_applied"].as_u64());
        if let (Some(snapshot), Some(applied)) = (snapshot, applied) {
            if applied >= snapshot + 8 {
                break (status, snapshot);
            }
        }
        assert!(names.len() < 100, "no snapshot: {status}");
    };
    c.stop(0);
    let dir = c.nodes[0].dir.clone();
    let applied = stored_index(&dir, "sm_meta", "last_applied").expect("an applied position");
    let (segment, records) = newest_segment(&dir).expect("a journal segment");
    // The journal ends 5 entries before the applied position, after the last snapshot. (The
    // stored commit index is a lower bound, at most the applied position: the start takes the
    // applied position as committed either way.)
    let keep_upto = applied - 5;
    assert!(keep_upto > snapshot, "a snapshot at {snapshot} behind the cut at {keep_upto}: {status}");
    let cut = records.iter().find(|r| r.index == keep_upto + 1).expect("the journal holds the entries cut");
    let end = records.last().map(|r| r.offset + r.bytes).expect("records");
    write_at(&segment, cut.offset, &vec![0; (end - cut.offset) as usize]);

    c.start(0);
    wait_for("the coordinator to lead again", Duration::from_secs(10), || c.leader_seen_by(0));
    let have = c.local_tenants(0).expect("answers");
    assert!(names.iter().all(|n| have.contains(n)), "{have:?}");
    let status = c.json(0, &["cluster", "status"]);
    assert!(status["purged_index"].as_u64() >= Some(applied), "the log was purged up to the state: {status}");
    c.ok(0, &["tenant", "create", "--name", "after_the_cut"]);
    // New members need what the purge dropped: a snapshot that covers it.
    c.join(2);
    c.join(3);
    c.ok(1, &["tenant", "create", "--name", "with_members"]);
    for i in 0..3 {
        let have = wait_for("the new member to catch up", Duration::from_secs(20), || {
            let have = c.local_tenants(i)?;
            have.contains(&"with_members".to_string()).then_some(have)
        });
        assert!(names.iter().all(|n| have.contains(n)), "node {}: {have:?}", c.nodes[i].id);
        let v = c.json(i, &["audit", "verify", "--stale"]);
        assert_eq!(v["ok"], true, "node {}: {v}", c.nodes[i].id);
    }
}

/// Sends `signal` to the coordinator at `idx`.
fn signal(c: &Cluster, idx: usize, signal: &str) {
    let pid = c.nodes[idx].proc.as_ref().expect("running").pid().to_string();
    let out = berqenas_tests::run(Path::new("kill"), &[signal, &pid], &[]);
    assert!(out.status.success(), "kill {signal} {pid}: {}", crate::harness::stderr(&out));
}

/// The leader frozen (SIGSTOP: a paused VM, a host starved of CPU) with writes in flight, thawed
/// after the others elected a leader and moved past several snapshots: it steps down, catches up
/// through a snapshot, and takes writes again; nothing acknowledged is lost.
#[test]
fn leader_frozen_mid_write_takes_writes_again_after_thawing() {
    let c = Cluster::three_with(&SERVE);
    let mut load = Load::new(&c);
    let all = [0, 1, 2];
    load.start(&c, &all, 0);
    load.wait_for_acks(some_acks());
    let leader = c.index_of(c.leader_seen_by(0).or_else(|| c.leader_seen_by(1)).expect("a leader"));
    signal(&c, leader, "-STOP");
    load.stop();
    let others: Vec<usize> = all.into_iter().filter(|i| *i != leader).collect();
    load.start(&c, &others, 1);
    // Enough entries for snapshots (every 20) to purge what the frozen node lacks.
    load.wait_for_acks(120);
    signal(&c, leader, "-CONT");
    load.wait_for_acks(some_acks());
    load.stop();
    let out = c.cli(leader, &["tenant", "create", "--name", "after_the_thaw"]);
    assert!(out.status.success(), "a write through the thawed node: {}", crate::harness::stderr(&out));
    load.record.lock().expect("record").created.push("after_the_thaw".into());
    let log = c.nodes[leader].proc.as_ref().expect("running").log_text();
    eprintln!("thawed: batches given up unanswered: {}", log.matches("gave up a batch").count());
    load.check(&c, "after the thaw");
}
