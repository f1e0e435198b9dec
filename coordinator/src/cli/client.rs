//! The CLI's HTTP client: bearer key, typed JSON in and out (the API's `dto` types), one-line
//! errors from the API's `ErrorBody`, and one retry against the leader when a follower answers
//! `421 not_leader`.

use crate::api::dto::ErrorBody;
use anyhow::{bail, Context};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
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

/// A request without a body.
pub const NO_BODY: Option<&()> = None;
/// A request without a query.
pub const NO_QUERY: &[(&str, &str)] = &[];

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

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        Ok(self.get_with_headers(path, NO_QUERY).await?.0)
    }

    /// A GET with a query (plus `consistency=stale` when asked for) that also returns the
    /// answer's headers (e.g. the audit trail's page cursors).
    pub async fn get_with_headers<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
    ) -> anyhow::Result<(T, HeaderMap)> {
        self.exchange(Method::GET, path, query, self.stale, NO_BODY).await
    }

    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        Ok(self.exchange(method, path, NO_QUERY, false, body).await?.0)
    }

    /// A GET whose answer is streamed (read it with `chunk`): no overall timeout, errors as `exchange`'s.
    pub async fn download(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let base = &self.endpoint;
        let mut req = self.http.get(format!("{base}{path}")).timeout(Duration::from_secs(24 * 3600));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach coordinator at {base}"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.context("read response")?;
        let message = serde_json::from_str::<ErrorBody>(&text).map(|e| e.message).unwrap_or_else(|_| clip(&text));
        bail!("{message} ({})", status.as_u16())
    }

    async fn exchange<Q: Serialize + ?Sized, B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &Q,
        stale: bool,
        body: Option<&B>,
    ) -> anyhow::Result<(T, HeaderMap)> {
        let mut base = self.endpoint.clone();
        for _attempt in 0..3 {
            let mut req = self.http.request(method.clone(), format!("{base}{path}")).query(query);
            if stale {
                req = req.query(&[("consistency", "stale")]);
            }
            if let Some(key) = &self.api_key {
                req = req.bearer_auth(key);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.with_context(|| format!("cannot reach coordinator at {base}"))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp.text().await.context("read response")?;
            if status.is_success() {
                let value = serde_json::from_str(&text)
                    .with_context(|| format!("unexpected answer from {method} {path}: {}", clip(&text)))?;
                return Ok((value, headers));
            }
            let error: Option<ErrorBody> = serde_json::from_str(&text).ok();
            if status.as_u16() == 421 {
                if let Some(leader) = error.as_ref().and_then(|e| e.leader.as_deref()) {
                    let scheme = if self.endpoint.starts_with("https://") { "https" } else { "http" };
                    base = format!("{scheme}://{leader}");
                    continue;
                }
            }
            let message = error.map(|e| e.message).unwrap_or_else(|| clip(&text));
            bail!("{message} ({})", status.as_u16());
        }
        bail!("the cluster kept redirecting; is there a stable leader?")
    }
}

/// An unexpected answer, bounded for an error line.
fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}
