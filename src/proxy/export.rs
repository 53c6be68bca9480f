//! An OTLP export that arrives outside Pingora's phases (the OTLP/gRPC
//! listener) goes through the pipeline of an HTTP request of its signal:
//! [`resolve_export`] resolves the signal's OTLP/HTTP `POST` (identify →
//! classify → route → admit, refusals counted as for HTTP), [`deliver`]
//! sends it to an endpoint of the pool with the same headers, the same
//! retry decision and the same passive health, and [`RequestCtx::finish_export`]
//! records the same metrics and access log line.
//!
//! A deployment with `otlp_grpc_endpoints` gets the call as gRPC instead
//! ([`deliver_grpc`]).
//!
//! The export is a write: it goes to another endpoint only when the retry
//! decision says so ([`super::retry::decide`]: nothing reached the
//! upstream, a stale keep-alive connection, or the deployment's
//! `retry_ingest`).

use super::retry::{self, Attempt, Outcome};
use super::{headers, resolve, RequestCtx};
use crate::api::{Listener, Signal};
use crate::metrics::UpstreamErrorKind;
use crate::reply::{ErrorKind, ErrorReply, NO_HEALTHY_ENDPOINT};
use crate::routing::RoutingTable;
use crate::upstream::{Answer, GrpcAnswer, Pick};
use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, RetryType};
use std::net::IpAddr;

/// The longest upstream answer passed back (an OTLP partial-success
/// message, or an error text).
const MAX_ANSWER: usize = 1 << 20;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The OTLP/HTTP path of a signal's export: the one the API surface
/// classifies as that signal's OTLP ingest.
pub fn otlp_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Metrics => "/opentelemetry/v1/metrics",
        Signal::Logs => "/insert/opentelemetry/v1/logs",
        Signal::Traces => "/insert/opentelemetry/v1/traces",
    }
}

/// Resolves an export of `signal` whose client sent `metadata` (its
/// tenant header, `Authorization` and `X-Request-ID` are read, each as
/// often as it came) into `ctx`, as [`resolve`] resolves the OTLP/HTTP
/// request of that signal; or the refusal.
pub fn resolve_export(
    table: &RoutingTable,
    signal: Signal,
    metadata: &HeaderMap,
    certificate: Option<&[String]>,
    ctx: &mut RequestCtx,
) -> Result<(), ErrorReply> {
    let internal = |_| internal();
    let mut request = RequestHeader::build("POST", otlp_path(signal).as_bytes(), Some(4)).map_err(internal)?;
    for name in [table.tenant_header(), &http::header::AUTHORIZATION, &X_REQUEST_ID] {
        for value in metadata.get_all(name) {
            request.append_header(name.clone(), value.clone()).map_err(internal)?;
        }
    }
    ctx.request_id = Some(headers::request_id(&request));
    resolve(table, Listener::Unified, &request, certificate, ctx)
}

/// Sends `body` (an OTLP protobuf message, `gzip` compressed or not) to the
/// pool resolved in `ctx` as the OTLP/HTTP `POST` of `signal`, trying
/// endpoints as the retry decision allows; the endpoint's answer, or the
/// router's own when no endpoint answered.
pub async fn deliver(
    connector: &Connector,
    ctx: &mut RequestCtx,
    signal: Signal,
    body: Bytes,
    gzip: bool,
    client: Option<IpAddr>,
) -> Result<Answer, ErrorReply> {
    let Some(pool) = ctx.pool.clone() else {
        return Err(internal());
    };
    let forwarded = ctx.upstream_uri.clone();
    let target = forwarded.as_ref().map_or(otlp_path(signal), |uri| uri.path());
    let fail = |e: &Error| {
        let mut reply = ErrorReply::from_error(e).unwrap_or_else(internal);
        if reply.status == 503 {
            reply.retry_after = Some(pool.retry_after.as_secs().clamp(1, 60));
        }
        reply
    };
    loop {
        let index = match pool.select(ctx.tried) {
            Pick::Endpoint(index) => index,
            Pick::NoneHealthy => {
                if let Some(metrics) = pool.metrics() {
                    metrics.no_healthy_endpoint.inc();
                }
                return Err(fail(&Error::explain(NO_HEALTHY_ENDPOINT, "every endpoint of the pool is down")));
            }
            Pick::Exhausted => {
                return Err(fail(&Error::explain(ErrorType::ConnectError, "every healthy endpoint failed").into_up()))
            }
        };
        ctx.attempt(index);
        let request = request(target, (body.len(), gzip), &pool, index, client, ctx).map_err(|e| fail(&e))?;
        match pool.post(connector, index, request, body.clone(), MAX_ANSWER).await {
            Ok(answer) => {
                let status = answer.status;
                if matches!(status, 502..=504) && ctx.decide(Outcome::Answered(status), true).retry {
                    ctx.attempt_failed(UpstreamErrorKind::Status5xx, &format!("answered {status}"));
                    continue;
                }
                ctx.attempt_answered(status);
                return Ok(answer);
            }
            Err(failed) => {
                let error = failed.error.into_up();
                ctx.attempt_failed(UpstreamErrorKind::of(&error), error.etype().as_str());
                let outcome = match failed.connected {
                    false => Outcome::ConnectFailed,
                    true => Outcome::Failed {
                        upstream: true,
                        stale_connection: failed.reused && matches!(error.retry, RetryType::ReusedOnly),
                    },
                };
                let decision = ctx.decide(outcome, true);
                tracing::warn!(
                    tenant = &*pool.tenant,
                    signal = %pool.signal,
                    endpoint = &*pool.endpoint(index).url,
                    error = %error,
                    retry = decision.retry,
                    "OTLP export attempt failed"
                );
                if !decision.retry {
                    return Err(fail(&error));
                }
            }
        }
    }
}

/// The head of one attempt: the OTLP/HTTP protobuf `POST`, with the
/// headers [`headers::rewrite_upstream`] sets on every proxied request.
fn request(
    target: &str,
    (length, gzip): (usize, bool),
    pool: &crate::upstream::Pool,
    index: usize,
    client: Option<IpAddr>,
    ctx: &RequestCtx,
) -> pingora::Result<RequestHeader> {
    let mut request = RequestHeader::build("POST", target.as_bytes(), Some(8))?;
    request.insert_header(http::header::CONTENT_TYPE, "application/x-protobuf")?;
    request.insert_header(http::header::CONTENT_LENGTH, length)?;
    if gzip {
        request.insert_header(http::header::CONTENT_ENCODING, "gzip")?;
    }
    let authority = &pool.endpoint(index).authority;
    headers::rewrite_upstream(&mut request, Some((pool, authority)), client, ctx.request_id.as_ref(), "http")?;
    Ok(request)
}

fn internal() -> ErrorReply {
    ErrorReply::new(ErrorKind::Internal, "internal error")
}

/// Proxies the call as gRPC to the pool's OTLP/gRPC endpoints (a
/// deployment's `otlp_grpc_endpoints`): `method` with the message `body`
/// (`gzip` compressed or not) framed again, with the headers of every
/// proxied request (the pool's credential, a shared deployment's
/// `AccountID`/`ProjectID`, `X-Forwarded-For`, `X-Request-ID`). Endpoints
/// take turns; the retry decision moves a call to the next one.
pub async fn deliver_grpc(
    connector: &Connector,
    ctx: &mut RequestCtx,
    method: &str,
    body: Bytes,
    gzip: bool,
    client: Option<IpAddr>,
) -> Result<GrpcAnswer, ErrorReply> {
    let Some(pool) = ctx.pool.clone() else { return Err(internal()) };
    let endpoints = pool.otlp_grpc_endpoints();
    let mut framed = bytes::BytesMut::with_capacity(body.len() + 5);
    framed.extend_from_slice(&[u8::from(gzip)]);
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    let framed = framed.freeze();
    let turn = pool.grpc_turn();
    let mut attempt = 0;
    loop {
        let index = (turn + attempt) % endpoints.len().max(1);
        let Some(endpoint) = endpoints.get(index) else { return Err(internal()) };
        attempt += 1;
        ctx.grpc_endpoint = Some(index);
        let mut request = RequestHeader::build("POST", method.as_bytes(), Some(8)).map_err(|_| internal())?;
        let built = (|| {
            request.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
            request.insert_header(http::header::TE, "trailers")?;
            if gzip {
                request.insert_header("grpc-encoding", "gzip")?;
            }
            headers::rewrite_upstream(
                &mut request,
                Some((&pool, &endpoint.authority)),
                client,
                ctx.request_id.as_ref(),
                "http",
            )
        })();
        built.map_err(|_| internal())?;
        let failed = match pool.call_grpc(connector, index, request, framed.clone(), MAX_ANSWER).await {
            Ok(answer) => return Ok(answer),
            Err(failed) => failed,
        };
        let error = failed.error.into_up();
        let outcome = match failed.connected {
            false => Outcome::ConnectFailed,
            true => Outcome::Failed {
                upstream: true,
                stale_connection: failed.reused && matches!(error.retry, RetryType::ReusedOnly),
            },
        };
        let decision = retry::decide(&Attempt {
            outcome,
            read: false,
            replay_ingest: ctx.replay_ingest,
            replayable: true,
            attempts: attempt as u32,
            max_attempts: pool.max_attempts,
            elapsed: ctx.started.elapsed(),
            timeout: pool.timeout,
            endpoint_left: attempt < endpoints.len(),
        });
        tracing::warn!(
            tenant = &*pool.tenant,
            signal = %pool.signal,
            endpoint = &*endpoint.url,
            error = %error,
            retry = decision.retry,
            "OTLP/gRPC call to the deployment failed"
        );
        if !decision.retry {
            return Err(ErrorReply::from_error(&error).unwrap_or_else(internal));
        }
    }
}
