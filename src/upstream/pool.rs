//! A pool: the endpoints of one tenant's signal, and how one is chosen.
//!
//! Primaries are chosen round robin; backups only once every primary has
//! been tried by the request. A request never tries the same endpoint twice
//! ([`Tried`]). Each endpoint carries a ready-made [`HttpPeer`] so the request
//! path clones a template instead of parsing or resolving anything; equal
//! peers share Pingora's upstream connection pool.

use crate::config::{Deployment, Endpoint};
use crate::routing::Signal;
use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Whether an endpoint is a primary or a backup of its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Backup,
}

/// One endpoint as the proxy uses it.
pub struct UpstreamEndpoint {
    pub url: Arc<str>,
    pub role: Role,
    /// The `Host` header sent upstream.
    pub authority: HeaderValue,
    peer: HttpPeer,
}

/// The endpoints a request has tried, by index in its pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    pub fn insert(&mut self, index: usize) {
        self.0 |= 1 << index;
    }

    pub fn contains(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }

    pub fn count(self) -> u32 {
        self.0.count_ones()
    }
}

pub struct Pool {
    pub tenant: Arc<str>,
    pub signal: Signal,
    /// Primaries first, then backups; at most 64 (validated), so [`Tried`] fits a `u64`.
    endpoints: Vec<UpstreamEndpoint>,
    primaries: usize,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(tenant: Arc<str>, signal: Signal, deployment: &Deployment) -> Pool {
        let Deployment { endpoints, backup_endpoints, timeout, connect_timeout, namespace: _ } = deployment;
        let make = |endpoint: &Endpoint, role: Role| UpstreamEndpoint {
            url: endpoint.url.as_str().into(),
            role,
            authority: HeaderValue::from_str(&endpoint.authority())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            peer: peer(endpoint, *timeout, *connect_timeout),
        };
        let all: Vec<UpstreamEndpoint> = endpoints
            .iter()
            .map(|e| make(e, Role::Primary))
            .chain(backup_endpoints.iter().map(|e| make(e, Role::Backup)))
            .collect();
        debug_assert!(all.len() <= 64);
        Pool { tenant, signal, primaries: endpoints.len(), endpoints: all, next: AtomicUsize::new(0) }
    }

    /// The next endpoint to try: an untried primary, round robin; then an
    /// untried backup; `None` when every endpoint has been tried.
    pub fn select(&self, tried: Tried) -> Option<usize> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let tiers = [(0, self.primaries), (self.primaries, self.endpoints.len() - self.primaries)];
        for (first, len) in tiers {
            if let Some(i) = (0..len).map(|k| first + (turn + k) % len).find(|&i| !tried.contains(i)) {
                return Some(i);
            }
        }
        None
    }

    pub fn endpoint(&self, index: usize) -> &UpstreamEndpoint {
        &self.endpoints[index]
    }

    pub fn endpoints(&self) -> &[UpstreamEndpoint] {
        &self.endpoints
    }

    /// The peer for one attempt at endpoint `index`.
    pub fn peer(&self, index: usize) -> Box<HttpPeer> {
        Box::new(self.endpoints[index].peer.clone())
    }

    /// Whether an endpoint not in `tried` is left.
    pub fn has_untried(&self, tried: Tried) -> bool {
        tried.count() < self.endpoints.len() as u32
    }
}

fn peer(endpoint: &Endpoint, timeout: Duration, connect_timeout: Duration) -> HttpPeer {
    let mut peer = HttpPeer::new(endpoint.addr, endpoint.tls, endpoint.host.clone());
    peer.options.connection_timeout = Some(connect_timeout);
    peer.options.read_timeout = Some(timeout);
    peer.options.write_timeout = Some(timeout);
    peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn deployment(primaries: &[u16], backups: &[u16]) -> Deployment {
        let endpoint = |port: &u16| {
            let addr: SocketAddr = ([127, 0, 0, 1], *port).into();
            Endpoint { url: format!("http://{addr}"), tls: false, host: "127.0.0.1".into(), port: *port, addr }
        };
        Deployment {
            endpoints: primaries.iter().map(endpoint).collect(),
            backup_endpoints: backups.iter().map(endpoint).collect(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            namespace: None,
        }
    }

    #[test]
    fn primaries_take_turns() {
        let pool = Pool::new("t".into(), Signal::Metrics, &deployment(&[1, 2, 3], &[]));
        let picks: Vec<usize> = (0..6).map(|_| pool.select(Tried::default()).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn no_endpoint_twice_and_backups_last() {
        let pool = Pool::new("t".into(), Signal::Metrics, &deployment(&[1, 2], &[3, 4]));
        let mut tried = Tried::default();
        let mut order = Vec::new();
        while let Some(i) = pool.select(tried) {
            tried.insert(i);
            order.push(pool.endpoint(i).role);
        }
        assert_eq!(order, [Role::Primary, Role::Primary, Role::Backup, Role::Backup]);
        assert!(!pool.has_untried(tried));
    }
}
