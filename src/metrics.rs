//! Every metric of the router, defined in one place, with bounded labels.
//!
//! Label values come only from the configuration (tenant ids, endpoint URLs)
//! and from closed enums (signal, status class, error kind, rejection
//! reason): a client-sent tenant id that is not configured is counted under
//! `tenant="unknown"`, never under its own value.
//!
//! Series are created when first counted, not when a table is built (an idle
//! tenant costs no series; README, Performance). The request path still never
//! looks a label up more than once per pool and table: each pool keeps its
//! resolved [`PoolMetrics`] handles in a [`PoolSeries`]. Series of a tenant
//! removed by a reload are deleted ([`TenantSeries::retire`]); endpoint
//! series go with their endpoint. Gauges read from running state at scrape
//! time are collectors their owners register ([`Metrics::register`]).

use crate::api::Signal;
use crate::rejection::Rejection;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Request and attempt duration buckets: sub-millisecond to a minute.
pub const DURATION_BUCKETS: &[f64] =
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
    /// Of every endpoint together (a histogram per endpoint is too many
    /// series at scale); the latest probe of each endpoint is the
    /// `mirador_router_endpoint_probe_seconds` gauge.
    pub probe_duration: Histogram,
    rejections: IntCounterVec,
    reloads: IntCounterVec,
    pub last_reload_success: Gauge,
    /// Each TLS listener's certificates' `notAfter`, by listener and subject.
    tls_certificate_expiry: GaugeVec,
    jwks_refreshes: IntCounterVec,
    /// Lookups of the deployments' `dns` names, by result; and how many fail now.
    dns_resolutions: IntCounterVec,
    pub dns_names_failing: prometheus::IntGauge,
    /// Per tenant and signal: what its deployment holds and spends (`usage`).
    usage: [GaugeVec; 6],
    /// Copies of ingest requests for a migration's other deployment.
    mirror_requests: IntCounterVec,
    mirror_sent: IntCounterVec,
    mirror_queue: IntGaugeVec,
    mirror_oldest: GaugeVec,
    shadow_comparisons: IntCounterVec,
    /// Orders the creation of a tenant's series against its retirement.
    lifecycle: Mutex<()>,
}

/// Handles of one pool's series, resolved at the pool's first request and
/// kept by the pool (across reloads that leave its tenant unchanged).
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

/// One migration queue's series (`mirror_requests_total` by result, its
/// depth and its oldest copy's age).
pub struct MirrorMetrics {
    pub ok: IntCounter,
    pub failed: IntCounter,
    pub dropped_queue_full: IntCounter,
    pub dropped_too_large: IntCounter,
    pub sent: IntCounter,
    pub queued: prometheus::IntGauge,
    pub oldest_seconds: Gauge,
}

/// One migration's shadow-read comparisons by result.
pub struct ShadowMetrics {
    pub matched: IntCounter,
    pub mismatched: IntCounter,
    pub error: IntCounter,
}

/// Rejection counters of one tenant, one per [`Rejection`].
pub struct Rejections([IntCounter; Rejection::ALL.len()]);

impl Rejections {
    pub fn get(&self, rejection: Rejection) -> &IntCounter {
        &self.0[rejection.index()]
    }
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

/// One tenant's series, created when first counted. A tenant removed by a
/// reload is retired: its series are deleted and none is created for it
/// afterwards, so a request still finishing on the old table cannot bring
/// them back.
pub struct TenantSeries {
    metrics: Arc<Metrics>,
    tenant: Arc<str>,
    retired: AtomicBool,
    rejections: OnceLock<Option<Rejections>>,
}

impl TenantSeries {
    pub fn new(metrics: Arc<Metrics>, tenant: Arc<str>) -> Arc<TenantSeries> {
        Arc::new(TenantSeries { metrics, tenant, retired: AtomicBool::new(false), rejections: OnceLock::new() })
    }

    /// The tenant's rejection counters; `None` once retired.
    pub fn rejections(&self) -> Option<&Rejections> {
        self.rejections.get_or_init(|| self.create(|m| m.rejections(&self.tenant))).as_ref()
    }

    fn create<T>(&self, make: impl FnOnce(&Metrics) -> T) -> Option<T> {
        let _order = self.metrics.lifecycle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (!self.retired.load(Ordering::Relaxed)).then(|| make(&self.metrics))
    }

    /// Deletes every series of the tenant, for good.
    pub fn retire(&self) {
        let _order = self.metrics.lifecycle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.retired.store(true, Ordering::Relaxed);
        self.metrics.forget_tenant(&self.tenant);
    }
}

/// One pool's series, created when the pool first counts something.
pub struct PoolSeries {
    tenant: Arc<TenantSeries>,
    signal: Signal,
    /// Boxed: the handles are held by idle pools too otherwise.
    handles: OnceLock<Option<Box<PoolMetrics>>>,
}

impl PoolSeries {
    pub fn new(tenant: Arc<TenantSeries>, signal: Signal) -> PoolSeries {
        PoolSeries { tenant, signal, handles: OnceLock::new() }
    }

    /// The pool's handles if it has counted anything (none are created).
    pub fn peek(&self) -> Option<&PoolMetrics> {
        self.handles.get()?.as_deref()
    }

    /// The pool's handles; `None` once its tenant is retired.
    pub fn get(&self) -> Option<&PoolMetrics> {
        self.handles
            .get_or_init(|| self.tenant.create(|m| Box::new(m.pool(&self.tenant.tenant, self.signal))))
            .as_deref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.tenant.metrics
    }
}

/// The usage gauges, in the order of [`Metrics::set_usage`]'s values.
pub const USAGE_GAUGES: [(&str, &str); 6] = [
    ("mirador_router_tenant_usage_storage_bytes", "Bytes on disk of the tenant's deployment (its own /metrics)."),
    ("mirador_router_tenant_usage_rows", "Rows stored by the tenant's deployment."),
    (
        "mirador_router_tenant_usage_rows_per_second",
        "Rows added to the tenant's deployment per second, between readings.",
    ),
    ("mirador_router_tenant_usage_active_series", "Active series of the tenant's VictoriaMetrics."),
    ("mirador_router_tenant_usage_memory_bytes", "Resident memory of the tenant's deployment's process."),
    ("mirador_router_tenant_usage_cpu_cores", "CPU of the tenant's deployment's process, in cores, between readings."),
];

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
            request_bytes: counter(
                "mirador_router_request_bytes_total",
                "Request body bytes received from clients.",
                &ts,
            ),
            response_bytes: counter("mirador_router_response_bytes_total", "Response body bytes sent to clients.", &ts),
            probe_duration: {
                let opts =
                    HistogramOpts::new("mirador_router_probe_duration_seconds", "Duration of active health probes.")
                        .buckets(DURATION_BUCKETS.to_vec());
                let histogram = Histogram::with_opts(opts).expect("valid metric");
                registry.register(Box::new(histogram.clone())).expect("unique metric");
                histogram
            },
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
            tls_certificate_expiry: {
                let opts = Opts::new(
                    "mirador_router_tls_certificate_expiry_timestamp_seconds",
                    "Unix time at which a certificate a TLS listener serves expires.",
                );
                let vec = GaugeVec::new(opts, &["listener", "subject"]).expect("valid metric");
                registry.register(Box::new(vec.clone())).expect("unique metric");
                vec
            },
            jwks_refreshes: counter(
                "mirador_router_jwks_refreshes_total",
                "Reads of the JWKS of [tenancy.jwt] on its refresh interval, by result.",
                &["result"],
            ),
            dns_resolutions: counter(
                "mirador_router_dns_resolutions_total",
                "Lookups of the deployments' dns names, by result (ok, failed).",
                &["result"],
            ),
            dns_names_failing: prometheus::IntGauge::new(
                "mirador_router_dns_names_failing",
                "Deployments' dns names whose latest lookup failed (their last good addresses serve).",
            )
            .expect("valid metric"),
            mirror_requests: counter(
                "mirador_router_mirror_requests_total",
                "Copies of ingest requests for a migration's other deployment, by result (ok, failed, dropped_queue_full, dropped_too_large).",
                &["tenant", "signal", "result"],
            ),
            mirror_sent: counter(
                "mirador_router_mirror_sent_total",
                "Requests sent to a migration's other deployment: a copy alone, or copies joined into one request.",
                &["tenant", "signal"],
            ),
            mirror_queue: {
                let opts = Opts::new("mirador_router_mirror_queue", "Copies queued or being sent to a migration's other deployment.");
                let vec = IntGaugeVec::new(opts, &["tenant", "signal"]).expect("valid metric");
                registry.register(Box::new(vec.clone())).expect("unique metric");
                vec
            },
            mirror_oldest: {
                let opts = Opts::new(
                    "mirador_router_mirror_queue_oldest_seconds",
                    "How long the oldest copy being sent to a migration's other deployment has waited.",
                );
                let vec = GaugeVec::new(opts, &["tenant", "signal"]).expect("valid metric");
                registry.register(Box::new(vec.clone())).expect("unique metric");
                vec
            },
            shadow_comparisons: counter(
                "mirador_router_shadow_comparisons_total",
                "Reads replayed to a migration's new deployment and compared, by result (match, mismatch, error).",
                &["tenant", "signal", "result"],
            ),
            usage: USAGE_GAUGES.map(|(name, help)| {
                let vec = GaugeVec::new(Opts::new(name, help), &["tenant", "signal"]).expect("valid metric");
                registry.register(Box::new(vec.clone())).expect("unique metric");
                vec
            }),
            registry,
            lifecycle: Mutex::new(()),
        };
        metrics.registry.register(Box::new(metrics.last_reload_success.clone())).expect("unique metric");
        metrics.registry.register(Box::new(metrics.dns_names_failing.clone())).expect("unique metric");
        let build_info =
            IntGaugeVec::new(Opts::new("mirador_router_build_info", "Always 1; the version in a label."), &["version"])
                .expect("valid metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics.registry.register(Box::new(build_info)).expect("unique metric");
        Arc::new(metrics)
    }

    /// The certificate expiry gauges, set by the edge on start and reload.
    pub fn tls_certificate_expiry(&self) -> &GaugeVec {
        &self.tls_certificate_expiry
    }

    /// Adds a collector of gauges read at scrape time (the routing table's).
    pub fn register(&self, collector: Box<dyn Collector>) {
        if let Err(e) = self.registry.register(collector) {
            tracing::warn!(error = %e, "metric collector not registered");
        }
    }

    /// Resolves the series of one pool.
    fn pool(&self, tenant: &str, signal: Signal) -> PoolMetrics {
        let labels = [tenant, signal.as_str()];
        PoolMetrics {
            requests: STATUS_CLASSES.map(|class| self.requests.with_label_values(&[tenant, signal.as_str(), class])),
            duration: self.duration.with_label_values(&labels),
            errors: UpstreamErrorKind::ALL
                .map(|k| self.upstream_errors.with_label_values(&[tenant, signal.as_str(), k.as_str()])),
            retries: self.retries.with_label_values(&labels),
            failovers: self.failovers.with_label_values(&labels),
            request_bytes: self.request_bytes.with_label_values(&labels),
            response_bytes: self.response_bytes.with_label_values(&labels),
            no_healthy_endpoint: self.rejections.with_label_values(&[tenant, Rejection::NoHealthyEndpoint.as_str()]),
            body_too_large: self.rejections.with_label_values(&[tenant, Rejection::BodyTooLarge.as_str()]),
        }
    }

    /// `mirador_router_upstream_attempt_duration_seconds` of one endpoint.
    pub fn attempt_duration(&self, url: &str) -> Histogram {
        self.attempt_duration.with_label_values(&[url])
    }

    /// One handle per rejection reason for `tenant` (a configured id or [`UNKNOWN_TENANT`]).
    fn rejections(&self, tenant: &str) -> Rejections {
        Rejections(Rejection::ALL.map(|reason| self.rejections.with_label_values(&[tenant, reason.as_str()])))
    }

    /// Replaces the usage gauges with one round's readings: per tenant and
    /// signal, the values in [`USAGE_GAUGES`] order (absent: no series).
    pub fn set_usage<'a>(&self, readings: impl Iterator<Item = (&'a str, Signal, [Option<f64>; 6])>) {
        let readings: Vec<_> = readings.collect();
        for (i, gauge) in self.usage.iter().enumerate() {
            gauge.reset();
            for (tenant, signal, values) in &readings {
                if let Some(value) = values[i] {
                    gauge.with_label_values(&[tenant, signal.as_str()]).set(value);
                }
            }
        }
    }

    /// The series of one migration queue.
    pub fn mirror(&self, tenant: &str, signal: Signal) -> MirrorMetrics {
        let result = |r: &str| self.mirror_requests.with_label_values(&[tenant, signal.as_str(), r]);
        MirrorMetrics {
            ok: result("ok"),
            failed: result("failed"),
            dropped_queue_full: result("dropped_queue_full"),
            dropped_too_large: result("dropped_too_large"),
            sent: self.mirror_sent.with_label_values(&[tenant, signal.as_str()]),
            queued: self.mirror_queue.with_label_values(&[tenant, signal.as_str()]),
            oldest_seconds: self.mirror_oldest.with_label_values(&[tenant, signal.as_str()]),
        }
    }

    /// The shadow-read comparison counters of one migration.
    pub fn shadow(&self, tenant: &str, signal: Signal) -> ShadowMetrics {
        let result = |r: &str| self.shadow_comparisons.with_label_values(&[tenant, signal.as_str(), r]);
        ShadowMetrics { matched: result("match"), mismatched: result("mismatch"), error: result("error") }
    }

    /// The counter of JWKS refreshes that succeeded (or failed).
    pub fn jwks_refreshes(&self, success: bool) -> IntCounter {
        self.jwks_refreshes.with_label_values(&[if success { "success" } else { "failure" }])
    }

    /// Counts one round of lookups of `dns` names, `ok` and `failed` of
    /// them; `failing` names of all in force fail now.
    pub fn dns_round(&self, ok: u64, failed: u64, failing: u64) {
        self.dns_resolutions.with_label_values(&["ok"]).inc_by(ok);
        self.dns_resolutions.with_label_values(&["failed"]).inc_by(failed);
        self.dns_names_failing.set(failing as i64);
    }

    pub fn reload(&self, success: bool) {
        self.reloads.with_label_values(&[if success { "success" } else { "failure" }]).inc();
        if success {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            self.last_reload_success.set(now.as_secs_f64());
        }
    }

    /// Deletes every series of a tenant that is gone from the config.
    fn forget_tenant(&self, tenant: &str) {
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
            for result in ["ok", "failed", "dropped_queue_full", "dropped_too_large"] {
                let _ = self.mirror_requests.remove_label_values(&[tenant, signal.as_str(), result]);
            }
            for result in ["match", "mismatch", "error"] {
                let _ = self.shadow_comparisons.remove_label_values(&[tenant, signal.as_str(), result]);
            }
            let _ = self.mirror_sent.remove_label_values(&labels);
            let _ = self.mirror_queue.remove_label_values(&labels);
            let _ = self.mirror_oldest.remove_label_values(&labels);
        }
        for reason in Rejection::ALL {
            let _ = self.rejections.remove_label_values(&[tenant, reason.as_str()]);
        }
    }

    /// Deletes the series of an endpoint no table lists any more.
    pub fn forget_endpoint(&self, url: &str) {
        let _ = self.attempt_duration.remove_label_values(&[url]);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render()).unwrap()
    }

    #[test]
    fn series_are_made_on_first_use_and_never_after_retirement() {
        let metrics = Metrics::new();
        let tenant = TenantSeries::new(metrics.clone(), "acme".into());
        let pool = PoolSeries::new(tenant.clone(), Signal::Logs);
        assert!(!exposition(&metrics).contains("acme"), "series before first use");

        pool.get().expect("metrics on").answered(204);
        tenant.rejections().expect("metrics on").get(Rejection::NoTenant).inc();
        let text = exposition(&metrics);
        assert!(
            text.contains(r#"mirador_router_requests_total{signal="logs",status_class="2xx",tenant="acme"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"mirador_router_rejections_total{reason="no_tenant",tenant="acme"} 1"#), "{text}");

        tenant.retire();
        assert!(!exposition(&metrics).contains("acme"), "series left after retirement");
        // A pool of the retired tenant that had not counted yet makes none.
        let late = PoolSeries::new(tenant.clone(), Signal::Traces);
        assert!(late.get().is_none());
        assert!(!exposition(&metrics).contains("acme"));
    }
}
