//! The local event socket of `run`: `<state-dir>/events.sock` (Unix socket, mode 0660: root and
//! the directory's group) or the named pipe `\\.\pipe\berqenas-device` on Windows (its default
//! DACL: SYSTEM, Administrators and the service account may write). Other programs write one JSON
//! object per line, `{"type":"…","payload":…}` (optionally `"id":"<uuid>"`), and read one line
//! back per event: `{"id":"…","status":"spooled"}` once it is on disk, or `{"error":"…"}`. They
//! never hold the device's credentials.

use super::publish::Outbox;
use super::Event;
use crate::state::StateDir;
use anyhow::Context;
use serde::Deserialize;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest accepted request line.
const MAX_LINE: u64 = 128 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(rename = "type")]
    kind: String,
    payload: serde_json::Value,
    #[serde(default)]
    id: Option<String>,
}

fn answer(line: &[u8], outbox: &Outbox) -> serde_json::Value {
    let result = serde_json::from_slice::<Request>(line)
        .map_err(|e| anyhow::anyhow!("not an event: {e}"))
        .and_then(|r| super::new_event(&r.kind, &r.payload, r.id.as_deref()))
        .and_then(|event| outbox.push(&event).map(|()| event.id));
    match result {
        Ok(id) => serde_json::json!({"id": id, "status": "spooled"}),
        Err(e) => serde_json::json!({"error": format!("{e:#}")}),
    }
}

/// Serves one connection: one answer per line, until the peer closes or sends too long a line.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, outbox: Arc<Outbox>) {
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut reader).take(MAX_LINE + 1).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let too_long = u64::try_from(n).unwrap_or(u64::MAX) > MAX_LINE;
        let reply = if too_long {
            serde_json::json!({"error": format!("a line is at most {MAX_LINE} bytes")})
        } else if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        } else {
            answer(&line, &outbox)
        };
        let mut text = reply.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() || too_long {
            return;
        }
    }
}

fn request_line(event: &Event) -> anyhow::Result<String> {
    let payload: serde_json::Value = serde_json::from_str(&event.payload_json)?;
    let mut line = serde_json::json!({"type": event.kind, "payload": payload, "id": event.id}).to_string();
    line.push('\n');
    Ok(line)
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: S, event: &Event) -> anyhow::Result<String> {
    let (read, mut write) = tokio::io::split(stream);
    write.write_all(request_line(event)?.as_bytes()).await?;
    let mut reply = String::new();
    BufReader::new(read).read_line(&mut reply).await?;
    let value: serde_json::Value = serde_json::from_str(reply.trim()).context("`run` answered nonsense")?;
    if let Some(e) = value.get("error") {
        anyhow::bail!("`run` refused the event: {e}");
    }
    Ok(reply.trim().to_string())
}

#[cfg(unix)]
pub fn socket_path(dir: &StateDir) -> std::path::PathBuf {
    dir.path("events.sock")
}

/// Hands `event` to a running `run`; None when no `run` listens.
#[cfg(unix)]
pub async fn try_send(dir: &StateDir, event: &Event) -> anyhow::Result<Option<String>> {
    match tokio::net::UnixStream::connect(socket_path(dir)).await {
        Ok(stream) => exchange(stream, event).await.map(Some),
        Err(_) => Ok(None),
    }
}

/// Listens on the socket until the process ends.
#[cfg(unix)]
pub async fn serve(dir: StateDir, outbox: Arc<Outbox>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(&dir);
    // A socket file left by a previous `run` would refuse the bind.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).with_context(|| format!("listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    loop {
        let (stream, _) = listener.accept().await.context("accept on the event socket")?;
        tokio::spawn(connection(stream, outbox.clone()));
    }
}

#[cfg(windows)]
pub const PIPE: &str = r"\\.\pipe\berqenas-device";

#[cfg(windows)]
fn pipe_name() -> String {
    std::env::var("BERQENAS_DEVICE_PIPE").unwrap_or_else(|_| PIPE.to_string())
}

#[cfg(windows)]
pub async fn try_send(_: &StateDir, event: &Event) -> anyhow::Result<Option<String>> {
    match tokio::net::windows::named_pipe::ClientOptions::new().open(pipe_name()) {
        Ok(pipe) => exchange(pipe, event).await.map(Some),
        Err(_) => Ok(None),
    }
}

#[cfg(windows)]
pub async fn serve(_: StateDir, outbox: Arc<Outbox>) -> anyhow::Result<()> {
    use tokio::net::windows::named_pipe::ServerOptions;
    let name = pipe_name();
    let mut server =
        ServerOptions::new().first_pipe_instance(true).create(&name).with_context(|| format!("create {name}"))?;
    loop {
        server.connect().await.with_context(|| format!("accept on {name}"))?;
        let connected = server;
        server = ServerOptions::new().create(&name).with_context(|| format!("create {name}"))?;
        tokio::spawn(connection(connected, outbox.clone()));
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use crate::events::spool::Spool;

    #[tokio::test]
    async fn a_program_spools_events_through_the_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().to_path_buf());
        let outbox = Arc::new(Outbox::new(Spool::open(&dir).unwrap()));
        tokio::spawn(serve(dir.clone(), outbox.clone()));
        let path = socket_path(&dir);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !path.exists() {
            assert!(tokio::time::Instant::now() < deadline, "no socket");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
        let event = crate::events::new_event("door", &serde_json::json!({"open": true}), None).unwrap();
        let reply = try_send(&dir, &event).await.unwrap().unwrap();
        assert!(reply.contains(&event.id) && reply.contains("spooled"), "{reply}");
        assert_eq!(outbox.pending_count(), 1);
        // A bad line gets an error and the connection stays usable.
        let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (r, mut w) = tokio::io::split(stream);
        let mut r = BufReader::new(r);
        w.write_all(b"{\"type\":\"\",\"payload\":1}\n{\"type\":\"t\",\"payload\":[1]}\n").await.unwrap();
        let mut a = String::new();
        r.read_line(&mut a).await.unwrap();
        let mut b = String::new();
        r.read_line(&mut b).await.unwrap();
        assert!(a.contains("error"), "{a}");
        assert!(b.contains("spooled"), "{b}");
        assert_eq!(Spool::open(&dir).unwrap().pending().len(), 2, "on disk before the answer");
    }
}
