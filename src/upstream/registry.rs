//! The health registry: one [`EndpointHealth`] per endpoint.
//!
//! Tables ask the registry for an endpoint's health when they are built; the
//! registry hands out the existing state when the endpoint (with the same
//! probe settings) is already known, so reloads keep health and a shared
//! endpoint is probed once however many pools list it. The registry only
//! holds weak references: when the last table listing an endpoint is gone,
//! the endpoint tells the scheduler ([`super::schedule`]), which has the
//! registry forget it and deletes its series.

use super::health::{EndpointHealth, Schedule, Wake};
use super::probe::Probe;
use super::schedule::schedule;
use super::tls::TlsMaterial;
use crate::config::{Endpoint, HealthCheck, UpstreamTls};
use crate::metrics::Metrics;
use pingora::connectors::http::Connector;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::Instant;

/// The endpoints known under one URL: usually one; more when pools probe it
/// with other settings, TLS material (held as its fingerprint, not as a
/// copy of the certificates) or HTTP version.
type Known = Vec<(Spoken, Weak<EndpointHealth>)>;

/// How an endpoint is spoken to, besides its probe settings: the TLS
/// material's fingerprint, and whether in HTTP/2.
type Spoken = (Option<[u8; 32]>, bool);

pub struct HealthRegistry {
    /// Where probes run; `None`: endpoints are assumed healthy and never probed.
    runtime: Option<Handle>,
    /// The scheduler's inbox; `None` with no runtime.
    scheduler: Option<UnboundedSender<Wake>>,
    /// Shared with the scheduler, which drops an endpoint's entry when it is gone.
    endpoints: Arc<Mutex<Endpoints>>,
}

#[derive(Default)]
struct Endpoints {
    /// Keyed by URL alone, sharing the `Arc<str>` each health state holds
    /// (a key of URL, settings and TLS costs much more at scale).
    by_url: HashMap<Arc<str>, Known>,
    /// Dropped endpoints are swept when the map reaches this size, so
    /// building a table stays linear in its endpoints.
    sweep_at: usize,
}

impl Endpoints {
    /// Drops the dead entries under `url`; whether none is left.
    fn forget_if_unused(&mut self, url: &str) -> bool {
        let Some(known) = self.by_url.get_mut(url) else { return true };
        known.retain(|(_, health)| health.strong_count() > 0);
        if known.is_empty() {
            self.by_url.remove(url);
            return true;
        }
        false
    }
}

fn lock(endpoints: &Mutex<Endpoints>) -> std::sync::MutexGuard<'_, Endpoints> {
    endpoints.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HealthRegistry {
    /// A registry that probes every endpoint on `runtime`, recording probe
    /// durations in `metrics` when given.
    pub fn new(runtime: Handle, metrics: Option<Arc<Metrics>>) -> Arc<Self> {
        let (wake, inbox) = unbounded_channel();
        let endpoints: Arc<Mutex<Endpoints>> = Arc::new(Mutex::default());
        let probe_duration = metrics.as_ref().map(|m| m.probe_duration.clone());
        let forget = {
            let endpoints = endpoints.clone();
            // The series are the URL's: they go with the last endpoint under
            // it (others may probe it with other settings or TLS material).
            move |url: &str| {
                let last = lock(&endpoints).forget_if_unused(url);
                if let (true, Some(metrics)) = (last, &metrics) {
                    metrics.forget_endpoint(url);
                }
            }
        };
        runtime.spawn(schedule(inbox, Arc::new(Connector::new(None)), probe_duration, forget));
        Arc::new(HealthRegistry { runtime: Some(runtime), scheduler: Some(wake), endpoints })
    }

    /// A registry that never probes and takes every endpoint as healthy:
    /// for building tables in tests and benchmarks of routing alone.
    /// The runtime probes (and other off-path work) run on; `None` for a
    /// registry that assumes health.
    pub fn runtime(&self) -> Option<&Handle> {
        self.runtime.as_ref()
    }

    pub fn assume_healthy() -> Arc<Self> {
        Arc::new(HealthRegistry { runtime: None, scheduler: None, endpoints: Arc::default() })
    }

    /// The shared health of `endpoint` under `settings`, spoken to with
    /// `tls` and in HTTP/2 when `http2`, created (and its first probe
    /// scheduled) when new.
    pub fn endpoint(
        &self,
        endpoint: &Endpoint,
        settings: &HealthCheck,
        tls: Option<&UpstreamTls>,
        material: &TlsMaterial,
        http2: bool,
    ) -> Arc<EndpointHealth> {
        let mut endpoints = lock(&self.endpoints);
        let spoken: Spoken = (tls.map(UpstreamTls::fingerprint), http2);
        let same = |(known, health): &(Spoken, Weak<EndpointHealth>)| {
            health.upgrade().filter(|health| *known == spoken && health.settings == *settings)
        };
        if let Some(known) = endpoints.by_url.get(endpoint.url.as_str()).and_then(|known| known.iter().find_map(same)) {
            return known;
        }
        if endpoints.by_url.len() >= endpoints.sweep_at {
            endpoints.by_url.retain(|_, known| {
                known.retain(|(_, health)| health.strong_count() > 0);
                !known.is_empty()
            });
            endpoints.sweep_at = (endpoints.by_url.len() * 2).max(64);
        }
        let url: Arc<str> = endpoint.url.as_str().into();
        let health = match &self.scheduler {
            Some(wake) => {
                let probe = Probe::new(endpoint, settings, material.clone(), http2);
                let health = Arc::new_cyclic(|me| {
                    let schedule = Schedule { me: me.clone(), wake: wake.clone(), probe };
                    EndpointHealth::scheduled(url.clone(), settings.clone(), schedule)
                });
                health.schedule_first_probe(Instant::now());
                health
            }
            None => {
                let health = Arc::new(EndpointHealth::new(url.clone(), settings.clone()));
                health.record_probe(Ok(Duration::ZERO), Instant::now());
                health
            }
        };
        let known = endpoints.by_url.entry(url).or_default();
        known.retain(|(_, health)| health.strong_count() > 0);
        known.push((spoken, Arc::downgrade(&health)));
        health
    }

    /// Number of endpoints some table still lists (for tests and the admin API).
    pub fn len(&self) -> usize {
        let endpoints = lock(&self.endpoints);
        endpoints.by_url.values().flatten().filter(|(_, health)| health.strong_count() > 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits (at most `limit`) until every endpoint in `endpoints` has been
    /// probed once: new endpoints are judged before they take traffic.
    pub fn wait_first_probes<'a>(&self, endpoints: impl IntoIterator<Item = &'a Arc<EndpointHealth>>, limit: Duration) {
        let Some(runtime) = &self.runtime else { return };
        let waits: Vec<_> = endpoints.into_iter().cloned().collect();
        let all = async move {
            for health in waits {
                health.wait_probed().await;
            }
        };
        let wait = async move {
            let _ = tokio::time::timeout(limit, all).await;
        };
        match Handle::try_current() {
            // Inside a runtime (a test): wait on another thread to avoid blocking it.
            Ok(_) => {
                let runtime = runtime.clone();
                std::thread::scope(|s| {
                    s.spawn(move || runtime.block_on(wait));
                });
            }
            Err(_) => runtime.block_on(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn endpoint(port: u16) -> Endpoint {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        Endpoint { url: format!("http://{addr}"), tls: false, host: "127.0.0.1".into(), port, addr }
    }

    #[test]
    fn an_endpoints_series_go_with_the_last_health_state_under_its_url() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let metrics = Metrics::new();
        let registry = HealthRegistry::new(runtime.handle().clone(), Some(metrics.clone()));
        let shared = endpoint(9);
        let other = HealthCheck { interval: Duration::from_secs(7), ..HealthCheck::default() };
        let a = registry.endpoint(&shared, &HealthCheck::default(), None, &TlsMaterial::default(), false);
        let b = registry.endpoint(&shared, &other, None, &TlsMaterial::default(), false);
        assert!(!Arc::ptr_eq(&a, &b), "other probe settings, another health state");
        let c = registry.endpoint(&shared, &HealthCheck::default(), None, &TlsMaterial::default(), true);
        assert!(!Arc::ptr_eq(&a, &c), "another HTTP version, another health state");
        let again = registry.endpoint(&shared, &HealthCheck::default(), None, &TlsMaterial::default(), false);
        assert!(Arc::ptr_eq(&a, &again), "the same settings, the same health state");
        drop((c, again));
        metrics.attempt_duration(&shared.url).observe(0.001);
        let exposed = || String::from_utf8(metrics.render()).unwrap().contains(&shared.url);
        assert!(exposed());

        drop(a);
        // The scheduler handles messages in order: once an endpoint created
        // after the drop has been probed, the drop has been handled.
        let marker = registry.endpoint(&endpoint(7), &HealthCheck::default(), None, &TlsMaterial::default(), false);
        registry.wait_first_probes([&marker], Duration::from_secs(10));
        assert!(exposed(), "series gone while another health state still uses the URL");

        drop(b);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while exposed() {
            assert!(std::time::Instant::now() < deadline, "series of a URL no table lists remain");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(registry.len(), 1);
    }
}
