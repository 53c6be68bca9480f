//! A deployment of one tenant's signal: its endpoints (parsed, resolved
//! through the gathered [`Inputs`], never twice the same, never the router's
//! own listener), timeouts, attempts, health checks, quotas, upstream
//! credentials and TLS.

use super::check::{count, duration, positive, Problems, UP_TO_AN_HOUR, UP_TO_FIVE_MINUTES};
use super::error::KeyPath;
use super::inputs::Inputs;
use super::model::*;
use super::raw::*;
use super::secrets;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use url::Url;

/// The most a quota may be: requests per second (and burst), requests in
/// flight, body bytes.
pub const MAX_RATE: u64 = 10_000_000;
pub const MAX_IN_FLIGHT: u64 = 1_000_000;
pub const MAX_BODY_BYTES: u64 = 1 << 40;

/// Most endpoints (primaries plus backups) one deployment may list.
pub const MAX_ENDPOINTS_PER_DEPLOYMENT: usize = 64;

/// What every deployment is checked and defaulted against.
pub(super) struct DeploymentContext<'a> {
    pub(super) inputs: &'a Inputs,
    pub(super) own_listeners: &'a [SocketAddr],
    pub(super) health_check: &'a HealthCheck,
}

pub(super) fn deployment(
    raw: RawDeployment,
    path: &KeyPath,
    context: &DeploymentContext,
    problems: &mut Problems,
) -> Deployment {
    let RawDeployment {
        endpoints,
        backup_endpoints,
        timeout,
        connect_timeout,
        max_attempts,
        retry_ingest,
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
            let Some(endpoint) = endpoint(url, &at, context.inputs, problems) else { continue };
            if !seen.insert(endpoint.url.clone()) {
                problems.add(&at, format!("duplicate endpoint {}", endpoint.url));
            } else if context.own_listeners.iter().any(|l| loops_back(*l, endpoint.addr)) {
                problems
                    .add(&at, format!("endpoint {} is one of the router's own listeners (a proxy loop)", endpoint.url));
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
        timeout: duration(timeout.as_deref(), Duration::from_secs(30), UP_TO_AN_HOUR, &path.key("timeout"), problems),
        connect_timeout: duration(
            connect_timeout.as_deref(),
            Duration::from_secs(2),
            UP_TO_FIVE_MINUTES,
            &path.key("connect_timeout"),
            problems,
        ),
        max_attempts: match max_attempts.unwrap_or(3) {
            n @ 1..=16 => n as u32,
            n => {
                problems.add(&path.key("max_attempts"), format!("must be between 1 and 16, got {n}"));
                1
            }
        },
        retry_ingest: retry_ingest.unwrap_or(false),
        namespace,
        health_check: match health_check {
            Some(raw) => health_check_settings(raw, context.health_check, &path.key("health_check"), problems),
            None => context.health_check.clone(),
        },
        quotas: quotas.map(|raw| self::quotas(raw, &path.key("quotas"), problems)),
        upstream_auth: upstream_auth
            .and_then(|raw| secrets::upstream_auth(raw, &path.key("upstream_auth"), context.inputs, problems)),
        tls: tls.and_then(|raw| secrets::upstream_tls(raw, &path.key("tls"), context.inputs, problems)),
    }
}

/// Parses one endpoint URL (`http://host:port`); a host name takes its
/// address from `inputs`.
fn endpoint(raw: &str, path: &KeyPath, inputs: &Inputs, problems: &mut Problems) -> Option<Endpoint> {
    let url = match Url::parse(raw) {
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
        Err(_) => match inputs.address(&host, port) {
            Some(addr) => addr,
            None => {
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
    listen.ip() == endpoint.ip()
        || (listen.ip().is_unspecified() && (endpoint.ip().is_loopback() || endpoint.ip().is_unspecified()))
}

pub(super) fn health_check_settings(
    raw: RawHealthCheck,
    defaults: &HealthCheck,
    path: &KeyPath,
    problems: &mut Problems,
) -> HealthCheck {
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
        interval: duration(interval.as_deref(), defaults.interval, UP_TO_AN_HOUR, &path.key("interval"), problems),
        timeout: duration(timeout.as_deref(), defaults.timeout, UP_TO_FIVE_MINUTES, &path.key("timeout"), problems),
        path: probe_path,
        healthy_threshold: count(
            healthy_threshold,
            defaults.healthy_threshold,
            &path.key("healthy_threshold"),
            problems,
        ),
        unhealthy_threshold: count(
            unhealthy_threshold,
            defaults.unhealthy_threshold,
            &path.key("unhealthy_threshold"),
            problems,
        ),
        passive_failures,
        ejection_cooldown: duration(
            ejection_cooldown.as_deref(),
            defaults.ejection_cooldown,
            UP_TO_AN_HOUR,
            &path.key("ejection_cooldown"),
            problems,
        ),
    }
}

pub(super) fn quotas(raw: RawQuotas, path: &KeyPath, problems: &mut Problems) -> Quotas {
    let RawQuotas { requests_per_second, burst, max_concurrent_requests, max_body_bytes } = raw;
    let quotas = Quotas {
        requests_per_second: positive(requests_per_second, MAX_RATE, &path.key("requests_per_second"), problems)
            .map(|n| n as u32),
        burst: positive(burst, MAX_RATE, &path.key("burst"), problems).map(|n| n as u32),
        max_concurrent_requests: positive(
            max_concurrent_requests,
            MAX_IN_FLIGHT,
            &path.key("max_concurrent_requests"),
            problems,
        )
        .map(|n| n as u32),
        max_body_bytes: positive(max_body_bytes, MAX_BODY_BYTES, &path.key("max_body_bytes"), problems),
    };
    if quotas.burst.is_some() && quotas.requests_per_second.is_none() {
        problems.add(&path.key("burst"), "a burst needs requests_per_second");
    }
    quotas
}
