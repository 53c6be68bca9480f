//! Global rate quotas (`[quotas] backend = "redis"`): one GCRA per tenant
//! (and signal) kept in Redis, shared by every router of a fleet.
//!
//! The request path never waits on Redis. Each router leases batches of
//! tokens from the GCRA (a Lua script, atomic in Redis, on Redis' clock) and
//! spends them locally; a lease is asked for in the background when the
//! local balance runs low. A request that finds the balance empty while a
//! lease is on its way is admitted on credit, at most one batch deep, paid
//! back from the next lease; so the fleet admits at most the configured
//! rate and burst plus one batch per router. A batch is 1/20 s of one
//! router's share (rate / `expected_replicas`), and unspent tokens expire
//! after a second, so a router that stops getting requests hands its share
//! back to the fleet.
//!
//! When Redis does not answer within `timeout` each router falls back to a
//! local GCRA of rate / `expected_replicas` (and burst / the same), logs it
//! and sets `mirador_router_quota_backend_up` to 0; Redis is tried again
//! every second (also while it answers, so `/ready` follows it) and global
//! leasing resumes once it answers.
//!
//! The GCRA and its leases follow the approach of Envoy's global rate limit
//! service and of redis-cell (GCRA in Redis), leased in batches as Loki and
//! Mimir's distributors share a global limit by ring size.

use crate::config::RedisQuotas;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use redis::aio::MultiplexedConnection;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Leases `ARGV[3]` tokens (or as many as are free, at least one) from the
/// GCRA whose theoretical arrival time (µs on Redis' clock) is `KEYS[1]`;
/// `ARGV[1]` is µs per token, `ARGV[2]` the burst. Answers `{granted, 0}`,
/// or `{0, µs}` until `ARGV[4]` tokens are free.
const LEASE: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local free = math.floor((now + tolerance - tat) / interval)
if free < 1 then
  return {0, math.ceil(tat + tonumber(ARGV[4]) * interval - tolerance - now)}
end
local granted = math.min(want, free)
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', math.ceil((tat - now) / 1000) + 1000))
return {granted, 0}
";

/// How long leased tokens stay spendable.
const LEASE_LIFETIME: Duration = Duration::from_secs(1);
/// A batch is this fraction of a second of one router's share.
const LEASES_PER_SECOND: u32 = 20;
/// How often Redis is pinged (and, while unreachable, tried again).
const PING_EVERY: Duration = Duration::from_secs(1);

/// The fleet's Redis: the connection, its health and its metrics.
pub struct Redis {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    script: redis::Script,
    prefix: String,
    expected_replicas: u32,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
    up: AtomicBool,
    /// Whether Redis has been tried once (the first outcome is logged).
    checked: AtomicBool,
    health: Mutex<QuotaHealth>,
    up_gauge: prometheus::IntGauge,
    leases: prometheus::IntCounterVec,
}

/// What `/ready` says of the quota backend.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuotaHealth {
    pub backend: &'static str,
    /// Whether quotas are global now; `false`: each router admits its share.
    pub reachable: bool,
    /// Unix seconds of the last change of `reachable`.
    pub since: u64,
    pub error: Option<String>,
}

impl Redis {
    /// The client for `settings`, leasing on `runtime`. Reaching Redis is
    /// tried at once in the background; until it answers, quotas are local.
    pub fn connect(settings: &RedisQuotas, runtime: tokio::runtime::Handle) -> Result<Arc<Redis>, String> {
        // Validation accepted the URL's shape; the error never repeats it (a password).
        let client =
            redis::Client::open(settings.url.0.as_str()).map_err(|e| format!("the Redis URL: {:?}", e.kind()))?;
        let up_gauge = prometheus::IntGauge::new(
            "mirador_router_quota_backend_up",
            "1 while global quotas are leased from Redis, 0 while each router falls back to rate / expected_replicas",
        )
        .map_err(|e| e.to_string())?;
        let leases = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "mirador_router_quota_leases_total",
                "Token leases asked of Redis, by result (granted, empty: the global rate is spent, failed)",
            ),
            &["result"],
        )
        .map_err(|e| e.to_string())?;
        for result in ["granted", "empty", "failed"] {
            leases.with_label_values(&[result]);
        }
        let redis = Arc::new(Redis {
            client,
            connection: tokio::sync::Mutex::new(None),
            script: redis::Script::new(LEASE),
            prefix: settings.prefix.clone(),
            expected_replicas: settings.expected_replicas,
            timeout: settings.timeout,
            runtime,
            up: AtomicBool::new(false),
            checked: AtomicBool::new(false),
            health: Mutex::new(QuotaHealth {
                backend: "redis",
                reachable: false,
                since: unix_now(),
                error: Some("not reached yet".into()),
            }),
            up_gauge,
            leases,
        });
        redis.runtime.spawn(redis.clone().watch());
        Ok(redis)
    }

    pub fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 2] {
        [Box::new(self.up_gauge.clone()), Box::new(self.leases.clone())]
    }

    pub fn health(&self) -> QuotaHealth {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Pings Redis now and every [`PING_EVERY`], so that `/ready` and the
    /// gauge follow Redis even when no lease is asked for; a failed lease
    /// marks it unreachable at once.
    async fn watch(self: Arc<Self>) {
        loop {
            let ping = async {
                let mut connection = self.connection().await?;
                redis::cmd("PING").query_async::<String>(&mut connection).await
            };
            let answered = self.within_timeout(ping).await;
            self.mark(answered.err());
            tokio::time::sleep(PING_EVERY).await;
        }
    }

    /// Records whether Redis answers; the first answer and every change
    /// are logged and set the gauge.
    fn mark(&self, error: Option<String>) {
        let reachable = error.is_none();
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let first = !self.checked.swap(true, Ordering::AcqRel);
        let was = self.up.swap(reachable, Ordering::AcqRel);
        self.up_gauge.set(reachable as i64);
        if first || was != reachable {
            health.since = unix_now();
            match &error {
                None => tracing::info!("Redis answers: rate quotas are global"),
                Some(error) => tracing::warn!(
                    %error,
                    expected_replicas = self.expected_replicas,
                    "Redis does not answer: each router admits rate / expected_replicas"
                ),
            }
        }
        health.reachable = reachable;
        health.error = error;
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut held = self.connection.lock().await;
        if let Some(connection) = held.as_ref() {
            return Ok(connection.clone());
        }
        let connection = self.client.get_multiplexed_async_connection().await?;
        *held = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `call` within the timeout; a failed or late call drops the
    /// connection, so the next one connects afresh.
    async fn within_timeout<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        let error = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        *self.connection.lock().await = None;
        Err(error)
    }

    /// Leases up to `want` tokens of `rate`; `Ok((granted, wait))`.
    async fn lease(&self, rate: &GlobalRate, want: i64) -> Result<(i64, Duration), String> {
        let call = async {
            let mut connection = self.connection().await?;
            let mut invocation = self.script.key(&rate.key);
            invocation.arg(rate.interval_us).arg(rate.burst).arg(want).arg(rate.least);
            invocation.invoke_async::<(i64, i64)>(&mut connection).await
        };
        let (granted, wait_us) = self.within_timeout(call).await?;
        Ok((granted.max(0), Duration::from_micros(wait_us.max(0) as u64)))
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One owner's global rate: its local balance of leased tokens and the
/// fallback used while Redis is unreachable.
pub struct GlobalRate {
    /// `<prefix><owner>`.
    key: String,
    interval_us: f64,
    burst: u32,
    /// Tokens asked for in one lease.
    batch: i64,
    /// Tokens to wait for when the global rate is spent (half a batch).
    least: i64,
    balance: Mutex<Balance>,
    fallback: DefaultDirectRateLimiter,
    redis: Arc<Redis>,
}

struct Balance {
    /// Leased tokens left; negative: admitted on credit.
    tokens: i64,
    /// When positive tokens lapse.
    expires: Instant,
    /// A lease is on its way.
    leasing: bool,
    /// Redis said the global rate is spent until then.
    not_before: Option<Instant>,
}

impl GlobalRate {
    pub fn new(owner: &str, rps: NonZeroU32, burst: NonZeroU32, redis: &Arc<Redis>) -> GlobalRate {
        let replicas = redis.expected_replicas.max(1);
        let share = (rps.get() / replicas).max(1);
        let batch = (share / LEASES_PER_SECOND).clamp(1, burst.get()) as i64;
        let local = |n: NonZeroU32| NonZeroU32::new(n.get() / replicas).unwrap_or(NonZeroU32::MIN);
        GlobalRate {
            key: format!("{}{owner}", redis.prefix),
            interval_us: 1e6 / f64::from(rps.get()),
            burst: burst.get(),
            batch,
            least: (batch / 2).max(1),
            balance: Mutex::new(Balance { tokens: 0, expires: Instant::now(), leasing: false, not_before: None }),
            fallback: DefaultDirectRateLimiter::direct(Quota::per_second(local(rps)).allow_burst(local(burst))),
            redis: redis.clone(),
        }
    }

    /// Admits one request, or says how long to wait; never waits itself.
    pub fn check(self: &Arc<Self>) -> Result<(), Duration> {
        if !self.redis.is_up() {
            return self.fallback.check().map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()));
        }
        let now = Instant::now();
        let mut balance = self.balance.lock().unwrap_or_else(|p| p.into_inner());
        if balance.tokens > 0 && now >= balance.expires {
            balance.tokens = 0;
        }
        let spent_until = balance.not_before.filter(|t| now < *t);
        let admitted = match spent_until {
            Some(until) => Err(until - now),
            None if balance.tokens > -self.batch => {
                balance.tokens -= 1;
                Ok(())
            }
            // A batch on credit already: the lease on its way pays it back.
            None => Err(Duration::from_micros((self.interval_us * self.least as f64) as u64)),
        };
        if !balance.leasing && spent_until.is_none() && balance.tokens <= self.batch / 2 {
            balance.leasing = true;
            let want = self.batch - balance.tokens;
            self.redis.runtime.spawn(self.clone().refill(want));
        }
        admitted
    }

    async fn refill(self: Arc<Self>, want: i64) {
        let leased = self.redis.lease(&self, want).await;
        let now = Instant::now();
        let mut balance = self.balance.lock().unwrap_or_else(|p| p.into_inner());
        balance.leasing = false;
        match leased {
            Ok((0, wait)) => {
                self.redis.leases.with_label_values(&["empty"]).inc();
                balance.not_before = Some(now + wait);
            }
            Ok((granted, _)) => {
                self.redis.leases.with_label_values(&["granted"]).inc();
                balance.tokens += granted;
                balance.expires = now + LEASE_LIFETIME;
                balance.not_before = None;
            }
            Err(error) => {
                self.redis.leases.with_label_values(&["failed"]).inc();
                drop(balance);
                self.redis.mark(Some(error));
            }
        }
    }
}
