//! The status page (`GET /`) and the two small JSON endpoints it refreshes
//! from: `GET /api/v1/status` (the router at a glance) and
//! `GET /api/v1/overview` (one page of the tenant table, searched and cut on
//! the router, so the page stays light at 10,000 tenants). A tenant's view
//! reads the tenant, health and usage endpoints the API already has.

use crate::activity::Activity;
use crate::api::Signal;
use crate::reload::LastReload;
use crate::routing::{RoutingTable, TenantRoute};
use serde_json::{json, Value};
use std::time::SystemTime;

/// The page: HTML, CSS and script in one file, in the binary.
pub const PAGE: &str = include_str!("console.html");

/// Rows one overview answer gives at most.
const MAX_LIMIT: usize = 500;

/// `GET /api/v1/status`.
pub fn status(table: &RoutingTable, started: SystemTime, last_reload: Option<LastReload>) -> Value {
    let (mut suspended, mut degraded, mut down) = (0, 0, 0);
    let (mut endpoints, mut healthy) = (0, 0);
    for id in table.tenant_ids() {
        let Some(route) = table.tenant(id) else { continue };
        suspended += usize::from(route.suspended);
        let mut some_down = false;
        let mut a_pool_down = false;
        for pool in route.pools() {
            let up = pool.endpoints().iter().filter(|e| e.health.is_healthy()).count();
            endpoints += pool.endpoints().len();
            healthy += up;
            some_down |= up < pool.endpoints().len();
            a_pool_down |= up == 0;
        }
        degraded += usize::from(some_down && !a_pool_down);
        down += usize::from(a_pool_down);
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started": humantime::format_rfc3339_seconds(started).to_string(),
        "uptime_seconds": SystemTime::now().duration_since(started).unwrap_or_default().as_secs(),
        "last_reload": last_reload,
        "tenants": {
            "total": table.tenant_count(),
            "suspended": suspended,
            "degraded": degraded,
            "down": down,
        },
        "endpoints": { "total": endpoints, "healthy": healthy },
    })
}

/// `GET /api/v1/overview?search=&offset=&limit=`: the tenants whose id, tier
/// or status contains `search` (case-insensitive), sorted by id, from
/// `offset`, at most `limit` (default 50, at most 500).
pub fn overview(table: &RoutingTable, activity: &Activity, query: Option<&str>) -> Value {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let param = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let search = param("search").unwrap_or_default().to_lowercase();
    let offset = param("offset").and_then(|v| v.parse().ok()).unwrap_or(0usize);
    let limit = param("limit").and_then(|v| v.parse().ok()).unwrap_or(50usize).clamp(1, MAX_LIMIT);
    let mut matched: Vec<&TenantRoute> = table
        .tenant_ids()
        .filter_map(|id| table.tenant(id))
        .filter(|route| search.is_empty() || matches(route, &search))
        .collect();
    matched.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let rows: Vec<Value> = matched.iter().skip(offset).take(limit).map(|route| row(route, activity)).collect();
    json!({
        "total": table.tenant_count(),
        "matched": matched.len(),
        "offset": offset,
        "limit": limit,
        "tenants": rows,
    })
}

fn status_of(route: &TenantRoute) -> &'static str {
    match (route.suspended, route.read_only) {
        (true, _) => "suspended",
        (false, true) => "read_only",
        (false, false) => "active",
    }
}

fn matches(route: &TenantRoute, search: &str) -> bool {
    route.id.to_lowercase().contains(search)
        || route.tier.as_deref().is_some_and(|tier| tier.to_lowercase().contains(search))
        || status_of(route) == search
}

fn row(route: &TenantRoute, activity: &Activity) -> Value {
    let mut signals = serde_json::Map::new();
    for signal in Signal::ALL {
        let mut pools = route.pools().filter(|pool| pool.signal == signal).peekable();
        if pools.peek().is_none() {
            continue;
        }
        let (mut total, mut healthy, mut minute) = (0, 0, None);
        for pool in pools {
            total += pool.endpoints().len();
            healthy += pool.endpoints().iter().filter(|e| e.health.is_healthy()).count();
            minute = minute.or_else(|| activity.minute(&route.id, signal, pool.counted()?));
        }
        signals.insert(signal.as_str().into(), json!({ "endpoints": total, "healthy": healthy, "minute": minute }));
    }
    let quota = route.limits.as_ref().map(|limits| {
        json!({
            "requests_per_second": limits.requests_per_second,
            "in_flight": limits.in_flight(),
            "max_in_flight": limits.max_in_flight(),
        })
    });
    json!({
        "id": &*route.id,
        "status": status_of(route),
        "tier": route.tier.as_deref(),
        "signals": signals,
        "quota": quota,
    })
}
