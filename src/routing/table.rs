//! The routing table: (tenant, signal) → pool, and the store that publishes it.
//!
//! A [`RoutingTable`] is immutable once built. [`RouteStore`] holds the
//! current one behind an `ArcSwap`: the request path does one `load`, one
//! hash lookup by `&str` (no allocation) and clones the pool's `Arc` into the
//! request context, so a request finishes on the table it started with even
//! when a reload swaps a new one in.

use super::{Access, Signal};
use crate::config::{Config, TenantStatus};
use crate::metrics::{Metrics, REJECTION_REASONS, UNKNOWN_TENANT};
use crate::quota::{Limits, QuotaRegistry};
use crate::upstream::{EndpointHealth, HealthRegistry, Pool};
use prometheus::IntCounter;
use arc_swap::ArcSwap;
use http::HeaderName;
use std::collections::HashMap;
use std::sync::Arc;

/// Why a request gets no pool. Each maps to one status in `proxy::errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoTenant,
    UnknownTenant,
    Suspended,
    SignalNotEnabled(Signal),
    ReadOnly,
    Unroutable,
    /// A missing credential where one is needed, or a wrong one.
    Unauthorized,
    /// The credential proves another tenant than the header names.
    CredentialMismatch,
    /// Over the request rate; retry after this long.
    RateLimited(std::time::Duration),
    TooManyInFlight,
    BodyTooLarge,
}

impl Refusal {
    /// Index of the reason in `metrics::REJECTION_REASONS`.
    pub fn reason_index(&self) -> usize {
        match self {
            Refusal::NoTenant => 0,
            Refusal::UnknownTenant => 1,
            Refusal::Suspended => 2,
            Refusal::SignalNotEnabled(_) => 3,
            Refusal::ReadOnly => 4,
            Refusal::Unroutable => 5,
            Refusal::Unauthorized => 7,
            Refusal::CredentialMismatch => 8,
            Refusal::RateLimited(_) => 9,
            Refusal::TooManyInFlight => 10,
            Refusal::BodyTooLarge => 11,
        }
    }
}

/// Rejection counters by reason, in `metrics::REJECTION_REASONS` order.
pub type Rejections = [IntCounter; REJECTION_REASONS.len()];

/// State that outlives routing tables, which every table build draws on:
/// endpoint health, quota state, and the metrics registry.
pub struct Shared {
    pub health: Arc<HealthRegistry>,
    pub quotas: QuotaRegistry,
    pub metrics: Option<Arc<Metrics>>,
}

impl Shared {
    pub fn new(health: Arc<HealthRegistry>, metrics: Option<Arc<Metrics>>) -> Self {
        Shared { health, quotas: QuotaRegistry::default(), metrics }
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
    /// Indexed by [`Signal::index`]; `Some` only for signals the tenant may use.
    pools: [Option<Arc<Pool>>; 3],
    /// Whether the tenant has credentials (and so refuses the header alone).
    pub has_credentials: bool,
    /// Quota state of the tenant as a whole.
    pub limits: Option<Arc<Limits>>,
    /// Rejection counters by reason (`metrics::REJECTION_REASONS`), when metrics are on.
    rejections: Option<Rejections>,
}

impl TenantRoute {
    /// The pools of the signals the tenant may use.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.iter().flatten()
    }
}

pub struct RoutingTable {
    header: HeaderName,
    tenants: HashMap<String, TenantRoute>,
    /// Rejection counters of requests naming no configured tenant.
    unknown_rejections: Option<Rejections>,
    require_credentials: bool,
    /// SHA-256 of a bearer token → its tenant.
    bearer: HashMap<[u8; 32], Arc<str>>,
    /// Basic-auth user → its tenant and the SHA-256 of its password.
    basic: HashMap<String, (Arc<str>, [u8; 32])>,
}

impl RoutingTable {
    /// Builds the table for a validated config. Never touches the network:
    /// endpoint health and quota state come from (and new ones are
    /// registered with) `shared`; with metrics on, every pool carries its
    /// series' handles.
    pub fn build(config: &Config, shared: &Shared) -> RoutingTable {
        let metrics = shared.metrics.as_deref();
        let (mut bearer, mut basic) = (HashMap::new(), HashMap::new());
        let tenants = config
            .tenants
            .values()
            .map(|tenant| {
                let id: Arc<str> = tenant.id.as_str().into();
                let pools = Signal::ALL.map(|signal| {
                    let deployment = tenant.deployment(signal).filter(|_| tenant.features.allows(signal))?;
                    Some(Arc::new(Pool::new(id.clone(), signal, deployment, shared)))
                });
                if let Some(auth) = &tenant.auth {
                    bearer.extend(auth.bearer_sha256.iter().map(|digest| (*digest, id.clone())));
                    basic.extend(auth.basic.iter().map(|(user, digest)| (user.clone(), (id.clone(), *digest))));
                }
                let route = TenantRoute {
                    id,
                    suspended: tenant.status == TenantStatus::Suspended,
                    read_only: tenant.features.read_only,
                    pools,
                    has_credentials: tenant.auth.is_some(),
                    limits: shared.quotas.limits(&tenant.id, &tenant.quotas),
                    rejections: metrics.map(|m| m.rejections(&tenant.id)),
                };
                (tenant.id.clone(), route)
            })
            .collect();
        RoutingTable {
            header: config.tenancy.header.clone(),
            tenants,
            unknown_rejections: metrics.map(|m| m.rejections(UNKNOWN_TENANT)),
            require_credentials: config.tenancy.require_credentials,
            bearer,
            basic,
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
            Some(route) => route.rejections.as_ref(),
            None => self.unknown_rejections.as_ref(),
        }
    }

    pub fn tenant(&self, id: &str) -> Option<&TenantRoute> {
        self.tenants.get(id)
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

    /// The tenant and the pool serving its `signal`, or why there is none.
    pub fn route(&self, tenant: &str, signal: Signal, access: Access) -> Result<(&TenantRoute, &Arc<Pool>), Refusal> {
        let route = self.tenants.get(tenant).ok_or(Refusal::UnknownTenant)?;
        if route.suspended {
            return Err(Refusal::Suspended);
        }
        let pool = route.pools[signal.index()].as_ref().ok_or(Refusal::SignalNotEnabled(signal))?;
        if route.read_only && access == Access::Ingest {
            return Err(Refusal::ReadOnly);
        }
        Ok((route, pool))
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
"#;

    fn table() -> RoutingTable {
        RoutingTable::build(&parse("t.toml", CONFIG).expect("valid config"), &Shared::for_tests())
    }

    #[test]
    fn routes_each_tenant_signal_to_its_own_pool() {
        let table = table();
        let (_, pool) = table.route("acme", Signal::Metrics, Access::Query).unwrap();
        assert_eq!((&*pool.tenant, pool.signal), ("acme", Signal::Metrics));
        let urls: Vec<&str> = pool.endpoints().iter().map(|e| &*e.url).collect();
        assert_eq!(urls, ["http://127.0.0.1:18001", "http://127.0.0.1:18002"]);
        let (_, reader) = table.route("reader", Signal::Traces, Access::Query).unwrap();
        assert_eq!(&*reader.endpoint(0).url, "http://127.0.0.1:18005");
        assert_eq!(table.tenant_count(), 3);
    }

    #[test]
    fn refusals() {
        let table = table();
        let refusal = |t, s, a| table.route(t, s, a).err();
        assert_eq!(refusal("nobody", Signal::Metrics, Access::Query), Some(Refusal::UnknownTenant));
        assert_eq!(refusal("ACME", Signal::Metrics, Access::Query), Some(Refusal::UnknownTenant));
        assert_eq!(refusal("frozen", Signal::Metrics, Access::Query), Some(Refusal::Suspended));
        // A deployment exists but features.signals leaves it out.
        assert_eq!(refusal("acme", Signal::Logs, Access::Query), Some(Refusal::SignalNotEnabled(Signal::Logs)));
        assert_eq!(refusal("acme", Signal::Traces, Access::Query), Some(Refusal::SignalNotEnabled(Signal::Traces)));
        assert_eq!(refusal("reader", Signal::Traces, Access::Ingest), Some(Refusal::ReadOnly));
    }

    #[test]
    fn a_swap_leaves_loaded_tables_alone() {
        let store = RouteStore::new(table());
        let before = Arc::clone(&store.load());
        store.swap(RoutingTable::build(&parse("t.toml", "").unwrap(), &Shared::for_tests()));
        assert_eq!(before.tenant_count(), 3);
        assert_eq!(store.load().tenant_count(), 0);
    }
}
