//! The routing table: (tenant, signal) → pool, and the store that publishes it.
//!
//! A [`RoutingTable`] is immutable once built. [`RouteStore`] holds the
//! current one behind an `ArcSwap`: the request path does one `load`, one
//! hash lookup by `&str` (no allocation) and clones the pool's `Arc` into the
//! request context, so a request finishes on the table it started with even
//! when a reload swaps a new one in.

use super::{Access, Signal};
use crate::config::{Config, TenantStatus};
use crate::metrics::{Metrics, UNKNOWN_TENANT};
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
        }
    }
}

/// What the table knows of one tenant.
pub struct TenantRoute {
    pub id: Arc<str>,
    pub suspended: bool,
    pub read_only: bool,
    /// Indexed by [`Signal::index`]; `Some` only for signals the tenant may use.
    pools: [Option<Arc<Pool>>; 3],
    /// Rejection counters by reason (`metrics::REJECTION_REASONS`), when metrics are on.
    rejections: Option<[IntCounter; 7]>,
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
    unknown_rejections: Option<[IntCounter; 7]>,
}

impl RoutingTable {
    /// Builds the table for a validated config. Never touches the network:
    /// endpoint health comes from (and new endpoints are registered with) `registry`.
    /// With `metrics`, every pool carries its series' handles.
    pub fn build(config: &Config, registry: &HealthRegistry, metrics: Option<&Metrics>) -> RoutingTable {
        let tenants = config
            .tenants
            .values()
            .map(|tenant| {
                let id: Arc<str> = tenant.id.as_str().into();
                let pools = Signal::ALL.map(|signal| {
                    let deployment = tenant.deployment(signal).filter(|_| tenant.features.allows(signal))?;
                    Some(Arc::new(Pool::new(id.clone(), signal, deployment, registry, metrics)))
                });
                let route = TenantRoute {
                    id,
                    suspended: tenant.status == TenantStatus::Suspended,
                    read_only: tenant.features.read_only,
                    pools,
                    rejections: metrics.map(|m| m.rejections(&tenant.id)),
                };
                (tenant.id.clone(), route)
            })
            .collect();
        RoutingTable {
            header: config.tenancy.header.clone(),
            tenants,
            unknown_rejections: metrics.map(|m| m.rejections(UNKNOWN_TENANT)),
        }
    }

    /// The header that names the tenant.
    pub fn tenant_header(&self) -> &HeaderName {
        &self.header
    }

    /// The rejection counters for a request naming `tenant`: its own when
    /// configured, else the one `unknown` set — never the client's value.
    pub fn rejections(&self, tenant: &str) -> Option<&[IntCounter; 7]> {
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

    /// The pool serving `tenant`'s `signal`, or why there is none.
    pub fn route(&self, tenant: &str, signal: Signal, access: Access) -> Result<&Arc<Pool>, Refusal> {
        let route = self.tenants.get(tenant).ok_or(Refusal::UnknownTenant)?;
        if route.suspended {
            return Err(Refusal::Suspended);
        }
        let pool = route.pools[signal.index()].as_ref().ok_or(Refusal::SignalNotEnabled(signal))?;
        if route.read_only && access == Access::Ingest {
            return Err(Refusal::ReadOnly);
        }
        Ok(pool)
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
        self.current.store(Arc::new(table));
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
        RoutingTable::build(&parse("t.toml", CONFIG).expect("valid config"), &HealthRegistry::assume_healthy(), None)
    }

    #[test]
    fn routes_each_tenant_signal_to_its_own_pool() {
        let table = table();
        let pool = table.route("acme", Signal::Metrics, Access::Query).unwrap();
        assert_eq!((&*pool.tenant, pool.signal), ("acme", Signal::Metrics));
        let urls: Vec<&str> = pool.endpoints().iter().map(|e| &*e.url).collect();
        assert_eq!(urls, ["http://127.0.0.1:18001", "http://127.0.0.1:18002"]);
        let reader = table.route("reader", Signal::Traces, Access::Query).unwrap();
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
        store.swap(RoutingTable::build(&parse("t.toml", "").unwrap(), &HealthRegistry::assume_healthy(), None));
        assert_eq!(before.tenant_count(), 3);
        assert_eq!(store.load().tenant_count(), 0);
    }
}
