//! The stages of the two pipelines, each on its own task or thread and joined by bounded
//! queues, so that pg_dump, zstd, AES-GCM and the bucket work at once while memory stays bounded
//! whatever the dump's size.
//!
//! - Backup: [`read_dump`] (async, from a 1 MiB pipe) → [`compress`] (blocking thread feeding
//!   zstd's one worker, like the `zstd` CLI's default `-T1`, straight into 1 MiB chunks) → [`seal`] (blocking
//!   thread: AES-256-GCM and the object's SHA-256) → [`send_parts`] (async, [`UPLOADS`] parts in
//!   flight). The read buffers and the chunks go back to the stage that fills them ([`Spare`]),
//!   so the steady state allocates only the parts.
//! - Restore: [`download`] (async) → [`open_object`] (blocking thread: SHA-256, authentication,
//!   zstd with bounded output) → a [`Plain`] sink: the identity scan, or a queue to psql.
//!
//! A stage whose neighbour is gone stops quietly: the stage that failed reports why.

use super::format::{DataKey, Opener, Sealer, CHUNK};
use super::store::{self, Store};
use super::{io, pg, BackupError, Progress, DEADLINE, LEVEL, PART};
use crate::host::exec;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Part uploads in flight at once.
pub(super) const UPLOADS: usize = 3;
/// Bytes of pg_dump's output (or of the object) handed on at a time at most.
pub(super) const READ: usize = 1 << 20;
/// pg_dump's stdout pipe: 1 MiB (Linux's default limit for a pipe) rather than 64 KiB, so pg_dump
/// writes on while the reader waits for the CPU, and the reader takes more per wake-up.
const PIPE: usize = 1 << 20;
/// Buffers waiting between two stages: enough that zstd finds input while pg_dump waits for
/// the CPU, and the sealer room while a part uploads.
pub(super) const QUEUE: usize = 8;

/// What the compressing stage is given: the dump's bytes, then `End` once pg_dump exited
/// cleanly. A stream that closes without `End` was a failed dump, and no final chunk is sealed.
pub(super) enum Dumped {
    Bytes(Vec<u8>),
    End,
}

/// A compressed chunk (at most [`CHUNK`] bytes) and whether it is the dump's last.
type Compressed = (Vec<u8>, bool);

/// Buffers a later stage is done with, on their way back to the stage that fills them (at most
/// about a queue's worth are ever in use, so this stays bounded without a bound).
pub(super) struct Spare {
    ready: std::sync::mpsc::Receiver<Vec<u8>>,
    size: usize,
}

impl Spare {
    /// The filling end (buffers of `size` bytes) and the way back to it.
    pub(super) fn new(size: usize) -> (Self, std::sync::mpsc::Sender<Vec<u8>>) {
        let (back, ready) = std::sync::mpsc::channel();
        (Self { ready, size }, back)
    }

    /// A spare buffer, emptied, or a new one.
    fn take(&self) -> Vec<u8> {
        match self.ready.try_recv() {
            Ok(mut buf) => {
                buf.clear();
                buf
            }
            Err(_) => Vec::with_capacity(self.size),
        }
    }
}

/// Hands a used buffer back (dropped if the filling stage is gone).
fn give_back(back: &std::sync::mpsc::Sender<Vec<u8>>, buf: Vec<u8>) {
    let _ = back.send(buf);
}

/// A part of the object ready to upload, and whether it is the object's last.
type Part = (Vec<u8>, bool);

/// What the sealing stage made: the object's size and SHA-256.
pub(super) struct Sealed {
    pub bytes: u64,
    pub sha256: String,
}

/// Reads pg_dump's output in buffers of half to one [`READ`] and hands them on; `End` only after pg_dump
/// exited cleanly. Stops quietly when the next stage is gone (that stage reports why); pg_dump
/// is killed when `dump` drops.
pub(super) async fn read_dump(
    mut dump: exec::Streaming,
    out: mpsc::Sender<Dumped>,
    spare: Spare,
    dumped: &AtomicU64,
) -> Result<(), BackupError> {
    let mut stdout = dump.stdout.take().ok_or_else(|| io("pg_dump")(std::io::ErrorKind::BrokenPipe.into()))?;
    // Best effort: a smaller pipe only costs wake-ups.
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE) {
        tracing::debug!(error = %e, "pg_dump's pipe keeps its size");
    }
    loop {
        let mut buf = spare.take();
        // At least half a buffer (or the end): fewer, larger hand-offs to zstd.
        while buf.len() < READ / 2 {
            if stdout.read_buf(&mut buf).await.map_err(io("reading pg_dump's output"))? == 0 {
                break;
            }
        }
        if buf.is_empty() {
            break;
        }
        dumped.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if out.send(Dumped::Bytes(buf)).await.is_err() {
            return Ok(());
        }
    }
    // The dump is whole only if pg_dump says so: a failed dump never completes the upload.
    dump.finish(DEADLINE).await?;
    let _ = out.send(Dumped::End).await;
    Ok(())
}

/// zstd (one worker thread, like the `zstd` CLI's default) fed from a thread of its own: the
/// dump's bytes in, compressed straight into chunks of [`CHUNK`] bytes (the last one shorter) out. Read
/// buffers go back to the reader (`back`), chunks come from the sealer's spares.
pub(super) fn compress(
    mut input: mpsc::Receiver<Dumped>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
    spare: Spare,
    out: mpsc::Sender<Compressed>,
) -> Result<(), BackupError> {
    use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
    let mut zstd = zstd::stream::raw::Encoder::new(LEVEL).map_err(io("zstd"))?;
    // One worker, as the `zstd` CLI runs by default (`-T1`): it compresses while this thread
    // hands it input, and over a contiguous window. Without a worker, zstd's own ring buffer
    // sends almost every block down its slower external-dictionary path.
    zstd.set_parameter(zstd::stream::raw::CParameter::NbWorkers(1)).map_err(io("zstd"))?;
    let mut chunk = spare.take();
    while let Some(dumped) = input.blocking_recv() {
        let Dumped::Bytes(bytes) = dumped else {
            loop {
                let at = chunk.len();
                let left = zstd.finish(&mut OutBuffer::around_pos(&mut chunk, at), true).map_err(io("zstd"))?;
                if left == 0 {
                    let _ = out.blocking_send((chunk, true));
                    return Ok(());
                }
                if chunk.len() == chunk.capacity()
                    && out.blocking_send((std::mem::replace(&mut chunk, spare.take()), false)).is_err()
                {
                    return Ok(());
                }
            }
        };
        let mut src = InBuffer::around(&bytes);
        while src.pos() < bytes.len() {
            let at = chunk.len();
            zstd.run(&mut src, &mut OutBuffer::around_pos(&mut chunk, at)).map_err(io("zstd"))?;
            if chunk.len() == chunk.capacity()
                && out.blocking_send((std::mem::replace(&mut chunk, spare.take()), false)).is_err()
            {
                return Ok(());
            }
        }
        give_back(&back, bytes);
    }
    Ok(())
}

/// AES-256-GCM and the object's SHA-256 on a thread of their own: compressed chunks in, parts
/// of at least [`PART`] bytes (the last one shorter) out.
pub(super) fn seal(
    mut sealer: Sealer,
    mut input: mpsc::Receiver<Compressed>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
    out: mpsc::Sender<Part>,
) -> Result<Option<Sealed>, BackupError> {
    let (mut hash, mut bytes) = (Sha256::new(), 0u64);
    let mut part = Vec::with_capacity(PART + CHUNK + 64);
    part.extend_from_slice(sealer.header());
    while let Some((chunk, last)) = input.blocking_recv() {
        sealer.seal(&chunk, last, &mut part);
        give_back(&back, chunk);
        if part.len() >= PART || last {
            hash.update(&part);
            bytes += part.len() as u64;
            let full = std::mem::replace(&mut part, Vec::with_capacity(PART + CHUNK + 64));
            if out.blocking_send((full, last)).is_err() {
                return Ok(None);
            }
        }
        if last {
            return Ok(Some(Sealed { bytes, sha256: hex::encode(hash.finalize()) }));
        }
    }
    Ok(None)
}

/// Uploads parts as they come, at most [`UPLOADS`] at once, and reports progress as each
/// completes. Ok only when the object's last part was uploaded.
pub(super) async fn send_parts(
    upload: &mut store::Upload,
    mut input: mpsc::Receiver<Part>,
    dumped: &AtomicU64,
    progress: &mut impl FnMut(Progress),
) -> Result<(), BackupError> {
    let mut in_flight = tokio::task::JoinSet::new();
    let (mut sent, mut open, mut whole) = (0u64, true, false);
    loop {
        tokio::select! {
            part = input.recv(), if open && in_flight.len() < UPLOADS => match part {
                Some((bytes, last)) => {
                    sent += bytes.len() as u64;
                    whole = last;
                    in_flight.spawn(upload.send_part(bytes));
                }
                None => open = false,
            },
            Some(done) = in_flight.join_next() => {
                let done = done.map_err(|e| BackupError::Io { what: "the part upload", error: std::io::Error::other(e) })??;
                upload.record(done);
                let dumped = dumped.load(Ordering::Relaxed);
                progress(Progress { dumped, uploaded: sent, parts: upload.parts() });
            }
            else => break,
        }
    }
    if !whole {
        return Err(io("the backup pipeline")(std::io::Error::other("it ended before the object's last part")));
    }
    Ok(())
}

/// A stage's result once its thread ended.
pub(super) fn joined<T>(ended: Result<Result<T, BackupError>, tokio::task::JoinError>) -> Result<T, BackupError> {
    ended.map_err(|e| BackupError::Io { what: "a pipeline stage", error: std::io::Error::other(e) })?
}

/// Where an object's plain dump goes as it is opened.
pub(super) trait Plain: Send + 'static {
    /// The dump's next piece (at most [`CHUNK`] bytes), every chunk up to it authenticated.
    fn piece(&mut self, bytes: Vec<u8>) -> Result<(), BackupError>;
    /// The object authenticated to its final chunk.
    fn end(self) -> Result<(), BackupError>;
}

impl Plain for pg::DumpScan {
    fn piece(&mut self, bytes: Vec<u8>) -> Result<(), BackupError> {
        Ok(self.feed(&bytes)?)
    }

    fn end(mut self) -> Result<(), BackupError> {
        Ok(self.finish()?)
    }
}

/// The queue to the task writing into psql.
impl Plain for mpsc::Sender<Vec<u8>> {
    fn piece(&mut self, bytes: Vec<u8>) -> Result<(), BackupError> {
        self.blocking_send(bytes).map_err(|_| io("writing to psql")(std::io::ErrorKind::BrokenPipe.into()))
    }

    fn end(self) -> Result<(), BackupError> {
        Ok(())
    }
}

/// Opens object `key`: downloads it (this task) while a blocking thread authenticates and
/// decompresses it into `plain`, with `beside` (the restore's writer into psql) running
/// meanwhile. Returns the object's SHA-256 once every chunk authenticated, to the final one.
pub(super) async fn unseal(
    store: &Store,
    data_key: &DataKey,
    key: &str,
    plain: impl Plain,
    beside: impl std::future::Future<Output = Result<(), BackupError>>,
) -> Result<String, BackupError> {
    let (object, object_rx) = mpsc::channel(QUEUE);
    let data_key = data_key.clone();
    let opening = tokio::task::spawn_blocking(move || open_object(data_key, object_rx, plain));
    let flowed = tokio::try_join!(download(store, key, object), beside);
    let opened = joined(opening.await);
    flowed?;
    opened
}

/// The object's bytes as they arrive, handed on in buffers of about [`READ`] bytes.
async fn download(store: &Store, key: &str, out: mpsc::Sender<Vec<u8>>) -> Result<(), BackupError> {
    let mut body = store.download(key).await?;
    let mut buf = Vec::with_capacity(2 * READ);
    while let Some(bytes) = body.next().await {
        let bytes =
            bytes.map_err(|e| BackupError::Io { what: "reading the object", error: std::io::Error::other(e) })?;
        buf.extend_from_slice(&bytes);
        if buf.len() >= READ && out.send(std::mem::replace(&mut buf, Vec::with_capacity(2 * READ))).await.is_err() {
            return Ok(());
        }
    }
    if !buf.is_empty() {
        let _ = out.send(buf).await;
    }
    Ok(())
}

/// Hashes, authenticates and decompresses the object's bytes into `plain`; returns its SHA-256.
/// Input that ends before the final chunk (a failed download, too) is refused.
fn open_object(
    data_key: DataKey,
    mut input: mpsc::Receiver<Vec<u8>>,
    mut plain: impl Plain,
) -> Result<String, BackupError> {
    let (mut opener, mut hash, mut inflate) = (Opener::new(data_key), Sha256::new(), Inflate::new()?);
    while let Some(bytes) = input.blocking_recv() {
        hash.update(&bytes);
        opener.feed(&bytes, |chunk| inflate.feed(chunk, &mut plain))?;
    }
    opener.finish()?;
    inflate.finish(&mut plain)?;
    plain.end()?;
    Ok(hex::encode(hash.finalize()))
}

/// zstd's decoder with bounded output: the plain dump leaves in pieces of at most [`CHUNK`]
/// bytes, however well it compressed.
struct Inflate {
    zstd: zstd::stream::raw::Decoder<'static>,
    plain: Vec<u8>,
    /// The input so far ends exactly at the end of a zstd frame.
    ended: bool,
}

impl Inflate {
    fn new() -> Result<Self, BackupError> {
        let zstd = zstd::stream::raw::Decoder::new().map_err(io("zstd"))?;
        Ok(Self { zstd, plain: Vec::with_capacity(CHUNK), ended: false })
    }

    fn feed(&mut self, compressed: &[u8], out: &mut impl Plain) -> Result<(), BackupError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut input = InBuffer::around(compressed);
        loop {
            let (at, read) = (self.plain.len(), input.pos());
            let hint =
                self.zstd.run(&mut input, &mut OutBuffer::around_pos(&mut self.plain, at)).map_err(io("zstd"))?;
            // 0 as the frame ends; a later call with no input asks for the next frame's header.
            if hint == 0 {
                self.ended = true;
            } else if input.pos() > read {
                self.ended = false;
            }
            if self.plain.len() == self.plain.capacity() {
                out.piece(std::mem::replace(&mut self.plain, Vec::with_capacity(CHUNK)))?;
            } else if input.pos() == compressed.len() {
                return Ok(());
            }
        }
    }

    fn finish(mut self, out: &mut impl Plain) -> Result<(), BackupError> {
        if !self.ended {
            return Err(io("zstd")(std::io::Error::other("the compressed dump ends inside its frame")));
        }
        if !self.plain.is_empty() {
            out.piece(std::mem::take(&mut self.plain))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what an opened object yields.
    #[derive(Default)]
    struct Pieces(Vec<Vec<u8>>);

    impl Plain for Pieces {
        fn piece(&mut self, bytes: Vec<u8>) -> Result<(), BackupError> {
            self.0.push(bytes);
            Ok(())
        }

        fn end(self) -> Result<(), BackupError> {
            Ok(())
        }
    }

    #[test]
    fn a_dump_that_compresses_well_leaves_in_bounded_pieces() {
        let dump = vec![b'x'; 40 * CHUNK];
        let compressed = zstd::encode_all(&dump[..], LEVEL).unwrap();
        assert!(compressed.len() < CHUNK / 100, "{} bytes", compressed.len());
        let (mut inflate, mut out) = (Inflate::new().unwrap(), Pieces::default());
        for piece in compressed.chunks(4096) {
            inflate.feed(piece, &mut out).unwrap();
        }
        inflate.finish(&mut out).unwrap();
        assert!(out.0.iter().all(|p| p.len() <= CHUNK), "no piece is larger than a chunk");
        assert_eq!(out.0.concat(), dump);
    }

    #[test]
    fn compressed_chunks_are_full_but_the_last_and_inflate_to_the_dump() {
        // Incompressible, so the dump makes several chunks.
        let dump: Vec<u8> = (0..(3 * CHUNK + CHUNK / 2)).map(|_| rand::random::<u8>()).collect();
        let (input, input_rx) = mpsc::channel(QUEUE);
        let (chunks_tx, mut chunks) = mpsc::channel(QUEUE);
        let (reads, read_back) = Spare::new(READ);
        let (spare_chunks, _chunk_back) = Spare::new(CHUNK);
        let zstd = std::thread::spawn(move || compress(input_rx, read_back, spare_chunks, chunks_tx));
        let fed = dump.clone();
        let feeder = std::thread::spawn(move || {
            for piece in fed.chunks(300 << 10) {
                input.blocking_send(Dumped::Bytes(piece.to_vec())).unwrap();
            }
            input.blocking_send(Dumped::End).unwrap();
        });
        let mut got = Vec::new();
        while let Some(chunk) = chunks.blocking_recv() {
            got.push(chunk);
        }
        feeder.join().unwrap();
        zstd.join().unwrap().unwrap();
        let (last, full) = got.split_last().unwrap();
        assert!(full.len() >= 3 && full.iter().all(|(c, end)| c.len() == CHUNK && !end), "full chunks first");
        assert!(last.1 && last.0.len() <= CHUNK, "the last one says so");
        let object: Vec<u8> = got.iter().flat_map(|(c, _)| c.iter().copied()).collect();
        assert_eq!(zstd::decode_all(&object[..]).unwrap(), dump);
        let pieces = dump.len().div_ceil(300 << 10);
        assert_eq!(reads.ready.try_iter().count(), pieces, "every read buffer came back to the reader");
    }

    #[test]
    fn a_compressed_dump_cut_inside_its_frame_is_refused() {
        let compressed = zstd::encode_all(&b"COPY t FROM stdin;\n1\n\\.\n".repeat(1000)[..], LEVEL).unwrap();
        let (mut inflate, mut out) = (Inflate::new().unwrap(), Pieces::default());
        inflate.feed(&compressed[..compressed.len() - 3], &mut out).unwrap();
        assert!(inflate.finish(&mut out).is_err());
    }
}
