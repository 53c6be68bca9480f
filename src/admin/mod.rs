//! The admin listener: liveness, readiness, metrics, reload, tenant CRUD and
//! per-tenant endpoint health.
//!
//! Loopback by default; bound elsewhere it needs `admin.token_file`, and when
//! a token is configured every request but `/health` and `/ready` must carry
//! it (`Authorization: Bearer ...`, compared in constant time). Every answer
//! is JSON; errors are [`ErrorReply`]s, the proxy's shape and map
//! (`{"status":"error","errorType":...,"error":...}`). Mutations run on a
//! blocking thread through the one reload path ([`Reloader`]).

mod console;
mod health;
pub mod tenants;
mod validate;

use crate::activity::Activity;
use crate::config::Secret;
use crate::metrics::Metrics;
use crate::reload::{MutationError, Outcome, ReloadReport, Reloader};
use crate::reply::{ErrorKind, ErrorReply, KeyedError};
use crate::routing::RouteStore;
use crate::usage::Usage;
use async_trait::async_trait;
use base64::Engine;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::SystemTime;
use subtle::ConstantTimeEq;

/// Largest request body the admin API reads.
const MAX_BODY: usize = 1 << 20;

/// What collectors off the request path read for the admin API and page.
pub struct Readings {
    pub usage: Arc<Usage>,
    pub activity: Arc<Activity>,
}

pub struct AdminApp {
    routes: Arc<RouteStore>,
    metrics: Option<Arc<Metrics>>,
    reloader: Arc<Reloader>,
    token: Option<Secret>,
    usage: Arc<Usage>,
    activity: Arc<Activity>,
    started: SystemTime,
}

/// An admin answer: status and JSON, an error, the metrics text, or the
/// status page.
enum Answer {
    Json(StatusCode, Value),
    Error(ErrorReply),
    Text(Vec<u8>),
    Page,
    /// 401 to a browser: asks it for the token (as a Basic password).
    Challenge,
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Answer {
    Answer::Error(ErrorReply::new(kind, message))
}

impl AdminApp {
    pub fn new(
        routes: Arc<RouteStore>,
        metrics: Option<Arc<Metrics>>,
        reloader: Arc<Reloader>,
        token: Option<Secret>,
        readings: Readings,
    ) -> Self {
        let Readings { usage, activity } = readings;
        AdminApp { routes, metrics, reloader, token, usage, activity, started: SystemTime::now() }
    }

    /// Whether the request carries the admin token: as a bearer token, or
    /// as the password of Basic credentials (what a browser sends once the
    /// status page asked for them; the user name is not checked).
    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(Secret(token)) = &self.token else { return true };
        let sent = session.req_header().headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let sent = match sent.and_then(|v| v.split_once(' ')) {
            Some(("Bearer", token)) => token.as_bytes().to_vec(),
            Some(("Basic", encoded)) => {
                let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap_or_default();
                let password = decoded.iter().position(|&b| b == b':').map(|colon| decoded[colon + 1..].to_vec());
                password.unwrap_or_default()
            }
            _ => Vec::new(),
        };
        bool::from(sent.ct_eq(token.as_bytes()))
    }

    async fn answer(&self, session: &mut ServerSession) -> Answer {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let from = session.client_addr().map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        match (&method, segments.as_slice()) {
            (&Method::GET, ["health"]) => return Answer::Json(StatusCode::OK, json!({"status": "ok"})),
            (&Method::GET, ["ready"]) => {
                let tenants = self.routes.load().tenant_count();
                // The table in force serves while etcd is away: still ready, and said.
                let store = self.reloader.store().map(|store| store.health());
                let quotas = self.reloader.quota_health();
                let ready = json!({"status": "ready", "tenants": tenants, "store": store, "quotas": quotas});
                return Answer::Json(StatusCode::OK, ready);
            }
            _ => {}
        }
        if !self.authorized(session) {
            tracing::warn!(target: crate::reload::AUDIT_TARGET, action = "auth", result = "refused", source = %from, path, "admin request without a valid bearer token");
            if method == Method::GET && path == "/" {
                return Answer::Challenge;
            }
            return error(ErrorKind::Unauthorized, "a valid bearer token is required");
        }
        match (&method, segments.as_slice()) {
            (&Method::GET, [""]) => Answer::Page,
            (&Method::GET, ["api", "v1", "status"]) => {
                Answer::Json(StatusCode::OK, console::status(&self.routes.load(), self.started, self.reloader.last()))
            }
            (&Method::GET, ["api", "v1", "overview"]) => Answer::Json(
                StatusCode::OK,
                console::overview(&self.routes.load(), &self.activity, session.req_header().uri.query()),
            ),
            (&Method::GET, ["metrics"]) => match &self.metrics {
                Some(metrics) => Answer::Text(metrics.render()),
                None => error(ErrorKind::NotFound, "metrics are off ([observability] metrics = false)"),
            },
            (&Method::GET, ["api", "v1", "reload"]) => {
                Answer::Json(StatusCode::OK, json!({ "last": self.reloader.last() }))
            }
            (&Method::POST, ["api", "v1", "reload"]) => {
                let reloader = self.reloader.clone();
                let result = blocking(move || reloader.reload("api", &from)).await;
                match result {
                    Some(Ok(report)) => Answer::Json(StatusCode::OK, json!({"status": "ok", "changes": report})),
                    Some(Err(errors)) => refused_config(&errors),
                    None => error(ErrorKind::Internal, "the reload did not finish"),
                }
            }
            (&Method::GET, ["api", "v1", "tenants"]) => {
                let table = self.routes.load();
                let migrations: serde_json::Map<String, Value> = table
                    .tenant_ids()
                    .filter_map(|id| Some((id.to_string(), migrations(table.tenant(id)?)?)))
                    .collect();
                let tenants = tenants::list(&self.reloader.applied_text());
                Answer::Json(StatusCode::OK, json!({ "tenants": tenants, "migrations": migrations }))
            }
            (&Method::GET, ["api", "v1", "tenants", id, "migration"]) => match self.routes.load().tenant(id) {
                Some(route) => {
                    let signals = migrations(route).unwrap_or_else(|| json!({}));
                    let fanouts: serde_json::Map<String, Value> = crate::api::Signal::ALL
                        .into_iter()
                        .filter_map(|signal| Some((signal.as_str().to_string(), route.fanout(signal)?.status())))
                        .collect();
                    Answer::Json(StatusCode::OK, json!({ "tenant": id, "migrations": signals, "fanout": fanouts }))
                }
                None => error(ErrorKind::NotFound, format!("unknown tenant {id:?}")),
            },
            (&Method::GET, ["api", "v1", "tenants", id]) => {
                let text = self.reloader.applied_text();
                let tenant = match flag(session.req_header().uri.query(), "effective") {
                    true => crate::config::effective_tenant(&text, id),
                    false => tenants::get(&text, id),
                };
                match tenant {
                    Some(tenant) => Answer::Json(StatusCode::OK, tenant),
                    None => error(ErrorKind::NotFound, format!("unknown tenant {id:?}")),
                }
            }
            (&Method::GET, ["api", "v1", "tenants", id, "health"]) => {
                health::tenant_health(&self.routes.load(), id, self.reloader.applied_tenant(id))
            }
            (&Method::GET, ["api", "v1", "tenants", id, "usage"]) => match self.routes.load().tenant(id) {
                Some(_) => {
                    let signals: serde_json::Map<String, Value> = self
                        .usage
                        .tenant(id)
                        .into_iter()
                        .map(|(signal, reading)| (signal.as_str().to_string(), json!(reading)))
                        .collect();
                    Answer::Json(StatusCode::OK, json!({ "tenant": id, "usage": signals }))
                }
                None => error(ErrorKind::NotFound, format!("unknown tenant {id:?}")),
            },
            (&Method::POST, ["api", "v1", "tenants"]) => {
                let body = match read_body(session).await {
                    Ok(body) => body,
                    Err(answer) => return answer,
                };
                let parsed = tenants::from_json(&body, None);
                let query = session.req_header().uri.query();
                let asked = Asked { dry_run: flag(query, "dry_run"), force: flag(query, "force") };
                self.mutate("create", parsed, from, StatusCode::CREATED, tenants::create, asked).await
            }
            (&Method::PUT, ["api", "v1", "tenants", id]) => {
                let body = match read_body(session).await {
                    Ok(body) => body,
                    Err(answer) => return answer,
                };
                let parsed = tenants::from_json(&body, Some(id));
                let query = session.req_header().uri.query();
                let asked = Asked { dry_run: flag(query, "dry_run"), force: flag(query, "force") };
                self.mutate("update", parsed, from, StatusCode::OK, tenants::replace, asked).await
            }
            (&Method::DELETE, ["api", "v1", "tenants", id]) => {
                let (reloader, id) = (self.reloader.clone(), id.to_string());
                let result = blocking(move || {
                    reloader.mutate("delete", &id, Outcome::Removed, &from, |doc| tenants::delete(doc, &id))
                })
                .await;
                mutation_answer(result, StatusCode::OK, None)
            }
            (
                _,
                [""]
                | ["metrics"]
                | ["api", "v1", "status"]
                | ["api", "v1", "overview"]
                | ["api", "v1", "reload"]
                | ["api", "v1", "tenants"]
                | ["api", "v1", "tenants", _]
                | ["api", "v1", "tenants", _, "health"]
                | ["api", "v1", "tenants", _, "migration"]
                | ["api", "v1", "tenants", _, "usage"],
            ) => error(ErrorKind::MethodNotAllowed, format!("{method} is not allowed on {path}")),
            _ => error(ErrorKind::NotFound, format!("no admin endpoint {path:?}")),
        }
    }

    /// Creates or replaces a tenant from a parsed body, then answers with it.
    /// Unless `force`d, the endpoints it gains are checked first
    /// ([`validate`]): a failed check is 422 and nothing changes; a
    /// `dry_run` answers with the checks and changes nothing either way.
    async fn mutate(
        &self,
        action: &'static str,
        parsed: Result<(String, toml_edit::Item), MutationError>,
        from: String,
        success: StatusCode,
        edit: fn(&mut toml_edit::DocumentMut, &str, toml_edit::Item) -> Result<(), MutationError>,
        asked: Asked,
    ) -> Answer {
        let (id, item) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => return mutation_answer(Some(Err(e)), success, None),
        };
        if asked.force {
            tracing::warn!(target: crate::reload::AUDIT_TARGET, action, tenant = id, source = from, dry_run = asked.dry_run, "deployment validation skipped (force=true)");
        }
        if !asked.force || asked.dry_run {
            let (reloader, tenant, edited) = (self.reloader.clone(), id.clone(), item.clone());
            let preview =
                blocking(move || reloader.preview(&tenant, Outcome::Routes, |doc| edit(doc, &tenant, edited))).await;
            let (next, applied) = match preview {
                Some(Ok(configs)) => configs,
                Some(Err(e)) => return mutation_answer(Some(Err(e)), success, None),
                None => return error(ErrorKind::Internal, "the check did not finish"),
            };
            let checks =
                if asked.force { Vec::new() } else { validate::check_new_endpoints(&next, &applied, &id).await };
            if let Some(failed) = checks.iter().find(|check| !check.ok) {
                let problem = failed.problem.as_deref().unwrap_or_default();
                tracing::warn!(target: crate::reload::AUDIT_TARGET, action, tenant = id, source = from, result = "refused", problem, "deployment validation failed; nothing changed");
                let kind = ErrorKind::Unprocessable;
                let message = format!("deployment validation failed: {}: {problem}", failed.endpoint);
                let body =
                    json!({"status": "error", "errorType": kind.error_type(), "error": message, "endpoints": checks});
                return Answer::Json(StatusCode::UNPROCESSABLE_ENTITY, body);
            }
            if asked.dry_run {
                return Answer::Json(StatusCode::OK, json!({"status": "ok", "dry_run": true, "endpoints": checks}));
            }
        }
        let reloader = self.reloader.clone();
        let tenant = id.clone();
        let result =
            blocking(move || reloader.mutate(action, &tenant, Outcome::Routes, &from, |doc| edit(doc, &tenant, item)))
                .await;
        let current = tenants::get(&self.reloader.applied_text(), &id);
        mutation_answer(result, success, current)
    }
}

/// What a create or update asks besides the change: `?dry_run=true` (check,
/// change nothing), `?force=true` (skip the endpoint checks; audited).
#[derive(Debug, Clone, Copy)]
struct Asked {
    dry_run: bool,
    force: bool,
}

/// A tenant's migrations under way, by signal; `None` without any.
fn migrations(route: &crate::routing::TenantRoute) -> Option<Value> {
    let signals: serde_json::Map<String, Value> = crate::api::Signal::ALL
        .into_iter()
        .filter_map(|signal| Some((signal.as_str().to_string(), route.migration(signal)?.status())))
        .collect();
    (!signals.is_empty()).then_some(Value::Object(signals))
}

/// Whether a query string sets `name=true` (`effective`, `dry_run`, `force`).
fn flag(query: Option<&str>, name: &str) -> bool {
    query.is_some_and(|q| q.split('&').any(|pair| pair.strip_prefix(name) == Some("=true")))
}

/// Runs blocking work (file I/O, DNS, first probes) off the admin's runtime.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

fn mutation_answer(
    result: Option<Result<ReloadReport, MutationError>>,
    success: StatusCode,
    tenant: Option<Value>,
) -> Answer {
    let e = match result {
        Some(Ok(report)) => return Answer::Json(success, json!({"status": "ok", "tenant": tenant, "changes": report})),
        Some(Err(MutationError::Invalid(errors))) => return refused_config(&errors),
        Some(Err(e)) => e,
        None => return error(ErrorKind::Internal, "the change did not finish"),
    };
    let kind = match &e {
        MutationError::BadBody(_) | MutationError::RoutesNothing(_) => ErrorKind::BadData,
        MutationError::UnknownTenant(_) => ErrorKind::NotFound,
        MutationError::TenantExists(_) | MutationError::NoFile | MutationError::NotATable => ErrorKind::Conflict,
        MutationError::Invalid(_) => ErrorKind::BadData,
        MutationError::Storage(_) => ErrorKind::Internal,
        MutationError::Conflict(_) => ErrorKind::Conflict,
        MutationError::StoreUnreachable(_) => ErrorKind::Unavailable,
    };
    error(kind, e.to_string())
}

/// 400 with every validation error, each with its key path.
fn refused_config(errors: &[crate::config::ConfigError]) -> Answer {
    let first =
        errors.first().map(|e| if e.key.is_empty() { e.message.clone() } else { format!("{}: {}", e.key, e.message) });
    let mut reply = ErrorReply::new(ErrorKind::BadData, first.unwrap_or_default());
    reply.errors = errors.iter().map(|e| KeyedError { key: e.key.clone(), error: e.message.clone() }).collect();
    Answer::Error(reply)
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Answer> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(error(ErrorKind::PayloadTooLarge, "the body is over 1 MiB"));
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(error(ErrorKind::BadData, format!("cannot read the body: {e}"))),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let challenge = r#"Basic realm="mirador-router admin", charset="UTF-8""#;
        let (status, content_type, body) = match self.answer(session).await {
            Answer::Page => {
                // Inline script and style only, requests to this listener
                // only, never in a frame.
                let policy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                              connect-src 'self'; img-src data:; frame-ancestors 'none'";
                let response = Response::builder()
                    .status(StatusCode::OK)
                    .header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")
                    .header(http::header::CONTENT_SECURITY_POLICY, policy)
                    .header(http::header::X_FRAME_OPTIONS, "DENY")
                    .header(http::header::CACHE_CONTROL, "no-store")
                    .header(http::header::CONTENT_LENGTH, console::PAGE.len());
                return response.body(console::PAGE.as_bytes().to_vec()).unwrap_or_default();
            }
            Answer::Challenge => {
                let reply = ErrorReply::new(ErrorKind::Unauthorized, "a valid bearer token is required");
                let body = reply.body().to_vec();
                let response = Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header(http::header::WWW_AUTHENTICATE, challenge)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::CONTENT_LENGTH, body.len());
                return response.body(body).unwrap_or_default();
            }
            Answer::Json(status, value) => (status, "application/json", serde_json::to_vec(&value).unwrap_or_default()),
            Answer::Error(reply) => {
                let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, "application/json", reply.body().to_vec())
            }
            Answer::Text(text) => (StatusCode::OK, "text/plain; version=0.0.4", text),
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}
