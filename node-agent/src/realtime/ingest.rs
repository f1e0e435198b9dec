//! The `Ingest` gRPC service and the per-tenant writers behind it.
//!
//! A stream's device is the one its TLS certificate names; every batch is checked against the
//! current assignment (tenant assigned here and running, device listed), validated, charged to
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

fn refused(r: Refused) -> Status {
    match r {
        Refused::NoDevice | Refused::NoKey => Status::unauthenticated(r.to_string()),
        Refused::Device | Refused::Key => Status::permission_denied(r.to_string()),
    }
}

enum Pending {
    Ack(Vec<String>, oneshot::Receiver<Result<(), String>>),
    Fail(Status),
}

impl IngestService {
    /// Checks one batch and queues it; what the stream answers for it.
    async fn accept(&self, tenant: &str, device: &str, req: pb::PublishRequest) -> Pending {
        let per_min = {
            let tenants = self.shared.tenants.borrow();
            match auth::device(&tenants, tenant, device) {
                Ok(t) => t.events_per_min,
                Err(r) => return Pending::Fail(refused(r)),
            }
        };
        let rows = match event::validate(req.events, device) {
            Ok(rows) => rows,
            Err(e) => return Pending::Fail(Status::invalid_argument(e.to_string())),
        };
        if let Err(wait) = self.shared.take_quota(tenant, rows.len(), per_min) {
            let when = wait.map_or("raise the tenant's quota".to_string(), |s| format!("retry in {s}s"));
            return Pending::Fail(Status::resource_exhausted(format!(
                "over the tenant's quota of {per_min} events/min; {when}"
            )));
        }
        let ids = rows.iter().map(|r| r.id.clone()).collect();
        let (done, rx) = oneshot::channel();
        let Some(writer) = self.shared.writer(tenant, device) else {
            return Pending::Fail(Status::unavailable("the ingest is shutting down"));
        };
        if writer.send(Job { rows, done }).await.is_err() {
            return Pending::Fail(Status::unavailable("the tenant's writer stopped; resend"));
        }
        Pending::Ack(ids, rx)
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
        {
            let tenants = self.shared.tenants.borrow();
            auth::device(&tenants, &tenant, &device).map_err(refused)?;
        }
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
                let p = svc.accept(&tenant, &device, req).await;
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
                // Only subscribers wait for the rows: without them the feed keeps its own pace
                // (each slot read re-decodes WAL since the slot's restart point).
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
