//! The Victoria* API as the router sees it: the three signals, the class of
//! an endpoint (ingest, query, ui, admin), which listener a request came in
//! on, the explicit API surface, and [`classify`], which brings a path to
//! the canonical form the backend routes on and finds its endpoint.
//!
//! Ground level: every other module may import this one, and it imports
//! none of them.

mod canonical;
mod cluster;
mod surface;

pub use canonical::{canonicalize, Canonical, PathError, MAX_PATH};
pub use cluster::{admin_op_runs, cluster_form, names_a_tenant, ClusterForm, Service, VictoriaTenant, CLUSTER_FORMS};
pub use surface::{lookup, Endpoint, Methods, SURFACE};

use serde::{Deserialize, Serialize};
use std::fmt;

/// The three kinds of telemetry a tenant's deployments serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Metrics,
    Logs,
    Traces,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Metrics, Signal::Logs, Signal::Traces];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }

    /// Dense index, for per-signal arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of an endpoint: what a request to it does to a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Writes data (refused for read-only tenants).
    Ingest,
    /// Reads data.
    Query,
    /// A page of the deployment's UI (vmui) or its assets.
    Ui,
    /// Changes or exposes the deployment itself: refused unless the tenant's
    /// `features.admin_api` grants the operation, never for read-only tenants.
    Admin,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Ingest => "ingest",
            Access::Query => "query",
            Access::Ui => "ui",
            Access::Admin => "admin",
        }
    }
}

/// An admin operation that `features.admin_api` may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminOp {
    /// Delete series (VictoriaMetrics) or logs and spans (delete tasks).
    DeleteSeries,
    /// Create, list and delete snapshots.
    Snapshot,
    ForceMerge,
    ForceFlush,
    /// Reset the rollup result cache.
    ResetCache,
    /// Reload the deployment's own scrape config (`/-/reload`).
    Reload,
    /// The deployment's scrape config (`/config`, `/api/v1/status/config`).
    Config,
    /// Scrape targets and service discovery.
    Targets,
    Pprof,
    Flags,
    /// The deployment's own `/metrics`.
    Metrics,
}

impl AdminOp {
    pub const ALL: [AdminOp; 11] = [
        AdminOp::DeleteSeries,
        AdminOp::Snapshot,
        AdminOp::ForceMerge,
        AdminOp::ForceFlush,
        AdminOp::ResetCache,
        AdminOp::Reload,
        AdminOp::Config,
        AdminOp::Targets,
        AdminOp::Pprof,
        AdminOp::Flags,
        AdminOp::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AdminOp::DeleteSeries => "delete_series",
            AdminOp::Snapshot => "snapshot",
            AdminOp::ForceMerge => "force_merge",
            AdminOp::ForceFlush => "force_flush",
            AdminOp::ResetCache => "reset_cache",
            AdminOp::Reload => "reload",
            AdminOp::Config => "config",
            AdminOp::Targets => "targets",
            AdminOp::Pprof => "pprof",
            AdminOp::Flags => "flags",
            AdminOp::Metrics => "metrics",
        }
    }

    /// Bit of this operation in a set of granted operations.
    pub fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// Builds the lookup indexes now (else at the first lookup): the server
/// calls it before it serves.
pub fn prepare() {
    surface::prepare();
    cluster::prepare();
}

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The unified listener: the path decides the signal.
    Unified,
    /// A drop-in listener: every request is this signal.
    DropIn(Signal),
}

/// What a request is, by its listener, method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified<'a> {
    pub signal: Signal,
    pub access: Access,
    /// The endpoint of the surface it is.
    pub endpoint: &'static Endpoint,
    /// The canonical path: what is forwarded.
    pub path: Canonical<'a>,
}

/// Why a request is not one the router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unserved {
    /// The path has no safe canonical reading: 400.
    BadPath(PathError),
    /// No endpoint of the surface (of this listener's signal): 404.
    NotServed,
    /// The endpoint does not take this method: 405.
    Method(&'static Endpoint),
    /// The path names a Victoria tenant itself (`/insert/<id>/...`,
    /// `multitenant`): 403, only the router names the tenant.
    TenantInPath,
}

/// What a request arriving on `listener` is: the canonical form of `path`
/// looked up in the surface — every endpoint on the unified listener, the
/// listener's signal's alone on a drop-in one. This is the classification
/// the proxy acts on.
pub fn classify<'a>(listener: Listener, method: &http::Method, path: &'a str) -> Result<Classified<'a>, Unserved> {
    let path = canonicalize(path).map_err(Unserved::BadPath)?;
    if names_a_tenant(path.route_path()) {
        return Err(Unserved::TenantInPath);
    }
    let signal = match listener {
        Listener::Unified => None,
        Listener::DropIn(signal) => Some(signal),
    };
    let endpoint = lookup(path.route_path(), signal, path.aliased()).ok_or(Unserved::NotServed)?;
    if !endpoint.allows(method) {
        return Err(Unserved::Method(endpoint));
    }
    Ok(Classified { signal: endpoint.signal, access: endpoint.access, endpoint, path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn class(listener: Listener, method: Method, path: &str) -> Result<(Signal, Access), Unserved> {
        classify(listener, &method, path).map(|c| (c.signal, c.access))
    }

    #[test]
    fn drop_in_listeners_serve_their_signal_alone() {
        let logs = Listener::DropIn(Signal::Logs);
        assert_eq!(class(logs, Method::GET, "/select/logsql/query"), Ok((Signal::Logs, Access::Query)));
        assert_eq!(class(logs, Method::POST, "/api/v1/write"), Err(Unserved::NotServed));
        assert_eq!(class(logs, Method::GET, "/anything"), Err(Unserved::NotServed));
        let traces = Listener::DropIn(Signal::Traces);
        assert_eq!(class(traces, Method::GET, "/select/logsql/query"), Ok((Signal::Traces, Access::Query)));
        assert_eq!(class(Listener::Unified, Method::GET, "/select/logsql/query"), Ok((Signal::Logs, Access::Query)));
    }

    #[test]
    fn spellings_of_a_write_or_an_admin_path_are_what_they_are() {
        let metrics = Listener::DropIn(Signal::Metrics);
        for path in [
            "/api/v1/write",
            "//api/v1/write",
            "/prometheus/api/v1/write",
            "/api/v1/%77rite",
            "/graphite//api/v1/write",
        ] {
            assert_eq!(class(metrics, Method::POST, path), Ok((Signal::Metrics, Access::Ingest)), "{path}");
        }
        for path in [
            "/api/v1/admin/tsdb/delete_series",
            "/prometheus/api/v1/admin/tsdb/delete_series",
            "/graphite/api/v1/admin/tsdb/delete_series",
            "//api/v1/admin/tsdb/delete_series",
            "/api/v1/admin/tsdb/delete%5Fseries",
            "/%70rometheus/api/v1/admin/tsdb/delete_series",
        ] {
            assert_eq!(class(Listener::Unified, Method::GET, path), Ok((Signal::Metrics, Access::Admin)), "{path}");
        }
        assert_eq!(
            class(metrics, Method::GET, "/api/v1/admin%2Ftsdb%2Fdelete_series"),
            Err(Unserved::BadPath(PathError::EncodedSlash))
        );
        assert_eq!(class(metrics, Method::GET, "/snapshot%2Flist"), Err(Unserved::BadPath(PathError::EncodedSlash)));
    }

    #[test]
    fn a_method_the_endpoint_does_not_take_is_named() {
        let refused = class(Listener::Unified, Method::GET, "/api/v1/write");
        assert!(matches!(refused, Err(Unserved::Method(e)) if e.pattern == "/api/v1/write"));
        assert!(matches!(class(Listener::Unified, Method::OPTIONS, "/api/v1/query"), Err(Unserved::Method(_))));
    }
}
