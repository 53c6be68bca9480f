//! Per-request state and what happens to it at each outcome of an attempt.
//!
//! [`RequestCtx`] is created per request and carried through every phase. Its
//! methods are the bookkeeping of one request: which endpoints it tried,
//! the inputs of the retry decision, counting a failed attempt against the
//! endpoint (passive health, error metrics, attempt duration), and at the end
//! the request's metrics and access log line.

use super::migrating::Migrating;
use super::retry::{self, Attempt, Decision, Outcome, Why};
use crate::access_log::{self, AccessRecord};
use crate::config::{AccessLogFormat, Observability};
use crate::metrics::UpstreamErrorKind;
use crate::migration::FanOut;
use crate::quota::InFlight;
use crate::upstream::{Pool, Role, Tried};
use http::HeaderValue;
use std::sync::Arc;
use std::time::Instant;

pub struct RequestCtx {
    /// The pool chosen by `request_filter`, from the table in force then.
    pub pool: Option<Arc<Pool>>,
    /// Whether the request only reads (and so may be replayed).
    pub read: bool,
    /// Whether the request is ingest to a deployment with `retry_ingest`.
    pub replay_ingest: bool,
    pub tried: Tried,
    /// The endpoint of the current attempt and when the attempt started.
    pub endpoint: Option<usize>,
    pub attempt_started: Option<Instant>,
    pub request_id: Option<HeaderValue>,
    /// The tenant's configured id, when the header named a configured tenant.
    pub tenant: Option<Arc<str>>,
    pub started: Instant,
    /// In-flight slots of the tenant's and the signal's quotas, given back
    /// when the context drops, whatever ended the request.
    pub slots: [Option<InFlight>; 2],
    pub max_body: Option<u64>,
    pub body_bytes: u64,
    /// The target sent upstream when it is not the client's: the canonical
    /// path (and the query) of a path that was not canonical already.
    pub upstream_uri: Option<http::Uri>,
    /// A migrating tenant's copy or shadow read (boxed: rare, and the
    /// context of every other request stays small).
    pub migrating: Option<Box<Migrating>>,
    /// Whether the client's body ended (the request arrived whole).
    pub body_ended: bool,
    /// An ingest request of a deployment that writes to every primary.
    pub fanout: Option<Arc<FanOut>>,
    /// The OTLP/gRPC endpoint of the pool a passed-through call last went to.
    pub grpc_endpoint: Option<usize>,
}

impl RequestCtx {
    pub fn new() -> Self {
        RequestCtx {
            pool: None,
            read: false,
            replay_ingest: false,
            tried: Tried::default(),
            endpoint: None,
            attempt_started: None,
            request_id: None,
            tenant: None,
            started: Instant::now(),
            slots: [None, None],
            max_body: None,
            body_bytes: 0,
            upstream_uri: None,
            migrating: None,
            body_ended: false,
            fanout: None,
            grpc_endpoint: None,
        }
    }

    /// The retry decision after the current attempt ended with `outcome`;
    /// `replayable`: the request could go again as it was.
    pub fn decide(&self, outcome: Outcome, replayable: bool) -> Decision {
        let Some(pool) = &self.pool else { return Decision { retry: false, why: Why::NoEndpointLeft } };
        retry::decide(&Attempt {
            outcome,
            read: self.read,
            replay_ingest: self.replay_ingest,
            replayable,
            attempts: self.tried.count(),
            max_attempts: pool.max_attempts,
            elapsed: self.started.elapsed(),
            timeout: pool.timeout,
            endpoint_left: pool.has_candidate(self.tried),
        })
    }

    /// Starts an attempt at endpoint `index`.
    pub fn attempt(&mut self, index: usize) {
        self.tried.insert(index);
        self.endpoint = Some(index);
        self.attempt_started = Some(Instant::now());
    }

    /// The current attempt got a response header with `status`. Every 5xx
    /// counts as an upstream error; only 502/503/504 (the endpoint or what is
    /// behind it is unavailable) count against the endpoint's health.
    pub fn attempt_answered(&mut self, status: u16) {
        if matches!(status, 502..=504) {
            return self.attempt_failed(UpstreamErrorKind::Status5xx, &format!("answered {status}"));
        }
        self.observe_attempt();
        let (Some(pool), Some(index)) = (&self.pool, self.endpoint) else { return };
        if status >= 500 {
            if let Some(metrics) = pool.metrics() {
                metrics.error(UpstreamErrorKind::Status5xx).inc();
            }
        } else {
            pool.endpoint(index).health.record_passive_success();
        }
    }

    /// The current attempt failed: counts against the endpoint's passive
    /// health and in the upstream error metrics.
    pub fn attempt_failed(&mut self, kind: UpstreamErrorKind, reason: &str) {
        self.observe_attempt();
        let (Some(pool), Some(index)) = (&self.pool, self.endpoint) else { return };
        if let Some(metrics) = pool.metrics() {
            metrics.error(kind).inc();
        }
        let endpoint = pool.endpoint(index);
        if endpoint.health.record_passive_failure(reason, tokio::time::Instant::now()) {
            tracing::warn!(tenant = &*pool.tenant, signal = %pool.signal, endpoint = &*endpoint.url, reason, "endpoint ejected");
        }
    }

    fn observe_attempt(&mut self) {
        let (Some(pool), Some(index), Some(started)) = (&self.pool, self.endpoint, self.attempt_started.take()) else {
            return;
        };
        if let Some(histogram) = pool.attempt_duration(index) {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }

    /// The request is over: its metrics, and its access log line when on.
    pub fn finish(&self, session: &pingora::proxy::Session, status: Option<u16>, observability: &Observability) {
        let request = session.req_header();
        let path = match (observability.access_log_query, request.uri.path_and_query()) {
            (true, Some(full)) => full.as_str(),
            _ => request.uri.path(),
        };
        let exchange = Exchange {
            protocol: "http",
            method: request.method.as_str(),
            path,
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
        };
        self.record(&exchange, status, observability);
    }

    /// An OTLP/gRPC export is over: the metrics and access log line of a
    /// request, `status` the HTTP status it stands for (the endpoint's, or
    /// the router's own refusal), `method` the gRPC method's path.
    pub fn finish_export(
        &self,
        method: &str,
        status: u16,
        (bytes_in, bytes_out): (u64, u64),
        observability: &Observability,
    ) {
        let exchange = Exchange { protocol: "grpc", method: "POST", path: method, bytes_in, bytes_out };
        self.record(&exchange, Some(status), observability);
    }

    fn record(&self, exchange: &Exchange, status: Option<u16>, observability: &Observability) {
        let Exchange { protocol, method, path, bytes_in, bytes_out } = *exchange;
        let duration = self.started.elapsed();
        if let Some(metrics) = self.pool.as_ref().and_then(|p| p.metrics()) {
            if let Some(status) = status {
                metrics.answered(status);
            }
            metrics.duration.observe(duration.as_secs_f64());
            metrics.request_bytes.inc_by(bytes_in);
            metrics.response_bytes.inc_by(bytes_out);
            if self.tried.count() > 1 {
                metrics.retries.inc_by(u64::from(self.tried.count() - 1));
            }
            let served_by_backup =
                self.endpoint.zip(self.pool.as_ref()).is_some_and(|(i, p)| p.endpoint(i).role == Role::Backup);
            if served_by_backup && status.is_some_and(|s| s < 500) {
                metrics.failovers.inc();
            }
        }
        if observability.access_log != AccessLogFormat::Off {
            access_log::record(&AccessRecord {
                tenant: self.tenant.as_deref().unwrap_or(crate::metrics::UNKNOWN_TENANT),
                signal: self.pool.as_ref().map_or("-", |p| p.signal.as_str()),
                protocol,
                method,
                path,
                status: status.unwrap_or(0),
                endpoint: match (self.pool.as_ref(), self.endpoint, self.grpc_endpoint) {
                    (Some(pool), Some(i), _) => &pool.endpoint(i).url,
                    (Some(pool), None, Some(i)) => pool.otlp_grpc_endpoints().get(i).map_or("-", |e| &e.url),
                    _ => "-",
                },
                attempts: self.tried.count(),
                duration_ms: duration.as_secs_f64() * 1000.0,
                bytes_in,
                bytes_out,
                request_id: self.request_id.as_ref().and_then(|id| id.to_str().ok()).unwrap_or("-"),
            });
        }
    }
}

/// What a finished request was on the wire, for its metrics and log line.
#[derive(Clone, Copy)]
struct Exchange<'a> {
    /// `http` or `grpc`.
    protocol: &'static str,
    method: &'a str,
    path: &'a str,
    bytes_in: u64,
    bytes_out: u64,
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
