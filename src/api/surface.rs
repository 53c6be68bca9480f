//! The API surface: every Victoria* endpoint the router serves, per signal,
//! with the methods it takes and its class. Anything not here is 404 on
//! every listener.
//!
//! Sources (read from the backends' request handlers, README "The API
//! surface"): VictoriaMetrics `app/vminsert/main.go`, `app/vmselect/main.go`,
//! `app/vmstorage/main.go`, `lib/httpserver/httpserver.go`; VictoriaLogs
//! `app/vlinsert/*`, `app/vlselect/main.go`, `app/vlstorage/main.go`;
//! VictoriaTraces `app/vtinsert/*`, `app/vtselect/main.go`,
//! `app/vtselect/traces/{jaeger,tempo}/*.go`.
//!
//! Patterns: `/a/b` is exact; `/a/*` is `/a/` and the subtree under it;
//! `/a/*/b` is one non-empty segment in the middle.

use super::{Access, AdminOp, Signal};
use std::collections::HashMap;
use std::sync::LazyLock;

/// HTTP methods an endpoint takes, as bits.
pub type Methods = u8;
pub const GET: Methods = 1;
pub const HEAD: Methods = 2;
pub const POST: Methods = 4;
pub const PUT: Methods = 8;
pub const DELETE: Methods = 16;
/// Reads: GET with a query string, POST with a form (Grafana, vmalert).
const READ: Methods = GET | HEAD | POST;
/// Writes: a body sent by POST (remote write, import) or PUT.
const WRITE: Methods = POST | PUT;
/// Pages and their assets.
const PAGE: Methods = GET | HEAD;
/// Admin operations: VictoriaMetrics runs most on GET as on POST.
const ADMIN: Methods = GET | POST;

/// One endpoint of the surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub pattern: &'static str,
    pub signal: Signal,
    pub access: Access,
    pub methods: Methods,
    /// The operation `features.admin_api` must grant, for `admin` endpoints.
    pub op: Option<AdminOp>,
}

const fn ep(pattern: &'static str, signal: Signal, access: Access, methods: Methods) -> Endpoint {
    Endpoint { pattern, signal, access, methods, op: None }
}

const fn admin(pattern: &'static str, signal: Signal, op: AdminOp, methods: Methods) -> Endpoint {
    Endpoint { pattern, signal, access: Access::Admin, methods, op: Some(op) }
}

use Access::{Ingest, Query, Ui};
use Signal::{Logs, Metrics, Traces};

/// The surface, in lookup order: on the unified listener the first entry
/// that matches decides, so a path served by several backends (their own
/// `/metrics`, LogsQL on VictoriaTraces) means the first signal listed.
pub const SURFACE: &[Endpoint] = &[
    // VictoriaMetrics: ingest (vminsert)
    ep("/api/v1/write", Metrics, Ingest, WRITE),
    ep("/api/v1/push", Metrics, Ingest, WRITE),
    ep("/api/v1/import", Metrics, Ingest, WRITE),
    ep("/api/v1/import/csv", Metrics, Ingest, WRITE),
    ep("/api/v1/import/native", Metrics, Ingest, WRITE),
    ep("/api/v1/import/prometheus", Metrics, Ingest, WRITE),
    ep("/api/v1/import/prometheus/*", Metrics, Ingest, WRITE),
    ep("/write", Metrics, Ingest, WRITE),
    ep("/influx/write", Metrics, Ingest, WRITE),
    ep("/api/v2/write", Metrics, Ingest, WRITE),
    ep("/influx/api/v2/write", Metrics, Ingest, WRITE),
    ep("/opentelemetry/v1/metrics", Metrics, Ingest, WRITE),
    ep("/opentelemetry/api/v1/push", Metrics, Ingest, WRITE),
    ep("/insert/opentelemetry/v1/metrics", Metrics, Ingest, WRITE),
    ep("/datadog/api/v1/series", Metrics, Ingest, WRITE),
    ep("/datadog/api/v2/series", Metrics, Ingest, WRITE),
    ep("/datadog/api/beta/sketches", Metrics, Ingest, WRITE),
    ep("/datadog/api/v1/check_run", Metrics, Ingest, WRITE),
    ep("/datadog/intake", Metrics, Ingest, WRITE),
    ep("/datadog/api/v1/metadata", Metrics, Ingest, WRITE),
    ep("/datadog/api/v1/validate", Metrics, Ingest, READ),
    ep("/newrelic", Metrics, Ingest, READ),
    ep("/newrelic/inventory/deltas", Metrics, Ingest, WRITE),
    ep("/newrelic/infra/v2/metrics/events/bulk", Metrics, Ingest, WRITE),
    ep("/zabbixconnector/api/v1/history", Metrics, Ingest, WRITE),
    ep("/tags/tagSeries", Metrics, Ingest, WRITE),
    ep("/tags/tagMultiSeries", Metrics, Ingest, WRITE),
    // VictoriaMetrics: query (vmselect; all take the /prometheus/ and /graphite/ aliases)
    ep("/api/v1/query", Metrics, Query, READ),
    ep("/api/v1/query_range", Metrics, Query, READ),
    ep("/api/v1/series", Metrics, Query, READ),
    ep("/api/v1/series/count", Metrics, Query, READ),
    ep("/api/v1/labels", Metrics, Query, READ),
    ep("/api/v1/label/*/values", Metrics, Query, READ),
    ep("/api/v1/export", Metrics, Query, READ),
    ep("/api/v1/export/csv", Metrics, Query, READ),
    ep("/api/v1/export/native", Metrics, Query, READ),
    ep("/api/v1/status/tsdb", Metrics, Query, READ),
    ep("/api/v1/status/active_queries", Metrics, Query, READ),
    ep("/api/v1/status/top_queries", Metrics, Query, READ),
    ep("/api/v1/status/buildinfo", Metrics, Query, READ),
    ep("/api/v1/status/metric_names_stats", Metrics, Query, READ),
    ep("/api/v1/metadata", Metrics, Query, READ),
    ep("/api/v1/query_exemplars", Metrics, Query, READ),
    ep("/api/v1/rules", Metrics, Query, READ),
    ep("/api/v1/alerts", Metrics, Query, READ),
    ep("/api/v1/notifiers", Metrics, Query, READ),
    ep("/federate", Metrics, Query, READ),
    ep("/query", Metrics, Query, READ),
    ep("/influx/query", Metrics, Query, READ),
    ep("/metrics/find", Metrics, Query, READ),
    ep("/metrics/expand", Metrics, Query, READ),
    ep("/metrics/index.json", Metrics, Query, READ),
    ep("/tags", Metrics, Query, READ),
    ep("/tags/findSeries", Metrics, Query, READ),
    ep("/tags/autoComplete/tags", Metrics, Query, READ),
    ep("/tags/autoComplete/values", Metrics, Query, READ),
    ep("/functions", Metrics, Query, READ),
    ep("/render", Metrics, Query, READ),
    // VictoriaMetrics: UI
    ep("/vmui", Metrics, Ui, PAGE),
    ep("/vmui/*", Metrics, Ui, PAGE),
    ep("/graph", Metrics, Ui, PAGE),
    ep("/graph/*", Metrics, Ui, PAGE),
    // VictoriaMetrics: admin
    admin("/api/v1/admin/tsdb/delete_series", Metrics, AdminOp::DeleteSeries, ADMIN),
    admin("/tags/delSeries", Metrics, AdminOp::DeleteSeries, ADMIN),
    admin("/api/v1/admin/tsdb/snapshot", Metrics, AdminOp::Snapshot, ADMIN),
    admin("/snapshot/create", Metrics, AdminOp::Snapshot, ADMIN),
    admin("/snapshot/list", Metrics, AdminOp::Snapshot, ADMIN),
    admin("/snapshot/delete", Metrics, AdminOp::Snapshot, ADMIN | DELETE),
    admin("/snapshot/delete_all", Metrics, AdminOp::Snapshot, ADMIN | DELETE),
    admin("/internal/force_merge", Metrics, AdminOp::ForceMerge, ADMIN),
    admin("/internal/force_flush", Metrics, AdminOp::ForceFlush, ADMIN),
    admin("/internal/resetRollupResultCache", Metrics, AdminOp::ResetCache, ADMIN),
    admin("/-/reload", Metrics, AdminOp::Reload, ADMIN),
    admin("/config", Metrics, AdminOp::Config, ADMIN),
    admin("/api/v1/status/config", Metrics, AdminOp::Config, ADMIN),
    admin("/targets", Metrics, AdminOp::Targets, ADMIN),
    admin("/api/v1/targets", Metrics, AdminOp::Targets, ADMIN),
    admin("/service-discovery", Metrics, AdminOp::Targets, ADMIN),
    admin("/debug/pprof/*", Metrics, AdminOp::Pprof, ADMIN),
    admin("/flags", Metrics, AdminOp::Flags, ADMIN),
    admin("/metrics", Metrics, AdminOp::Metrics, ADMIN),
    // VictoriaLogs: ingest (every /insert/ path, the Elasticsearch probes included)
    ep("/insert/jsonline", Logs, Ingest, WRITE),
    ep("/insert/loki/api/v1/push", Logs, Ingest, WRITE),
    ep("/insert/loki/ready", Logs, Ingest, READ),
    ep("/insert/elasticsearch", Logs, Ingest, READ | PUT),
    ep("/insert/elasticsearch/", Logs, Ingest, READ | PUT),
    ep("/insert/elasticsearch/_bulk", Logs, Ingest, WRITE),
    ep("/insert/elasticsearch/_license", Logs, Ingest, READ),
    ep("/insert/elasticsearch/_nodes", Logs, Ingest, READ),
    ep("/insert/elasticsearch/_nodes/*", Logs, Ingest, READ),
    ep("/insert/elasticsearch/_ilm/*", Logs, Ingest, READ | PUT),
    ep("/insert/elasticsearch/_index_template/*", Logs, Ingest, READ | PUT),
    ep("/insert/elasticsearch/_ingest/*", Logs, Ingest, READ | PUT),
    ep("/insert/opentelemetry/v1/logs", Logs, Ingest, WRITE),
    ep("/insert/journald/upload", Logs, Ingest, WRITE),
    ep("/insert/datadog/api/v2/logs", Logs, Ingest, WRITE),
    ep("/insert/datadog/api/v1/validate", Logs, Ingest, READ),
    ep("/insert/splunk/services/collector/event", Logs, Ingest, WRITE),
    ep("/insert/splunk/services/collector/event/1.0", Logs, Ingest, WRITE),
    ep("/insert/splunk/services/collector/health", Logs, Ingest, READ),
    ep("/insert/ready", Logs, Ingest, READ),
    // VictoriaLogs: query
    ep("/select/logsql/query", Logs, Query, READ),
    ep("/select/logsql/tail", Logs, Query, READ),
    ep("/select/logsql/hits", Logs, Query, READ),
    ep("/select/logsql/facets", Logs, Query, READ),
    ep("/select/logsql/field_names", Logs, Query, READ),
    ep("/select/logsql/field_values", Logs, Query, READ),
    ep("/select/logsql/stats_query", Logs, Query, READ),
    ep("/select/logsql/stats_query_range", Logs, Query, READ),
    ep("/select/logsql/stream_field_names", Logs, Query, READ),
    ep("/select/logsql/stream_field_values", Logs, Query, READ),
    ep("/select/logsql/stream_ids", Logs, Query, READ),
    ep("/select/logsql/streams", Logs, Query, READ),
    ep("/select/logsql/query_time_range", Logs, Query, READ),
    ep("/select/buildinfo", Logs, Query, PAGE),
    // VictoriaLogs: UI and admin
    ep("/select/vmui", Logs, Ui, PAGE),
    ep("/select/vmui/*", Logs, Ui, PAGE),
    admin("/delete/run_task", Logs, AdminOp::DeleteSeries, ADMIN),
    admin("/delete/stop_task", Logs, AdminOp::DeleteSeries, ADMIN),
    admin("/delete/active_tasks", Logs, AdminOp::DeleteSeries, ADMIN),
    admin("/internal/force_merge", Logs, AdminOp::ForceMerge, ADMIN),
    admin("/internal/force_flush", Logs, AdminOp::ForceFlush, ADMIN),
    admin("/debug/pprof/*", Logs, AdminOp::Pprof, ADMIN),
    admin("/flags", Logs, AdminOp::Flags, ADMIN),
    admin("/metrics", Logs, AdminOp::Metrics, ADMIN),
    // VictoriaTraces: ingest and query
    ep("/insert/opentelemetry/v1/traces", Traces, Ingest, WRITE),
    ep("/insert/ready", Traces, Ingest, READ),
    ep("/select/jaeger/api/services", Traces, Query, READ),
    ep("/select/jaeger/api/services/*/operations", Traces, Query, READ),
    ep("/select/jaeger/api/traces", Traces, Query, READ),
    ep("/select/jaeger/api/traces/*", Traces, Query, READ),
    ep("/select/jaeger/api/dependencies", Traces, Query, READ),
    ep("/select/tempo/api/echo", Traces, Query, READ),
    ep("/select/tempo/api/search", Traces, Query, READ),
    ep("/select/tempo/api/v2/search/tags", Traces, Query, READ),
    ep("/select/tempo/api/v2/search/tag/*/values", Traces, Query, READ),
    ep("/select/tempo/api/metrics/query_range", Traces, Query, READ),
    ep("/select/tempo/api/traces/*", Traces, Query, READ),
    ep("/select/tempo/api/v2/traces/*", Traces, Query, READ),
    ep("/select/logsql/query", Traces, Query, READ),
    ep("/select/logsql/tail", Traces, Query, READ),
    ep("/select/logsql/hits", Traces, Query, READ),
    ep("/select/logsql/facets", Traces, Query, READ),
    ep("/select/logsql/field_names", Traces, Query, READ),
    ep("/select/logsql/field_values", Traces, Query, READ),
    ep("/select/logsql/stats_query", Traces, Query, READ),
    ep("/select/logsql/stats_query_range", Traces, Query, READ),
    ep("/select/logsql/stream_field_names", Traces, Query, READ),
    ep("/select/logsql/stream_field_values", Traces, Query, READ),
    ep("/select/logsql/stream_ids", Traces, Query, READ),
    ep("/select/logsql/streams", Traces, Query, READ),
    ep("/select/buildinfo", Traces, Query, PAGE),
    // VictoriaTraces: UI and admin
    ep("/select/vmui", Traces, Ui, PAGE),
    ep("/select/vmui/*", Traces, Ui, PAGE),
    admin("/delete/run_task", Traces, AdminOp::DeleteSeries, ADMIN),
    admin("/delete/stop_task", Traces, AdminOp::DeleteSeries, ADMIN),
    admin("/delete/active_tasks", Traces, AdminOp::DeleteSeries, ADMIN),
    admin("/internal/force_merge", Traces, AdminOp::ForceMerge, ADMIN),
    admin("/internal/force_flush", Traces, AdminOp::ForceFlush, ADMIN),
    admin("/debug/pprof/*", Traces, AdminOp::Pprof, ADMIN),
    admin("/flags", Traces, AdminOp::Flags, ADMIN),
    admin("/metrics", Traces, AdminOp::Metrics, ADMIN),
];

impl Endpoint {
    /// Whether this endpoint's pattern matches `path` (canonical, alias removed).
    pub fn matches(&self, path: &str) -> bool {
        match self.pattern.split_once('*') {
            None => path == self.pattern,
            Some((prefix, "")) => path.starts_with(prefix),
            Some((prefix, suffix)) => path
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .is_some_and(|segment| !segment.is_empty() && !segment.contains('/')),
        }
    }

    pub fn allows(&self, method: &http::Method) -> bool {
        self.methods & method_bit(method) != 0
    }

    /// The methods as the README and `Allow` headers write them.
    pub fn method_names(&self) -> String {
        [(GET, "GET"), (HEAD, "HEAD"), (POST, "POST"), (PUT, "PUT"), (DELETE, "DELETE")]
            .into_iter()
            .filter(|(bit, _)| self.methods & bit != 0)
            .map(|(_, name)| name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn method_bit(method: &http::Method) -> Methods {
    match *method {
        http::Method::GET => GET,
        http::Method::HEAD => HEAD,
        http::Method::POST => POST,
        http::Method::PUT => PUT,
        http::Method::DELETE => DELETE,
        _ => 0,
    }
}

/// The endpoints by exact pattern, and those with a `*`, each in
/// [`SURFACE`] order: a lookup is one hash and a scan of the few patterns.
struct Index {
    exact: HashMap<&'static str, Vec<&'static Endpoint>>,
    patterns: Vec<&'static Endpoint>,
}

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    let mut index = Index { exact: HashMap::new(), patterns: Vec::new() };
    for endpoint in SURFACE {
        if endpoint.pattern.contains('*') {
            index.patterns.push(endpoint);
        } else {
            index.exact.entry(endpoint.pattern).or_default().push(endpoint);
        }
    }
    index
});

/// Builds the lookup index now (it is built once, at the first lookup
/// otherwise): the server calls it before it serves.
pub fn prepare() {
    LazyLock::force(&INDEX);
}

/// The first endpoint of the surface for `path` (canonical, alias removed),
/// among those of `signal` when given; exact patterns before `*` ones
/// (no path matches both: a test checks it). An aliased path
/// (`/prometheus/...`) is a VictoriaMetrics path: only metrics endpoints
/// take it.
pub fn lookup(path: &str, signal: Option<Signal>, aliased: bool) -> Option<&'static Endpoint> {
    let wanted = |endpoint: &&&'static Endpoint| {
        signal.is_none_or(|s| endpoint.signal == s) && (!aliased || endpoint.signal == Signal::Metrics)
    };
    let index = &*INDEX;
    if let Some(found) = index.exact.get(path).and_then(|endpoints| endpoints.iter().find(wanted)) {
        return Some(found);
    }
    index.patterns.iter().filter(wanted).find(|endpoint| endpoint.matches(path)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A concrete path for a pattern.
    fn concrete(pattern: &str) -> String {
        pattern.replace('*', "x")
    }

    #[test]
    fn every_entry_is_found_for_its_own_path() {
        for endpoint in SURFACE {
            let path = concrete(endpoint.pattern);
            let found = lookup(&path, Some(endpoint.signal), false).expect(endpoint.pattern);
            assert_eq!(found, endpoint, "{path} on {}", endpoint.signal);
        }
    }

    #[test]
    fn no_path_matches_an_exact_and_a_pattern_entry_of_one_signal() {
        for exact in SURFACE.iter().filter(|e| !e.pattern.contains('*')) {
            for pattern in SURFACE.iter().filter(|e| e.pattern.contains('*') && e.signal == exact.signal) {
                assert!(!pattern.matches(exact.pattern), "{} is also {}", exact.pattern, pattern.pattern);
            }
        }
    }

    #[test]
    fn the_unified_listener_takes_the_first_signal_that_serves_a_path() {
        assert_eq!(lookup("/select/logsql/query", None, false).unwrap().signal, Signal::Logs);
        assert_eq!(lookup("/select/logsql/query", Some(Signal::Traces), false).unwrap().signal, Signal::Traces);
        assert_eq!(lookup("/metrics", None, false).unwrap().signal, Signal::Metrics);
        assert_eq!(lookup("/metrics", Some(Signal::Logs), false).unwrap().op, Some(AdminOp::Metrics));
    }

    #[test]
    fn patterns_match_what_they_say_and_no_more() {
        let label = lookup("/api/v1/label/job/values", None, false).unwrap();
        assert_eq!(label.pattern, "/api/v1/label/*/values");
        for miss in ["/api/v1/label//values", "/api/v1/label/a/b/values", "/api/v1/label/values", "/vmui/../x"] {
            assert!(lookup(miss, None, false).is_none_or(|e| e.pattern != "/api/v1/label/*/values"), "{miss}");
        }
        assert!(lookup("/vmui/", None, false).is_some());
        assert!(lookup("/debug/pprof/", None, false).is_some(), "a subtree's index");
        assert!(lookup("/debug/pprof", None, false).is_none(), "a subtree needs its slash");
        for unknown in [
            "/",
            "/api/v1/writer",
            "/API/V1/WRITE",
            "/api/v1/query/",
            "/select/logsql",
            "/target_response",
            "/vmalert/x",
        ] {
            assert_eq!(lookup(unknown, None, false), None, "{unknown}");
        }
    }

    #[test]
    fn aliases_are_for_victoria_metrics_only() {
        assert!(lookup("/api/v1/query", None, true).is_some());
        assert_eq!(lookup("/select/logsql/query", None, true), None);
        assert_eq!(lookup("/insert/jsonline", Some(Signal::Logs), true), None);
    }

    #[test]
    fn methods_are_bounded() {
        let write = lookup("/api/v1/write", None, false).unwrap();
        assert!(write.allows(&http::Method::POST) && !write.allows(&http::Method::GET));
        let query = lookup("/api/v1/query", None, false).unwrap();
        assert!(query.allows(&http::Method::GET) && query.allows(&http::Method::POST));
        assert!(!query.allows(&http::Method::DELETE) && !query.allows(&http::Method::OPTIONS));
        assert_eq!(query.method_names(), "GET, HEAD, POST");
    }
}
