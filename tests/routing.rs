//! The real router binary against recording upstreams: isolation per tenant
//! and signal on every listener, the headers sent upstream, every error
//! status, connect failover, reload and graceful shutdown.

mod common;

use common::*;
use std::time::Duration;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

#[tokio::test(flavor = "multi_thread")]
async fn every_tenant_and_signal_reaches_only_its_own_pool_on_every_listener() {
    let fleet = Fleet::start(&TENANTS).await;
    let router = RouterProcess::start(&fleet.toml());
    let http = client();
    let mut sent = 0;
    for tenant in TENANTS {
        for signal in SIGNALS {
            for (listener, path) in
                [("unified", query_path(signal)), ("unified", ingest_path(signal)), (signal, query_path(signal))]
            {
                let url = format!("{}{path}?q=1", router.base(listener));
                let response = http.post(&url).header("X-Tenant-ID", tenant).body("payload").send().await.unwrap();
                assert_eq!(response.status(), 200, "{tenant} {signal} via {listener} {path}");
                let served_by = response.headers()["x-upstream"].to_str().unwrap().to_string();
                assert_eq!(served_by, format!("{tenant}/{signal}"), "{tenant} {signal} via {listener} {path}");
                sent += 1;
            }
        }
    }
    // A drop-in listener serves its own signal's endpoints only: any other
    // path is 404 there too, and reaches no upstream.
    for signal in SIGNALS {
        for path in ["/any/path", "/snapshot/create", "/api/v1/admin/tsdb/delete_series"] {
            let url = format!("{}{path}", router.base(signal));
            let response = http.post(&url).header("X-Tenant-ID", TENANTS[0]).send().await.unwrap();
            assert!(matches!(response.status().as_u16(), 403 | 404), "{path} on the {signal} listener");
        }
    }
    // Each upstream saw exactly its own three requests, all of its own tenant.
    for ((tenant, signal), upstream) in &fleet.upstreams {
        let seen = upstream.seen();
        assert_eq!(seen.len(), 3, "{tenant}/{signal}");
        for request in seen {
            assert_eq!(request.headers["x-tenant-id"], tenant.as_str());
            assert_eq!(request.body_len, "payload".len() as u64);
            assert!(request.path_and_query.ends_with("?q=1"), "query string kept: {}", request.path_and_query);
        }
    }
    assert_eq!(sent, 27);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_requests_carry_forwarding_headers_and_lose_client_tenant_headers() {
    let fleet = Fleet::start(&["acme"]).await;
    let router = RouterProcess::start(&fleet.toml());
    let http = client();
    let response = http
        .get(format!("{}/api/v1/query?query=up", router.base("unified")))
        .header("X-Tenant-ID", "acme")
        .header("AccountID", "42")
        .header("ProjectID", "7")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-Request-ID", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");

    let generated = http
        .get(format!("{}/api/v1/query", router.base("unified")))
        .header("X-Tenant-ID", "acme")
        .send()
        .await
        .unwrap();
    let generated_id = generated.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated_id.len(), 36, "a UUID: {generated_id}");

    let upstream = fleet.get("acme", "metrics");
    let seen = upstream.seen();
    let first = &seen[0].headers;
    assert_eq!(first["host"], upstream.addr.to_string().as_str());
    assert_eq!(first["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(first["x-forwarded-proto"], "http");
    assert_eq!(first["x-request-id"], "trace-me-123");
    assert!(first.get("accountid").is_none() && first.get("projectid").is_none(), "{first:?}");
    assert_eq!(seen[1].headers["x-request-id"], generated_id.as_str());
}

async fn error_of(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().get("x-upstream").is_none(), "an error answered by the router, not an upstream");
    (status, serde_json::from_slice(&response.bytes().await.unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_has_its_status_and_json_error() {
    let fleet = Fleet::start(&["acme"]).await;
    let extra = r#"
[tenants.frozen]
status = "suspended"
[tenants.frozen.metrics]
endpoints = ["http://127.0.0.1:9"]

[tenants.metricsonly.features]
signals = ["metrics"]
[tenants.metricsonly.metrics]
endpoints = ["http://127.0.0.1:9"]
[tenants.metricsonly.logs]
endpoints = ["http://127.0.0.1:9"]

[tenants.reader.features]
read_only = true
"#;
    let reader = Upstream::start("reader/metrics").await;
    let config = format!("{}{extra}[tenants.reader.metrics]\nendpoints = [\"{}\"]\n", fleet.toml(), reader.url());
    let router = RouterProcess::start(&config);
    let http = client();
    let base = router.base("unified");

    let cases: Vec<(reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (http.get(format!("{base}/api/v1/query")), 401, "unauthorized", "missing tenant: set the x-tenant-id header"),
        (
            http.get(format!("{base}/api/v1/query")).header("X-Tenant-ID", ""),
            401,
            "unauthorized",
            "missing tenant: set the x-tenant-id header",
        ),
        (
            http.get(format!("{base}/api/v1/query")).header("X-Tenant-ID", "nobody"),
            403,
            "forbidden",
            "unknown tenant \"nobody\"",
        ),
        (
            http.get(format!("{base}/api/v1/query")).header("X-Tenant-ID", "ACME"),
            403,
            "forbidden",
            "unknown tenant \"ACME\"",
        ),
        (
            http.get(format!("{base}/api/v1/query")).header("X-Tenant-ID", "frozen"),
            403,
            "forbidden",
            "tenant \"frozen\" is suspended",
        ),
        (
            http.get(format!("{base}/select/logsql/query")).header("X-Tenant-ID", "metricsonly"),
            403,
            "forbidden",
            "signal logs is not enabled for tenant \"metricsonly\"",
        ),
        (
            http.get(format!("{}/select/jaeger/api/traces", router.base("traces")))
                .header("X-Tenant-ID", "metricsonly"),
            403,
            "forbidden",
            "signal traces is not enabled for tenant \"metricsonly\"",
        ),
        (
            http.post(format!("{base}/api/v1/write")).header("X-Tenant-ID", "reader"),
            403,
            "forbidden",
            "tenant \"reader\" is read-only: writes are refused",
        ),
        (
            http.post(format!("{}/api/v1/import", router.base("metrics"))).header("X-Tenant-ID", "reader"),
            403,
            "forbidden",
            "tenant \"reader\" is read-only: writes are refused",
        ),
        (
            http.get(format!("{base}/no/such/path?x=1")).header("X-Tenant-ID", "acme"),
            404,
            "not_found",
            "path \"/no/such/path\" is not a Victoria* endpoint the router serves on this listener",
        ),
    ];
    for (request, status, error_type, message) in cases {
        let (got_status, body) = error_of(request.send().await.unwrap()).await;
        assert_eq!(
            (got_status, body["status"].as_str(), body["errorType"].as_str(), body["error"].as_str()),
            (status, Some("error"), Some(error_type), Some(message))
        );
    }
    // A read of the read-only tenant is served.
    let read = http.get(format!("{base}/api/v1/query")).header("X-Tenant-ID", "reader").send().await.unwrap();
    assert_eq!(read.headers()["x-upstream"], "reader/metrics");
    // Nothing refused reached an upstream.
    assert_eq!(reader.seen().len(), 1);
    assert!(fleet.upstreams.values().all(|u| u.seen().is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_answer_502_503_and_504() {
    let slow = Upstream::start("slow/metrics").await;
    let dead = free_addr();
    let config = format!(
        "[tenants.slow.metrics]\nendpoints = [\"{}\"]\ntimeout = \"300ms\"\n\
         [tenants.dead.metrics]\nendpoints = [\"http://{dead}\"]\nhealth_check = {{ interval = \"7s\" }}\n",
        slow.url()
    );
    let router = RouterProcess::start(&config);
    let http = client();
    let base = router.base("unified");

    // An endpoint that takes the connection and drops it: 502.
    let reset = http.get(format!("{base}/api/v1/query?reset=1")).header("X-Tenant-ID", "slow").send().await.unwrap();
    let (status, body) = error_of(reset).await;
    assert_eq!((status, body["errorType"].as_str()), (502, Some("bad_gateway")));

    // No healthy endpoint at all: 503 with Retry-After (the probe interval).
    let down = http.get(format!("{base}/api/v1/query")).header("X-Tenant-ID", "dead").send().await.unwrap();
    assert_eq!(
        down.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        Some("7"),
        "{down:?}; log:\n{}",
        router.log()
    );
    let (status, body) = error_of(down).await;
    assert_eq!((status, body["errorType"].as_str()), (503, Some("unavailable")));

    let timed_out =
        http.get(format!("{base}/api/v1/query?delay_ms=3000")).header("X-Tenant-ID", "slow").send().await.unwrap();
    let (status, body) = error_of(timed_out).await;
    assert_eq!((status, body["errorType"].as_str()), (504, Some("timeout")));

    let in_time =
        http.get(format!("{base}/api/v1/query?delay_ms=50")).header("X-Tenant-ID", "slow").send().await.unwrap();
    assert_eq!(in_time.status(), 200);
    assert!(router.log().contains("endpoint=\"http://127.0.0.1:"), "failures are logged with their endpoint");
}

#[tokio::test(flavor = "multi_thread")]
async fn unhealthy_endpoints_take_no_traffic_and_a_backup_serves() {
    let live = Upstream::start("live").await;
    let backup = Upstream::start("backup").await;
    let (dead1, dead2) = (free_addr(), free_addr());
    let config = format!(
        "[tenants.acme.metrics]\nendpoints = [\"http://{dead1}\", \"{}\"]\n\
         [tenants.solo.metrics]\nendpoints = [\"http://{dead2}\"]\nbackup_endpoints = [\"{}\"]\n",
        live.url(),
        backup.url()
    );
    let router = RouterProcess::start(&config);
    let http = client();
    for _ in 0..10 {
        let response = http
            .post(format!("{}/api/v1/write", router.base("unified")))
            .header("X-Tenant-ID", "acme")
            .body("a write is safe to retry after a connect failure")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-upstream"], "live");
    }
    let response = http
        .get(format!("{}/api/v1/query", router.base("unified")))
        .header("X-Tenant-ID", "solo")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-upstream"], "backup");
    assert_eq!(live.seen().len(), 10);
    assert!(live.seen().iter().all(|s| s.body_len == 48));
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_swaps_tenants_and_a_broken_file_keeps_the_old_table() {
    let old = Upstream::start("old").await;
    let new = Upstream::start("new").await;
    let router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", old.url()));
    let http = client();
    let served_by = || async {
        let r = http
            .get(format!("{}/api/v1/query", router.base("unified")))
            .header("X-Tenant-ID", "acme")
            .send()
            .await
            .unwrap();
        r.headers().get("x-upstream").map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(served_by().await.as_deref(), Some("old"));

    router.write_tenants(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", new.url()));
    router.signal("HUP");
    router.wait_for_log("config reloaded", 1);
    assert_eq!(served_by().await.as_deref(), Some("new"));

    router.write_tenants("[tenants.acme.metrics]\nendpoints = [\"not a url\"]\n");
    router.signal("HUP");
    router.wait_for_log("config reload refused; the running config keeps serving", 1);
    assert!(router.log().contains("tenants.acme.metrics.endpoints[0]"), "the error names the key");
    assert_eq!(served_by().await.as_deref(), Some("new"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_request_finish_then_exits() {
    let slow = Upstream::start("slow").await;
    let mut router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", slow.url()));
    let url = format!("{}/api/v1/query?delay_ms=700", router.base("unified"));
    let in_flight = tokio::spawn(async move { client().get(url).header("X-Tenant-ID", "acme").send().await });
    wait_until("the slow request to reach the upstream", Duration::from_secs(10), || !slow.seen().is_empty()).await;
    router.signal("TERM");
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow");
    let status = router.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "graceful exit: {status:?}");
}
