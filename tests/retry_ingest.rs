//! Writes under endpoint death: by default an ingest request that failed
//! once it went out is not replayed (it may have been stored); with the
//! deployment's `retry_ingest = true` it is, while its body is in Pingora's
//! retry buffer.

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn config(a: &Upstream, b: &Upstream, retry_ingest: bool) -> String {
    format!(
        "[tenants.acme.metrics]\nendpoints = [\"{}\", \"{}\"]\nretry_ingest = {retry_ingest}\n\
         health_check = {{ interval = \"1s\", unhealthy_threshold = 2, passive_failures = 0 }}\n",
        a.url(),
        b.url()
    )
}

/// POSTs `n` remote-write-sized bodies; the statuses.
async fn write(router: &RouterProcess, n: usize) -> Vec<u16> {
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..n {
        let response = http
            .post(format!("{}/api/v1/write", router.base("unified")))
            .header("X-Tenant-ID", "acme")
            .body(vec![b'w'; 4096])
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_reset_mid_request_is_replayed_only_with_retry_ingest() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.set_reset_all(true);

    let router = RouterProcess::start(&config(&a, &b, false));
    let statuses = write(&router, 20).await;
    let failed = statuses.iter().filter(|s| **s == 502).count();
    assert_eq!(failed + statuses.iter().filter(|s| **s == 200).count(), 20, "{statuses:?}");
    assert!(failed >= 5, "without retry_ingest the writes that met the dying endpoint fail: {statuses:?}");
    drop(router);

    let before = (a.seen().len(), b.seen().len());
    let router = RouterProcess::start(&config(&a, &b, true));
    let statuses = write(&router, 20).await;
    assert_eq!(statuses, [200; 20], "with retry_ingest every write is answered");
    let (at_a, at_b) = (a.seen().len() - before.0, b.seen().len() - before.1);
    assert!(at_a >= 5, "writes met the dying endpoint first: {at_a}");
    assert_eq!(at_b, 20, "and each went on to the other endpoint");
    assert!(b.seen().iter().all(|s| s.body_len == 4096 && s.body_complete), "every replay carried the whole body");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_an_endpoint_under_a_write_loop_fails_no_write_with_retry_ingest() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let router = Arc::new(RouterProcess::start(&config(&a, &b, true)));
    let failed = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (router, failed) = (router.clone(), failed.clone());
            tokio::spawn(async move {
                for status in write(&router, 500).await {
                    if status != 200 {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    wait_until("500 writes before the kill", Duration::from_secs(30), || a.seen().len() + b.seen().len() >= 500).await;
    a.kill();
    for l in loops {
        l.await.unwrap();
    }
    let failed = failed.load(Ordering::SeqCst);
    eprintln!(
        "2,000 writes in 4 loops, endpoint a killed after 500: {failed} failed; a saw {}, b {}",
        a.seen().len(),
        b.seen().len()
    );
    assert_eq!(failed, 0);
    assert!(b.seen().len() > 1000, "b took over");
}
