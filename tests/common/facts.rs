//! What deployment recipes (Containerfile, Kubernetes manifests) must agree
//! with, read from the router's own validated config.

use mirador_router::config::Config;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// The ports a client outside the host or pod can reach: every listener of
/// `config` not bound to loopback, the admin listener included.
pub fn reachable_ports(config: &Config) -> BTreeSet<u16> {
    let server = &config.server;
    let listeners: Vec<SocketAddr> = server
        .listen
        .iter()
        .copied()
        .chain(server.signal_listeners.iter().map(|(_, addr)| *addr))
        .chain(server.tls.iter().map(|tls| tls.listen))
        .chain(server.otlp_grpc_listen)
        .chain(std::iter::once(config.admin.listen))
        .collect();
    listeners.iter().filter(|addr| !addr.ip().is_loopback()).map(SocketAddr::port).collect()
}
