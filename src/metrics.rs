//! Every metric of the router, defined in one place, with bounded labels.
//!
//! Label values come only from the configuration (tenant ids, endpoint URLs)
//! and from closed enums (signal, status class, error kind, rejection
//! reason): a client-sent tenant id that is not configured is counted under
//! `tenant="unknown"`, never under its own value. The request path never
//! looks a label up: each pool carries [`PoolMetrics`] handles resolved when
//! the table is built. Series of a tenant removed by a reload are deleted
//! ([`Metrics::forget_tenant`]); endpoint series go with their endpoint.

use crate::routing::{RouteStore, Signal};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::Arc;

/// Request and attempt duration buckets: sub-millisecond to a minute.
const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The tenant label of requests whose tenant is not configured (or not sent).
pub const UNKNOWN_TENANT: &str = "unknown";

/// Status classes of answered requests; index = first digit - 1.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why an upstream attempt failed: a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Tls,
    Reset,
    Protocol,
    Status5xx,
    Other,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 7] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Protocol,
        UpstreamErrorKind::Status5xx,
        UpstreamErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::Status5xx => "status_5xx",
            UpstreamErrorKind::Other => "other",
        }
    }

    pub fn of(e: &pingora::Error) -> Self {
        use pingora::ErrorType::*;
        match e.etype() {
            ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError | ConnectProxyFailure => {
                UpstreamErrorKind::Connect
            }
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => UpstreamErrorKind::Timeout,
            TLSHandshakeFailure | TLSWantX509Lookup | InvalidCert | HandshakeError => UpstreamErrorKind::Tls,
            ConnectionClosed | ReadError | WriteError => UpstreamErrorKind::Reset,
            InvalidHTTPHeader | H1Error | H2Error | H2Downgrade | InvalidH2 => UpstreamErrorKind::Protocol,
            HTTPStatus(500..=599) => UpstreamErrorKind::Status5xx,
            _ => UpstreamErrorKind::Other,
        }
    }
}

/// Why the router refused a request: a closed set.
pub const REJECTION_REASONS: [&str; 12] = [
    "no_tenant",
    "unknown_tenant",
    "suspended",
    "signal_not_enabled",
    "read_only",
    "unroutable",
    "no_healthy_endpoint",
    "unauthorized",
    "credential_mismatch",
    "rate_limited",
    "concurrency_limited",
    "body_too_large",
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    attempt_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    retries: IntCounterVec,
    failovers: IntCounterVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    probe_duration: HistogramVec,
    rejections: IntCounterVec,
    reloads: IntCounterVec,
    pub last_reload_success: Gauge,
}

/// Handles of one pool's series, resolved once per table build.
pub struct PoolMetrics {
    pub requests: [IntCounter; 5],
    pub duration: Histogram,
    pub errors: [IntCounter; 7],
    pub retries: IntCounter,
    pub failovers: IntCounter,
    pub request_bytes: IntCounter,
    pub response_bytes: IntCounter,
    /// `rejections_total{reason="no_healthy_endpoint"}` of the pool's tenant.
    pub no_healthy_endpoint: IntCounter,
    /// `rejections_total{reason="body_too_large"}` of the pool's tenant.
    pub body_too_large: IntCounter,
}

impl PoolMetrics {
    pub fn error(&self, kind: UpstreamErrorKind) -> &IntCounter {
        &self.errors[kind as usize]
    }

    /// Counts one answered request.
    pub fn answered(&self, status: u16) {
        if let Some(counter) = self.requests.get((status / 100).wrapping_sub(1) as usize) {
            counter.inc();
        }
    }
}

/// Handles of one endpoint's series.
pub struct EndpointMetrics {
    pub attempt_duration: Histogram,
    pub probe_duration: Histogram,
}

impl Metrics {
    /// A fresh set of metrics in a registry of its own.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(vec.clone())).expect("unique metric");
            vec
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
            let vec = HistogramVec::new(opts, labels).expect("valid metric");
            registry.register(Box::new(vec.clone())).expect("unique metric");
            vec
        };
        let ts = ["tenant", "signal"];
        let metrics = Metrics {
            requests: counter(
                "mirador_router_requests_total",
                "Requests routed to a pool, by tenant, signal and the status class answered.",
                &["tenant", "signal", "status_class"],
            ),
            duration: histogram(
                "mirador_router_request_duration_seconds",
                "Time from the request's arrival to the end of its answer, by tenant and signal.",
                &ts,
            ),
            attempt_duration: histogram(
                "mirador_router_upstream_attempt_duration_seconds",
                "Time from choosing an endpoint to its response header, or to the attempt's failure.",
                &["endpoint"],
            ),
            upstream_errors: counter(
                "mirador_router_upstream_errors_total",
                "Failed upstream attempts, by tenant, signal and kind.",
                &["tenant", "signal", "kind"],
            ),
            retries: counter("mirador_router_retries_total", "Upstream attempts beyond the first.", &ts),
            failovers: counter("mirador_router_failovers_total", "Requests answered by a backup endpoint.", &ts),
            request_bytes: counter("mirador_router_request_bytes_total", "Request body bytes received from clients.", &ts),
            response_bytes: counter("mirador_router_response_bytes_total", "Response body bytes sent to clients.", &ts),
            probe_duration: histogram(
                "mirador_router_probe_duration_seconds",
                "Duration of active health probes, by endpoint.",
                &["endpoint"],
            ),
            rejections: counter(
                "mirador_router_rejections_total",
                "Requests the router answered itself without an upstream, by tenant and reason.",
                &["tenant", "reason"],
            ),
            reloads: counter("mirador_router_config_reloads_total", "Config reloads by result.", &["result"]),
            last_reload_success: Gauge::new(
                "mirador_router_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load.",
            )
            .expect("valid metric"),
            registry,
        };
        metrics.registry.register(Box::new(metrics.last_reload_success.clone())).expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new("mirador_router_build_info", "Always 1; the version in a label."),
            &["version"],
        )
        .expect("valid metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics.registry.register(Box::new(build_info)).expect("unique metric");
        Arc::new(metrics)
    }

    /// Reads endpoint health, pools per endpoint and the tenant count from
    /// the table in force at each scrape.
    pub fn watch(&self, routes: Arc<RouteStore>) {
        let _ = self.registry.register(Box::new(TableCollector::new(routes)));
    }

    /// Resolves the series of one pool.
    pub fn pool(&self, tenant: &str, signal: Signal) -> PoolMetrics {
        let labels = [tenant, signal.as_str()];
        PoolMetrics {
            requests: STATUS_CLASSES.map(|class| self.requests.with_label_values(&[tenant, signal.as_str(), class])),
            duration: self.duration.with_label_values(&labels),
            errors: UpstreamErrorKind::ALL.map(|k| self.upstream_errors.with_label_values(&[tenant, signal.as_str(), k.as_str()])),
            retries: self.retries.with_label_values(&labels),
            failovers: self.failovers.with_label_values(&labels),
            request_bytes: self.request_bytes.with_label_values(&labels),
            response_bytes: self.response_bytes.with_label_values(&labels),
            no_healthy_endpoint: self.rejections.with_label_values(&[tenant, REJECTION_REASONS[6]]),
            body_too_large: self.rejections.with_label_values(&[tenant, REJECTION_REASONS[11]]),
        }
    }

    pub fn endpoint(&self, url: &str) -> EndpointMetrics {
        EndpointMetrics {
            attempt_duration: self.attempt_duration.with_label_values(&[url]),
            probe_duration: self.probe_duration.with_label_values(&[url]),
        }
    }

    /// One handle per rejection reason for `tenant` (a configured id or [`UNKNOWN_TENANT`]).
    pub fn rejections(&self, tenant: &str) -> [IntCounter; REJECTION_REASONS.len()] {
        REJECTION_REASONS.map(|reason| self.rejections.with_label_values(&[tenant, reason]))
    }

    pub fn reload(&self, success: bool) {
        self.reloads.with_label_values(&[if success { "success" } else { "failure" }]).inc();
        if success {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            self.last_reload_success.set(now.as_secs_f64());
        }
    }

    /// Deletes every series of a tenant that is gone from the config.
    pub fn forget_tenant(&self, tenant: &str) {
        for signal in Signal::ALL {
            let labels = [tenant, signal.as_str()];
            for class in STATUS_CLASSES {
                let _ = self.requests.remove_label_values(&[tenant, signal.as_str(), class]);
            }
            for kind in UpstreamErrorKind::ALL {
                let _ = self.upstream_errors.remove_label_values(&[tenant, signal.as_str(), kind.as_str()]);
            }
            for vec in [&self.retries, &self.failovers, &self.request_bytes, &self.response_bytes] {
                let _ = vec.remove_label_values(&labels);
            }
            let _ = self.duration.remove_label_values(&labels);
        }
        for reason in REJECTION_REASONS {
            let _ = self.rejections.remove_label_values(&[tenant, reason]);
        }
    }

    /// Deletes the series of an endpoint no table lists any more.
    pub fn forget_endpoint(&self, url: &str) {
        let _ = self.attempt_duration.remove_label_values(&[url]);
        let _ = self.probe_duration.remove_label_values(&[url]);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Gauges read from the table in force at scrape time, so they can never
/// outlive a tenant or an endpoint: endpoint health, pools per endpoint,
/// tenants loaded.
struct TableCollector {
    routes: Arc<RouteStore>,
    descs: Vec<Desc>,
    healthy: IntGaugeVec,
    pools: IntGaugeVec,
    tenants: IntGauge,
}

impl TableCollector {
    fn new(routes: Arc<RouteStore>) -> Self {
        let healthy = IntGaugeVec::new(
            Opts::new("mirador_router_endpoint_healthy", "1 when the endpoint takes traffic, 0 when it is down or ejected."),
            &["endpoint"],
        )
        .expect("valid metric");
        let pools = IntGaugeVec::new(
            Opts::new("mirador_router_endpoint_pools", "Number of (tenant, signal) pools that list the endpoint."),
            &["endpoint"],
        )
        .expect("valid metric");
        let tenants = IntGauge::new("mirador_router_tenants", "Tenants in the routing table in force.").expect("valid metric");
        let descs = [healthy.desc(), pools.desc(), tenants.desc()].concat().into_iter().cloned().collect();
        TableCollector { routes, descs, healthy, pools, tenants }
    }
}

impl Collector for TableCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let table = self.routes.load();
        self.healthy.reset();
        self.pools.reset();
        for health in table.endpoint_health() {
            self.healthy.with_label_values(&[&*health.url]).set(health.is_healthy() as i64);
            self.pools.with_label_values(&[&*health.url]).inc();
        }
        self.tenants.set(table.tenant_count() as i64);
        [self.healthy.collect(), self.pools.collect(), self.tenants.collect()].concat()
    }
}
