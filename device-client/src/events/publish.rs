//! The stream to the realtime ingest (`Ingest.Publish`, mTLS with the device's certificate):
//! sends every pending spooled event in batches, then new ones as they are spooled, and drops an
//! event from the spool only when a `PublishAck` names it. When the stream breaks, everything
//! still pending is sent again on the next one (jittered exponential backoff in between). A
//! device in public mode adds its key and live fingerprint to each stream (`public`).

use super::spool::Spool;
use crate::state::StateDir;
use anyhow::bail;
use berqenas_proto::realtime as pb;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tonic::transport::Channel;

/// Events per `PublishRequest`.
const BATCH: usize = 256;
/// Events sent and not yet acknowledged, at most.
const WINDOW: usize = 4096;

/// The spool and a wake-up for the stream when something was added.
pub struct Outbox {
    spool: Mutex<Spool>,
    pub wake: Notify,
}

impl Outbox {
    pub fn new(spool: Spool) -> Self {
        Self { spool: Mutex::new(spool), wake: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spool> {
        // A panic while holding the lock left the spool as valid as the file it mirrors.
        self.spool.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Spools `event` durably and wakes the stream.
    pub fn push(&self, event: &super::Event) -> anyhow::Result<()> {
        self.lock().append(event)?;
        self.wake.notify_one();
        Ok(())
    }

    pub fn pending_count(&self) -> usize {
        self.lock().pending().len()
    }

    fn is_pending(&self, id: &str) -> bool {
        self.lock().pending().iter().any(|e| e.id == id)
    }
}

/// Jittered exponential backoff: 1 s doubling to `cap`, each wait a random 50-100 % of it.
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(cap: Duration) -> Self {
        Self { next: Duration::from_secs(1), cap }
    }

    pub fn reset(&mut self) {
        self.next = Duration::from_secs(1);
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        let mut r = [0u8; 2];
        let _ = getrandom::getrandom(&mut r);
        let frac = 0.5 + f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) / 2.0;
        base.mul_f64(frac)
    }
}

async fn send_more(
    tx: &tokio::sync::mpsc::Sender<pb::PublishRequest>,
    outbox: &Outbox,
    in_flight: &mut HashSet<String>,
) -> anyhow::Result<()> {
    loop {
        let room = WINDOW.saturating_sub(in_flight.len()).min(BATCH);
        let batch: Vec<pb::Event> = outbox
            .lock()
            .pending()
            .iter()
            .filter(|e| !in_flight.contains(&e.id))
            .take(room)
            .cloned()
            .map(Into::into)
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        in_flight.extend(batch.iter().map(|e| e.id.clone()));
        if tx.send(pb::PublishRequest { events: batch }).await.is_err() {
            bail!("the publish stream closed");
        }
    }
}

/// One stream: returns when it breaks (an error), or, with `until`, once that event is
/// acknowledged.
async fn session(
    client: &mut pb::ingest_client::IngestClient<Channel>,
    outbox: &Outbox,
    until: Option<&str>,
    public: Option<&super::public::Public>,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut in_flight = HashSet::new();
    send_more(&tx, outbox, &mut in_flight).await?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(p) = public {
        p.attach(&mut request)?;
    }
    let mut acks = client
        .publish(request)
        .await
        .map_err(|s| anyhow::anyhow!("publish refused ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    loop {
        if until.is_some_and(|id| !outbox.is_pending(id)) {
            return Ok(());
        }
        tokio::select! {
            msg = acks.message() => match msg {
                Ok(Some(ack)) => {
                    outbox.lock().ack(&ack.ids)?;
                    for id in &ack.ids {
                        in_flight.remove(id);
                    }
                    send_more(&tx, outbox, &mut in_flight).await?;
                }
                Ok(None) => bail!("the ingest ended the stream"),
                Err(s) => bail!("the ingest ended the stream ({:?}): {}", s.code(), s.message()),
            },
            () = outbox.wake.notified() => send_more(&tx, outbox, &mut in_flight).await?,
        }
    }
}

/// `send` without `run`: publishes the spool and waits (at most 20 s) until `id` is
/// acknowledged.
pub async fn deliver(dir: &StateDir, endpoint: &str, outbox: &Outbox, id: &str) -> anyhow::Result<()> {
    let work = async {
        let public = super::public::load(dir)?;
        let mut client = crate::connect::ingest(dir, endpoint).await?;
        session(&mut client, outbox, Some(id), public.as_ref()).await
    };
    match tokio::time::timeout(Duration::from_secs(20), work).await {
        Ok(r) => r,
        Err(_) => bail!("no acknowledgement within 20 s"),
    }
}

/// `run`: keeps a stream to the tenant's ingest while there is something to send, for ever.
pub async fn relay(dir: StateDir, outbox: Arc<Outbox>) {
    let mut backoff = Backoff::new(Duration::from_secs(60));
    loop {
        if outbox.pending_count() == 0 {
            outbox.wake.notified().await;
            continue;
        }
        let endpoint = match dir.load() {
            Ok(d) => d.realtime_endpoint,
            Err(e) => {
                eprintln!("berqenas-device: {e:#}");
                String::new()
            }
        };
        let result = async {
            // Read for each stream: a key put in place (or rotated) while `run` runs is used
            // from the next one on.
            let public = super::public::load(&dir)?;
            let mut client = crate::connect::ingest(&dir, &endpoint).await?;
            backoff.reset();
            session(&mut client, &outbox, None, public.as_ref()).await
        }
        .await;
        if let Err(e) = result {
            let wait = backoff.next_delay();
            eprintln!(
                "berqenas-device: events: {e:#}; {} pending, retrying in {:.1} s",
                outbox.pending_count(),
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(8));
        let waits: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert!(waits[0] >= Duration::from_millis(500) && waits[0] <= Duration::from_secs(1));
        assert!(waits[5] >= Duration::from_secs(4) && waits[5] <= Duration::from_secs(8));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
