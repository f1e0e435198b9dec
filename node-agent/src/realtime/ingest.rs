//! The `Ingest` gRPC service and the per-tenant writers behind it.
//!
//! A stream's device is the one its TLS certificate names; every batch (gRPC here, HTTP in
//! `publish`, both through `Shared::admit`) is checked against the current assignment (tenant
//! assigned here and running, device listed; a public-mode device's key and fingerprint, see
//! `auth::publisher`), validated, charged to
//! the tenant's events/min quota, and handed to one of the tenant's four writers (always the
//! same for a device, so its batches commit in order). A writer gathers batches from the
//! tenant's streams for up to `FLUSH_AFTER` or `FLUSH_ROWS` rows, inserts them
//! in one transaction as the tenant's owner role (`INSERT … SELECT FROM unnest($1…) ON CONFLICT
//! (id) DO NOTHING`: parameters only, a resent id is stored once), and acknowledges each batch
//! only after COMMIT. Acks go back in request order; a few batches of one stream may be in
//! flight at once.

use super::auth::{self, Refused};
use super::event::{self, Row};
use super::Shared;
use berqenas_pki::Identity;
use berqenas_proto::realtime as pb;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// A writer flushes when this many rows are waiting…
pub const FLUSH_ROWS: usize = 1_000;
/// …or this long after the first of them arrived.
pub const FLUSH_AFTER: Duration = Duration::from_millis(5);
/// Most rows in one transaction when more are already queued.
const MAX_TXN_ROWS: usize = 5_000;
/// Batches of one stream waiting for their commit at once.
const IN_FLIGHT: usize = 8;

/// The verified identity of a connection's client certificate, if it presented one.
#[derive(Debug, Clone)]
pub struct PeerIdentity(pub Option<Identity>);

pub struct Job {
    pub rows: Vec<Row>,
    pub done: oneshot::Sender<Result<(), String>>,
}

#[derive(Clone)]
pub struct IngestService {
    pub(super) shared: Arc<Shared>,
}

/// Why a batch was not taken, whichever surface it came by (gRPC here, HTTP in `publish`);
/// each surface maps it once.
#[derive(Debug)]
pub enum Refusal {
    Auth(Refused),
    Invalid(event::InvalidEvent),
    /// Over the tenant's events/min quota; `retry_after`: seconds until the batch would fit
    /// (None: it never would, the quota is below it).
    Quota {
        per_min: u32,
        retry_after: Option<u64>,
    },
    Unavailable(&'static str),
}

impl Refusal {
    /// The message for the client (never internal error text).
    pub fn message(&self) -> String {
        match self {
            Self::Auth(r) => r.to_string(),
            Self::Invalid(e) => e.to_string(),
            Self::Quota { per_min, retry_after } => {
                let when = retry_after.map_or("raise the tenant's quota".to_string(), |s| format!("retry in {s}s"));
                format!("over the tenant's quota of {per_min} events/min; {when}")
            }
            Self::Unavailable(m) => (*m).to_string(),
        }
    }
}

fn refused(r: Refused) -> Status {
    match r {
        Refused::NoDevice | Refused::NoKey => Status::unauthenticated(r.to_string()),
        Refused::Device | Refused::Key | Refused::PublicOff | Refused::PublicKey | Refused::Fingerprint => {
            Status::permission_denied(r.to_string())
        }
    }
}

/// The gRPC status of a refusal; over quota it carries `retry-after` (seconds) in metadata.
fn status(r: Refusal) -> Status {
    let msg = r.message();
    match r {
        Refusal::Auth(a) => refused(a),
        Refusal::Invalid(_) => Status::invalid_argument(msg),
        Refusal::Quota { retry_after, .. } => {
            let mut s = Status::resource_exhausted(msg);
            if let Some(secs) = retry_after {
                s.metadata_mut().insert("retry-after", tonic::metadata::MetadataValue::from(secs.max(1)));
            }
            s
        }
        Refusal::Unavailable(_) => Status::unavailable(msg),
    }
}

/// A batch taken: its ids, acknowledged once `committed` says so.
pub struct Queued {
    pub ids: Vec<String>,
    pub committed: oneshot::Receiver<Result<(), String>>,
}

/// The publisher's credentials as presented with the request (owned: a gRPC stream re-checks
/// them on every batch).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub authorization: Option<String>,
    pub fingerprint: Option<String>,
}

impl Credentials {
    fn presented(&self) -> auth::Presented<'_> {
        auth::Presented { authorization: self.authorization.as_deref(), fingerprint: self.fingerprint.as_deref() }
    }

    /// Read from HTTP headers (the same names as the gRPC metadata).
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        Self { authorization: get("authorization"), fingerprint: get(auth::FINGERPRINT_HEADER) }
    }

    fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Self {
        let get = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        Self { authorization: get("authorization"), fingerprint: get(auth::FINGERPRINT_HEADER) }
    }
}

impl Shared {
    /// Whether the device may publish with `creds` now (current assignment).
    pub(super) fn may_publish(&self, tenant: &str, device: &str, creds: &Credentials) -> Result<u32, Refused> {
        let tenants = self.tenants.borrow();
        auth::publisher(&tenants, tenant, device, creds.presented(), super::now_ms()).map(|t| t.events_per_min)
    }

    /// The one path of a batch, whichever surface brought it: the device (from its
    /// certificate) and its credentials checked against the current assignment, the events
    /// validated, the tenant's quota charged, the batch queued on the device's writer.
    pub(super) async fn admit(
        self: &Arc<Self>,
        tenant: &str,
        device: &str,
        creds: &Credentials,
        events: Vec<pb::Event>,
    ) -> Result<Queued, Refusal> {
        let per_min = self.may_publish(tenant, device, creds).map_err(Refusal::Auth)?;
        let rows = event::validate(events, device).map_err(Refusal::Invalid)?;
        self.take_quota(tenant, rows.len(), per_min).map_err(|retry_after| Refusal::Quota { per_min, retry_after })?;
        let ids = rows.iter().map(|r| r.id.clone()).collect();
        let (done, committed) = oneshot::channel();
        let writer = self.writer(tenant, device).ok_or(Refusal::Unavailable("the ingest is shutting down"))?;
        writer
            .send(Job { rows, done })
            .await
            .map_err(|_| Refusal::Unavailable("the tenant's writer stopped; resend"))?;
        Ok(Queued { ids, committed })
    }
}

enum Pending {
    Ack(Vec<String>, oneshot::Receiver<Result<(), String>>),
    Fail(Status),
}

impl IngestService {
    /// Checks one batch and queues it; what the stream answers for it.
    async fn accept(&self, tenant: &str, device: &str, creds: &Credentials, req: pb::PublishRequest) -> Pending {
        match self.shared.admit(tenant, device, creds, req.events).await {
            Ok(q) => Pending::Ack(q.ids, q.committed),
            Err(r) => Pending::Fail(status(r)),
        }
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<pb::PublishAck, Status>> + Send>>;

#[tonic::async_trait]
impl pb::ingest_server::Ingest for IngestService {
    type PublishStream = AckStream;

    async fn publish(&self, request: Request<Streaming<pb::PublishRequest>>) -> Result<Response<AckStream>, Status> {
        let identity = request.extensions().get::<PeerIdentity>().and_then(|p| p.0.clone());
        let Some(Identity::Device { tenant, id: device }) = identity else {
            return Err(refused(Refused::NoDevice));
        };
        let creds = Credentials::from_metadata(request.metadata());
        self.shared.may_publish(&tenant, &device, &creds).map_err(refused)?;
        let mut inbound = request.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::PublishAck, Status>>(IN_FLIGHT);
        let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(IN_FLIGHT);
        // Acks in request order, each after its commit; the first failure ends the stream.
        tokio::spawn(async move {
            while let Some(p) = pending_rx.recv().await {
                let msg = match p {
                    Pending::Ack(ids, rx) => match rx.await {
                        Ok(Ok(())) => Ok(pb::PublishAck { ids }),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "realtime batch not stored");
                            Err(Status::unavailable("the events were not stored; resend them"))
                        }
                        Err(_) => Err(Status::unavailable("the events were not stored; resend them")),
                    },
                    Pending::Fail(s) => Err(s),
                };
                let failed = msg.is_err();
                if out_tx.send(msg).await.is_err() || failed {
                    return;
                }
            }
        });
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                let req = match inbound.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(s) => {
                        tracing::debug!(status = %s, "publish stream ended");
                        return;
                    }
                };
                let p = svc.accept(&tenant, &device, &creds, req).await;
                let failed = matches!(p, Pending::Fail(_));
                if pending_tx.send(p).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx))))
    }
}

/// One tenant's writer: batches jobs into transactions until its queue closes.
pub async fn writer(shared: Arc<Shared>, tenant: String, mut rx: mpsc::Receiver<Job>) {
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut rows = first.rows.len();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH_AFTER;
        while rows < FLUSH_ROWS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(j)) => {
                    rows += j.rows.len();
                    jobs.push(j);
                }
                _ => break,
            }
        }
        while rows < MAX_TXN_ROWS {
            match rx.try_recv() {
                Ok(j) => {
                    rows += j.rows.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = write(&shared, &tenant, &jobs).await;
        let took = started.elapsed();
        tracing::trace!(tenant = %tenant, rows, ?took, "realtime batch written");
        match result {
            Ok(inserted) => {
                crate::metrics::METRICS.ingest.committed(rows, inserted, took);
                shared.count(&tenant, inserted);
                // A feed reading its slot through SQL (streaming refused) reads at once when
                // subscribers wait; without them it keeps its own pace (each SQL read
                // re-decodes WAL since the slot's restart point). A streamed feed ignores this.
                if let Some(feed) = shared.feed(&tenant).filter(|f| f.subscribers.load(Ordering::Relaxed) > 0) {
                    feed.wake.notify_one();
                }
                for j in jobs {
                    let _ = j.done.send(Ok(()));
                }
            }
            Err(e) => {
                crate::metrics::METRICS.ingest.failed();
                let e = e.to_string();
                for j in jobs {
                    let _ = j.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Inserts the jobs' rows in one transaction as the tenant's owner role; returns how many rows
/// were new.
async fn write(shared: &Shared, tenant: &str, jobs: &[Job]) -> Result<u64, sqlx::Error> {
    let own_database = shared.tenants.borrow().get(tenant).is_some_and(|t| t.own_database);
    let pool = shared.pool(own_database.then(|| format!("tenant_{tenant}")).as_deref());
    let mut seen = BTreeSet::new();
    let n: usize = jobs.iter().map(|j| j.rows.len()).sum();
    let (mut ids, mut devices, mut kinds, mut payloads, mut times) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in jobs.iter().flat_map(|j| j.rows.iter()) {
        if !seen.insert(r.id.as_str()) {
            continue;
        }
        ids.push(r.id.as_str());
        devices.push(r.device.as_str());
        kinds.push(r.kind.as_str());
        payloads.push(r.payload.as_str());
        times.push(r.created_ms);
    }
    let mut tx = pool.begin().await?;
    // The tenant's own role writes its table: never the superuser with tenant-controlled data.
    // The name is a validated tenant name.
    sqlx::query(&format!("SET LOCAL ROLE \"tenant_{tenant}_owner\"")).execute(&mut *tx).await?;
    let done = sqlx::query(&format!(
        "INSERT INTO \"tenant_{tenant}\".events (id, device_id, event_type, payload, created_at) \
         SELECT u.id::uuid, u.dev, u.typ, u.body::jsonb, \
                CASE WHEN u.ms = 0 THEN now() ELSE to_timestamp(u.ms / 1000.0::float8) END \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[]) AS u(id, dev, typ, body, ms) \
         ON CONFLICT (id) DO NOTHING"
    ))
    .bind(ids)
    .bind(devices)
    .bind(kinds)
    .bind(payloads)
    .bind(times)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}
