//! The last minute of every pool's traffic, for the status page: request
//! rate, error ratio and p99, read from the pool's own metric handles (the
//! page never reads the `/metrics` text).
//!
//! A sampler copies the totals of each pool that has counted a request every
//! [`SAMPLE_EVERY`]; a minute's figures are the live totals minus the copy
//! taken about a minute before (the oldest one when the pool is younger; a
//! pool first seen counted was at 0 the sample before).
//! Only pools with traffic are sampled, and a tenant gone from the table is
//! forgotten at the next sample. Cost: [`KEPT`] copies of 19 numbers per
//! counted pool (under 1 KiB), and one pass over the table per sample.

use crate::api::Signal;
use crate::metrics::{PoolMetrics, DURATION_BUCKETS};
use crate::routing::{RouteStore, RoutingTable};
use prometheus::core::Metric;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often each counted pool's totals are copied.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);
/// The span the figures cover.
const WINDOW: Duration = Duration::from_secs(60);
/// Copies kept per pool: one at least [`WINDOW`] old, and the ones after it.
const KEPT: usize = (WINDOW.as_secs() / SAMPLE_EVERY.as_secs()) as usize + 1;
const BUCKETS: usize = DURATION_BUCKETS.len();

/// A pool's totals at one instant.
#[derive(Debug, Clone, Copy)]
struct Totals {
    at: Instant,
    requests: u64,
    /// Requests answered 5xx.
    errors: u64,
    /// Cumulative counts of the duration buckets, then every request timed.
    buckets: [u64; BUCKETS],
    timed: u64,
}

impl Totals {
    fn read(metrics: &PoolMetrics, at: Instant) -> Totals {
        let mut buckets = [0; BUCKETS];
        let histogram = metrics.duration.metric();
        let histogram = histogram.get_histogram();
        for (slot, bucket) in buckets.iter_mut().zip(histogram.get_bucket()) {
            *slot = bucket.cumulative_count();
        }
        Totals {
            at,
            requests: metrics.requests.iter().map(|c| c.get()).sum(),
            errors: metrics.requests[4].get(),
            buckets,
            timed: histogram.get_sample_count(),
        }
    }
}

/// One pool's last minute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Minute {
    /// The span the figures cover: a minute, or less for a pool counted
    /// for less than a minute.
    pub seconds: f64,
    pub requests_per_second: f64,
    /// Requests answered 5xx over requests answered; `None` without requests.
    pub error_ratio: Option<f64>,
    /// The 99th percentile of request durations, interpolated within its
    /// histogram bucket as Prometheus' `histogram_quantile` does.
    pub p99_seconds: Option<f64>,
}

/// The copies kept of each counted pool, by tenant and signal.
type Samples = HashMap<(Arc<str>, Signal), VecDeque<Totals>>;

#[derive(Default)]
pub struct Activity {
    samples: Mutex<Samples>,
}

impl Activity {
    fn lock(&self) -> MutexGuard<'_, Samples> {
        self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Copies the totals of every counted pool of `table`; forgets tenants
    /// no longer in it.
    pub fn sample(&self, table: &RoutingTable) {
        let now = Instant::now();
        let mut samples = self.lock();
        samples.retain(|(tenant, _), _| table.tenant(tenant).is_some());
        for id in table.tenant_ids() {
            let Some(route) = table.tenant(id) else { continue };
            for pool in route.pools() {
                let Some(metrics) = pool.counted() else { continue };
                let kept = samples.entry((route.id.clone(), pool.signal)).or_insert_with(|| {
                    // Not counted at the sample before: it was at 0 then.
                    let at = now.checked_sub(SAMPLE_EVERY).unwrap_or(now);
                    let zero = Totals { at, requests: 0, errors: 0, buckets: [0; BUCKETS], timed: 0 };
                    VecDeque::from([zero])
                });
                // vminsert and vmselect of a shared cluster count in the
                // same series: one copy per signal and sample.
                if kept.back().is_some_and(|last| last.at == now) {
                    continue;
                }
                kept.push_back(Totals::read(metrics, now));
                if kept.len() > KEPT {
                    kept.pop_front();
                }
            }
        }
    }

    /// The last minute of `tenant`'s `signal`, from its live totals.
    pub fn minute(&self, tenant: &str, signal: Signal, live: &PoolMetrics) -> Option<Minute> {
        let now = Instant::now();
        let samples = self.lock();
        let kept = samples.get(&(Arc::from(tenant), signal))?;
        let base = kept.iter().rev().find(|t| now.duration_since(t.at) >= WINDOW).or(kept.front())?;
        Some(between(base, &Totals::read(live, now)))
    }
}

fn between(base: &Totals, live: &Totals) -> Minute {
    let seconds = live.at.duration_since(base.at).as_secs_f64();
    let requests = live.requests.saturating_sub(base.requests);
    let mut buckets = [0; BUCKETS];
    for (slot, (now, then)) in buckets.iter_mut().zip(live.buckets.iter().zip(&base.buckets)) {
        *slot = now.saturating_sub(*then);
    }
    Minute {
        seconds,
        requests_per_second: if seconds > 0.0 { requests as f64 / seconds } else { 0.0 },
        error_ratio: (requests > 0).then(|| live.errors.saturating_sub(base.errors) as f64 / requests as f64),
        p99_seconds: quantile(0.99, &buckets, live.timed.saturating_sub(base.timed)),
    }
}

/// The `q` quantile of `count` observations whose cumulative bucket counts
/// are `buckets` (bounds [`DURATION_BUCKETS`]), linear within a bucket; in
/// the `+Inf` bucket, the highest finite bound.
fn quantile(q: f64, buckets: &[u64; BUCKETS], count: u64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for (&cumulative, &upper) in buckets.iter().zip(DURATION_BUCKETS) {
        if cumulative as f64 >= rank {
            let inside = cumulative.saturating_sub(below).max(1) as f64;
            return Some(lower + (upper - lower) * ((rank - below as f64) / inside));
        }
        (lower, below) = (upper, cumulative);
    }
    DURATION_BUCKETS.last().copied()
}

/// Samples the table in force every [`SAMPLE_EVERY`], for good.
pub async fn sample_forever(store: Arc<RouteStore>, activity: Arc<Activity>) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        activity.sample(&store.load());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cumulative(per_bucket: &[u64]) -> [u64; BUCKETS] {
        let mut out = [0; BUCKETS];
        let mut sum = 0;
        for (slot, n) in out.iter_mut().zip(per_bucket.iter().chain(std::iter::repeat(&0))) {
            sum += n;
            *slot = sum;
        }
        out
    }

    #[test]
    fn the_p99_is_interpolated_within_its_bucket() {
        // 100 requests: 98 under 0.5 ms, 2 between 1 ms and 2.5 ms.
        let buckets = cumulative(&[98, 0, 2]);
        let p99 = quantile(0.99, &buckets, 100).unwrap();
        assert!((p99 - 0.00175).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.99, &buckets, 0), None);
        // Everything over the last bound: the last bound.
        assert_eq!(quantile(0.99, &[0; BUCKETS], 5), Some(60.0));
    }

    #[test]
    fn a_minute_is_the_difference_of_two_copies() {
        let at = Instant::now();
        let base = Totals { at, requests: 10, errors: 1, buckets: cumulative(&[10]), timed: 10 };
        let live = Totals {
            at: at + Duration::from_secs(60),
            requests: 130,
            errors: 31,
            buckets: cumulative(&[10, 0, 0, 0, 120]),
            timed: 130,
        };
        let minute = between(&base, &live);
        assert_eq!(minute.requests_per_second, 2.0);
        assert_eq!(minute.error_ratio, Some(0.25));
        let p99 = minute.p99_seconds.unwrap();
        assert!(p99 > 0.005 && p99 <= 0.01, "{p99}");
    }
}
