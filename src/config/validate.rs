//! Raw file format → validated model, collecting every problem: a pure
//! function of the parsed text and the gathered [`Inputs`] (files,
//! environment, DNS answers), which reads nothing itself.
//!
//! The conversion destructures each raw struct by name (no `..`), so a field
//! added to the file format cannot be silently ignored here. Validation never
//! stops at the first problem: it returns the model, or every problem found,
//! each with its key path.

use super::check::{check_tenant_id, duration, listen_addr, positive, Problems, NONE_TO_AN_HOUR, UP_TO_AN_HOUR};
use super::deployment::{self, health_check_settings, DeploymentContext};
use super::edge;
use super::error::{KeyPath, Problem};
use super::inputs::Inputs;
use super::model::*;
use super::raw::*;
use super::secrets;
use crate::api::{admin_op_runs, Signal};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

pub fn validate(raw: RawConfig, inputs: &Inputs) -> Result<Config, Vec<Problem>> {
    let RawConfig { server, admin, tenancy, health_check, observability, tenants, tiers, store, dns, quotas } = raw;
    let mut problems = Problems::default();
    let root = KeyPath::root();

    let mut warnings = Vec::new();
    let server = server_settings(server, &root.key("server"), inputs, &mut problems, &mut warnings);
    let admin = admin_settings(admin, &root.key("admin"), inputs, &mut problems);
    let store = super::store::store(store, &root.key("store"), inputs, &mut problems);
    let nameservers = nameservers(dns, &root.key("dns"), &mut problems);
    let quotas = super::quota_backend::quota_backend(quotas, &root.key("quotas"), &mut problems);
    listeners_distinct(&server, &admin, &mut problems);
    let default_tier = tenancy.default_tier.clone();
    let tenancy = tenancy_settings(tenancy, &root.key("tenancy"), inputs, &mut problems, &mut warnings);
    let health_check =
        health_check_settings(health_check, &HealthCheck::default(), &root.key("health_check"), &mut problems);
    let clean_tiers = super::tiers::tiers(&tiers, &health_check, &mut problems);
    if let Some(name) = default_tier.as_deref().filter(|name| !tiers.contains_key(*name)) {
        problems.add(&root.key("tenancy").key("default_tier"), super::tiers::no_such_tier(name, &tiers));
    }

    let own_listeners: Vec<SocketAddr> = server.listeners().collect();
    let mut model_tenants = BTreeMap::new();
    for (id, mut raw_tenant) in tenants {
        let path = root.key("tenants").key(&id);
        let context = DeploymentContext { inputs, own_listeners: &own_listeners, health_check: &health_check };
        let tier = super::tiers::tier_of(&raw_tenant, default_tier.as_deref(), &tiers, &path, &mut problems);
        let tier_name = raw_tenant.tier.clone().or_else(|| default_tier.clone()).filter(|_| tier.is_ok());
        // A tier with errors (reported at the tier) is not inherited.
        let inherited_signals = match tier {
            Ok(Some(tier)) if tier_name.as_ref().is_some_and(|name| clean_tiers.contains(name)) => {
                super::tiers::inherit(&mut raw_tenant, tier)
            }
            _ => false,
        };
        let mut tenant = tenant(id.clone(), raw_tenant, inherited_signals, &path, &context, &mut problems);
        tenant.tier = tier_name;
        model_tenants.insert(id, std::sync::Arc::new(tenant));
    }

    secrets::credentials_unique(&model_tenants, &mut problems);
    deployment::shared_clusters(&model_tenants, &mut problems);
    let RawObservability { metrics, access_log, access_log_query, usage_interval } = observability;
    let at = root.key("observability").key("usage_interval");
    let usage_interval =
        duration(usage_interval.as_deref(), Duration::from_secs(60), NONE_TO_AN_HOUR, &at, &mut problems);
    if !usage_interval.is_zero() && usage_interval < Duration::from_secs(1) {
        problems.add(&at, "must be 0s (off) or at least 1s: each round reads every deployment's /metrics");
    }
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    let observability = Observability {
        metrics: metrics.unwrap_or(true),
        access_log: access_log.unwrap_or_default(),
        access_log_query: access_log_query.unwrap_or(false),
        usage_interval: Some(usage_interval).filter(|d| !d.is_zero()),
    };
    let dns = Dns { nameservers, answers: inputs.answers().clone() };
    Ok(Config {
        server,
        admin,
        tenancy,
        health_check,
        observability,
        store,
        tenants: model_tenants,
        warnings,
        dns,
        quotas,
    })
}

/// `[dns] nameservers`: each an `ip:port`, at most [`super::MAX_NAMESERVERS`].
fn nameservers(raw: RawDns, path: &KeyPath, problems: &mut Problems) -> Vec<SocketAddr> {
    let RawDns { nameservers } = raw;
    let path = path.key("nameservers");
    if nameservers.len() > super::MAX_NAMESERVERS {
        problems.add(&path, format!("at most {} nameservers, got {}", super::MAX_NAMESERVERS, nameservers.len()));
    }
    let parse = |(i, raw): (usize, &String)| match raw.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.add(
                &path.index(i),
                format!("{raw:?} is not a nameserver address; expected ip:port such as 127.0.0.1:53"),
            );
            None
        }
    };
    nameservers.iter().enumerate().filter_map(parse).collect()
}

fn server_settings(
    raw: RawServer,
    path: &KeyPath,
    inputs: &Inputs,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Server {
    let RawServer {
        listen,
        threads,
        signal_listeners,
        grace_period,
        pid_file,
        upgrade_sock,
        work_stealing,
        request_header_timeout,
        idle_timeout,
        body_timeout,
        max_connections,
        max_connections_per_client,
        max_request_headers,
        max_request_header_bytes,
        http2,
        tls,
        otlp_grpc_listen,
        otlp_grpc_tls,
    } = raw;
    let tls = edge::tls_listeners(tls.unwrap_or_default(), &path.key("tls"), inputs, problems, warnings);
    let otlp_grpc_listen =
        otlp_grpc_listen.and_then(|addr| listen_addr(&addr, &path.key("otlp_grpc_listen"), problems));
    let otlp_grpc_tls = otlp_grpc_tls.and_then(|raw| {
        let key = path.key("otlp_grpc_tls");
        let addr = listen_addr(&raw, &key, problems)?;
        if otlp_grpc_listen.is_none() {
            problems.add(&key, "needs server.otlp_grpc_listen: the listener it puts TLS on");
        } else if !tls.iter().any(|listener| listener.listen == addr) {
            problems.add(
                &key,
                format!("no [[server.tls]] listener is on {addr}: name the one whose certificates it serves"),
            );
        }
        Some(addr)
    });
    let listen_raw = listen.unwrap_or_else(|| vec!["0.0.0.0:8080".to_string()]);
    let listen: Vec<SocketAddr> = listen_raw
        .iter()
        .enumerate()
        .filter_map(|(i, addr)| listen_addr(addr, &path.key("listen").index(i), problems))
        .collect();
    let RawSignalListeners { metrics, logs, traces } = signal_listeners;
    let signal_listeners: Vec<(Signal, SocketAddr)> =
        [(Signal::Metrics, metrics), (Signal::Logs, logs), (Signal::Traces, traces)]
            .into_iter()
            .filter_map(|(signal, addr)| {
                let key = path.key("signal_listeners").key(signal.as_str());
                Some((signal, listen_addr(&addr?, &key, problems)?))
            })
            .collect();
    if listen_raw.is_empty() && signal_listeners.is_empty() && tls.is_empty() {
        problems.add(&path.key("listen"), "no listener: list at least one address here or in server.signal_listeners");
    }
    let threads = match threads.unwrap_or(2) {
        n @ 1..=256 => n as usize,
        n => {
            problems.add(&path.key("threads"), format!("must be between 1 and 256, got {n}"));
            1
        }
    };
    let grace_period =
        duration(grace_period.as_deref(), Duration::from_secs(5), NONE_TO_AN_HOUR, &path.key("grace_period"), problems);
    Server {
        listen,
        threads,
        signal_listeners,
        grace_period,
        pid_file: pid_file.unwrap_or_else(|| "/tmp/mirador-router.pid".into()).into(),
        upgrade_sock: upgrade_sock.unwrap_or_else(|| "/tmp/mirador-router-upgrade.sock".into()).into(),
        work_stealing: work_stealing.unwrap_or(false),
        http2: http2.unwrap_or(false),
        tls,
        otlp_grpc_listen,
        otlp_grpc_tls,
        clients: {
            let defaults = ClientLimits::default();
            let timeout = |raw: Option<String>, default, key: &str, problems: &mut Problems| {
                duration(raw.as_deref(), default, UP_TO_AN_HOUR, &path.key(key), problems)
            };
            let count = |raw: Option<i64>, default: usize, max: u64, key: &str, problems: &mut Problems| {
                positive(raw, max, &path.key(key), problems).map_or(default, |n| n as usize)
            };
            let max_connections =
                count(max_connections, defaults.max_connections, 1_000_000, "max_connections", problems);
            ClientLimits {
                request_header_timeout: timeout(
                    request_header_timeout,
                    defaults.request_header_timeout,
                    "request_header_timeout",
                    problems,
                ),
                idle_timeout: timeout(idle_timeout, defaults.idle_timeout, "idle_timeout", problems),
                body_timeout: timeout(body_timeout, defaults.body_timeout, "body_timeout", problems),
                max_connections,
                max_connections_per_client: count(
                    max_connections_per_client,
                    defaults.max_connections_per_client.min(max_connections),
                    max_connections as u64,
                    "max_connections_per_client",
                    problems,
                ),
                // Pingora reads at most 256 headers and 1 MiB of head itself.
                max_request_headers: count(
                    max_request_headers,
                    defaults.max_request_headers,
                    256,
                    "max_request_headers",
                    problems,
                ),
                max_request_header_bytes: count(
                    max_request_header_bytes,
                    defaults.max_request_header_bytes,
                    1 << 20,
                    "max_request_header_bytes",
                    problems,
                ),
            }
        },
    }
}

fn admin_settings(raw: RawAdmin, path: &KeyPath, inputs: &Inputs, problems: &mut Problems) -> Admin {
    let RawAdmin { listen, token_file, watch_config } = raw;
    let listen = listen.unwrap_or_else(|| "127.0.0.1:9900".to_string());
    let listen = listen_addr(&listen, &path.key("listen"), problems).unwrap_or(([127, 0, 0, 1], 9900).into());
    let token = token_file.and_then(|file| match inputs.text(&file) {
        Ok(text) if !text.trim().is_empty() => Some(Secret(text.trim().to_string())),
        Ok(_) => {
            problems.add(&path.key("token_file"), format!("{file} is empty"));
            None
        }
        Err(why) => {
            problems.add(&path.key("token_file"), why);
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
        .chain(
            server
                .signal_listeners
                .iter()
                .map(|(s, a)| (KeyPath::root().key("server").key("signal_listeners").key(s.as_str()), *a)),
        )
        .chain(
            server
                .tls
                .iter()
                .enumerate()
                .map(|(i, tls)| (KeyPath::root().key("server").key("tls").index(i).key("listen"), tls.listen)),
        )
        .chain(server.otlp_grpc_listen.map(|a| (KeyPath::root().key("server").key("otlp_grpc_listen"), a)))
        .chain([(KeyPath::root().key("admin").key("listen"), admin.listen)]);
    for (path, addr) in all {
        if !seen.insert(addr) {
            problems.add(&path, format!("address {addr} is already used by another listener"));
        }
    }
}

fn tenancy_settings(
    raw: RawTenancy,
    path: &KeyPath,
    inputs: &Inputs,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Tenancy {
    let RawTenancy { header, require_credentials, default_tier: _, jwt } = raw;
    let jwt = jwt.and_then(|raw| super::jwt::jwt(raw, &path.key("jwt"), inputs, problems, warnings));
    let header = header.unwrap_or_else(|| "X-Tenant-ID".to_string());
    let header = http::HeaderName::from_bytes(header.as_bytes()).unwrap_or_else(|_| {
        problems.add(&path.key("header"), format!("{header:?} is not a valid HTTP header name"));
        http::HeaderName::from_static("x-tenant-id")
    });
    Tenancy { header, require_credentials: require_credentials.unwrap_or(false), jwt }
}

/// A tenant of the file (its tier's keys already inherited). Signals a tier
/// allows (`inherited_signals`) are enabled where the tenant has a
/// deployment; signals the tenant lists itself each need one.
fn tenant(
    id: String,
    raw: RawTenant,
    inherited_signals: bool,
    path: &KeyPath,
    context: &DeploymentContext,
    problems: &mut Problems,
) -> Tenant {
    let RawTenant { name, admin_email, status, tier: _, metrics, logs, traces, quotas, features, auth } = raw;
    if let Err(why) = check_tenant_id(&id) {
        problems.add(path, why);
    }
    if let Some(email) = &admin_email {
        if !email.contains('@') {
            problems.add(&path.key("admin_email"), format!("{email:?} is not an email address"));
        }
    }
    let deployments =
        [(Signal::Metrics, metrics), (Signal::Logs, logs), (Signal::Traces, traces)].map(|(signal, raw)| {
            raw.map(|raw| deployment::deployment(raw, signal, &path.key(signal.as_str()), context, problems))
        });
    let quotas = deployment::quotas(quotas, &path.key("quotas"), problems);
    let auth = auth.map(|raw| secrets::auth(raw, &path.key("auth"), context.inputs, problems));
    let RawFeatures { signals, read_only, admin_api } = features;
    let enabled = match signals {
        None => Signal::ALL.map(|s| deployments[s.index()].is_some()),
        Some(listed) => {
            let mut enabled = [false; 3];
            for (i, signal) in listed.into_iter().enumerate() {
                if deployments[signal.index()].is_none() && inherited_signals {
                    continue;
                }
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
    let read_only = read_only.unwrap_or(false);
    let mut admin_api = admin_api.unwrap_or_default();
    admin_api.sort();
    admin_api.dedup();
    if read_only && !admin_api.is_empty() {
        problems.add(
            &path.key("features").key("admin_api"),
            "a read-only tenant cannot be granted admin operations: drop read_only or admin_api",
        );
    }
    // A grant must run somewhere: on a shared cluster only series deletion
    // is scoped to the tenant.
    for op in &admin_api {
        let runs = Signal::ALL.into_iter().any(|s| {
            enabled[s.index()]
                && deployments[s.index()].as_ref().is_some_and(|d| admin_op_runs(*op, s, d.cluster.is_some()))
        });
        if !runs {
            problems.add(
                &path.key("features").key("admin_api"),
                format!(
                    "operation {} runs on none of the tenant's deployments (on a shared cluster only \
                     delete_series of metrics is scoped to the tenant)",
                    op.as_str()
                ),
            );
        }
    }
    Tenant {
        name: name.unwrap_or_else(|| id.clone()),
        id,
        admin_email,
        status: status.unwrap_or_default(),
        deployments,
        quotas,
        features: Features { signals: enabled, read_only, admin_api },
        auth,
        tier: None,
    }
}
