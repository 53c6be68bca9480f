//! `GET /api/v1/tenants/{id}/health`: per signal (per service of a shared
//! VictoriaMetrics cluster: `insert`, `select`), per endpoint health, and
//! each `dns` name's addresses and latest lookup.

use super::{error, Answer};
use crate::api::Signal;
use crate::config::{Answers, Tenant};
use crate::reply::ErrorKind;
use crate::routing::RoutingTable;
use crate::upstream::{Pool, Role};
use http::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

/// `applied`: the tenant in force and the `dns` answers, for its names.
pub(super) fn tenant_health(table: &RoutingTable, id: &str, applied: Option<(Arc<Tenant>, Answers)>) -> Answer {
    let Some(tenant) = table.tenant(id) else {
        return error(ErrorKind::NotFound, format!("unknown tenant {id:?}"));
    };
    let mut signals = serde_json::Map::new();
    for (pool, service) in tenant.services() {
        let endpoints = endpoints(pool);
        let shown = signals.entry(pool.signal.to_string()).or_insert_with(|| json!({}));
        if let Some(id) = pool.cluster {
            shown["account_id"] = id.account.into();
            shown["project_id"] = id.project.into();
        }
        match service {
            // A VictoriaMetrics cluster: vminsert and vmselect each their own pool.
            Some(service) => shown[service.as_str()] = json!({ "endpoints": endpoints }),
            None => shown["endpoints"] = endpoints.into(),
        }
    }
    if let Some((tenant, answers)) = applied {
        for signal in Signal::ALL {
            let Some(deployment) = tenant.deployment(signal) else { continue };
            if let (false, Some(shown)) = (deployment.dns.is_empty(), signals.get_mut(signal.as_str())) {
                shown["dns"] = dns(&deployment.dns, &answers).into();
            }
        }
    }
    Answer::Json(StatusCode::OK, json!({ "tenant": id, "signals": signals }))
}

/// Each name: its addresses in force and whether its latest lookup failed.
fn dns(names: &[String], answers: &Answers) -> Vec<Value> {
    names
        .iter()
        .map(|name| {
            let answer = answers.get(name).cloned().unwrap_or_default();
            let addresses: Vec<String> = answer.addrs.iter().map(ToString::to_string).collect();
            json!({ "name": name, "addresses": addresses, "ok": answer.error.is_none(), "error": answer.error })
        })
        .collect()
}

fn endpoints(pool: &Pool) -> Vec<Value> {
    pool.endpoints()
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
        .collect()
}
