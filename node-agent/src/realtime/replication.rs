//! A minimal client of PostgreSQL's streaming replication protocol, for one purpose: to follow a
//! logical slot as its transactions commit (`START_REPLICATION SLOT … LOGICAL`), instead of
//! polling it through SQL. The walsender keeps its decoder warm between transactions, so a row
//! is sent once, as it commits; a SQL read re-decodes the WAL since the slot's restart point.
//!
//! sqlx has no replication support, hence this: the startup message with `replication=database`,
//! authentication as the agent's sqlx connection does it (trust or peer, cleartext, MD5,
//! SCRAM-SHA-256 without channel binding; plaintext, as sqlx is built here without TLS), one
//! simple query, then CopyBoth: XLogData and keepalives in, standby status updates out.
//! Reading is cancel-safe (bytes are kept in the connection's buffer), so `next` may race a timer.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where and as whom to connect: the agent's own connection settings.
#[derive(Clone)]
pub struct Target {
    /// A Unix socket (`{dir}/.s.PGSQL.{port}`) or `host:port`.
    pub endpoint: Endpoint,
    pub user: String,
    pub password: Option<String>,
    pub database: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String, u16),
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Could not connect or log in: streaming is not available with these settings.
    #[error("replication connection refused: {0}")]
    Refused(String),
    /// The server ended or broke the stream, or sent what this client does not expect.
    #[error("replication stream: {0}")]
    Stream(String),
    #[error("replication connection: {0}")]
    Io(#[from] std::io::Error),
}

/// What the stream carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Copy {
    /// One message of the output plugin (`pgoutput`), starting at `start`.
    XLogData { start: u64, data: Vec<u8> },
    /// The server has sent everything up to `wal_end`; `reply`: it wants a status update now.
    Keepalive { wal_end: u64, reply: bool },
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The largest message accepted (PostgreSQL's own limit for a field is 1 GB).
const MAX_MESSAGE: usize = 1 << 30;

pub struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    pos: usize,
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

fn pg_now() -> i64 {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    us - PG_EPOCH_US
}

/// The message text of an ErrorResponse (its `M` field), with its SQLSTATE.
fn error_text(body: &[u8]) -> String {
    let mut code = "";
    let mut text = "";
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = std::str::from_utf8(v).unwrap_or(""),
            Some((b'M', v)) => text = std::str::from_utf8(v).unwrap_or(""),
            _ => {}
        }
    }
    format!("{text} ({code})")
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 5);
    m.push(kind);
    m.extend(u32::try_from(body.len() + 4).unwrap_or(u32::MAX).to_be_bytes());
    m.extend(body);
    m
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend(s.as_bytes());
    out.push(0);
}

impl Conn {
    /// Connects and logs in as a replication connection to `target`'s database.
    pub async fn connect(target: &Target) -> Result<Self, Error> {
        let io: Box<dyn Io> = match &target.endpoint {
            Endpoint::Tcp(host, port) => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| Error::Refused(format!("connect {host}:{port}: {e}")))?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Endpoint::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| Error::Refused(format!("connect {}: {e}", path.display())))?,
            ),
        };
        let mut conn = Conn { io, buf: Vec::with_capacity(64 * 1024), pos: 0 };
        let mut startup = Vec::new();
        startup.extend(196_608u32.to_be_bytes()); // protocol 3.0
        for (k, v) in [
            ("user", Some(target.user.as_str())),
            ("database", target.database.as_deref()),
            ("replication", Some("database")),
            ("application_name", Some("berqenas-realtime")),
        ] {
            if let Some(v) = v {
                cstr(&mut startup, k);
                cstr(&mut startup, v);
            }
        }
        startup.push(0);
        let mut m = u32::try_from(startup.len() + 4).unwrap_or(u32::MAX).to_be_bytes().to_vec();
        m.extend(startup);
        conn.io.write_all(&m).await?;
        conn.authenticate(target).await?;
        // ParameterStatus and BackendKeyData until ReadyForQuery.
        loop {
            match conn.read().await? {
                (b'Z', _) => return Ok(conn),
                (b'E', body) => return Err(Error::Refused(error_text(&body))),
                _ => {}
            }
        }
    }

    async fn authenticate(&mut self, target: &Target) -> Result<(), Error> {
        let password =
            || target.password.clone().ok_or_else(|| Error::Refused("the server asks for a password".into()));
        let mut scram: Option<Scram> = None;
        loop {
            let (kind, body) = self.read().await?;
            match kind {
                b'E' => return Err(Error::Refused(error_text(&body))),
                b'R' => {}
                other => return Err(Error::Refused(format!("unexpected message {:?} during login", other as char))),
            }
            let code = body.get(..4).map_or(u32::MAX, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let rest = body.get(4..).unwrap_or_default();
            match code {
                0 => return Ok(()),
                3 => {
                    let mut m = Vec::new();
                    cstr(&mut m, &password()?);
                    self.io.write_all(&message(b'p', &m)).await?;
                }
                5 => {
                    let salt = rest.get(..4).ok_or_else(|| Error::Refused("short MD5 salt".into()))?;
                    let mut m = Vec::new();
                    cstr(&mut m, &md5_password(&target.user, &password()?, salt));
                    self.io.write_all(&message(b'p', &m)).await?;
                }
                10 => {
                    let offered = rest.split(|b| *b == 0).any(|m| m == b"SCRAM-SHA-256");
                    if !offered {
                        return Err(Error::Refused("the server offers no SASL mechanism this client has".into()));
                    }
                    let s = Scram::new("", &password()?, &client_nonce());
                    let first = s.client_first();
                    let mut m = Vec::new();
                    cstr(&mut m, "SCRAM-SHA-256");
                    m.extend(u32::try_from(first.len()).unwrap_or(u32::MAX).to_be_bytes());
                    m.extend(first.as_bytes());
                    self.io.write_all(&message(b'p', &m)).await?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram.as_mut().ok_or_else(|| Error::Refused("SASL continue out of turn".into()))?;
                    let server_first =
                        std::str::from_utf8(rest).map_err(|_| Error::Refused("SASL: not UTF-8".into()))?;
                    let last = s.client_final(server_first).map_err(Error::Refused)?;
                    self.io.write_all(&message(b'p', last.as_bytes())).await?;
                }
                12 => {
                    let s = scram.as_ref().ok_or_else(|| Error::Refused("SASL final out of turn".into()))?;
                    let server_final =
                        std::str::from_utf8(rest).map_err(|_| Error::Refused("SASL: not UTF-8".into()))?;
                    s.verify_server(server_final).map_err(Error::Refused)?;
                }
                other => return Err(Error::Refused(format!("authentication method {other} is not supported"))),
            }
        }
    }

    /// Starts streaming `slot` from where the server confirmed it (`pgoutput`, protocol 1,
    /// `publication`). Names are the agent's own (validated tenant names), never user text.
    pub async fn start(&mut self, slot: &str, publication: &str) -> Result<(), Error> {
        let sql = format!(
            "START_REPLICATION SLOT \"{slot}\" LOGICAL 0/0 (proto_version '1', publication_names '\"{publication}\"')"
        );
        let mut q = Vec::new();
        cstr(&mut q, &sql);
        self.io.write_all(&message(b'Q', &q)).await?;
        loop {
            match self.read().await? {
                (b'W', _) => return Ok(()),
                (b'E', body) => return Err(Error::Stream(error_text(&body))),
                _ => {}
            }
        }
    }

    /// The next XLogData or keepalive. Cancel-safe.
    pub async fn next(&mut self) -> Result<Copy, Error> {
        loop {
            let (kind, body) = self.read().await?;
            match kind {
                b'd' => {}
                b'E' => return Err(Error::Stream(error_text(&body))),
                b'c' => return Err(Error::Stream("the server ended the stream".into())),
                _ => continue, // NoticeResponse, ParameterStatus
            }
            let field = |at: usize| -> Result<u64, Error> {
                let b = body.get(at..at + 8).ok_or_else(|| Error::Stream("short replication message".into()))?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Ok(u64::from_be_bytes(a))
            };
            return match body.first() {
                Some(b'w') => {
                    let start = field(1)?;
                    let data = body.get(25..).ok_or_else(|| Error::Stream("short XLogData".into()))?.to_vec();
                    Ok(Copy::XLogData { start, data })
                }
                Some(b'k') => Ok(Copy::Keepalive { wal_end: field(1)?, reply: body.get(17).is_some_and(|r| *r == 1) }),
                _ => Err(Error::Stream("unknown replication message".into())),
            };
        }
    }

    /// Tells the server everything up to `flushed` is processed: the slot may move there.
    pub async fn status(&mut self, flushed: u64) -> Result<(), Error> {
        let mut m = vec![b'r'];
        for _ in 0..3 {
            m.extend(flushed.to_be_bytes()); // written, flushed, applied
        }
        m.extend(pg_now().to_be_bytes());
        m.push(0);
        self.io.write_all(&message(b'd', &m)).await?;
        Ok(())
    }

    /// One backend message: its type and body. Cancel-safe: partial input stays in `buf`.
    async fn read(&mut self) -> Result<(u8, Vec<u8>), Error> {
        loop {
            let unread = &self.buf[self.pos..];
            if unread.len() >= 5 {
                let len = u32::from_be_bytes([unread[1], unread[2], unread[3], unread[4]]) as usize;
                if !(4..=MAX_MESSAGE).contains(&len) {
                    return Err(Error::Stream(format!("message length {len}")));
                }
                if unread.len() > len {
                    let kind = unread[0];
                    let body = unread[5..=len].to_vec();
                    self.pos += len + 1;
                    return Ok((kind, body));
                }
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(Error::Stream("the server closed the connection".into()));
            }
        }
    }
}

fn md5_password(user: &str, password: &str, salt: &[u8]) -> String {
    use md5::{Digest as _, Md5};
    let inner = hex::encode(Md5::digest(format!("{password}{user}").as_bytes()));
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(salt);
    format!("md5{}", hex::encode(h.finalize()))
}

fn client_nonce() -> String {
    use rand::RngCore;
    let mut b = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

type HmacSha256 = Hmac<Sha256>;

#[allow(clippy::expect_used, reason = "HMAC takes keys of any length: new_from_slice cannot fail")]
fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL runs it: the user name
/// is taken from the startup message (sent empty here), no channel binding.
struct Scram {
    user: String,
    password: String,
    nonce: String,
    /// After the server's first message: its message and what the proof was computed from.
    state: Option<(String, [u8; 32])>,
}

impl Scram {
    /// `user`: empty for PostgreSQL (it takes the name from the startup message).
    fn new(user: &str, password: &str, nonce: &str) -> Self {
        Self { user: user.to_string(), password: password.to_string(), nonce: nonce.to_string(), state: None }
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.user, self.nonce)
    }

    fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare())
    }

    /// Answers the server's first message with the proof; remembers what verifies the server.
    fn client_final(&mut self, server_first: &str) -> Result<String, String> {
        let attr = |k: &str| server_first.split(',').find_map(|a| a.strip_prefix(k));
        let nonce = attr("r=").ok_or("SCRAM: no nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("SCRAM: the server's nonce does not extend ours".into());
        }
        let salt = base64::engine::general_purpose::STANDARD
            .decode(attr("s=").ok_or("SCRAM: no salt")?)
            .map_err(|_| "SCRAM: salt is not base64")?;
        let iterations: u32 =
            attr("i=").and_then(|i| i.parse().ok()).filter(|i| *i > 0).ok_or("SCRAM: bad iteration count")?;
        // PBKDF2-HMAC-SHA-256, one block.
        let mut block = salt.clone();
        block.extend(1u32.to_be_bytes());
        let mut u = hmac(self.password.as_bytes(), &block);
        let mut salted = u;
        for _ in 1..iterations {
            u = hmac(self.password.as_bytes(), &u);
            for (s, x) in salted.iter_mut().zip(u) {
                *s ^= x;
            }
        }
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare());
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
        let server_key = hmac(&salted, b"Server Key");
        self.state = Some((auth_message, server_key));
        Ok(format!("{without_proof},p={}", base64::engine::general_purpose::STANDARD.encode(proof)))
    }

    /// The server proves it knows the verifier too.
    fn verify_server(&self, server_final: &str) -> Result<(), String> {
        let (auth_message, server_key) = self.state.as_ref().ok_or("SCRAM: final before first")?;
        let expected = hmac(server_key, auth_message.as_bytes());
        let got = server_final
            .strip_prefix("v=")
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .ok_or("SCRAM: the server's final message has no signature")?;
        if subtle::ConstantTimeEq::ct_eq(expected.as_slice(), got.as_slice()).into() {
            Ok(())
        } else {
            Err("SCRAM: the server's signature is wrong".into())
        }
    }
}

/// The password in a connection URL (`postgres://user:PASSWORD@…` or `?password=`),
/// percent-decoded; sqlx does not give it back.
pub fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or("");
    let from_userinfo = authority.rsplit_once('@').and_then(|(userinfo, _)| userinfo.split_once(':')).map(|(_, p)| p);
    let from_query = query.split('&').find_map(|kv| kv.strip_prefix("password="));
    from_query.or(from_userinfo).map(percent_decode)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The replication target of the agent's sqlx settings and URL (for its password).
pub fn target(options: &sqlx::postgres::PgConnectOptions, url: &str) -> Target {
    let port = options.get_port();
    let endpoint = match options.get_socket() {
        Some(dir) => Endpoint::Unix(dir.join(format!(".s.PGSQL.{port}"))),
        None if options.get_host().starts_with('/') => {
            Endpoint::Unix(PathBuf::from(options.get_host()).join(format!(".s.PGSQL.{port}")))
        }
        None => Endpoint::Tcp(options.get_host().to_string(), port),
    };
    let user = options.get_username().to_string();
    let database = options.get_database().map(str::to_string);
    // libpq's order: the URL, PGPASSWORD, then the password file.
    let password = url_password(url).or_else(|| std::env::var("PGPASSWORD").ok()).or_else(|| {
        let host = match &endpoint {
            Endpoint::Tcp(host, _) => Some(host.as_str()),
            Endpoint::Unix(_) => None,
        };
        let query = super::pgpass::Query { host, port, database: database.as_deref().unwrap_or(&user), user: &user };
        super::pgpass::path().and_then(|p| super::pgpass::read(&p, query))
    });
    Target { endpoint, user, password, database }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_matches_the_rfc_7677_example() {
        let mut s = Scram::new("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(s.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            s.client_final(server_first).expect("final"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(s.verify_server("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="), Ok(()));
        assert!(s.verify_server("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").is_err(), "a forged server");
        let mut other = Scram::new("", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(other.client_first(), "n,,n=,r=rOprNGfwEbeRWgbNEkqO", "PostgreSQL takes the name from the startup");
        assert!(other.client_final("r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").is_err(), "nonce not ours");
        assert!(
            other.client_final("r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").is_err(),
            "no server part"
        );
    }

    fn copy_data(body: &[u8]) -> Vec<u8> {
        message(b'd', body)
    }

    #[tokio::test]
    async fn stream_messages_survive_a_read_cut_short_and_arrive_whole() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut conn = Conn { io: Box::new(client), buf: Vec::new(), pos: 0 };
        let mut w = vec![b'w'];
        w.extend(0x10u64.to_be_bytes());
        w.extend(0x20u64.to_be_bytes());
        w.extend(0i64.to_be_bytes());
        w.extend(b"Bpayload");
        let mut k = vec![b'k'];
        k.extend(0x30u64.to_be_bytes());
        k.extend(0i64.to_be_bytes());
        k.push(1);
        let mut bytes = copy_data(&w);
        bytes.extend(message(b'N', b"SNOTICE\0\0"));
        bytes.extend(copy_data(&k));
        // Half of the first message, then a read that gives up (a timer won the race).
        server.write_all(&bytes[..7]).await.expect("write");
        let cut = tokio::time::timeout(std::time::Duration::from_millis(50), conn.next()).await;
        assert!(cut.is_err(), "nothing whole yet");
        server.write_all(&bytes[7..]).await.expect("write");
        assert_eq!(conn.next().await.expect("xlogdata"), Copy::XLogData { start: 0x10, data: b"Bpayload".to_vec() });
        assert_eq!(conn.next().await.expect("keepalive"), Copy::Keepalive { wal_end: 0x30, reply: true });
        server.write_all(&message(b'E', b"SERROR\0C57P01\0Mterminating\0\0")).await.expect("write");
        let err = conn.next().await.expect_err("error response");
        assert_eq!(err.to_string(), "replication stream: terminating (57P01)");
        drop(server);
        assert!(conn.next().await.is_err(), "closed");
    }

    #[test]
    fn md5_password_is_postgres_format() {
        // "md5" + hex(md5(hex(md5(password || user)) || salt)), computed with Python's hashlib.
        assert_eq!(md5_password("postgres", "secret", &[1, 2, 3, 4]), "md5bb41a296aab6baccb36ff243a562abff");
    }

    #[test]
    fn passwords_come_from_the_url_percent_decoded() {
        assert_eq!(url_password("postgres://postgres:p%40ss%2Fw@127.0.0.1:5432/postgres"), Some("p@ss/w".into()));
        assert_eq!(url_password("postgres://u:a@b@host/db"), Some("a@b".into()));
        assert_eq!(url_password("postgres://postgres@127.0.0.1/postgres"), None);
        assert_eq!(url_password("postgres:///db?host=/run/postgresql&password=x%20y"), Some("x y".into()));
    }
}
