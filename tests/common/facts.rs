//! What deployment recipes (Containerfile, Kubernetes manifests) must agree
//! with, read from the router's own validated config.

use mirador_router::config::Config;
use std::collections::BTreeSet;

/// The ports a client outside the host or pod can reach: every listener of
/// `config` not bound to loopback, the admin listener included.
pub fn reachable_ports(config: &Config) -> BTreeSet<u16> {
    let admin = std::iter::once(config.admin.listen);
    config.server.listeners().chain(admin).filter(|addr| !addr.ip().is_loopback()).map(|addr| addr.port()).collect()
}
