//! Slow clients against the real (release) router: N connections each
//! dripping a request head one byte every 2 s, held open under
//! `request_header_timeout`, while a normal client sends requests on one
//! keep-alive connection. Reports the normal client's latency without and
//! with the slow connections open, the router's peak RSS, and when the slow
//! connections were cut off (bound: `request_header_timeout` from their first
//! byte).
//!
//! Run: `cargo bench --bench slow_clients` (N = 18,000; `SLOW=<n>` to change
//! it). Under `cargo test --benches` it runs once with N = 200 and a 3 s
//! bound as a smoke test.
//! N is bounded by the machine's open-file limit: each slow connection is one
//! descriptor in the router and one here (`ulimit -n`: 20,000 on these machines).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DRIP: Duration = Duration::from_secs(2);
/// `request_header_timeout`: 30 s in a benchmark run, 3 s in the smoke test.
static HEADER_TIMEOUT_SECS: AtomicU64 = AtomicU64::new(30);

fn header_timeout() -> Duration {
    Duration::from_secs(HEADER_TIMEOUT_SECS.load(Ordering::Relaxed))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A keep-alive HTTP/1.1 upstream that answers every request head `200 OK`.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer_heads(stream));
        }
    });
    addr
}

fn answer_heads(mut stream: TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            seen.drain(..end + 4);
            if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK").is_err() {
                return;
            }
        }
    }
}

struct Router(Child);

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_router(dir: &std::path::Path, listen: SocketAddr, upstream: SocketAddr, slow: usize) -> Router {
    let config = dir.join("router.toml");
    let limit = slow + 1_000;
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"{listen}\"]\nthreads = 1\ngrace_period = \"0s\"\npid_file = \"{pid}\"\n\
             upgrade_sock = \"{sock}\"\nrequest_header_timeout = \"{timeout}s\"\nmax_connections = {limit}\n\
             max_connections_per_client = {limit}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [tenants.acme.metrics]\nendpoints = [\"http://{upstream}\"]\n",
            pid = dir.join("router.pid").display(),
            sock = dir.join("router.sock").display(),
            timeout = header_timeout().as_secs(),
            admin = free_port(),
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mirador-router"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the router");
    let started = Instant::now();
    while TcpStream::connect(listen).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "the router did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Router(child)
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024.0
}

/// `count` requests on one keep-alive connection: each one's latency.
async fn normal_client(addr: SocketAddr, count: usize) -> Vec<Duration> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut latencies = Vec::with_capacity(count);
    let mut buf = vec![0u8; 4096];
    for _ in 0..count {
        let sent = Instant::now();
        stream.write_all(b"GET /api/v1/query HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: acme\r\n\r\n").await.unwrap();
        let mut seen = Vec::new();
        // The answer ends with the upstream's 2-byte body.
        while !(seen.ends_with(b"\r\n\r\nOK") && seen.starts_with(b"HTTP/1.1 200")) {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "the router closed the normal client: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        latencies.push(sent.elapsed());
    }
    latencies
}

fn percentile(latencies: &mut [Duration], p: usize) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * p / 100).min(latencies.len() - 1)]
}

/// A slow head: the request line and one header at once, then a byte every
/// [`DRIP`]; how long after its first byte the router closed it.
async fn slow_head(addr: SocketAddr) -> Duration {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(b"GET /api/v1/query HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let first_byte = Instant::now();
    let drip = async {
        for byte in b"X-Tenant-ID: acme\r\nX-Padding: ".iter().cycle() {
            tokio::time::sleep(DRIP).await;
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await
    };
    let mut buf = [0u8; 256];
    let closed = async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return first_byte.elapsed(),
                Ok(_) => {}
            }
        }
    };
    let within = header_timeout() * 3;
    tokio::select! {
        after = tokio::time::timeout(within, closed) => after.expect("a slow head was never cut off"),
        _ = drip => unreachable!(),
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let slow: usize =
        std::env::var("SLOW").ok().and_then(|n| n.parse().ok()).unwrap_or(if bench { 18_000 } else { 200 });
    let requests = if bench { 5_000 } else { 200 };
    if !bench {
        HEADER_TIMEOUT_SECS.store(3, Ordering::Relaxed);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let router = start_router(dir.path(), listen, upstream(), slow);
    runtime.block_on(async {
        let mut alone = normal_client(listen, requests).await;
        let rss_before = peak_rss_mib(router.0.id());
        let opening = Instant::now();
        let mut tasks = Vec::with_capacity(slow);
        for batch in 0..slow.div_ceil(500) {
            for _ in 0..500.min(slow - batch * 500) {
                tasks.push(tokio::spawn(slow_head(listen)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let opened = opening.elapsed();
        // Let every connection be accepted and its first bytes read.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut with_slow = normal_client(listen, requests).await;
        let measured_at = opening.elapsed();
        let rss_during = peak_rss_mib(router.0.id());
        let mut closed = Vec::with_capacity(slow);
        for task in tasks {
            closed.push(task.await.unwrap());
        }
        closed.sort();
        let (first, last) = (closed[0], closed[slow - 1]);
        println!(
            "slow_clients: {slow} slow heads (a byte every {DRIP:?}) opened in {opened:.1?}; \
             normal client {requests} requests on one keep-alive connection"
        );
        println!("  alone:           p50 {:.2?}  p99 {:.2?}", percentile(&mut alone, 50), percentile(&mut alone, 99));
        println!(
            "  with {slow} slow: p50 {:.2?}  p99 {:.2?}  (measured {measured_at:.1?} after the first was opened)",
            percentile(&mut with_slow, 50),
            percentile(&mut with_slow, 99)
        );
        println!("  router peak RSS: {rss_before:.1} MiB before, {rss_during:.1} MiB with all open");
        println!("  slow heads closed {first:.2?} to {last:.2?} after their first byte (bound {:?})", header_timeout());
        assert!(first >= header_timeout() - Duration::from_millis(100), "cut off before the bound: {first:?}");
        assert!(last < header_timeout() * 2, "cut off long after the bound: {last:?}");
        assert!(measured_at < header_timeout(), "the normal client was measured after the slow heads were cut off");
    });
    drop(router);
}
