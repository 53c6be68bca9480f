//! The one map from everything that can go wrong to what the client sees.
//!
//! Every refusal and upstream failure becomes a status and a JSON body in the
//! Prometheus/VictoriaMetrics API error shape
//! (`{"status":"error","errorType":"...","error":"..."}`), so Grafana and
//! vmalert show the reason. The `errorType` values form a closed set.

use crate::routing::Refusal;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

/// No endpoint of the pool is healthy: 503 with `Retry-After`.
pub const NO_HEALTHY_ENDPOINT: ErrorType = ErrorType::Custom("no healthy endpoint");

/// A streamed request body went over `max_body_bytes`: 413.
pub const BODY_TOO_LARGE: ErrorType = ErrorType::Custom("request body too large");

/// Longest client-supplied text echoed back in an error message.
const MAX_ECHO: usize = 200;

/// An error answer: status, closed-set type, and a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ErrorReply {
    fn new(status: u16, error_type: &'static str, message: impl Into<String>) -> Self {
        ErrorReply { status, error_type, message: message.into(), retry_after: None }
    }

    /// The answer to a request the routing table refused.
    pub fn refusal(refusal: &Refusal, header: &str, tenant: &str, path: &str) -> Self {
        let tenant = echo(tenant);
        match refusal {
            Refusal::NoTenant => Self::new(401, "unauthorized", format!("missing tenant: set the {header} header")),
            Refusal::UnknownTenant => Self::new(403, "forbidden", format!("unknown tenant {tenant:?}")),
            Refusal::Suspended => Self::new(403, "forbidden", format!("tenant {tenant:?} is suspended")),
            Refusal::SignalNotEnabled(signal) => {
                Self::new(403, "forbidden", format!("signal {signal} is not enabled for tenant {tenant:?}"))
            }
            Refusal::ReadOnly => {
                Self::new(403, "forbidden", format!("tenant {tenant:?} is read-only: writes are refused"))
            }
            Refusal::Unroutable => Self::new(
                404,
                "not_found",
                format!("path {:?} maps to no signal on this listener", echo(path)),
            ),
            Refusal::Unauthorized => Self::new(401, "unauthorized", "missing or invalid credentials"),
            Refusal::CredentialMismatch => Self::new(
                403,
                "forbidden",
                format!("the credential belongs to another tenant than {tenant:?} named by the {header} header"),
            ),
            Refusal::RateLimited(wait) => Self {
                retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
                ..Self::new(429, "too_many_requests", format!("tenant {tenant:?} is over its requests_per_second quota"))
            },
            Refusal::TooManyInFlight => Self {
                retry_after: Some(1),
                ..Self::new(429, "too_many_requests", format!("tenant {tenant:?} is over its max_concurrent_requests quota"))
            },
            Refusal::BodyTooLarge => {
                Self::new(413, "payload_too_large", format!("the request body is over tenant {tenant:?}'s max_body_bytes"))
            }
        }
    }

    /// The answer to a failed proxy attempt, or `None` when the client is gone.
    pub fn from_error(e: &Error) -> Option<Self> {
        use ErrorType::*;
        let timeout = matches!(e.etype(), ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout);
        let reply = match (e.etype(), e.esource()) {
            (&NO_HEALTHY_ENDPOINT, _) => Self::new(503, "unavailable", "no healthy endpoint for this tenant and signal"),
            (&BODY_TOO_LARGE, _) => Self::new(413, "payload_too_large", "the request body is over the tenant's max_body_bytes"),
            (HTTPStatus(code), _) => Self::new(*code, status_type(*code), format!("upstream answered {code}")),
            (_, ErrorSource::Upstream) if timeout => {
                Self::new(504, "timeout", format!("upstream did not answer in time: {}", e.etype().as_str()))
            }
            (_, ErrorSource::Upstream) => Self::new(502, "bad_gateway", format!("upstream failed: {}", e.etype().as_str())),
            (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => return None,
            (_, ErrorSource::Downstream) if timeout => Self::new(408, "timeout", "the client sent the request too slowly"),
            (_, ErrorSource::Downstream) => Self::new(400, "bad_data", format!("bad request: {}", e.etype().as_str())),
            (_, ErrorSource::Internal | ErrorSource::Unset) => Self::new(500, "internal", "internal error"),
        };
        Some(reply)
    }

    pub fn body(&self) -> Bytes {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            status: &'static str,
            error_type: &'static str,
            error: &'a str,
        }
        let body = Body { status: "error", error_type: self.error_type, error: &self.message };
        serde_json::to_vec(&body).map(Bytes::from).unwrap_or_default()
    }

    /// Writes the answer as a complete response. With `close`, the client is
    /// told the connection ends here (after a failed proxy attempt Pingora
    /// does not reuse it, and a client must not send on it again).
    pub async fn send(&self, session: &mut Session, close: bool) -> pingora::Result<()> {
        let body = self.body();
        let mut header = ResponseHeader::build(self.status, Some(3))?;
        header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        if let Some(seconds) = self.retry_after {
            header.insert_header(http::header::RETRY_AFTER, seconds)?;
        }
        if close {
            header.insert_header(http::header::CONNECTION, "close")?;
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(header), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

fn status_type(code: u16) -> &'static str {
    match code {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        408 | 504 => "timeout",
        413 => "payload_too_large",
        429 => "too_many_requests",
        502 => "bad_gateway",
        503 => "unavailable",
        400..=499 => "bad_data",
        _ => "internal",
    }
}

fn echo(text: &str) -> &str {
    match text.char_indices().nth(MAX_ECHO) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_map_to_gateway_statuses() {
        let status = |etype, source| ErrorReply::from_error(&Error::create(etype, source, None, None)).map(|r| r.status);
        assert_eq!(status(ErrorType::ConnectRefused, ErrorSource::Upstream), Some(502));
        assert_eq!(status(ErrorType::ConnectionClosed, ErrorSource::Upstream), Some(502));
        assert_eq!(status(ErrorType::InvalidHTTPHeader, ErrorSource::Upstream), Some(502));
        assert_eq!(status(ErrorType::ReadTimedout, ErrorSource::Upstream), Some(504));
        assert_eq!(status(ErrorType::ConnectTimedout, ErrorSource::Upstream), Some(504));
        assert_eq!(status(ErrorType::ConnectionClosed, ErrorSource::Downstream), None);
        assert_eq!(status(ErrorType::InvalidHTTPHeader, ErrorSource::Downstream), Some(400));
        assert_eq!(status(ErrorType::HTTPStatus(503), ErrorSource::Internal), Some(503));
        assert_eq!(status(NO_HEALTHY_ENDPOINT, ErrorSource::Internal), Some(503));
    }

    #[test]
    fn refusals_map_to_product_statuses() {
        let status = |r: Refusal| ErrorReply::refusal(&r, "X-Tenant-ID", "t", "/p").status;
        assert_eq!(status(Refusal::NoTenant), 401);
        assert_eq!(status(Refusal::UnknownTenant), 403);
        assert_eq!(status(Refusal::Suspended), 403);
        assert_eq!(status(Refusal::SignalNotEnabled(crate::routing::Signal::Logs)), 403);
        assert_eq!(status(Refusal::ReadOnly), 403);
        assert_eq!(status(Refusal::Unroutable), 404);
    }

    #[test]
    fn body_is_json_in_the_prometheus_error_shape_and_escapes_client_text() {
        let reply = ErrorReply::refusal(&Refusal::Unroutable, "X-Tenant-ID", "t", "/a\"b\n");
        let body: serde_json::Value = serde_json::from_slice(&reply.body()).unwrap();
        assert_eq!(body["status"], "error");
        assert_eq!(body["errorType"], "not_found");
        assert_eq!(body["error"], "path \"/a\\\"b\\n\" maps to no signal on this listener");
    }

    #[test]
    fn echoed_text_is_bounded() {
        let long = "x".repeat(10_000);
        let reply = ErrorReply::refusal(&Refusal::UnknownTenant, "X-Tenant-ID", &long, "/");
        assert!(reply.message.len() < MAX_ECHO + 40);
    }
}
