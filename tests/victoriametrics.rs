//! End to end with real VictoriaMetrics (Debian package `victoria-metrics`):
//! two tenants, each with its own `victoria-metrics` process. Data written
//! through the router — by `/api/v1/import/prometheus` and by a real `vmagent`
//! remote-writing with `-remoteWrite.headers=X-Tenant-ID:...` — lands only in
//! that tenant's instance and is read back through the router; the other
//! tenant never sees it.

mod common;

use common::victoria::{force_flush, start_victoria_metrics, start_vmagent};
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// `GET {base}/api/v1/query?query=expr`, as `tenant` when given: the JSON answer.
async fn query(base: &str, tenant: Option<&str>, expr: &str) -> serde_json::Value {
    let mut request = client().get(format!("{base}/api/v1/query")).query(&[("query", expr)]);
    if let Some(tenant) = tenant {
        request = request.header("X-Tenant-ID", tenant);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "query {expr} as {tenant:?} at {base}");
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["status"], "success", "{body}");
    body
}

/// Names of the series matching `selector`, as `tenant` sees them through `base`.
async fn series_names(base: &str, tenant: &str, selector: &str) -> Vec<String> {
    let body = query(base, Some(tenant), selector).await;
    let mut names: Vec<String> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metric"]["__name__"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

/// `POST {base}/api/v1/import/prometheus` of Prometheus text, as `tenant` when given.
async fn import(base: &str, tenant: Option<&str>, text: &str) {
    let mut request = client().post(format!("{base}/api/v1/import/prometheus")).body(text.to_string());
    if let Some(tenant) = tenant {
        request = request.header("X-Tenant-ID", tenant);
    }
    assert_eq!(request.send().await.unwrap().status(), 204, "import to {base}");
}

/// Polls until `tenant` sees exactly `expected` through the router.
async fn wait_for_series(base: &str, tenant: &str, vms: &[SocketAddr], expected: &[&str]) {
    Wait::new(format!("{tenant} to see exactly {expected:?}"), Duration::from_secs(60))
        .every(Duration::from_millis(200))
        .until_async(|| async {
            for vm in vms {
                force_flush(*vm).await;
            }
            let names = series_names(base, tenant, r#"{__name__=~"mirador_e2e_.*"}"#).await;
            if names == expected {
                Ok(())
            } else {
                Err(format!("{tenant} sees {names:?}, expected {expected:?}"))
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_through_the_router_land_only_in_the_tenants_own_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (_vm_a, vm_a) = start_victoria_metrics(dir.path(), "vm-a").await;
    let (_vm_b, vm_b) = start_victoria_metrics(dir.path(), "vm-b").await;
    let router = RouterProcess::start(&format!(
        "[tenants.team-a.metrics]\nendpoints = [\"http://{vm_a}\"]\n[tenants.team-b.metrics]\nendpoints = [\"http://{vm_b}\"]\n"
    ));
    let unified = router.base("unified");

    // Tenant A imports Prometheus text through the unified listener.
    import(&unified, Some("team-a"), "mirador_e2e_a{source=\"import\"} 11\n").await;

    // Tenant B's vmagent remote-writes through the drop-in metrics listener.
    let url = format!("{}/api/v1/write", router.base("metrics"));
    let (_vmagent, agent_addr) =
        start_vmagent(&dir.path().join("vmagent"), &url, &["-remoteWrite.headers=X-Tenant-ID:team-b"]).await;
    import(&format!("http://{agent_addr}"), None, "mirador_e2e_b{source=\"vmagent\"} 22\n").await;

    // Each tenant reads its own series back through the router, and only those.
    wait_for_series(&unified, "team-a", &[vm_a, vm_b], &["mirador_e2e_a"]).await;
    wait_for_series(&unified, "team-b", &[vm_a, vm_b], &["mirador_e2e_b"]).await;
    assert_eq!(series_names(&router.base("metrics"), "team-a", "mirador_e2e_b").await, Vec::<String>::new());
    assert_eq!(series_names(&router.base("metrics"), "team-b", "mirador_e2e_a").await, Vec::<String>::new());

    // The storage itself holds each tenant's data only in its own instance.
    let direct = |vm: SocketAddr| async move {
        let body = query(&format!("http://{vm}"), None, r#"{__name__=~"mirador_e2e_.*"}"#).await;
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metric"]["__name__"].to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(direct(vm_a).await, ["\"mirador_e2e_a\""]);
    assert_eq!(direct(vm_b).await, ["\"mirador_e2e_b\""]);

    // The value written is the value read.
    let value = query(&unified, Some("team-b"), "mirador_e2e_b").await;
    assert_eq!(value["data"]["result"][0]["value"][1], "22");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_one_of_two_victoria_metrics_mid_run_fails_no_query() {
    let dir = tempfile::tempdir().unwrap();
    let (vm_1, addr_1) = start_victoria_metrics(dir.path(), "vm-1").await;
    let (_vm_2, addr_2) = start_victoria_metrics(dir.path(), "vm-2").await;
    // The same data in both instances, written to each directly.
    for addr in [addr_1, addr_2] {
        import(&format!("http://{addr}"), None, "mirador_e2e_replicated 7\n").await;
    }
    let router = RouterProcess::start(&format!(
        "[tenants.acme.metrics]\nendpoints = [\"http://{addr_1}\", \"http://{addr_2}\"]\n\
         health_check = {{ interval = \"500ms\", unhealthy_threshold = 2, timeout = \"250ms\" }}\n"
    ));
    let unified = router.base("unified");
    wait_for_series(&unified, "acme", &[addr_1, addr_2], &["mirador_e2e_replicated"]).await;

    let mut vm_1 = Some(vm_1);
    let mut killed_at = None;
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..300 {
        if i == 100 {
            drop(vm_1.take());
            killed_at = Some(std::time::SystemTime::now());
        }
        let response = client()
            .post(format!("{unified}/api/v1/query"))
            .form(&[("query", "mirador_e2e_replicated")])
            .header("X-Tenant-ID", "acme")
            .send()
            .await
            .unwrap();
        *statuses.entry(response.status().as_u16()).or_insert(0) += 1;
    }
    let killed_at = killed_at.unwrap();
    // The health API shows the dead instance down, since soon after the kill.
    let url = format!("http://{addr_1}");
    let down_after = wait_until_async(format!("{url} to be marked down"), Duration::from_secs(10), || async {
        let (_, body) = router.admin_get("/api/v1/tenants/acme/health").await;
        let endpoints = body["signals"]["metrics"]["endpoints"].as_array().unwrap();
        let endpoint = endpoints.iter().find(|e| e["endpoint"] == url).cloned().unwrap();
        if endpoint["healthy"] == false {
            let since = humantime::parse_rfc3339(endpoint["since"].as_str().unwrap()).unwrap();
            Ok(since.duration_since(killed_at).unwrap_or_default())
        } else {
            Err(format!("never marked down: {endpoint}"))
        }
    })
    .await;
    eprintln!("300 queries (POST form, as Grafana sends them): {statuses:?}; the killed instance was down in the health API within {down_after:?}");
    assert_eq!(statuses.into_iter().collect::<Vec<_>>(), [(200, 300)]);
    assert!(down_after <= Duration::from_millis(500 * 2 + 250 + 500), "{down_after:?}");
}
