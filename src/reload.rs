//! One reload path for every trigger — SIGHUP, `POST /api/v1/reload`, the
//! config file watch and admin API mutations: text → parse → validate →
//! build the table aside → probe its new endpoints → swap once.
//!
//! A reload that fails changes nothing: the running table keeps serving and
//! every error is returned, logged and counted. Only the tenant part of the
//! config is applied live; listener, admin and observability settings need a
//! restart and are reported as "restart required", never half-applied. One
//! mutex serialises reloads and mutations, so no update is lost.

use crate::config::{self, Answers, Config, ConfigError, Layer, Section, Source, Tenant};
use crate::edge::Edge;
use crate::metrics::Metrics;
use crate::routing::{RouteStore, RoutingTable, Shared};
use crate::store::{self, EtcdStore, Snapshot, StoreError};
use serde::Serialize;
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use std::collections::HashMap;
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
    /// The file could not be read or written, or etcd refused the write.
    #[error("{0}")]
    Storage(String),
    /// etcd cannot be reached: nothing was written; the table in force serves on.
    #[error("{0}")]
    StoreUnreachable(String),
    /// The tenant changed in the store (another replica) after this router
    /// read it: nothing was written.
    #[error("{0}")]
    Conflict(String),
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
    /// When the DNS refresh last looked each `dns` name up.
    dns_looked_up: HashMap<String, Instant>,
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
    /// With `[store] kind = "etcd"`: where tenants and tiers are read and written.
    store: Option<Arc<EtcdStore>>,
}

/// Where a mutation is written.
enum Write<'a> {
    File(&'a std::path::Path),
    /// One key, compared against the revision the table in force was built from.
    Etcd {
        key: String,
        value: Option<String>,
        expected: i64,
        snapshot: Snapshot,
    },
}

impl Reloader {
    pub fn new(source: Source, routes: Arc<RouteStore>, shared: Arc<Shared>, applied: Config, text: String) -> Self {
        let state = Mutex::new(State { applied, text, last: None, dns_looked_up: HashMap::new() });
        Reloader { source, routes, shared, state, trim: None, edge: None, store: None }
    }

    /// Reads tenants and tiers from `store` (with the file's other settings)
    /// and writes mutations there; `snapshot` is what `applied` was built from.
    pub fn with_store(mut self, store: Arc<EtcdStore>, snapshot: Snapshot) -> Self {
        store.set_applied(snapshot);
        self.store = Some(store);
        self
    }

    pub fn store(&self) -> Option<&Arc<EtcdStore>> {
        self.store.as_ref()
    }

    /// The state of the fleet's Redis, when rate quotas are global.
    pub fn quota_health(&self) -> Option<crate::quota::QuotaHealth> {
        self.shared.quotas.redis().map(|redis| redis.health())
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
        let result = self.read_config(&state.applied.dns.answers).map(|(next, text, snapshot)| {
            self.count_dns(&next.dns.answers, &next.dns.answers);
            let report = self.apply(&mut state, next, text, started);
            if let (Some(store), Some(snapshot)) = (&self.store, snapshot) {
                store.set_applied(snapshot);
            }
            report
        });
        self.record(&mut state, trigger, from, None, &result);
        drop(state);
        self.trim();
        result
    }

    /// The config as the source and the store hold it now: validated, its
    /// text (the file with the store's tables merged in) and the store's
    /// snapshot it was read from. A `dns` name that fails keeps its
    /// addresses in `kept`.
    fn read_config(&self, kept: &Answers) -> Result<(Config, String, Option<Snapshot>), Vec<ConfigError>> {
        let name = self.source.name();
        let text = self.source.read()?;
        let Some(store) = &self.store else {
            return Ok((config::parse_keeping(&name, &text, kept)?, text, None));
        };
        let whole = |message: String| ConfigError { file: name.clone(), position: None, key: String::new(), message };
        let snapshot = store.snapshot().map_err(|e| vec![whole(e.to_string())])?;
        let layers = snapshot.layers(store.settings());
        let next = config::parse_layered_keeping(&name, &text, &layers, kept)?;
        let merged = store::merged_document(&text, &layers).map_err(|e| vec![whole(e)])?;
        Ok((next, merged.to_string(), Some(snapshot)))
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
        let (write, text, next) = self.edited(&state.applied.dns.answers, tenant, outcome, edit)?;
        match (write, &self.store) {
            (Write::File(path), _) => {
                config::write_atomically(path, &text)
                    .map_err(|e| MutationError::Storage(format!("cannot write {}: {e}", path.display())))?;
                Ok(self.apply(state, next, text, started))
            }
            (Write::Etcd { key, value, expected, snapshot }, Some(store)) => {
                let revision = store.write(&key, value.as_deref(), expected).map_err(|e| match e {
                    StoreError::Conflict { .. } => MutationError::Conflict(e.to_string()),
                    StoreError::Unreachable { .. } => MutationError::StoreUnreachable(e.to_string()),
                    StoreError::Refused(_) => MutationError::Storage(e.to_string()),
                })?;
                let report = self.apply(state, next, text, started);
                store.set_applied(snapshot.with(&key, value, revision));
                Ok(report)
            }
            (Write::Etcd { .. }, None) => Err(MutationError::NoFile),
        }
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
        let (_, _, next) = self.edited(&state.applied.dns.answers, tenant, outcome, edit)?;
        Ok((next, state.applied.clone()))
    }

    /// The config file with `edit` applied: its path, text and validated
    /// config (a failing `dns` name keeping its addresses in `kept`).
    fn edited(
        &self,
        kept: &Answers,
        tenant: &str,
        outcome: Outcome,
        edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<(), MutationError>,
    ) -> Result<(Write<'_>, String, Config), MutationError> {
        let Source::File(path) = &self.source else {
            return Err(MutationError::NoFile);
        };
        let on_disk = std::fs::read_to_string(path)
            .map_err(|e| MutationError::Storage(format!("cannot read {}: {e}", path.display())))?;
        if let Some(store) = &self.store {
            return self.edited_in_store(store, &on_disk, kept, tenant, outcome, edit);
        }
        let mut doc: toml_edit::DocumentMut = on_disk
            .parse()
            .map_err(|e| MutationError::Storage(format!("{} is not valid TOML: {e}", path.display())))?;
        edit(&mut doc)?;
        let text = doc.to_string();
        let next = config::parse_keeping(&self.source.name(), &text, kept).map_err(MutationError::Invalid)?;
        if outcome == Outcome::Routes && !next.tenants.get(tenant).is_some_and(|t| t.routes_something()) {
            return Err(MutationError::RoutesNothing(tenant.to_string()));
        }
        Ok((Write::File(path), text, next))
    }

    /// [`Self::edited`] with tenants in etcd: the edit runs on the file
    /// merged with the snapshot in force, and what it leaves of `tenant` is
    /// the one key to write.
    fn edited_in_store(
        &self,
        store: &EtcdStore,
        on_disk: &str,
        kept: &Answers,
        tenant: &str,
        outcome: Outcome,
        edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<(), MutationError>,
    ) -> Result<(Write<'_>, String, Config), MutationError> {
        let snapshot = store.applied();
        let mut layers = snapshot.layers(store.settings());
        let mut doc = store::merged_document(on_disk, &layers).map_err(MutationError::Storage)?;
        edit(&mut doc)?;
        let key = store.settings().tenant_key(tenant);
        let value = doc.get("tenants").and_then(|tenants| tenants.get(tenant)).and_then(store::table_text);
        layers.retain(|layer| !(layer.section == Section::Tenants && layer.id == tenant));
        if let Some(text) = &value {
            layers.push(Layer {
                name: format!("etcd:{key}"),
                section: Section::Tenants,
                id: tenant.to_string(),
                text: text.clone(),
            });
        }
        let next = config::parse_layered_keeping(&self.source.name(), on_disk, &layers, kept)
            .map_err(MutationError::Invalid)?;
        if outcome == Outcome::Routes && !next.tenants.get(tenant).is_some_and(|t| t.routes_something()) {
            return Err(MutationError::RoutesNothing(tenant.to_string()));
        }
        let expected = snapshot.mod_revision(&key);
        Ok((Write::Etcd { key, value, expected, snapshot }, doc.to_string(), next))
    }

    /// Looks up again each `dns` name in force whose `dns_refresh` has
    /// passed since its last lookup. When an address set changed, the text
    /// in force (as the last reload read it: the file, or the file merged
    /// with the store's tenants) is parsed again with the new answers and
    /// applied like a reload: built aside, new endpoints probed, swapped
    /// once. A name that fails keeps its addresses. `None`: no address changed.
    pub fn refresh_dns(&self) -> Option<Result<ReloadReport, Vec<ConfigError>>> {
        let (nameservers, kept, due) = {
            let mut state = self.lock();
            let started = Instant::now();
            let every: Vec<(String, Duration)> =
                state.applied.dns_refresh().into_iter().map(|(name, every)| (name.to_string(), every)).collect();
            // A name not looked up here yet was looked up by the load that brought it.
            let last = &mut state.dns_looked_up;
            last.retain(|name, _| every.iter().any(|(n, _)| n == name));
            let due: Vec<String> = every
                .into_iter()
                .filter(|(name, every)| started.duration_since(*last.entry(name.clone()).or_insert(started)) >= *every)
                .map(|(name, _)| name)
                .collect();
            if due.is_empty() {
                return None;
            }
            for name in &due {
                last.insert(name.clone(), started);
            }
            (state.applied.dns.nameservers.clone(), state.applied.dns.answers.clone(), due)
        };
        // Looked up without the lock: a slow DNS server holds up no reload.
        let started = Instant::now();
        let looked_up = config::resolve(due.iter().map(String::as_str), &nameservers, &kept);
        let mut state = self.lock();
        // Over the answers in force now: a reload while the lookups ran may
        // have brought newer answers, or dropped names.
        let mut answers = state.applied.dns.answers.clone();
        for (name, answer) in &looked_up {
            if let Some(slot) = answers.get_mut(name) {
                *slot = answer.clone();
            }
        }
        self.count_dns(&looked_up, &answers);
        if config::same_addresses(&answers, &state.applied.dns.answers) {
            state.applied.dns.answers = answers;
            return None;
        }
        let text = state.text.clone();
        let result = config::parse_keeping(&self.source.name(), &text, &answers)
            .map(|next| self.apply(&mut state, next, text, started));
        self.record(&mut state, "dns-refresh", "dns", None, &result);
        drop(state);
        self.trim();
        Some(result)
    }

    /// Counts the lookups of `looked_up` and sets how many names of `all`
    /// (the answers now in force) fail now.
    fn count_dns(&self, looked_up: &Answers, all: &Answers) {
        if let Some(metrics) = self.metrics() {
            let failed = |answers: &Answers| answers.values().filter(|a| a.error.is_some()).count() as u64;
            let failed_now = failed(looked_up);
            metrics.dns_round(looked_up.len() as u64 - failed_now, failed_now, failed(all));
        }
    }

    /// A tenant in force and the `dns` answers its names were built from.
    pub fn applied_tenant(&self, id: &str) -> Option<(Arc<Tenant>, Answers)> {
        let state = self.lock();
        Some((state.applied.tenants.get(id)?.clone(), state.applied.dns.answers.clone()))
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
        next.store = state.applied.store.clone();
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
    if old.store != new.store {
        report.restart_required.push("store");
    }
    if old.quotas != new.quotas {
        report.restart_required.push("quotas");
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

/// Looks the `dns` names in force up again, each every `dns_refresh`, on a
/// thread of its own.
pub fn refresh_dns_forever(reloader: Arc<Reloader>) {
    // A quarter of the shortest dns_refresh there may be: a name is looked
    // up at most a quarter second after its own refresh has passed.
    const TICK: Duration = Duration::from_millis(250);
    let first = reloader.lock().applied.dns.answers.clone();
    reloader.count_dns(&first, &first);
    std::thread::spawn(move || loop {
        std::thread::sleep(TICK);
        let _ = reloader.refresh_dns();
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
