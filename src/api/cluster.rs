//! Shared clusters: Victoria's numeric tenant ids, and the path each
//! metrics endpoint of the surface takes on a VictoriaMetrics cluster.
//!
//! A cluster names the tenant in the path: vminsert serves
//! `/insert/<account>:<project>/<suffix>`, vmselect
//! `/select/<account>:<project>/<suffix>` and
//! `/delete/<account>:<project>/<suffix>`. VictoriaLogs and VictoriaTraces
//! take it from the `AccountID`/`ProjectID` headers instead, and keep their
//! paths. Sources: VictoriaMetrics docs, "Cluster version: URL format" and
//! "Multitenancy"; VictoriaLogs and VictoriaTraces docs, "Multitenancy".
//!
//! [`CLUSTER_FORMS`] is the one table of rewrites (the README prints it; a
//! test keeps the two in step). A metrics endpoint with no entry has no
//! tenant-scoped form on a cluster (scrape targets, config, snapshots, force
//! merge, pprof, flags: one answer for every tenant of the cluster), and is
//! refused for a shared tenant.

use super::surface::{Endpoint, SURFACE};
use super::{AdminOp, Signal};
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

/// A tenant of a multi-tenant Victoria* cluster: `accountID:projectID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VictoriaTenant {
    pub account: u32,
    pub project: u32,
}

impl fmt::Display for VictoriaTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.account, self.project)
    }
}

/// The cluster service an endpoint's cluster form is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// vminsert: `/insert/<id>/...`.
    Insert,
    /// vmselect: `/select/<id>/...`.
    Select,
    /// vmselect's deletion API: `/delete/<id>/...`.
    Delete,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Insert => "insert",
            Service::Select => "select",
            Service::Delete => "delete",
        }
    }

    /// Whether the service runs on vminsert (else on vmselect).
    pub fn on_insert(self) -> bool {
        self == Service::Insert
    }
}

/// How one surface endpoint (by pattern) is written for a cluster:
/// `/<service>/<id>` + `add` + the canonical path without `strip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterForm {
    pub pattern: &'static str,
    pub service: Service,
    pub strip: &'static str,
    pub add: &'static str,
}

const fn form(pattern: &'static str, service: Service, add: &'static str) -> ClusterForm {
    ClusterForm { pattern, service, strip: "", add }
}

use Service::{Delete, Insert, Select};

/// Every metrics endpoint of the surface that has a cluster form. Ingest
/// goes to vminsert under its native suffix (`prometheus/...`, `influx/...`,
/// `opentelemetry/...`, `datadog/...`, `newrelic/...`); queries, UI and
/// series deletion to vmselect (`prometheus/...`, `graphite/...`, `vmui/`).
pub const CLUSTER_FORMS: &[ClusterForm] = &[
    // vminsert
    form("/api/v1/write", Insert, "/prometheus"),
    form("/api/v1/import", Insert, "/prometheus"),
    form("/api/v1/import/csv", Insert, "/prometheus"),
    form("/api/v1/import/native", Insert, "/prometheus"),
    form("/api/v1/import/prometheus", Insert, "/prometheus"),
    form("/api/v1/import/prometheus/*", Insert, "/prometheus"),
    form("/write", Insert, "/influx"),
    form("/influx/write", Insert, ""),
    form("/api/v2/write", Insert, "/influx"),
    form("/influx/api/v2/write", Insert, ""),
    form("/query", Insert, "/influx"),
    form("/influx/query", Insert, ""),
    form("/opentelemetry/v1/metrics", Insert, ""),
    form("/opentelemetry/api/v1/push", Insert, ""),
    ClusterForm { pattern: "/insert/opentelemetry/v1/metrics", service: Insert, strip: "/insert", add: "" },
    form("/datadog/api/v1/series", Insert, ""),
    form("/datadog/api/v2/series", Insert, ""),
    form("/datadog/api/beta/sketches", Insert, ""),
    form("/datadog/api/v1/check_run", Insert, ""),
    form("/datadog/intake", Insert, ""),
    form("/datadog/api/v1/metadata", Insert, ""),
    form("/datadog/api/v1/validate", Insert, ""),
    form("/newrelic", Insert, ""),
    form("/newrelic/inventory/deltas", Insert, ""),
    form("/newrelic/infra/v2/metrics/events/bulk", Insert, ""),
    form("/zabbixconnector/api/v1/history", Insert, ""),
    // vmselect: Prometheus querying API
    form("/api/v1/query", Select, "/prometheus"),
    form("/api/v1/query_range", Select, "/prometheus"),
    form("/api/v1/series", Select, "/prometheus"),
    form("/api/v1/series/count", Select, "/prometheus"),
    form("/api/v1/labels", Select, "/prometheus"),
    form("/api/v1/label/*/values", Select, "/prometheus"),
    form("/api/v1/export", Select, "/prometheus"),
    form("/api/v1/export/csv", Select, "/prometheus"),
    form("/api/v1/export/native", Select, "/prometheus"),
    form("/api/v1/status/tsdb", Select, "/prometheus"),
    form("/api/v1/status/active_queries", Select, "/prometheus"),
    form("/api/v1/status/top_queries", Select, "/prometheus"),
    form("/api/v1/status/buildinfo", Select, "/prometheus"),
    form("/api/v1/status/metric_names_stats", Select, "/prometheus"),
    form("/api/v1/metadata", Select, "/prometheus"),
    form("/api/v1/query_exemplars", Select, "/prometheus"),
    form("/api/v1/rules", Select, "/prometheus"),
    form("/api/v1/alerts", Select, "/prometheus"),
    form("/api/v1/notifiers", Select, "/prometheus"),
    form("/federate", Select, "/prometheus"),
    // vmselect: Graphite API
    form("/metrics/find", Select, "/graphite"),
    form("/metrics/expand", Select, "/graphite"),
    form("/metrics/index.json", Select, "/graphite"),
    form("/tags", Select, "/graphite"),
    form("/tags/findSeries", Select, "/graphite"),
    form("/tags/autoComplete/tags", Select, "/graphite"),
    form("/tags/autoComplete/values", Select, "/graphite"),
    form("/functions", Select, "/graphite"),
    form("/render", Select, "/graphite"),
    // vmselect: UI
    form("/vmui", Select, ""),
    form("/vmui/*", Select, ""),
    form("/graph", Select, "/prometheus"),
    form("/graph/*", Select, "/prometheus"),
    // vmselect: deletion of the tenant's own series
    form("/api/v1/admin/tsdb/delete_series", Delete, "/prometheus"),
];

/// The cluster form of a metrics endpoint, if it has one.
pub fn cluster_form(endpoint: &Endpoint) -> Option<&'static ClusterForm> {
    if endpoint.signal != Signal::Metrics {
        return None;
    }
    FORMS.get(endpoint.pattern).copied()
}

pub(super) fn prepare() {
    LazyLock::force(&FORMS);
}

/// [`CLUSTER_FORMS`] by pattern (unique among metrics endpoints: a test checks it).
static FORMS: LazyLock<HashMap<&'static str, &'static ClusterForm>> =
    LazyLock::new(|| CLUSTER_FORMS.iter().map(|form| (form.pattern, form)).collect());

impl ClusterForm {
    /// The path to send to the cluster for the canonical `path` (alias
    /// removed) of tenant `id`; the query string is the caller's, untouched.
    pub fn path(&self, path: &str, id: VictoriaTenant) -> String {
        let rest = path.strip_prefix(self.strip).unwrap_or(path);
        format!("/{}/{id}{}{rest}", self.service.as_str(), self.add)
    }
}

/// Whether admin operation `op` has an endpoint on a `signal` deployment:
/// a dedicated one, or (`shared`) a shared cluster, where only what is
/// scoped to the tenant runs.
pub fn admin_op_runs(op: AdminOp, signal: Signal, shared: bool) -> bool {
    SURFACE.iter().any(|e| e.signal == signal && e.op == Some(op) && (!shared || cluster_form(e).is_some()))
}

/// Whether a canonical path already names a Victoria tenant: a
/// `/insert/<id>/`, `/select/<id>/` or `/delete/<id>/` form, `<id>` being
/// digits and colons (as a cluster parses it) or `multitenant` (the
/// cluster's cross-tenant reads and writes), in any case. Only the router
/// names the tenant: such a path is refused, never forwarded. Elsewhere
/// `multitenant` is a plain word (a label may be called so).
pub fn names_a_tenant(path: &str) -> bool {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    match (segments.next(), segments.next()) {
        (Some("insert" | "select" | "delete"), Some(id)) => {
            id.eq_ignore_ascii_case("multitenant") || id.bytes().all(|b| b.is_ascii_digit() || b == b':')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{lookup, Access};

    fn id(account: u32, project: u32) -> VictoriaTenant {
        VictoriaTenant { account, project }
    }

    #[test]
    fn every_form_is_a_metrics_endpoint_of_the_surface_once() {
        for form in CLUSTER_FORMS {
            let endpoint = SURFACE.iter().find(|e| e.signal == Signal::Metrics && e.pattern == form.pattern);
            let endpoint = endpoint.unwrap_or_else(|| panic!("{} is not a metrics endpoint", form.pattern));
            assert_eq!(cluster_form(endpoint), Some(form));
            assert_eq!(CLUSTER_FORMS.iter().filter(|f| f.pattern == form.pattern).count(), 1, "{}", form.pattern);
            // Writes go to vminsert, reads and the UI to vmselect (influx's
            // database list is answered by vminsert).
            match endpoint.access {
                Access::Ingest => assert_eq!(form.service, Insert, "{}", form.pattern),
                Access::Query if matches!(form.pattern, "/query" | "/influx/query") => {
                    assert_eq!(form.service, Insert, "{}", form.pattern)
                }
                Access::Query | Access::Ui => assert_eq!(form.service, Select, "{}", form.pattern),
                Access::Admin => assert_eq!(form.service, Delete, "{}", form.pattern),
            }
        }
    }

    #[test]
    fn every_ingest_query_and_ui_endpoint_but_a_few_has_a_form() {
        // No tenant-scoped cluster form documented: left out, refused for a shared tenant.
        const WITHOUT: [&str; 3] = ["/api/v1/push", "/tags/tagSeries", "/tags/tagMultiSeries"];
        for endpoint in SURFACE.iter().filter(|e| e.signal == Signal::Metrics && e.access != Access::Admin) {
            assert_eq!(cluster_form(endpoint).is_none(), WITHOUT.contains(&endpoint.pattern), "{}", endpoint.pattern);
        }
    }

    #[test]
    fn paths_are_written_as_the_cluster_docs_show() {
        let path = |p: &str, id| cluster_form(lookup(p, Some(Signal::Metrics), false).unwrap()).unwrap().path(p, id);
        assert_eq!(path("/api/v1/write", id(42, 0)), "/insert/42:0/prometheus/api/v1/write");
        assert_eq!(path("/api/v1/query", id(42, 0)), "/select/42:0/prometheus/api/v1/query");
        assert_eq!(path("/api/v1/label/job/values", id(1, 2)), "/select/1:2/prometheus/api/v1/label/job/values");
        assert_eq!(path("/write", id(7, 0)), "/insert/7:0/influx/write");
        assert_eq!(path("/api/v2/write", id(7, 0)), "/insert/7:0/influx/api/v2/write");
        assert_eq!(path("/insert/opentelemetry/v1/metrics", id(7, 3)), "/insert/7:3/opentelemetry/v1/metrics");
        assert_eq!(path("/opentelemetry/v1/metrics", id(7, 3)), "/insert/7:3/opentelemetry/v1/metrics");
        assert_eq!(path("/datadog/api/v2/series", id(0, 0)), "/insert/0:0/datadog/api/v2/series");
        assert_eq!(path("/render", id(9, 9)), "/select/9:9/graphite/render");
        assert_eq!(path("/vmui/", id(9, 9)), "/select/9:9/vmui/");
        assert_eq!(path("/federate", id(u32::MAX, u32::MAX)), "/select/4294967295:4294967295/prometheus/federate");
        assert_eq!(
            path("/api/v1/admin/tsdb/delete_series", id(5, 0)),
            "/delete/5:0/prometheus/api/v1/admin/tsdb/delete_series"
        );
    }

    #[test]
    fn a_path_that_names_a_tenant_is_recognised() {
        for named in [
            "/insert/42/prometheus/api/v1/write",
            "/insert/42:1/prometheus/api/v1/write",
            "/select/0/prometheus/api/v1/query",
            "/delete/0/prometheus/api/v1/admin/tsdb/delete_series",
            "/insert/multitenant/prometheus/api/v1/write",
            "/select/multitenant/prometheus/api/v1/query",
            "/select/MultiTenant/vmui/",
            "/select/:/x",
        ] {
            assert!(names_a_tenant(named), "{named}");
        }
        for plain in [
            "/insert/jsonline",
            "/insert/opentelemetry/v1/metrics",
            "/select/logsql/query",
            "/select/vmui/",
            "/delete/run_task",
            "/api/v1/label/multitenant/values",
            "/vmui/multitenant",
            "/api/v1/write",
            "/insert",
            "/",
        ] {
            assert!(!names_a_tenant(plain), "{plain}");
        }
    }
}
