//! The S3-compatible bucket backups go to (`aws-sdk-s3`): the client built from `[backup]` of
//! `agent.toml` (endpoint, region, path style; credentials there or in the environment), and the
//! multipart upload a backup streams into, aborted unless it completes.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[backup]` of `agent.toml`: where this node's tenants' backups go.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `https://…` of an S3-compatible service; AWS's regional endpoint when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Bucket in the path (`endpoint/bucket/key`) rather than the host name: most S3-compatible
    /// services want it.
    #[serde(default)]
    pub path_style: bool,
    /// Credentials; `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` of the agent's environment when
    /// absent (this file is 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A failed call to the bucket, named by its operation; the SDK's error (with its context) is
/// the source.
#[derive(Debug, thiserror::Error)]
#[error("S3 {op} failed: {message}")]
pub struct StoreError {
    pub op: &'static str,
    message: String,
}

impl StoreError {
    fn new(op: &'static str, error: impl std::error::Error) -> Self {
        Self { op, message: aws_sdk_s3::error::DisplayErrorContext(error).to_string() }
    }

    fn missing(op: &'static str, what: &str) -> Self {
        Self { op, message: format!("the answer has no {what}") }
    }
}

/// The bucket, with a client ready to use.
#[derive(Clone)]
pub struct Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl Store {
    /// Builds the client; fails only when no credentials are configured anywhere.
    pub fn new(cfg: &S3Config) -> Result<Self, StoreError> {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let access = cfg.access_key_id.clone().or_else(|| from_env("AWS_ACCESS_KEY_ID"));
        let secret = cfg.secret_access_key.clone().or_else(|| from_env("AWS_SECRET_ACCESS_KEY"));
        let (Some(access), Some(secret)) = (access, secret) else {
            return Err(StoreError::missing("configuration", "credentials ([backup] or AWS_ACCESS_KEY_ID)"));
        };
        use aws_smithy_http_client::tls;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(120))
            .build();
        let mut conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(Credentials::new(access, secret, None, None, "berqenas-agent"))
            .force_path_style(cfg.path_style)
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3));
        if let Some(endpoint) = &cfg.endpoint {
            conf = conf.endpoint_url(endpoint);
        }
        Ok(Self { client: aws_sdk_s3::Client::from_conf(conf.build()), bucket: cfg.bucket.clone() })
    }

    /// Starts a multipart upload of `key`.
    pub async fn upload(&self, key: &str) -> Result<Upload, StoreError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::new("CreateMultipartUpload", e))?;
        let id = out.upload_id().ok_or_else(|| StoreError::missing("CreateMultipartUpload", "upload id"))?;
        Ok(Upload { store: self.clone(), key: key.into(), id: id.into(), sent: 0, parts: Vec::new() })
    }

    /// The object's bytes as they arrive.
    pub async fn download(&self, key: &str) -> Result<ByteStream, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::new("GetObject", e))?;
        Ok(out.body)
    }

    /// The keys under `prefix` (at most 1,000: one page).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| StoreError::new("ListObjectsV2", e))?;
        Ok(out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect())
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::new("DeleteObject", e))?;
        Ok(())
    }
}

/// A multipart upload in progress. Nothing is visible under its key until [`Upload::complete`].
/// Parts may upload concurrently: each is numbered when it is sent, in the order they were sent.
pub struct Upload {
    store: Store,
    key: String,
    id: String,
    /// Parts sent so far (the last one's number).
    sent: i32,
    parts: Vec<CompletedPart>,
}

impl Upload {
    /// Uploads the next part (every part but the last at least 5 MiB).
    pub async fn part(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        let done = self.send_part(bytes).await?;
        self.record(done);
        Ok(())
    }

    /// The upload of the next part (numbered after those sent so far), to run while the caller
    /// prepares the ones after it; [`Upload::record`] it when it is done, in any order.
    ///
    /// The payload is not hashed into the request's signature (`UNSIGNED-PAYLOAD`, as over
    /// HTTPS AWS advises): the SDK's CRC32 checksum still guards the part on its way, and the
    /// object's own SHA-256 and AES-GCM tags are what a restore trusts.
    pub fn send_part(
        &mut self,
        bytes: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<CompletedPart, StoreError>> + Send + 'static {
        self.sent += 1;
        let number = self.sent;
        let request = self
            .store
            .client
            .upload_part()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .customize()
            .disable_payload_signing();
        async move {
            let out = request.send().await.map_err(|e| StoreError::new("UploadPart", e))?;
            let etag = out.e_tag().ok_or_else(|| StoreError::missing("UploadPart", "ETag"))?;
            Ok(CompletedPart::builder().part_number(number).e_tag(etag).build())
        }
    }

    pub fn record(&mut self, part: CompletedPart) {
        self.parts.push(part);
    }

    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Makes the object visible, whole: every part sent must have been recorded.
    pub async fn complete(mut self) -> Result<(), StoreError> {
        if self.parts.len() != self.sent as usize {
            let message = format!("{} parts sent, {} recorded", self.sent, self.parts.len());
            return Err(StoreError { op: "CompleteMultipartUpload", message });
        }
        self.parts.sort_by_key(|p| p.part_number());
        let parts = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.parts))).build();
        self.store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .multipart_upload(parts)
            .send()
            .await
            .map_err(|e| StoreError::new("CompleteMultipartUpload", e))?;
        Ok(())
    }

    /// Drops the parts uploaded so far (best effort: the bucket may be unreachable; a lifecycle
    /// rule for incomplete uploads cleans up after that).
    pub async fn abort(self) {
        let result = self
            .store
            .client
            .abort_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(key = %self.key, error = %aws_sdk_s3::error::DisplayErrorContext(e), "abort of a failed upload failed");
        }
    }
}
