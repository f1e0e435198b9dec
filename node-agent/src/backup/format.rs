//! The backup object format (`.bqb`), pure: a plaintext header, then the zstd-compressed dump in
//! chunks sealed with AES-256-GCM. Nothing here does IO.
//!
//! ```text
//! header  = "BQB" 0x01 | version u8 | key id length u8 | key id (utf-8) | salt [32]
//! frame   = final flag (top bit) | length (31 bits, sealed bytes with tag), u32 big-endian
//!           | sealed chunk
//! object  = header frame* (the last frame has the final flag)
//! ```
//!
//! - The chunk key is HKDF-SHA256(salt = the object's random salt, key = the tenant's data key),
//!   so each object has its own key and a counter nonce can never repeat under one key.
//! - Nonce = final flag (1 byte) | 3 zero bytes | chunk counter (u64 big-endian): a reordered,
//!   dropped or repeated chunk fails its tag, and so does a non-final chunk passed off as final.
//! - Every chunk's additional data is the whole header: a changed version, key id or salt fails
//!   the first chunk.
//! - An object that ends before its final chunk is truncated; bytes after it are refused too.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;

/// Plaintext bytes per chunk (the last may be shorter).
pub const CHUNK: usize = 1 << 20;
const TAG: usize = 16;
/// The frame length's top bit: this is the object's last chunk.
const FINAL: u32 = 1 << 31;
const MAGIC: &[u8; 4] = b"BQB\x01";
pub const VERSION: u8 = 1;
const INFO: &[u8] = b"berqenas backup chunk key v1";

/// A tenant's data key: 32 random bytes and the id the coordinator knows it by. Its bytes are
/// never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey {
    pub id: String,
    pub key: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id).field("key", &"<redacted>").finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a Berqenas backup object")]
    Magic,
    #[error("backup format version {0} is not supported")]
    Version(u8),
    #[error("the object is sealed with data key {found:?}, not {expected:?}")]
    KeyId { expected: String, found: String },
    #[error("the key id {0:?} cannot be written into a header (1..=255 bytes)")]
    KeyIdLength(String),
    #[error("chunk {chunk} has an impossible length {length}: the object is damaged")]
    FrameLength { chunk: u64, length: usize },
    #[error("chunk {chunk} failed authentication: the object was altered, reordered or sealed with another key")]
    Tampered { chunk: u64 },
    #[error("the object ends before its final chunk (truncated after {chunks} chunks)")]
    Truncated { chunks: u64 },
    #[error("the object has bytes after its final chunk")]
    Trailing,
}

fn header(key_id: &str, salt: &[u8; 32]) -> Result<Vec<u8>, FormatError> {
    let id = key_id.as_bytes();
    let len = u8::try_from(id.len()).ok().filter(|l| *l > 0).ok_or_else(|| FormatError::KeyIdLength(key_id.into()))?;
    let mut h = Vec::with_capacity(6 + id.len() + 32);
    h.extend_from_slice(MAGIC);
    h.push(VERSION);
    h.push(len);
    h.extend_from_slice(id);
    h.extend_from_slice(salt);
    Ok(h)
}

fn chunk_key(data_key: &DataKey, salt: &[u8; 32]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&data_key.key);
    let mut bytes = [0u8; 32];
    #[allow(clippy::expect_used, reason = "32 bytes is within HKDF-SHA256's output limit (255 × 32)")]
    prk.expand(&[INFO], &AES_256_GCM).expect("32-byte output").fill(&mut bytes).expect("32-byte output");
    #[allow(clippy::expect_used, reason = "a 32-byte key is AES-256-GCM's key length")]
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("32-byte key"))
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = u8::from(last);
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals an object chunk by chunk.
pub struct Sealer {
    key: LessSafeKey,
    header: Vec<u8>,
    counter: u64,
}

impl Sealer {
    /// `salt` must be fresh random bytes for each object.
    pub fn new(data_key: &DataKey, salt: [u8; 32]) -> Result<Self, FormatError> {
        Ok(Self { key: chunk_key(data_key, &salt), header: header(&data_key.id, &salt)?, counter: 0 })
    }

    /// The object's first bytes.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Seals `plain` (at most [`CHUNK`] bytes) as the next chunk and appends its frame to `out`.
    pub fn seal(&mut self, plain: &[u8], last: bool, out: &mut Vec<u8>) {
        debug_assert!(plain.len() <= CHUNK);
        let start = out.len();
        let word = (plain.len() + TAG) as u32 | if last { FINAL } else { 0 };
        out.extend_from_slice(&word.to_be_bytes());
        out.extend_from_slice(plain);
        #[allow(clippy::expect_used, reason = "sealing fails only past 2^36 bytes per chunk; chunks are 1 MiB")]
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.counter, last), Aad::from(&self.header), &mut out[start + 4..])
            .expect("chunk within AES-GCM limits");
        out.extend_from_slice(tag.as_ref());
        self.counter += 1;
    }
}

/// Opens an object fed in pieces of any size, yielding plaintext chunks in order.
pub struct Opener {
    data_key: DataKey,
    key: Option<LessSafeKey>,
    header: Vec<u8>,
    buf: Vec<u8>,
    counter: u64,
    done: bool,
}

impl Opener {
    pub fn new(data_key: DataKey) -> Self {
        Self { data_key, key: None, header: Vec::new(), buf: Vec::new(), counter: 0, done: false }
    }

    /// Feeds the object's next bytes; calls `chunk` with each chunk they complete, authenticated.
    pub fn feed<E: From<FormatError>>(
        &mut self,
        bytes: &[u8],
        mut chunk: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        if self.key.is_none() {
            match self.read_header()? {
                Some(len) => at = len,
                None => return Ok(()),
            }
        }
        loop {
            let rest = &mut self.buf[at..];
            if rest.is_empty() {
                break;
            }
            if self.done {
                return Err(FormatError::Trailing.into());
            }
            if rest.len() < 4 {
                break;
            }
            let word = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let (last, length) = (word & FINAL != 0, (word & !FINAL) as usize);
            if !(TAG..=CHUNK + TAG).contains(&length) {
                return Err(FormatError::FrameLength { chunk: self.counter, length }.into());
            }
            if rest.len() < 4 + length {
                break;
            }
            let key = self.key.as_ref().ok_or(FormatError::Magic)?;
            // The flag is in the nonce too: a flipped flag fails the tag.
            let plain_len = key
                .open_in_place(nonce(self.counter, last), Aad::from(&self.header), &mut rest[4..4 + length])
                .map_err(|_| FormatError::Tampered { chunk: self.counter })?
                .len();
            chunk(&rest[4..4 + plain_len])?;
            self.counter += 1;
            self.done = last;
            at += 4 + length;
        }
        self.buf.drain(..at);
        Ok(())
    }

    /// The object ended: it must have ended exactly after its final chunk.
    pub fn finish(&self) -> Result<(), FormatError> {
        if !self.done {
            return Err(FormatError::Truncated { chunks: self.counter });
        }
        if !self.buf.is_empty() {
            return Err(FormatError::Trailing);
        }
        Ok(())
    }

    /// Parses the header once it is complete; returns its length.
    fn read_header(&mut self) -> Result<Option<usize>, FormatError> {
        let b = &self.buf;
        if b.len() < 6 {
            return Ok(None);
        }
        if &b[..4] != MAGIC {
            return Err(FormatError::Magic);
        }
        if b[4] != VERSION {
            return Err(FormatError::Version(b[4]));
        }
        let id_len = usize::from(b[5]);
        let len = 6 + id_len + 32;
        if b.len() < len {
            return Ok(None);
        }
        let found = String::from_utf8_lossy(&b[6..6 + id_len]).into_owned();
        if found != self.data_key.id {
            return Err(FormatError::KeyId { expected: self.data_key.id.clone(), found });
        }
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&b[6 + id_len..len]);
        self.key = Some(chunk_key(&self.data_key, &salt));
        self.header = b[..len].to_vec();
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DataKey {
        DataKey { id: "k1".into(), key: [7; 32] }
    }

    /// Seals `chunks` (the last one final) into one object.
    fn object(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = Sealer::new(&key(), [3; 32]).unwrap();
        let mut out = s.header().to_vec();
        for (i, c) in chunks.iter().enumerate() {
            s.seal(c, i + 1 == chunks.len(), &mut out);
        }
        out
    }

    fn open(bytes: &[u8], piece: usize) -> Result<Vec<u8>, FormatError> {
        let mut o = Opener::new(key());
        let mut plain = Vec::new();
        for p in bytes.chunks(piece.max(1)) {
            o.feed(p, |c| {
                plain.extend_from_slice(c);
                Ok::<_, FormatError>(())
            })?;
        }
        o.finish()?;
        Ok(plain)
    }

    #[test]
    fn sealed_object_opens_to_its_plaintext_whatever_the_read_sizes() {
        let obj = object(&[b"hello ", b"backup ", b"world"]);
        for piece in [1, 3, 7, 64, obj.len()] {
            assert_eq!(open(&obj, piece).unwrap(), b"hello backup world");
        }
        assert_eq!(open(&object(&[b""]), 5).unwrap(), b"", "an empty dump is one empty final chunk");
    }

    #[test]
    fn plaintext_never_appears_in_the_object() {
        let obj = object(&[b"MARKER-ROW-42 secret"]);
        assert!(!obj.windows(13).any(|w| w == b"MARKER-ROW-42"));
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let obj = object(&[b"first chunk", b"second chunk"]);
        for i in 0..obj.len() {
            let mut bad = obj.clone();
            bad[i] ^= 0x20;
            assert!(open(&bad, 4096).is_err(), "flipped byte {i} was accepted");
        }
    }

    #[test]
    fn truncation_reordering_and_trailing_bytes_are_refused() {
        let mut s = Sealer::new(&key(), [3; 32]).unwrap();
        let head = s.header().to_vec();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        s.seal(b"one", false, &mut a);
        s.seal(b"two", true, &mut b);
        let cat = |parts: &[&[u8]]| parts.concat();
        assert_eq!(open(&cat(&[&head, &a, &b]), 9).unwrap(), b"onetwo");
        assert_eq!(open(&cat(&[&head, &a]), 9), Err(FormatError::Truncated { chunks: 1 }));
        assert_eq!(open(&head, 9), Err(FormatError::Truncated { chunks: 0 }));
        assert_eq!(open(&cat(&[&head, &b, &a]), 9), Err(FormatError::Tampered { chunk: 0 }));
        assert_eq!(open(&cat(&[&head, &a, &b, &a]), 9), Err(FormatError::Trailing));
        assert_eq!(open(&cat(&[&head, &a, &b, b"x"]), 9), Err(FormatError::Trailing));
    }

    #[test]
    fn another_key_or_salt_or_version_is_refused() {
        let obj = object(&[b"data"]);
        let other = DataKey { id: "k1".into(), key: [8; 32] };
        let mut o = Opener::new(other);
        assert_eq!(o.feed(&obj, |_| Ok::<_, FormatError>(())), Err(FormatError::Tampered { chunk: 0 }));
        let mut o = Opener::new(DataKey { id: "k2".into(), key: [7; 32] });
        assert!(matches!(o.feed(&obj, |_| Ok::<_, FormatError>(())), Err(FormatError::KeyId { .. })));
        let mut v2 = obj.clone();
        v2[4] = 2;
        assert_eq!(open(&v2, 100), Err(FormatError::Version(2)));
        assert!(format!("{:?}", key()).contains("redacted") && !format!("{:?}", key()).contains('7'));
    }
}
