//! The health registry: one [`EndpointHealth`] per endpoint, and the
//! scheduler that probes them all.
//!
//! Tables ask the registry for an endpoint's health when they are built; the
//! registry hands out the existing state when the endpoint (with the same
//! probe settings) is already known, so reloads keep health and a shared
//! endpoint is probed once however many pools list it. The registry only
//! holds weak references: when the last table listing an endpoint is gone,
//! the endpoint tells the scheduler, which deletes its series.
//!
//! One scheduler task keeps every endpoint's next probe in a queue and
//! starts each probe as a short task when it is due; an ejection moves an
//! endpoint's next probe to its cooldown's end. A sleeping prober task per
//! endpoint held ~950 bytes each (27 MiB at 30,000 endpoints); a queue entry
//! is 24.
//!
//! Probes are a GET of the deployment's health path through one Pingora HTTP
//! connector shared by every probe (TLS when the endpoint is `https://`),
//! run on a runtime of their own, never on the request path. One connector
//! for all: a connector each (as Pingora's `HttpHealthCheck` makes) costs
//! ~400 KiB and a load of the system CAs, which at 30,000 endpoints was
//! 12 GiB and 2.5 minutes of start-up.

use super::health::{EndpointHealth, Schedule};
use super::tls::TlsMaterial;
use crate::config::{Endpoint, HealthCheck, UpstreamTls};
use crate::metrics::Metrics;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

/// The endpoints known under one URL: usually one; more when pools probe it
/// with other settings or TLS material (held as its fingerprint, not as a
/// copy of the certificates).
type Known = Vec<(Option<[u8; 32]>, Weak<EndpointHealth>)>;

pub struct HealthRegistry {
    /// Where probes run; `None`: endpoints are assumed healthy and never probed.
    runtime: Option<Handle>,
    /// The scheduler's inbox; `None` with no runtime.
    scheduler: Option<UnboundedSender<Wake>>,
    /// Shared with the scheduler, which drops an endpoint's entry when it is gone.
    endpoints: Arc<Mutex<Endpoints>>,
}

/// What the scheduler is told.
pub(crate) enum Wake {
    /// Probe this endpoint at this time.
    At(Instant, Weak<EndpointHealth>),
    /// No table lists this endpoint any more.
    Gone(Arc<str>),
}

#[derive(Default)]
struct Endpoints {
    /// Keyed by URL alone, sharing the `Arc<str>` each health state holds:
    /// at 30,000 endpoints a key of URL, settings and TLS was 10 MiB.
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
        let endpoints = Arc::new(Mutex::default());
        runtime.spawn(schedule(inbox, endpoints.clone(), Arc::new(Connector::new(None)), metrics));
        Arc::new(HealthRegistry { runtime: Some(runtime), scheduler: Some(wake), endpoints })
    }

    /// A registry that never probes and takes every endpoint as healthy:
    /// for building tables in tests and benchmarks of routing alone.
    pub fn assume_healthy() -> Arc<Self> {
        Arc::new(HealthRegistry { runtime: None, scheduler: None, endpoints: Arc::default() })
    }

    /// The shared health of `endpoint` under `settings`, created (and its
    /// first probe scheduled) when new.
    pub fn endpoint(
        &self,
        endpoint: &Endpoint,
        settings: &HealthCheck,
        tls: Option<&UpstreamTls>,
        material: &TlsMaterial,
    ) -> Arc<EndpointHealth> {
        let mut endpoints = lock(&self.endpoints);
        let fingerprint = tls.map(UpstreamTls::fingerprint);
        let same = |(print, health): &(Option<[u8; 32]>, Weak<EndpointHealth>)| {
            health.upgrade().filter(|health| *print == fingerprint && health.settings == *settings)
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
                let probe = Probe::new(endpoint, settings, material.clone());
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
        known.push((fingerprint, Arc::downgrade(&health)));
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

/// One endpoint's probe. Kept small, since it lives as long as its
/// endpoint: the peer and request are built afresh for each probe (a few
/// hundred bytes, once per interval) instead of being held between probes.
pub(crate) struct Probe {
    endpoint: Endpoint,
    tls: TlsMaterial,
    path: Box<str>,
    timeout: Duration,
}

impl Probe {
    fn new(endpoint: &Endpoint, settings: &HealthCheck, tls: TlsMaterial) -> Probe {
        Probe { endpoint: endpoint.clone(), tls, path: settings.path.as_str().into(), timeout: settings.timeout }
    }

    /// Probes once: the latency, or why the endpoint is not healthy.
    async fn run(&self, connector: &Connector) -> Result<Duration, String> {
        let start = Instant::now();
        match tokio::time::timeout(self.timeout, self.exchange(connector)).await {
            Ok(Ok(200)) => Ok(start.elapsed()),
            Ok(Ok(status)) => Err(format!("health check answered {status}")),
            Ok(Err(e)) => Err(probe_error(&e)),
            Err(_) => Err(format!("no answer within {}", humantime::format_duration(self.timeout))),
        }
    }

    /// One GET on a fresh connection; the status.
    async fn exchange(&self, connector: &Connector) -> pingora::Result<u16> {
        let endpoint = &self.endpoint;
        let sni = if endpoint.tls { endpoint.host.clone() } else { String::new() };
        let mut peer = HttpPeer::new(endpoint.addr, endpoint.tls, sni);
        peer.options.connection_timeout = Some(self.timeout);
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        self.tls.apply(&mut peer);
        let mut request = RequestHeader::build("GET", self.path.as_bytes(), None)?;
        request.insert_header(http::header::HOST, endpoint.authority())?;
        request.insert_header(http::header::USER_AGENT, "mirador-router-health-check")?;
        request.insert_header(http::header::CONNECTION, "close")?;

        let (mut session, _) = connector.get_http_session(&peer).await?;
        session.set_write_timeout(Some(self.timeout));
        session.write_request_header(Box::new(request)).await?;
        session.finish_request_body().await?;
        session.set_read_timeout(Some(self.timeout));
        session.read_response_header().await?;
        let status = session.response_header().map_or(0, |r| r.status.as_u16());
        while session.read_response_body().await?.is_some() {}
        Ok(status)
    }
}

/// A reason for the admin API and the log: the error kind, and every cause
/// in its chain that says more (Pingora keeps TLS verdicts such as
/// `UnknownIssuer` a few causes deep).
fn probe_error(e: &pingora::Error) -> String {
    let mut reason = match e.etype() {
        pingora::ErrorType::CustomCode(_, code) => format!("health check answered {code}"),
        other => other.as_str().to_string(),
    };
    if let Some(context) = e.context.as_ref().map(|c| c.as_str()).filter(|c| !c.is_empty()) {
        reason = format!("{reason}: {context}");
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.cause.as_deref().map(|c| c as _);
    while let Some(inner) = cause {
        // Pingora chains its own errors boxed.
        let nested = inner.downcast_ref::<Box<pingora::Error>>().map(|b| &**b).or_else(|| inner.downcast_ref::<pingora::Error>());
        let text = match nested {
            Some(pingora_error) => pingora_error.context.as_ref().map(|c| c.as_str().to_string()).unwrap_or_default(),
            None => inner.to_string(),
        };
        if !text.is_empty() && !reason.contains(&text) {
            reason = format!("{reason}: {text}");
        }
        cause = match nested {
            Some(pingora_error) => pingora_error.cause.as_deref().map(|c| c as _),
            None => inner.source(),
        };
    }
    reason.chars().take(300).collect()
}

/// Probes in flight at most: each holds Pingora's connect and HTTP state
/// (kilobytes) and a socket. A probe waiting for its slot holds a few
/// pointers (its state is boxed once it runs): spawned with the state
/// inline, 30,000 start-up probes peaked at 400 MiB. Slots are taken in
/// order, so while more than this many endpoints time out, the others'
/// probes wait behind them: at start-up a new endpoint whose first probe has
/// not run when the wait for first probes ends (probe timeout + 1 s) starts
/// down, and is admitted by its probe when its turn comes.
const MAX_PROBES_AT_ONCE: usize = 1024;

/// An endpoint's next probe in the scheduler's queue.
struct Due(Instant, Weak<EndpointHealth>);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// Starts each endpoint's probe when it is due; deletes the series of
/// endpoints that are gone. Ends with the registry and its last endpoint.
async fn schedule(
    mut inbox: UnboundedReceiver<Wake>,
    endpoints: Arc<Mutex<Endpoints>>,
    connector: Arc<Connector>,
    metrics: Option<Arc<Metrics>>,
) {
    let mut queue: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    let running = Arc::new(tokio::sync::Semaphore::new(MAX_PROBES_AT_ONCE));
    loop {
        let next = queue.peek().map(|Reverse(Due(at, _))| *at);
        tokio::select! {
            message = inbox.recv() => match message {
                Some(Wake::At(at, health)) => queue.push(Reverse(Due(at, health))),
                Some(Wake::Gone(url)) => {
                    // The series are the URL's: they go with the last
                    // endpoint under it (others may probe it with other
                    // settings or TLS material).
                    let last = lock(&endpoints).forget_if_unused(&url);
                    if let (true, Some(metrics)) = (last, &metrics) {
                        metrics.forget_endpoint(&url);
                    }
                }
                None => return,
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                while let Some(Reverse(Due(at, _))) = queue.peek() {
                    if *at > now {
                        break;
                    }
                    let Some(Reverse(Due(at, health))) = queue.pop() else { break };
                    // Gone, moved to another time, or being probed: skip.
                    let Some(health) = health.upgrade().filter(|health| health.claim_probe(at)) else { continue };
                    let (connector, metrics, running) = (connector.clone(), metrics.clone(), running.clone());
                    tokio::spawn(async move {
                        let Ok(_slot) = running.acquire_owned().await else { return };
                        // Boxed: a task waiting for its slot holds a few
                        // pointers, not the probe's kilobytes of state.
                        Box::pin(probe_once(health, connector, metrics)).await;
                    });
                }
            }
        }
    }
}

/// One probe of one endpoint; then its next one is scheduled.
async fn probe_once(health: Arc<EndpointHealth>, connector: Arc<Connector>, metrics: Option<Arc<Metrics>>) {
    let Some(probe) = health.probe() else { return };
    let started = Instant::now();
    let result = probe.run(&connector).await;
    if let Some(metrics) = &metrics {
        metrics.probe_duration.observe(started.elapsed().as_secs_f64());
    }
    let now = Instant::now();
    health.record_probe(result, now);
    health.probe_finished(now);
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
        let a = registry.endpoint(&shared, &HealthCheck::default(), None, &TlsMaterial::default());
        let b = registry.endpoint(&shared, &other, None, &TlsMaterial::default());
        assert!(!Arc::ptr_eq(&a, &b), "other probe settings, another health state");
        metrics.attempt_duration(&shared.url).observe(0.001);
        let exposed = || String::from_utf8(metrics.render()).unwrap().contains(&shared.url);
        assert!(exposed());

        drop(a);
        // The scheduler handles messages in order: once an endpoint created
        // after the drop has been probed, the drop has been handled.
        let marker = registry.endpoint(&endpoint(7), &HealthCheck::default(), None, &TlsMaterial::default());
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
