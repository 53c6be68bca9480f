//! Deployment validation on `POST`/`PUT /api/v1/tenants`: every endpoint a
//! tenant gains is checked before anything is written. A real
//! VictoriaMetrics passes; an HTTP server that is no Victoria*, a closed
//! port, a VictoriaMetrics given as logs, a VictoriaLogs given as traces and
//! another tenant's endpoint are each 422 with what was tried and why, and
//! nothing changes; `dry_run` changes nothing; `force` skips the checks and
//! is audited.

mod common;

use common::victoria::start_victoria_metrics;
use common::*;
use serde_json::{json, Value};

fn file(router: &RouterProcess) -> String {
    std::fs::read_to_string(&router.config_path).unwrap()
}

/// The answer's per-endpoint entries.
fn entries(answer: &Value) -> &Vec<Value> {
    answer["endpoints"].as_array().unwrap_or_else(|| panic!("no endpoints in {answer}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn new_endpoints_are_checked_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (_vm, vm) = start_victoria_metrics(dir.path(), "validated").await;
    let acme_vm = Upstream::start("acme-vm").await;
    let router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", acme_vm.url()));
    let before = file(&router);
    let post = |body: Value, query: &'static str| {
        let router = &router;
        async move { router.admin("POST", &format!("/api/v1/tenants{query}"), Some(&body.to_string())).await }
    };

    // Refused, each with its reason; the file and the table unchanged.
    let web = Upstream::start("web").await;
    web.set_kind("none");
    let closed = free_addr();
    let logs_only = Upstream::start("vlogs").await;
    logs_only.set_kind("victoria-logs");
    let cases = [
        (
            json!({"id": "web", "metrics": {"endpoints": [web.url()]}}),
            "neither /metrics nor /api/v1/status/buildinfo says it is a VictoriaMetrics single-node server",
        ),
        (
            json!({"id": "closed", "metrics": {"endpoints": [format!("http://{closed}")]}}),
            "not reachable or not healthy",
        ),
        (
            json!({"id": "as-logs", "logs": {"endpoints": [format!("http://{vm}")]}}),
            "/metrics has no vl_* series: not a VictoriaLogs server",
        ),
        (
            json!({"id": "as-traces", "traces": {"endpoints": [logs_only.url()]}}),
            "is \"victoria-logs-20250101-standin\", not a VictoriaTraces server",
        ),
        (
            json!({"id": "squatter", "metrics": {"endpoints": [acme_vm.url()]}}),
            "is already tenant \"acme\"'s metrics endpoint",
        ),
    ];
    for (body, reason) in cases {
        let (status, answer) = post(body.clone(), "").await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["status"], "error");
        assert_eq!(answer["errorType"], "unprocessable");
        let entry = &entries(&answer)[0];
        assert_eq!(entry["ok"], false, "{answer}");
        let problem = entry["problem"].as_str().unwrap();
        assert!(problem.contains(reason), "{body}: {problem:?} should say {reason:?}");
        assert!(answer["error"].as_str().unwrap().contains(reason), "{answer}");
        let id = body["id"].as_str().unwrap();
        assert_eq!(router.admin_get(&format!("/api/v1/tenants/{id}")).await.0, 404, "{id} was created");
        assert_eq!(file(&router), before, "{id}: the file changed");
    }
    // What was tried is said, step by step.
    let (_, answer) = post(json!({"id": "web", "metrics": {"endpoints": [web.url()]}}), "").await;
    let tried: Vec<&str> = entries(&answer)[0]["tried"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(tried[0], "GET /health: 200");
    assert!(tried[1].starts_with("GET /metrics: /metrics answered 404"), "{tried:?}");
    assert!(tried[2].starts_with("GET /api/v1/status/buildinfo:"), "{tried:?}");

    // One entry per endpoint: the good one passes, the closed one fails, and
    // nothing is written.
    let (status, answer) = post(
        json!({"id": "mixed", "metrics": {"endpoints": [format!("http://{vm}"), format!("http://{closed}")]}}),
        "",
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    let shown = entries(&answer);
    assert_eq!(shown.len(), 2);
    assert_eq!((shown[0]["endpoint"].as_str(), shown[0]["ok"].as_bool()), (Some(&*format!("http://{vm}")), Some(true)));
    assert_eq!(shown[1]["ok"], false);
    assert_eq!(file(&router), before);

    // dry_run: the checks, and no change, whether they pass or not.
    let good = json!({"id": "real", "metrics": {"endpoints": [format!("http://{vm}")]}});
    let (status, answer) = post(good.clone(), "?dry_run=true").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["dry_run"], true);
    assert_eq!(entries(&answer)[0]["ok"], true, "the real VictoriaMetrics passes");
    assert_eq!(router.admin_get("/api/v1/tenants/real").await.0, 404, "a dry run created the tenant");
    assert_eq!(file(&router), before);
    let (status, _) =
        post(json!({"id": "closed", "metrics": {"endpoints": [format!("http://{closed}")]}}), "?dry_run=true").await;
    assert_eq!(status, 422);

    // The real one is created, and routes.
    let (status, answer) = post(good, "").await;
    assert_eq!(status, 201, "{answer}");
    let written = client()
        .post(format!("{}/api/v1/import/prometheus", router.base("unified")))
        .header("X-Tenant-ID", "real")
        .body("validated_metric 1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 204);

    // An update checks only the endpoints it adds.
    let second = Upstream::start("acme-vm-2").await;
    let seen_before = acme_vm.validations();
    let moved = json!({"id": "acme", "metrics": {"endpoints": [acme_vm.url(), second.url()]}});
    let (status, answer) = router.admin("PUT", "/api/v1/tenants/acme", Some(&moved.to_string())).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(acme_vm.validations(), seen_before, "acme's endpoint in force was checked again");
    assert_eq!(second.validations(), 2, "the new endpoint was checked: /health, /metrics");

    // A shared deployment may sit on the cluster another tenant uses.
    let (vminsert, vmselect) = (cluster::vminsert("vminsert").await, cluster::vmselect("vmselect").await);
    let shared = |id: &str, account: u32| json!({"id": id, "metrics": {"account_id": account, "insert_endpoints": [vminsert.url()], "select_endpoints": [vmselect.url()]}});
    assert_eq!(post(shared("first-shared", 1), "").await.0, 201);
    let (status, answer) = post(shared("second-shared", 2), "").await;
    assert_eq!(status, 201, "{answer}");
    // vmselect given as vminsert is refused.
    let other_select = cluster::vmselect("vmselect-2").await;
    let swapped = json!({"id": "swapped", "metrics": {"account_id": 3, "insert_endpoints": [vmselect.url()], "select_endpoints": [other_select.url()]}});
    let (status, answer) = post(swapped, "").await;
    assert_eq!(status, 422, "{answer}");
    assert!(entries(&answer)[0]["problem"].as_str().unwrap().contains("not vminsert"), "{answer}");

    // force: no checks, the change made, and the skip in the audit log.
    let forced = json!({"id": "forced", "metrics": {"endpoints": [web.url()]}});
    let web_checks = web.validations();
    let (status, answer) = post(forced, "?force=true").await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(web.validations(), web_checks, "force still checked");
    assert!(file(&router).contains("[tenants.forced.metrics]"));
    router.wait_for_log("deployment validation skipped (force=true)", 1);
    assert!(
        router.log().contains("tenant=\"forced\"") || router.log().contains("tenant=forced"),
        "the audit names the tenant"
    );
}
