//! `GET /api/v1/tenants/{id}/health`: per signal, per endpoint health.

use super::{error, Answer};
use crate::reply::ErrorKind;
use crate::routing::RoutingTable;
use crate::upstream::Role;
use http::StatusCode;
use serde_json::{json, Value};

pub(super) fn tenant_health(table: &RoutingTable, id: &str) -> Answer {
    let Some(tenant) = table.tenant(id) else {
        return error(ErrorKind::NotFound, format!("unknown tenant {id:?}"));
    };
    let signals: serde_json::Map<String, Value> = tenant
        .pools()
        .map(|pool| {
            let endpoints: Vec<Value> = pool
                .endpoints()
                .iter()
                .map(|endpoint| {
                    let health = endpoint.health.snapshot();
                    json!({
                        "endpoint": &*endpoint.url,
                        "role": match endpoint.role { Role::Primary => "primary", Role::Backup => "backup" },
                        "healthy": health.healthy,
                        "since": humantime::format_rfc3339_millis(health.since).to_string(),
                        "consecutive_failures": health.consecutive_failures,
                        "last_error": health.last_error,
                        "last_probe_ms": health.last_probe.map(|d| d.as_secs_f64() * 1000.0),
                        "probed": health.probed,
                        "ejected": health.ejected,
                    })
                })
                .collect();
            (pool.signal.to_string(), json!({ "endpoints": endpoints }))
        })
        .collect();
    Answer::Json(StatusCode::OK, json!({ "tenant": id, "signals": signals }))
}
