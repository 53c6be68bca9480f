//! Write fan-out (`write_policy`) on two real VictoriaMetrics, VictoriaMetrics'
//! own HA recipe: with `all` both instances hold the same samples after a
//! vmagent run; with one instance killed, `all` and `quorum` (of 2) answer
//! 503 and `one` answers 2xx; no in-flight slot leaks, and the writes the
//! dead instance missed reach it once it is back.

mod common;

use common::victoria::{force_flush, spawn, start_vmagent, wait_healthy};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

fn vm(dir: &std::path::Path, name: &str, addr: SocketAddr) -> common::victoria::Process {
    spawn(
        "victoria-metrics",
        &[
            format!("-httpListenAddr={addr}"),
            format!("-storageDataPath={}", dir.join(name).display()),
            "-retentionPeriod=1d".into(),
            "-search.latencyOffset=0s".into(),
            "-loggerLevel=ERROR".into(),
        ],
    )
}

/// The (series, timestamp) pairs an instance holds of `name`.
async fn held(vm: SocketAddr, name: &str) -> BTreeSet<(String, i64)> {
    force_flush(vm).await;
    let text =
        client().get(format!("http://{vm}/api/v1/export?match[]={name}")).send().await.unwrap().text().await.unwrap();
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let series: Value = serde_json::from_str(line).unwrap();
        for ts in series["timestamps"].as_array().unwrap() {
            out.insert((series["metric"].to_string(), ts.as_i64().unwrap()));
        }
    }
    out
}

async fn write(router: &RouterProcess, body: &str) -> (u16, String) {
    let url = format!("{}/api/v1/import/prometheus", router.base("unified"));
    let r = client().post(url).header("X-Tenant-ID", "ha").body(body.to_string()).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn tenant(a: SocketAddr, b: SocketAddr, policy: &str) -> Value {
    json!({"id": "ha", "quotas": {"max_concurrent_requests": 4}, "metrics": {"endpoints": [format!("http://{a}"), format!("http://{b}")], "write_policy": policy}})
}

#[tokio::test(flavor = "multi_thread")]
async fn all_quorum_and_one_answer_by_policy_and_a_returning_instance_gets_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (free_addr(), free_addr());
    let _vm_a = vm(dir.path(), "a", a);
    let vm_b = vm(dir.path(), "b", b);
    wait_healthy(a).await;
    wait_healthy(b).await;
    let router = RouterProcess::start(&format!(
        "[health_check]\ninterval = \"250ms\"\n[tenants.ha]\n[tenants.ha.quotas]\nmax_concurrent_requests = 4\n\
         [tenants.ha.metrics]\nendpoints = [\"http://{a}\", \"http://{b}\"]\nwrite_policy = \"all\"\n"
    ));

    // all, both up: every write on both instances, through a real vmagent too.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for i in 0..20 {
        assert_eq!(write(&router, &format!("ha_direct{{n=\"{i}\"}} {i} {now}\n")).await.0, 204);
    }
    let url = format!("{}/api/v1/write", router.base("unified"));
    let (_agent, agent) =
        start_vmagent(&dir.path().join("buffer"), &url, &["-remoteWrite.headers=X-Tenant-ID:ha"]).await;
    let batch: String = (0..200).map(|i| format!("ha_agent{{n=\"{}\"}} {i} {}\n", i % 10, now - 1000 + i)).collect();
    let r = client().post(format!("http://{agent}/api/v1/import/prometheus")).body(batch).send().await.unwrap();
    assert_eq!(r.status(), 204);
    Wait::new("vmagent's samples on both instances", Duration::from_secs(30))
        .every(Duration::from_millis(500))
        .until_async(|| async {
            let (on_a, on_b) = (held(a, "ha_agent").await, held(b, "ha_agent").await);
            if on_a.len() == 200 && on_a == on_b {
                Ok(())
            } else {
                Err(format!("{} on A, {} on B", on_a.len(), on_b.len()))
            }
        })
        .await;
    Wait::new("the direct writes on both instances", Duration::from_secs(30))
        .every(Duration::from_millis(500))
        .until_async(|| async {
            let (on_a, on_b) = (held(a, "ha_direct").await, held(b, "ha_direct").await);
            (on_a.len() == 20 && on_a == on_b).then_some(()).ok_or(format!("{} on A, {} on B", on_a.len(), on_b.len()))
        })
        .await;

    // B dies: all and quorum of 2 answer 503, one answers 204.
    drop(vm_b);
    for i in 0..10 {
        let (status, body) = write(&router, &format!("ha_missed{{n=\"{i}\"}} {i} {now}\n")).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("write_policy all: 1 of 2 endpoints took the write, 2 needed"), "{body}");
    }
    let (status, answer) =
        router.admin("PUT", "/api/v1/tenants/ha?force=true", Some(&tenant(a, b, "quorum").to_string())).await;
    assert_eq!(status, 200, "{answer}");
    let (status, body) = write(&router, &format!("ha_missed{{n=\"quorum\"}} 1 {now}\n")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("write_policy quorum: 1 of 2 endpoints took the write, 2 needed"), "{body}");
    // The copies B did not take wait in its queue (kept across the policy change).
    let (_, state) = router.admin_get("/api/v1/tenants/ha/migration").await;
    let to_b = &state["fanout"]["metrics"]["endpoints"][1];
    assert_eq!(to_b["target"], json!([format!("http://{b}")]), "{state}");
    assert_eq!(to_b["queued"], 11, "the missed writes wait for B: {state}");
    let (status, answer) =
        router.admin("PUT", "/api/v1/tenants/ha?force=true", Some(&tenant(a, b, "one").to_string())).await;
    assert_eq!(status, 200, "{answer}");
    Wait::new("B marked down", Duration::from_secs(10))
        .until_async(|| async {
            let (_, health) = router.admin_get("/api/v1/tenants/ha/health").await;
            health["signals"]["metrics"]["endpoints"][1]["healthy"] == false
        })
        .await;
    assert_eq!(write(&router, &format!("ha_one 1 {now}\n")).await.0, 204, "one: A alone takes it");

    // No slot leaked: the tenant's four in-flight slots are all free.
    let (_, overview) = router.admin_get("/api/v1/overview?search=ha").await;
    assert_eq!(overview["tenants"][0]["quota"]["in_flight"], 0, "{overview}");
    for _ in 0..8 {
        assert_eq!(write(&router, &format!("ha_one 2 {now}\n")).await.0, 204);
    }

    // B comes back on its address and data: the 11 writes it missed under
    // all/quorum reach it through its retry queue (which drains though no
    // table holds it since the change to `one`).
    let _vm_b = vm(dir.path(), "b", b);
    wait_healthy(b).await;
    Wait::new("the missed writes on B", Duration::from_secs(30))
        .every(Duration::from_millis(500))
        .until_async(|| async {
            let missed = held(b, "ha_missed").await;
            (missed.len() == 11).then_some(()).ok_or(format!("{} of 11 on B", missed.len()))
        })
        .await;
    assert_eq!(held(a, "ha_missed").await, held(b, "ha_missed").await, "A took every one of them too");
}
