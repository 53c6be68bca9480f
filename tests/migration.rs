//! Migrations between deployments, against the real router: ingest copies
//! in the target's form through a bounded queue that survives the target
//! going away for 30 s; shadow reads compared against two real
//! VictoriaMetrics; every phase walked under a real vmagent with vmctl
//! copying the history, nothing lost and no push failed.

mod common;

use common::remote_write::{self, Series};
use common::victoria::{force_flush, start_victoria_metrics, start_vmagent};
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

async fn migration(router: &RouterProcess, tenant: &str) -> Value {
    let (status, body) = router.admin_get(&format!("/api/v1/tenants/{tenant}/migration")).await;
    assert_eq!(status, 200, "{body}");
    body["migrations"].clone()
}

async fn write(router: &RouterProcess, tenant: &str, body: String) -> (u16, Duration) {
    let started = Instant::now();
    let url = format!("{}/api/v1/import/prometheus", router.base("unified"));
    let answer = client().post(url).header("X-Tenant-ID", tenant).body(body).send().await.unwrap();
    (answer.status().as_u16(), started.elapsed())
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrored_writes_arrive_as_sent_and_a_queue_outlives_a_30s_outage_of_the_target() {
    let from = Upstream::start("from").await;
    let to = Upstream::start("to").await;
    let to_addr = to.addr;
    to.keep_bodies();
    let router = RouterProcess::start(&format!(
        "[health_check]\ninterval = \"250ms\"\n\
         [tenants.acme.metrics]\nendpoints = [\"{}\"]\n\
         [tenants.acme.metrics.migration]\nto = {{ endpoints = [\"{}\"] }}\nphase = \"mirror\"\n\
         mirror_queue = 50\nmirror_max_body = 4096\n",
        from.url(),
        to.url()
    ));

    // Writes: answered by `from`, copied to `to` as sent (copies that meet
    // at the target's lane travel joined, so what is compared is lines).
    let bodies: Vec<String> = (0..20).map(|i| format!("mirrored{{n=\"{i}\"}} {i}\n")).collect();
    for body in &bodies {
        assert_eq!(write(&router, "acme", body.clone()).await.0, 200);
    }
    Wait::new("20 copies at the target", Duration::from_secs(10)).until(|| lines(&to.seen()).len() >= 20).await;
    let copies = to.seen();
    assert_eq!(
        lines(&copies),
        bodies.iter().map(|b| b.trim_end().to_string()).collect::<Vec<_>>(),
        "each line once, in order"
    );
    for copy in &copies {
        assert_eq!((copy.method.as_str(), copy.path_and_query.as_str()), ("POST", "/api/v1/import/prometheus"));
        assert_eq!(copy.headers["user-agent"], "mirador-router-mirror");
        assert!(copy.headers.get("x-tenant-id").is_none() && copy.headers.get("authorization").is_none());
    }
    assert_eq!(from.seen().len(), 20, "every write answered by from");

    // Not copied: reads, writes `from` refused, bodies over mirror_max_body (counted).
    let read = client()
        .get(format!("{}/api/v1/query?query=up", router.base("unified")))
        .header("X-Tenant-ID", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let refused = client()
        .post(format!("{}/api/v1/import/prometheus?status=400", router.base("unified")))
        .header("X-Tenant-ID", "acme")
        .body("refused 1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(write(&router, "acme", "x".repeat(5000)).await.0, 200, "too large to copy, still served");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lines(&to.seen()).len(), 20, "a read, a refused write or an oversized body was copied");
    let status = migration(&router, "acme").await;
    assert_eq!(status["metrics"]["phase"], "mirror");
    assert_eq!(status["metrics"]["mirror"]["ok"], 20, "{status}");
    assert_eq!(status["metrics"]["mirror"]["dropped_too_large"], 1, "{status}");

    // The target goes away for 30 s: clients see only from's answers, the
    // queue fills to its bound, the rest is dropped and counted.
    let mut before = Vec::new();
    for i in 0..100 {
        before.push(write(&router, "acme", format!("before{{n=\"{i}\"}} 1\n")).await.1);
    }
    // Wait for the last of those copies before the target goes.
    Wait::new("the copies before the outage", Duration::from_secs(10)).until(|| lines(&to.seen()).len() >= 120).await;
    let outage = Instant::now();
    to.kill();
    drop(to);
    let mut during = Vec::new();
    let mut queued_bodies = Vec::new();
    for i in 0..200 {
        let body = format!("outage{{n=\"{i}\"}} 1\n");
        let (status, took) = write(&router, "acme", body.clone()).await;
        assert_eq!(status, 200, "a write failed while the target was down");
        during.push(took);
        queued_bodies.push(body);
    }
    let status = migration(&router, "acme").await;
    let mirror = &status["metrics"]["mirror"];
    assert_eq!(mirror["queued"], 50, "the queue holds its bound: {status}");
    assert_eq!(mirror["dropped_queue_full"], 150, "{status}");
    let (p99_before, p99_during) = (p99(before), p99(during));
    println!("client write p99: {p99_before:?} with the target up, {p99_during:?} with it down");
    assert!(p99_during < p99_before * 3 + Duration::from_millis(20), "the outage slowed the client");
    let metrics = client().get(format!("http://{}/metrics", router.admin)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            r#"mirador_router_mirror_requests_total{result="dropped_queue_full",signal="metrics",tenant="acme"} 150"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"mirador_router_mirror_queue{signal="metrics",tenant="acme"} 50"#));
    router.wait_for_log("mirror copy dropped", 150);

    // Back after 30 s: the queue drains, nothing that fit is lost.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    let oldest = migration(&router, "acme").await["metrics"]["mirror"]["oldest_seconds"].as_f64().unwrap();
    assert!(oldest >= 25.0, "the oldest copy's age is shown: {oldest}");
    let back = Upstream::serve("to-again", tokio::net::TcpListener::bind(to_addr).await.unwrap());
    back.keep_bodies();
    let status = Wait::new("the queue to drain", Duration::from_secs(30))
        .every(Duration::from_millis(200))
        .until_async(|| async {
            let status = migration(&router, "acme").await;
            (status["metrics"]["mirror"]["queued"] == 0).then_some(status)
        })
        .await;
    assert_eq!(status["metrics"]["mirror"]["ok"], 120 + 50, "{status}");
    assert_eq!(status["metrics"]["mirror"]["failed"], 0, "{status}");
    let mut delivered = lines(&back.seen());
    delivered.sort();
    let mut first_fifty: Vec<String> = queued_bodies[..50].iter().map(|b| b.trim_end().to_string()).collect();
    first_fifty.sort();
    assert_eq!(delivered, first_fifty, "exactly the copies that fit, each once");
}

/// The lines of the bodies `seen`, in the order they arrived.
fn lines(seen: &[common::upstream::Seen]) -> Vec<String> {
    let text = |c: &common::upstream::Seen| String::from_utf8(c.body.clone().unwrap().to_vec()).unwrap();
    seen.iter().flat_map(|c| text(c).lines().map(str::to_string).collect::<Vec<_>>()).collect()
}

/// Copies that meet at the target's lane travel joined: clients write
/// remote write (snappy) and Prometheus text at once through the router to
/// a real VictoriaMetrics `to`; every sample arrives, in fewer requests
/// than copies, none refused. Then a joined request the target refuses
/// (one copy's protobuf is not a WriteRequest) is sent again copy by copy,
/// so only that copy fails.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_copies_join_into_fewer_requests_and_a_refused_one_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let from = Upstream::start("from").await;
    let (_to, to) = start_victoria_metrics(dir.path(), "to").await;
    let router = RouterProcess::start(&format!(
        "[tenants.acme.metrics]\nendpoints = [\"{}\"]\n\
         [tenants.acme.metrics.migration]\nto = {{ endpoints = [\"http://{to}\"] }}\nphase = \"mirror\"\n",
        from.url()
    ));
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64 - 60_000;
    let settled = |total: u64| {
        let router = &router;
        async move {
            Wait::new("every copy settled", Duration::from_secs(30))
                .every(Duration::from_millis(200))
                .until_async(|| async {
                    let m = migration(router, "acme").await["metrics"]["mirror"].clone();
                    (m["ok"].as_u64().unwrap() + m["failed"].as_u64().unwrap() == total).then_some(m)
                })
                .await
        }
    };

    // Remote write alone, all good: joined, and every joined request taken.
    let per_client = 40;
    let good_rw = burst(&router, 16, per_client, "rw", 0, 0, now_ms).await;
    assert_eq!(good_rw, 16 * per_client);
    let mirror = settled(good_rw as u64).await;
    assert_eq!(mirror["failed"], 0, "{mirror}");
    let sent = mirror["sent"].as_u64().unwrap();
    println!("{good_rw} remote-write copies in {sent} requests to the target");
    assert!(sent < good_rw as u64, "no copies were joined: {mirror}");
    assert!(!router.log().contains("joined mirror copies refused"), "{}", router.log());

    // Remote write with every 10th copy bad, and Prometheus text, at once.
    let (rw, text) = tokio::join!(
        burst(&router, 16, per_client, "rw", 10, 16 * per_client, now_ms),
        burst(&router, 16, per_client, "text", 0, 0, now_ms)
    );
    let bad = 16 * per_client / 10;
    assert_eq!((rw, text), (16 * per_client - bad, 16 * per_client));
    let mirror = settled((good_rw + rw + bad + text) as u64).await;
    assert_eq!(mirror["failed"], bad as u64, "only the bad copies failed: {mirror}");
    router.wait_for_log("joined mirror copies refused; sent one by one", 1);
    router.wait_for_log("mirror copy failed", bad);

    force_flush(to).await;
    let text = Wait::new("every sample on the target", Duration::from_secs(15))
        .until_async(|| async {
            let rw_held = samples_on(to, "joined_rw").await;
            let text_held = samples_on(to, "joined_text").await;
            (rw_held.len() == good_rw + rw && text_held.len() == text).then_some(text_held)
        })
        .await;
    assert!(text.iter().all(|(_, ts)| *ts == now_ms), "timestamps as sent");
}

/// `clients` clients at once, each writing `per_client` requests of `kind`
/// (`rw`: remote write of one series `joined_rw`, every `bad_every`th one
/// not a WriteRequest; `text`: one line of `joined_text`), series numbered
/// from `first`. Every write must be answered 200. The good writes made.
async fn burst(
    router: &RouterProcess,
    clients: usize,
    per_client: usize,
    kind: &'static str,
    bad_every: usize,
    first: usize,
    now_ms: i64,
) -> usize {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let base = router.base("unified");
        tasks.push(tokio::spawn(async move {
            let mut good = 0;
            for i in 0..per_client {
                let n = (first + c * per_client + i).to_string();
                let bad = bad_every > 0 && i % bad_every == bad_every - 1;
                let request = if kind == "rw" {
                    let body = if bad {
                        // A snappy block whose protobuf is not a WriteRequest.
                        snap::raw::Encoder::new().compress_vec(b"\x0a\xff\xff\xff").unwrap()
                    } else {
                        let labels = [("n", n.as_str())];
                        remote_write::body(&[Series {
                            name: "joined_rw",
                            labels: &labels,
                            value: 1.0,
                            timestamp_ms: now_ms,
                        }])
                    };
                    client()
                        .post(format!("{base}/api/v1/write"))
                        .header("Content-Encoding", "snappy")
                        .header("Content-Type", "application/x-protobuf")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(body)
                } else {
                    client()
                        .post(format!("{base}/api/v1/import/prometheus"))
                        .body(format!("joined_text{{n=\"{n}\"}} 1 {now_ms}"))
                };
                let answer = request
                    .header("X-Tenant-ID", "acme")
                    .header("X-Request-Id", format!("r{kind}{n}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200, "from answers every write");
                good += usize::from(!bad);
            }
            good
        }));
    }
    let mut good = 0;
    for task in tasks {
        good += task.await.unwrap();
    }
    good
}

/// Samples of `names` at 10 fixed minutes ending at `end` (seconds), in the
/// Prometheus text format with millisecond timestamps.
fn history(names: &[&str], end: u64) -> String {
    let mut text = String::new();
    for name in names {
        for i in 0..10u64 {
            text.push_str(&format!("{name}{{job=\"shadow\"}} {} {}\n", i * 3 + 1, (end - 540 + i * 60) * 1000));
        }
    }
    text
}

async fn import(vm: std::net::SocketAddr, text: String) {
    let r = client().post(format!("http://{vm}/api/v1/import/prometheus")).body(text).send().await.unwrap();
    assert_eq!(r.status(), 204);
    force_flush(vm).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_reads_count_a_missing_series_and_match_once_the_target_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, a) = start_victoria_metrics(dir.path(), "a").await;
    let (_b, b) = start_victoria_metrics(dir.path(), "b").await;
    let end = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 60 * 60;
    import(a, history(&["shadow_a", "shadow_b", "shadow_c"], end)).await;
    import(b, history(&["shadow_a", "shadow_b"], end)).await;
    let router = RouterProcess::start(&format!(
        "[tenants.acme.metrics]\nendpoints = [\"http://{a}\"]\n\
         [tenants.acme.metrics.migration]\nto = {{ endpoints = [\"http://{b}\"] }}\nphase = \"shadow\"\nshadow_sample = 1.0\n"
    ));
    let base = router.base("unified");
    let range = format!("query={{__name__=~\"shadow_.*\"}}&start={}&end={end}&step=60", end - 600);

    // B lacks shadow_c: the read differs, and the example says how.
    let r = client()
        .post(format!("{base}/api/v1/query_range"))
        .header("X-Tenant-ID", "acme")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(range.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("shadow_c"), "the client gets A's answer");
    let shadow = Wait::new("the mismatch to be counted", Duration::from_secs(10))
        .until_async(|| async {
            let shadow = migration(&router, "acme").await["metrics"]["shadow"].clone();
            (shadow["results"]["mismatched"] == 1).then_some(shadow)
        })
        .await;
    let example = &shadow["last_mismatches"][0];
    assert_eq!(example["path"].as_str().unwrap().split('?').next(), Some("/api/v1/query_range"));
    assert!(example["serving"].as_str().unwrap().contains("shadow_c"), "{example}");
    assert!(!example["shadow"].as_str().unwrap().contains("shadow_c"), "{example}");
    let metrics = client().get(format!("http://{}/metrics", router.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics
        .contains(r#"mirador_router_shadow_comparisons_total{result="mismatch",signal="metrics",tenant="acme"} 1"#));

    // B complete: 200 Grafana-style reads, in any encoding, all match.
    import(b, history(&["shadow_c"], end)).await;
    let queries = [
        ("POST", "/api/v1/query_range".to_string(), Some(range.clone())),
        ("GET", format!("/api/v1/query?query=sum(shadow_a)+by+(job)&time={end}"), None),
        ("GET", format!("/api/v1/query?query=rate(shadow_b[5m])&time={end}"), None),
        ("GET", format!("/api/v1/series?match[]={{job=\"shadow\"}}&start={}&end={end}", end - 600), None),
        ("GET", format!("/api/v1/labels?start={}&end={end}", end - 600), None),
        ("GET", format!("/api/v1/label/__name__/values?start={}&end={end}", end - 600), None),
        ("POST", "/api/v1/query".to_string(), Some(format!("query=max_over_time(shadow_c[10m])&time={end}"))),
        ("GET", format!("/api/v1/query_range?query=shadow_a*2&start={}&end={end}&step=120", end - 600), None),
    ];
    for i in 0..200 {
        let (method, path, body) = &queries[i % queries.len()];
        let mut request = match *method {
            "POST" => client()
                .post(format!("{base}{path}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone().unwrap()),
            _ => client().get(format!("{base}{path}")),
        };
        request = request.header("X-Tenant-ID", "acme");
        if i % 3 == 0 {
            request = request.header("accept-encoding", "gzip");
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 200, "{method} {path}");
    }
    let results = Wait::new("200 more comparisons", Duration::from_secs(20))
        .until_async(|| async {
            let shadow = migration(&router, "acme").await["metrics"]["shadow"].clone();
            let r = &shadow["results"];
            let total = ["matched", "mismatched", "errors"].iter().map(|k| r[k].as_u64().unwrap()).sum::<u64>();
            (total >= 201).then_some(shadow)
        })
        .await;
    assert_eq!(results["results"], json!({"matched": 200, "mismatched": 1, "errors": 0}), "{results}");
}

/// Every (series, timestamp) an instance holds of `name`.
async fn samples_on(vm: std::net::SocketAddr, name: &str) -> HashSet<(String, i64)> {
    let url = format!("http://{vm}/api/v1/export?match[]={name}");
    let text = client().get(url).send().await.unwrap().text().await.unwrap();
    let mut held = HashSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let series: Value = serde_json::from_str(line).unwrap();
        let labels = series["metric"].to_string();
        for ts in series["timestamps"].as_array().unwrap() {
            held.insert((labels.clone(), ts.as_i64().unwrap()));
        }
    }
    held
}

/// vmagent's remote-write requests that were not answered 2xx, and its retries.
async fn vmagent_failures(vmagent: std::net::SocketAddr) -> (f64, String) {
    let text = client().get(format!("http://{vmagent}/metrics")).send().await.unwrap().text().await.unwrap();
    let mut failed = 0.0;
    let mut shown = String::new();
    for line in text.lines().filter(|l| l.starts_with("vmagent_remotewrite_")) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let value: f64 = value.parse().unwrap_or(0.0);
        let non_2xx = series.starts_with("vmagent_remotewrite_requests_total") && !series.contains("status_code=\"2");
        let retried = series.starts_with("vmagent_remotewrite_retries_count_total")
            || series.starts_with("vmagent_remotewrite_packets_dropped_total");
        if (non_2xx || retried) && value > 0.0 {
            failed += value;
            shown.push_str(line);
            shown.push('\n');
        }
    }
    (failed, shown)
}

async fn put_tenant(router: &RouterProcess, body: Value) {
    let (status, answer) = router.admin("PUT", "/api/v1/tenants/acme", Some(&body.to_string())).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_walks_every_phase_under_vmagent_with_vmctl_copying_its_history() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let (_a, a) = start_victoria_metrics(dir.path(), "a").await;
    let (_b, b) = start_victoria_metrics(dir.path(), "b").await;
    let router = RouterProcess::start(&format!(
        "[health_check]\ninterval = \"500ms\"\n[tenants.acme.metrics]\nendpoints = [\"http://{a}\"]\n"
    ));
    let url = format!("{}/api/v1/write", router.base("unified"));
    let (_vmagent, vmagent) =
        start_vmagent(&dir.path().join("buffer"), &url, &["-remoteWrite.headers=X-Tenant-ID:acme"]).await;

    // A writer into vmagent: 2 series, a sample each every 50 ms, stamped
    // 15 minutes back (1.79's native export skips samples stamped now).
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<i64>>> = Arc::default();
    let writer = {
        let (stop, sent) = (stop.clone(), sent.clone());
        tokio::spawn(async move {
            let base = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
                - 15 * 60 * 1000;
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let ts = base + i * 50;
                let body = format!("mig_e2e{{writer=\"one\"}} {i} {ts}\nmig_e2e{{writer=\"two\"}} {} {ts}\n", i * 2);
                let r = client().post(format!("http://{vmagent}/api/v1/import/prometheus")).body(body).send().await;
                assert_eq!(r.unwrap().status(), 204);
                sent.lock().unwrap().push(ts);
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let last_sent = || *sent.lock().unwrap().last().unwrap_or(&0);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // mirror: A answers, B gets copies; history up to then goes by vmctl.
    let to = json!({ "endpoints": [format!("http://{b}")] });
    put_tenant(&router, json!({"id": "acme", "metrics": {"endpoints": [format!("http://{a}")], "migration": {"to": to, "phase": "mirror"}}})).await;
    let mirror_started = last_sent();
    tokio::time::sleep(Duration::from_secs(2)).await;
    force_flush(a).await;
    let vmctl = format!(
        "vmctl vm-native --vm-native-src-addr=http://{a} --vm-native-dst-addr=http://{b} \
         '--vm-native-filter-match={{__name__=\"mig_e2e\"}}' --vm-native-filter-time-start=2000-01-01T00:00:00Z \
         --vm-native-filter-time-end={}",
        mirror_started / 1000 + 1
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &format!("echo y | {vmctl}"), "/dev/null"])
        .output()
        .expect("vmctl runs");
    assert!(output.status.success(), "vmctl: {}", String::from_utf8_lossy(&output.stdout));

    // shadow: every read compared; B holds everything older than a few seconds.
    put_tenant(&router, json!({"id": "acme", "metrics": {"endpoints": [format!("http://{a}")], "migration": {"to": to, "phase": "shadow", "shadow_sample": 1.0}}})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    force_flush(a).await;
    force_flush(b).await;
    let start = sent.lock().unwrap()[0] / 1000;
    let end = last_sent() / 1000 - 3;
    for _ in 0..20 {
        let query = format!("/api/v1/query_range?query=mig_e2e&start={start}&end={end}&step=1");
        let r = client().get(format!("{}{query}", router.base("unified"))).header("X-Tenant-ID", "acme").send().await;
        assert_eq!(r.unwrap().status(), 200);
    }
    let shadow = Wait::new("20 comparisons", Duration::from_secs(20))
        .until_async(|| async {
            let shadow = migration(&router, "acme").await["metrics"]["shadow"].clone();
            let r = &shadow["results"];
            (r["matched"].as_u64().unwrap() + r["mismatched"].as_u64().unwrap() + r["errors"].as_u64().unwrap() >= 20)
                .then_some(shadow)
        })
        .await;
    assert_eq!(shadow["results"], json!({"matched": 20, "mismatched": 0, "errors": 0}), "{shadow}");

    // switched: B serves, writes go back to A; then done; then B alone.
    put_tenant(&router, json!({"id": "acme", "metrics": {"endpoints": [format!("http://{a}")], "migration": {"to": to, "phase": "switched"}}})).await;
    let status = migration(&router, "acme").await;
    assert_eq!(status["metrics"]["mirror"]["target"], json!([format!("http://{a}")]), "{status}");
    let (_, health) = router.admin_get("/api/v1/tenants/acme/health").await;
    assert_eq!(health["signals"]["metrics"]["endpoints"][0]["endpoint"], format!("http://{b}"), "B serves");
    tokio::time::sleep(Duration::from_secs(2)).await;
    put_tenant(&router, json!({"id": "acme", "metrics": {"endpoints": [format!("http://{a}")], "migration": {"to": to, "phase": "done"}}})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    put_tenant(&router, json!({"id": "acme", "metrics": {"endpoints": [format!("http://{b}")]}})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let sent: HashSet<i64> = sent.lock().unwrap().iter().copied().collect();
    let expected: HashSet<(String, i64)> = sent
        .iter()
        .flat_map(|ts| ["one", "two"].map(|w| (json!({"__name__": "mig_e2e", "writer": w}).to_string(), *ts)))
        .collect();
    let on_b = Wait::new("every sample on B", Duration::from_secs(30))
        .every(Duration::from_millis(500))
        .until_async(|| async {
            force_flush(b).await;
            let held = samples_on(b, "mig_e2e").await;
            if held == expected {
                Ok(held)
            } else {
                Err(format!(
                    "B holds {} of {} samples, {} not sent",
                    expected.intersection(&held).count(),
                    expected.len(),
                    held.difference(&expected).count()
                ))
            }
        })
        .await;
    force_flush(a).await;
    let on_a = samples_on(a, "mig_e2e").await;
    let (failures, shown) = vmagent_failures(vmagent).await;
    println!(
        "{} samples sent, {} on B, {} on A (A is forgotten at `done`); vmagent pushes failed or retried: {failures}",
        expected.len(),
        on_b.len(),
        on_a.len()
    );
    assert!(on_a.is_subset(&expected) && on_a.len() < expected.len() && on_a.len() > expected.len() / 2);
    assert_eq!(failures, 0.0, "vmagent saw failed pushes:\n{shown}");
    // Reads through the router come from B.
    let r = client()
        .get(format!("{}/api/v1/query?query=count_over_time(mig_e2e[1h])&time={}", router.base("unified"), end + 10))
        .header("X-Tenant-ID", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
