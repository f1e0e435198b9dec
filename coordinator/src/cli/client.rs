//! The CLI's HTTP client: bearer key, JSON in and out, one-line errors, and one retry against
//! the leader when a follower answers `421 not_leader`.

use anyhow::{bail, Context};
use serde_json::Value;
use std::time::Duration;

pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    api_key: Option<String>,
    stale: bool,
}

/// Percent-encodes a path segment so user text cannot change the path.
pub fn path_segment(raw: &str) -> String {
    let mut out = String::new();
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(endpoint: &str, api_key: Option<&str>, stale: bool, ca_pem: Option<&str>) -> anyhow::Result<Self> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            bail!("endpoint {endpoint:?} must start with http:// or https://");
        }
        let mut builder =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).connect_timeout(Duration::from_secs(5));
        if endpoint.starts_with("https://") {
            let ca = ca_pem.context("an https endpoint needs --ca-cert (the cluster CA is DATA_DIR/ca.pem)")?;
            builder = builder.use_preconfigured_tls(berqenas_pki::webpki_client_config(ca)?);
        }
        let http = builder.build().context("http client")?;
        Ok(Self { http, endpoint, api_key: api_key.map(str::to_string), stale })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.get_query(path, &[]).await
    }

    pub async fn get_query(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        if self.stale {
            q.push(("consistency", "stale".into()));
        }
        self.request("GET", path, &q, None).await
    }

    /// A GET that also returns the answer's headers (e.g. the audit trail's page cursors).
    pub async fn get_with_headers(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<(Value, reqwest::header::HeaderMap)> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        if self.stale {
            q.push(("consistency", "stale".into()));
        }
        self.exchange("GET", path, &q, None).await
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.request(method, path, &[], body).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.exchange(method, path, query, body).await?.0)
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<(Value, reqwest::header::HeaderMap)> {
        let mut base = self.endpoint.clone();
        for _attempt in 0..3 {
            let method_v = reqwest::Method::from_bytes(method.as_bytes()).context("http method")?;
            let mut req = self.http.request(method_v, format!("{base}{path}")).query(query);
            if let Some(key) = &self.api_key {
                req = req.bearer_auth(key);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.with_context(|| format!("cannot reach coordinator at {base}"))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp.text().await.context("read response")?;
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if status.is_success() {
                return Ok((value, headers));
            }
            if status.as_u16() == 421 {
                if let Some(leader) = value["leader"].as_str() {
                    let scheme = if self.endpoint.starts_with("https://") { "https" } else { "http" };
                    base = format!("{scheme}://{leader}");
                    continue;
                }
            }
            let message = value["message"].as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
            bail!("{message} ({})", status.as_u16());
        }
        bail!("the cluster kept redirecting; is there a stable leader?")
    }
}
