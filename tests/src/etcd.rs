//! A 3-member etcd cluster on loopback (Debian's `etcd-server`), the yardstick the coordinator's
//! write path is measured against: same host, same disk, same client code.

use crate::{free_port, Proc};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct EtcdMember {
    pub name: String,
    pub client: u16,
    pub peer: u16,
    pub proc: Option<Proc>,
}

/// Fields drop in order: processes before the temp dir that holds their data and logs.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    pub tmp: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members of a new cluster with `etcd` (the program path) and waits until they
    /// agree on a leader.
    pub fn start(etcd: &Path, n: usize) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut members: Vec<EtcdMember> = (1..=n)
            .map(|i| EtcdMember { name: format!("e{i}"), client: free_port(), peer: free_port(), proc: None })
            .collect();
        let initial: Vec<String> = members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect();
        let initial = initial.join(",");
        for m in &mut members {
            let data = tmp.path().join(&m.name);
            let client = format!("http://127.0.0.1:{}", m.client);
            let peer = format!("http://127.0.0.1:{}", m.peer);
            let args = [
                "--name",
                &m.name,
                "--data-dir",
                data.to_str().expect("UTF-8 path"),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "berqenas-bench",
                "--log-level",
                "warn",
            ];
            m.proc = Some(Proc::spawn(&m.name, etcd, &args, tmp.path()));
        }
        Self { members, tmp }
    }

    /// Waits (up to 30 s) until the members agree on a leader and returns its client URL.
    pub async fn wait_leader(&self, http: &reqwest::Client) -> String {
        let started = Instant::now();
        loop {
            if let Some(url) = self.leader(http).await {
                return url;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "etcd elected no leader within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The client URL of the leader, if every member reports a leader.
    async fn leader(&self, http: &reqwest::Client) -> Option<String> {
        let mut leader = None;
        for m in &self.members {
            let url = format!("http://127.0.0.1:{}/v3/maintenance/status", m.client);
            let status: Value = http.post(url).json(&json!({})).send().await.ok()?.json().await.ok()?;
            let (id, lead) = (status["header"]["member_id"].as_str()?, status["leader"].as_str()?);
            if lead == "0" {
                return None;
            }
            if id == lead {
                leader = Some(format!("http://127.0.0.1:{}", m.client));
            }
        }
        leader
    }
}
