//! Raw file format → validated model, collecting every problem.
//!
//! The conversion destructures each raw struct by name (no `..`), so a field
//! added to the file format cannot be silently ignored here. Validation never
//! stops at the first problem: it returns the model, or every problem found,
//! each with its key path.

use super::error::{KeyPath, Problem};
use super::model::*;
use super::raw::*;
use super::secrets;
use crate::routing::Signal;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Most endpoints (primaries plus backups) one deployment may list.
pub const MAX_ENDPOINTS_PER_DEPLOYMENT: usize = 64;
pub const MAX_TENANT_ID_LEN: usize = 64;

/// Collects problems while converting.
#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.0.push(Problem { path: path.clone(), message: message.into() });
    }
}

pub fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let RawConfig { server, admin, tenancy, health_check, observability, tenants } = raw;
    let mut problems = Problems::default();
    let root = KeyPath::root();

    let server = server_settings(server, &root.key("server"), &mut problems);
    let admin = admin_settings(admin, &root.key("admin"), &mut problems);
    listeners_distinct(&server, &admin, &mut problems);
    let tenancy = tenancy_settings(tenancy, &root.key("tenancy"), &mut problems);
    let health_check =
        health_check_settings(health_check, &HealthCheck::default(), &root.key("health_check"), &mut problems);

    let own_listeners: Vec<SocketAddr> = server
        .listen
        .iter()
        .copied()
        .chain(server.signal_listeners.iter().map(|(_, addr)| *addr))
        .collect();
    let mut model_tenants = BTreeMap::new();
    for (id, raw_tenant) in tenants {
        let path = root.key("tenants").key(&id);
        let context = DeploymentContext { own_listeners: &own_listeners, health_check: &health_check };
        let tenant = tenant(id.clone(), raw_tenant, &path, &context, &mut problems);
        model_tenants.insert(id, std::sync::Arc::new(tenant));
    }

    secrets::credentials_unique(&model_tenants, &mut problems);
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    let RawObservability { metrics, access_log, access_log_query } = observability;
    let observability = Observability {
        metrics: metrics.unwrap_or(true),
        access_log: access_log.unwrap_or_default(),
        access_log_query: access_log_query.unwrap_or(false),
    };
    Ok(Config { server, admin, tenancy, health_check, observability, tenants: model_tenants })
}

fn server_settings(raw: RawServer, path: &KeyPath, problems: &mut Problems) -> Server {
    let RawServer { listen, threads, signal_listeners, grace_period, pid_file, upgrade_sock, work_stealing } = raw;
    let listen_raw = listen.unwrap_or_else(|| vec!["0.0.0.0:8080".to_string()]);
    let listen: Vec<SocketAddr> = listen_raw
        .iter()
        .enumerate()
        .filter_map(|(i, addr)| listen_addr(addr, &path.key("listen").index(i), problems))
        .collect();
    let RawSignalListeners { metrics, logs, traces } = signal_listeners;
    let signal_listeners: Vec<(Signal, SocketAddr)> = [(Signal::Metrics, metrics), (Signal::Logs, logs), (Signal::Traces, traces)]
        .into_iter()
        .filter_map(|(signal, addr)| {
            let key = path.key("signal_listeners").key(signal.as_str());
            Some((signal, listen_addr(&addr?, &key, problems)?))
        })
        .collect();
    if listen_raw.is_empty() && signal_listeners.is_empty() {
        problems.add(&path.key("listen"), "no listener: list at least one address here or in server.signal_listeners");
    }
    let threads = match threads.unwrap_or(2) {
        n @ 1..=256 => n as usize,
        n => {
            problems.add(&path.key("threads"), format!("must be between 1 and 256, got {n}"));
            1
        }
    };
    let grace_period = duration(grace_period.as_deref(), "5s", &path.key("grace_period"), true, problems);
    Server {
        listen,
        threads,
        signal_listeners,
        grace_period,
        pid_file: pid_file.unwrap_or_else(|| "/tmp/mirador-router.pid".into()).into(),
        upgrade_sock: upgrade_sock.unwrap_or_else(|| "/tmp/mirador-router-upgrade.sock".into()).into(),
        work_stealing: work_stealing.unwrap_or(false),
    }
}

fn admin_settings(raw: RawAdmin, path: &KeyPath, problems: &mut Problems) -> Admin {
    let RawAdmin { listen, token_file, watch_config } = raw;
    let listen = listen.unwrap_or_else(|| "127.0.0.1:9900".to_string());
    let listen = listen_addr(&listen, &path.key("listen"), problems).unwrap_or(([127, 0, 0, 1], 9900).into());
    let token = token_file.and_then(|file| match std::fs::read_to_string(&file) {
        Ok(text) if !text.trim().is_empty() => Some(Secret(text.trim().to_string())),
        Ok(_) => {
            problems.add(&path.key("token_file"), format!("{file} is empty"));
            None
        }
        Err(e) => {
            problems.add(&path.key("token_file"), format!("cannot read {file}: {e}"));
            None
        }
    });
    if !listen.ip().is_loopback() && token.is_none() {
        problems.add(
            &path.key("listen"),
            format!("{listen} is not a loopback address: set admin.token_file so that the admin API requires a bearer token"),
        );
    }
    Admin { listen, token, watch_config: watch_config.unwrap_or(false) }
}

/// Two listeners on one address cannot both bind.
fn listeners_distinct(server: &Server, admin: &Admin, problems: &mut Problems) {
    let mut seen = HashSet::new();
    let all = server
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (KeyPath::root().key("server").key("listen").index(i), *a))
        .chain(server.signal_listeners.iter().map(|(s, a)| {
            (KeyPath::root().key("server").key("signal_listeners").key(s.as_str()), *a)
        }))
        .chain([(KeyPath::root().key("admin").key("listen"), admin.listen)]);
    for (path, addr) in all {
        if !seen.insert(addr) {
            problems.add(&path, format!("address {addr} is already used by another listener"));
        }
    }
}

fn tenancy_settings(raw: RawTenancy, path: &KeyPath, problems: &mut Problems) -> Tenancy {
    let RawTenancy { header, require_credentials } = raw;
    let header = header.unwrap_or_else(|| "X-Tenant-ID".to_string());
    let header = http::HeaderName::from_bytes(header.as_bytes()).unwrap_or_else(|_| {
        problems.add(&path.key("header"), format!("{header:?} is not a valid HTTP header name"));
        http::HeaderName::from_static("x-tenant-id")
    });
    Tenancy { header, require_credentials: require_credentials.unwrap_or(false) }
}

fn health_check_settings(raw: RawHealthCheck, defaults: &HealthCheck, path: &KeyPath, problems: &mut Problems) -> HealthCheck {
    let RawHealthCheck {
        interval,
        timeout,
        path: probe_path,
        healthy_threshold,
        unhealthy_threshold,
        passive_failures,
        ejection_cooldown,
    } = raw;
    let probe_path = probe_path.unwrap_or_else(|| defaults.path.clone());
    if !probe_path.starts_with('/') {
        problems.add(&path.key("path"), format!("must start with '/', got {probe_path:?}"));
    }
    let passive_failures = match passive_failures {
        None => defaults.passive_failures,
        Some(n @ 0..=1000) => n as u32,
        Some(n) => {
            problems.add(&path.key("passive_failures"), format!("must be between 0 and 1000, got {n}"));
            defaults.passive_failures
        }
    };
    HealthCheck {
        interval: duration_or(interval.as_deref(), defaults.interval, &path.key("interval"), problems),
        timeout: duration_or(timeout.as_deref(), defaults.timeout, &path.key("timeout"), problems),
        path: probe_path,
        healthy_threshold: count(healthy_threshold, defaults.healthy_threshold, &path.key("healthy_threshold"), problems),
        unhealthy_threshold: count(unhealthy_threshold, defaults.unhealthy_threshold, &path.key("unhealthy_threshold"), problems),
        passive_failures,
        ejection_cooldown: duration_or(ejection_cooldown.as_deref(), defaults.ejection_cooldown, &path.key("ejection_cooldown"), problems),
    }
}

/// What every deployment is checked and defaulted against.
struct DeploymentContext<'a> {
    own_listeners: &'a [SocketAddr],
    health_check: &'a HealthCheck,
}

fn tenant(id: String, raw: RawTenant, path: &KeyPath, context: &DeploymentContext, problems: &mut Problems) -> Tenant {
    let RawTenant { name, admin_email, status, metrics, logs, traces, quotas, features, auth } = raw;
    if let Err(why) = check_tenant_id(&id) {
        problems.add(path, why);
    }
    if let Some(email) = &admin_email {
        if !email.contains('@') {
            problems.add(&path.key("admin_email"), format!("{email:?} is not an email address"));
        }
    }
    let deployments = [(Signal::Metrics, metrics), (Signal::Logs, logs), (Signal::Traces, traces)]
        .map(|(signal, raw)| raw.map(|raw| deployment(raw, &path.key(signal.as_str()), context, problems)));
    let quotas = secrets::quotas(quotas, &path.key("quotas"), problems);
    let auth = auth.map(|raw| secrets::auth(raw, &path.key("auth"), problems));
    let RawFeatures { signals, read_only } = features;
    let enabled = match signals {
        None => Signal::ALL.map(|s| deployments[s.index()].is_some()),
        Some(listed) => {
            let mut enabled = [false; 3];
            for (i, signal) in listed.into_iter().enumerate() {
                if deployments[signal.index()].is_none() {
                    problems.add(
                        &path.key("features").key("signals").index(i),
                        format!("signal {signal} is enabled but the tenant has no [{path}.{signal}] deployment"),
                    );
                }
                enabled[signal.index()] = true;
            }
            enabled
        }
    };
    Tenant {
        name: name.unwrap_or_else(|| id.clone()),
        id,
        admin_email,
        status: status.unwrap_or_default(),
        deployments,
        quotas,
        features: Features { signals: enabled, read_only: read_only.unwrap_or(false) },
        auth,
    }
}

/// Tenant ids travel in headers and label values: keep them short and plain.
pub fn check_tenant_id(id: &str) -> Result<(), String> {
    let plain = id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let starts_well = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if id.is_empty() || id.len() > MAX_TENANT_ID_LEN || !plain || !starts_well {
        return Err(format!(
            "tenant id {id:?} must be 1 to {MAX_TENANT_ID_LEN} characters of A-Z a-z 0-9 _ -, starting with a letter or digit"
        ));
    }
    Ok(())
}

fn deployment(raw: RawDeployment, path: &KeyPath, context: &DeploymentContext, problems: &mut Problems) -> Deployment {
    let RawDeployment {
        endpoints,
        backup_endpoints,
        timeout,
        connect_timeout,
        max_attempts,
        namespace,
        health_check,
        quotas,
        upstream_auth,
        tls,
    } = raw;
    if endpoints.is_empty() {
        problems.add(&path.key("endpoints"), "the deployment lists no endpoints");
    }
    if endpoints.len() + backup_endpoints.len() > MAX_ENDPOINTS_PER_DEPLOYMENT {
        problems.add(path, format!("more than {MAX_ENDPOINTS_PER_DEPLOYMENT} endpoints in one deployment"));
    }
    let mut seen = HashSet::new();
    let mut endpoint_list = |urls: Vec<String>, key: &str, problems: &mut Problems| -> Vec<Endpoint> {
        let mut out = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let at = path.key(key).index(i);
            let Some(endpoint) = endpoint(url, &at, problems) else { continue };
            if !seen.insert(endpoint.url.clone()) {
                problems.add(&at, format!("duplicate endpoint {}", endpoint.url));
            } else if context.own_listeners.iter().any(|l| loops_back(*l, endpoint.addr)) {
                problems.add(&at, format!("endpoint {} is one of the router's own listeners (a proxy loop)", endpoint.url));
            }
            out.push(endpoint);
        }
        out
    };
    let endpoints = endpoint_list(endpoints, "endpoints", problems);
    let backup_endpoints = endpoint_list(backup_endpoints, "backup_endpoints", problems);
    Deployment {
        endpoints,
        backup_endpoints,
        timeout: duration(timeout.as_deref(), "30s", &path.key("timeout"), false, problems),
        connect_timeout: duration(connect_timeout.as_deref(), "2s", &path.key("connect_timeout"), false, problems),
        max_attempts: match max_attempts.unwrap_or(3) {
            n @ 1..=16 => n as u32,
            n => {
                problems.add(&path.key("max_attempts"), format!("must be between 1 and 16, got {n}"));
                1
            }
        },
        namespace,
        health_check: match health_check {
            Some(raw) => health_check_settings(raw, context.health_check, &path.key("health_check"), problems),
            None => context.health_check.clone(),
        },
        quotas: quotas.map(|raw| secrets::quotas(raw, &path.key("quotas"), problems)),
        upstream_auth: upstream_auth.and_then(|raw| secrets::upstream_auth(raw, &path.key("upstream_auth"), problems)),
        tls: tls.and_then(|raw| secrets::upstream_tls(raw, &path.key("tls"), problems)),
    }
}

/// Parses and resolves one endpoint URL (`http://host:port`).
fn endpoint(raw: &str, path: &KeyPath, problems: &mut Problems) -> Option<Endpoint> {
    let url = match url::Url::parse(raw) {
        Ok(url) => url,
        Err(e) => {
            problems.add(path, format!("{raw:?} is not a URL ({e}); expected http://host:port"));
            return None;
        }
    };
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            problems.add(path, format!("{raw:?} has scheme {other:?}; expected http or https"));
            return None;
        }
    };
    let mut ok = true;
    if !url.username().is_empty() || url.password().is_some() {
        problems.add(path, format!("{raw:?} carries credentials; endpoint URLs must not"));
        ok = false;
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        problems.add(path, format!("{raw:?} has a path or query; endpoints are scheme://host:port only"));
        ok = false;
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        problems.add(path, format!("{raw:?} has no host"));
        return None;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => match (host.as_str(), port).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => addr,
            Ok(None) | Err(_) => {
                problems.add(path, format!("cannot resolve host {host:?} of {raw:?}"));
                return None;
            }
        },
    };
    let shown_host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let url = format!("{}://{shown_host}:{port}", url.scheme());
    ok.then_some(Endpoint { url, tls, host, port, addr })
}

/// Whether traffic to `endpoint` would arrive back at the listener `listen`.
fn loops_back(listen: SocketAddr, endpoint: SocketAddr) -> bool {
    if listen.port() != endpoint.port() {
        return false;
    }
    listen.ip() == endpoint.ip() || (listen.ip().is_unspecified() && (endpoint.ip().is_loopback() || endpoint.ip().is_unspecified()))
}

fn listen_addr(raw: &str, path: &KeyPath, problems: &mut Problems) -> Option<SocketAddr> {
    match raw.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.add(path, format!("{raw:?} is not a listen address; expected ip:port such as 0.0.0.0:8080"));
            None
        }
    }
}

fn duration(raw: Option<&str>, default: &str, path: &KeyPath, zero_ok: bool, problems: &mut Problems) -> Duration {
    let text = raw.unwrap_or(default);
    match humantime::parse_duration(text) {
        Ok(d) if zero_ok || !d.is_zero() => d,
        Ok(_) => {
            problems.add(path, "must be longer than zero");
            Duration::from_secs(1)
        }
        Err(e) => {
            problems.add(path, format!("{text:?} is not a duration ({e}); write e.g. \"30s\" or \"250ms\""));
            Duration::from_secs(1)
        }
    }
}

/// A positive duration, `default` when absent.
fn duration_or(raw: Option<&str>, default: Duration, path: &KeyPath, problems: &mut Problems) -> Duration {
    match raw {
        Some(text) => duration(Some(text), text, path, false, problems),
        None => default,
    }
}

fn count(raw: Option<i64>, default: u32, path: &KeyPath, problems: &mut Problems) -> u32 {
    match raw.unwrap_or(default as i64) {
        n @ 1..=1000 => n as u32,
        n => {
            problems.add(path, format!("must be between 1 and 1000, got {n}"));
            default
        }
    }
}

pub(super) fn positive(raw: Option<i64>, path: &KeyPath, problems: &mut Problems) -> Option<i64> {
    match raw {
        Some(n) if n <= 0 => {
            problems.add(path, format!("must be greater than zero, got {n}"));
            None
        }
        other => other,
    }
}
