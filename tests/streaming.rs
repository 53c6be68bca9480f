//! Bodies stream through the router both ways without being held whole,
//! encoded bodies pass untouched, and connections are kept alive.

mod common;

use common::*;
use std::io::{Read, Write};

/// Allowed growth of the router's peak RSS while 100 MB pass through it.
const MAX_GROWTH: u64 = 40 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mb_chunked_upload_streams_through_without_growing_memory() {
    let upstream = Upstream::start("sink").await;
    let router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", upstream.url()));
    let before = router.peak_rss();

    let HundredMib { chunk, chunks, hash } = hundred_mib();
    let body = futures_util::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let response = client()
        .post(format!("{}/api/v1/import/native", router.base("unified")))
        .header("X-Tenant-ID", "acme")
        .header("Content-Encoding", "zstd")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let seen = &upstream.seen()[0];
    assert_eq!(seen.body_len, HUNDRED_MB);
    assert_eq!(seen.body_hash, hash, "the body arrives byte for byte");
    assert!(seen.body_complete);
    assert_eq!(seen.headers["content-encoding"], "zstd", "encoded bodies pass untouched");
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    let growth = router.peak_rss().saturating_sub(before);
    eprintln!("router peak RSS {} KiB before, grew by {} KiB", before >> 10, growth >> 10);
    assert!(growth < MAX_GROWTH, "router peak RSS grew by {} MiB", growth >> 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mb_download_streams_through_without_growing_memory() {
    let upstream = Upstream::start("source").await;
    let router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", upstream.url()));
    let before = router.peak_rss();
    let mut response = client()
        .get(format!("{}/api/v1/export?download_bytes={HUNDRED_MB}", router.base("unified")))
        .header("X-Tenant-ID", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert!(chunk.iter().all(|&b| b == b'x'));
        received += chunk.len() as u64;
    }
    assert_eq!(received, HUNDRED_MB);
    let growth = router.peak_rss().saturating_sub(before);
    eprintln!("router peak RSS {} KiB before, grew by {} KiB", before >> 10, growth >> 10);
    assert!(growth < MAX_GROWTH, "router peak RSS grew by {} MiB", growth >> 20);
}

/// Ten requests on one client connection, answered on it in order, and
/// upstream connections reused across requests.
#[tokio::test(flavor = "multi_thread")]
async fn connections_are_kept_alive_on_both_sides() {
    let upstream = Upstream::start("keepalive").await;
    let router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", upstream.url()));
    let addr = router.unified;
    let answers = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let request = "GET /api/v1/query HTTP/1.1\r\nHost: router\r\nX-Tenant-ID: acme\r\n\r\n";
        let mut answers = Vec::new();
        for _ in 0..10 {
            conn.write_all(request.as_bytes()).unwrap();
            answers.push(read_response(&mut conn));
        }
        answers
    })
    .await
    .unwrap();
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("keepalive"), "{answer}");
    }
    let peers: std::collections::HashSet<_> = upstream.seen().iter().map(|s| s.peer).collect();
    assert_eq!(upstream.seen().len(), 10);
    // Pingora returns a connection to its pool just after the answer, so a
    // request right behind it can race it and open a second one.
    assert!(peers.len() <= 3, "{} upstream connections for 10 requests: not pooled", peers.len());
}

/// Reads one response with a Content-Length body from a kept-alive connection.
fn read_response(conn: &mut std::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf.clone()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("content-length");
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}
