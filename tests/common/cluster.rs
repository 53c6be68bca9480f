//! Strict loopback stand-ins for a VictoriaMetrics cluster's vminsert and
//! vmselect (nothing real is packaged for Debian): each parses the tenant
//! out of the path as the cluster does and refuses what the cluster
//! refuses. Written from the cluster docs ("URL format", "Multitenancy"),
//! apart from the router's own table, so the two check each other.
//!
//! vminsert serves `/insert/<id>/<suffix>`, vmselect `/select/<id>/<suffix>`
//! and `/delete/<id>/<suffix>`; `<id>` is `<u32>`, `<u32>:<u32>` or
//! `multitenant`; anything else is 400 "cannot parse accountID". An unknown
//! suffix is 404. Health probes (`/health`) are answered apart.

use super::upstream::Upstream;

/// A request path as a cluster service reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPath {
    /// `insert`, `select` or `delete`.
    pub service: String,
    /// `a:p` (project 0 written out), or `multitenant`.
    pub tenant: String,
    /// The path after the tenant segment, with its leading `/`.
    pub suffix: String,
}

/// Splits `/<service>/<id>/<suffix>`; the id as the cluster parses it.
pub fn parse(path: &str) -> Result<ClusterPath, (u16, String)> {
    let path = path.split('?').next().unwrap_or("");
    let mut parts = path.splitn(4, '/').skip(1);
    let (Some(service), Some(id)) = (parts.next(), parts.next()) else {
        return Err((404, format!("unsupported path requested: {path:?}")));
    };
    let suffix = format!("/{}", parts.next().unwrap_or(""));
    let tenant = if id == "multitenant" {
        id.to_string()
    } else {
        let mut ids = id.splitn(2, ':');
        let number = |s: Option<&str>| s.unwrap_or("0").parse::<u32>();
        match (number(ids.next()), number(ids.next())) {
            (Ok(account), Ok(project)) if !id.is_empty() => format!("{account}:{project}"),
            _ => return Err((400, format!("cannot parse accountID from {id:?}"))),
        }
    };
    Ok(ClusterPath { service: service.to_string(), tenant, suffix })
}

const INSERT_SUFFIXES: &[&str] = &[
    "/prometheus",
    "/prometheus/api/v1/write",
    "/prometheus/api/v1/import",
    "/prometheus/api/v1/import/csv",
    "/prometheus/api/v1/import/native",
    "/prometheus/api/v1/import/prometheus",
    "/influx/write",
    "/influx/api/v2/write",
    "/influx/query",
    "/opentelemetry/v1/metrics",
    "/opentelemetry/api/v1/push",
    "/datadog/api/v1/series",
    "/datadog/api/v2/series",
    "/datadog/api/beta/sketches",
    "/datadog/api/v1/check_run",
    "/datadog/intake",
    "/datadog/api/v1/metadata",
    "/datadog/api/v1/validate",
    "/newrelic",
    "/newrelic/inventory/deltas",
    "/newrelic/infra/v2/metrics/events/bulk",
    "/zabbixconnector/api/v1/history",
];

fn insert_serves(suffix: &str) -> bool {
    INSERT_SUFFIXES.contains(&suffix) || suffix.starts_with("/prometheus/api/v1/import/prometheus/")
}

fn select_serves(suffix: &str) -> bool {
    const PROMETHEUS_API: &[&str] = &[
        "query",
        "query_range",
        "series",
        "series/count",
        "labels",
        "export",
        "export/csv",
        "export/native",
        "metadata",
        "query_exemplars",
        "rules",
        "alerts",
        "notifiers",
    ];
    const GRAPHITE: &[&str] = &["metrics/find", "metrics/expand", "metrics/index.json", "tags", "functions", "render"];
    if let Some(api) = suffix.strip_prefix("/prometheus/api/v1/") {
        let label = api.strip_prefix("label/").and_then(|rest| rest.strip_suffix("/values"));
        return PROMETHEUS_API.contains(&api)
            || api.starts_with("status/")
            || label.is_some_and(|name| !name.is_empty() && !name.contains('/'));
    }
    if let Some(graphite) = suffix.strip_prefix("/graphite/") {
        return GRAPHITE.contains(&graphite) || graphite.starts_with("tags/");
    }
    matches!(suffix, "/prometheus/federate" | "/vmui" | "/prometheus/graph")
        || suffix.starts_with("/vmui/")
        || suffix.starts_with("/prometheus/graph/")
}

pub fn refuses(path: &str, services: &[&str]) -> Option<(u16, String)> {
    let parsed = match parse(path) {
        Ok(parsed) => parsed,
        Err(refusal) => return Some(refusal),
    };
    let served = services.contains(&parsed.service.as_str())
        && match parsed.service.as_str() {
            "insert" => insert_serves(&parsed.suffix),
            "select" => select_serves(&parsed.suffix),
            "delete" => parsed.suffix == "/prometheus/api/v1/admin/tsdb/delete_series",
            _ => false,
        };
    (!served).then(|| (404, format!("unsupported path requested: {path:?}")))
}

/// A vminsert stand-in named `name`.
pub async fn vminsert(name: &str) -> Upstream {
    let upstream = Upstream::start_strict(name, |path| refuses(path, &["insert"])).await;
    upstream.set_kind("vminsert");
    upstream
}

/// A vmselect stand-in named `name`.
pub async fn vmselect(name: &str) -> Upstream {
    let upstream = Upstream::start_strict(name, |path| refuses(path, &["select", "delete"])).await;
    upstream.set_kind("vmselect");
    upstream
}
