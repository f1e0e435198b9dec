//! Proposal batching: every write this node proposes (its own API's and the ones followers forward)
//! goes through one `Proposer`, which puts the commands waiting at that moment into one Raft entry
//! (a `Proposal`). Every entry costs an append, a replication round and an apply on every member,
//! and the commands of a batch share them. Nothing waits for a batch to fill: an idle proposer
//! proposes a lone command at once, and a batch is only as large as what queued while the
//! batch before it was being committed.

use super::{CoordinatorNode, Proposal, Raft};
use crate::state::{Command, Response};
use openraft::error::{ClientWriteError, Fatal, RaftError};
use tokio::sync::{mpsc, oneshot};

/// What proposing a command can fail with: openraft's own error (not leader, stopped, …).
pub type ProposeError = RaftError<u64, ClientWriteError<u64, CoordinatorNode>>;

/// The most commands in one entry (a bounded entry keeps an append and an AppendEntries small).
const MAX_BATCH: usize = 256;

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<Response, ProposeError>>,
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
    /// carried it was not committed (a follower gets `ForwardToLeader`, as from `client_write`).
    pub async fn write(&self, cmd: Command) -> Result<Response, ProposeError> {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Pending { cmd, reply }).is_err() {
            return Err(RaftError::Fatal(Fatal::Stopped));
        }
        answer.await.unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
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
        match raft.client_write(Proposal::Batch(cmds)).await {
            Ok(written) => {
                let mut results = written.data.into_iter();
                for reply in replies {
                    // The state machine answers every command of a batch, in order.
                    let _ = reply.send(results.next().ok_or(RaftError::Fatal(Fatal::Stopped)));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
