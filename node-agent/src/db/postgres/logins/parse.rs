//! PostgreSQL's jsonlog lines read as logins (pure). A line is one JSON object; only four shapes
//! count, all from a client backend: `LOG` / `00000` whose message starts `connection
//! authorized:` (a login), and `FATAL` with a login-refusing SQLSTATE (`LoginFailure::
//! from_sqlstate`). The role is the line's `user` field, kept only when it is a role of one of
//! this node's tenants (`tenant_{name}_user` / `_owner`), so a name a client made up (quotes,
//! newlines, a password typed as a user name) never leaves here. The message, detail and
//! application name are never kept: of a line only the tenant, the role, the outcome, the client
//! address and the time go on.

use berqenas_common::tenancy::LoginFailure;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// A login or failed login of a tenant's role, as read from one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub tenant: String,
    pub role: String,
    /// `None`: it succeeded.
    pub failure: Option<LoginFailure>,
    pub client: Option<Client>,
    /// Unix milliseconds; `None`: the line's time was not in UTC (set `log_timezone = 'UTC'`).
    pub at_ms: Option<u64>,
}

/// Where the client connected from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Socket(SocketAddr),
    Local,
}

impl Client {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Client::Socket(a) => Some(a.ip()),
            Client::Local => None,
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Socket(a) => write!(f, "{a}"),
            Client::Local => f.write_str("local"),
        }
    }
}

/// The fields of a jsonlog line this module looks at; the rest is skipped unread.
#[derive(Deserialize)]
struct Line {
    timestamp: Option<String>,
    user: Option<String>,
    remote_host: Option<String>,
    remote_port: Option<serde_json::Value>,
    error_severity: Option<String>,
    state_code: Option<String>,
    message: Option<String>,
    backend_type: Option<String>,
}

/// The tenant whose role `role` is, among `tenants`.
pub fn tenant_of<'a>(role: &str, tenants: &'a BTreeSet<String>) -> Option<&'a String> {
    let rest = role.strip_prefix("tenant_")?;
    let name = rest.strip_suffix("_user").or_else(|| rest.strip_suffix("_owner"))?;
    tenants.get(name)
}

/// The login a jsonlog line records, if it records one of a tenant in `tenants`.
pub fn line(text: &str, tenants: &BTreeSet<String>) -> Option<Seen> {
    let l: Line = serde_json::from_str(text).ok()?;
    if l.backend_type.as_deref() != Some("client backend") {
        return None;
    }
    // jsonlog leaves `state_code` out for 00000 (successful completion).
    let failure = match (l.error_severity.as_deref()?, l.state_code.as_deref().unwrap_or("00000")) {
        ("LOG", "00000") if l.message.as_deref()?.starts_with("connection authorized:") => None,
        ("FATAL", code) => Some(LoginFailure::from_sqlstate(code)?),
        _ => return None,
    };
    let role = l.user?;
    let tenant = tenant_of(&role, tenants)?.clone();
    let client = match (l.remote_host.as_deref(), &l.remote_port) {
        (Some("[local]"), _) => Some(Client::Local),
        (Some(host), Some(port)) => {
            let port = match port {
                serde_json::Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            };
            host.parse::<IpAddr>().ok().zip(port).map(|(ip, port)| Client::Socket(SocketAddr::new(ip, port)))
        }
        _ => None,
    };
    Some(Seen { tenant, role, failure, client, at_ms: l.timestamp.as_deref().and_then(utc_ms) })
}

/// `2026-12-02 16:29:20.123 UTC` (jsonlog's format under `log_timezone = 'UTC'`) as Unix ms.
pub fn utc_ms(ts: &str) -> Option<u64> {
    let (local, zone) = ts.rsplit_once(' ')?;
    if !matches!(zone, "UTC" | "GMT" | "Z" | "+00") {
        return None;
    }
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    u64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants() -> BTreeSet<String> {
        ["acme", "a_user"].into_iter().map(String::from).collect()
    }

    /// As PostgreSQL 15 writes it (no `state_code` for 00000).
    const AUTHORIZED: &str = r#"{"timestamp":"2026-12-02 16:29:20.123 UTC","user":"tenant_acme_user","dbname":"postgres","pid":28335,"remote_host":"192.0.2.5","remote_port":50432,"session_id":"6b110042.6eaf","line_num":3,"ps":"authentication","session_start":"2026-12-02 16:29:20 UTC","vxid":"3/5","txid":0,"error_severity":"LOG","message":"connection authorized: user=tenant_acme_user database=postgres application_name=psql","backend_type":"client backend","query_id":0}"#;
    const WRONG_PASSWORD: &str = r#"{"timestamp":"2026-12-02 16:29:21.500 UTC","user":"tenant_acme_user","dbname":"postgres","pid":28352,"remote_host":"192.0.2.5","remote_port":50434,"session_id":"6b110042.6ec0","line_num":2,"ps":"authentication","session_start":"2026-12-02 16:29:21 UTC","vxid":"3/7","txid":0,"error_severity":"FATAL","state_code":"28P01","message":"password authentication failed for user \"tenant_acme_user\"","detail":"Connection matched pg_hba.conf line 91: \"host all all 192.0.2.0/24 scram-sha-256\"","backend_type":"client backend","query_id":0}"#;

    #[test]
    fn a_login_and_a_wrong_password_are_read_as_such() {
        let ok = line(AUTHORIZED, &tenants()).expect("a login");
        assert_eq!(
            ok,
            Seen {
                tenant: "acme".into(),
                role: "tenant_acme_user".into(),
                failure: None,
                client: Some(Client::Socket("192.0.2.5:50432".parse().expect("addr"))),
                at_ms: Some(1_796_228_960_123),
            }
        );
        let failed = line(WRONG_PASSWORD, &tenants()).expect("a failure");
        assert_eq!(failed.failure, Some(LoginFailure::WrongPassword));
        assert_eq!(failed.client.map(|c| c.to_string()).as_deref(), Some("192.0.2.5:50434"));
    }

    #[test]
    fn only_this_nodes_tenant_roles_count() {
        let other = AUTHORIZED.replace("tenant_acme_user", "tenant_globex_user");
        assert_eq!(line(&other, &tenants()), None, "not a tenant of this node");
        assert_eq!(line(&AUTHORIZED.replace("tenant_acme_user", "postgres"), &tenants()), None);
        let nested = AUTHORIZED.replace("tenant_acme_user", "tenant_a_user_owner");
        assert_eq!(line(&nested, &tenants()).map(|s| s.tenant).as_deref(), Some("a_user"));
    }

    #[test]
    fn other_lines_are_not_logins() {
        let authenticated = AUTHORIZED.replace("connection authorized:", "connection authenticated:");
        assert_eq!(line(&authenticated, &tenants()), None, "one login, not two");
        let coded = AUTHORIZED.replace("\"error_severity\"", "\"state_code\":\"00000\",\"error_severity\"");
        assert!(line(&coded, &tenants()).is_some(), "an explicit 00000 too");
        let statement = AUTHORIZED.replace("connection authorized:", "statement: select 'connection authorized:'");
        assert_eq!(line(&statement, &tenants()), None);
        let raised = WRONG_PASSWORD.replace("\"FATAL\"", "\"ERROR\"");
        assert_eq!(line(&raised, &tenants()), None, "an ERROR with that code is a statement's");
        let walsender = AUTHORIZED.replace("client backend", "walsender");
        assert_eq!(line(&walsender, &tenants()), None);
        let syntax = WRONG_PASSWORD.replace("28P01", "42601");
        assert_eq!(line(&syntax, &tenants()), None);
        assert_eq!(line("not json", &tenants()), None);
        assert_eq!(line("", &tenants()), None);
    }

    /// Log injection: whatever a client puts in its user name, application name or password,
    /// only a known role name, an address that parses and a fixed reason come out.
    #[test]
    fn made_up_names_and_message_text_never_come_out() {
        let marker = "hunter2-\"},\n{\"forged\":true";
        let injected = serde_json::json!({
            "timestamp": "2026-12-02 16:29:21.500 UTC",
            "user": format!("tenant_acme_user\n{marker}"),
            "remote_host": "192.0.2.5", "remote_port": 1,
            "error_severity": "FATAL", "state_code": "28P01",
            "message": format!("password authentication failed for user \"{marker}\""),
            "backend_type": "client backend",
        });
        assert_eq!(line(&injected.to_string(), &tenants()), None, "not exactly a tenant role");
        let app = AUTHORIZED.replace("application_name=psql", &format!("application_name={}", marker.escape_default()));
        let seen = line(&app, &tenants()).expect("still a login");
        assert!(!format!("{seen:?}").contains("hunter2"), "{seen:?}");
        let host = AUTHORIZED.replace("\"192.0.2.5\"", "\"evil\\n.example\"");
        assert_eq!(line(&host, &tenants()).expect("a login").client, None, "a host name is not an address");
        let local = AUTHORIZED.replace("\"192.0.2.5\"", "\"[local]\"");
        assert_eq!(line(&local, &tenants()).expect("a login").client, Some(Client::Local));
    }

    #[test]
    fn times_are_read_in_utc_only() {
        assert_eq!(utc_ms("1970-01-01 00:00:01.250 UTC"), Some(1250));
        assert_eq!(utc_ms("1970-01-01 00:00:01.250 CET"), None);
        assert_eq!(utc_ms("garbage"), None);
    }
}
