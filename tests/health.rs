//! Health checks, passive ejection, failover and backups, with the real
//! router binary against recording upstreams that really die.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The admin API's view of one endpoint of `tenant`'s metrics pool.
async fn endpoint_health(router: &RouterProcess, tenant: &str, url: &str) -> serde_json::Value {
    let (status, body) = router.admin_get(&format!("/api/v1/tenants/{tenant}/health")).await;
    assert_eq!(status, 200, "{body}");
    body["signals"]["metrics"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == url)
        .unwrap_or_else(|| panic!("{url} not in {body}"))
        .clone()
}

/// Polls the admin API until `url` has the given health; how long it took.
async fn wait_health(router: &RouterProcess, tenant: &str, url: &str, healthy: bool) -> Duration {
    let start = Instant::now();
    Wait::new(format!("{url} to become healthy={healthy}"), Duration::from_secs(20))
        .every(Duration::from_millis(5))
        .until_async(|| async {
            let health = endpoint_health(router, tenant, url).await;
            if health["healthy"] == healthy {
                Ok(())
            } else {
                Err(health.to_string())
            }
        })
        .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_an_endpoint_under_a_read_loop_fails_no_read() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let config = format!(
        "[tenants.acme.metrics]\nendpoints = [\"{}\", \"{}\"]\nhealth_check = {{ interval = \"1s\", unhealthy_threshold = 2, passive_failures = 2 }}\n",
        a.url(),
        b.url()
    );
    let router = RouterProcess::start(&config);
    let base = router.base("unified");
    let (mut ok, mut failed, mut killed_at) = (0, 0, None);
    for i in 0..400 {
        if i == 100 {
            a.kill();
            killed_at = Some((Instant::now(), std::time::SystemTime::now()));
        }
        match served_by(&base, "acme").await {
            Ok(_) => ok += 1,
            Err(status) => {
                failed += 1;
                eprintln!("read {i} failed with {status}");
            }
        }
    }
    let (killed, killed_wall) = killed_at.unwrap();
    let a_health = endpoint_health(&router, "acme", &a.url()).await;
    let since = humantime::parse_rfc3339(a_health["since"].as_str().unwrap()).unwrap();
    let ejected_after = since.duration_since(killed_wall).unwrap_or_default();
    eprintln!("400 reads, {failed} failed; passive ejection {ejected_after:?} after the kill; loop ended {:?} after it; a: {a_health}", killed.elapsed());
    assert_eq!((ok, failed), (400, 0));
    assert_eq!(a_health["healthy"], false, "the dead endpoint is out");
    assert!(b.seen().len() > 300, "b took over: {}", b.seen().len());
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_serve_when_every_primary_is_down_and_traffic_returns_to_a_recovered_primary() {
    let primary = Upstream::start("primary").await;
    let primary_addr = primary.addr;
    let backup = Upstream::start("backup").await;
    let config = format!(
        "[tenants.acme.metrics]\nendpoints = [\"{}\"]\nbackup_endpoints = [\"{}\"]\n\
         health_check = {{ interval = \"100ms\", unhealthy_threshold = 1, healthy_threshold = 1, ejection_cooldown = \"300ms\" }}\n",
        primary.url(),
        backup.url()
    );
    let router = RouterProcess::start(&config);
    let base = router.base("unified");
    assert_eq!(served_by(&base, "acme").await, Ok("primary".to_string()));

    primary.stop().await;
    drop(primary);
    for _ in 0..20 {
        assert_eq!(served_by(&base, "acme").await, Ok("backup".to_string()), "a dead primary fails over at once");
    }
    wait_health(&router, "acme", &format!("http://{primary_addr}"), false).await;

    // The primary comes back on its address: probes re-admit it and traffic returns.
    let revived = Upstream::serve("primary-again", TcpListener::bind(primary_addr).await.unwrap());
    let back_after = wait_health(&router, "acme", &revived.url(), true).await;
    eprintln!("primary re-admitted {back_after:?} after it came back");
    for _ in 0..10 {
        assert_eq!(served_by(&base, "acme").await, Ok("primary-again".to_string()));
    }

    // Everything dead: 503 with Retry-After.
    revived.stop().await;
    backup.stop().await;
    let status = served_by(&base, "acme").await.expect_err("served with every endpoint dead");
    assert!(status == 502 || status == 503, "{status}");
    wait_health(&router, "acme", &backup.url(), false).await;
    wait_health(&router, "acme", &revived.url(), false).await;
    let response = client().get(format!("{base}/api/v1/query")).header("X-Tenant-ID", "acme").send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_take_a_silent_dead_endpoint_down_within_interval_times_threshold() {
    let quiet = Upstream::start("quiet").await;
    let config = format!(
        "[tenants.acme.metrics]\nendpoints = [\"{}\"]\nhealth_check = {{ interval = \"200ms\", unhealthy_threshold = 2, timeout = \"100ms\" }}\n",
        quiet.url()
    );
    let router = RouterProcess::start(&config);
    wait_health(&router, "acme", &quiet.url(), true).await;
    quiet.stop().await;
    let down_after = wait_health(&router, "acme", &quiet.url(), false).await;
    eprintln!("active detection: down {down_after:?} after the kill (interval 200ms x threshold 2)");
    assert!(down_after <= Duration::from_millis(2 * 200 + 300), "{down_after:?}");
    let health = endpoint_health(&router, "acme", &quiet.url()).await;
    assert_eq!(health["consecutive_failures"], 2);
    assert!(health["last_error"].as_str().unwrap().contains("ConnectRefused"), "{health}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_endpoint_is_probed_once_per_interval_not_once_per_tenant() {
    const TENANTS: u64 = 8;
    let shared = Upstream::start("shared").await;
    let tenants: String =
        (0..TENANTS).map(|i| format!("[tenants.t{i}.metrics]\nendpoints = [\"{}\"]\n", shared.url())).collect();
    let config = format!("[health_check]\ninterval = \"200ms\"\n{tenants}");
    let started = Instant::now();
    let router = RouterProcess::start(&config);
    wait_until("6 probes of the shared endpoint", Duration::from_secs(20), || {
        let probes = shared.probes();
        if probes >= 6 {
            Ok(())
        } else {
            Err(format!("{probes} probes"))
        }
    })
    .await;
    let elapsed = started.elapsed();
    let probes = shared.probes();
    let most = elapsed.as_millis() as u64 / 200 + 2;
    eprintln!("{probes} probes in {elapsed:?} for {TENANTS} tenants sharing one endpoint");
    assert!(probes <= most, "{probes} probes in {elapsed:?}: more than one per interval");
    drop(router);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_endpoint_health() {
    // Healthy to probes, but every request is dropped: live traffic ejects it.
    let flaky = Upstream::start("flaky").await;
    let tenant = |extra: &str| {
        format!(
            "[tenants.acme.metrics]\nendpoints = [\"{}\"]\n\
             health_check = {{ interval = \"1h\", passive_failures = 2, ejection_cooldown = \"1h\" }}\n{extra}",
            flaky.url()
        )
    };
    let router = RouterProcess::start(&tenant(""));
    let base = router.base("unified");
    for _ in 0..2 {
        let r =
            client().get(format!("{base}/api/v1/query?reset=1")).header("X-Tenant-ID", "acme").send().await.unwrap();
        assert_eq!(r.status(), 502);
    }
    let before = endpoint_health(&router, "acme", &flaky.url()).await;
    assert_eq!((&before["healthy"], &before["ejected"]), (&false.into(), &true.into()), "{before}");
    let probes_before = flaky.probes();

    router.write_tenants(&tenant("[tenants.other.metrics]\nendpoints = [\"http://127.0.0.1:9\"]\n"));
    router.signal("HUP");
    router.wait_for_log("config reloaded", 1);

    let after = endpoint_health(&router, "acme", &flaky.url()).await;
    assert_eq!(after, before, "same state, same since, not probed anew");
    assert_eq!(flaky.probes(), probes_before);
    assert_eq!(served_by(&base, "acme").await, Err(503));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ejected_endpoint_is_probed_when_its_cooldown_ends_not_an_interval_later() {
    // Probes say healthy; one reset of live traffic ejects it for 300 ms.
    // With an hour between regular probes, only a probe scheduled at the
    // cooldown's end can bring it back.
    let flaky = Upstream::start("flaky").await;
    let router = RouterProcess::start(&format!(
        "[tenants.acme.metrics]\nendpoints = [\"{}\"]\n\
         health_check = {{ interval = \"1h\", passive_failures = 1, ejection_cooldown = \"300ms\" }}\n",
        flaky.url()
    ));
    let base = router.base("unified");
    let probes_before = flaky.probes();
    let r = client().get(format!("{base}/api/v1/query?reset=1")).header("X-Tenant-ID", "acme").send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(endpoint_health(&router, "acme", &flaky.url()).await["ejected"], true);
    let back = wait_health(&router, "acme", &flaky.url(), true).await;
    assert!(back < Duration::from_secs(5), "re-admitted after {back:?}");
    assert_eq!(flaky.probes(), probes_before + 1, "one probe, at the cooldown's end");
    assert_eq!(served_by(&base, "acme").await, Ok("flaky".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_health_api_answers_404_for_an_unknown_tenant() {
    let up = Upstream::start("up").await;
    let router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()));
    let (status, body) = router.admin_get("/api/v1/tenants/nobody/health").await;
    assert_eq!((status, body["errorType"].as_str()), (404, Some("not_found")));
    let health = endpoint_health(&router, "acme", &up.url()).await;
    assert_eq!(health["role"], "primary");
    assert_eq!(health["healthy"], true);
    assert_eq!(health["consecutive_failures"], 0);
    assert!(health["last_probe_ms"].as_f64().unwrap() >= 0.0);
    assert!(health["since"].as_str().unwrap().ends_with('Z'));
    let (status, body) = router.admin_get("/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
}
