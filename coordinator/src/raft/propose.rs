//! Proposal batching: every write this node proposes (its own API's and the ones followers forward)
//! goes through one `Proposer`, which puts the commands waiting at that moment into one Raft entry
//! (a `Proposal`). Every entry costs an append, a replication round and an apply on every member,
//! and the commands of a batch share them. Nothing waits for a batch to fill: an idle proposer
//! proposes a lone command at once, and a batch is only as large as what queued while the
//! batch before it was being committed. A batch this node proposed as leader and still waits for
//! after it stopped leading is given up after `UNSETTLED_AFTER` (`Unsettled`): openraft answers it
//! when the entry is applied here or cut as conflicting, never when a snapshot replaces it, and
//! one unanswered batch would hold every later write of this node.

use super::{CoordinatorNode, Proposal, Raft};
use crate::state::{Command, Response};
use openraft::error::{ClientWriteError, Fatal, RaftError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// openraft's own error of a proposal (not leader, stopped, …), as a forwarded write's reply
/// carries it.
pub type ProposeError = RaftError<u64, ClientWriteError<u64, CoordinatorNode>>;

/// Why a proposed command has no result.
#[derive(Debug, Clone)]
pub enum ProposeFailure {
    Raft(Box<ProposeError>),
    /// This node stopped leading with the command's entry unanswered: it may or may not be
    /// committed (a snapshot that replaced it says nothing of it). Never retried: a second
    /// proposal could apply it twice.
    Unsettled,
}

/// How long a batch may stay unanswered once this node no longer leads. openraft answers an
/// entry cut as conflicting at once and an applied one when this node applies it, which the new
/// leader's first AppendEntries or snapshot brings: seconds on a loaded host.
const UNSETTLED_AFTER: Duration = Duration::from_secs(5);

/// The most commands in one entry (a bounded entry keeps an append and an AppendEntries small).
const MAX_BATCH: usize = 256;

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<Response, ProposeFailure>>,
}

/// The queue in front of `Raft::client_write` (see the module doc).
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Starts the batching task for `raft` (it ends when every `Proposer` clone is dropped).
    pub fn spawn(raft: Raft) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Self { queue }
    }

    /// Proposes `cmd` and waits until it is applied here; its own result, or why the entry that
    /// carried it was not committed (a follower gets `ForwardToLeader`, as from `client_write`),
    /// or `Unsettled`.
    pub async fn write(&self, cmd: Command) -> Result<Response, ProposeFailure> {
        let stopped = || ProposeFailure::Raft(Box::new(RaftError::Fatal(Fatal::Stopped)));
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Pending { cmd, reply }).is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// One batch in flight: the loop waits for it, and whatever arrives meanwhile forms the next.
/// More in flight only shrinks the batches: openraft keeps one AppendEntries in flight per
/// follower and sends what was appended meanwhile together, so an extra entry adds per-entry
/// work (and fsyncs) on every member, on 2 shared cores; measured, two in flight were no faster
/// at 16 or 64 clients (ARCHITECTURE.md). Proposing from this task (not one spawned per batch)
/// spares a lone write a task hand-off.
async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (cmds, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        let written = raft.client_write(Proposal::Batch(cmds));
        let outcome = tokio::select! {
            biased;
            outcome = written => Some(outcome),
            () = deposed(&raft) => None,
        };
        match outcome {
            Some(Ok(written)) => {
                let mut results = written.data.into_iter();
                for reply in replies {
                    // The state machine answers every command of a batch, in order.
                    let stopped = ProposeFailure::Raft(Box::new(RaftError::Fatal(Fatal::Stopped)));
                    let _ = reply.send(results.next().ok_or(stopped));
                }
            }
            Some(Err(e)) => {
                for reply in replies {
                    let _ = reply.send(Err(ProposeFailure::Raft(Box::new(e.clone()))));
                }
            }
            None => {
                tracing::warn!(
                    commands = replies.len(),
                    "gave up a batch left unanswered after this node stopped leading"
                );
                for reply in replies {
                    let _ = reply.send(Err(ProposeFailure::Unsettled));
                }
            }
        }
    }
}

/// Resolves once this node has not led for `UNSETTLED_AFTER` in a row (never while it leads).
async fn deposed(raft: &Raft) {
    let mut metrics = raft.metrics();
    let id = metrics.borrow().id;
    let leads = |m: &openraft::RaftMetrics<u64, CoordinatorNode>| m.current_leader == Some(id);
    loop {
        if metrics.wait_for(|m| !leads(m)).await.is_err() {
            return std::future::pending().await;
        }
        if tokio::time::timeout(UNSETTLED_AFTER, metrics.wait_for(leads)).await.is_err() {
            return;
        }
    }
}
