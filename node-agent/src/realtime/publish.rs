//! Devices publishing over HTTP: `POST /v1/tenants/{tenant}/events` on the realtime port, for
//! devices that cannot speak gRPC. The body is one event or a batch:
//!
//! ```json
//! {"id": "6f9619ff-…", "type": "temp", "payload": {"c": 21.5}, "created_at_ms": 1767225600000}
//! {"events": [{"id": "…", "type": "…", "payload": …}, …]}
//! ```
//!
//! The same path as gRPC (`Shared::admit`): identity from the connection's device certificate
//! (the `{tenant}` in the path must be the certificate's), a public-mode device's key and
//! fingerprint from the `Authorization` and `x-berqenas-fingerprint` headers, the same
//! validation, quota, writers and ack after commit. Answers `200 {"ids": […]}` once committed;
//! refusals are `{"error": "…"}` with 400, 401, 403, 413, 429 (with `Retry-After`) or 503, and
//! store nothing.

use super::auth::Refused;
use super::event::InvalidEvent;
use super::ingest::{Credentials, PeerIdentity, Refusal};
use super::Shared;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berqenas_pki::Identity;
use berqenas_proto::realtime as pb;
use serde::Deserialize;
use std::sync::Arc;

/// Largest request body: a batch this big must be split (gRPC streams have no such limit).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// One event as JSON. `payload` is any JSON value; `created_at_ms` 0 or absent = at commit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    payload: serde_json::Value,
    #[serde(default)]
    created_at_ms: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonBatch {
    events: Vec<JsonEvent>,
}

impl From<JsonEvent> for pb::Event {
    fn from(e: JsonEvent) -> Self {
        let JsonEvent { id, kind, payload, created_at_ms } = e;
        Self { id, r#type: kind, payload_json: payload.to_string(), created_at_ms }
    }
}

const SHAPE: &str =
    r#"the body must be one event {"id", "type", "payload"[, "created_at_ms"]} or {"events": [event, …]}"#;

/// The events of a body: a batch when it has `events`, else one event.
fn parse(body: &[u8]) -> Result<Vec<pb::Event>, String> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("{SHAPE}: {e}"))?;
    let value = serde_json::Value::Object(object);
    let events = if value.get("events").is_some() {
        serde_json::from_value::<JsonBatch>(value).map_err(|e| format!("{SHAPE}: {e}"))?.events
    } else {
        vec![serde_json::from_value::<JsonEvent>(value).map_err(|e| format!("{SHAPE}: {e}"))?]
    };
    Ok(events.into_iter().map(Into::into).collect())
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The one mapping of a refusal to its HTTP answer.
fn refusal(r: Refusal) -> Response {
    let msg = r.message();
    match r {
        Refusal::Auth(Refused::NoDevice | Refused::NoKey) => error(StatusCode::UNAUTHORIZED, &msg),
        Refusal::Auth(
            Refused::Device | Refused::Key | Refused::PublicOff | Refused::PublicKey | Refused::Fingerprint,
        ) => error(StatusCode::FORBIDDEN, &msg),
        Refusal::Invalid(InvalidEvent::TooLarge(_)) => error(StatusCode::PAYLOAD_TOO_LARGE, &msg),
        Refusal::Invalid(_) => error(StatusCode::BAD_REQUEST, &msg),
        Refusal::Quota { retry_after, .. } => {
            let mut resp = error(StatusCode::TOO_MANY_REQUESTS, &msg);
            if let Some(secs) = retry_after {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            resp
        }
        Refusal::Unavailable(_) => error(StatusCode::SERVICE_UNAVAILABLE, &msg),
    }
}

/// `POST /v1/tenants/{tenant}/events`.
pub async fn events(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>, request: Request) -> Response {
    let identity = request.extensions().get::<PeerIdentity>().and_then(|p| p.0.clone());
    let Some(Identity::Device { tenant: own, id: device }) = identity else {
        return refusal(Refusal::Auth(Refused::NoDevice));
    };
    // The path names the tenant for the reader's sake; the certificate decides. Refused the
    // same way as a device not listed: nothing said about the other tenant.
    if tenant != own {
        return refusal(Refusal::Auth(Refused::Device));
    }
    let creds = Credentials::from_headers(request.headers());
    // Refused before the body is read.
    if let Err(r) = shared.may_publish(&own, &device, &creds) {
        return refusal(Refusal::Auth(r));
    }
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large =
        || error(StatusCode::PAYLOAD_TOO_LARGE, &format!("the body is larger than {MAX_BODY} bytes; split the batch"));
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let events = match parse(&body) {
        Ok(e) => e,
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
    };
    let queued = match shared.admit(&own, &device, &creds, events).await {
        Ok(q) => q,
        Err(r) => return refusal(r),
    };
    match queued.committed.await {
        Ok(Ok(())) => (StatusCode::OK, axum::Json(serde_json::json!({ "ids": queued.ids }))).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "realtime batch not stored");
            error(StatusCode::SERVICE_UNAVAILABLE, "the events were not stored; resend them")
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the events were not stored; resend them"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";

    #[test]
    fn one_event_or_a_batch_becomes_proto_events() {
        let one = parse(format!(r#"{{"id":"{ID}","type":"temp","payload":{{"c":21.5}}}}"#).as_bytes()).expect("one");
        assert_eq!(one.len(), 1);
        assert_eq!(
            (one[0].r#type.as_str(), one[0].payload_json.as_str(), one[0].created_at_ms),
            ("temp", r#"{"c":21.5}"#, 0)
        );
        let batch = format!(
            r#"{{"events":[{{"id":"{ID}","type":"a","payload":1,"created_at_ms":5}},{{"id":"{ID}","type":"b","payload":"x"}}]}}"#
        );
        let two = parse(batch.as_bytes()).expect("batch");
        assert_eq!((two.len(), two[0].created_at_ms, two[1].payload_json.as_str()), (2, 5, "\"x\""));
    }

    #[test]
    fn malformed_bodies_are_refused_with_the_expected_shape() {
        for bad in [
            "",
            "[]",
            "not json",
            r#"{"id":"x","type":"t"}"#,
            r#"{"id":"x","type":"t","payload":1,"device":"someone-else"}"#,
            r#"{"events":{}}"#,
            r#"{"events":[],"id":"x"}"#,
        ] {
            let e = parse(bad.as_bytes()).expect_err(bad);
            assert!(e.starts_with("the body must be"), "{bad}: {e}");
        }
    }
}
