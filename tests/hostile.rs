//! Hostile clients against the real router: request heads sent a byte at a
//! time, connections left idle, more connections than a client may hold,
//! and heads with too many or too large headers — each cut off at its
//! configured bound, while a normal client goes on being served.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the router closes the connection (or `within` passes): what it
/// sent, and when it closed.
async fn until_closed(stream: &mut (impl AsyncReadExt + Unpin), within: Duration) -> Option<(Vec<u8>, Instant)> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((seen, Instant::now())),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Lays the config out with `lines` added to its `[server]` table.
fn with_server(lines: &'static str) -> impl FnOnce(&Path, &str) -> PathBuf {
    move |dir, text| {
        let path = dir.join("router.toml");
        let text = text.replacen("[server]\n", &format!("[server]\n{lines}\n"), 1);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_heads_and_idle_connections_are_closed_at_their_bounds_while_a_normal_client_is_served() {
    let up = Upstream::start("up").await;
    let router = RouterProcess::builder()
        .config_at(with_server(
            "request_header_timeout = \"1s\"\nidle_timeout = \"2s\"\nmax_connections_per_client = 5000",
        ))
        .tenants(format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()))
        .start();
    let rss_before = router.peak_rss();
    const SLOW: usize = 2000;
    let opened = Instant::now();
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            let addr = router.unified;
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut reader, mut writer) = stream.into_split();
                writer.write_all(b"GET /api/v1/query HTTP/1.1\r\nHost: x\r\n").await.unwrap();
                let started = Instant::now();
                // One header byte every 300 ms: never a whole head.
                let dripping = async {
                    for byte in b"X-Tenant-ID: acme\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa" {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        if writer.write_all(&[*byte]).await.is_err() {
                            break;
                        }
                    }
                    std::future::pending::<()>().await;
                };
                // The close as the reading side sees it, while the head drips on.
                let closed = tokio::select! {
                    closed = until_closed(&mut reader, Duration::from_secs(15)) => closed,
                    _ = dripping => None,
                };
                closed.map(|(answer, at)| (answer, at - started))
            })
        })
        .collect();
    // Meanwhile a normal client, one request after another.
    let http = client();
    let mut latencies = Vec::new();
    let served_until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < served_until {
        let sent = Instant::now();
        let response = http
            .get(format!("{}/api/v1/query", router.base("unified")))
            .header("X-Tenant-ID", "acme")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        latencies.push(sent.elapsed());
    }
    let rss_during = router.peak_rss();
    let mut closed_after = Vec::new();
    for task in slow {
        let (answer, after) = task.await.unwrap().expect("a slow head was never cut off");
        assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"), "{}", String::from_utf8_lossy(&answer));
        closed_after.push(after);
    }
    closed_after.sort();
    let (first, last) = (closed_after[0], closed_after[SLOW - 1]);
    eprintln!(
        "{SLOW} slow heads opened in {:?}, closed {first:?} to {last:?} after their first byte (bound 1 s); \
         normal client: {} requests, p99 {:?}; router peak RSS {:.1} -> {:.1} MiB",
        opened.elapsed(),
        latencies.len(),
        p99(latencies.clone()),
        rss_before as f64 / 1048576.0,
        rss_during as f64 / 1048576.0,
    );
    assert!(first >= Duration::from_millis(900), "cut off before the bound: {first:?}");
    assert!(last < Duration::from_secs(4), "cut off long after the bound: {last:?}");
    assert!(p99(latencies) < Duration::from_millis(500), "the normal client was slowed");

    // An idle keep-alive connection is closed at idle_timeout.
    let mut idle = TcpStream::connect(router.unified).await.unwrap();
    idle.write_all(b"GET /api/v1/query HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: acme\r\n\r\n").await.unwrap();
    let mut first_answer = [0u8; 12];
    idle.read_exact(&mut first_answer).await.unwrap();
    assert_eq!(&first_answer, b"HTTP/1.1 200");
    let answered = Instant::now();
    let (_, closed) = until_closed(&mut idle, Duration::from_secs(10)).await.expect("an idle connection stays open");
    let idle_for = closed - answered;
    eprintln!("idle keep-alive connection closed {idle_for:?} after its answer (bound 2 s)");
    assert!(idle_for >= Duration::from_millis(1800) && idle_for < Duration::from_secs(4), "{idle_for:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_per_client_cap_and_oversized_heads_are_refused_cleanly() {
    let up = Upstream::start("up").await;
    let router = RouterProcess::builder()
        .config_at(with_server(
            "max_connections_per_client = 10\nmax_request_headers = 20\nmax_request_header_bytes = 4096",
        ))
        .tenants(format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()))
        .start();
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(router.unified).await.unwrap();
        stream.write_all(b"GET /api/v1/query HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: acme\r\n\r\n").await.unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        held.push(stream);
    }
    let mut over = TcpStream::connect(router.unified).await.unwrap();
    let (answer, _) = until_closed(&mut over, Duration::from_secs(5)).await.expect("the 11th connection is closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many connections from this client"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let length = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap();
    assert_eq!(length.parse::<usize>().unwrap(), body.len(), "Content-Length is the body's");
    let _: serde_json::Value = serde_json::from_str(body).unwrap();
    drop(held);
    // Places are given back when connections close.
    wait_until_async("a place for a new connection", Duration::from_secs(5), || async {
        served_by(&router.base("unified"), "acme").await.is_ok()
    })
    .await;

    let http = client();
    let mut many = http.get(format!("{}/api/v1/query", router.base("unified"))).header("X-Tenant-ID", "acme");
    for i in 0..25 {
        many = many.header(format!("x-extra-{i}"), "1");
    }
    let response = many.send().await.unwrap();
    assert_eq!(response.status(), 431);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(body["error"].as_str().unwrap().contains("max_request_headers"), "{body}");
    let big = http
        .get(format!("{}/api/v1/query", router.base("unified")))
        .header("X-Tenant-ID", "acme")
        .header("x-big", "b".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 431);
    assert!(up.seen().iter().all(|s| !s.headers.contains_key("x-big") && !s.headers.contains_key("x-extra-0")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_body_after_100_continue_is_not_taken_for_a_slow_head() {
    let up = Upstream::start("up").await;
    let router = RouterProcess::builder()
        .config_at(with_server("request_header_timeout = \"1s\"\nidle_timeout = \"5s\""))
        .tenants(format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()))
        .start();
    let mut stream = TcpStream::connect(router.unified).await.unwrap();
    stream
        .write_all(
            b"POST /api/v1/import HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: acme\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 33\r\n\r\n",
        )
        .await
        .unwrap();
    // Whether or not a 100 Continue comes back, the body then trickles in
    // over three times the head's bound.
    let mut interim = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut interim)).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        stream.write_all(b"m{a=\"b\"} 1\n").await.unwrap();
    }
    let (answer, _) = until_closed(&mut stream, Duration::from_secs(10)).await.expect("answered");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("HTTP/1.1 200"), "{answer}\n{}", router.log());
    assert_eq!(up.seen().len(), 1);
    assert_eq!(up.seen()[0].body_len, 33);
}
