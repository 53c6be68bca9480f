//! The `ProxyHttp` implementation: thin phases over `routing` and `upstream`.
//!
//! One [`RequestCtx`] flows through Pingora's phases:
//! `request_filter` resolves (tenant, signal) to a pool or answers with the
//! JSON error → `upstream_peer` picks an untried endpoint →
//! (`fail_to_connect` → `upstream_peer`)* on connect failures →
//! `upstream_request_filter` rewrites headers → `response_filter` →
//! `fail_to_proxy` on errors. The request path loads the table once and
//! keeps the pool's `Arc` for the whole request.

mod ctx;
mod errors;

pub use ctx::RequestCtx;
pub use errors::ErrorReply;

use crate::config::Observability;
use crate::metrics::{UpstreamErrorKind, REJECTION_REASONS};
use crate::quota::Exceeded;
use crate::routing::{classify_path, identify, Access, Listener, Refusal, RouteStore, RoutingTable, Signal};
use crate::upstream::Pick;
use async_trait::async_trait;
use errors::{BODY_TOO_LARGE, NO_HEALTHY_ENDPOINT};
use pingora::RetryType;
use http::{HeaderName, HeaderValue};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use std::sync::Arc;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Names as inserted: Pingora keeps each header's case in a second map, and
/// a `&'static str` goes in without the copy a `HeaderName` of our own costs
/// (callgrind: one allocation less per header, four per request).
const WIRE_X_REQUEST_ID: &str = "X-Request-ID";
const WIRE_X_FORWARDED_FOR: &str = "X-Forwarded-For";
const WIRE_X_FORWARDED_PROTO: &str = "X-Forwarded-Proto";
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Victoria's tenant headers: only the router may set them.
static ACCOUNT_ID: HeaderName = HeaderName::from_static("accountid");
static PROJECT_ID: HeaderName = HeaderName::from_static("projectid");

/// Longest client-sent `X-Request-ID` that is propagated as is.
const MAX_REQUEST_ID: usize = 128;

/// The proxy for one listener.
pub struct Router {
    listener: Listener,
    routes: Arc<RouteStore>,
    observability: Observability,
}

impl Router {
    pub fn new(listener: Listener, routes: Arc<RouteStore>, observability: Observability) -> Self {
        Router { listener, routes, observability }
    }

    /// Resolves the request's tenant and pool into `ctx` and admits it under
    /// its quotas, or gives the refusal to answer with. Refusals are counted
    /// under the tenant when it is configured, else under `unknown`.
    fn resolve(&self, session: &Session, ctx: &mut RequestCtx) -> std::result::Result<(), ErrorReply> {
        let table = self.routes.load();
        let request = session.req_header();
        let path = request.uri.path();
        let header = table.tenant_header();
        let named = request.headers.get(header).map(|v| v.to_str().unwrap_or("\u{fffd}")).unwrap_or("");
        let authorization = request.headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        let identified = identify(&table, named, authorization);
        let tenant = *identified.as_ref().unwrap_or(&named);
        ctx.tenant = table.tenant(tenant).map(|route| route.id.clone());
        let refuse = |refusal: Refusal| {
            tracing::debug!(tenant = ctx_label(&table, tenant), reason = REJECTION_REASONS[refusal.reason_index()], "request refused");
            if let Some(rejections) = table.rejections(tenant) {
                rejections[refusal.reason_index()].inc();
            }
            ErrorReply::refusal(&refusal, header.as_str(), tenant, path)
        };
        let tenant = identified.map_err(refuse)?;
        let by_path = classify_path(path);
        let (signal, access): (Signal, Access) = match (self.listener, by_path) {
            (Listener::DropIn(signal), by_path) => (signal, by_path.map_or(Access::Query, |(_, access)| access)),
            (Listener::Unified, Some(by_path)) => by_path,
            (Listener::Unified, None) => return Err(refuse(Refusal::Unroutable)),
        };
        let (route, pool) = table.route(tenant, signal, access).map_err(refuse)?;
        for (slot, limits) in ctx.slots.iter_mut().zip([&route.limits, &pool.limits]) {
            let Some(limits) = limits else { continue };
            *slot = match limits.admit() {
                Ok(in_flight) => in_flight,
                Err(Exceeded::Rate(wait)) => return Err(refuse(Refusal::RateLimited(wait))),
                Err(Exceeded::Concurrency) => return Err(refuse(Refusal::TooManyInFlight)),
            };
            ctx.max_body = match (ctx.max_body, limits.max_body_bytes) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let declared = request.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.zip(ctx.max_body).is_some_and(|(declared, max)| declared > max) {
            return Err(refuse(Refusal::BodyTooLarge));
        }
        // A pool's and its tenant's series exist (at 0) from their first
        // request on, so `increase()` sees even the first error or refusal.
        let _ = (pool.metrics(), route.rejections());
        ctx.pool = Some(pool.clone());
        // Reads may be replayed on another endpoint: GET/HEAD, and the POST
        // forms of known query paths (Grafana posts its queries).
        ctx.read = matches!(request.method, http::Method::GET | http::Method::HEAD)
            || (by_path.is_some() && access == Access::Query);
        Ok(())
    }
}

/// The tenant as logs may show it: its configured id, or `unknown`.
fn ctx_label<'a>(table: &'a RoutingTable, tenant: &str) -> &'a str {
    table.tenant(tenant).map_or(crate::metrics::UNKNOWN_TENANT, |route| &route.id)
}

#[async_trait]
impl ProxyHttp for Router {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// No downstream modules. Pingora's default adds its response
    /// compression module, disabled, which still costs a boxed context and
    /// two filter calls per request; Victoria* compresses its own answers.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Resolves the route; refusals are answered here and never reach an upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = Some(request_id(session));
        match self.resolve(session, ctx) {
            Ok(()) => Ok(false),
            Err(reply) => {
                tracing::debug!(status = reply.status, error = %reply.message, "request refused");
                reply.send(session, false).await?;
                Ok(true)
            }
        }
    }

    /// Counts a streamed body against `max_body_bytes` and cuts it off past
    /// the limit: the upstream never receives a complete oversized request.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(max), Some(chunk)) = (ctx.max_body, body.as_ref()) else { return Ok(()) };
        ctx.body_bytes += chunk.len() as u64;
        if ctx.body_bytes > max {
            if let Some(metrics) = ctx.pool.as_ref().and_then(|pool| pool.metrics()) {
                metrics.body_too_large.inc();
            }
            return Err(Error::explain(BODY_TOO_LARGE, format!("request body over {max} bytes")));
        }
        Ok(())
    }

    /// A healthy endpoint of the pool this request has not tried yet.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let pool = ctx.pool.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "no pool resolved"))?;
        match pool.select(ctx.tried) {
            Pick::Endpoint(index) => {
                let peer = pool.peer(index);
                ctx.attempt(index);
                Ok(peer)
            }
            Pick::NoneHealthy => {
                if let Some(metrics) = pool.metrics() {
                    metrics.no_healthy_endpoint.inc();
                }
                Err(Error::explain(NO_HEALTHY_ENDPOINT, "every endpoint of the pool is down"))
            }
            Pick::Exhausted => Err(Error::explain(ErrorType::ConnectError, "every healthy endpoint failed").into_up()),
        }
    }

    /// Nothing of the request was sent: any request may go to another endpoint.
    fn fail_to_connect(&self, _session: &mut Session, _peer: &HttpPeer, ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
        ctx.attempt_failed(UpstreamErrorKind::of(&e), e.etype().as_str());
        let retry = ctx.may_retry();
        if let (Some(pool), Some(index)) = (&ctx.pool, ctx.endpoint) {
            tracing::warn!(
                tenant = &*pool.tenant,
                signal = %pool.signal,
                endpoint = &*pool.endpoint(index).url,
                error = %e.etype().as_str(),
                retry,
                "cannot connect to endpoint"
            );
        }
        e.set_retry(retry);
        e
    }

    /// The request (or part of it) went out. Reads are replayed on another
    /// endpoint when the body is still in Pingora's retry buffer; writes only
    /// when a reused keep-alive connection turned out closed before the
    /// upstream read anything (Pingora's `ReusedOnly`).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let upstream_failed = *e.esource() == pingora::ErrorSource::Upstream;
        if upstream_failed {
            ctx.attempt_failed(UpstreamErrorKind::of(&e), e.etype().as_str());
        }
        let replayable = upstream_failed && !session.as_ref().retry_buffer_truncated() && session.response_written().is_none();
        let stale_connection = matches!(e.retry, RetryType::ReusedOnly) && client_reused;
        let retry = replayable && (ctx.read || stale_connection) && ctx.may_retry();
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(pool), Some(index)) = (&ctx.pool, ctx.endpoint) {
            upstream.insert_header(http::header::HOST, pool.endpoint(index).authority.clone())?;
        }
        upstream.remove_header(&ACCOUNT_ID);
        upstream.remove_header(&PROJECT_ID);
        // The client's credential proves it to the router; it never travels on.
        upstream.remove_header(&http::header::AUTHORIZATION);
        if let Some(credential) = ctx.pool.as_ref().and_then(|pool| pool.upstream_auth.clone()) {
            upstream.insert_header(http::header::AUTHORIZATION, credential)?;
        }
        if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()) {
            let earlier = upstream.headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
            upstream.insert_header(WIRE_X_FORWARDED_FOR, forwarded_for(earlier, ip))?;
        }
        upstream.insert_header(WIRE_X_FORWARDED_PROTO, HeaderValue::from_static("http"))?;
        if let Some(id) = &ctx.request_id {
            upstream.insert_header(WIRE_X_REQUEST_ID, id.clone())?;
        }
        Ok(())
    }

    /// A 502/503/504 answer to a read is replayed on another endpoint while
    /// one is left; otherwise it passes through. Every answer tells the
    /// endpoint's passive health.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = response.status.as_u16();
        let failed = matches!(status, 502..=504);
        if failed && ctx.read && !session.as_ref().retry_buffer_truncated() && ctx.may_retry() {
            // Counted as a failed attempt by `error_while_proxy`.
            let context = format!("upstream answered {status}");
            return Err(Error::create(ErrorType::HTTPStatus(status), pingora::ErrorSource::Upstream, Some(context.into()), None));
        }
        ctx.attempt_answered(status);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            response.insert_header(WIRE_X_REQUEST_ID, id.clone())?;
        }
        Ok(())
    }

    /// Once per request, also for refusals: metrics and the access log line.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map(|r| r.status.as_u16());
        ctx.finish(session, status, &self.observability);
    }

    /// Failed requests are logged by `fail_to_proxy`, with tenant and signal.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        ctx.pool.is_some()
    }

    /// Answers a failed request with the JSON error, when nothing was sent yet.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let mut reply = ErrorReply::from_error(e);
        if let (Some(reply), Some(pool)) = (&mut reply, &ctx.pool) {
            if reply.status == 503 {
                reply.retry_after = Some(pool.retry_after.as_secs().clamp(1, 60));
            }
        }
        let status = reply.as_ref().map_or(0, |r| r.status);
        if let Some(pool) = &ctx.pool {
            let endpoint = ctx.endpoint.map(|i| &*pool.endpoint(i).url);
            let request = session.req_header();
            tracing::warn!(
                tenant = &*pool.tenant,
                signal = %pool.signal,
                endpoint,
                method = %request.method,
                path = request.uri.path(),
                attempts = ctx.tried.count(),
                status,
                error = %e,
                "request failed"
            );
        }
        if let (Some(reply), None) = (&reply, session.response_written()) {
            if let Err(write_error) = reply.send(session, true).await {
                tracing::debug!(error = %write_error, "cannot send the error answer");
            }
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }
}

/// `X-Forwarded-For`: the client's chain, if any, and its address. IPv4 is
/// written digit by digit: `Display` cost 1,300 instructions a request.
fn forwarded_for(earlier: Option<&str>, ip: std::net::IpAddr) -> HeaderValue {
    let mut text = Vec::with_capacity(earlier.map_or(0, |e| e.len() + 2) + 39);
    if let Some(earlier) = earlier {
        text.extend_from_slice(earlier.as_bytes());
        text.extend_from_slice(b", ");
    }
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push(b'.');
                }
                if octet >= 100 {
                    text.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    text.push(b'0' + octet / 10 % 10);
                }
                text.push(b'0' + octet % 10);
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(text, "{v6}");
        }
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The client's `X-Request-ID` when it is sane, else a new UUID.
fn request_id(session: &Session) -> HeaderValue {
    let sent = session.req_header().headers.get(&X_REQUEST_ID);
    match sent {
        Some(id) if !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.as_bytes().iter().all(|b| b.is_ascii_graphic()) => {
            id.clone()
        }
        _ => {
            let mut buf = uuid::Uuid::encode_buffer();
            let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::forwarded_for;

    #[test]
    fn forwarded_for_appends_the_client_to_the_chain() {
        let ip = |text: &str| text.parse().unwrap();
        for text in ["0.0.0.0", "127.0.0.1", "10.20.30.40", "255.255.255.255", "192.168.100.9", "::1", "2001:db8::8a2e:370:7334"] {
            assert_eq!(forwarded_for(None, ip(text)), text);
        }
        assert_eq!(forwarded_for(Some("203.0.113.7"), ip("10.0.0.1")), "203.0.113.7, 10.0.0.1");
    }
}
