//! The admin listener: liveness, readiness and per-tenant endpoint health.
//!
//! Loopback only for now (validation refuses any other address until the
//! admin API has bearer tokens). Every answer is JSON; errors use the same
//! shape as the proxy's (`{"status":"error","errorType":...,"error":...}`).

use crate::metrics::Metrics;
use crate::routing::RouteStore;
use crate::upstream::Role;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct AdminApp {
    routes: Arc<RouteStore>,
    metrics: Option<Arc<Metrics>>,
}

impl AdminApp {
    pub fn new(routes: Arc<RouteStore>, metrics: Option<Arc<Metrics>>) -> Self {
        AdminApp { routes, metrics }
    }

    /// The answer to `method path`.
    pub fn answer(&self, method: &Method, path: &str) -> (StatusCode, Value) {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::GET, ["health"]) => (StatusCode::OK, json!({"status": "ok"})),
            (&Method::GET, ["ready"]) => {
                (StatusCode::OK, json!({"status": "ready", "tenants": self.routes.load().tenant_count()}))
            }
            (&Method::GET, ["api", "v1", "tenants", id, "health"]) => self.tenant_health(id),
            (_, ["health"] | ["ready"] | ["api", "v1", "tenants", _, "health"]) => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{method} is not allowed on {path}"))
            }
            _ => error(StatusCode::NOT_FOUND, "not_found", format!("no admin endpoint {path:?}")),
        }
    }

    fn tenant_health(&self, id: &str) -> (StatusCode, Value) {
        let table = self.routes.load();
        let Some(tenant) = table.tenant(id) else {
            return error(StatusCode::NOT_FOUND, "not_found", format!("unknown tenant {id:?}"));
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
        (StatusCode::OK, json!({ "tenant": id, "signals": signals }))
    }
}

fn error(status: StatusCode, error_type: &str, message: String) -> (StatusCode, Value) {
    (status, json!({"status": "error", "errorType": error_type, "error": message}))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        if let (&Method::GET, "/metrics", Some(metrics)) = (&request.method, request.uri.path(), &self.metrics) {
            let body = metrics.render();
            return Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .header(http::header::CONTENT_LENGTH, body.len())
                .body(body)
                .unwrap_or_default();
        }
        let (status, body) = self.answer(&request.method, request.uri.path());
        let body = serde_json::to_vec(&body).unwrap_or_default();
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}
