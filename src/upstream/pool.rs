//! A pool: the endpoints of one tenant's signal, and how one is chosen.
//!
//! Healthy primaries are chosen round robin; healthy backups only once no
//! healthy primary is left untried by the request. A request never tries the
//! same endpoint twice ([`Tried`]). Health is read from each endpoint's shared
//! [`EndpointHealth`] with one atomic load. Each attempt's [`HttpPeer`] is
//! built from the endpoint's resolved address and the pool's TLS material,
//! so the request path parses and resolves nothing; equal peers share
//! Pingora's upstream connection pool.

use super::health::EndpointHealth;
use super::registry::HealthRegistry;
use super::tls::TlsMaterial;
use super::version;
use crate::api::{Signal, VictoriaTenant};
use crate::config::{Deployment, Endpoint, Secret};
use crate::metrics::{PoolMetrics, PoolSeries, TenantSeries};
use crate::quota::{Limits, QuotaRegistry};
use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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
    pub health: Arc<EndpointHealth>,
    /// `mirador_router_upstream_attempt_duration_seconds` of this endpoint,
    /// created at its first attempt.
    attempt_duration: OnceLock<prometheus::Histogram>,
    addr: SocketAddr,
    tls: bool,
    /// The TLS server name of an `https://` endpoint; empty for `http://`.
    sni: Box<str>,
}

/// The outcome of choosing an endpoint for an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Endpoint(usize),
    /// No endpoint of the pool is healthy: answer 503.
    NoneHealthy,
    /// Every healthy endpoint was tried by this request already.
    Exhausted,
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
    /// Most attempts one request makes on this pool.
    pub max_attempts: u32,
    /// Whether ingest requests are replayed after a failure once sent.
    pub retry_ingest: bool,
    /// The deployment's progress timeout; also bounds retrying.
    pub timeout: Duration,
    /// The probe interval: how soon a 503 client may try again.
    pub retry_after: Duration,
    series: Option<PoolSeries>,
    /// Quota state of this signal alone, on top of the tenant's.
    pub limits: Option<Arc<Limits>>,
    /// Sent upstream as `Authorization` (the client's is never forwarded).
    pub upstream_auth: Option<HeaderValue>,
    /// The tenant's ids on a shared cluster; `None` for a dedicated deployment.
    pub cluster: Option<VictoriaTenant>,
    /// `AccountID` and `ProjectID` sent to a shared VictoriaLogs or
    /// VictoriaTraces (a VictoriaMetrics cluster takes the ids in the path).
    pub tenant_headers: Option<(HeaderValue, HeaderValue)>,
    connect_timeout: Duration,
    tls: TlsMaterial,
    /// Whether endpoints are spoken to in HTTP/2 ([`version`]).
    pub(super) http2: bool,
    otlp_grpc: Vec<GrpcEndpoint>,
}

/// A deployment's OTLP/gRPC endpoint (VictoriaTraces' gRPC port).
#[derive(Debug)]
pub struct GrpcEndpoint {
    pub url: Arc<str>,
    /// The `:authority` of a call.
    pub authority: HeaderValue,
    addr: SocketAddr,
    tls: bool,
    sni: Arc<str>,
}

impl Pool {
    /// The pool of `tenant`'s `signal`: endpoint health from `health`,
    /// the signal's own quota state from `quotas`; with metrics on, its
    /// series are created under `series` when first counted.
    pub fn new(
        tenant: Arc<str>,
        signal: Signal,
        deployment: &Deployment,
        health: &HealthRegistry,
        quotas: &QuotaRegistry,
        series: Option<&Arc<TenantSeries>>,
    ) -> Pool {
        let Deployment {
            endpoints,
            backup_endpoints,
            timeout,
            connect_timeout,
            max_attempts,
            retry_ingest,
            namespace: _,
            health_check,
            quotas: deployment_quotas,
            upstream_auth,
            tls,
            http2,
            cluster,
            migration: _,
            otlp_grpc_endpoints,
            write_policy: _,
            // The names' addresses are in `endpoints` already.
            dns: _,
            dns_refresh: _,
        } = deployment;
        let tls_material = TlsMaterial::new(tls.as_ref());
        let make = |endpoint: &Endpoint, role: Role| {
            let health = health.endpoint(endpoint, health_check, tls.as_ref(), &tls_material, *http2);
            UpstreamEndpoint {
                url: health.url.clone(),
                role,
                authority: HeaderValue::from_str(&endpoint.authority())
                    .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                health,
                attempt_duration: OnceLock::new(),
                addr: endpoint.addr,
                tls: endpoint.tls,
                sni: if endpoint.tls { endpoint.host.as_str().into() } else { "".into() },
            }
        };
        let all: Vec<UpstreamEndpoint> = endpoints
            .iter()
            .map(|e| make(e, Role::Primary))
            .chain(backup_endpoints.iter().map(|e| make(e, Role::Backup)))
            .collect();
        debug_assert!(all.len() <= 64);
        Pool {
            signal,
            primaries: endpoints.len(),
            endpoints: all,
            next: AtomicUsize::new(0),
            max_attempts: *max_attempts,
            retry_ingest: *retry_ingest,
            timeout: *timeout,
            retry_after: health_check.interval,
            series: series.map(|tenant| PoolSeries::new(tenant.clone(), signal)),
            limits: deployment_quotas.as_ref().and_then(|q| quotas.limits(&format!("{tenant}/{signal}"), q)),
            upstream_auth: upstream_auth.as_ref().and_then(|Secret(value)| {
                let mut value = HeaderValue::from_str(value).ok()?;
                value.set_sensitive(true);
                Some(value)
            }),
            tenant,
            cluster: cluster.as_ref().map(|cluster| cluster.tenant),
            tenant_headers: cluster.as_ref().filter(|_| signal != Signal::Metrics).map(|cluster| {
                let number = |id: u32| HeaderValue::from_str(&id.to_string()).expect("digits are a header value");
                (number(cluster.tenant.account), number(cluster.tenant.project))
            }),
            connect_timeout: *connect_timeout,
            tls: tls_material,
            http2: *http2,
            otlp_grpc: otlp_grpc_endpoints
                .iter()
                .map(|endpoint| GrpcEndpoint {
                    url: endpoint.url.as_str().into(),
                    authority: HeaderValue::from_str(&endpoint.authority())
                        .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                    addr: endpoint.addr,
                    tls: endpoint.tls,
                    sni: if endpoint.tls { endpoint.host.as_str().into() } else { "".into() },
                })
                .collect(),
        }
    }

    /// The deployment's OTLP/gRPC endpoints (no health state: a connect
    /// failure moves a call to the next one).
    pub fn otlp_grpc_endpoints(&self) -> &[GrpcEndpoint] {
        &self.otlp_grpc
    }

    /// The gRPC endpoint for the `attempt`-th try of a call (round robin
    /// from a turn taken once per call).
    pub fn grpc_turn(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The peer for one call at OTLP/gRPC endpoint `index`: HTTP/2 (h2c for
    /// `http://`), the pool's TLS and timeouts.
    pub fn grpc_peer(&self, index: usize) -> Box<HttpPeer> {
        let endpoint = &self.otlp_grpc[index];
        let mut peer = Box::new(HttpPeer::new(endpoint.addr, endpoint.tls, endpoint.sni.to_string()));
        self.tls.apply(&mut peer);
        version::apply(&mut peer, true);
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        peer
    }

    /// The endpoint for the next attempt: a healthy untried primary, round
    /// robin; else a healthy untried backup.
    pub fn select(&self, tried: Tried) -> Pick {
        self.pick(tried, self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether another attempt has an endpoint to go to.
    pub fn has_candidate(&self, tried: Tried) -> bool {
        matches!(self.pick(tried, 0), Pick::Endpoint(_))
    }

    fn pick(&self, tried: Tried, turn: usize) -> Pick {
        let tiers = [(0, self.primaries), (self.primaries, self.endpoints.len() - self.primaries)];
        let mut any_healthy = false;
        for (first, len) in tiers {
            for i in (0..len).map(|k| first + (turn + k) % len) {
                if self.endpoints[i].health.is_healthy() {
                    any_healthy = true;
                    if !tried.contains(i) {
                        return Pick::Endpoint(i);
                    }
                }
            }
        }
        if any_healthy {
            Pick::Exhausted
        } else {
            Pick::NoneHealthy
        }
    }

    /// The pool's metric handles, when metrics are on.
    pub fn metrics(&self) -> Option<&PoolMetrics> {
        self.series.as_ref()?.get()
    }

    /// The pool's series if it has counted a request (none are created).
    pub fn counted(&self) -> Option<&PoolMetrics> {
        self.series.as_ref()?.peek()
    }

    /// The attempt-duration histogram of endpoint `index`, when metrics are on.
    pub fn attempt_duration(&self, index: usize) -> Option<&prometheus::Histogram> {
        let series = self.series.as_ref()?;
        let endpoint = &self.endpoints[index];
        Some(endpoint.attempt_duration.get_or_init(|| series.metrics().attempt_duration(&endpoint.url)))
    }

    pub fn endpoint(&self, index: usize) -> &UpstreamEndpoint {
        &self.endpoints[index]
    }

    pub fn endpoints(&self) -> &[UpstreamEndpoint] {
        &self.endpoints
    }

    /// The peer for one attempt at endpoint `index`.
    pub fn peer(&self, index: usize) -> Box<HttpPeer> {
        let endpoint = &self.endpoints[index];
        let mut peer = Box::new(HttpPeer::new(endpoint.addr, endpoint.tls, endpoint.sni.to_string()));
        self.tls.apply(&mut peer);
        version::apply(&mut peer, self.http2);
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthCheck;
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
            max_attempts: 3,
            retry_ingest: false,
            namespace: None,
            health_check: HealthCheck::default(),
            quotas: None,
            upstream_auth: None,
            tls: None,
            http2: false,
            cluster: None,
            migration: None,
            otlp_grpc_endpoints: Vec::new(),
            write_policy: Default::default(),
            dns: Vec::new(),
            dns_refresh: Duration::from_secs(10),
        }
    }

    fn pool(primaries: &[u16], backups: &[u16]) -> Pool {
        let (health, quotas) = (HealthRegistry::assume_healthy(), QuotaRegistry::default());
        Pool::new("t".into(), Signal::Metrics, &deployment(primaries, backups), &health, &quotas, None)
    }

    fn take_down(pool: &Pool, index: usize) {
        let health = &pool.endpoint(index).health;
        for _ in 0..health.settings.unhealthy_threshold {
            health.record_probe(Err("down".into()), tokio::time::Instant::now());
        }
        assert!(!health.is_healthy());
    }

    #[test]
    fn primaries_take_turns() {
        let pool = pool(&[1, 2, 3], &[]);
        let picks: Vec<Pick> = (0..6).map(|_| pool.select(Tried::default())).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Pick::Endpoint));
    }

    #[test]
    fn no_endpoint_twice_and_backups_last() {
        let pool = pool(&[1, 2], &[3, 4]);
        let mut tried = Tried::default();
        let mut order = Vec::new();
        while let Pick::Endpoint(i) = pool.select(tried) {
            tried.insert(i);
            order.push(pool.endpoint(i).role);
        }
        assert_eq!(order, [Role::Primary, Role::Primary, Role::Backup, Role::Backup]);
        assert!(!pool.has_candidate(tried));
        assert_eq!(pool.select(tried), Pick::Exhausted);
    }

    #[tokio::test(start_paused = true)]
    async fn unhealthy_endpoints_are_skipped_and_backups_serve_when_no_primary_is_healthy() {
        let pool = pool(&[1, 2], &[3]);
        take_down(&pool, 0);
        let picks: Vec<Pick> = (0..4).map(|_| pool.select(Tried::default())).collect();
        assert_eq!(picks, [Pick::Endpoint(1); 4]);
        take_down(&pool, 1);
        assert_eq!(pool.select(Tried::default()), Pick::Endpoint(2));
        take_down(&pool, 2);
        assert_eq!(pool.select(Tried::default()), Pick::NoneHealthy);
        assert!(!pool.has_candidate(Tried::default()));
    }
}
