//! One reload path for every trigger — SIGHUP, `POST /api/v1/reload`, the
//! config file watch and admin API mutations: text → parse → validate →
//! build the table aside → probe its new endpoints → swap once.
//!
//! A reload that fails changes nothing: the running table keeps serving and
//! every error is returned, logged and counted. Only the tenant part of the
//! config is applied live; listener, admin and observability settings need a
//! restart and are reported as "restart required", never half-applied. One
//! mutex serialises reloads and mutations, so no update is lost.

use crate::config::{self, Config, ConfigError, Source};
use crate::edge::Edge;
use crate::metrics::Metrics;
use crate::routing::{RouteStore, RoutingTable, Shared};
use serde::Serialize;
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The `tracing` target of audit log lines: every reload and admin mutation.
pub const AUDIT_TARGET: &str = "mirador_router::audit";

/// What a successful reload changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Sections that changed but only take effect after a restart.
    pub restart_required: Vec<&'static str>,
    /// Time to parse, validate, build, probe new endpoints and swap.
    pub duration_ms: f64,
}

/// The outcome of the last reload, for `GET /api/v1/reload`.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    pub at: String,
    pub trigger: &'static str,
    pub ok: bool,
    pub report: Option<ReloadReport>,
    pub errors: Vec<String>,
}

/// Why a mutation of the config file did not happen. Says what went wrong;
/// the admin listener decides the status.
#[derive(Debug, thiserror::Error)]
pub enum MutationError {
    /// The request body does not describe a tenant (not JSON, a bad id...).
    #[error("{0}")]
    BadBody(String),
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    #[error("tenant {0:?} exists already; PUT /api/v1/tenants/{0} replaces it")]
    TenantExists(String),
    /// The router runs on the embedded default: there is no file to change.
    #[error("the router runs on the embedded default config: start it with --config FILE to change tenants")]
    NoFile,
    #[error("tenants is not a table in the config file")]
    NotATable,
    /// The edit would leave the tenant with no signal it can be routed to.
    #[error("tenant {0:?} would route nothing: give it an enabled metrics, logs or traces deployment (DELETE /api/v1/tenants/{0} removes a tenant)")]
    RoutesNothing(String),
    /// The edited config does not validate; nothing was written.
    #[error("the edited config is not valid ({} error(s))", .0.len())]
    Invalid(Vec<ConfigError>),
    /// The file could not be read or written.
    #[error("{0}")]
    Storage(String),
}

/// What a mutation leaves of the tenant it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The tenant is in force and routes at least one signal (create, update).
    Routes,
    /// The tenant is gone (delete).
    Removed,
}

struct State {
    applied: Config,
    /// The text `applied` was parsed from.
    text: String,
    last: Option<LastReload>,
}

pub struct Reloader {
    source: Source,
    routes: Arc<RouteStore>,
    shared: Arc<Shared>,
    state: Mutex<State>,
    /// Run after each reload: hands the memory of the parse back to the OS.
    trim: Option<fn()>,
    /// The TLS listeners' certificates, swapped on each reload.
    edge: Option<Arc<Edge>>,
}

impl Reloader {
    pub fn new(source: Source, routes: Arc<RouteStore>, shared: Arc<Shared>, applied: Config, text: String) -> Self {
        let state = Mutex::new(State { applied, text, last: None });
        Reloader { source, routes, shared, state, trim: None, edge: None }
    }

    /// Runs `trim` after every reload and mutation, to return the parse's
    /// temporary memory (megabytes for a large config) to the OS; the
    /// binary passes its allocator's collect, the library knows none.
    pub fn with_memory_trim(mut self, trim: fn()) -> Self {
        self.trim = Some(trim);
        self
    }

    /// Swaps the TLS listeners' certificates on every reload and mutation.
    pub fn with_edge(mut self, edge: Arc<Edge>) -> Self {
        self.edge = Some(edge);
        self
    }

    fn trim(&self) {
        if let Some(trim) = self.trim {
            trim();
        }
    }

    fn metrics(&self) -> Option<&Metrics> {
        self.shared.metrics.as_deref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Re-reads the config source and applies it. `trigger` and `from` go to
    /// the audit log.
    pub fn reload(&self, trigger: &'static str, from: &str) -> Result<ReloadReport, Vec<ConfigError>> {
        let mut state = self.lock();
        let started = Instant::now();
        let result = self.source.read().and_then(|text| {
            let next = config::parse(&self.source.name(), &text)?;
            Ok(self.apply(&mut state, next, text, started))
        });
        self.record(&mut state, trigger, from, None, &result);
        drop(state);
        self.trim();
        result
    }

    /// Edits the config file under the reload lock: `edit` changes the
    /// document, the result is validated exactly like the file, persisted
    /// atomically (comments and layout kept) and swapped in. Nothing is
    /// written or swapped unless every step before succeeds.
    pub fn mutate(
        &self,
        action: &'static str,
        tenant: &str,
        outcome: Outcome,
        from: &str,
        edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<(), MutationError>,
    ) -> Result<ReloadReport, MutationError> {
        let mut state = self.lock();
        let result = self.mutate_locked(&mut state, tenant, outcome, edit);
        let logged = match &result {
            Ok(report) => Ok(report.clone()),
            Err(MutationError::Invalid(errors)) => Err(errors.clone()),
            Err(other) => Err(vec![ConfigError {
                file: self.source.name(),
                position: None,
                key: String::new(),
                message: other.to_string(),
            }]),
        };
        self.record(&mut state, action, from, Some(tenant), &logged);
        drop(state);
        self.trim();
        result
    }

    fn mutate_locked(
        &self,
        state: &mut State,
        tenant: &str,
        outcome: Outcome,
        edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<(), MutationError>,
    ) -> Result<ReloadReport, MutationError> {
        let started = Instant::now();
        let (path, text, next) = self.edited(tenant, outcome, edit)?;
        config::write_atomically(path, &text)
            .map_err(|e| MutationError::Storage(format!("cannot write {}: {e}", path.display())))?;
        Ok(self.apply(state, next, text, started))
    }

    /// What a mutation would make of the config, without writing or
    /// applying anything: the validated config after `edit`, and the one in
    /// force (for the admin API's checks before the real mutation).
    pub fn preview(
        &self,
        tenant: &str,
        outcome: Outcome,
        edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<(), MutationError>,
    ) -> Result<(Config, Config), MutationError> {
        let state = self.lock();
        let (_, _, next) = self.edited(tenant, outcome, edit)?;
        Ok((next, state.applied.clone()))
    }

    /// The config file with `edit` applied: its path, text and validated config.
    fn edited(
        &self,
        tenant: &str,
        outcome: Outcome,
        edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<(), MutationError>,
    ) -> Result<(&std::path::Path, String, Config), MutationError> {
        let Source::File(path) = &self.source else {
            return Err(MutationError::NoFile);
        };
        let on_disk = std::fs::read_to_string(path)
            .map_err(|e| MutationError::Storage(format!("cannot read {}: {e}", path.display())))?;
        let mut doc: toml_edit::DocumentMut = on_disk
            .parse()
            .map_err(|e| MutationError::Storage(format!("{} is not valid TOML: {e}", path.display())))?;
        edit(&mut doc)?;
        let text = doc.to_string();
        let next = config::parse(&self.source.name(), &text).map_err(MutationError::Invalid)?;
        if outcome == Outcome::Routes && !next.tenants.get(tenant).is_some_and(|t| t.routes_something()) {
            return Err(MutationError::RoutesNothing(tenant.to_string()));
        }
        Ok((path, text, next))
    }

    /// Swaps in the table of a validated config parsed from `text`; `started`
    /// is when its parsing began, for the reported duration.
    fn apply(&self, state: &mut State, mut next: Config, text: String, started: Instant) -> ReloadReport {
        let mut report = diff(&state.applied, &next);
        let old = self.routes.load_full();
        let table = build_table(&next, &self.shared, Some((&state.applied, &old)));
        self.routes.swap(table);
        for tenant in &report.removed {
            old.retire(tenant);
        }
        for warning in &next.warnings {
            tracing::warn!("{warning}");
        }
        // Certificates are re-read on every reload: new handshakes get the
        // new ones, established connections keep theirs.
        let mut fresh = std::mem::take(&mut next.server.tls);
        if let Some(edge) = &self.edge {
            for note in edge.apply(&fresh) {
                tracing::warn!("{note}");
            }
        }
        // Settings that need new sockets stay as they run until a restart.
        next.server = state.applied.server.clone();
        for running in &mut next.server.tls {
            if let Some(i) = fresh.iter().position(|l| l.listen == running.listen) {
                *running = fresh.swap_remove(i);
            }
        }
        next.admin = state.applied.admin.clone();
        next.observability = state.applied.observability.clone();
        state.applied = next;
        state.text = text;
        report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        report
    }

    /// Counts, audits and remembers the outcome of a reload or mutation.
    fn record(
        &self,
        state: &mut State,
        trigger: &'static str,
        from: &str,
        tenant: Option<&str>,
        result: &Result<ReloadReport, Vec<ConfigError>>,
    ) {
        if let Some(metrics) = self.metrics() {
            metrics.reload(result.is_ok());
        }
        let tenant = tenant.unwrap_or("-");
        match result {
            Ok(report) => tracing::info!(
                target: AUDIT_TARGET,
                action = trigger,
                tenant,
                result = "ok",
                source = from,
                added = ?report.added,
                removed = ?report.removed,
                changed = ?report.changed,
                restart_required = ?report.restart_required,
                duration_ms = report.duration_ms,
                "config reloaded"
            ),
            Err(errors) => {
                for error in errors {
                    tracing::error!(target: AUDIT_TARGET, action = trigger, tenant, source = from, %error, "config change refused");
                }
                tracing::error!(
                    target: AUDIT_TARGET,
                    action = trigger,
                    tenant,
                    result = "refused",
                    source = from,
                    errors = errors.len(),
                    "config reload refused; the running config keeps serving"
                );
            }
        }
        state.last = Some(LastReload {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            trigger,
            ok: result.is_ok(),
            report: result.as_ref().ok().cloned(),
            errors: result.as_ref().err().map(|e| e.iter().map(ToString::to_string).collect()).unwrap_or_default(),
        });
    }

    /// The text of the config in force.
    pub fn applied_text(&self) -> String {
        self.lock().text.clone()
    }

    pub fn last(&self) -> Option<LastReload> {
        self.lock().last.clone()
    }

    pub fn source(&self) -> &Source {
        &self.source
    }
}

/// Builds the table for `config` (taking over `previous`'s unchanged
/// tenants) and waits until each of its endpoints has been probed once
/// (endpoints kept from the running table already have), so a new endpoint
/// is judged before it takes traffic.
pub fn build_table(config: &Config, shared: &Shared, previous: Option<(&Config, &RoutingTable)>) -> RoutingTable {
    let table = RoutingTable::rebuild(config, shared, previous);
    let longest_probe = table.endpoint_health().map(|h| h.settings.timeout).max().unwrap_or_default();
    shared.health.wait_first_probes(table.endpoint_health(), longest_probe + Duration::from_secs(1));
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
            let _ = reloader.reload("sighup", "signal");
        }
    });
}

/// Reloads whenever the config file's content changes, checked every
/// `every`. Polling the path's content (not inotify on the file) survives
/// editors that replace the file and Kubernetes ConfigMap updates, which
/// swap a `..data` symlink rather than write the file.
pub fn watch_file(reloader: Arc<Reloader>, every: Duration) {
    let Source::File(path) = reloader.source().clone() else { return };
    std::thread::spawn(move || {
        let mut seen: Option<String> = None;
        loop {
            std::thread::sleep(every);
            let Ok(now) = std::fs::read_to_string(&path) else { continue };
            // Reload once per new content, and not for what the admin API just wrote.
            if seen.as_ref() != Some(&now) {
                if now != reloader.applied_text() {
                    let _ = reloader.reload("file-watch", "file");
                }
                seen = Some(now);
            }
        }
    });
}
