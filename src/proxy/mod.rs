//! The `ProxyHttp` implementation: thin phases over `routing` and `upstream`.
//!
//! One [`RequestCtx`] flows through Pingora's phases:
//! `request_filter` resolves (tenant, signal) to a pool ([`resolve`]) or
//! answers with the JSON error → `upstream_peer` picks an untried endpoint
//! → (`fail_to_connect` → `upstream_peer`)* on connect failures →
//! `upstream_request_filter` rewrites headers ([`headers`]) →
//! `upstream_response_filter` → `response_filter` → `logging`; errors after
//! connecting go to `error_while_proxy`, and a request that fails for good
//! to `fail_to_proxy`. Whether a failed attempt goes to another endpoint is
//! decided in one place ([`retry::decide`]). The request path loads the
//! table once and keeps the pool's `Arc` for the whole request. An OTLP
//! export from the gRPC listener takes the same pipeline without Pingora's
//! phases ([`export`]).

mod ctx;
mod export;
mod fanout;
mod headers;
mod migrating;
mod resolve;
mod retry;

pub use ctx::RequestCtx;
pub use export::{deliver, deliver_grpc, otlp_path, resolve_export};
use migrating::Migrating;
pub use resolve::resolve;
pub use retry::{decide, Attempt, Decision, Outcome, Why};

use crate::api::Listener;
use crate::config::{ClientLimits, Observability};
use crate::edge::ClientNames;
use crate::metrics::UpstreamErrorKind;
use crate::rejection::Rejection;
use crate::reply::{ErrorReply, Refused, BODY_TOO_LARGE, NO_HEALTHY_ENDPOINT};
use crate::routing::RouteStore;
use crate::upstream::Pick;
use async_trait::async_trait;
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::RetryType;
use pingora::{Error, ErrorType, Result};
use std::sync::Arc;

/// The proxy for one listener.
pub struct Router {
    listener: Listener,
    routes: Arc<RouteStore>,
    observability: Observability,
    clients: ClientLimits,
    /// `X-Forwarded-Proto`: `https` on a TLS listener.
    scheme: &'static str,
}

impl Router {
    pub fn new(
        listener: Listener,
        routes: Arc<RouteStore>,
        observability: Observability,
        clients: ClientLimits,
    ) -> Self {
        Router { listener, routes, observability, clients, scheme: "http" }
    }

    /// The same router on a TLS listener.
    pub fn over_tls(mut self) -> Self {
        self.scheme = "https";
        self
    }
}

/// Whether the request could go to another endpoint as it was: Pingora still
/// holds its whole body and nothing of an answer went to the client.
fn replayable(session: &Session) -> bool {
    !session.as_ref().retry_buffer_truncated() && session.response_written().is_none()
}

#[async_trait]
impl ProxyHttp for Router {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// Called once per downstream connection's request before any filter.
    /// No modules: Pingora's default adds its response compression module,
    /// disabled, which still costs a boxed context and two filter calls per
    /// request; Victoria* compresses its own answers.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Called once the request head is read. Bounds the head and the wait for
    /// body bytes, then resolves the route; a refusal is answered here
    /// (returning `true` ends the request) and never reaches an upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = Some(headers::request_id(session.req_header()));
        session.set_read_timeout(Some(self.clients.body_timeout));
        let table = self.routes.load();
        let resolved = match headers::within_limits(session.req_header(), &self.clients) {
            Ok(()) => {
                // A verified client certificate's names, put in the TLS digest
                // by the edge after the handshake.
                let digest = session.digest().and_then(|digest| digest.ssl_digest.as_ref());
                let certificate = digest.and_then(|ssl| ssl.extension.get::<ClientNames>()).map(|n| n.0.as_slice());
                resolve(&table, self.listener, session.req_header(), certificate, ctx)
            }
            Err(detail) => {
                if let Some(rejections) = table.rejections("") {
                    rejections.get(Rejection::HeadersTooLarge).inc();
                }
                Err(ErrorReply::rejection(Rejection::HeadersTooLarge, &Refused { detail, ..Refused::default() }))
            }
        };
        match resolved {
            Ok(()) => match ctx.fanout.clone() {
                // Every primary takes the write: the router answers itself.
                Some(fanout) => {
                    let tenant_header = table.tenant_header().clone();
                    drop(table);
                    fanout::fan_out(session, ctx, &fanout, &tenant_header).await?;
                    Ok(true)
                }
                None => Ok(false),
            },
            Err(reply) => {
                tracing::debug!(status = reply.status, error = %reply.message, "request refused");
                send(&reply, session, false).await?;
                Ok(true)
            }
        }
    }

    /// Called for each chunk of the request body as it streams upstream.
    /// Counts it against `max_body_bytes` and cuts the request off past the
    /// limit: the upstream never receives a complete oversized request.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.body_ended |= end_of_stream;
        if let (Some(migrating), Some(chunk)) = (ctx.migrating.as_deref_mut(), body.as_ref()) {
            migrating.request_chunk(chunk);
        }
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

    /// Called before each attempt, the first and every retry. Picks a
    /// healthy endpoint of the pool this request has not tried yet.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let pool = ctx.pool.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "no pool resolved"))?;
        if ctx.tried.count() > 0 {
            // Another attempt: Pingora sends the body again from its start
            // (its retry buffer), through `request_body_filter` again.
            ctx.body_bytes = 0;
            if let Some(migrating) = ctx.migrating.as_deref_mut() {
                migrating.restart();
            }
        }
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

    /// Called when connecting to the endpoint failed. Nothing of the request
    /// was sent: any request may go to another endpoint.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.attempt_failed(UpstreamErrorKind::of(&e), e.etype().as_str());
        let decision = ctx.decide(Outcome::ConnectFailed, true);
        if let (Some(pool), Some(index)) = (&ctx.pool, ctx.endpoint) {
            tracing::warn!(
                tenant = &*pool.tenant,
                signal = %pool.signal,
                endpoint = &*pool.endpoint(index).url,
                error = %e.etype().as_str(),
                retry = decision.retry,
                "cannot connect to endpoint"
            );
        }
        e.set_retry(decision.retry);
        e
    }

    /// Called when an attempt failed after (part of) the request went out,
    /// and for an error returned by `upstream_response_filter`.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let upstream = *e.esource() == pingora::ErrorSource::Upstream;
        if upstream {
            ctx.attempt_failed(UpstreamErrorKind::of(&e), e.etype().as_str());
        }
        let stale_connection = matches!(e.retry, RetryType::ReusedOnly) && client_reused;
        let decision = ctx.decide(Outcome::Failed { upstream, stale_connection }, replayable(session));
        e.set_retry(decision.retry);
        e
    }

    /// Called before the request head goes to the endpoint: the canonical
    /// path when the client's was not, and the headers of [`headers`].
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(uri) = &ctx.upstream_uri {
            upstream.set_uri(uri.clone());
        }
        if ctx.migrating.as_deref().is_some_and(Migrating::compares) {
            // A shadow read compares the serving answer as sent: asked for
            // without compression (the client takes identity too).
            upstream.remove_header(&http::header::ACCEPT_ENCODING);
        }
        let pool = ctx.pool.as_deref().zip(ctx.endpoint).map(|(pool, index)| (pool, &pool.endpoint(index).authority));
        let client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        headers::rewrite_upstream(upstream, pool, client, ctx.request_id.as_ref(), self.scheme)
    }

    /// Called when the endpoint's response head arrives. A 502/503/504 that
    /// the retry decision replays becomes an error (counted as a failed
    /// attempt by `error_while_proxy`); every other answer passes through and
    /// tells the endpoint's passive health.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = response.status.as_u16();
        if matches!(status, 502..=504) && ctx.decide(Outcome::Answered(status), replayable(session)).retry {
            let context = format!("upstream answered {status}");
            return Err(Error::create(
                ErrorType::HTTPStatus(status),
                pingora::ErrorSource::Upstream,
                Some(context.into()),
                None,
            ));
        }
        ctx.attempt_answered(status);
        Ok(())
    }

    /// Called before the response head goes to the client.
    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        headers::rewrite_downstream(response, ctx.request_id.as_ref())
    }

    /// Called for each chunk of the answer: a shadow read keeps it, to compare.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(migrating), Some(chunk)) = (ctx.migrating.as_deref_mut(), body.as_ref()) {
            migrating.response_chunk(chunk);
        }
        Ok(None)
    }

    /// Called once per request when it ends, also for refusals: metrics and
    /// the access log line; a migrating request's copy or replay.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map(|r| r.status.as_u16());
        if let Some(migrating) = ctx.migrating.take() {
            let response = session.response_written();
            let encoding = response
                .and_then(|r| r.headers.get(http::header::CONTENT_ENCODING))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            let whole = e.is_none() && (ctx.body_ended || session.as_mut().is_body_empty());
            migrating.finish(status, encoding, whole, id);
        }
        ctx.finish(session, status, &self.observability);
    }

    /// Called before Pingora logs a failed request. Requests with a pool are
    /// logged by `fail_to_proxy`, with tenant and signal.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        ctx.pool.is_some()
    }

    /// Called when the request failed for good. Answers with the JSON error
    /// when nothing was sent to the client yet.
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
            if let Err(write_error) = send(reply, session, true).await {
                tracing::debug!(error = %write_error, "cannot send the error answer");
            }
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }
}

/// Writes `reply` as a complete response. With `close`, the client is told
/// the connection ends here (after a failed proxy attempt Pingora does not
/// reuse it, and a client must not send on it again).
async fn send(reply: &ErrorReply, session: &mut Session, close: bool) -> Result<()> {
    let body = reply.body();
    let mut header = ResponseHeader::build(reply.status, Some(3))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    if let Some(seconds) = reply.retry_after {
        header.insert_header(http::header::RETRY_AFTER, seconds)?;
    }
    if let Some(methods) = &reply.allow {
        header.insert_header(http::header::ALLOW, methods.as_str())?;
    }
    if close {
        header.insert_header(http::header::CONNECTION, "close")?;
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(body), true).await
}
