//! Quotas: request rate (GCRA token bucket with a burst), requests in
//! flight, and request body size — per tenant, optionally per signal.
//!
//! Checks are lock-free: the rate limiter is `governor`'s atomic GCRA, the
//! in-flight count an atomic whose slot is released by [`InFlight`]'s `Drop`,
//! so every outcome — answer, upstream error, client disconnect — gives the
//! slot back. Limit state outlives tables ([`QuotaRegistry`]): a reload that
//! keeps a tenant's quota keeps its bucket and its in-flight count.
//!
//! Rates are per router unless `[quotas] backend = "redis"`: then they are
//! global, leased from Redis ([`global`]); in-flight limits stay per router.

mod global;

pub use global::{QuotaHealth, Redis};

use crate::config::Quotas;
use global::GlobalRate;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Why a request is over quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// Over the rate; the client may retry after this long.
    Rate(Duration),
    Concurrency,
}

/// A rate kept by this router, or leased from the fleet's Redis.
enum Rate {
    Local(DefaultDirectRateLimiter),
    Global(Arc<GlobalRate>),
}

pub struct Limits {
    rate: Option<Rate>,
    /// The configured rate, for the status page.
    pub requests_per_second: Option<u32>,
    in_flight: AtomicU32,
    max_in_flight: Option<u32>,
    pub max_body_bytes: Option<u64>,
}

/// One admitted request's in-flight slot; dropping it gives the slot back.
pub struct InFlight(Arc<Limits>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limits {
    /// The limits of `owner` under `quotas` (its rate global when `redis`
    /// is given), or `None` when `quotas` sets none.
    pub fn new(owner: &str, quotas: &Quotas, redis: Option<&Arc<Redis>>) -> Option<Limits> {
        let Quotas { requests_per_second, burst, max_concurrent_requests, max_body_bytes } = quotas;
        if requests_per_second.is_none() && max_concurrent_requests.is_none() && max_body_bytes.is_none() {
            return None;
        }
        let rate = requests_per_second.and_then(NonZeroU32::new).map(|rps| {
            let burst = burst.and_then(NonZeroU32::new).unwrap_or(rps);
            match redis {
                Some(redis) => Rate::Global(Arc::new(GlobalRate::new(owner, rps, burst, redis))),
                None => Rate::Local(DefaultDirectRateLimiter::direct(Quota::per_second(rps).allow_burst(burst))),
            }
        });
        Some(Limits {
            rate,
            requests_per_second: requests_per_second.filter(|&rps| rps > 0),
            in_flight: AtomicU32::new(0),
            max_in_flight: *max_concurrent_requests,
            max_body_bytes: *max_body_bytes,
        })
    }

    /// Admits one request, or says which limit it is over.
    pub fn admit(self: &Arc<Self>) -> Result<Option<InFlight>, Exceeded> {
        let slot = match self.max_in_flight {
            Some(max) => {
                if self.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Err(Exceeded::Concurrency);
                }
                Some(InFlight(self.clone()))
            }
            None => None,
        };
        let checked = match &self.rate {
            None => Ok(()),
            Some(Rate::Local(rate)) => {
                rate.check().map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
            }
            Some(Rate::Global(rate)) => rate.check(),
        };
        // On a refusal `slot` drops here and frees the in-flight place again.
        checked.map_err(Exceeded::Rate)?;
        Ok(slot)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn max_in_flight(&self) -> Option<u32> {
        self.max_in_flight
    }
}

/// Limit state shared across tables, keyed by who it limits and how.
#[derive(Default)]
pub struct QuotaRegistry {
    limits: Mutex<HashMap<(String, Quotas), Weak<Limits>>>,
    /// Where global rates are leased; `None`: rates are this router's.
    redis: Option<Arc<Redis>>,
}

impl QuotaRegistry {
    /// Limits whose rates are global, leased from `redis`.
    pub fn global(redis: Arc<Redis>) -> Self {
        QuotaRegistry { limits: Mutex::default(), redis: Some(redis) }
    }

    /// The fleet's Redis, when rates are global.
    pub fn redis(&self) -> Option<&Arc<Redis>> {
        self.redis.as_ref()
    }

    /// The limits of `owner` (a tenant id, or `tenant/signal`) under `quotas`.
    pub fn limits(&self, owner: &str, quotas: &Quotas) -> Option<Arc<Limits>> {
        let mut limits = self.limits.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (owner.to_string(), quotas.clone());
        if let Some(known) = limits.get(&key).and_then(Weak::upgrade) {
            return Some(known);
        }
        limits.retain(|_, l| l.strong_count() > 0);
        let fresh = Arc::new(Limits::new(owner, quotas, self.redis.as_ref())?);
        limits.insert(key, Arc::downgrade(&fresh));
        Some(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(quotas: Quotas) -> Arc<Limits> {
        Arc::new(Limits::new("acme", &quotas, None).unwrap())
    }

    #[test]
    fn concurrency_slots_come_back_when_dropped() {
        let l = limits(Quotas { max_concurrent_requests: Some(2), ..Quotas::default() });
        let a = l.admit().unwrap();
        let b = l.admit().unwrap();
        assert_eq!(l.admit().err(), Some(Exceeded::Concurrency));
        drop(a);
        let c = l.admit().unwrap();
        assert_eq!(l.in_flight(), 2);
        drop((b, c));
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn the_rate_allows_the_burst_then_says_when_to_retry() {
        let l = limits(Quotas { requests_per_second: Some(10), burst: Some(3), ..Quotas::default() });
        for _ in 0..3 {
            assert!(l.admit().is_ok());
        }
        match l.admit() {
            Err(Exceeded::Rate(wait)) => {
                assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO, "{wait:?}")
            }
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn a_rate_refusal_frees_its_concurrency_slot() {
        let l = limits(Quotas {
            requests_per_second: Some(1),
            burst: Some(1),
            max_concurrent_requests: Some(5),
            ..Quotas::default()
        });
        let _first = l.admit().unwrap();
        assert!(matches!(l.admit(), Err(Exceeded::Rate(_))));
        assert_eq!(l.in_flight(), 1);
    }

    #[test]
    fn the_registry_keeps_state_for_the_same_owner_and_quota() {
        let registry = QuotaRegistry::default();
        let quotas = Quotas { max_concurrent_requests: Some(1), ..Quotas::default() };
        let a = registry.limits("acme", &quotas).unwrap();
        let _slot = a.admit().unwrap();
        let again = registry.limits("acme", &quotas).unwrap();
        assert_eq!(again.admit().err(), Some(Exceeded::Concurrency), "same state after a rebuild");
        assert!(registry.limits("acme", &Quotas::default()).is_none());
    }
}
