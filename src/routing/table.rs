//! The routing table: (tenant, signal) → pool, and the store that publishes it.
//!
//! A [`RoutingTable`] is immutable once built. [`RouteStore`] holds the
//! current one behind an `ArcSwap`: the request path does one `load`, one
//! hash lookup by `&str` (no allocation) and clones the pool's `Arc` into the
//! request context, so a request finishes on the table it started with even
//! when a reload swaps a new one in.

use super::Tokens;
use crate::api::{cluster_form, Access, Endpoint, Service, Signal};
use crate::config::{Config, TenantStatus};
use crate::metrics::{Metrics, Rejections, TenantSeries, UNKNOWN_TENANT};
use crate::migration::{FanOut, MirrorRegistry, Registries, SignalMigration};
use crate::quota::{Limits, QuotaRegistry};
use crate::rejection::Rejection;
use crate::upstream::{EndpointHealth, HealthRegistry, Pool};
use arc_swap::ArcSwap;
use http::HeaderName;
use std::collections::HashMap;
use std::sync::Arc;

/// State that outlives routing tables, which every table build draws on:
/// endpoint health, quota state, and the metrics registry.
pub struct Shared {
    pub health: Arc<HealthRegistry>,
    pub quotas: QuotaRegistry,
    pub metrics: Option<Arc<Metrics>>,
    /// Migrations' copy queues (their workers on the health runtime).
    pub mirrors: MirrorRegistry,
}

impl Shared {
    pub fn new(health: Arc<HealthRegistry>, metrics: Option<Arc<Metrics>>) -> Self {
        let mirrors = MirrorRegistry::new(health.runtime().cloned(), metrics.clone());
        Shared { health, quotas: QuotaRegistry::default(), metrics, mirrors }
    }

    /// Rate quotas kept by `quotas` (global, leased from Redis) instead of
    /// this router alone.
    pub fn with_quotas(self, quotas: QuotaRegistry) -> Self {
        Shared { quotas, ..self }
    }

    /// No probes (endpoints taken as healthy) and no metrics: for tests and
    /// benchmarks of routing alone.
    pub fn for_tests() -> Self {
        Shared::new(HealthRegistry::assume_healthy(), None)
    }
}

/// What the table knows of one tenant.
pub struct TenantRoute {
    pub id: Arc<str>,
    pub suspended: bool,
    pub read_only: bool,
    /// The tier the tenant inherits from, for the status page.
    pub tier: Option<Arc<str>>,
    /// Admin operations granted, as [`crate::api::AdminOp::bit`]s.
    admin_ops: u16,
    /// Indexed by [`Signal::index`]; `Some` only for signals the tenant may
    /// use. For metrics on a shared cluster: vminsert.
    pools: [Option<Arc<Pool>>; 3],
    /// vmselect, for metrics on a shared cluster.
    select: Option<Arc<Pool>>,
    /// Indexed by [`Signal::index`]: a migration under way.
    migrations: [Option<Arc<SignalMigration>>; 3],
    /// Indexed by [`Signal::index`]: ingest fanned out to every primary.
    fanouts: [Option<Arc<FanOut>>; 3],
    /// Whether the tenant has credentials (and so refuses the header alone).
    pub has_credentials: bool,
    /// Quota state of the tenant as a whole.
    pub limits: Option<Arc<Limits>>,
    /// The tenant's metric series, when metrics are on.
    series: Option<Arc<TenantSeries>>,
}

impl TenantRoute {
    fn build(tenant: &crate::config::Tenant, shared: &Shared, series: Option<Arc<TenantSeries>>) -> TenantRoute {
        let id: Arc<str> = tenant.id.as_str().into();
        // A migration's `to` serves once it is switched.
        let serving =
            |signal| tenant.deployment(signal).filter(|_| tenant.features.allows(signal)).map(|d| d.serving());
        let pools = Signal::ALL.map(|signal| {
            let deployment = serving(signal)?;
            Some(Arc::new(Pool::new(id.clone(), signal, deployment, &shared.health, &shared.quotas, series.as_ref())))
        });
        let registries = Registries {
            health: &shared.health,
            quotas: &shared.quotas,
            mirrors: &shared.mirrors,
            metrics: shared.metrics.as_ref(),
        };
        let migrations = Signal::ALL.map(|signal| {
            let deployment = tenant.deployment(signal).filter(|_| tenant.features.allows(signal))?;
            SignalMigration::build(&id, signal, deployment, &registries).map(Arc::new)
        });
        let fanouts = Signal::ALL.map(|signal| FanOut::build(&id, signal, serving(signal)?, &registries).map(Arc::new));
        let select = serving(Signal::Metrics).and_then(|deployment| deployment.select_service()).map(|select| {
            let (health, quotas) = (&shared.health, &shared.quotas);
            Arc::new(Pool::new(id.clone(), Signal::Metrics, &select, health, quotas, series.as_ref()))
        });
        TenantRoute {
            id,
            suspended: tenant.status == TenantStatus::Suspended,
            read_only: tenant.features.read_only,
            tier: tenant.tier.as_deref().map(Arc::from),
            admin_ops: tenant.features.admin_api.iter().fold(0, |ops, op| ops | op.bit()),
            pools,
            select,
            migrations,
            fanouts,
            has_credentials: tenant.auth.is_some(),
            limits: shared.quotas.limits(&tenant.id, &tenant.quotas),
            series,
        }
    }

    /// The tenant's rejection counters, when metrics are on.
    pub fn rejections(&self) -> Option<&Rejections> {
        self.series.as_ref()?.rejections()
    }

    /// The write fan-out of `signal`'s deployment, if its policy asks for one.
    pub fn fanout(&self, signal: Signal) -> Option<&Arc<FanOut>> {
        self.fanouts[signal.index()].as_ref()
    }

    /// The migration of `signal` under way, if any.
    pub fn migration(&self, signal: Signal) -> Option<&Arc<SignalMigration>> {
        self.migrations[signal.index()].as_ref()
    }

    /// The pools of the signals the tenant may use (vmselect's included).
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.iter().flatten().chain(&self.select)
    }

    /// Each pool with the cluster service it is (`None`: the signal's one
    /// deployment, dedicated or a shared VictoriaLogs/VictoriaTraces).
    pub fn services(&self) -> impl Iterator<Item = (&Arc<Pool>, Option<Service>)> {
        let split = self.select.is_some();
        let main = self
            .pools
            .iter()
            .flatten()
            .map(move |pool| (pool, (split && pool.signal == Signal::Metrics).then_some(Service::Insert)));
        main.chain(self.select.iter().map(|pool| (pool, Some(Service::Select))))
    }
}

pub struct RoutingTable {
    header: HeaderName,
    /// Shared with the tables before and after that have the same tenant
    /// config: a reload builds only the tenants it changes.
    tenants: HashMap<String, Arc<TenantRoute>>,
    /// Series of requests naming no configured tenant.
    unknown: Option<Arc<TenantSeries>>,
    require_credentials: bool,
    /// SHA-256 of a bearer token → its tenant.
    bearer: HashMap<[u8; 32], Arc<str>>,
    /// Basic-auth user → its tenant and the SHA-256 of its password.
    basic: HashMap<String, (Arc<str>, [u8; 32])>,
    /// Client certificate name → its tenant.
    subjects: HashMap<String, Arc<str>>,
    /// JWT verification, when `[tenancy.jwt]` is set.
    tokens: Option<Tokens>,
}

impl RoutingTable {
    /// Builds the table for a validated config. Never touches the network:
    /// endpoint health and quota state come from (and new ones are
    /// registered with) `shared`.
    pub fn build(config: &Config, shared: &Shared) -> RoutingTable {
        RoutingTable::rebuild(config, shared, None)
    }

    /// Builds the table for `config`, taking over from `previous` (the
    /// table in force and the config it was built from) every tenant whose
    /// config is unchanged: its pools, round-robin positions and metric
    /// handles go on as they were, and a reload costs the parse plus the
    /// tenants it changes.
    pub fn rebuild(config: &Config, shared: &Shared, previous: Option<(&Config, &RoutingTable)>) -> RoutingTable {
        let metrics = shared.metrics.as_ref();
        let (mut bearer, mut basic, mut subjects) = (HashMap::new(), HashMap::new(), HashMap::new());
        let tenants = config
            .tenants
            .values()
            .map(|tenant| {
                if let Some(auth) = &tenant.auth {
                    let id: Arc<str> = tenant.id.as_str().into();
                    bearer.extend(auth.bearer_sha256.iter().map(|digest| (*digest, id.clone())));
                    basic.extend(auth.basic.iter().map(|(user, digest)| (user.clone(), (id.clone(), *digest))));
                    subjects.extend(auth.cert_subjects.iter().map(|subject| (subject.clone(), id.clone())));
                }
                let before = previous.and_then(|(config, table)| {
                    Some((config.tenants.get(&tenant.id)?, table.tenants.get(&tenant.id)?))
                });
                let route = match before {
                    Some((config, route)) if **config == **tenant => route.clone(),
                    // Changed: new pools, but the same series, so retiring the
                    // tenant later reaches the pools of every generation.
                    Some((_, route)) => Arc::new(TenantRoute::build(tenant, shared, route.series.clone())),
                    None => {
                        let series = metrics.map(|m| TenantSeries::new(m.clone(), tenant.id.as_str().into()));
                        Arc::new(TenantRoute::build(tenant, shared, series))
                    }
                };
                (tenant.id.clone(), route)
            })
            .collect();
        let unknown = metrics.map(|m| TenantSeries::new(m.clone(), UNKNOWN_TENANT.into()));
        // Made at once, unlike a tenant's: one series per reason, and
        // `rejections_total` is never absent from a scrape.
        let _ = unknown.as_ref().map(|series| series.rejections());
        RoutingTable {
            header: config.tenancy.header.clone(),
            tenants,
            unknown,
            require_credentials: config.tenancy.require_credentials,
            bearer,
            basic,
            subjects,
            tokens: config
                .tenancy
                .jwt
                .as_ref()
                .map(|jwt| Tokens::new(jwt, previous.and_then(|(_, table)| table.tokens.as_ref()))),
        }
    }

    /// The tenant that lists a client certificate name, if one does.
    pub fn certificate_tenant(&self, name: &str) -> Option<&str> {
        self.subjects.get(name).map(|id| &**id)
    }

    /// JWT verification, when configured.
    pub fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_ref()
    }

    /// Deletes the metric series of `tenant`, which the next table leaves out.
    pub fn retire(&self, tenant: &str) {
        if let Some(series) = self.tenants.get(tenant).and_then(|route| route.series.as_ref()) {
            series.retire();
        }
    }

    pub fn require_credentials(&self) -> bool {
        self.require_credentials
    }

    /// The tenant whose bearer token has this SHA-256.
    pub fn bearer_tenant(&self, digest: &[u8; 32]) -> Option<&str> {
        self.bearer.get(digest).map(|id| &**id)
    }

    /// A basic-auth user's tenant and password digest.
    pub fn basic_user(&self, user: &str) -> Option<(&str, &[u8; 32])> {
        self.basic.get(user).map(|(id, digest)| (&**id, digest))
    }

    /// The header that names the tenant.
    pub fn tenant_header(&self) -> &HeaderName {
        &self.header
    }

    /// The rejection counters for a request naming `tenant`: its own when
    /// configured, else the one `unknown` set — never the client's value.
    pub fn rejections(&self, tenant: &str) -> Option<&Rejections> {
        match self.tenants.get(tenant) {
            Some(route) => route.rejections(),
            None => self.unknown.as_ref()?.rejections(),
        }
    }

    pub fn tenant(&self, id: &str) -> Option<&TenantRoute> {
        self.tenants.get(id).map(|route| &**route)
    }

    /// Every tenant id of the table.
    pub fn tenant_ids(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// The health of every endpoint of the table (shared ones repeated).
    pub fn endpoint_health(&self) -> impl Iterator<Item = &Arc<EndpointHealth>> {
        self.tenants
            .values()
            .flat_map(|route| route.pools())
            .flat_map(|pool| pool.endpoints().iter().map(|e| &e.health))
    }

    /// The tenant and the pool serving `endpoint` for it, or why there is
    /// none: a read-only tenant neither writes nor calls an admin endpoint,
    /// and an admin endpoint needs its operation granted.
    pub fn route(&self, tenant: &str, endpoint: &Endpoint) -> Result<(&TenantRoute, &Arc<Pool>), Rejection> {
        let route = self.tenants.get(tenant).ok_or(Rejection::UnknownTenant)?;
        if route.suspended {
            return Err(Rejection::Suspended);
        }
        let pool = route.pools[endpoint.signal.index()].as_ref().ok_or(Rejection::SignalNotEnabled)?;
        match endpoint.access {
            Access::Ingest | Access::Admin if route.read_only => return Err(Rejection::ReadOnly),
            Access::Admin if endpoint.op.is_none_or(|op| route.admin_ops & op.bit() == 0) => {
                return Err(Rejection::AdminNotGranted)
            }
            _ => {}
        }
        if pool.cluster.is_none() {
            return Ok((&**route, pool));
        }
        // A shared cluster: only what is scoped to the tenant there. A
        // VictoriaMetrics cluster serves each endpoint on vminsert or vmselect.
        let select = route.select.as_ref().filter(|_| endpoint.signal == Signal::Metrics);
        match (select, cluster_form(endpoint)) {
            (Some(select), Some(form)) if !form.service.on_insert() => Ok((&**route, select)),
            (Some(_), Some(_)) => Ok((&**route, pool)),
            (None, _) if endpoint.access != Access::Admin => Ok((&**route, pool)),
            _ => Err(Rejection::NotOnSharedCluster),
        }
    }
}

/// The current routing table, swapped whole on reload.
pub struct RouteStore {
    current: ArcSwap<RoutingTable>,
}

impl RouteStore {
    pub fn new(table: RoutingTable) -> Self {
        RouteStore { current: ArcSwap::from_pointee(table) }
    }

    /// The table in force now; cheap, lock-free.
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.current.load()
    }

    /// The table in force now, as an `Arc` of its own.
    pub fn load_full(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    /// Publishes a new table in one store.
    pub fn swap(&self, table: RoutingTable) {
        self.swap_arc(Arc::new(table));
    }

    /// Publishes an already shared table in one store.
    pub fn swap_arc(&self, table: Arc<RoutingTable>) {
        self.current.store(table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const CONFIG: &str = r#"
[tenants.acme.metrics]
endpoints = ["http://127.0.0.1:18001", "http://127.0.0.1:18002"]
[tenants.acme.logs]
endpoints = ["http://127.0.0.1:18003"]
[tenants.acme.features]
signals = ["metrics"]

[tenants.frozen]
status = "suspended"
[tenants.frozen.metrics]
endpoints = ["http://127.0.0.1:18004"]

[tenants.reader]
features = { read_only = true }
[tenants.reader.traces]
endpoints = ["http://127.0.0.1:18005"]

[tenants.operator]
features = { admin_api = ["snapshot", "flags"] }
[tenants.operator.metrics]
endpoints = ["http://127.0.0.1:18007"]
"#;

    /// An endpoint of the surface of this signal and class.
    fn ep(signal: Signal, access: Access) -> &'static Endpoint {
        crate::api::SURFACE.iter().find(|e| e.signal == signal && e.access == access).unwrap()
    }

    fn table() -> RoutingTable {
        RoutingTable::build(&parse("t.toml", CONFIG).expect("valid config"), &Shared::for_tests())
    }

    #[test]
    fn routes_each_tenant_signal_to_its_own_pool() {
        let table = table();
        let (_, pool) = table.route("acme", ep(Signal::Metrics, Access::Query)).unwrap();
        assert_eq!((&*pool.tenant, pool.signal), ("acme", Signal::Metrics));
        let urls: Vec<&str> = pool.endpoints().iter().map(|e| &*e.url).collect();
        assert_eq!(urls, ["http://127.0.0.1:18001", "http://127.0.0.1:18002"]);
        let (_, reader) = table.route("reader", ep(Signal::Traces, Access::Query)).unwrap();
        assert_eq!(&*reader.endpoint(0).url, "http://127.0.0.1:18005");
        assert_eq!(table.tenant_count(), 4);
    }

    #[test]
    fn refusals() {
        let table = table();
        let refusal = |t, s, a| table.route(t, ep(s, a)).err();
        assert_eq!(refusal("nobody", Signal::Metrics, Access::Query), Some(Rejection::UnknownTenant));
        assert_eq!(refusal("ACME", Signal::Metrics, Access::Query), Some(Rejection::UnknownTenant));
        assert_eq!(refusal("frozen", Signal::Metrics, Access::Query), Some(Rejection::Suspended));
        // A deployment exists but features.signals leaves it out.
        assert_eq!(refusal("acme", Signal::Logs, Access::Query), Some(Rejection::SignalNotEnabled));
        assert_eq!(refusal("acme", Signal::Traces, Access::Query), Some(Rejection::SignalNotEnabled));
        assert_eq!(refusal("reader", Signal::Traces, Access::Ingest), Some(Rejection::ReadOnly));
        assert_eq!(refusal("reader", Signal::Traces, Access::Admin), Some(Rejection::ReadOnly));
        assert_eq!(refusal("acme", Signal::Metrics, Access::Admin), Some(Rejection::AdminNotGranted));
    }

    #[test]
    fn an_admin_endpoint_needs_its_operation_granted() {
        let table = table();
        let admin = |path: &str| crate::api::lookup(path, Some(Signal::Metrics), false).unwrap();
        assert!(table.route("operator", admin("/snapshot/create")).is_ok());
        assert!(table.route("operator", admin("/flags")).is_ok());
        assert_eq!(
            table.route("operator", admin("/api/v1/admin/tsdb/delete_series")).err(),
            Some(Rejection::AdminNotGranted)
        );
        assert_eq!(table.route("operator", admin("/metrics")).err(), Some(Rejection::AdminNotGranted));
    }

    #[test]
    fn a_rebuild_takes_over_unchanged_tenants_and_builds_changed_ones() {
        let shared = Shared::for_tests();
        let before = parse("t.toml", CONFIG).unwrap();
        let old = RoutingTable::build(&before, &shared);
        let edited = CONFIG.replace("18005", "18006");
        let after = parse("t.toml", &edited).unwrap();
        let new = RoutingTable::rebuild(&after, &shared, Some((&before, &old)));
        let pool = |table: &RoutingTable, tenant: &str, signal: Signal| {
            table.route(tenant, ep(signal, Access::Query)).unwrap().1.clone()
        };
        assert!(
            Arc::ptr_eq(&pool(&old, "acme", Signal::Metrics), &pool(&new, "acme", Signal::Metrics)),
            "unchanged tenant rebuilt"
        );
        let (old_reader, new_reader) = (pool(&old, "reader", Signal::Traces), pool(&new, "reader", Signal::Traces));
        assert!(!Arc::ptr_eq(&old_reader, &new_reader), "changed tenant taken over");
        assert_eq!(&*new_reader.endpoint(0).url, "http://127.0.0.1:18006");
        // Without the config the old table was built from, nothing is taken over.
        let fresh = RoutingTable::rebuild(&after, &shared, None);
        assert!(!Arc::ptr_eq(&pool(&old, "acme", Signal::Metrics), &pool(&fresh, "acme", Signal::Metrics)));
    }

    #[test]
    fn retiring_a_tenant_reaches_the_pools_of_every_generation() {
        let metrics = Metrics::new();
        let shared = Shared::new(HealthRegistry::assume_healthy(), Some(metrics.clone()));
        let first = parse("t.toml", CONFIG).unwrap();
        let t1 = RoutingTable::build(&first, &shared);
        let changed = parse("t.toml", &CONFIG.replace("18005", "18006")).unwrap();
        let t2 = RoutingTable::rebuild(&changed, &shared, Some((&first, &t1)));
        let without = parse("t.toml", &CONFIG[..CONFIG.find("[tenants.reader]").unwrap()]).unwrap();
        let _t3 = RoutingTable::rebuild(&without, &shared, Some((&changed, &t2)));
        t2.retire("reader");
        // A request that started on the first table finishes only now.
        let (_, old_pool) = t1.route("reader", ep(Signal::Traces, Access::Query)).unwrap();
        assert!(old_pool.metrics().is_none(), "a retired tenant's pool made series");
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(!text.contains("reader"), "{text}");
    }

    #[test]
    fn a_shared_cluster_serves_each_endpoint_on_its_service_or_refuses_it() {
        let config = parse(
            "t.toml",
            r#"
[tenants.small.metrics]
account_id = 42
insert_endpoints = ["http://127.0.0.1:18480"]
select_endpoints = ["http://127.0.0.1:18481"]
quotas = { max_concurrent_requests = 5 }
[tenants.small.logs]
account_id = 42
endpoints = ["http://127.0.0.1:19428"]
[tenants.small.features]
admin_api = ["delete_series"]
"#,
        )
        .unwrap();
        let table = RoutingTable::build(&config, &Shared::for_tests());
        let at = |path: &str, signal| {
            let endpoint = crate::api::lookup(path, Some(signal), false).unwrap();
            table.route("small", endpoint).map(|(_, pool)| pool.endpoint(0).url.to_string())
        };
        assert_eq!(at("/api/v1/write", Signal::Metrics).unwrap(), "http://127.0.0.1:18480");
        assert_eq!(at("/influx/query", Signal::Metrics).unwrap(), "http://127.0.0.1:18480");
        assert_eq!(at("/api/v1/query", Signal::Metrics).unwrap(), "http://127.0.0.1:18481");
        assert_eq!(at("/vmui/", Signal::Metrics).unwrap(), "http://127.0.0.1:18481");
        assert_eq!(at("/api/v1/admin/tsdb/delete_series", Signal::Metrics).unwrap(), "http://127.0.0.1:18481");
        assert_eq!(at("/api/v1/push", Signal::Metrics), Err(Rejection::NotOnSharedCluster));
        assert_eq!(at("/insert/jsonline", Signal::Logs).unwrap(), "http://127.0.0.1:19428");
        // Cluster-wide operations are nobody's to call, granted or not.
        assert_eq!(at("/delete/run_task", Signal::Logs), Err(Rejection::NotOnSharedCluster));
        assert_eq!(at("/snapshot/create", Signal::Metrics), Err(Rejection::AdminNotGranted));
        let small = table.tenant("small").unwrap();
        let services: Vec<_> = small.services().map(|(pool, service)| (pool.signal, service)).collect();
        assert_eq!(
            services,
            [(Signal::Metrics, Some(Service::Insert)), (Signal::Logs, None), (Signal::Metrics, Some(Service::Select))]
        );
        assert!(small.pools().all(|pool| pool.cluster.is_some()));
        // The signal's quota is one, whichever service serves a request.
        let metrics: Vec<_> = small.pools().filter(|pool| pool.signal == Signal::Metrics).collect();
        assert!(Arc::ptr_eq(metrics[0].limits.as_ref().unwrap(), metrics[1].limits.as_ref().unwrap()));
    }

    #[test]
    fn a_swap_leaves_loaded_tables_alone() {
        let store = RouteStore::new(table());
        let before = Arc::clone(&store.load());
        store.swap(RoutingTable::build(&parse("t.toml", "").unwrap(), &Shared::for_tests()));
        assert_eq!(before.tenant_count(), 4);
        assert_eq!(store.load().tenant_count(), 0);
    }
}
