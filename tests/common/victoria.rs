//! Real Victoria* processes for the tests: `victoria-metrics`, `vmagent`
//! (Debian package `victoria-metrics`), killed when dropped.

use super::{client, free_addr, Wait};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(binary: &str, args: &[String]) -> Process {
    spawn_from(binary, args, "victoria-metrics")
}

/// Starts `binary` of the Debian package `package`, its output discarded.
pub fn spawn_from(binary: &str, args: &[String], package: &str) -> Process {
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary} ({e}): install the Debian package {package} (.ci/run does)"));
    Process(child)
}

/// Waits until `addr` accepts TCP connections: `what` (a server just started) listens.
pub async fn wait_accepting(what: &str, addr: SocketAddr) {
    Wait::new(format!("{what} on {addr}"), Duration::from_secs(10))
        .every(Duration::from_millis(20))
        .until(|| std::net::TcpStream::connect(addr).map(drop).map_err(|e| e.to_string()))
        .await;
}

pub async fn wait_healthy(addr: SocketAddr) {
    let http = client();
    Wait::new(format!("{addr} to become healthy"), Duration::from_secs(30))
        .every(Duration::from_millis(50))
        .until_async(|| async {
            match http.get(format!("http://{addr}/health")).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(format!("/health answered {}", r.status())),
                Err(e) => Err(format!("{e}")),
            }
        })
        .await;
}

pub async fn start_victoria_metrics(dir: &std::path::Path, name: &str) -> (Process, SocketAddr) {
    let addr = free_addr();
    let process = spawn(
        "victoria-metrics",
        &[
            format!("-httpListenAddr={addr}"),
            format!("-storageDataPath={}", dir.join(name).display()),
            "-retentionPeriod=1d".into(),
            "-search.latencyOffset=0s".into(),
            "-search.disableCache".into(),
            "-loggerLevel=ERROR".into(),
        ],
    );
    wait_healthy(addr).await;
    (process, addr)
}

/// Makes what an instance has ingested searchable now.
pub async fn force_flush(addr: SocketAddr) {
    let r = client().get(format!("http://{addr}/internal/force_flush")).send().await.unwrap();
    assert_eq!(r.status(), 200, "force_flush on {addr}");
}

/// A vmagent remote-writing to `url` with `extra` flags (the tenant's
/// header or credential, TLS settings), buffering in `buffer`: the process
/// and its address, once healthy. Data goes in by its
/// `/api/v1/import/prometheus`.
pub async fn start_vmagent(buffer: &std::path::Path, url: &str, extra: &[&str]) -> (Process, SocketAddr) {
    let addr = free_addr();
    let mut args = vec![
        format!("-httpListenAddr={addr}"),
        format!("-remoteWrite.url={url}"),
        format!("-remoteWrite.tmpDataPath={}", buffer.display()),
        "-remoteWrite.flushInterval=100ms".into(),
        "-loggerLevel=ERROR".into(),
    ];
    args.extend(extra.iter().map(|flag| flag.to_string()));
    let process = spawn("vmagent", &args);
    wait_healthy(addr).await;
    (process, addr)
}
