//! The network side of forwarding: one long-lived syslog connection (TLS, or plain TCP when the
//! operator insisted) or an HTTPS client. `send` delivers one batch or fails; the caller advances
//! its cursor only on success, so a failed batch is sent again.
//!
//! Syslog over TLS (RFC 5425) has no acknowledgement. A batch counts as delivered when it was
//! written and flushed and the connection then stayed open for `LINGER` (a receiver that went
//! away shows as end of file or a reset by then); a connection found closed before a batch is
//! replaced first. A receiver that dies later than that, with the batch in its socket buffer,
//! can lose it: the HTTPS target (acknowledged by its 2xx) has no such window.

use super::config::{Target, Token};
use super::message::{self, Origin};
use crate::state::audit::AuditEntry;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a syslog connection must stay open after a batch for it to count as delivered.
const LINGER: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("connect to the SIEM: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS with the SIEM: {0}")]
    Tls(#[source] std::io::Error),
    #[error("the SIEM's host name is not valid for TLS")]
    ServerName,
    #[error("write to the SIEM: {0}")]
    Write(#[source] std::io::Error),
    #[error("the SIEM closed the connection")]
    Closed,
    #[error("the SIEM timed out")]
    Timeout,
    #[error("the SIEM answered HTTP {0}")]
    Status(u16),
    #[error("HTTPS to the SIEM: {0}")]
    Http(#[source] reqwest::Error),
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub struct Sink {
    target: Target,
    conn: Option<Box<dyn Io>>,
    http: Option<reqwest::Client>,
}

impl Sink {
    pub fn new(target: Target) -> Self {
        Self { target, conn: None, http: None }
    }

    /// Drops the syslog connection (the next batch opens a new one).
    pub fn close(&mut self) {
        self.conn = None;
    }

    pub async fn send(&mut self, origin: &Origin, entries: &[AuditEntry]) -> Result<(), SinkError> {
        match self.target.clone() {
            Target::SyslogTls { .. } | Target::SyslogTcp { .. } => {
                let batch = message::syslog_batch(origin, entries);
                let result = self.syslog(&batch).await;
                if result.is_err() {
                    self.conn = None;
                }
                result
            }
            Target::Https { url, tls, token } => {
                let body = message::json_lines(origin, entries);
                self.https(&url, &tls, token.as_ref(), body).await
            }
        }
    }

    async fn connect(target: &Target) -> Result<Box<dyn Io>, SinkError> {
        let (host, port) = match target {
            Target::SyslogTls { host, port, .. } | Target::SyslogTcp { host, port } => (host.as_str(), *port),
            Target::Https { .. } => return Err(SinkError::Closed),
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| SinkError::Timeout)?
            .map_err(SinkError::Connect)?;
        tcp.set_nodelay(true).ok();
        let Target::SyslogTls { tls, .. } = target else { return Ok(Box::new(tcp)) };
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| SinkError::ServerName)?;
        let stream =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp))
                .await
                .map_err(|_| SinkError::Timeout)?
                .map_err(SinkError::Tls)?;
        Ok(Box::new(stream))
    }

    async fn syslog(&mut self, batch: &[u8]) -> Result<(), SinkError> {
        if let Some(conn) = self.conn.as_mut() {
            if !still_open(conn, Duration::ZERO).await {
                self.conn = None;
            }
        }
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => self.conn.insert(Self::connect(&self.target).await?),
        };
        tokio::time::timeout(WRITE_TIMEOUT, async {
            conn.write_all(batch).await?;
            conn.flush().await
        })
        .await
        .map_err(|_| SinkError::Timeout)?
        .map_err(SinkError::Write)?;
        if still_open(conn, LINGER).await {
            Ok(())
        } else {
            Err(SinkError::Closed)
        }
    }

    async fn https(
        &mut self,
        url: &str,
        tls: &Arc<rustls::ClientConfig>,
        token: Option<&Token>,
        body: String,
    ) -> Result<(), SinkError> {
        let client = match &self.http {
            Some(client) => client.clone(),
            None => {
                let mut config = (**tls).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let client = reqwest::Client::builder()
                    .use_preconfigured_tls(config)
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(WRITE_TIMEOUT)
                    .build()
                    .map_err(SinkError::Http)?;
                self.http.insert(client).clone()
            }
        };
        let mut request = client.post(url).header(reqwest::header::CONTENT_TYPE, "application/x-ndjson").body(body);
        if let Some(token) = token {
            request = request.bearer_auth(&token.0);
        }
        let response = request.send().await.map_err(|e| SinkError::Http(e.without_url()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(SinkError::Status(status.as_u16()))
        }
    }
}

/// Whether the receiver kept the connection open for `wait`: a syslog receiver never sends, so
/// end of file or an error means it is gone; bytes it did send are ignored.
async fn still_open(conn: &mut Box<dyn Io>, wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    match tokio::time::timeout(wait, conn.read(&mut buf)).await {
        Err(_) => true,
        Ok(Ok(0)) | Ok(Err(_)) => false,
        Ok(Ok(_)) => true,
    }
}
