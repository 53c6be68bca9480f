//! An HTTP/2-only upstream on 127.0.0.1:0 that records what it receives:
//! over TLS offering ALPN `h2` alone (a client offering only HTTP/1.1 is
//! refused in the handshake), or in cleartext with prior knowledge (h2c;
//! an HTTP/1.1 request is no HTTP/2 preface and ends the connection).
//!
//! Every answer is 200 with `x-upstream: <name>` and the name as body; the
//! router's health probes (by their User-Agent) are counted apart.

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct H2Seen {
    pub method: String,
    /// `:scheme` and `:authority`, as sent.
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub path_and_query: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body_len: u64,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<H2Seen>>,
    probes: AtomicU64,
    usage_reads: AtomicU64,
    /// TCP connections accepted.
    connections: AtomicU64,
}

pub struct H2Upstream {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl H2Upstream {
    /// Over TLS with `acceptor` (which should offer ALPN `h2` only), or h2c when `None`.
    pub async fn start(name: &str, acceptor: Option<tokio_rustls::TlsAcceptor>) -> H2Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let (name_for_task, shared_for_task): (Arc<str>, _) = (name.into(), shared.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                shared_for_task.connections.fetch_add(1, Ordering::SeqCst);
                let (name, shared, acceptor) = (name_for_task.clone(), shared_for_task.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(socket).await {
                                serve(tls, name, shared).await;
                            }
                        }
                        None => serve(socket, name, shared).await,
                    }
                });
            }
        });
        H2Upstream { name: name.to_string(), addr, shared, accept }
    }

    /// How many times the router's usage collector read /metrics here.
    pub fn usage_reads(&self) -> u64 {
        self.shared.usage_reads.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<H2Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn probes(&self) -> u64 {
        self.shared.probes.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for H2Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: T, name: Arc<str>, shared: Arc<Shared>) {
    let Ok(mut connection) = h2::server::handshake(io).await else { return };
    while let Some(Ok((request, respond))) = connection.accept().await {
        tokio::spawn(answer(request, respond, name.clone(), shared.clone()));
    }
}

async fn answer(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    name: Arc<str>,
    shared: Arc<Shared>,
) {
    let (parts, mut body) = request.into_parts();
    let mut body_len = 0u64;
    while let Some(Ok(chunk)) = body.data().await {
        body_len += chunk.len() as u64;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if parts.headers.get("user-agent").is_some_and(|ua| ua == "mirador-router-health-check") {
        shared.probes.fetch_add(1, Ordering::SeqCst);
    } else if parts.headers.get("user-agent").is_some_and(|ua| ua == "mirador-router-usage") {
        // The usage collector's /metrics read: counted apart, like probes.
        shared.usage_reads.fetch_add(1, Ordering::SeqCst);
    } else {
        shared.seen.lock().unwrap().push(H2Seen {
            method: parts.method.to_string(),
            scheme: parts.uri.scheme_str().map(str::to_string),
            authority: parts.uri.authority().map(|a| a.to_string()),
            path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            version: parts.version,
            headers: parts.headers,
            body_len,
        });
    }
    let response = http::Response::builder().status(200).header("x-upstream", &*name).body(()).unwrap();
    if let Ok(mut send) = respond.send_response(response, false) {
        let _ = send.send_data(Bytes::from(name.to_string()), true);
    }
}
