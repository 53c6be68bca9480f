//! Global rate quotas (`[quotas] backend = "redis"`): three real routers on
//! one real Redis, behind a real HAProxy. A tenant at 300 requests/s global
//! is admitted at 300/s by the fleet, the load spread over the three; with
//! Redis stopped each replica falls back to 300 / 3 and says so (`/ready`,
//! the gauge, the log); with Redis back one replica alone may take the whole
//! global rate again. The added latency of a global quota (Redis on) against
//! the local fallback (Redis off) is measured in the same run and printed.

mod common;

use common::haproxy::Haproxy;
use common::redis::Redis;
use common::{client, wait_until_async, RouterProcess, Upstream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The global rate of tenant `acme`. Its burst is a tenth of a second's
/// worth, so that the windows below measure the rate, not the burst.
const RATE: f64 = 300.0;
const BURST: u32 = 30;

fn config(redis: &Redis, upstream: &Upstream) -> String {
    format!(
        "[quotas]\nbackend = \"redis\"\nurl = \"{}\"\nexpected_replicas = 3\ntimeout = \"200ms\"\n\
         [tenants.acme.quotas]\nrequests_per_second = {RATE}\nburst = {BURST}\n\
         [tenants.acme.metrics]\nendpoints = [\"{up}\"]\n\
         [tenants.roomy.quotas]\nrequests_per_second = 1000000\n\
         [tenants.roomy.metrics]\nendpoints = [\"{up}\"]\n",
        redis.url(),
        up = upstream.url(),
    )
}

/// Requests admitted (2xx) and refused (429) out of `rate` a second
/// offered to `base` for tenant `tenant` during `window`.
struct Offered {
    admitted: u64,
    refused: u64,
    window: Duration,
}

impl Offered {
    fn per_second(&self) -> f64 {
        self.admitted as f64 / self.window.as_secs_f64()
    }
}

async fn offer(base: &str, tenant: &str, rate: u32, window: Duration) -> Offered {
    const WORKERS: u32 = 12;
    let (admitted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (admitted, refused, url, tenant) =
                (admitted.clone(), refused.clone(), format!("{base}/api/v1/query?query=up"), tenant.to_string());
            tokio::spawn(async move {
                let http = client();
                let period = Duration::from_secs_f64(f64::from(WORKERS) / f64::from(rate));
                // The workers' ticks interleave, so the offered load is even.
                tokio::time::sleep(period * worker / WORKERS).await;
                let mut ticks = tokio::time::interval(period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while started.elapsed() < window {
                    ticks.tick().await;
                    let response = http.get(&url).header("X-Tenant-ID", &tenant).send().await;
                    match response.map(|r| r.status().as_u16()) {
                        Ok(200) => admitted.fetch_add(1, Ordering::Relaxed),
                        Ok(429) => refused.fetch_add(1, Ordering::Relaxed),
                        other => panic!("{url} for {tenant}: {other:?}"),
                    };
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    Offered { admitted: admitted.load(Ordering::Relaxed), refused: refused.load(Ordering::Relaxed), window }
}

/// Waits until every replica's `/ready` says Redis is (or is not) reachable.
async fn quotas_reachable(replicas: &[RouterProcess], reachable: bool) {
    for router in replicas {
        wait_until_async(format!("/ready quotas.reachable = {reachable}"), Duration::from_secs(10), || async {
            let (_, ready) = router.admin_get("/ready").await;
            ready["quotas"]["reachable"] == reachable
        })
        .await;
    }
}

/// p50 and p99 of `n` requests one after another to `base` for tenant `roomy`.
async fn latency(base: &str, n: usize) -> (Duration, Duration) {
    let http = client();
    let url = format!("{base}/api/v1/query?query=up");
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = http.get(&url).header("X-Tenant-ID", "roomy").send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        took.push(started.elapsed());
    }
    took.sort();
    (took[n / 2], took[n * 99 / 100])
}

fn within_ten_percent(what: &str, measured: f64, expected: f64) {
    eprintln!("{what}: {measured:.1}/s admitted (expected {expected}/s)");
    assert!(
        (measured - expected).abs() <= expected * 0.10,
        "{what}: {measured:.1}/s is not within 10 % of {expected}/s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_global_rate_holds_across_the_fleet_falls_back_to_a_share_without_redis_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(dir.path()).await;
    let upstream = Upstream::start("vm").await;
    let routers: Vec<RouterProcess> =
        (0..3).map(|_| RouterProcess::builder().tenants(config(&redis, &upstream)).start()).collect();
    let unified: Vec<_> = routers.iter().map(|r| r.unified).collect();
    let front = Haproxy::start(dir.path(), &unified).await;
    quotas_reachable(&routers, true).await;
    for router in &routers {
        router.wait_for_log("Redis answers: rate quotas are global", 1);
        assert_eq!(router.metric("mirador_router_quota_backend_up").await, Some(1.0));
    }
    let (global_p50, global_p99) = latency(&routers[0].base("unified"), 2000).await;

    // 600/s offered through the balancer, spread over the three replicas.
    let spread = offer(&front.base(), "acme", 600, Duration::from_secs(20)).await;
    eprintln!("through HAProxy: {} admitted, {} refused in {:?}", spread.admitted, spread.refused, spread.window);
    within_ten_percent("the fleet, Redis up", spread.per_second(), RATE);
    assert!(spread.refused > 0, "the offered load was over the rate");

    // One replica alone may take the whole global rate.
    let alone = offer(&routers[0].base("unified"), "acme", 600, Duration::from_secs(5)).await;
    within_ten_percent("one replica alone, Redis up", alone.per_second(), RATE);

    redis.stop();
    quotas_reachable(&routers, false).await;
    for router in &routers {
        assert_eq!(router.metric("mirador_router_quota_backend_up").await, Some(0.0));
        router.wait_for_log("Redis does not answer", 1);
    }
    let (local_p50, local_p99) = latency(&routers[0].base("unified"), 2000).await;
    // Each replica admits its share, rate / expected_replicas.
    let share = offer(&routers[0].base("unified"), "acme", 600, Duration::from_secs(10)).await;
    within_ten_percent("one replica, Redis down", share.per_second(), RATE / 3.0);
    let spread = offer(&front.base(), "acme", 600, Duration::from_secs(10)).await;
    within_ten_percent("the fleet, Redis down", spread.per_second(), RATE);

    redis.run().await;
    quotas_reachable(&routers, true).await;
    for router in &routers {
        router.wait_for_log("Redis answers: rate quotas are global", 2);
    }
    let alone = offer(&routers[0].base("unified"), "acme", 600, Duration::from_secs(10)).await;
    within_ten_percent("one replica alone, Redis back", alone.per_second(), RATE);

    eprintln!(
        "latency of a request under a global quota, one at a time: Redis up p50 {global_p50:?} p99 {global_p99:?}; \
         Redis down (local fallback) p50 {local_p50:?} p99 {local_p99:?}"
    );
    for router in &routers {
        assert!(!router.log().contains("panicked"));
    }
}
