//! Endpoint health: one state per endpoint address, judged by active probes
//! and by live traffic. Health belongs to the endpoint, not to a table: every pool that lists the
//! same endpoint (with the same probe settings) shares one [`EndpointHealth`],
//! so a shared endpoint is probed once and a reload that keeps an endpoint
//! keeps its state. The request path reads one atomic ([`EndpointHealth::is_healthy`]);
//! probes and failure reports take the state's mutex off the request path.
//!
//! The state machine, all times injected so tests run on paused time:
//! - a new endpoint is down until its first probe says otherwise;
//! - `unhealthy_threshold` consecutive failed probes take it down,
//!   `healthy_threshold` consecutive good ones bring it back;
//! - `passive_failures` consecutive failures of live traffic eject it for
//!   `ejection_cooldown`; after that only a good probe re-admits it.

use super::probe::Probe;
use crate::config::HealthCheck;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What one endpoint's health looks like now, for the admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSnapshot {
    pub healthy: bool,
    /// Whether any probe has finished yet.
    pub probed: bool,
    pub since: SystemTime,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_probe: Option<Duration>,
    pub ejected: bool,
}

#[derive(Debug)]
struct State {
    healthy: bool,
    probed: bool,
    since: SystemTime,
    failures: u32,
    successes: u32,
    last_error: Option<String>,
    last_probe: Option<Duration>,
    ejected_until: Option<Instant>,
    /// When the scheduler's live entry for this endpoint is due; `None`
    /// while a probe runs.
    next_probe: Option<Instant>,
}

/// What the scheduler is told.
pub(crate) enum Wake {
    /// Probe this endpoint at this time.
    At(Instant, Weak<EndpointHealth>),
    /// No table lists this endpoint any more.
    Gone(Arc<str>),
}

/// How a probed endpoint reaches the registry's scheduler.
pub(crate) struct Schedule {
    pub(crate) me: Weak<EndpointHealth>,
    pub(crate) wake: UnboundedSender<Wake>,
    pub(crate) probe: Probe,
}

pub struct EndpointHealth {
    pub url: Arc<str>,
    pub settings: HealthCheck,
    healthy: AtomicBool,
    /// Consecutive failures of live traffic since the last success.
    passive_failures: AtomicU32,
    state: Mutex<State>,
    /// `None`: never probed (tables built for tests take endpoints as healthy).
    schedule: Option<Schedule>,
    /// Notified when the first probe has finished (`State::probed`).
    first_probe: Notify,
}

impl EndpointHealth {
    /// A new endpoint: down and unprobed.
    pub fn new(url: Arc<str>, settings: HealthCheck) -> Self {
        EndpointHealth::with_schedule(url, settings, None)
    }

    /// A new endpoint that the registry's scheduler probes.
    pub(crate) fn scheduled(url: Arc<str>, settings: HealthCheck, schedule: Schedule) -> Self {
        EndpointHealth::with_schedule(url, settings, Some(schedule))
    }

    fn with_schedule(url: Arc<str>, settings: HealthCheck, schedule: Option<Schedule>) -> Self {
        EndpointHealth {
            url,
            settings,
            healthy: AtomicBool::new(false),
            passive_failures: AtomicU32::new(0),
            state: Mutex::new(State {
                healthy: false,
                probed: false,
                since: SystemTime::now(),
                failures: 0,
                successes: 0,
                last_error: None,
                last_probe: None,
                ejected_until: None,
                next_probe: None,
            }),
            schedule,
            first_probe: Notify::new(),
        }
    }

    /// Whether requests may go to this endpoint. Lock-free.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a probe result: `Ok(latency)` or `Err(reason)`.
    pub fn record_probe(&self, result: Result<Duration, String>, now: Instant) {
        let mut state = self.lock();
        let first = !state.probed;
        state.probed = true;
        let cooled = state.ejected_until.is_none_or(|until| now >= until);
        if cooled {
            // From here on only the thresholds decide.
            state.ejected_until = None;
        }
        match result {
            Ok(latency) => {
                state.last_probe = Some(latency);
                state.failures = 0;
                state.successes += 1;
                if !state.healthy && cooled && (first || state.successes >= self.settings.healthy_threshold) {
                    self.set_healthy(&mut state, true);
                    self.passive_failures.store(0, Ordering::Relaxed);
                }
            }
            Err(reason) => {
                state.last_error = Some(reason);
                state.successes = 0;
                state.failures += 1;
                if first {
                    tracing::warn!(
                        endpoint = &*self.url,
                        reason = state.last_error.as_deref(),
                        "endpoint down at its first probe"
                    );
                }
                if state.healthy && state.failures >= self.settings.unhealthy_threshold {
                    self.set_healthy(&mut state, false);
                }
            }
        }
        drop(state);
        if first {
            self.first_probe.notify_waiters();
        }
    }

    /// Counts a failure of live traffic; ejects the endpoint at the threshold.
    /// Returns whether this failure ejected it.
    pub fn record_passive_failure(&self, reason: &str, now: Instant) -> bool {
        let threshold = self.settings.passive_failures;
        if threshold == 0 {
            return false;
        }
        let failures = self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < threshold || !self.is_healthy() {
            return false;
        }
        let mut state = self.lock();
        if !state.healthy {
            return false;
        }
        self.set_healthy(&mut state, false);
        state.successes = 0;
        let until = later(now, self.settings.ejection_cooldown);
        state.ejected_until = Some(until);
        state.last_error = Some(format!("ejected after {failures} consecutive failures of live traffic: {reason}"));
        // Probe at the cooldown's end, unless a probe is running (it
        // schedules the next one itself) or one is due before.
        if state.next_probe.is_some_and(|next| until < next) {
            self.schedule_at(&mut state, until);
        }
        true
    }

    /// The probe of a probed endpoint.
    pub(crate) fn probe(&self) -> Option<&Probe> {
        self.schedule.as_ref().map(|schedule| &schedule.probe)
    }

    /// Puts the first probe in the scheduler's queue.
    pub(crate) fn schedule_first_probe(&self, now: Instant) {
        let mut state = self.lock();
        self.schedule_at(&mut state, now);
    }

    /// Whether the scheduler's entry due `at` is the live one; if so the
    /// probe starts and no other is started until it has finished.
    pub(crate) fn claim_probe(&self, at: Instant) -> bool {
        let mut state = self.lock();
        if state.next_probe != Some(at) {
            return false;
        }
        state.next_probe = None;
        true
    }

    /// A probe has finished (and been recorded): schedules the next one, a
    /// probe interval from now or at an ejection's end if that comes first.
    pub(crate) fn probe_finished(&self, now: Instant) {
        let mut state = self.lock();
        let next = self.due(&state, later(now, self.settings.interval));
        self.schedule_at(&mut state, next);
    }

    fn schedule_at(&self, state: &mut State, at: Instant) {
        let Some(schedule) = &self.schedule else { return };
        state.next_probe = Some(at);
        let _ = schedule.wake.send(Wake::At(at, schedule.me.clone()));
    }

    /// A success of live traffic: the passive failure count starts over.
    pub fn record_passive_success(&self) {
        if self.passive_failures.load(Ordering::Relaxed) != 0 {
            self.passive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// When the next probe is due: at `scheduled`, or earlier when an
    /// ejection's cooldown ends first.
    pub fn probe_due(&self, scheduled: Instant) -> Instant {
        self.due(&self.lock(), scheduled)
    }

    fn due(&self, state: &State, scheduled: Instant) -> Instant {
        match state.ejected_until {
            Some(until) if until < scheduled => until,
            _ => scheduled,
        }
    }

    /// Resolves once the first probe has finished.
    pub async fn wait_probed(&self) {
        loop {
            let mut notified = std::pin::pin!(self.first_probe.notified());
            // Registered before the check, so a probe finishing in between is not missed.
            notified.as_mut().enable();
            if self.lock().probed {
                return;
            }
            notified.await;
        }
    }

    /// Latency of the latest successful probe.
    pub fn last_probe(&self) -> Option<Duration> {
        self.lock().last_probe
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let state = self.lock();
        HealthSnapshot {
            healthy: state.healthy,
            probed: state.probed,
            since: state.since,
            consecutive_failures: state.failures.max(self.passive_failures.load(Ordering::Relaxed)),
            last_error: state.last_error.clone(),
            last_probe: state.last_probe,
            ejected: state.ejected_until.is_some(),
        }
    }

    fn set_healthy(&self, state: &mut State, healthy: bool) {
        if state.healthy != healthy {
            state.since = SystemTime::now();
            state.healthy = healthy;
            self.healthy.store(healthy, Ordering::Relaxed);
            let reason = if healthy { None } else { state.last_error.as_deref() };
            tracing::warn!(endpoint = &*self.url, healthy, reason, "endpoint health changed");
        }
    }
}

/// `now` plus a configured duration (bounded by validation), never a panic.
fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by).unwrap_or(now)
}

impl Drop for EndpointHealth {
    /// The scheduler deletes the series of an endpoint no table lists.
    fn drop(&mut self) {
        if let Some(schedule) = &self.schedule {
            let _ = schedule.wake.send(Wake::Gone(self.url.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HealthCheck {
        HealthCheck {
            interval: Duration::from_secs(5),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            passive_failures: 2,
            ejection_cooldown: Duration::from_secs(10),
            ..HealthCheck::default()
        }
    }

    fn ok() -> Result<Duration, String> {
        Ok(Duration::from_millis(1))
    }

    fn down() -> Result<Duration, String> {
        Err("connection refused".to_string())
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_endpoint_is_down_until_its_first_probe_decides() {
        let health = EndpointHealth::new("http://a:1".into(), settings());
        assert!(!health.is_healthy());
        health.record_probe(ok(), Instant::now());
        assert!(health.is_healthy(), "the first good probe admits, whatever the threshold");

        let dead = EndpointHealth::new("http://b:1".into(), settings());
        dead.record_probe(down(), Instant::now());
        let snapshot = dead.snapshot();
        assert!(!snapshot.healthy && snapshot.probed);
        assert_eq!(snapshot.last_error.as_deref(), Some("connection refused"));
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds_take_an_endpoint_down_and_bring_it_back() {
        let health = EndpointHealth::new("http://a:1".into(), settings());
        health.record_probe(ok(), Instant::now());
        for expected in [true, true, false] {
            tokio::time::advance(Duration::from_secs(5)).await;
            health.record_probe(down(), Instant::now());
            assert_eq!(health.is_healthy(), expected, "down only at the third failure");
        }
        assert_eq!(health.snapshot().consecutive_failures, 3);
        health.record_probe(ok(), Instant::now());
        assert!(!health.is_healthy(), "one good probe is not enough");
        health.record_probe(down(), Instant::now());
        health.record_probe(ok(), Instant::now());
        assert!(!health.is_healthy(), "successes must be consecutive");
        health.record_probe(ok(), Instant::now());
        assert!(health.is_healthy());
    }

    #[tokio::test(start_paused = true)]
    async fn live_traffic_failures_eject_for_the_cooldown_then_a_probe_readmits() {
        let health = EndpointHealth::new("http://a:1".into(), settings());
        health.record_probe(ok(), Instant::now());
        assert!(!health.record_passive_failure("reset", Instant::now()));
        health.record_passive_success();
        assert!(!health.record_passive_failure("reset", Instant::now()), "a success starts the count over");
        assert!(health.record_passive_failure("reset", Instant::now()), "second consecutive failure ejects");
        assert!(!health.is_healthy());
        let ejected_at = Instant::now();
        let cooldown_end = ejected_at + Duration::from_secs(10);
        assert_eq!(
            health.probe_due(ejected_at + Duration::from_secs(30)),
            cooldown_end,
            "probed at the cooldown's end"
        );
        assert_eq!(health.probe_due(ejected_at + Duration::from_secs(5)), ejected_at + Duration::from_secs(5));

        tokio::time::advance(Duration::from_secs(5)).await;
        health.record_probe(ok(), Instant::now());
        health.record_probe(ok(), Instant::now());
        assert!(!health.is_healthy(), "good probes during the cooldown do not re-admit");

        tokio::time::advance(Duration::from_secs(5)).await;
        health.record_probe(ok(), Instant::now());
        health.record_probe(ok(), Instant::now());
        assert!(health.is_healthy(), "re-admitted by probes after the cooldown");
        assert!(!health.snapshot().ejected);
    }

    #[tokio::test(start_paused = true)]
    async fn passive_ejection_can_be_turned_off() {
        let health = EndpointHealth::new("http://a:1".into(), HealthCheck { passive_failures: 0, ..settings() });
        health.record_probe(ok(), Instant::now());
        for _ in 0..100 {
            assert!(!health.record_passive_failure("reset", Instant::now()));
        }
        assert!(health.is_healthy());
    }
}
