//! Assembles the Pingora server from a validated config: one proxy service
//! for the unified listeners, one per drop-in listener, each a [`Router`]
//! sharing the same [`RouteStore`], and the admin listener. The plain ones
//! take HTTP/1.1 (and h2c with `[server] http2 = true`), the TLS ones
//! HTTP/2 by ALPN; every one has the HTTP/2 bounds of [`connection`].

use crate::admin::{AdminApp, Readings};
use crate::api::Listener;
use crate::config::Config;
use crate::connection::{self, Guarded};
use crate::edge::Edge;
use crate::metrics::Metrics;
use crate::proxy::Router;
use crate::reload::Reloader;
use crate::routing::RouteStore;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;
use std::sync::Arc;

/// Runtimes get this long to wind down after the grace period.
pub const RUNTIME_SHUTDOWN_SECONDS: u64 = 1;

/// Builds (and bootstraps) the server; `upgrade` takes the listening sockets
/// over from a running instance (Pingora's graceful upgrade).
pub fn build(
    config: &Config,
    routes: Arc<RouteStore>,
    metrics: Option<Arc<Metrics>>,
    reloader: Arc<Reloader>,
    edge: &Edge,
    readings: Readings,
    upgrade: bool,
) -> Server {
    let settings = &config.server;
    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(RUNTIME_SHUTDOWN_SECONDS),
        pid_file: settings.pid_file.display().to_string(),
        upgrade_sock: settings.upgrade_sock.display().to_string(),
        work_stealing: settings.work_stealing,
        ..ServerConf::default()
    };
    let opt = Opt { upgrade, ..Opt::default() };
    crate::api::prepare();
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    // One proxy service per listener, each behind its own client limits.
    let listeners = std::iter::once((Listener::Unified, "unified".to_string(), settings.listen.clone()))
        .filter(|(_, _, addrs)| !addrs.is_empty())
        .chain(settings.signal_listeners.iter().map(|(s, a)| (Listener::DropIn(*s), format!("drop-in {s}"), vec![*a])));
    for (listener, name, addrs) in listeners {
        let router = Router::new(listener, routes.clone(), config.observability.clone(), settings.clients);
        let mut proxy = pingora::proxy::http_proxy(&server.configuration, router);
        proxy.server_options = Some(connection::server_options(settings.http2, &settings.clients));
        proxy.h2_options = Some(connection::http2_options(&settings.clients));
        let mut service = Service::new(name, Guarded::new(proxy, settings.clients));
        for addr in addrs {
            service.add_tcp(&addr.to_string());
        }
        server.add_service(service);
    }
    // TLS listeners: unified, each certificate set the edge's (swapped on reload).
    for listener in &settings.tls {
        let Some(tls) = edge.settings(listener) else { continue };
        let router = Router::new(Listener::Unified, routes.clone(), config.observability.clone(), settings.clients);
        let mut proxy = pingora::proxy::http_proxy(&server.configuration, router.over_tls());
        // h2c never applies on TLS (Pingora turns it off there); HTTP/2 comes by ALPN.
        proxy.server_options = Some(connection::server_options(false, &settings.clients));
        proxy.h2_options = Some(connection::http2_options(&settings.clients));
        let mut service = Service::new(format!("tls {}", listener.listen), Guarded::new(proxy, settings.clients));
        service.add_tls_with_settings(&listener.listen.to_string(), None, tls);
        server.add_service(service);
    }
    let mut admin = Service::new(
        "admin".to_string(),
        AdminApp::new(routes, metrics, reloader, config.admin.token.clone(), readings),
    );
    admin.add_tcp(&config.admin.listen.to_string());
    admin.threads = Some(1);
    server.add_service(admin);
    server
}
