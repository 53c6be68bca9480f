//! `/metrics` on the admin listener, the access log and the Grafana
//! dashboard, against the real router binary.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// The exposition as `name{labels}` → value.
async fn scrape(router: &RouterProcess) -> BTreeMap<String, f64> {
    let response = client().get(format!("http://{}/metrics", router.admin)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

async fn exposition(router: &RouterProcess) -> String {
    client().get(format!("http://{}/metrics", router.admin)).send().await.unwrap().text().await.unwrap()
}

/// The value of `name{labels}`, labels in any order.
fn value(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    let key = match series.split_once('{') {
        Some((name, labels)) => {
            let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
            labels.sort();
            format!("{name}{{{}}}", labels.join(","))
        }
        None => series.to_string(),
    };
    *metrics.get(&key).unwrap_or_else(|| panic!("no series {key}"))
}

/// Scrapes until `series` exists with at least `at_least`: a request is
/// counted when it ends, just after its answer reaches the client.
async fn scrape_once_counted(router: &RouterProcess, series: &str, at_least: f64) -> BTreeMap<String, f64> {
    Wait::new(format!("{series} to reach {at_least}"), Duration::from_secs(10))
        .every(Duration::from_millis(20))
        .until_async(|| async {
            let m = scrape(router).await;
            let key_present = std::panic::catch_unwind(|| value(&m, series)).is_ok_and(|v| v >= at_least);
            key_present.then_some(m)
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_and_histograms_equal_the_requests_sent() {
    let dying = Upstream::start("dying").await;
    let live = Upstream::start("live").await;
    let config = format!(
        "[tenants.acme.metrics]\nendpoints = [\"{}\", \"{}\"]\nhealth_check = {{ interval = \"1h\", passive_failures = 1 }}\n",
        dying.url(),
        live.url()
    );
    let router = RouterProcess::start(&config);
    let base = router.base("unified");
    let http = client();
    // Healthy at start-up, dead from now on: the first request's connect fails and is retried.
    dying.stop().await;

    for _ in 0..3 {
        let r = http.get(format!("{base}/api/v1/query")).header("X-Tenant-ID", "acme").send().await.unwrap();
        assert_eq!(r.headers()["x-upstream"], "live");
    }
    let post = http
        .post(format!("{base}/api/v1/query"))
        .header("X-Tenant-ID", "acme")
        .body(vec![b'q'; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    for _ in 0..2 {
        let r = http.get(format!("{base}/api/v1/query?status=500")).header("X-Tenant-ID", "acme").send().await.unwrap();
        assert_eq!(r.status(), 500);
    }
    for (tenant, path) in [
        (Some("nobody"), "/api/v1/query"),
        (Some("nobody2"), "/api/v1/query"),
        (None, "/api/v1/query"),
        (Some("acme"), "/nowhere"),
    ] {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(tenant) = tenant {
            request = request.header("X-Tenant-ID", tenant);
        }
        assert!(request.send().await.unwrap().status().is_client_error());
    }

    let m = scrape_once_counted(
        &router,
        r#"mirador_router_request_duration_seconds_count{signal="metrics",tenant="acme"}"#,
        6.0,
    )
    .await;
    let acme = r#"signal="metrics",tenant="acme""#;
    assert_eq!(value(&m, &format!(r#"mirador_router_requests_total{{{acme},status_class="2xx"}}"#)), 4.0);
    assert_eq!(value(&m, &format!(r#"mirador_router_requests_total{{{acme},status_class="5xx"}}"#)), 2.0);
    assert_eq!(value(&m, &format!(r#"mirador_router_requests_total{{{acme},status_class="4xx"}}"#)), 0.0);
    assert_eq!(value(&m, &format!("mirador_router_request_duration_seconds_count{{{acme}}}")), 6.0);
    assert_eq!(value(&m, &format!(r#"mirador_router_upstream_errors_total{{kind="connect",{acme}}}"#)), 1.0);
    assert_eq!(value(&m, &format!(r#"mirador_router_upstream_errors_total{{kind="status_5xx",{acme}}}"#)), 2.0);
    assert_eq!(value(&m, &format!(r#"mirador_router_upstream_errors_total{{kind="timeout",{acme}}}"#)), 0.0);
    assert_eq!(value(&m, &format!("mirador_router_retries_total{{{acme}}}")), 1.0);
    assert_eq!(value(&m, &format!("mirador_router_failovers_total{{{acme}}}")), 0.0);
    assert_eq!(value(&m, &format!("mirador_router_request_bytes_total{{{acme}}}")), 100.0);
    assert_eq!(value(&m, &format!("mirador_router_response_bytes_total{{{acme}}}")), 6.0 * "live".len() as f64);
    let attempts = |url: String| {
        value(&m, &format!(r#"mirador_router_upstream_attempt_duration_seconds_count{{endpoint="{url}"}}"#))
    };
    assert_eq!((attempts(dying.url()), attempts(live.url())), (1.0, 6.0));
    assert_eq!(value(&m, r#"mirador_router_rejections_total{reason="unknown_tenant",tenant="unknown"}"#), 2.0);
    assert_eq!(value(&m, r#"mirador_router_rejections_total{reason="no_tenant",tenant="unknown"}"#), 1.0);
    assert_eq!(value(&m, r#"mirador_router_rejections_total{reason="unroutable",tenant="acme"}"#), 1.0);
    assert_eq!(value(&m, &format!(r#"mirador_router_endpoint_healthy{{endpoint="{}"}}"#, dying.url())), 0.0);
    assert_eq!(value(&m, &format!(r#"mirador_router_endpoint_healthy{{endpoint="{}"}}"#, live.url())), 1.0);
    assert_eq!(value(&m, r#"mirador_router_config_reloads_total{result="success"}"#), 1.0);
    assert_eq!(value(&m, "mirador_router_tenants"), 1.0);
    assert!(value(&m, "mirador_router_config_last_reload_success_timestamp_seconds") > 1.7e9);
    assert_eq!(value(&m, &format!(r#"mirador_router_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"))), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tenant_ids_never_become_label_values() {
    let up = Upstream::start("up").await;
    let router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()));
    let http = client();
    let ids: Vec<String> =
        (0..1000u64).map(|i| format!("intruder{:x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16)).collect();
    for id in &ids {
        let r = http
            .get(format!("{}/api/v1/query", router.base("unified")))
            .header("X-Tenant-ID", id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let text = exposition(&router).await;
    assert!(!text.contains("intruder"), "a client-sent tenant id became a label value");
    let m = scrape(&router).await;
    assert_eq!(value(&m, r#"mirador_router_rejections_total{reason="unknown_tenant",tenant="unknown"}"#), 1000.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn series_appear_with_a_tenants_first_request_not_before() {
    let up = Upstream::start("up").await;
    let router = RouterProcess::start(&format!(
        "[tenants.busy.metrics]\nendpoints = [\"{0}\"]\n[tenants.idle.metrics]\nendpoints = [\"{0}\"]\n",
        up.url()
    ));
    let before = exposition(&router).await;
    assert!(
        !before.contains("tenant=\"busy\"") && !before.contains("tenant=\"idle\""),
        "series made before any request"
    );
    assert!(
        !before.contains("mirador_router_upstream_attempt_duration_seconds_count"),
        "attempt series before any attempt"
    );
    let r = client()
        .get(format!("{}/api/v1/query", router.base("unified")))
        .header("X-Tenant-ID", "busy")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = scrape_once_counted(
        &router,
        r#"mirador_router_request_duration_seconds_count{signal="metrics",tenant="busy"}"#,
        1.0,
    )
    .await;
    assert_eq!(value(&m, r#"mirador_router_requests_total{signal="metrics",status_class="2xx",tenant="busy"}"#), 1.0);
    let attempts = format!(r#"mirador_router_upstream_attempt_duration_seconds_count{{endpoint="{}"}}"#, up.url());
    assert_eq!(value(&m, &attempts), 1.0);
    assert!(!exposition(&router).await.contains("tenant=\"idle\""), "an idle tenant got series");
    // Probes are measured for every endpoint, but not as a series per endpoint.
    assert!(value(&m, "mirador_router_probe_duration_seconds_count") >= 1.0);
    assert!(value(&m, &format!(r#"mirador_router_endpoint_probe_seconds{{endpoint="{}"}}"#, up.url())) > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_removed_by_reload_has_no_series_left() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let both = format!(
        "[tenants.keep.metrics]\nendpoints = [\"{}\"]\n[tenants.gone.metrics]\nendpoints = [\"{}\"]\n",
        a.url(),
        b.url()
    );
    let router = RouterProcess::start(&both);
    for tenant in ["keep", "gone"] {
        let r = client()
            .get(format!("{}/api/v1/query", router.base("unified")))
            .header("X-Tenant-ID", tenant)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let _ =
        client().get(format!("{}/nowhere", router.base("unified"))).header("X-Tenant-ID", "gone").send().await.unwrap();
    let before = exposition(&router).await;
    assert!(before.contains(r#"tenant="gone""#) && before.contains(&b.url()));

    router.write_tenants(&format!("[tenants.keep.metrics]\nendpoints = [\"{}\"]\n", a.url()));
    router.signal("HUP");
    router.wait_for_log("config reloaded", 1);
    let after = exposition(&router).await;
    assert!(!after.contains(r#"tenant="gone""#), "series of the removed tenant remain");
    let m = scrape(&router).await;
    assert_eq!(
        value(&m, r#"mirador_router_requests_total{signal="metrics",status_class="2xx",tenant="keep"}"#),
        1.0,
        "kept tenants keep counting"
    );
    assert_eq!(value(&m, r#"mirador_router_config_reloads_total{result="success"}"#), 2.0);
    assert_eq!(value(&m, "mirador_router_tenants"), 1.0);
    // The removed tenant's endpoint goes too, once its prober notices.
    Wait::new(format!("the series of the removed endpoint {} to go", b.url()), Duration::from_secs(10))
        .every(Duration::from_millis(50))
        .until_async(|| async { !exposition(&router).await.contains(&b.url()) })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_lines_are_json_with_every_field() {
    let up = Upstream::start("up").await;
    let router = RouterProcess::start(&format!(
        "[observability]\naccess_log = \"json\"\n[tenants.acme.metrics]\nendpoints = [\"{}\"]\n",
        up.url()
    ));
    let http = client();
    let ok = http
        .post(format!("{}/api/v1/query?query=secret", router.base("unified")))
        .header("X-Tenant-ID", "acme")
        .header("X-Request-ID", "req-42")
        .body("query=up")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = http
        .get(format!("{}/api/v1/query", router.base("unified")))
        .header("X-Tenant-ID", "nobody")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    router.wait_for_log("{\"ts\":", 2);
    let lines: Vec<serde_json::Value> =
        router.log().lines().filter(|l| l.starts_with("{\"ts\":")).map(|l| serde_json::from_str(l).unwrap()).collect();
    // Each request writes its line when it ends, so the two may come in either order.
    assert_eq!(lines.len(), 2);
    let (line, refused_line) =
        if lines[0]["method"] == "POST" { (&lines[0], &lines[1]) } else { (&lines[1], &lines[0]) };
    for field in [
        "ts",
        "tenant",
        "signal",
        "method",
        "path",
        "status",
        "endpoint",
        "attempts",
        "duration_ms",
        "bytes_in",
        "bytes_out",
        "request_id",
    ] {
        assert!(line.get(field).is_some(), "no {field} in {line}");
    }
    assert_eq!(
        (&line["tenant"], &line["signal"], &line["method"], &line["path"], &line["status"], &line["endpoint"]),
        (&"acme".into(), &"metrics".into(), &"POST".into(), &"/api/v1/query".into(), &200.into(), &up.url().into()),
        "the query string stays out by default"
    );
    assert_eq!(
        (&line["attempts"], &line["bytes_in"], &line["bytes_out"], &line["request_id"]),
        (&1.into(), &8.into(), &2.into(), &"req-42".into())
    );
    assert_eq!(
        (&refused_line["tenant"], &refused_line["status"], &refused_line["attempts"]),
        (&"unknown".into(), &403.into(), &0.into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_grafana_dashboard_queries_exists() {
    let up = Upstream::start("up").await;
    let router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()));
    let r = client()
        .get(format!("{}/api/v1/query", router.base("unified")))
        .header("X-Tenant-ID", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    scrape_once_counted(
        &router,
        r#"mirador_router_request_duration_seconds_count{signal="metrics",tenant="acme"}"#,
        1.0,
    )
    .await;
    let text = exposition(&router).await;
    let exposed: std::collections::BTreeSet<&str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/grafana/mirador-router.json")).unwrap(),
    )
    .unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(start) = rest.find("mirador_router_") {
                let name: String =
                    rest[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[start + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 12, "{queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|name| !exposed.contains(name.as_str())).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics that do not exist: {missing:?}");
}
