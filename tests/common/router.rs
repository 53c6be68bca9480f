//! The real `mirador-router` binary, started on free loopback ports with a
//! config written to a temporary directory, and killed when dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use super::wait::Wait;
use std::time::Duration;

/// A free port on 127.0.0.1 for the router to bind.
///
/// Taken below the kernel's ephemeral range (32768 and up), so that no
/// outgoing connection can grab it between this check and the router's bind;
/// a per-process counter from a random start keeps tests apart.
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(0, 10_000 + std::process::id().wrapping_mul(7919).wrapping_add(now_nanos()) % 15_000, Ordering::SeqCst, Ordering::SeqCst);
    // One pass over the 22,000 ports at most.
    for _ in 0..22_000 {
        let port = 10_000 + (NEXT.fetch_add(1, Ordering::SeqCst) - 10_000) % 22_000;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port on 127.0.0.1 in 10000..32000");
}

fn now_nanos() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}

pub struct RouterProcess {
    child: Child,
    pub unified: SocketAddr,
    pub drop_in: HashMap<&'static str, SocketAddr>,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    log_path: PathBuf,
}

impl RouterProcess {
    /// Starts the router with the unified listener, all three drop-in
    /// listeners, and `tenants` (TOML of `[tenants.*]` tables) appended.
    pub fn start(tenants: &str) -> RouterProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let unified = free_addr();
        let drop_in: HashMap<&'static str, SocketAddr> =
            ["metrics", "logs", "traces"].into_iter().map(|s| (s, free_addr())).collect();
        let admin = free_addr();
        let config_path = dir.path().join("mirador-router.toml");
        std::fs::write(&config_path, Self::config_text(&dir, unified, &drop_in, admin, tenants)).unwrap();
        let log_path = dir.path().join("router.log");
        let child = spawn(&config_path, &log_path);
        let router = RouterProcess { child, unified, drop_in, admin, dir, config_path, log_path };
        router.wait_listening();
        router
    }

    pub fn config_text(
        dir: &tempfile::TempDir,
        unified: SocketAddr,
        drop_in: &HashMap<&str, SocketAddr>,
        admin: SocketAddr,
        tenants: &str,
    ) -> String {
        format!(
            r#"[server]
listen = ["{unified}"]
threads = 2
grace_period = "1s"
pid_file = "{pid}"
upgrade_sock = "{sock}"

[server.signal_listeners]
metrics = "{metrics}"
logs = "{logs}"
traces = "{traces}"

[admin]
listen = "{admin}"

{tenants}
"#,
            pid = dir.path().join("router.pid").display(),
            sock = dir.path().join("upgrade.sock").display(),
            metrics = drop_in["metrics"],
            logs = drop_in["logs"],
            traces = drop_in["traces"],
        )
    }

    /// Rewrites the tenants part of the config file (listeners unchanged).
    pub fn write_tenants(&self, tenants: &str) {
        let text = Self::config_text(&self.dir, self.unified, &self.drop_in, self.admin, tenants);
        std::fs::write(&self.config_path, text).unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// Waits until the log contains `needle` (for events with no socket to watch).
    pub fn wait_for_log(&self, needle: &str, count: usize) {
        Wait::new(format!("the router to log {needle:?} {count} time(s)"), Duration::from_secs(20))
            .every(Duration::from_millis(20))
            .blocking(|| {
                let log = self.log();
                if log.matches(needle).count() >= count { Ok(()) } else { Err(format!("log:\n{log}")) }
            });
    }

    /// `http://` base URL of a listener: `"unified"` or a signal name.
    pub fn base(&self, listener: &str) -> String {
        let addr = if listener == "unified" { self.unified } else { self.drop_in[listener] };
        format!("http://{addr}")
    }

    /// Stops the router and starts it again on the same config file.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.config_path, &self.log_path);
        self.wait_listening();
    }

    /// An admin request with an optional JSON body; status and JSON answer.
    pub async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = client.request(method, format!("http://{}{path}", self.admin));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes))))
    }

    /// `GET` of an admin path, as JSON.
    pub async fn admin_get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::Client::builder().no_proxy().build().unwrap().get(format!("http://{}{path}", self.admin)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, serde_json::from_slice(&response.bytes().await.unwrap()).unwrap())
    }

    /// Peak resident memory of the router so far, in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/pid/status");
        kib * 1024
    }

    /// Waits for the process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let (child, log_path) = (&mut self.child, &self.log_path);
        Wait::new("the router to exit", within).every(Duration::from_millis(20)).blocking(|| {
            child.try_wait().unwrap().ok_or_else(|| format!("still running; log:\n{}", read_log(log_path)))
        })
    }

    fn wait_listening(&self) {
        let mut addrs = vec![self.unified, self.admin];
        addrs.extend(self.drop_in.values());
        let mut next = 0;
        Wait::new(format!("the router to listen on {addrs:?}"), Duration::from_secs(30))
            .every(Duration::from_millis(20))
            .blocking(|| {
                // Each address once it answers, in order, as a client would find them.
                while next < addrs.len() && TcpStream::connect(addrs[next]).is_ok() {
                    next += 1;
                }
                match addrs.get(next) {
                    Some(addr) => Err(format!("no listener on {addr}; log:\n{}", self.log())),
                    None => Ok(()),
                }
            });
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn spawn(config: &std::path::Path, log: &std::path::Path) -> Child {
    spawn_with(config, log, &[])
}

/// Starts the router binary with extra arguments (e.g. `--upgrade`).
pub fn spawn_with(config: &std::path::Path, log: &std::path::Path, args: &[&str]) -> Child {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_mirador-router"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .stdin(Stdio::null())
        .spawn()
        .expect("start mirador-router")
}
