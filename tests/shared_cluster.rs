//! Shared clusters against strict stand-ins of vminsert and vmselect (and
//! recording VictoriaLogs/VictoriaTraces stand-ins): every metrics endpoint
//! of the surface reaches the right service with the tenant's own
//! `account:project` and suffix; shared logs and traces get the router's
//! `AccountID`/`ProjectID`; a client-sent id — header or path — never
//! reaches any upstream.

mod common;

use common::cluster::{self, ClusterPath};
use common::upstream::Seen;
use common::*;
use mirador_router::api::{Access, Signal, SURFACE};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The service and suffix the cluster docs ("URL format") give for a
/// single-node path; `None` where they give no tenant-scoped form.
fn documented(path: &str, access: Access) -> Option<(&'static str, String)> {
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| path.starts_with(p));
    Some(match path {
        "/api/v1/push" | "/tags/tagSeries" | "/tags/tagMultiSeries" => return None,
        "/write" | "/api/v2/write" | "/query" => ("insert", format!("/influx{path}")),
        "/insert/opentelemetry/v1/metrics" => ("insert", "/opentelemetry/v1/metrics".into()),
        _ if starts(&["/influx/", "/opentelemetry/", "/datadog/", "/newrelic", "/zabbixconnector/"]) => {
            ("insert", path.into())
        }
        _ if access == Access::Ingest => ("insert", format!("/prometheus{path}")),
        _ if access == Access::Admin => ("delete", format!("/prometheus{path}")),
        _ if path.starts_with("/vmui") => ("select", path.into()),
        _ if starts(&["/metrics/", "/tags"]) || matches!(path, "/functions" | "/render") => {
            ("select", format!("/graphite{path}"))
        }
        _ => ("select", format!("/prometheus{path}")),
    })
}

/// The stand-ins: a cluster (vminsert, vmselect), a shared VictoriaLogs and
/// VictoriaTraces, and tenant `d`'s dedicated deployments.
struct Stands {
    vminsert: Upstream,
    vmselect: Upstream,
    vlogs: Upstream,
    vtraces: Upstream,
    d_metrics: Upstream,
    d_logs: Upstream,
}

impl Stands {
    async fn start() -> Stands {
        Stands {
            vminsert: cluster::vminsert("vminsert").await,
            vmselect: cluster::vmselect("vmselect").await,
            vlogs: Upstream::start("vlogs-shared").await,
            vtraces: Upstream::start("vtraces-shared").await,
            d_metrics: Upstream::start("d-metrics").await,
            d_logs: Upstream::start("d-logs").await,
        }
    }

    fn all(&self) -> [&Upstream; 6] {
        [&self.vminsert, &self.vmselect, &self.vlogs, &self.vtraces, &self.d_metrics, &self.d_logs]
    }

    /// Three tenants on the shared cluster (`c` knowingly shares `a`'s
    /// ids), one dedicated.
    fn tenants(&self) -> String {
        let (insert, select) = (self.vminsert.url(), self.vmselect.url());
        let (vlogs, vtraces) = (self.vlogs.url(), self.vtraces.url());
        format!(
            r#"
[tenants.a.metrics]
account_id = 1
insert_endpoints = ["{insert}"]
select_endpoints = ["{select}"]
[tenants.a.logs]
account_id = 1
endpoints = ["{vlogs}"]
[tenants.a.traces]
account_id = 1
endpoints = ["{vtraces}"]

[tenants.b.metrics]
account_id = 2
project_id = 5
insert_endpoints = ["{insert}"]
select_endpoints = ["{select}"]
[tenants.b.logs]
account_id = 2
project_id = 5
endpoints = ["{vlogs}"]
[tenants.b.features]
admin_api = ["delete_series"]

[tenants.c.metrics]
account_id = 1
share_tenant_id_with = "a"
insert_endpoints = ["{insert}"]
select_endpoints = ["{select}"]

[tenants.d.metrics]
endpoints = ["{}"]
[tenants.d.logs]
endpoints = ["{}"]
"#,
            self.d_metrics.url(),
            self.d_logs.url()
        )
    }

    /// Every request any stand-in saw with this request id.
    fn saw(&self, request_id: &str) -> Vec<(&str, Seen)> {
        self.all()
            .into_iter()
            .flat_map(|up| up.seen().into_iter().map(move |seen| (up.name.as_str(), seen)))
            .filter(|(_, seen)| seen.headers.get("x-request-id").is_some_and(|v| v == request_id))
            .collect()
    }
}

/// The values of a header as the upstream got them.
fn values(seen: &Seen, name: &str) -> Vec<String> {
    seen.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Sends `method path` for `tenant` with spoofed Victoria ids in both
/// header spellings; its status and request id.
async fn send(base: &str, tenant: &str, method: reqwest::Method, path: &str) -> (u16, String) {
    let request_id = format!("req-{}", NEXT_ID.fetch_add(1, Ordering::SeqCst));
    let mut request = client()
        .request(method.clone(), format!("{base}{path}"))
        .header("X-Tenant-ID", tenant)
        .header("X-Request-ID", &request_id)
        .header("AccountID", "99")
        .header("projectid", "98")
        .header("accountid", "multitenant");
    if method == reqwest::Method::POST {
        request = request.body("metric 1\n");
    }
    (request.send().await.unwrap().status().as_u16(), request_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metrics_endpoint_reaches_its_cluster_service_with_the_tenants_own_id() {
    let stands = Stands::start().await;
    let router = RouterProcess::start(&stands.tenants());
    let base = router.base("unified");
    let mut checked = 0;
    let endpoints: Vec<_> =
        SURFACE.iter().filter(|e| e.signal == Signal::Metrics && e.access != Access::Admin).collect();
    for endpoint in &endpoints {
        let path = endpoint.pattern.replace('*', "job");
        let method = if endpoint.allows(&http::Method::GET) { reqwest::Method::GET } else { reqwest::Method::POST };
        for (tenant, id) in [("a", "1:0"), ("b", "2:5"), ("c", "1:0"), ("d", "")] {
            let target = format!("{path}?probe=1");
            let (status, request_id) = send(&base, tenant, method.clone(), &target).await;
            let saw = stands.saw(&request_id);
            let what = format!("{method} {path} for {tenant}: {status}, seen {saw:?}");
            if tenant == "d" {
                // Dedicated: the canonical path as it came, no Victoria ids.
                assert_eq!(status, 200, "{what}");
                assert_eq!(saw.len(), 1, "{what}");
                assert_eq!((saw[0].0, saw[0].1.path_and_query.as_str()), ("d-metrics", target.as_str()), "{what}");
                assert!(values(&saw[0].1, "accountid").is_empty() && values(&saw[0].1, "projectid").is_empty());
                continue;
            }
            match documented(&path, endpoint.access) {
                None => {
                    assert_eq!(status, 403, "{what}");
                    assert!(saw.is_empty(), "{what}");
                }
                Some((service, suffix)) => {
                    assert!((200..300).contains(&status), "{what}");
                    assert_eq!(saw.len(), 1, "{what}");
                    let (name, seen) = &saw[0];
                    assert_eq!(*name, if service == "insert" { "vminsert" } else { "vmselect" }, "{what}");
                    let parsed = cluster::parse(&seen.path_and_query).unwrap();
                    let expected = ClusterPath { service: service.into(), tenant: id.into(), suffix };
                    assert_eq!(parsed, expected, "{what}");
                    assert!(seen.path_and_query.ends_with("?probe=1"), "the query string is kept: {what}");
                    assert!(values(seen, "accountid").is_empty() && values(seen, "projectid").is_empty(), "{what}");
                    if method == reqwest::Method::POST {
                        assert_eq!(seen.body_len, 9, "{what}");
                    }
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, endpoints.len() * 3, "every endpoint for each shared tenant");

    // Series deletion is the one admin operation scoped to a cluster tenant.
    let (status, request_id) =
        send(&base, "b", reqwest::Method::POST, "/api/v1/admin/tsdb/delete_series?match[]=up").await;
    let saw = stands.saw(&request_id);
    assert_eq!(status, 200, "{saw:?}");
    assert_eq!(saw[0].1.path_and_query, "/delete/2:5/prometheus/api/v1/admin/tsdb/delete_series?match[]=up");
    for cluster_wide in ["/snapshot/create", "/internal/force_merge", "/api/v1/status/config", "/metrics"] {
        let (status, request_id) = send(&base, "b", reqwest::Method::GET, cluster_wide).await;
        assert_eq!((status, stands.saw(&request_id).len()), (403, 0), "{cluster_wide}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_logs_and_traces_get_the_routers_ids_and_dedicated_ones_none() {
    let stands = Stands::start().await;
    let router = RouterProcess::start(&stands.tenants());
    let base = router.base("unified");
    for (tenant, signal, stand, ids) in [
        ("a", "logs", "vlogs-shared", Some(("1", "0"))),
        ("b", "logs", "vlogs-shared", Some(("2", "5"))),
        ("a", "traces", "vtraces-shared", Some(("1", "0"))),
        ("d", "logs", "d-logs", None),
    ] {
        for (method, path) in [(reqwest::Method::POST, ingest_path(signal)), (reqwest::Method::GET, query_path(signal))]
        {
            let (status, request_id) = send(&base, tenant, method, path).await;
            let saw = stands.saw(&request_id);
            let what = format!("{path} for {tenant}: {status}, seen {saw:?}");
            assert_eq!((status, saw.len(), saw[0].0), (200, 1, stand), "{what}");
            assert_eq!(saw[0].1.path_and_query, path, "{what}");
            let expected = |value: Option<&str>| value.map(|v| vec![v.to_string()]).unwrap_or_default();
            assert_eq!(values(&saw[0].1, "accountid"), expected(ids.map(|i| i.0)), "{what}");
            assert_eq!(values(&saw[0].1, "projectid"), expected(ids.map(|i| i.1)), "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_that_names_a_victoria_tenant_is_refused_and_reaches_nobody() {
    let stands = Stands::start().await;
    let router = RouterProcess::start(&stands.tenants());
    let base = router.base("unified");
    for spoofed in [
        "/insert/99/prometheus/api/v1/write",
        "/insert/2:5/prometheus/api/v1/write",
        "/insert/multitenant/prometheus/api/v1/write",
        "/select/0/prometheus/api/v1/query",
        "/select/multitenant/prometheus/api/v1/query",
        "/select/1/vmui/",
        "/delete/2:5/prometheus/api/v1/admin/tsdb/delete_series",
        "/prometheus/insert/0/prometheus/api/v1/write",
        "/select/%32:5/prometheus/api/v1/query",
        "//select//2:5//prometheus/api/v1/query",
        "/select/MULTITENANT/prometheus/api/v1/query",
    ] {
        for tenant in ["a", "b", "c", "d"] {
            for method in [reqwest::Method::GET, reqwest::Method::POST] {
                let (status, request_id) = send(&base, tenant, method, spoofed).await;
                let saw = stands.saw(&request_id);
                assert_eq!((status, saw.len()), (403, 0), "{spoofed} for {tenant}: {saw:?}");
            }
        }
    }
    // The same holds on a drop-in listener.
    let metrics = format!("http://{}", router.drop_in["metrics"]);
    let (status, request_id) = send(&metrics, "a", reqwest::Method::POST, "/insert/2:5/prometheus/api/v1/write").await;
    assert_eq!((status, stands.saw(&request_id).len()), (403, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_health_api_shows_vminsert_and_vmselect_apart() {
    let stands = Stands::start().await;
    let router = RouterProcess::start(&stands.tenants());
    let (status, health) = router.admin_get("/api/v1/tenants/b/health").await;
    assert_eq!(status, 200, "{health}");
    let metrics = &health["signals"]["metrics"];
    assert_eq!(metrics["insert"]["endpoints"][0]["endpoint"], stands.vminsert.url(), "{health}");
    assert_eq!(metrics["select"]["endpoints"][0]["endpoint"], stands.vmselect.url(), "{health}");
    assert_eq!((metrics["account_id"].as_u64(), metrics["project_id"].as_u64()), (Some(2), Some(5)), "{health}");
    assert!(metrics.get("endpoints").is_none(), "{health}");
    assert_eq!(health["signals"]["logs"]["endpoints"][0]["endpoint"], stands.vlogs.url(), "{health}");
    // Both services are probed on /health.
    wait_until("vminsert and vmselect to be probed", std::time::Duration::from_secs(10), || {
        stands.vminsert.probes() > 0 && stands.vmselect.probes() > 0
    })
    .await;
}

#[test]
fn the_stand_ins_parse_the_tenant_as_the_cluster_does() {
    let ok = |path: &str| cluster::parse(path).unwrap();
    assert_eq!(ok("/insert/42/prometheus/api/v1/write").tenant, "42:0");
    assert_eq!(ok("/insert/42:7/prometheus/api/v1/write").tenant, "42:7");
    assert_eq!(ok("/select/multitenant/prometheus/api/v1/query").tenant, "multitenant");
    assert_eq!(ok("/select/1/prometheus/api/v1/query?x=1").suffix, "/prometheus/api/v1/query");
    for bad in ["/insert/acme/prometheus/api/v1/write", "/insert/-1/x", "/insert/4294967296/x", "/insert/1:2:3/x"] {
        assert_eq!(cluster::parse(bad).unwrap_err().0, 400, "{bad}");
    }
    assert_eq!(cluster::refuses("/insert/1/prometheus/api/v1/query", &["insert"]).unwrap().0, 404);
    assert_eq!(cluster::refuses("/select/1/prometheus/api/v1/write", &["select"]).unwrap().0, 404);
    assert!(cluster::refuses("/select/1/prometheus/api/v1/label/job/values", &["select"]).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_vmagent_and_vmalert_style_queries_reach_the_cluster_paths_their_docs_show() {
    let stands = Stands::start().await;
    let router = RouterProcess::start(&stands.tenants());
    let dir = tempfile::tempdir().unwrap();
    // vmagent, configured exactly as against a single-node VictoriaMetrics.
    let url = format!("{}/api/v1/write", router.base("unified"));
    let buffer = dir.path().join("vmagent");
    let (_vmagent, agent_addr) =
        common::victoria::start_vmagent(&buffer, &url, &["-remoteWrite.headers=X-Tenant-ID:b"]).await;
    let pushed = client()
        .post(format!("http://{agent_addr}/api/v1/import/prometheus"))
        .body("mirador_shared{source=\"vmagent\"} 1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 204);
    // vmagent's own cluster docs: -remoteWrite.url=http://<vminsert>:8480/insert/<accountID>/prometheus/api/v1/write.
    let written = wait_until("vmagent's remote write to reach vminsert", std::time::Duration::from_secs(30), || {
        stands.vminsert.seen().into_iter().find(|seen| seen.method == "POST" && seen.body_len > 0)
    })
    .await;
    let parsed = cluster::parse(&written.path_and_query).unwrap();
    assert_eq!((parsed.tenant.as_str(), parsed.suffix.as_str()), ("2:5", "/prometheus/api/v1/write"), "{written:?}");
    assert!(written.path_and_query.starts_with("/insert/2:5/prometheus/api/v1/write"), "{written:?}");
    assert!(stands.vmselect.seen().is_empty() && stands.d_metrics.seen().is_empty());

    // vmalert queries with a form POST to /api/v1/query.
    let form = "query=sum(up)&time=1700000000&step=15s";
    let answer = client()
        .post(format!("{}/api/v1/query", router.base("unified")))
        .header("X-Tenant-ID", "a")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let seen = stands.vmselect.seen().pop().unwrap();
    assert_eq!((seen.method.as_str(), seen.path_and_query.as_str()), ("POST", "/select/1:0/prometheus/api/v1/query"));
    assert_eq!(seen.body_len, form.len() as u64);
}

/// Polls the tenant health API until tenant `m`'s metrics pool is `url`.
async fn wait_serving(router: &RouterProcess, what: &str, url: String) {
    Wait::new(format!("tenant m to be served by {what}"), std::time::Duration::from_secs(20))
        .every(std::time::Duration::from_millis(20))
        .until_async(|| async {
            let (_, health) = router.admin_get("/api/v1/tenants/m/health").await;
            let metrics = &health["signals"]["metrics"];
            let first =
                metrics["select"]["endpoints"][0]["endpoint"].as_str().or(metrics["endpoints"][0]["endpoint"].as_str());
            (first == Some(url.as_str())).then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_moved_between_shared_and_dedicated_under_load_loses_nothing_and_never_goes_back() {
    let vminsert = cluster::vminsert("vminsert").await;
    let vmselect = cluster::vmselect("vmselect").await;
    let dedicated = Upstream::start("m-dedicated").await;
    let shared = format!(
        "[tenants.m.metrics]\naccount_id = 9\ninsert_endpoints = [\"{}\"]\nselect_endpoints = [\"{}\"]\n",
        vminsert.url(),
        vmselect.url()
    );
    let own = format!("[tenants.m.metrics]\nendpoints = [\"{}\"]\n", dedicated.url());
    let router = RouterProcess::start(&shared);
    let base = router.base("unified");

    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let (base, next, stop) = (base.clone(), next.clone(), stop.clone());
            tokio::spawn(async move {
                let mut failed = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let id = next.fetch_add(1, Ordering::SeqCst);
                    let response = client()
                        .get(format!("{base}/api/v1/query?query=up"))
                        .header("X-Tenant-ID", "m")
                        .header("X-Request-ID", format!("m-{id}"))
                        .header("AccountID", "1")
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 200 => {}
                        other => failed.push((id, format!("{other:?}"))),
                    }
                }
                failed
            })
        })
        .collect();
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(300));
    settle().await;
    // Shared → dedicated, then back, each by SIGHUP under load.
    router.write_tenants(&own);
    router.signal("HUP");
    wait_serving(&router, "its dedicated deployment", dedicated.url()).await;
    let on_dedicated = next.load(Ordering::SeqCst);
    settle().await;
    let leaving_dedicated = next.load(Ordering::SeqCst);
    router.write_tenants(&shared);
    router.signal("HUP");
    wait_serving(&router, "the shared cluster", vmselect.url()).await;
    let on_shared = next.load(Ordering::SeqCst);
    settle().await;
    stop.store(true, Ordering::SeqCst);
    for loader in loaders {
        let failed = loader.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
    }
    let total = next.load(Ordering::SeqCst);
    let ids = |up: &Upstream| -> Vec<usize> {
        up.seen()
            .iter()
            .filter_map(|s| s.headers.get("x-request-id")?.to_str().ok()?.strip_prefix("m-")?.parse().ok())
            .collect()
    };
    let (on_cluster, on_own) = (ids(&vmselect), ids(&dedicated));
    assert_eq!(on_cluster.len() + on_own.len(), total, "every request was served once");
    // After each swap was seen, no request went to the deployment left.
    let late = |ids: &[usize], range: std::ops::Range<usize>| ids.iter().filter(|id| range.contains(id)).count();
    assert_eq!(late(&on_cluster, on_dedicated..leaving_dedicated), 0, "a request reached the cluster after the move");
    assert_eq!(late(&on_own, on_shared..total), 0, "a request reached the dedicated deployment after the move back");
    assert!(late(&on_own, on_dedicated..leaving_dedicated) > 10 && late(&on_cluster, on_shared..total) > 10);
    // Every cluster request carried m's id, never the client's.
    for seen in vmselect.seen() {
        assert!(seen.path_and_query.starts_with("/select/9:0/prometheus/api/v1/query?query=up"), "{seen:?}");
        assert!(seen.headers.get("accountid").is_none());
    }
    assert!(vminsert.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_tenant_round_trips_through_the_admin_api_and_routes_at_once() {
    let vminsert = cluster::vminsert("vminsert").await;
    let vmselect = cluster::vmselect("vmselect").await;
    let router = RouterProcess::start("# kept: operators' note\n");
    let body = serde_json::json!({
        "id": "newco",
        "metrics": {
            "account_id": 77,
            "project_id": 3,
            "insert_endpoints": [vminsert.url()],
            "select_endpoints": [vmselect.url()],
        },
    });
    let (status, answer) = router.admin("POST", "/api/v1/tenants", Some(&body.to_string())).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["tenant"], body);
    assert_eq!(router.admin_get("/api/v1/tenants/newco").await, (200, body.clone()));
    let file = std::fs::read_to_string(&router.config_path).unwrap();
    assert!(file.contains("# kept: operators' note") && file.contains("account_id = 77"), "{file}");
    let (status, request_id) = send(&router.base("unified"), "newco", reqwest::Method::GET, "/api/v1/labels").await;
    assert_eq!(status, 200);
    let seen = vmselect.seen().pop().unwrap();
    assert_eq!(seen.headers["x-request-id"], request_id.as_str());
    assert_eq!(seen.path_and_query, "/select/77:3/prometheus/api/v1/labels");
    // A second tenant on the same ids is refused at its key path, and nothing changes.
    let twin = body.to_string().replace("newco", "twin");
    let (status, answer) = router.admin("POST", "/api/v1/tenants", Some(&twin)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("tenants.twin.metrics.account_id"), "{answer}");
    assert_eq!(std::fs::read_to_string(&router.config_path).unwrap(), file);
}
