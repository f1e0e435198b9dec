//! The operator's SIEM settings: `serve --siem-target …` and the files beside it, parsed once
//! into a `SiemConfig`. Secrets (the HTTPS bearer token, the client key) come from files that
//! only their owner can read, or the token from `BERQENAS_SIEM_TOKEN`; never from argv.

use anyhow::{bail, Context};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Environment variable that may carry the HTTPS bearer token instead of `--siem-token-file`.
pub const TOKEN_ENV: &str = "BERQENAS_SIEM_TOKEN";

#[derive(Debug, Clone, Default, clap::Args)]
pub struct SiemArgs {
    /// Forward every audit entry to a SIEM: `syslog+tls://HOST:PORT` (RFC 5424 over TLS,
    /// RFC 6587 octet counting), `https://HOST[:PORT]/PATH` (JSON lines POSTed), or
    /// `syslog+tcp://HOST:PORT` (plaintext; needs --siem-insecure-plaintext).
    #[arg(long)]
    pub siem_target: Option<String>,
    /// CA certificate(s) (PEM) the SIEM's certificate must chain to; required for TLS targets.
    #[arg(long)]
    pub siem_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to the SIEM.
    #[arg(long, requires = "siem_client_key")]
    pub siem_client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM; the file must not be readable by group or others).
    #[arg(long, requires = "siem_client_cert")]
    pub siem_client_key: Option<PathBuf>,
    /// Bearer token for an HTTPS target, in a file only its owner can read (or BERQENAS_SIEM_TOKEN).
    #[arg(long)]
    pub siem_token_file: Option<PathBuf>,
    /// Allow `syslog+tcp://`: audit entries leave the host unencrypted and unauthenticated.
    #[arg(long)]
    pub siem_insecure_plaintext: bool,
}

/// Where entries go.
#[derive(Clone)]
pub enum Target {
    /// RFC 5425: octet-counted RFC 5424 frames over TLS.
    SyslogTls { host: String, port: u16, tls: Arc<rustls::ClientConfig> },
    /// The same frames over plain TCP (only with `--siem-insecure-plaintext`).
    SyslogTcp { host: String, port: u16 },
    /// JSON lines POSTed; a 2xx answer delivers the batch.
    Https { url: String, tls: Arc<rustls::ClientConfig>, token: Option<Token> },
}

/// A bearer token; never printed.
#[derive(Clone)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Target {
    /// The target as the operator gave it, without secrets (the cursor file keys on it).
    pub fn describe(&self) -> String {
        match self {
            Target::SyslogTls { host, port, .. } => format!("syslog+tls://{host}:{port}"),
            Target::SyslogTcp { host, port } => format!("syslog+tcp://{host}:{port}"),
            Target::Https { url, .. } => url.clone(),
        }
    }
}

/// `host:port` (a bracketed IPv6 address allowed); no user info, path or query.
fn host_port(rest: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = rest.rsplit_once(':').context("the target needs HOST:PORT")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
        bail!("the target's host is not a host name or address");
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0).context("the target's port must be 1-65535")?;
    Ok((host.to_string(), port))
}

/// Reads a secret file, refusing one that group or others can read.
fn private_file(path: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("read {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!("{} must be readable by its owner only (chmod 600)", path.display());
    }
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

fn tls(args: &SiemArgs) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let ca_path = args.siem_ca.as_ref().context("a TLS SIEM target needs --siem-ca (the SIEM's CA, PEM)")?;
    let ca = std::fs::read_to_string(ca_path).with_context(|| format!("read {}", ca_path.display()))?;
    let client = match (&args.siem_client_cert, &args.siem_client_key) {
        (Some(cert), Some(key)) => Some((
            std::fs::read_to_string(cert).with_context(|| format!("read {}", cert.display()))?,
            private_file(key)?,
        )),
        _ => None,
    };
    let config = berqenas_pki::external_client_config(&ca, client.as_ref().map(|(c, k)| (c.as_str(), k.as_str())))
        .context("SIEM TLS settings")?;
    Ok(Arc::new(config))
}

/// The bearer token: `--siem-token-file` (owner-only), else `BERQENAS_SIEM_TOKEN`, else none.
fn token(args: &SiemArgs) -> anyhow::Result<Option<Token>> {
    let raw = match &args.siem_token_file {
        Some(path) => Some(private_file(path)?),
        None => std::env::var(TOKEN_ENV).ok(),
    };
    let Some(raw) = raw else { return Ok(None) };
    let token = raw.trim();
    if token.is_empty() || !token.bytes().all(|b| (33..=126).contains(&b)) {
        bail!("the SIEM token must be printable ASCII without spaces");
    }
    Ok(Some(Token(token.to_string())))
}

impl SiemArgs {
    /// The target, or `None` when no SIEM is configured.
    pub fn target(&self) -> anyhow::Result<Option<Target>> {
        let Some(raw) = self.siem_target.as_deref() else {
            if self.siem_ca.is_some() || self.siem_token_file.is_some() || self.siem_client_cert.is_some() {
                bail!("SIEM settings given without --siem-target");
            }
            return Ok(None);
        };
        let target = if let Some(rest) = raw.strip_prefix("syslog+tls://") {
            let (host, port) = host_port(rest)?;
            Target::SyslogTls { host, port, tls: tls(self)? }
        } else if let Some(rest) = raw.strip_prefix("syslog+tcp://") {
            if !self.siem_insecure_plaintext {
                bail!("syslog+tcp:// sends the audit trail in plaintext; use syslog+tls:// or add --siem-insecure-plaintext");
            }
            let (host, port) = host_port(rest)?;
            Target::SyslogTcp { host, port }
        } else if let Some(rest) = raw.strip_prefix("https://") {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.contains('@') {
                bail!("put no credentials in --siem-target; use --siem-token-file");
            }
            if authority.is_empty() {
                bail!("the https target needs a host");
            }
            Target::Https { url: raw.to_string(), tls: tls(self)?, token: token(self)? }
        } else {
            bail!("--siem-target must start with syslog+tls://, https:// or syslog+tcp://");
        };
        if !matches!(target, Target::Https { .. }) && (self.siem_token_file.is_some()) {
            bail!("--siem-token-file applies to https:// targets only");
        }
        Ok(Some(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &str) -> SiemArgs {
        SiemArgs { siem_target: Some(target.into()), ..Default::default() }
    }

    #[test]
    fn plaintext_syslog_needs_the_explicit_flag() {
        let err = args("syslog+tcp://127.0.0.1:514").target().expect_err("refused");
        assert!(err.to_string().contains("--siem-insecure-plaintext"), "{err}");
        let mut ok = args("syslog+tcp://127.0.0.1:514");
        ok.siem_insecure_plaintext = true;
        assert!(matches!(ok.target().expect("allowed"), Some(Target::SyslogTcp { port: 514, .. })));
    }

    #[test]
    fn tls_targets_need_a_ca() {
        for t in ["syslog+tls://siem.example:6514", "https://siem.example/ingest"] {
            let err = args(t).target().expect_err("refused");
            assert!(err.to_string().contains("--siem-ca"), "{t}: {err}");
        }
    }

    #[test]
    fn malformed_targets_and_credentials_in_the_url_are_refused() {
        for t in [
            "syslog://siem:514",
            "syslog+tls://siem",
            "syslog+tls://siem:0",
            "syslog+tls://:6514",
            "syslog+tls://u@siem:6514",
            "https://user:secret@siem/x",
        ] {
            assert!(args(t).target().is_err(), "{t}");
        }
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let a = SiemArgs { siem_token_file: Some(path.clone()), ..Default::default() };
        assert!(token(&a).expect_err("refused").to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let t = token(&a).expect("read").expect("some");
        assert_eq!(t.0, "s3cret");
        assert_eq!(format!("{t:?}"), "Token(…)");
    }

    #[test]
    fn no_target_means_no_forwarding() {
        assert!(SiemArgs::default().target().expect("fine").is_none());
    }
}
