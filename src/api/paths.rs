//! Which signal a request is: the one path table of the product (README,
//! "Which signal a request is").
//!
//! A drop-in listener decides the signal by itself; on the unified listener
//! the longest matching entry of [`PATH_TABLE`] decides, and a path that
//! matches nothing is unroutable. Classification is a pure function of the
//! listener and the path: no allocation, no lookup outside this table.

use super::{Access, Classified, Listener, Signal};

/// How a [`PATH_TABLE`] pattern matches.
///
/// `"/x"` is exact, `"/x*"` is a raw prefix (`/api/v1/import*` takes
/// `/api/v1/import/csv`), and `"/x/*"` is a subtree (`/influx/*` takes
/// `/influx/write`, not `/influxdb`).
pub const PATH_TABLE: &[(&str, Signal, Access)] = &[
    // metrics ingest
    ("/api/v1/write", Signal::Metrics, Access::Ingest),
    ("/api/v1/push", Signal::Metrics, Access::Ingest),
    ("/api/v1/import*", Signal::Metrics, Access::Ingest),
    ("/prometheus/api/v1/write", Signal::Metrics, Access::Ingest),
    ("/prometheus/api/v1/import*", Signal::Metrics, Access::Ingest),
    ("/write", Signal::Metrics, Access::Ingest),
    ("/influx/*", Signal::Metrics, Access::Ingest),
    ("/api/v2/write", Signal::Metrics, Access::Ingest),
    ("/opentelemetry/v1/metrics", Signal::Metrics, Access::Ingest),
    ("/insert/opentelemetry/v1/metrics", Signal::Metrics, Access::Ingest),
    ("/datadog/*", Signal::Metrics, Access::Ingest),
    ("/newrelic/*", Signal::Metrics, Access::Ingest),
    // metrics query
    ("/api/v1/query", Signal::Metrics, Access::Query),
    ("/api/v1/query_range", Signal::Metrics, Access::Query),
    ("/api/v1/series", Signal::Metrics, Access::Query),
    ("/api/v1/labels", Signal::Metrics, Access::Query),
    ("/api/v1/label/*", Signal::Metrics, Access::Query),
    ("/api/v1/export*", Signal::Metrics, Access::Query),
    ("/api/v1/status/*", Signal::Metrics, Access::Query),
    ("/api/v1/metadata", Signal::Metrics, Access::Query),
    ("/prometheus/*", Signal::Metrics, Access::Query),
    ("/graphite/*", Signal::Metrics, Access::Query),
    ("/federate", Signal::Metrics, Access::Query),
    ("/vmui*", Signal::Metrics, Access::Query),
    // logs ingest
    ("/insert/jsonline", Signal::Logs, Access::Ingest),
    ("/insert/loki/*", Signal::Logs, Access::Ingest),
    ("/insert/elasticsearch/*", Signal::Logs, Access::Ingest),
    ("/insert/opentelemetry/v1/logs", Signal::Logs, Access::Ingest),
    ("/insert/journald/*", Signal::Logs, Access::Ingest),
    ("/insert/datadog/*", Signal::Logs, Access::Ingest),
    // logs query
    ("/select/logsql/*", Signal::Logs, Access::Query),
    // traces ingest
    ("/insert/opentelemetry/v1/traces", Signal::Traces, Access::Ingest),
    // traces query
    ("/select/jaeger/*", Signal::Traces, Access::Query),
];

/// The signal and access of `path` by the longest matching [`PATH_TABLE`]
/// entry, or `None` when no entry matches.
pub fn classify_path(path: &str) -> Option<(Signal, Access)> {
    let mut best: Option<(usize, Signal, Access)> = None;
    for &(pattern, signal, access) in PATH_TABLE {
        let Some(len) = match_len(pattern, path) else {
            continue;
        };
        if best.is_none_or(|(best_len, _, _)| len > best_len) {
            best = Some((len, signal, access));
        }
    }
    best.map(|(_, signal, access)| (signal, access))
}

/// What a request arriving on `listener` for `path` is, or `None` when it
/// is unroutable. This is the classification the proxy acts on.
pub fn classify(listener: Listener, path: &str) -> Option<Classified> {
    let listed = classify_path(path);
    match (listener, listed) {
        (Listener::DropIn(signal), listed) => {
            let access = listed.map_or(Access::Query, |(_, access)| access);
            Some(Classified { signal, access, listed: listed.is_some() })
        }
        (Listener::Unified, Some((signal, access))) => Some(Classified { signal, access, listed: true }),
        (Listener::Unified, None) => None,
    }
}

/// Length of the literal part of `pattern` when it matches `path`.
fn match_len(pattern: &str, path: &str) -> Option<usize> {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix).then_some(prefix.len()),
        None => (path == pattern).then_some(pattern.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path of the README table, written as a client sends it.
    const EXPECTED: &[(&str, Signal, Access)] = &[
        ("/api/v1/write", Signal::Metrics, Access::Ingest),
        ("/api/v1/push", Signal::Metrics, Access::Ingest),
        ("/api/v1/import", Signal::Metrics, Access::Ingest),
        ("/api/v1/import/prometheus", Signal::Metrics, Access::Ingest),
        ("/api/v1/import/csv", Signal::Metrics, Access::Ingest),
        ("/api/v1/import/native", Signal::Metrics, Access::Ingest),
        ("/prometheus/api/v1/write", Signal::Metrics, Access::Ingest),
        ("/prometheus/api/v1/import/prometheus", Signal::Metrics, Access::Ingest),
        ("/write", Signal::Metrics, Access::Ingest),
        ("/influx/write", Signal::Metrics, Access::Ingest),
        ("/influx/api/v2/write", Signal::Metrics, Access::Ingest),
        ("/api/v2/write", Signal::Metrics, Access::Ingest),
        ("/opentelemetry/v1/metrics", Signal::Metrics, Access::Ingest),
        ("/insert/opentelemetry/v1/metrics", Signal::Metrics, Access::Ingest),
        ("/datadog/api/v2/series", Signal::Metrics, Access::Ingest),
        ("/newrelic/infra/v2/metrics/events/bulk", Signal::Metrics, Access::Ingest),
        ("/api/v1/query", Signal::Metrics, Access::Query),
        ("/api/v1/query_range", Signal::Metrics, Access::Query),
        ("/api/v1/series", Signal::Metrics, Access::Query),
        ("/api/v1/labels", Signal::Metrics, Access::Query),
        ("/api/v1/label/job/values", Signal::Metrics, Access::Query),
        ("/api/v1/export", Signal::Metrics, Access::Query),
        ("/api/v1/export/native", Signal::Metrics, Access::Query),
        ("/api/v1/status/tsdb", Signal::Metrics, Access::Query),
        ("/api/v1/metadata", Signal::Metrics, Access::Query),
        ("/prometheus/api/v1/query", Signal::Metrics, Access::Query),
        ("/graphite/metrics/find", Signal::Metrics, Access::Query),
        ("/federate", Signal::Metrics, Access::Query),
        ("/vmui", Signal::Metrics, Access::Query),
        ("/vmui/", Signal::Metrics, Access::Query),
        ("/insert/jsonline", Signal::Logs, Access::Ingest),
        ("/insert/loki/api/v1/push", Signal::Logs, Access::Ingest),
        ("/insert/elasticsearch/_bulk", Signal::Logs, Access::Ingest),
        ("/insert/opentelemetry/v1/logs", Signal::Logs, Access::Ingest),
        ("/insert/journald/upload", Signal::Logs, Access::Ingest),
        ("/insert/datadog/api/v2/logs", Signal::Logs, Access::Ingest),
        ("/select/logsql/query", Signal::Logs, Access::Query),
        ("/insert/opentelemetry/v1/traces", Signal::Traces, Access::Ingest),
        ("/select/jaeger/api/traces", Signal::Traces, Access::Query),
    ];

    #[test]
    fn every_product_path_has_its_signal_and_access() {
        for &(path, signal, access) in EXPECTED {
            assert_eq!(classify_path(path), Some((signal, access)), "path {path}");
        }
    }

    #[test]
    fn near_misses_are_unroutable() {
        for path in [
            "/",
            "",
            "/api/v1/writer",
            "/api/v1/write/",
            "/api/v1/queryx",
            "/api/v1/label",
            "/api/v1",
            "/influx",
            "/influxdb/write",
            "/prometheusx/api",
            "/prometheus",
            "/insert/jsonlines",
            "/insert/loki",
            "/insert/opentelemetry/v1/spans",
            "/select/logsql",
            "/select/jaeger",
            "/select/0:0/prometheus/api/v1/query",
            "/insert/0:0/prometheus/api/v1/write",
            "/health",
            "/metrics",
            "/datadog",
            "/API/V1/WRITE",
        ] {
            assert_eq!(classify_path(path), None, "path {path:?}");
        }
    }

    #[test]
    fn longest_prefix_wins_over_a_shorter_subtree() {
        // `/prometheus/*` is a query subtree, but its write path is ingest.
        assert_eq!(classify_path("/prometheus/api/v1/write"), Some((Signal::Metrics, Access::Ingest)));
        // Logs' Datadog path is not metrics' `/datadog/*`.
        assert_eq!(classify_path("/insert/datadog/api/v2/logs"), Some((Signal::Logs, Access::Ingest)));
    }

    #[test]
    fn drop_in_listener_takes_every_path() {
        for signal in Signal::ALL {
            let unlisted = Classified { signal, access: Access::Query, listed: false };
            assert_eq!(classify(Listener::DropIn(signal), "/anything"), Some(unlisted));
            let listed = Classified { signal, access: Access::Query, listed: true };
            assert_eq!(classify(Listener::DropIn(signal), "/select/logsql/query"), Some(listed));
            let write = Classified { signal, access: Access::Ingest, listed: true };
            assert_eq!(classify(Listener::DropIn(signal), "/api/v1/write"), Some(write));
        }
        assert_eq!(classify(Listener::Unified, "/anything"), None);
    }
}
