//! A real HTTP/1.1 server on 127.0.0.1:0 that records what it receives:
//! the stand-in for a Victoria* endpoint.
//!
//! Every answer carries `x-upstream: <name>` so a test can tell which endpoint
//! served it. Query parameters steer it: `delay_ms=N` waits before answering,
//! `download_bytes=N` streams an N-byte body back, `reset=1` drops the
//! connection without an answer (as does every request after
//! `set_reset_all(true)`), `status=N` answers with that status. Request bodies are read
//! frame by frame and only counted and hashed, never held whole. The router's
//! health probes (by their User-Agent) are counted apart, not recorded.

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::Hasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body_len: u64,
    pub body_hash: u64,
    /// Whether the body arrived whole (false when the client or proxy cut it).
    pub body_complete: bool,
    /// The router-side address of the connection: tells connection reuse.
    pub peer: SocketAddr,
    /// The body itself, after [`Upstream::keep_bodies`].
    pub body: Option<Bytes>,
    /// When its body had arrived.
    pub at: std::time::Instant,
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the upstream shares with its connection tasks.
#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    probes: AtomicU64,
    /// When the router's first health probe arrived.
    first_probe: std::sync::OnceLock<std::time::Instant>,
    usage_reads: AtomicU64,
    /// Status of the health endpoint; 200 unless a test says otherwise.
    probe_status: AtomicU16,
    /// The accept loop plus every open connection: 0 once all are gone.
    alive: AtomicUsize,
    /// Drop every request's connection after reading it (no answer), as an
    /// endpoint dying mid-request does.
    reset_all: std::sync::atomic::AtomicBool,
    /// What the endpoint refuses, as the real service would (a strict stand-in).
    refuses: Option<Refuses>,
    /// The server the admin API's deployment checks see ([`Upstream::set_kind`]).
    kind: Mutex<Option<&'static str>>,
    validations: AtomicU64,
    /// Keep each request's body in its [`Seen`] (small bodies only).
    keep_bodies: std::sync::atomic::AtomicBool,
    /// The status of every answer when not 0 (else `status=N` or 200).
    status: AtomicU16,
}

/// A strict stand-in's rule: the status and message for a path (with its
/// query) the real service refuses, or `None` when it serves it.
pub type Refuses = fn(&str) -> Option<(u16, String)>;

pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        Self::serve(name, listener)
    }

    /// A strict stand-in: records every request, and answers what `refuses`
    /// names with its status and message, as the real service would.
    pub async fn start_strict(name: &str, refuses: Refuses) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        Self::serve_with(name, listener, Some(refuses))
    }

    /// Serves on an already bound listener (to take over a known port).
    pub fn serve(name: &str, listener: TcpListener) -> Upstream {
        Self::serve_with(name, listener, None)
    }

    fn serve_with(name: &str, listener: TcpListener, refuses: Option<Refuses>) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared { probe_status: AtomicU16::new(200), refuses, ..Shared::default() });
        let (stop, stopped) = watch::channel(false);
        let upstream = Upstream { name: name.to_string(), addr, shared: shared.clone(), stop };
        let name: Arc<str> = name.into();
        shared.alive.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let mut accept_stopped = stopped.clone();
            loop {
                let (socket, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = accept_stopped.changed() => {
                        drop(listener);
                        shared.alive.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                };
                shared.alive.fetch_add(1, Ordering::SeqCst);
                let (name, shared, mut conn_stopped) = (name.clone(), shared.clone(), stopped.clone());
                tokio::spawn(async move {
                    let handler = shared.clone();
                    let service =
                        hyper::service::service_fn(move |req| handle(name.clone(), handler.clone(), peer, req));
                    let conn =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service);
                    tokio::select! {
                        biased;
                        _ = conn_stopped.changed() => {}
                        _ = conn => {}
                    }
                    shared.alive.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        upstream
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The Victoria* server this endpoint says it is to the admin API's
    /// deployment checks (`User-Agent: mirador-router-validation`):
    /// `victoria-metrics` (the default), `victoria-logs`, `victoria-traces`,
    /// `vminsert`, `vmselect`, or `none` (an HTTP server that is no Victoria*).
    pub fn set_kind(&self, kind: &'static str) {
        *self.shared.kind.lock().unwrap() = Some(kind);
    }

    /// How many requests of the admin API's deployment checks came here.
    pub fn validations(&self) -> u64 {
        self.shared.validations.load(Ordering::SeqCst)
    }

    /// How many times the router's usage collector read /metrics here.
    pub fn usage_reads(&self) -> u64 {
        self.shared.usage_reads.load(Ordering::SeqCst)
    }

    /// How many health probes the router sent here.
    pub fn probes(&self) -> u64 {
        self.shared.probes.load(Ordering::SeqCst)
    }

    /// When the router's first health probe arrived here, if one did.
    pub fn first_probe_at(&self) -> Option<std::time::Instant> {
        self.shared.first_probe.get().copied()
    }

    /// Whether every request from now on is read, recorded and then answered
    /// by dropping the connection (health probes are still answered).
    pub fn set_reset_all(&self, reset: bool) {
        self.shared.reset_all.store(reset, Ordering::SeqCst);
    }

    /// The status the health endpoint answers from now on.
    pub fn set_probe_status(&self, status: u16) {
        self.shared.probe_status.store(status, Ordering::SeqCst);
    }

    /// Keeps the body of every request from now on, in [`Seen::body`].
    pub fn keep_bodies(&self) {
        self.shared.keep_bodies.store(true, Ordering::SeqCst);
    }

    /// Answers every request with `status` from now on (0: as before).
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Stops accepting and drops every open connection: the endpoint is dead.
    pub fn kill(&self) {
        let _ = self.stop.send(true);
    }

    /// [`Upstream::kill`], returning once the listener and every connection are closed.
    pub async fn stop(&self) {
        self.kill();
        let what = format!("upstream {}'s listener and connections to close", self.name);
        super::wait::Wait::new(what, std::time::Duration::from_secs(10))
            .every(std::time::Duration::from_millis(1))
            .until(|| match self.shared.alive.load(Ordering::SeqCst) {
                0 => Ok(()),
                alive => Err(format!("{alive} still open (the accept loop counts as one)")),
            })
            .await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a Victoria* server of `kind` answers on `path` (the paths the
/// deployment checks read), as the real ones do.
fn identity(kind: &str, path: &str) -> (u16, String) {
    let version = |v: &str| format!("vm_app_version{{version=\"{v}-20250101-standin\", short_version=\"v0\"}} 1\n");
    match (kind, path) {
        ("none", "/health") => (200, "fine".into()),
        ("none", _) => (404, "404 page not found".into()),
        (_, "/health") => (200, "OK".into()),
        ("victoria-logs", "/metrics") => (200, version(kind) + "vl_rows_ingested_total{type=\"jsonline\"} 0\n"),
        ("victoria-traces", "/metrics") => (200, version(kind) + "vt_rows_ingested_total{type=\"otlp\"} 0\n"),
        (_, "/metrics") => (200, version(kind) + "vm_rows{type=\"storage/big\"} 0\n"),
        ("victoria-metrics", "/api/v1/status/buildinfo") => (200, r#"{"status":"success","data":{}}"#.into()),
        ("victoria-traces", "/select/jaeger/api/services") => (200, r#"{"data":[]}"#.into()),
        _ => (400, "unsupported path".into()),
    }
}

async fn handle(
    name: Arc<str>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, std::io::Error> {
    if req.headers().get("user-agent").is_some_and(|ua| ua == "mirador-router-health-check") {
        shared.probes.fetch_add(1, Ordering::SeqCst);
        let _ = shared.first_probe.set(std::time::Instant::now());
        let status = shared.probe_status.load(Ordering::SeqCst);
        let body = BodyExt::boxed(Full::new(Bytes::from_static(b"OK")));
        return Ok(Response::builder().status(status).header("x-upstream", &*name).body(body).unwrap());
    }
    // The admin API's deployment checks: answered as the Victoria* server
    // this stand-in says it is, counted apart.
    if req.headers().get("user-agent").is_some_and(|ua| ua == "mirador-router-validation") {
        shared.validations.fetch_add(1, Ordering::SeqCst);
        let kind = shared.kind.lock().unwrap().unwrap_or("victoria-metrics");
        let (status, body) = identity(kind, req.uri().path());
        let body = BodyExt::boxed(Full::new(Bytes::from(body)));
        return Ok(Response::builder().status(status).body(body).unwrap());
    }
    // The router's usage collector reads a deployment's /metrics: counted
    // apart, like probes, and answered as by a server that is no Victoria*.
    if req.headers().get("user-agent").is_some_and(|ua| ua == "mirador-router-usage") {
        shared.usage_reads.fetch_add(1, Ordering::SeqCst);
        let body = BodyExt::boxed(Full::new(Bytes::from_static(b"not found")));
        return Ok(Response::builder().status(404).body(body).unwrap());
    }
    let (parts, mut body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_string();
    let param = |key: &str| -> Option<u64> {
        query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let mut hasher = DefaultHasher::new();
    let mut body_len = 0u64;
    let mut body_complete = true;
    let keep = shared.keep_bodies.load(Ordering::SeqCst);
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    if keep {
                        kept.extend_from_slice(data);
                    }
                    hasher.write(data);
                    body_len += data.len() as u64;
                }
            }
            Err(_) => {
                body_complete = false;
                break;
            }
        }
    }
    shared.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts.headers.clone(),
        body_len,
        body_hash: hasher.finish(),
        body_complete,
        peer,
        body: keep.then(|| kept.into()),
        at: std::time::Instant::now(),
    });
    if let Some(ms) = param("delay_ms") {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if param("reset").is_some() || shared.reset_all.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("dropping the connection as asked"));
    }
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Some((status, message)) = shared.refuses.and_then(|refuses| refuses(target)) {
        let body = BodyExt::boxed(Full::new(Bytes::from(message)));
        return Ok(Response::builder().status(status).header("x-upstream", &*name).body(body).unwrap());
    }
    let body: BoxBody = match param("download_bytes") {
        Some(total) => {
            const CHUNK: usize = 64 * 1024;
            let chunk = Bytes::from(vec![b'x'; CHUNK]);
            let frames = stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                async move {
                    (left > 0).then(|| {
                        let n = left.min(CHUNK as u64);
                        (Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))), left - n)
                    })
                }
            });
            BodyExt::boxed(StreamBody::new(frames))
        }
        None => BodyExt::boxed(Full::new(Bytes::from(name.to_string()))),
    };
    let status = match shared.status.load(Ordering::SeqCst) {
        0 => param("status").unwrap_or(200) as u16,
        status => status,
    };
    let response = Response::builder()
        .status(status)
        .header("x-upstream", &*name)
        .header("x-body-len", body_len.to_string())
        .body(body)
        .unwrap();
    Ok(response)
}
