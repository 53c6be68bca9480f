//! One reload path: read → parse → validate → build the table aside → probe
//! its new endpoints → swap once.
//!
//! A reload that fails changes nothing: the running table keeps serving and
//! every error is returned (and logged by the caller). Only the tenant part
//! of the config is applied live; listener and server settings need new
//! sockets and are reported as "restart required", never half-applied.

use crate::config::{Config, ConfigError, Source};
use crate::routing::{RouteStore, RoutingTable};
use crate::metrics::Metrics;
use crate::upstream::HealthRegistry;
use std::time::Duration;
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use std::sync::{Arc, Mutex};

/// What a successful reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Sections that changed but only take effect after a restart.
    pub restart_required: Vec<&'static str>,
}

pub struct Reloader {
    source: Source,
    routes: Arc<RouteStore>,
    registry: Arc<HealthRegistry>,
    metrics: Option<Arc<Metrics>>,
    /// The config the current table was built from. Held only while reloading,
    /// which also serialises reloads.
    applied: Mutex<Config>,
}

impl Reloader {
    pub fn new(
        source: Source,
        routes: Arc<RouteStore>,
        registry: Arc<HealthRegistry>,
        metrics: Option<Arc<Metrics>>,
        applied: Config,
    ) -> Self {
        Reloader { source, routes, registry, metrics, applied: Mutex::new(applied) }
    }

    pub fn reload(&self) -> Result<ReloadReport, Vec<ConfigError>> {
        let mut applied = self.applied.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = match self.source.load() {
            Ok(next) => next,
            Err(errors) => {
                if let Some(metrics) = &self.metrics {
                    metrics.reload(false);
                }
                return Err(errors);
            }
        };
        let report = diff(&applied, &next);
        let table = build_table(&next, &self.registry, self.metrics.as_deref());
        self.routes.swap(table);
        if let Some(metrics) = &self.metrics {
            for tenant in &report.removed {
                metrics.forget_tenant(tenant);
            }
            metrics.reload(true);
        }
        // Settings that need new sockets stay as they run until a restart.
        next.server = applied.server.clone();
        next.admin = applied.admin.clone();
        next.observability = applied.observability.clone();
        *applied = next;
        Ok(report)
    }
}

/// Builds the table for `config` and waits until each of its endpoints has
/// been probed once (endpoints kept from the running table already have), so
/// a new endpoint is judged before it takes traffic.
pub fn build_table(config: &Config, registry: &HealthRegistry, metrics: Option<&Metrics>) -> RoutingTable {
    let table = RoutingTable::build(config, registry, metrics);
    let longest_probe = table.endpoint_health().map(|h| h.settings.timeout).max().unwrap_or_default();
    registry.wait_first_probes(table.endpoint_health(), longest_probe + Duration::from_secs(1));
    table
}

fn diff(old: &Config, new: &Config) -> ReloadReport {
    let mut report = ReloadReport::default();
    for (id, tenant) in &new.tenants {
        match old.tenants.get(id) {
            None => report.added.push(id.clone()),
            Some(before) if before != tenant => report.changed.push(id.clone()),
            Some(_) => {}
        }
    }
    report.removed = old.tenants.keys().filter(|id| !new.tenants.contains_key(*id)).cloned().collect();
    if old.server != new.server {
        report.restart_required.push("server");
    }
    if old.admin != new.admin {
        report.restart_required.push("admin");
    }
    if old.observability != new.observability {
        report.restart_required.push("observability");
    }
    report
}

/// Takes over SIGHUP at once, so that a SIGHUP arriving during start-up
/// cannot kill the process; reloads start once [`serve_sighup`] runs.
pub fn catch_sighup() -> std::io::Result<Signals> {
    Signals::new([SIGHUP])
}

/// Reloads on every SIGHUP, on a thread of its own.
pub fn serve_sighup(mut signals: Signals, reloader: Arc<Reloader>) {
    std::thread::spawn(move || {
        for _ in signals.forever() {
            match reloader.reload() {
                Ok(report) => tracing::info!(
                    added = ?report.added,
                    removed = ?report.removed,
                    changed = ?report.changed,
                    restart_required = ?report.restart_required,
                    "config reloaded"
                ),
                Err(errors) => {
                    for error in &errors {
                        tracing::error!(%error, "config reload refused");
                    }
                    tracing::error!(errors = errors.len(), "config reload refused; the running config keeps serving");
                }
            }
        }
    });
}
