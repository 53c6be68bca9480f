//! Gauges read from the routing table in force at each scrape, so they can
//! never outlive a tenant or an endpoint: endpoint health, latest probe
//! latency, pools per endpoint, tenants loaded. Registered with the metrics
//! registry by [`watch`].

use super::RouteStore;
use crate::metrics::Metrics;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntGauge, IntGaugeVec, Opts};
use std::sync::Arc;

/// Exports the gauges of the table in force in `routes` through `metrics`.
pub fn watch(metrics: &Metrics, routes: Arc<RouteStore>) {
    metrics.register(Box::new(TableCollector::new(routes)));
}

/// The collector behind [`watch`].
struct TableCollector {
    routes: Arc<RouteStore>,
    descs: Vec<Desc>,
    healthy: IntGaugeVec,
    probe: GaugeVec,
    pools: IntGaugeVec,
    tenants: IntGauge,
}

impl TableCollector {
    fn new(routes: Arc<RouteStore>) -> Self {
        let healthy = IntGaugeVec::new(
            Opts::new(
                "mirador_router_endpoint_healthy",
                "1 when the endpoint takes traffic, 0 when it is down or ejected.",
            ),
            &["endpoint"],
        )
        .expect("valid metric");
        let probe = GaugeVec::new(
            Opts::new(
                "mirador_router_endpoint_probe_seconds",
                "Latency of the endpoint's latest successful health probe.",
            ),
            &["endpoint"],
        )
        .expect("valid metric");
        let pools = IntGaugeVec::new(
            Opts::new("mirador_router_endpoint_pools", "Number of (tenant, signal) pools that list the endpoint."),
            &["endpoint"],
        )
        .expect("valid metric");
        let tenants =
            IntGauge::new("mirador_router_tenants", "Tenants in the routing table in force.").expect("valid metric");
        let descs =
            [healthy.desc(), probe.desc(), pools.desc(), tenants.desc()].concat().into_iter().cloned().collect();
        TableCollector { routes, descs, healthy, probe, pools, tenants }
    }
}

impl Collector for TableCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let table = self.routes.load();
        self.healthy.reset();
        self.probe.reset();
        self.pools.reset();
        for health in table.endpoint_health() {
            let url = [&*health.url];
            self.healthy.with_label_values(&url).set(health.is_healthy() as i64);
            if let Some(latency) = health.last_probe() {
                self.probe.with_label_values(&url).set(latency.as_secs_f64());
            }
            self.pools.with_label_values(&url).inc();
        }
        self.tenants.set(table.tenant_count() as i64);
        [self.healthy.collect(), self.probe.collect(), self.pools.collect(), self.tenants.collect()].concat()
    }
}
