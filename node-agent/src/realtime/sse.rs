//! Subscribers: `GET /v1/tenants/{tenant}/events?device=…&type=…&cursor=…` as Server-Sent
//! Events, for the tenant's apps holding one of its customer keys (`Authorization: Bearer`).
//! Each event's `id:` is its cursor; a client that reconnects with `Last-Event-ID` (or
//! `?cursor=`) receives exactly the rows committed after it, if they are still in the window
//! (else 410 Gone: re-read the table, then subscribe without a cursor).

use super::auth::{self, Refused};
use super::feed::{Committed, Cursor, Feed};
use super::Shared;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Debug, serde::Deserialize)]
pub struct Filter {
    device: Option<String>,
    r#type: Option<String>,
    cursor: Option<String>,
}

fn plain(status: StatusCode, msg: &str) -> Response {
    (status, format!("{msg}\n")).into_response()
}

/// Counts the feed's subscribers while a stream lives.
struct Subscribed(Arc<Feed>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often a live stream re-checks its key against the current assignment: a key removed
/// (or a tenant suspended) ends the streams it opened within this long of their next row.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

struct Sub {
    shared: Arc<Shared>,
    tenant: String,
    authorization: String,
    checked: std::time::Instant,
    backlog: VecDeque<Arc<Committed>>,
    rx: broadcast::Receiver<Arc<Committed>>,
    last: Option<Cursor>,
    device: Option<String>,
    kind: Option<String>,
    guard: Subscribed,
}

async fn next(mut s: Sub) -> Option<(Result<Event, Infallible>, Sub)> {
    loop {
        let row = match s.backlog.pop_front() {
            Some(r) => r,
            None => match s.rx.recv().await {
                Ok(r) => r,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the live fan-out: catch up from the window, or end the
                    // stream (the client resumes from its last id and gets 410 if too late).
                    let (backlog, rx) = s.guard.0.attach(s.last).ok()?;
                    s.backlog = backlog;
                    s.rx = rx;
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
        };
        if s.last.is_some_and(|l| row.cursor <= l) {
            continue;
        }
        if s.checked.elapsed() > RECHECK {
            let still = {
                let tenants = s.shared.tenants.borrow();
                auth::subscriber(&tenants, &s.tenant, Some(&s.authorization), super::now_ms()).is_ok()
            };
            if !still {
                return None;
            }
            s.checked = std::time::Instant::now();
        }
        s.last = Some(row.cursor);
        if s.device.as_deref().is_some_and(|d| row.device.as_deref() != Some(d))
            || s.kind.as_deref().is_some_and(|k| row.kind.as_deref() != Some(k))
        {
            continue;
        }
        let event = Event::default().id(row.cursor.to_string()).data(&*row.data);
        return Some((Ok(event), s));
    }
}

pub async fn events(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    Query(filter): Query<Filter>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let checked = {
        let tenants = shared.tenants.borrow();
        auth::subscriber(&tenants, &tenant, authorization, super::now_ms()).map(|_| ())
    };
    match checked {
        Ok(()) => {}
        Err(r @ Refused::NoKey) => {
            let mut resp = plain(StatusCode::UNAUTHORIZED, &r.to_string());
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return resp;
        }
        Err(r) => return plain(StatusCode::FORBIDDEN, &r.to_string()),
    }
    let raw = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string).or(filter.cursor);
    let after = match raw.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match c.parse::<Cursor>() {
            Ok(c) => Some(c),
            Err(()) => return plain(StatusCode::BAD_REQUEST, "the cursor is not one this endpoint gave"),
        },
    };
    let too_long = |v: &Option<String>, max: usize| v.as_ref().is_some_and(|s| s.is_empty() || s.chars().count() > max);
    if too_long(&filter.device, 64) || too_long(&filter.r#type, super::event::MAX_TYPE_CHARS) {
        return plain(StatusCode::BAD_REQUEST, "device must be 1-64 and type 1-100 characters");
    }
    let Some(feed) = shared.feed(&tenant) else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "the tenant's event feed is starting; retry shortly");
    };
    if !feed.ready.load(Ordering::Acquire) {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "the tenant's event feed is starting; retry shortly");
    }
    let (backlog, rx) = match feed.attach(after) {
        Ok(a) => a,
        Err(_) => {
            return plain(
                StatusCode::GONE,
                "the cursor is older than the retention window; read the table, then subscribe without a cursor",
            )
        }
    };
    feed.subscribers.fetch_add(1, Ordering::Relaxed);
    let sub = Sub {
        authorization: authorization.unwrap_or_default().to_string(),
        shared,
        tenant,
        checked: std::time::Instant::now(),
        backlog,
        rx,
        last: after,
        device: filter.device,
        kind: filter.r#type,
        guard: Subscribed(feed),
    };
    let stream = futures::stream::unfold(sub, next);
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
