//! The password file libpq reads (`PGPASSFILE`, else `~/.pgpass`), for the replication client,
//! which speaks the protocol itself: the agent's superuser URL carries no password where the
//! operator keeps it in that file (the packaged unit and the container manifests do), and sqlx
//! reads the file only for its own connections. Same rules as libpq: `host:port:db:user:password`
//! lines, `*` matches anything, `\` escapes `:` and `\`, the first match wins, `localhost` also
//! matches a Unix socket, and a file others may read is ignored.

use std::path::{Path, PathBuf};

/// What the connection asks the file for.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The host name, or `None` for a Unix socket (matched by `localhost`).
    pub host: Option<&'a str>,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

/// The password for `q` in the file's text: the first line that matches.
pub fn lookup(text: &str, q: Query<'_>) -> Option<String> {
    let port = q.port.to_string();
    text.lines().filter(|l| !l.trim_start().starts_with('#')).find_map(|line| {
        let fields = split(line)?;
        let [host, p, db, user, password] = fields;
        let host_ok = host == "*" || Some(host.as_str()) == q.host || (q.host.is_none() && host == "localhost");
        let ok =
            host_ok && (p == "*" || p == port) && (db == "*" || db == q.database) && (user == "*" || user == q.user);
        ok.then_some(password)
    })
}

/// The five fields of a line, unescaped; `None` for a line with fewer.
fn split(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

/// Where libpq looks: `PGPASSFILE`, else `$HOME/.pgpass`.
pub fn path() -> Option<PathBuf> {
    match std::env::var_os("PGPASSFILE") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")),
    }
}

/// The password for `q` from the file at `path`, if it is a regular file nobody else may read.
pub fn read(path: &Path, q: Query<'_>) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        return None;
    }
    lookup(&std::fs::read_to_string(path).ok()?, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Query<'static> = Query { host: Some("postgres"), port: 5432, database: "postgres", user: "postgres" };

    #[test]
    fn first_matching_line_wins_and_star_matches_anything() {
        let text = "# comment\nother:5432:*:postgres:no\npostgres:5432:*:postgres:first\n*:*:*:*:second\n";
        assert_eq!(lookup(text, Q).as_deref(), Some("first"));
        assert_eq!(lookup(text, Query { user: "tenant", ..Q }).as_deref(), Some("second"));
        assert_eq!(lookup("postgres:5433:*:postgres:x\n", Q), None, "another port");
    }

    #[test]
    fn escaped_colons_and_backslashes_belong_to_the_field() {
        let text = "postgres:5432:postgres:postgres:a\\:b\\\\c:d\n";
        assert_eq!(lookup(text, Q).as_deref(), Some("a:b\\c:d"), "the password keeps what follows");
        assert_eq!(lookup("postgres:5432:postgres\n", Q), None, "a short line matches nothing");
    }

    #[test]
    fn localhost_matches_a_unix_socket() {
        let text = "localhost:5432:*:postgres:sock\n";
        assert_eq!(lookup(text, Query { host: None, ..Q }).as_deref(), Some("sock"));
        assert_eq!(lookup(text, Q), None);
    }

    #[test]
    fn a_file_others_may_read_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:secret\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(read(&file, Q), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read(&file, Q).as_deref(), Some("secret"));
    }
}
