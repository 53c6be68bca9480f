//! The real `mirador-router` binary, started on free loopback ports with a
//! config written to a temporary directory, and killed when dropped.
//!
//! Every test starts it through [`RouterProcess::builder`] (or its shorthand
//! [`RouterProcess::start`]): extra `[admin]` lines, a config layout of the
//! test's own, spawning without waiting for the listeners, or a `--upgrade`
//! process taking over a running one.

use super::wait::Wait;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A free port on 127.0.0.1 for the router to bind.
///
/// Taken below the kernel's ephemeral range (32768 and up), so that no
/// outgoing connection can grab it between this check and the router's bind;
/// a per-process counter from a random start keeps tests apart.
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        10_000 + std::process::id().wrapping_mul(7919).wrapping_add(now_nanos()) % 15_000,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
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
    /// The OTLP/gRPC listener, after [`RouterBuilder::otlp_grpc`].
    pub otlp_grpc: Option<SocketAddr>,
    /// Shared with a process started by [`RouterBuilder::upgrade_of`].
    pub dir: Arc<tempfile::TempDir>,
    pub config_path: PathBuf,
    /// Lines under `[admin]` after `listen`.
    admin_extra: Vec<String>,
    log_path: PathBuf,
}

/// Lays the config text out in the router's directory; the path to start it with.
type ConfigAt = Box<dyn FnOnce(&Path, &str) -> PathBuf>;

/// How a test starts the router: `RouterProcess::builder()`, then what the
/// test needs, then [`RouterBuilder::start`].
///
/// By default the router gets the unified listener, all three drop-in
/// listeners and an admin listener on free loopback ports, a config file
/// `mirador-router.toml` in a temporary directory, and `start` returns once
/// every listener accepts connections.
#[must_use]
pub struct RouterBuilder {
    tenants: String,
    admin_extra: Vec<String>,
    config_at: Option<ConfigAt>,
    wait: bool,
    upgrade_of: Option<Inherited>,
    otlp_grpc: bool,
}

/// What a `--upgrade` process takes over from the running one.
struct Inherited {
    unified: SocketAddr,
    drop_in: HashMap<&'static str, SocketAddr>,
    admin: SocketAddr,
    otlp_grpc: Option<SocketAddr>,
    dir: Arc<tempfile::TempDir>,
    config_path: PathBuf,
    admin_extra: Vec<String>,
}

impl RouterBuilder {
    /// TOML appended after the listeners: `[tenants.*]` tables, or other
    /// top-level tables such as `[health_check]`.
    pub fn tenants(mut self, tenants: impl Into<String>) -> Self {
        self.tenants = tenants.into();
        self
    }

    /// One more line under `[admin]`, e.g. `token_file = "..."` or `watch_config = true`.
    pub fn admin_extra(mut self, line: impl Into<String>) -> Self {
        self.admin_extra.push(line.into());
        self
    }

    /// Lays the config out itself: called with the router's directory and
    /// the config text, writes it where it likes (a ConfigMap-like symlink
    /// layout, say) and returns the path the router is started with.
    pub fn config_at(mut self, lay_out: impl FnOnce(&Path, &str) -> PathBuf + 'static) -> Self {
        self.config_at = Some(Box::new(lay_out));
        self
    }

    /// An OTLP/gRPC listener too (`[server] otlp_grpc_listen`) on a free port.
    pub fn otlp_grpc(mut self) -> Self {
        self.otlp_grpc = true;
        self
    }

    /// Returns as soon as the process is spawned, before it listens (to
    /// signal it during start-up); [`RouterProcess::pid`] names it.
    pub fn no_wait(mut self) -> Self {
        self.wait = false;
        self
    }

    /// A new binary started with `--upgrade` on the config, listeners and
    /// directory of `running`, logging to `upgrade.log` there. It waits for
    /// the listening sockets on the upgrade socket, so `start` does not wait.
    pub fn upgrade_of(mut self, running: &RouterProcess) -> Self {
        self.upgrade_of = Some(Inherited {
            unified: running.unified,
            drop_in: running.drop_in.clone(),
            admin: running.admin,
            otlp_grpc: running.otlp_grpc,
            dir: running.dir.clone(),
            config_path: running.config_path.clone(),
            admin_extra: running.admin_extra.clone(),
        });
        self.wait = false;
        self
    }

    pub fn start(self) -> RouterProcess {
        if let Some(from) = self.upgrade_of {
            assert!(self.config_at.is_none() && self.tenants.is_empty(), "an upgrade runs on the running config");
            let log_path = from.dir.path().join("upgrade.log");
            let child = spawn(&from.config_path, &log_path, &["--upgrade"]);
            let Inherited { unified, drop_in, admin, otlp_grpc, dir, config_path, admin_extra } = from;
            return RouterProcess {
                child,
                unified,
                drop_in,
                admin,
                otlp_grpc,
                dir,
                config_path,
                admin_extra,
                log_path,
            };
        }
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let unified = free_addr();
        let drop_in: HashMap<&'static str, SocketAddr> =
            ["metrics", "logs", "traces"].into_iter().map(|s| (s, free_addr())).collect();
        let admin = free_addr();
        let otlp_grpc = self.otlp_grpc.then(free_addr);
        let text = config_text(dir.path(), unified, &drop_in, admin, otlp_grpc, &self.admin_extra, &self.tenants);
        let config_path = match self.config_at {
            Some(lay_out) => lay_out(dir.path(), &text),
            None => {
                let path = dir.path().join("mirador-router.toml");
                std::fs::write(&path, text).unwrap();
                path
            }
        };
        let log_path = dir.path().join("router.log");
        let child = spawn(&config_path, &log_path, &[]);
        let admin_extra = self.admin_extra;
        let router =
            RouterProcess { child, unified, drop_in, admin, otlp_grpc, dir, config_path, admin_extra, log_path };
        if self.wait {
            router.wait_listening();
        }
        router
    }
}

impl RouterProcess {
    pub fn builder() -> RouterBuilder {
        RouterBuilder {
            tenants: String::new(),
            admin_extra: Vec::new(),
            config_at: None,
            wait: true,
            upgrade_of: None,
            otlp_grpc: false,
        }
    }

    /// Starts the router with the unified listener, all three drop-in
    /// listeners, and `tenants` (TOML of `[tenants.*]` tables) appended:
    /// `RouterProcess::builder().tenants(tenants).start()`.
    pub fn start(tenants: &str) -> RouterProcess {
        Self::builder().tenants(tenants).start()
    }

    /// The config text this router was started with, with other `tenants`:
    /// the same listeners and `[admin]` lines.
    pub fn text_with_tenants(&self, tenants: &str) -> String {
        config_text(
            self.dir.path(),
            self.unified,
            &self.drop_in,
            self.admin,
            self.otlp_grpc,
            &self.admin_extra,
            tenants,
        )
    }

    /// Rewrites the tenants part of the config file (listeners unchanged).
    pub fn write_tenants(&self, tenants: &str) {
        std::fs::write(&self.config_path, self.text_with_tenants(tenants)).unwrap();
    }

    /// The exit status if the process has ended, without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
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
                if log.matches(needle).count() >= count {
                    Ok(())
                } else {
                    Err(format!("log:\n{log}"))
                }
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
        self.child = spawn(&self.config_path, &self.log_path, &[]);
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
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes))),
        )
    }

    /// `GET` of an admin path, as JSON.
    pub async fn admin_get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, serde_json::from_slice(&response.bytes().await.unwrap()).unwrap())
    }

    /// The value of an unlabelled series on `/metrics`, or of a labelled
    /// one written in full; `None` when absent or unreachable.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text =
            super::client().get(format!("http://{}/metrics", self.admin)).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
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

    /// Waits until every listener accepts connections (what `start` does
    /// unless [`RouterBuilder::no_wait`]).
    pub fn wait_listening(&self) {
        let mut addrs = vec![self.unified, self.admin];
        addrs.extend(self.drop_in.values());
        addrs.extend(self.otlp_grpc);
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

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Starts the router binary with extra arguments (e.g. `--upgrade`).
fn spawn(config: &Path, log: &Path, args: &[&str]) -> Child {
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

fn config_text(
    dir: &Path,
    unified: SocketAddr,
    drop_in: &HashMap<&str, SocketAddr>,
    admin: SocketAddr,
    otlp_grpc: Option<SocketAddr>,
    admin_extra: &[String],
    tenants: &str,
) -> String {
    let admin_extra: String = admin_extra.iter().map(|line| format!("{line}\n")).collect();
    let otlp_grpc = otlp_grpc.map_or(String::new(), |addr| format!("otlp_grpc_listen = \"{addr}\"\n"));
    format!(
        r#"[server]
listen = ["{unified}"]
threads = 2
grace_period = "1s"
pid_file = "{pid}"
upgrade_sock = "{sock}"
{otlp_grpc}
[server.signal_listeners]
metrics = "{metrics}"
logs = "{logs}"
traces = "{traces}"

[admin]
listen = "{admin}"
{admin_extra}
{tenants}
"#,
        pid = dir.join("router.pid").display(),
        sock = dir.join("upgrade.sock").display(),
        metrics = drop_in["metrics"],
        logs = drop_in["logs"],
        traces = drop_in["traces"],
    )
}
