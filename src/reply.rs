//! The one map from everything that can go wrong to what a client sees, on
//! the proxy listeners and the admin listener alike.
//!
//! Every answer the router gives itself is an [`ErrorReply`]: a status and
//! a closed-set `errorType` (both from [`ErrorKind`]), and a sentence, as
//! JSON in the Prometheus/VictoriaMetrics API error shape
//! (`{"status":"error","errorType":"...","error":"..."}`), so Grafana and
//! vmalert show the reason. How a reply is written out is the caller's
//! (the proxy through Pingora's session, the admin listener as a response).

use crate::api::Signal;
use crate::rejection::Rejection;
use bytes::Bytes;
use pingora::{Error, ErrorSource, ErrorType};
use std::time::Duration;

/// No endpoint of the pool is healthy: 503 with `Retry-After`.
pub const NO_HEALTHY_ENDPOINT: ErrorType = ErrorType::Custom("no healthy endpoint");

/// A streamed request body went over `max_body_bytes`: 413.
pub const BODY_TOO_LARGE: ErrorType = ErrorType::Custom("request body too large");

/// Longest client-supplied text echoed back in an error message.
const MAX_ECHO: usize = 200;

/// What kind of failure an answer reports: its status and `errorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadData,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The client sent its request too slowly.
    ClientTimeout,
    Conflict,
    /// Well-formed, but what it names fails a check (a tenant's endpoints).
    Unprocessable,
    PayloadTooLarge,
    HeadersTooLarge,
    TooManyRequests,
    Internal,
    BadGateway,
    Unavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadData => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::ClientTimeout => 408,
            ErrorKind::Conflict => 409,
            ErrorKind::Unprocessable => 422,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::TooManyRequests => 429,
            ErrorKind::Internal => 500,
            ErrorKind::BadGateway => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::UpstreamTimeout => 504,
        }
    }

    /// The `errorType` of the JSON body.
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorKind::BadData => "bad_data",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::ClientTimeout | ErrorKind::UpstreamTimeout => "timeout",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unprocessable => "unprocessable",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::TooManyRequests => "too_many_requests",
            ErrorKind::Internal => "internal",
            ErrorKind::BadGateway => "bad_gateway",
            ErrorKind::Unavailable => "unavailable",
        }
    }

    /// The kind an upstream's own error status stands for.
    fn of_status(code: u16) -> ErrorKind {
        match code {
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            405 => ErrorKind::MethodNotAllowed,
            408 => ErrorKind::ClientTimeout,
            409 => ErrorKind::Conflict,
            413 => ErrorKind::PayloadTooLarge,
            431 => ErrorKind::HeadersTooLarge,
            429 => ErrorKind::TooManyRequests,
            502 => ErrorKind::BadGateway,
            503 => ErrorKind::Unavailable,
            504 => ErrorKind::UpstreamTimeout,
            400..=499 => ErrorKind::BadData,
            _ => ErrorKind::Internal,
        }
    }
}

/// What a refusal's message may name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Refused<'a> {
    /// The tenant header's name.
    pub header: &'a str,
    /// The tenant as the request named it.
    pub tenant: &'a str,
    pub path: &'a str,
    pub signal: Option<Signal>,
    /// When a rate-limited client may try again.
    pub wait: Option<Duration>,
    /// What else the message names: the path's problem, the methods an
    /// endpoint takes, the admin operation.
    pub detail: &'a str,
}

/// One key path and its error, for answers that list config errors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyedError {
    pub key: String,
    pub error: String,
}

/// An error answer: status, closed-set type, and a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
    /// Every error of a refused config, each with its key path.
    pub errors: Vec<KeyedError>,
    /// An `Allow` header: the methods the endpoint takes.
    pub allow: Option<String>,
}

impl ErrorReply {
    /// The answer of `kind` with `message`: the status and `errorType` of
    /// every answer come from here.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReply::with_status(kind.status(), kind, message)
    }

    fn with_status(status: u16, kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReply {
            status,
            error_type: kind.error_type(),
            message: message.into(),
            retry_after: None,
            errors: Vec::new(),
            allow: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The answer to a request the router refused.
    pub fn rejection(rejection: Rejection, about: &Refused) -> Self {
        use ErrorKind::*;
        let tenant = echo(about.tenant);
        let header = about.header;
        match rejection {
            Rejection::NoTenant => Self::new(Unauthorized, format!("missing tenant: set the {header} header")),
            Rejection::UnknownTenant => Self::new(Forbidden, format!("unknown tenant {tenant:?}")),
            Rejection::Suspended => Self::new(Forbidden, format!("tenant {tenant:?} is suspended")),
            Rejection::SignalNotEnabled => {
                let signal = about.signal.map_or("", Signal::as_str);
                Self::new(Forbidden, format!("signal {signal} is not enabled for tenant {tenant:?}"))
            }
            Rejection::ReadOnly => Self::new(Forbidden, format!("tenant {tenant:?} is read-only: writes are refused")),
            Rejection::Unroutable => Self::new(
                NotFound,
                format!("path {:?} is not a Victoria* endpoint the router serves on this listener", echo(about.path)),
            ),
            Rejection::NoHealthyEndpoint => Self::new(Unavailable, "no healthy endpoint for this tenant and signal"),
            Rejection::Unauthorized => Self::new(Unauthorized, "missing or invalid credentials"),
            Rejection::CredentialMismatch => Self::new(
                Forbidden,
                format!("the credential belongs to another tenant than {tenant:?} named by the {header} header"),
            ),
            Rejection::RateLimited => {
                let wait = about.wait.unwrap_or_default();
                Self::new(TooManyRequests, format!("tenant {tenant:?} is over its requests_per_second quota"))
                    .retry_after(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
            Rejection::ConcurrencyLimited => {
                Self::new(TooManyRequests, format!("tenant {tenant:?} is over its max_concurrent_requests quota"))
                    .retry_after(1)
            }
            Rejection::BodyTooLarge => {
                Self::new(PayloadTooLarge, format!("the request body is over tenant {tenant:?}'s max_body_bytes"))
            }
            Rejection::BadPath => Self::new(BadData, format!("path {:?}: {}", echo(about.path), about.detail)),
            Rejection::MethodNotAllowed => {
                let mut reply =
                    Self::new(MethodNotAllowed, format!("path {:?} takes {} only", echo(about.path), about.detail));
                reply.allow = Some(about.detail.to_string());
                reply
            }
            Rejection::AdminNotGranted => Self::new(
                Forbidden,
                format!("admin operation {} is not granted to tenant {tenant:?} (features.admin_api)", about.detail),
            ),
            Rejection::HeadersTooLarge => {
                Self::new(HeadersTooLarge, format!("the request head is over this listener's {}", about.detail))
            }
            Rejection::AmbiguousIdentity => Self::new(
                BadData,
                format!("several {} headers: a request names one tenant with one credential", about.detail),
            ),
            Rejection::TenantInPath => Self::new(
                Forbidden,
                format!("path {:?} names a Victoria tenant: only the router names the tenant", echo(about.path)),
            ),
            Rejection::NotOnSharedCluster => Self::new(
                Forbidden,
                format!(
                    "path {:?} has no form scoped to tenant {tenant:?} on its shared cluster: it is not served there",
                    echo(about.path)
                ),
            ),
        }
    }

    /// The answer to a failed proxy attempt, or `None` when the client is gone.
    pub fn from_error(e: &Error) -> Option<Self> {
        use ErrorType::*;
        let timeout = matches!(e.etype(), ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout);
        let reply = match (e.etype(), e.esource()) {
            (&NO_HEALTHY_ENDPOINT, _) => Self::rejection(Rejection::NoHealthyEndpoint, &Refused::default()),
            (&BODY_TOO_LARGE, _) => {
                Self::new(ErrorKind::PayloadTooLarge, "the request body is over the tenant's max_body_bytes")
            }
            // The upstream's own status passes through as it was.
            (HTTPStatus(code), _) => {
                Self::with_status(*code, ErrorKind::of_status(*code), format!("upstream answered {code}"))
            }
            (_, ErrorSource::Upstream) if timeout => Self::new(
                ErrorKind::UpstreamTimeout,
                format!("upstream did not answer in time: {}", e.etype().as_str()),
            ),
            (_, ErrorSource::Upstream) => {
                Self::new(ErrorKind::BadGateway, format!("upstream failed: {}", e.etype().as_str()))
            }
            (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => return None,
            (_, ErrorSource::Downstream) if timeout => {
                Self::new(ErrorKind::ClientTimeout, "the client sent the request too slowly")
            }
            (_, ErrorSource::Downstream) => {
                Self::new(ErrorKind::BadData, format!("bad request: {}", e.etype().as_str()))
            }
            (_, ErrorSource::Internal | ErrorSource::Unset) => Self::new(ErrorKind::Internal, "internal error"),
        };
        Some(reply)
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            status: &'static str,
            error_type: &'static str,
            error: &'a str,
            #[serde(skip_serializing_if = "<[KeyedError]>::is_empty")]
            errors: &'a [KeyedError],
        }
        let body = Body { status: "error", error_type: self.error_type, error: &self.message, errors: &self.errors };
        serde_json::to_vec(&body).map(Bytes::from).unwrap_or_default()
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
        let status =
            |etype, source| ErrorReply::from_error(&Error::create(etype, source, None, None)).map(|r| r.status);
        assert_eq!(status(ErrorType::ConnectRefused, ErrorSource::Upstream), Some(502));
        assert_eq!(status(ErrorType::ConnectionClosed, ErrorSource::Upstream), Some(502));
        assert_eq!(status(ErrorType::InvalidHTTPHeader, ErrorSource::Upstream), Some(502));
        assert_eq!(status(ErrorType::ReadTimedout, ErrorSource::Upstream), Some(504));
        assert_eq!(status(ErrorType::ConnectTimedout, ErrorSource::Upstream), Some(504));
        assert_eq!(status(ErrorType::ConnectionClosed, ErrorSource::Downstream), None);
        assert_eq!(status(ErrorType::InvalidHTTPHeader, ErrorSource::Downstream), Some(400));
        assert_eq!(status(ErrorType::HTTPStatus(503), ErrorSource::Internal), Some(503));
        assert_eq!(status(ErrorType::HTTPStatus(501), ErrorSource::Internal), Some(501));
        assert_eq!(status(NO_HEALTHY_ENDPOINT, ErrorSource::Internal), Some(503));
    }

    #[test]
    fn rejections_map_to_product_statuses() {
        let status =
            |r: Rejection| ErrorReply::rejection(r, &Refused { header: "X-Tenant-ID", ..Refused::default() }).status;
        let expected = [401, 403, 403, 403, 403, 404, 503, 401, 403, 429, 429, 413, 400, 405, 403, 400, 431, 403, 403];
        for (rejection, status_code) in Rejection::ALL.into_iter().zip(expected) {
            assert_eq!(status(rejection), status_code, "{rejection:?}");
        }
    }

    #[test]
    fn body_is_json_in_the_prometheus_error_shape_and_escapes_client_text() {
        let reply = ErrorReply::rejection(Rejection::Unroutable, &Refused { path: "/a\"b\n", ..Refused::default() });
        let body: serde_json::Value = serde_json::from_slice(&reply.body()).unwrap();
        assert_eq!(body["status"], "error");
        assert_eq!(body["errorType"], "not_found");
        assert_eq!(body["error"], "path \"/a\\\"b\\n\" is not a Victoria* endpoint the router serves on this listener");
        assert!(body.get("errors").is_none());
    }

    #[test]
    fn echoed_text_is_bounded() {
        let long = "x".repeat(10_000);
        let reply = ErrorReply::rejection(Rejection::UnknownTenant, &Refused { tenant: &long, ..Refused::default() });
        assert!(reply.message.len() < MAX_ECHO + 40);
    }
}
