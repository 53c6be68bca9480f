//! A deployment of one tenant's signal: its endpoints (parsed, resolved
//! through the gathered [`Inputs`], never twice the same, never the router's
//! own listener) with the addresses of its `dns` names, timeouts, attempts,
//! health checks, quotas, upstream credentials and TLS.

use super::check::{count, duration, positive, Bounds, Problems, UP_TO_AN_HOUR, UP_TO_FIVE_MINUTES};
use super::dns::{DnsName, MAX_DNS_NAMES};
use super::error::KeyPath;
use super::inputs::Inputs;
use super::model::*;
use super::raw::*;
use super::secrets;
use crate::api::{Signal, VictoriaTenant};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
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
    signal: Signal,
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
        account_id,
        project_id,
        insert_endpoints,
        insert_backup_endpoints,
        select_endpoints,
        select_backup_endpoints,
        share_tenant_id_with,
        http2,
        migration,
        otlp_grpc_endpoints,
        write_policy,
        dns,
        dns_refresh,
    } = raw;
    let mut lists = EndpointLists { path, context, seen: HashSet::new() };
    let names = dns.unwrap_or_default();
    let tenant = victoria_tenant(account_id, project_id, path, problems);
    let split = [&insert_endpoints, &insert_backup_endpoints, &select_endpoints, &select_backup_endpoints];
    let (endpoints, backup_endpoints, select) = match tenant {
        // A VictoriaMetrics cluster: vminsert and vmselect, each its own pool.
        Some(_) if signal == Signal::Metrics => {
            for (key, list) in [("endpoints", &endpoints), ("backup_endpoints", &backup_endpoints)] {
                if !list.is_empty() {
                    problems.add(
                        &path.key(key),
                        "a shared metrics deployment names insert_endpoints (vminsert) and select_endpoints \
                         (vmselect) instead",
                    );
                }
            }
            if !names.is_empty() {
                problems.add(
                    &path.key("dns"),
                    "a shared metrics deployment names insert_endpoints and select_endpoints; dns names are for \
                     endpoints",
                );
            }
            let insert = lists.service("insert", insert_endpoints, insert_backup_endpoints, false, problems);
            let select = lists.service("select", select_endpoints, select_backup_endpoints, false, problems);
            (insert.endpoints, insert.backup_endpoints, Some(select))
        }
        _ => {
            for (key, list) in SPLIT_KEYS.iter().zip(split) {
                if list.is_some() {
                    let why = match tenant {
                        Some(_) => format!("VictoriaLogs and VictoriaTraces are one service: a shared {signal} deployment lists endpoints"),
                        None => "only a shared metrics deployment (with account_id) has vminsert and vmselect endpoints".into(),
                    };
                    problems.add(&path.key(key), why);
                }
            }
            let mut service = lists.service("", Some(endpoints), Some(backup_endpoints), !names.is_empty(), problems);
            service.endpoints.extend(lists.discovered(&names, problems));
            if service.endpoints.len() + service.backup_endpoints.len() > MAX_ENDPOINTS_PER_DEPLOYMENT {
                problems.add(
                    &path.key("dns"),
                    format!("resolves to more than {MAX_ENDPOINTS_PER_DEPLOYMENT} endpoints in one pool"),
                );
            }
            (service.endpoints, service.backup_endpoints, None)
        }
    };
    if tenant.is_none() {
        if project_id.is_some() {
            problems.add(&path.key("project_id"), "a project_id needs an account_id (a shared cluster deployment)");
        }
        if share_tenant_id_with.is_some() {
            problems.add(&path.key("share_tenant_id_with"), "needs an account_id (a shared cluster deployment)");
        }
    }
    let otlp_grpc_endpoints = lists.list(otlp_grpc_endpoints.unwrap_or_default(), "otlp_grpc_endpoints", problems);
    let (timeout, max_attempts) = attempts(timeout.as_deref(), max_attempts, path, problems);
    let migration = migration.map(|raw| self::migration(*raw, signal, &path.key("migration"), context, problems));
    if let Some(m) = &migration {
        let own: HashSet<&str> = served_urls(&endpoints, &backup_endpoints, select.as_ref()).collect();
        let to = &m.to;
        let target =
            served_urls(&to.endpoints, &to.backup_endpoints, to.cluster.as_ref().and_then(|c| c.select.as_ref()));
        for url in target.filter(|url| own.contains(url)) {
            problems.add(
                &path.key("migration").key("to"),
                format!("lists {url}, which the deployment itself lists: a migration goes to another deployment"),
            );
        }
    }
    Deployment {
        endpoints,
        backup_endpoints,
        timeout,
        connect_timeout: duration(
            connect_timeout.as_deref(),
            Duration::from_secs(2),
            UP_TO_FIVE_MINUTES,
            &path.key("connect_timeout"),
            problems,
        ),
        max_attempts,
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
        http2: http2.unwrap_or(false),
        cluster: tenant.map(|tenant| SharedCluster { tenant, select, share_tenant_id_with }),
        migration: migration.map(Box::new),
        otlp_grpc_endpoints,
        write_policy: write_policy.unwrap_or_default(),
        dns_refresh: refresh(dns_refresh.as_deref(), &names, path, problems),
        dns: names,
    }
}

/// How often a deployment's `dns` names are resolved again: [`DNS_REFRESH`],
/// 10 s when not given.
fn refresh(raw: Option<&str>, names: &[String], path: &KeyPath, problems: &mut Problems) -> Duration {
    let at = path.key("dns_refresh");
    if raw.is_some() && names.is_empty() {
        problems.add(&at, "the deployment lists no dns names to refresh");
    }
    duration(raw, Duration::from_secs(10), DNS_REFRESH, &at, problems)
}

/// The range of `dns_refresh`: a second to an hour.
pub const DNS_REFRESH: Bounds = (Duration::from_secs(1), Duration::from_secs(3600));

/// Every endpoint URL of a deployment's services.
fn served_urls<'a>(
    endpoints: &'a [Endpoint],
    backups: &'a [Endpoint],
    select: Option<&'a Endpoints>,
) -> impl Iterator<Item = &'a str> {
    let select = select.into_iter().flat_map(|s| s.endpoints.iter().chain(&s.backup_endpoints));
    endpoints.iter().chain(backups).chain(select).map(|e| e.url.as_str())
}

/// The most a mirrored request body may be, and a queue hold.
pub const MAX_MIRROR_BODY: u64 = 64 << 20;
pub const MAX_MIRROR_QUEUE: u64 = 1_000_000;
pub const MAX_MIRROR_QUEUE_BYTES: u64 = 16 << 30;

/// `migration`: its target (a deployment of any shape, checked like one),
/// phase, shadow sample and mirror bounds.
fn migration(
    raw: RawMigration,
    signal: Signal,
    path: &KeyPath,
    context: &DeploymentContext,
    problems: &mut Problems,
) -> Migration {
    let RawMigration { mut to, phase, shadow_sample, mirror_max_body, mirror_queue, mirror_queue_bytes } = raw;
    if to.migration.take().is_some() {
        problems.add(&path.key("to").key("migration"), "a migration's target does not migrate itself");
    }
    let to = deployment(to, signal, &path.key("to"), context, problems);
    let shadow_sample = match shadow_sample {
        None => 0.1,
        Some(share) if (0.0..=1.0).contains(&share) => share,
        Some(share) => {
            problems
                .add(&path.key("shadow_sample"), format!("must be between 0 and 1 (a share of reads), got {share}"));
            0.1
        }
    };
    Migration {
        to,
        phase,
        shadow_sample,
        mirror_max_body: positive(mirror_max_body, MAX_MIRROR_BODY, &path.key("mirror_max_body"), problems)
            .unwrap_or(8 << 20),
        mirror_queue: positive(mirror_queue, MAX_MIRROR_QUEUE, &path.key("mirror_queue"), problems).unwrap_or(10_000)
            as usize,
        mirror_queue_bytes: positive(
            mirror_queue_bytes,
            MAX_MIRROR_QUEUE_BYTES,
            &path.key("mirror_queue_bytes"),
            problems,
        )
        .unwrap_or(256 << 20),
    }
}

const SPLIT_KEYS: [&str; 4] =
    ["insert_endpoints", "insert_backup_endpoints", "select_endpoints", "select_backup_endpoints"];

/// A Victoria tenant id: `account_id` (and `project_id`, default 0), each a u32.
fn victoria_tenant(
    account: Option<i64>,
    project: Option<i64>,
    path: &KeyPath,
    problems: &mut Problems,
) -> Option<VictoriaTenant> {
    let id = |raw: i64, key: &str, problems: &mut Problems| match u32::try_from(raw) {
        Ok(id) => id,
        Err(_) => {
            problems.add(&path.key(key), format!("must be between 0 and {}, got {raw}", u32::MAX));
            0
        }
    };
    let account = id(account?, "account_id", problems);
    Some(VictoriaTenant { account, project: project.map_or(0, |raw| id(raw, "project_id", problems)) })
}

/// The endpoint lists of one deployment: every URL parsed and resolved,
/// none twice (across services too), none the router's own listener.
struct EndpointLists<'a> {
    path: &'a KeyPath,
    context: &'a DeploymentContext<'a>,
    seen: HashSet<String>,
}

impl EndpointLists<'_> {
    /// The primaries and backups of one service: `<prefix>_endpoints` and
    /// `<prefix>_backup_endpoints` (`endpoints`, `backup_endpoints` for no prefix).
    fn service(
        &mut self,
        prefix: &str,
        primaries: Option<Vec<String>>,
        backups: Option<Vec<String>>,
        named: bool,
        problems: &mut Problems,
    ) -> Endpoints {
        let key = |name: &str| if prefix.is_empty() { name.to_string() } else { format!("{prefix}_{name}") };
        let (primaries, backups) = (primaries.unwrap_or_default(), backups.unwrap_or_default());
        if primaries.is_empty() && !named {
            problems.add(&self.path.key(&key("endpoints")), "the deployment lists no endpoints");
        }
        if primaries.len() + backups.len() > MAX_ENDPOINTS_PER_DEPLOYMENT {
            problems.add(self.path, format!("more than {MAX_ENDPOINTS_PER_DEPLOYMENT} endpoints in one pool"));
        }
        Endpoints {
            endpoints: self.list(primaries, &key("endpoints"), problems),
            backup_endpoints: self.list(backups, &key("backup_endpoints"), problems),
        }
    }

    /// The endpoints of `dns` names, from their gathered answers: `http://ip:port`
    /// each, an address listed already (by `endpoints` or another name) once.
    fn discovered(&mut self, names: &[String], problems: &mut Problems) -> Vec<Endpoint> {
        if names.len() > MAX_DNS_NAMES {
            problems.add(&self.path.key("dns"), format!("at most {MAX_DNS_NAMES} names, got {}", names.len()));
        }
        let mut out = Vec::new();
        for (i, entry) in names.iter().enumerate() {
            let at = self.path.key("dns").index(i);
            if let Err(why) = DnsName::parse(entry) {
                problems.add(&at, why);
                continue;
            }
            let answer = self.context.inputs.answer(entry).cloned().unwrap_or_default();
            if answer.addrs.is_empty() {
                let why = answer.error.unwrap_or_else(|| "not looked up".to_string());
                problems.add(&at, format!("cannot resolve {entry:?}: {why}"));
            }
            for addr in answer.addrs {
                let endpoint = Endpoint {
                    url: format!("http://{addr}"),
                    tls: false,
                    host: addr.ip().to_string(),
                    port: addr.port(),
                    addr,
                };
                if !self.seen.insert(endpoint.url.clone()) {
                    continue;
                }
                if self.context.own_listeners.iter().any(|l| loops_back(*l, addr)) {
                    problems.add(
                        &at,
                        format!("{entry:?} resolves to {addr}, one of the router's own listeners (a proxy loop)"),
                    );
                }
                out.push(endpoint);
            }
        }
        out
    }

    fn list(&mut self, urls: Vec<String>, key: &str, problems: &mut Problems) -> Vec<Endpoint> {
        let mut out = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let at = self.path.key(key).index(i);
            let Some(endpoint) = endpoint(url, &at, self.context.inputs, problems) else { continue };
            if !self.seen.insert(endpoint.url.clone()) {
                problems.add(&at, format!("duplicate endpoint {}", endpoint.url));
            } else if self.context.own_listeners.iter().any(|l| loops_back(*l, endpoint.addr)) {
                problems
                    .add(&at, format!("endpoint {} is one of the router's own listeners (a proxy loop)", endpoint.url));
            }
            out.push(endpoint);
        }
        out
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

/// A deployment's `timeout` and `max_attempts` (its own, or its tier's).
pub(super) fn attempts(
    timeout: Option<&str>,
    max_attempts: Option<i64>,
    path: &KeyPath,
    problems: &mut Problems,
) -> (Duration, u32) {
    let timeout = duration(timeout, Duration::from_secs(30), UP_TO_AN_HOUR, &path.key("timeout"), problems);
    let max_attempts = match max_attempts.unwrap_or(3) {
        n @ 1..=16 => n as u32,
        n => {
            problems.add(&path.key("max_attempts"), format!("must be between 1 and 16, got {n}"));
            1
        }
    };
    (timeout, max_attempts)
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

/// Shared clusters across tenants: two tenants reach the same (cluster,
/// account, project) of a signal only when one names the other in
/// `share_tenant_id_with` (a typo must not merge two customers' data); a
/// `share_tenant_id_with` names a tenant that does share; and a dedicated
/// deployment never points at an endpoint another tenant uses as a shared
/// cluster (it would read and write the cluster's default tenant 0:0).
pub(super) fn shared_clusters(tenants: &BTreeMap<String, Arc<Tenant>>, problems: &mut Problems) {
    let at = |tenant: &str, signal: Signal, key: &str| {
        KeyPath::root().key("tenants").key(tenant).key(signal.as_str()).key(key)
    };
    for signal in Signal::ALL {
        let deployments = || tenants.values().filter_map(move |t| Some((t.id.as_str(), t.deployment(signal)?)));
        let shared = || deployments().filter_map(|(id, d)| Some((id, d, d.cluster.as_ref()?)));
        // Whether tenant `a` says it shares its ids with `b`.
        let agreed = |a: &str, b: &str| {
            tenants[a].deployment(signal).and_then(|d| d.cluster.as_ref()?.share_tenant_id_with.as_deref()) == Some(b)
        };
        let mut holder: HashMap<(&str, VictoriaTenant), &str> = HashMap::new();
        let mut shared_at: HashMap<&str, &str> = HashMap::new();
        for (id, deployment, cluster) in shared() {
            let mut reported = HashSet::new();
            for endpoint in deployment.all_endpoints() {
                shared_at.entry(&endpoint.url).or_insert(id);
                let first = *holder.entry((&endpoint.url, cluster.tenant)).or_insert(id);
                if first != id && !agreed(id, first) && !agreed(first, id) && reported.insert(first) {
                    problems.add(
                        &at(id, signal, "account_id"),
                        format!(
                            "tenant {first:?} already uses {} on {}: set share_tenant_id_with = {first:?} if the two \
                             are meant to share data, else give this tenant its own account_id",
                            cluster.tenant, endpoint.url
                        ),
                    );
                }
            }
            if let Some(other) = &cluster.share_tenant_id_with {
                let shares =
                    tenants.get(other).filter(|_| other != id).and_then(|t| t.deployment(signal)).is_some_and(|d| {
                        d.cluster.as_ref().is_some_and(|c| c.tenant == cluster.tenant)
                            && d.all_endpoints().any(|e| deployment.all_endpoints().any(|mine| mine.url == e.url))
                    });
                if !shares {
                    problems.add(
                        &at(id, signal, "share_tenant_id_with"),
                        format!(
                            "tenant {other:?} does not use {} on this cluster: there is nothing to share",
                            cluster.tenant
                        ),
                    );
                }
            }
        }
        for (id, deployment) in deployments().filter(|(_, d)| d.cluster.is_none()) {
            if let Some((url, owner)) =
                deployment.all_endpoints().find_map(|e| Some((&e.url, *shared_at.get(e.url.as_str())?)))
            {
                problems.add(
                    &at(id, signal, "endpoints"),
                    format!(
                        "{url} is a shared cluster of tenant {owner:?}: a dedicated deployment there would read and \
                         write the cluster's tenant 0:0; give this deployment its account_id"
                    ),
                );
            }
        }
    }
}
