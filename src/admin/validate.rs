//! Deployment validation for `POST`/`PUT /api/v1/tenants`: before a
//! tenant's config is written, every endpoint it gains is checked to be
//! reachable, healthy, the right kind of Victoria* server for its signal
//! (and cluster service), and not another tenant's endpoint unless the
//! deployment is a shared one (`account_id`).
//!
//! What a server is, read from the server itself (its version string is the
//! first witness; Debian's builds leave it empty, so the families of its
//! `/metrics` and its APIs are the second):
//!
//! | wanted | accepted |
//! |---|---|
//! | metrics, dedicated | `vm_app_version` `victoria-metrics-…`, or (no version) `/api/v1/status/buildinfo` answering `"status":"success"` and no `vl_*`/`vt_*` series |
//! | metrics, shared `insert` / `select` | `vminsert-…` / `vmselect-…`, or (no version) a `vm_app_version` and no `vl_*`/`vt_*` series |
//! | logs | `victoria-logs-…` (`vlinsert`, `vlselect`), or (no version) `vl_*` series, no `vt_*` series and no Jaeger API |
//! | traces | `victoria-traces-…` (`vtinsert`, `vtselect`), or (no version) `vt_*` series, or `vl_*` series and `/select/jaeger/api/services` answering |
//!
//! Each fetch is bounded ([`STEP_TIMEOUT`], [`MAX_BODY`]) and every new
//! endpoint is checked at once, so a create waits for its slowest endpoint,
//! at most a few steps' timeouts.

use crate::api::Signal;
use crate::config::{Config, Deployment, Tenant};
use crate::upstream::Pool;
use pingora::connectors::http::Connector;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for one step (one GET) of a check.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest body a check reads (a `/metrics` page).
const MAX_BODY: usize = 8 << 20;
/// The `User-Agent` of the checks.
pub const AGENT: &str = "mirador-router-validation";

/// The check of one endpoint: what was tried, what came back, and the
/// problem if it fails.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub signal: &'static str,
    /// `insert` or `select` on a shared VictoriaMetrics cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'static str>,
    pub endpoint: String,
    pub tried: Vec<String>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What an endpoint must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Metrics,
    Insert,
    Select,
    Logs,
    Traces,
}

impl Wanted {
    fn name(self) -> &'static str {
        match self {
            Wanted::Metrics => "a VictoriaMetrics single-node server",
            Wanted::Insert => "vminsert of a VictoriaMetrics cluster",
            Wanted::Select => "vmselect of a VictoriaMetrics cluster",
            Wanted::Logs => "a VictoriaLogs server",
            Wanted::Traces => "a VictoriaTraces server",
        }
    }

    /// Whether a server whose version string starts with `version` is one.
    fn by_version(self, version: &str) -> bool {
        let prefixes: &[&str] = match self {
            Wanted::Metrics => &["victoria-metrics-"],
            Wanted::Insert => &["vminsert-"],
            Wanted::Select => &["vmselect-"],
            Wanted::Logs => &["victoria-logs-", "vlinsert-", "vlselect-"],
            Wanted::Traces => &["victoria-traces-", "vtinsert-", "vtselect-"],
        };
        prefixes.iter().any(|prefix| version.starts_with(prefix))
    }
}

/// Checks every endpoint tenant `id` of `next` has that it has not in
/// `applied` (all of them for a new tenant).
pub async fn check_new_endpoints(next: &Config, applied: &Config, id: &str) -> Vec<Check> {
    let Some(tenant) = next.tenants.get(id) else { return Vec::new() };
    let owners = owners(next, id);
    let known = known_endpoints(applied.tenants.get(id).map(|t| &**t));
    let connector = Arc::new(Connector::new(None));
    let mut checks = tokio::task::JoinSet::new();
    let mut order = 0usize;
    for (signal, service, deployment) in services(tenant) {
        let wanted = match (signal, service) {
            (Signal::Metrics, Some("insert")) => Wanted::Insert,
            (Signal::Metrics, Some(_)) => Wanted::Select,
            (Signal::Metrics, None) => Wanted::Metrics,
            (Signal::Logs, _) => Wanted::Logs,
            (Signal::Traces, _) => Wanted::Traces,
        };
        let pool = Arc::new(Pool::detached(id, signal, &deployment));
        for (index, endpoint) in pool.endpoints().iter().enumerate() {
            let url = endpoint.url.to_string();
            if known.contains(&(signal, url.clone())) {
                continue;
            }
            let mut check = Check {
                signal: signal.as_str(),
                service,
                endpoint: url.clone(),
                tried: Vec::new(),
                ok: true,
                problem: None,
            };
            let owner = owners.get(&url).filter(|_| deployment.cluster.is_none());
            let (pool, connector, at) = (pool.clone(), connector.clone(), order);
            order += 1;
            match owner {
                Some((other, other_signal)) => {
                    check.ok = false;
                    check.problem = Some(format!(
                        "{url} is already tenant {other:?}'s {other_signal} endpoint: a dedicated deployment \
                         cannot share it (only a shared one, with account_id, may)"
                    ));
                    checks.spawn(async move { (at, check) });
                }
                None => {
                    checks.spawn(async move {
                        let (tried, problem) = probe(&pool, &connector, index, wanted).await;
                        (at, Check { tried, ok: problem.is_none(), problem, ..check })
                    });
                }
            }
        }
    }
    let mut done: Vec<(usize, Check)> = checks.join_all().await;
    done.sort_by_key(|(at, _)| *at);
    done.into_iter().map(|(_, check)| check).collect()
}

/// Each deployment of `tenant` with its cluster service (a shared
/// VictoriaMetrics cluster's vminsert and vmselect apart).
fn services(tenant: &Tenant) -> Vec<(Signal, Option<&'static str>, Deployment)> {
    let mut out = Vec::new();
    for signal in Signal::ALL {
        let Some(deployment) = tenant.deployment(signal).filter(|_| tenant.features.allows(signal)) else { continue };
        // A migration's target is checked like the deployment itself.
        let to = deployment.migration.as_ref().map(|m| &m.to);
        for deployment in std::iter::once(deployment).chain(to) {
            match deployment.select_service() {
                Some(select) => {
                    out.push((signal, Some("insert"), deployment.clone()));
                    out.push((signal, Some("select"), select));
                }
                None => out.push((signal, None, deployment.clone())),
            }
        }
    }
    out
}

/// The endpoints (by signal) a tenant has in the running config.
fn known_endpoints(tenant: Option<&Tenant>) -> HashSet<(Signal, String)> {
    let Some(tenant) = tenant else { return HashSet::new() };
    services(tenant)
        .into_iter()
        .flat_map(|(signal, _, deployment)| {
            let all = deployment.endpoints.into_iter().chain(deployment.backup_endpoints);
            all.map(move |endpoint| (signal, endpoint.url))
        })
        .collect()
}

/// Every endpoint of every tenant but `id`: the first tenant and signal using it.
fn owners(config: &Config, id: &str) -> HashMap<String, (String, &'static str)> {
    let mut owners = HashMap::new();
    for (other, tenant) in config.tenants.iter().filter(|(other, _)| other.as_str() != id) {
        for (signal, _, deployment) in services(tenant) {
            for endpoint in deployment.endpoints.iter().chain(&deployment.backup_endpoints) {
                owners.entry(endpoint.url.clone()).or_insert_with(|| (other.clone(), signal.as_str()));
            }
        }
    }
    owners
}

/// Checks endpoint `index` of `pool` is healthy and `wanted`: what was
/// tried, and the problem when it is not.
async fn probe(pool: &Pool, connector: &Connector, index: usize, wanted: Wanted) -> (Vec<String>, Option<String>) {
    let mut steps = Steps { pool, connector, index, tried: Vec::new() };
    let verdict = steps.judge(wanted).await;
    (steps.tried, verdict.err())
}

/// The GETs of one endpoint's check, each written down as it is tried.
struct Steps<'a> {
    pool: &'a Pool,
    connector: &'a Connector,
    index: usize,
    tried: Vec<String>,
}

impl Steps<'_> {
    async fn get(&mut self, path: &str) -> Result<String, String> {
        let fetch = self.pool.fetch(self.connector, AGENT, self.index, path, MAX_BODY);
        let fetched = tokio::time::timeout(STEP_TIMEOUT, fetch).await;
        let fetched = fetched.unwrap_or_else(|_| Err(format!("{path} did not answer within {STEP_TIMEOUT:?}")));
        self.tried.push(match &fetched {
            Ok(_) => format!("GET {path}: 200"),
            Err(e) => format!("GET {path}: {e}"),
        });
        fetched
    }

    async fn judge(&mut self, wanted: Wanted) -> Result<(), String> {
        if let Err(e) = self.get("/health").await {
            return Err(format!("not reachable or not healthy: {e}"));
        }
        let metrics = self.get("/metrics").await.ok();
        let version = metrics.as_deref().and_then(app_version).map(str::to_string);
        let has =
            |prefix: &str| metrics.as_deref().is_some_and(|text| text.lines().any(|line| line.starts_with(prefix)));
        let (logs_family, traces_family) = (has("vl_"), has("vt_"));
        let name = wanted.name();
        if let Some(version) = version.as_deref().filter(|v| !v.is_empty()) {
            return wanted.by_version(version).then_some(()).ok_or_else(|| format!("is {version:?}, not {name}"));
        }
        match wanted {
            Wanted::Metrics | Wanted::Insert | Wanted::Select if logs_family || traces_family => {
                Err(format!("serves vl_*/vt_* metrics (VictoriaLogs or VictoriaTraces), not {name}"))
            }
            Wanted::Metrics => match self.get("/api/v1/status/buildinfo").await {
                Ok(body) if body.replace(' ', "").contains(r#""status":"success""#) => Ok(()),
                Ok(_) => Err(format!("/api/v1/status/buildinfo is not VictoriaMetrics' answer: not {name}")),
                Err(_) => Err(format!("neither /metrics nor /api/v1/status/buildinfo says it is {name}")),
            },
            Wanted::Insert | Wanted::Select if version.is_some() => Ok(()),
            Wanted::Insert | Wanted::Select => Err(format!("/metrics has no vm_app_version: not {name}")),
            Wanted::Traces if traces_family => Ok(()),
            Wanted::Logs if traces_family => Err(format!("serves vt_* metrics (VictoriaTraces), not {name}")),
            Wanted::Logs | Wanted::Traces if !logs_family => Err(format!(
                "/metrics has no {} series: not {name}",
                if wanted == Wanted::Logs { "vl_*" } else { "vt_*" }
            )),
            // vl_* alone: VictoriaLogs, or a VictoriaTraces built on it
            // before it had metrics of its own; its Jaeger API tells.
            Wanted::Logs | Wanted::Traces => {
                let jaeger = self.get("/select/jaeger/api/services").await.is_ok();
                match (wanted, jaeger) {
                    (Wanted::Traces, true) | (Wanted::Logs, false) => Ok(()),
                    (Wanted::Traces, false) => Err(format!("has no Jaeger query API: not {name}")),
                    _ => Err(format!("serves the Jaeger query API (VictoriaTraces): not {name}")),
                }
            }
        }
    }
}

/// The `version` label of `vm_app_version` in a `/metrics` page: `Some("")`
/// when the series is there with an empty version.
fn app_version(text: &str) -> Option<&str> {
    let line = text.lines().find(|line| line.starts_with("vm_app_version{"))?;
    let labels = &line["vm_app_version{".len()..line.find('}')?];
    let value = labels.split(',').find_map(|pair| pair.trim().strip_prefix("version=\""))?;
    Some(value.split('"').next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_label_is_read_from_vm_app_version() {
        let text =
            "# HELP x\nvm_app_version{version=\"victoria-logs-20240620-v0.22.0\", short_version=\"v0.22.0\"} 1\n";
        assert_eq!(app_version(text), Some("victoria-logs-20240620-v0.22.0"));
        assert_eq!(app_version("vm_app_version{version=\"\", short_version=\"\"} 1"), Some(""));
        assert_eq!(app_version("vm_app_versions 1\nfoo 2"), None);
        assert_eq!(app_version("vm_app_version{short_version=\"v1\"} 1"), None);
    }

    #[test]
    fn versions_name_the_kind_of_server() {
        assert!(Wanted::Metrics.by_version("victoria-metrics-20250101-v1.110.0"));
        assert!(!Wanted::Metrics.by_version("vminsert-20250101-v1.110.0-cluster"));
        assert!(Wanted::Insert.by_version("vminsert-20250101-v1.110.0-cluster"));
        assert!(!Wanted::Logs.by_version("victoria-traces-v0.5.0"));
        assert!(Wanted::Traces.by_version("victoria-traces-v0.5.0"));
    }
}
