//! Per-tenant usage against two real VictoriaMetrics instances: after each
//! tenant writes a different amount, the rows and storage bytes the router
//! reports for it are the ones its own instance's `/metrics` says; the
//! gauges carry them; a shared-cluster tenant is "not reported".

mod common;

use common::victoria::{force_flush, start_victoria_metrics};
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// (rows stored, storage bytes) as VictoriaMetrics' own /metrics says.
async fn own_figures(vm: SocketAddr) -> (f64, f64) {
    let text = client().get(format!("http://{vm}/metrics")).send().await.unwrap().text().await.unwrap();
    let (mut rows, mut bytes) = (0.0, 0.0);
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let value: f64 = value.parse().unwrap_or(0.0);
        if series.starts_with("vm_rows{type=\"storage/") {
            rows += value;
        } else if series.starts_with("vm_data_size_bytes{") {
            bytes += value;
        }
    }
    (rows, bytes)
}

async fn reported(router: &RouterProcess, tenant: &str) -> serde_json::Value {
    let (code, body) = router.admin_get(&format!("/api/v1/tenants/{tenant}/usage")).await;
    assert_eq!(code, 200, "{body}");
    body["usage"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_follows_each_instances_own_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (_small, small_vm) = start_victoria_metrics(dir.path(), "small").await;
    let (_big, big_vm) = start_victoria_metrics(dir.path(), "big").await;
    let (shared, shared_select) = (Upstream::start("vminsert").await, Upstream::start("vmselect").await);
    let router = RouterProcess::builder()
        .config_at(|dir, text| {
            let path = dir.join("router.toml");
            std::fs::write(&path, format!("{text}\n[observability]\nusage_interval = \"1s\"\n")).unwrap();
            path
        })
        .tenants(format!(
            "[tenants.small.metrics]\nendpoints = [\"http://{small_vm}\"]\n\
             [tenants.big.metrics]\nendpoints = [\"http://{big_vm}\"]\n\
             [tenants.pooled.metrics]\naccount_id = 7\ninsert_endpoints = [\"{}\"]\nselect_endpoints = [\"{}\"]\n",
            shared.url(),
            shared_select.url()
        ))
        .start();
    // 10 series for small, 2,000 for big, through the router.
    for (tenant, series) in [("small", 10), ("big", 2000)] {
        let body: String = (0..series).map(|i| format!("usage_test{{n=\"{i}\"}} {i}\n")).collect();
        let url = format!("{}/api/v1/import/prometheus", router.base("unified"));
        let sent = client().post(url).header("X-Tenant-ID", tenant).body(body).send().await.unwrap();
        assert_eq!(sent.status(), 204, "{tenant}");
    }
    for vm in [small_vm, big_vm] {
        force_flush(vm).await;
    }

    // The router's reading equals the instance's own figures, read just before.
    for (tenant, vm, at_least) in [("small", small_vm, 10.0), ("big", big_vm, 2000.0)] {
        let what = format!("{tenant}'s usage to match its instance");
        let reading = Wait::new(what, Duration::from_secs(30))
            .every(Duration::from_millis(250))
            .until_async(|| async {
                let (rows, bytes) = own_figures(vm).await;
                let usage = reported(&router, tenant).await;
                let metrics = &usage["metrics"];
                let matches =
                    metrics["rows"].as_f64() == Some(rows) && metrics["storage_bytes"].as_f64() == Some(bytes);
                (matches && rows >= at_least).then(|| metrics.clone())
            })
            .await;
        assert_eq!(reading["endpoint"], format!("http://{vm}"));
        assert!(reading["memory_bytes"].as_f64().unwrap() > 1e6, "{reading}");
        assert!(reading["storage_bytes"].as_f64().unwrap() > 0.0);
    }
    let (small_rows, big_rows) = (
        reported(&router, "small").await["metrics"]["rows"].as_f64().unwrap(),
        reported(&router, "big").await["metrics"]["rows"].as_f64().unwrap(),
    );
    assert!(big_rows >= 200.0 * small_rows, "big {big_rows} vs small {small_rows}");

    // A second reading gives rates.
    let rates = Wait::new("a rate between two readings", Duration::from_secs(10))
        .until_async(|| async { reported(&router, "big").await["metrics"]["cpu_cores"].as_f64() })
        .await;
    assert!(rates >= 0.0);

    // The shared tenant says why it has no figures, and nothing asked its cluster.
    let pooled = reported(&router, "pooled").await;
    assert!(pooled["metrics"]["note"].as_str().unwrap().starts_with("not reported"), "{pooled}");
    assert_eq!(shared.usage_reads() + shared_select.usage_reads(), 0, "the shared cluster was not read");

    // The gauges.
    let metrics = client().get(format!("http://{}/metrics", router.admin)).send().await.unwrap().text().await.unwrap();
    for name in ["storage_bytes", "rows", "memory_bytes"] {
        let series = format!("mirador_router_tenant_usage_{name}{{signal=\"metrics\",tenant=\"big\"}}");
        assert!(metrics.contains(&series), "{series} missing");
    }
    assert!(!metrics.contains("tenant_usage_rows{signal=\"metrics\",tenant=\"pooled\"}"), "no figure, no series");
    assert_eq!(router.admin_get("/api/v1/tenants/nobody/usage").await.0, 404);
}
