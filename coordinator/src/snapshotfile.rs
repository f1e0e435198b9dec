//! The coordinator backup file (`snapshot save` / `snapshot restore`): one clear JSON header line
//! (format, KDF parameters, and the public facts of the snapshot: cluster, node, log position,
//! members, audit head) followed by the sealed content in frames. The content is what
//! `GET /api/v1/cluster/snapshot` streams: a `Taken` line (which carries the cluster backup key)
//! and the Raft snapshot as shipped between coordinators (the state, with the cluster CA key, then
//! every audit entry). Nothing of it is stored in clear.
//!
//! Sealing: key = PBKDF2-HMAC-SHA256(passphrase, salt, iterations) (the passphrase comes from a
//! file, never the command line); each frame is a u32 (top bit: final; the rest: sealed length)
//! and one AES-256-GCM chunk of at most `CHUNK` bytes, nonce = final flag + chunk counter, AAD =
//! the header line. A changed header, a flipped, dropped, reordered or repeated chunk, a file cut
//! after any chunk or bytes after the final one are refused.

use crate::raft::CoordinatorNode;
use anyhow::{bail, Context};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read, Write};
use std::num::NonZeroU32;
use std::path::Path;

pub const FORMAT: &str = "berqenas-coordinator-snapshot";
pub const VERSION: u32 = 1;
/// Plaintext bytes per sealed chunk.
pub const CHUNK: usize = 1 << 20;
const FINAL: u32 = 1 << 31;
const TAG: usize = 16;
/// PBKDF2 rounds of a new file (OWASP's 2023 figure for HMAC-SHA256).
pub const ITERATIONS: u32 = 600_000;
/// The header line is small; anything longer is not one of ours.
const MAX_HEADER: u64 = 64 * 1024;

/// What the API sends first: the snapshot's facts and the cluster backup key (hex), which is not
/// in the Raft state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Taken {
    pub about: About,
    pub raft: openraft::SnapshotMeta<u64, CoordinatorNode>,
    pub backup_key: Option<String>,
}

/// The public facts of a snapshot, in clear in the file's header (and sealed in `Taken`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct About {
    pub cluster_id: String,
    pub ca_fingerprint: String,
    /// The coordinator that took it.
    pub node_id: u64,
    pub taken_at_ms: u64,
    pub last_applied_term: u64,
    pub last_applied_index: u64,
    /// The voters of the cluster it was taken from.
    pub voters: Vec<u64>,
    pub audit_entries: u64,
    pub audit_head: String,
    pub tenants: usize,
    /// The id of the cluster backup key inside, if the coordinator had one.
    pub backup_key_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kdf {
    pub alg: String,
    pub iterations: u32,
    pub salt: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub kdf: Kdf,
    pub about: About,
}

/// Reads the passphrase from a file only its owner may read; a trailing newline is not part of it.
pub fn read_passphrase(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("read {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!("{} must be readable by its owner only (chmod 600)", path.display());
    }
    let mut text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    while matches!(text.last(), Some(b'\n' | b'\r')) {
        text.pop();
    }
    if text.len() < 12 {
        bail!("the passphrase in {} is shorter than 12 bytes", path.display());
    }
    Ok(text)
}

fn derive(passphrase: &[u8], kdf: &Kdf) -> anyhow::Result<LessSafeKey> {
    if kdf.alg != "pbkdf2-hmac-sha256" {
        bail!("unknown key derivation {:?}", kdf.alg);
    }
    let iterations = NonZeroU32::new(kdf.iterations).filter(|n| n.get() >= 100_000).context("too few KDF rounds")?;
    let salt = hex::decode(&kdf.salt).ok().filter(|s| s.len() == 32).context("the KDF salt is not 32 bytes")?;
    let mut key = [0u8; 32];
    ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, passphrase, &mut key);
    let key = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| anyhow::anyhow!("AES-256 key"))?;
    Ok(LessSafeKey::new(key))
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3] = u8::from(last);
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals content into a snapshot file as it comes.
pub struct Sealer<W: Write> {
    out: W,
    key: LessSafeKey,
    aad: Vec<u8>,
    counter: u64,
    pending: Vec<u8>,
}

impl<W: Write> Sealer<W> {
    /// Writes the header line for `about` with a fresh salt and starts sealing.
    pub fn new(mut out: W, passphrase: &[u8], about: About) -> anyhow::Result<Self> {
        let salt = crate::backupkey::random32()?;
        let kdf = Kdf { alg: "pbkdf2-hmac-sha256".into(), iterations: ITERATIONS, salt: hex::encode(salt) };
        let key = derive(passphrase, &kdf)?;
        let header = Header { format: FORMAT.into(), version: VERSION, kdf, about };
        let aad = serde_json::to_vec(&header)?;
        out.write_all(&aad)?;
        out.write_all(b"\n")?;
        Ok(Self { out, key, aad, counter: 0, pending: Vec::with_capacity(CHUNK) })
    }

    pub fn write(&mut self, mut data: &[u8]) -> anyhow::Result<()> {
        while !data.is_empty() {
            let n = (CHUNK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            // A full chunk is sealed only when more follows, so the final one is never empty
            // unless the whole content is.
            if self.pending.len() == CHUNK && !data.is_empty() {
                self.seal(false)?;
            }
        }
        Ok(())
    }

    fn seal(&mut self, last: bool) -> anyhow::Result<()> {
        let mut chunk = std::mem::take(&mut self.pending);
        self.key
            .seal_in_place_append_tag(nonce(self.counter, last), Aad::from(&self.aad), &mut chunk)
            .map_err(|_| anyhow::anyhow!("sealing a snapshot chunk failed"))?;
        let len = u32::try_from(chunk.len()).context("chunk length")?;
        self.out.write_all(&(len | if last { FINAL } else { 0 }).to_be_bytes())?;
        self.out.write_all(&chunk)?;
        self.counter += 1;
        chunk.clear();
        self.pending = chunk;
        Ok(())
    }

    /// Seals the final chunk and answers the output.
    pub fn finish(mut self) -> anyhow::Result<W> {
        self.seal(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a snapshot file's header line.
pub fn read_header(input: &mut impl BufRead) -> anyhow::Result<(Header, Vec<u8>)> {
    let mut line = Vec::new();
    input.take(MAX_HEADER).read_until(b'\n', &mut line).context("read the snapshot file")?;
    if line.last() != Some(&b'\n') {
        bail!("not a coordinator snapshot file (no header line)");
    }
    line.pop();
    let header: Header =
        serde_json::from_slice(&line).map_err(|_| anyhow::anyhow!("not a coordinator snapshot file (bad header)"))?;
    if header.format != FORMAT {
        bail!("not a coordinator snapshot file (format {:?})", header.format);
    }
    if header.version != VERSION {
        bail!("snapshot file version {} is not supported (this release reads {VERSION})", header.version);
    }
    Ok((header, line))
}

/// Opens every chunk after the header and writes the content to `out`. Fails, naming the chunk,
/// on the first one that does not authenticate, and on a file cut short or with bytes after the
/// final chunk; `out` then holds a prefix the caller must throw away.
pub fn open_all(
    input: &mut impl Read,
    header: &Header,
    aad: &[u8],
    passphrase: &[u8],
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let key = derive(passphrase, &header.kdf)?;
    let mut counter = 0u64;
    let mut total = 0u64;
    loop {
        let mut word = [0u8; 4];
        if let Err(e) = input.read_exact(&mut word) {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                bail!("the snapshot file is truncated: it ends after chunk {counter} without its final chunk");
            }
            return Err(e).context("read the snapshot file");
        }
        let word = u32::from_be_bytes(word);
        let last = word & FINAL != 0;
        let len = (word & !FINAL) as usize;
        if !(TAG..=CHUNK + TAG).contains(&len) {
            bail!("the snapshot file is corrupt: chunk {counter} has an impossible length");
        }
        let mut chunk = vec![0u8; len];
        input
            .read_exact(&mut chunk)
            .map_err(|_| anyhow::anyhow!("the snapshot file is truncated: chunk {counter} is cut short"))?;
        let plain = key.open_in_place(nonce(counter, last), Aad::from(aad), &mut chunk).map_err(|_| {
            anyhow::anyhow!(
                "chunk {counter} of the snapshot file does not authenticate: wrong passphrase, or the file was changed"
            )
        })?;
        out.write_all(plain).context("write the opened snapshot")?;
        total += plain.len() as u64;
        counter += 1;
        if last {
            let mut extra = [0u8; 1];
            if input.read(&mut extra).context("read the snapshot file")? != 0 {
                bail!("the snapshot file is corrupt: bytes follow its final chunk");
            }
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about() -> About {
        About {
            cluster_id: "c1".into(),
            ca_fingerprint: "sha256:00".into(),
            node_id: 1,
            taken_at_ms: 5,
            last_applied_term: 2,
            last_applied_index: 9,
            voters: vec![1, 2, 3],
            audit_entries: 4,
            audit_head: "ab".into(),
            tenants: 1,
            backup_key_id: None,
        }
    }

    const PASS: &[u8] = b"correct horse battery";

    fn sealed(content: &[u8]) -> Vec<u8> {
        let mut s = Sealer::new(Vec::new(), PASS, about()).expect("sealer");
        for piece in content.chunks(7000) {
            s.write(piece).expect("write");
        }
        s.finish().expect("finish")
    }

    fn open(file: &[u8], pass: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut input = std::io::BufReader::new(file);
        let (header, aad) = read_header(&mut input)?;
        let mut out = Vec::new();
        open_all(&mut input, &header, &aad, pass, &mut out)?;
        Ok(out)
    }

    #[test]
    fn content_round_trips_across_chunks_and_nothing_is_in_clear() {
        let content: Vec<u8> = (0..(CHUNK * 2 + 123)).map(|i| (i % 251) as u8).collect();
        let file = sealed(&content);
        assert_eq!(open(&file, PASS).expect("open"), content);
        assert_eq!(open(&sealed(b""), PASS).expect("empty"), b"");
        let secret = sealed(b"-----BEGIN PRIVATE KEY----- ca key");
        assert!(!secret.windows(11).any(|w| w == b"PRIVATE KEY"));
    }

    #[test]
    fn a_changed_cut_or_extended_file_is_refused() {
        let content: Vec<u8> = (0..(CHUNK + 500)).map(|i| (i % 13) as u8).collect();
        let file = sealed(&content);
        let header_len = file.iter().position(|b| *b == b'\n').expect("header") + 1;
        let err = |f: &[u8]| open(f, PASS).expect_err("refused").to_string();
        assert!(err(&file[..file.len() - 1]).contains("truncated"));
        assert!(err(&file[..header_len + 4 + CHUNK + TAG]).contains("truncated"), "cut after a whole chunk");
        let mut flipped = file.clone();
        flipped[header_len + 100] ^= 1;
        assert!(err(&flipped).contains("chunk 0 of the snapshot file does not authenticate"));
        let mut extended = file.clone();
        extended.push(0);
        assert!(err(&extended).contains("bytes follow"));
        let mut header = file.clone();
        let at = header.windows(4).position(|w| w == b"\"c1\"").expect("cluster id");
        header[at + 2] = b'2';
        assert!(err(&header).contains("does not authenticate"), "the header is authenticated");
        assert!(open(&file, b"another passphrase").expect_err("wrong").to_string().contains("wrong passphrase"));
        assert!(err(b"hello\n").contains("not a coordinator snapshot"));
        assert!(err(b"").contains("not a coordinator snapshot"));
    }
}
