//! Probe scheduling: one task keeps every endpoint's next probe in a queue
//! and starts each probe as a short task when it is due. An ejection moves
//! an endpoint's next probe to its cooldown's end ([`EndpointHealth`] sends
//! the new time); a probe that finishes schedules the next one. A queue
//! entry per endpoint, not a sleeping task per endpoint (README, Performance).

use super::health::{EndpointHealth, Wake};
use pingora::connectors::http::Connector;
use prometheus::Histogram;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// Probes in flight at most: each holds Pingora's connect and HTTP state
/// (kilobytes) and a socket. A probe waiting for its slot holds a few
/// pointers (its state is boxed once it runs; README, Performance). Slots are taken in
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

/// Starts each endpoint's probe when it is due, recording each probe's
/// duration in `probe_duration`; calls `forget` with the URL of an endpoint
/// no table lists any more. Ends with the registry and its last endpoint.
pub(super) async fn schedule(
    mut inbox: UnboundedReceiver<Wake>,
    connector: Arc<Connector>,
    probe_duration: Option<Histogram>,
    forget: impl Fn(&str),
) {
    let mut queue: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    let running = Arc::new(tokio::sync::Semaphore::new(MAX_PROBES_AT_ONCE));
    loop {
        let next = queue.peek().map(|Reverse(Due(at, _))| *at);
        tokio::select! {
            message = inbox.recv() => match message {
                Some(Wake::At(at, health)) => queue.push(Reverse(Due(at, health))),
                Some(Wake::Gone(url)) => forget(&url),
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
                    let (connector, probe_duration, running) = (connector.clone(), probe_duration.clone(), running.clone());
                    tokio::spawn(async move {
                        let Ok(_slot) = running.acquire_owned().await else { return };
                        // Boxed: a task waiting for its slot holds a few
                        // pointers, not the probe's kilobytes of state.
                        Box::pin(probe_once(health, connector, probe_duration)).await;
                    });
                }
            }
        }
    }
}

/// One probe of one endpoint; then its next one is scheduled.
async fn probe_once(health: Arc<EndpointHealth>, connector: Arc<Connector>, probe_duration: Option<Histogram>) {
    let Some(probe) = health.probe() else { return };
    let started = Instant::now();
    let result = probe.run(&connector).await;
    if let Some(histogram) = &probe_duration {
        histogram.observe(started.elapsed().as_secs_f64());
    }
    let now = Instant::now();
    health.record_probe(result, now);
    health.probe_finished(now);
}
