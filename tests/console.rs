//! The status page at the admin listener's `/`, in headless Chromium
//! (Debian `chromium` and `chromium-driver`, driven by Selenium's WebDriver
//! client from the venv `scripts/test` makes): the counts it shows, a dead
//! endpoint marked down with its error, the search, the tenant view; the
//! same page over 10,000 tenants (render and search times printed). The
//! JSON endpoints it reads, their token rules and the last minute's
//! figures are checked on the wire.
//!
//! Screenshots are kept in `target/console/`; DOM assertions only.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

fn python() -> PathBuf {
    let python = std::env::var("MIRADOR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv").into())
        .join("bin/python");
    assert!(python.exists(), "{} is missing: scripts/test makes the venv with Selenium", python.display());
    python
}

/// Runs tests/console/page.py against `router`'s page: what it saw.
async fn browse(router: &RouterProcess, shot: &str, search: &str, open: bool) -> Value {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/console"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/page.py");
    let mut args = vec![script.to_string(), format!("http://{}", router.admin), dir.join(shot).display().to_string()];
    args.push(search.to_string());
    if open {
        args.push("open".into());
    }
    let python = python();
    let run = move || std::process::Command::new(python).args(args).output();
    let output = tokio::task::spawn_blocking(run).await.unwrap().expect("python runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the page script failed:\n{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_counts_a_dead_endpoint_the_search_and_a_tenant_view() {
    let (acme, paused) = (Upstream::start("acme").await, Upstream::start("paused").await);
    let dead = free_addr(); // nothing listens here
    let router = RouterProcess::start(&format!(
        "[tenants.acme]\ntier = \"gold\"\n[tenants.acme.metrics]\nendpoints = [\"{}\"]\n\
         [tenants.acme.logs]\nendpoints = [\"{}\"]\n\
         [tenants.deadco.metrics]\nendpoints = [\"http://{dead}\"]\n\
         [tenants.paused]\nstatus = \"suspended\"\n[tenants.paused.metrics]\nendpoints = [\"{}\"]\n\
         [tiers.gold.quotas]\nrequests_per_second = 500\nmax_concurrent_requests = 20\n",
        acme.url(),
        acme.url(),
        paused.url()
    ));
    // Traffic for acme, so its last minute has figures.
    for _ in 0..20 {
        assert_eq!(served_by(&router.base("unified"), "acme").await, Ok("acme".into()));
    }

    let seen = browse(&router, "three-tenants.png", "dead", true).await;
    println!("page: {seen}");
    assert_eq!(seen["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(seen["tenant-count"], "3");
    assert_eq!(seen["suspended-count"], "1");
    assert_eq!(seen["down-count"], "1", "deadco's only endpoint is down");
    assert_eq!(seen["endpoint-count"], "3/4", "acme's two, paused's one up; deadco's down");
    assert_eq!(seen["page-info"], "1–3 of 3");
    let rows: Vec<&str> = seen["rows"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(rows, ["acme", "acme", "deadco", "paused"], "one row per signal, by id");
    let cells = &seen["cells"];
    assert_eq!(cells[0][0], "acme");
    assert_eq!(cells[0][1], "active");
    assert_eq!(cells[0][2], "gold", "the tier");
    assert_eq!(cells[0][8], "0/20 in flight, 500 req/s", "the tier's quota");
    assert_eq!(cells[2][1], "active");
    assert_eq!(cells[2][4], "0/1", "deadco's endpoints");
    assert_eq!(cells[3][1], "suspended");

    assert_eq!(seen["search_rows"], serde_json::json!(["deadco"]));
    assert_eq!(seen["search_page_info"], "1–1 of 1 (3 in all)");
    assert_eq!(seen["view_title"], "Tenant deadco");
    let endpoint = &seen["view_endpoints"][0];
    assert_eq!(endpoint["endpoint"], format!("http://{dead}"));
    assert_eq!(endpoint["health"], "down");
    let error = endpoint["last_error"].as_str().unwrap();
    assert!(error.contains("onnect") || error.contains("refused"), "the probe's error is shown: {error:?}");
    assert_eq!(seen["view_migration"], "no migration");
    assert_eq!(seen["color_scheme"], "light dark", "dark and light by the browser's preference");

    // The last minute of acme's metrics, once sampled: 20 requests, none failed.
    let minute = Wait::new("acme's last minute to be sampled", Duration::from_secs(45))
        .every(Duration::from_millis(500))
        .until_async(|| async {
            let (_, body) = router.admin_get("/api/v1/overview?search=acme").await;
            let minute = body["tenants"][0]["signals"]["metrics"]["minute"].clone();
            (!minute.is_null()).then_some(minute)
        })
        .await;
    assert_eq!(minute["error_ratio"], 0.0, "{minute}");
    assert!(minute["requests_per_second"].as_f64().unwrap() > 0.0, "{minute}");
    let p99 = minute["p99_seconds"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 < 1.0, "{minute}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_renders_and_searches_ten_thousand_tenants() {
    let upstream = Upstream::start("shared-vm").await;
    let tenants: String = (0..10_000)
        .map(|i| format!("[tenants.tenant-{i:05}.metrics]\nendpoints = [\"{}\"]\n", upstream.url()))
        .collect();
    let router = RouterProcess::start(&tenants);
    let seen = browse(&router, "ten-thousand-tenants.png", "tenant-09999", false).await;
    println!(
        "10,000 tenants: first render {:.0} ms after navigation, search answered in {:.0} ms",
        seen["first_render_ms"].as_f64().unwrap(),
        seen["search_ms"].as_f64().unwrap()
    );
    assert_eq!(seen["tenant-count"], "10000");
    assert_eq!(seen["page-info"], "1–50 of 10000", "one page of 50 rows");
    assert_eq!(seen["rows"].as_array().unwrap().len(), 50);
    assert_eq!(seen["rows"][0], "tenant-00000");
    assert_eq!(seen["search_rows"], serde_json::json!(["tenant-09999"]));
    // Generous bounds: this is a check that it works at scale, not a benchmark.
    assert!(seen["first_render_ms"].as_f64().unwrap() < 10_000.0, "{seen}");
    assert!(seen["search_ms"].as_f64().unwrap() < 5_000.0, "{seen}");
}

/// With an admin token, the page and its JSON need it like every admin
/// endpoint; a browser is asked for it (Basic, the token as password).
#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_its_endpoints_need_the_admin_token() {
    let upstream = Upstream::start("vm").await;
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("admin.token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let router = RouterProcess::builder()
        .admin_extra(format!("token_file = \"{}\"", token_file.display()))
        .tenants(format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", upstream.url()))
        .start();
    let base = format!("http://{}", router.admin);
    let page = client().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 401);
    let challenge = page.headers().get("www-authenticate").unwrap().to_str().unwrap();
    assert!(challenge.starts_with("Basic realm=\"mirador-router admin\""), "{challenge}");
    for path in ["/api/v1/status", "/api/v1/overview"] {
        let refused = client().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        assert!(refused.headers().get("www-authenticate").is_none(), "only the page asks a browser");
        let wrong = client().get(format!("{base}{path}")).basic_auth("admin", Some("wrong")).send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        let bearer = client().get(format!("{base}{path}")).bearer_auth("s3cret-token").send().await.unwrap();
        assert_eq!(bearer.status(), 200, "{path}");
    }
    let page = client().get(format!("{base}/")).basic_auth("anyone", Some("s3cret-token")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers().get("content-security-policy").unwrap().to_str().unwrap().to_string();
    assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>mirador-router</title>"));
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing loaded from elsewhere");
    let status = client().get(format!("{base}/api/v1/status")).bearer_auth("s3cret-token").send().await.unwrap();
    let status: Value = serde_json::from_slice(&status.bytes().await.unwrap()).unwrap();
    assert_eq!(status["tenants"]["total"], 1, "{status}");
}
