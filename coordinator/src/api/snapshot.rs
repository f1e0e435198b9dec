//! `GET /api/v1/cluster/snapshot` (admin): a backup of the coordinator's own data
//! (`snapshot save`). The save is audited first (`cluster.snapshot-save`, so the snapshot holds
//! its own audit entry), this coordinator catches up with the leader and builds a Raft snapshot,
//! and the answer streams a `snapshotfile::Taken` line (the snapshot's facts and the cluster
//! backup key) followed by the snapshot as coordinators ship it to each other (the state, then
//! every audit entry, read from the store a chunk at a time). The CLI seals it into the file.

use super::auth::{Ctx, Need};
use super::dto::ErrorBody;
use super::error::ApiError;
use super::Result;
use crate::raft::TypeConfig;
use crate::server::{Consistency, Coordinator};
use crate::snapshotfile::{About, Taken};
use crate::state::action::Action;
use crate::state::Op;
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use openraft::storage::{RaftStateMachine, Snapshot};
use std::io::{BufReader, Read, Seek};
use std::sync::Arc;
use std::time::Duration;

/// How long a save waits for this coordinator's snapshot to be built.
const BUILD_WAIT: Duration = Duration::from_secs(120);
/// Bytes per piece of the streamed answer.
const PIECE: usize = 256 * 1024;

#[utoipa::path(get, path = "/api/v1/cluster/snapshot",
    responses(
        (status = 200, description = "a `Taken` JSON line (holding the cluster backup key), then this coordinator's \
            Raft snapshot as shipped between coordinators; seal it at once (`snapshot save` does)",
            body = String, content_type = "application/octet-stream"),
        (status = 409, description = "a coordinator runs an older release that cannot record the save", body = ErrorBody),
        (status = 503, description = "no leader, or the snapshot could not be built in time", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn save_snapshot(ctx: Ctx) -> Result<Response> {
    let c = ctx.coordinator.clone();
    let scope = ctx.scope(Need::Admin, Action::ClusterSnapshotSave, format!("coordinator/{}", c.config.id)).await?;
    let index = *c.applied.borrow();
    scope.run(Op::SnapshotSaved { node_id: c.config.id, index }).await?;
    // The save's own entry is committed; have it (and everything before it) applied here.
    c.read_barrier(Consistency::Linearizable).await?;
    let snapshot = build(&c).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let reader = snapshot.snapshot.into_reader().await.map_err(|e| ApiError::internal("open the snapshot", e))?;
    let (id, key) = (c.config.id, c.backup_key.clone());
    let meta = snapshot.meta;
    tokio::task::spawn_blocking(move || {
        if let Err(e) = stream(reader, id, meta, key, &tx) {
            tracing::warn!(error = %e, "streaming a snapshot stopped");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .map_err(|e| ApiError::internal("snapshot answer", e))
}

/// Has openraft build a snapshot of everything applied here now, and opens it.
async fn build(c: &Arc<Coordinator>) -> Result<Snapshot<TypeConfig>> {
    let applied = *c.applied.borrow();
    let unavailable = |what: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "snapshot_unavailable", what);
    c.raft.trigger().snapshot().await.map_err(|e| unavailable(format!("cannot build a snapshot: {e}")))?;
    c.raft
        .wait(Some(BUILD_WAIT))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied), "snapshot built")
        .await
        .map_err(|e| unavailable(format!("the snapshot was not built in time: {e}")))?;
    // A newer snapshot may replace the file between reading its name and opening it: try again.
    for _ in 0..5 {
        let mut store = c.state_machine.clone();
        match store.get_current_snapshot().await {
            Ok(Some(s)) => return Ok(s),
            Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(ApiError::internal("open the current snapshot", e)),
        }
    }
    Err(unavailable("the current snapshot kept changing; try again".into()))
}

/// Sends the `Taken` line, then the snapshot from its start, in pieces.
fn stream(
    reader: Box<dyn crate::raft::ReadSeek>,
    node_id: u64,
    raft: openraft::SnapshotMeta<u64, crate::raft::CoordinatorNode>,
    key: Option<Arc<crate::backupkey::ClusterKey>>,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<()> {
    let mut input = BufReader::with_capacity(1 << 16, reader);
    let header = crate::raft::read_snapshot_header(&mut input).map_err(std::io::Error::other)?;
    let state = &header.state;
    let settings = state.settings.clone().ok_or_else(|| std::io::Error::other("the snapshot has no cluster"))?;
    let last = raft.last_log_id.unwrap_or_default();
    let about = About {
        cluster_id: settings.cluster_id,
        ca_fingerprint: settings.ca_fingerprint,
        node_id,
        taken_at_ms: crate::time::now_ms(),
        last_applied_term: last.leader_id.term,
        last_applied_index: last.index,
        voters: raft.last_membership.membership().voter_ids().collect(),
        audit_entries: state.audit.head().seq,
        audit_head: state.audit.head().hash.clone(),
        tenants: state.tenants.len(),
        backup_key_id: key.as_ref().map(|k| k.id.clone()),
    };
    let taken = Taken { about, raft, backup_key: key.map(|k| hex::encode(k.bytes())) };
    let mut line = serde_json::to_vec(&taken).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let send = |b: Bytes| tx.blocking_send(Ok(b)).map_err(|_| std::io::Error::other("the client went away"));
    send(Bytes::from(line))?;
    let mut input = input.into_inner();
    input.seek(std::io::SeekFrom::Start(0))?;
    loop {
        let mut piece = vec![0u8; PIECE];
        let n = input.read(&mut piece)?;
        if n == 0 {
            return Ok(());
        }
        piece.truncate(n);
        send(Bytes::from(piece))?;
    }
}
