//! What one client may hold of the router: connections (per listener and per
//! client address), and time — for the head of each request and idle
//! between requests.
//!
//! Pingora 0.9 bounds neither: it times each single read of a request head
//! (60 s), never the whole head, and after a keep-alive request the next one
//! is awaited without any timeout; it has no connection cap (README,
//! "Limits"). [`Guarded`] wraps the proxy's connection handler: a connection
//! over a cap is answered 503 and closed before any HTTP is read, and every
//! other one is read through [`Timed`], which fails a read once the head of
//! a request has taken longer than `request_header_timeout`, or the wait for
//! a request longer than `idle_timeout`.
//!
//! HTTP/2 connections (TLS by ALPN, h2c by prior knowledge) are under the
//! same caps and have their own bounds ([`http2_options`]): streams per
//! connection, a header list the size of the HTTP/1.1 limits, receive
//! windows, and `idle_timeout` once no stream is open. [`Timed`] follows
//! only HTTP/1 bytes: the preface of HTTP/2 ends its "head" at once.

use crate::config::ClientLimits;
use async_trait::async_trait;
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Streams one HTTP/2 connection may have open at once; a client opening
/// more has the extra ones refused (`REFUSED_STREAM`), and may retry them.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// What a client may send on one HTTP/2 stream before the router reads it:
/// enough for an upload at ~100 MB/s over a 10 ms round trip.
pub const HTTP2_STREAM_WINDOW: u32 = 1 << 20;
/// What a client may send on one HTTP/2 connection, all its streams
/// together, before the router reads it: the most request body one
/// connection can make the router hold.
pub const HTTP2_CONNECTION_WINDOW: u32 = 4 << 20;

/// Pingora's HTTP/2 server settings for a listener with `limits`.
///
/// The header list limit (RFC 9113 §6.5.2 counts 32 bytes per field on top
/// of its name and value) is set so that any head within the HTTP/1.1
/// limits fits; the router's own check then answers 431 as for HTTP/1.1.
/// A larger head is answered 431 by the HTTP/2 layer itself.
pub fn http2_options(limits: &ClientLimits) -> H2Options {
    let pseudo_headers = 4;
    let fields = (limits.max_request_headers + pseudo_headers) as u64;
    let header_list = limits.max_request_header_bytes as u64 + 32 * fields + 1024;
    let mut options = H2Options::new();
    options
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(header_list).unwrap_or(u32::MAX))
        .initial_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
    options
}

/// Pingora's HTTP server options for a listener: h2c by prior knowledge
/// when `h2c` (plain listeners with `[server] http2 = true`), and an HTTP/2
/// connection with no open stream closed after `idle_timeout`.
pub fn server_options(h2c: bool, limits: &ClientLimits) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h2c = h2c;
    options.h2_idle_timeout = Some(limits.idle_timeout);
    options
}

/// The body of the answer to a connection over a cap.
const REFUSAL: &str = r#"{"status":"error","errorType":"unavailable","error":"too many connections from this client"}"#;

/// The whole answer to a connection over a cap.
fn refusal() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n\
         Retry-After: 1\r\nContent-Length: {}\r\n\r\n{REFUSAL}",
        REFUSAL.len()
    )
}

/// Open connections: of the listener, and per client address.
#[derive(Default)]
struct Counts {
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it gives its place back.
struct Slot {
    counts: Arc<Counts>,
    client: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.client {
            let mut per_client = self.counts.per_client.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = per_client.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_client.remove(&ip);
                }
            }
        }
    }
}

/// A connection handler with the listener's client limits in front.
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: ClientLimits,
    counts: Arc<Counts>,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, limits: ClientLimits) -> Self {
        Guarded { inner: Arc::new(inner), limits, counts: Arc::default() }
    }

    /// A place for a connection from `client`, or `None` over a cap.
    fn admit(&self, client: Option<IpAddr>) -> Option<Slot> {
        if self.counts.total.fetch_add(1, Ordering::AcqRel) >= self.limits.max_connections {
            self.counts.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let Some(ip) = client else { return Some(Slot { counts: self.counts.clone(), client: None }) };
        let mut per_client = self.counts.per_client.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_client.entry(ip).or_insert(0);
        if *n >= self.limits.max_connections_per_client {
            self.counts.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        *n += 1;
        Some(Slot { counts: self.counts.clone(), client: Some(ip) })
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(self: &Arc<Self>, mut io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let client = io.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let Some(slot) = self.admit(client) else {
            tracing::debug!(client = ?client, "connection refused: over the connection limit");
            let _ = io.write_all(refusal().as_bytes()).await;
            Shutdown::shutdown(&mut *io).await;
            return None;
        };
        let timed: Stream = Box::new(Timed::new(io, self.limits.request_header_timeout, self.limits.idle_timeout));
        let kept = self.inner.process_new(timed, shutdown).await;
        drop(slot);
        kept
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// Where a connection is in its request/response cycle, as its bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request: bounded by the idle timeout.
    Idle,
    /// A request head is arriving: bounded by the header timeout from its first byte.
    Head,
    /// The head is complete; the body and the answer are Pingora's to time.
    Exchange { answered: bool },
}

/// A connection whose request heads and idle waits have deadlines.
///
/// The deadline moves with every request; the timer does not: it is armed
/// no later than the deadline, and when it fires early it is re-armed at the
/// deadline of the time. A busy connection costs a timer operation per
/// timeout period, not two per request.
#[derive(Debug)]
pub struct Timed {
    inner: Stream,
    phase: Phase,
    /// When the current head or idle wait must end.
    deadline: Instant,
    /// The timer, and when it is armed to fire (never after `deadline`).
    timer: Pin<Box<Sleep>>,
    armed: Instant,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// The last bytes of the head so far, to find its end across reads.
    tail: [u8; 3],
}

impl Timed {
    fn new(inner: Stream, header_timeout: Duration, idle_timeout: Duration) -> Self {
        let deadline = Instant::now().checked_add(idle_timeout).unwrap_or_else(Instant::now);
        let timer = Box::pin(tokio::time::sleep_until(deadline));
        Timed {
            inner,
            phase: Phase::Idle,
            deadline,
            timer,
            armed: deadline,
            header_timeout,
            idle_timeout,
            tail: [0; 3],
        }
    }

    fn restart(&mut self, after: Duration) {
        self.deadline = Instant::now().checked_add(after).unwrap_or_else(Instant::now);
        if self.deadline < self.armed {
            self.rearm();
        }
    }

    fn rearm(&mut self) {
        self.armed = self.deadline;
        self.timer.as_mut().reset(self.deadline);
    }

    /// Whether the current deadline has passed; registers the wake-up at it
    /// otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= self.deadline {
                return true;
            }
            self.rearm();
        }
        false
    }

    /// Follows the bytes read: a first byte starts a head, `\r\n\r\n` ends it.
    fn observe(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || matches!(self.phase, Phase::Exchange { .. }) {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.tail = [0; 3];
            let header_timeout = self.header_timeout;
            self.restart(header_timeout);
        }
        if bytes.ends_with(b"\r\n\r\n") {
            self.phase = Phase::Exchange { answered: false };
            return;
        }
        let tail = self.tail;
        let across = (1..=3)
            .any(|k| bytes.len() >= 4 - k && tail[3 - k..] == b"\r\n\r\n"[..k] && bytes[..4 - k] == b"\r\n\r\n"[k..]);
        if across || bytes.windows(4).any(|w| w == b"\r\n\r\n") {
            self.phase = Phase::Exchange { answered: false };
            return;
        }
        // Keep the last three bytes seen, for an end split across reads.
        for &byte in &bytes[bytes.len().saturating_sub(3)..] {
            self.tail = [self.tail[1], self.tail[2], byte];
        }
    }
}

impl Timed {
    /// An answer's head going out: the next read waits for another request.
    /// A `1xx` (100 Continue) is no answer: the body is yet to come.
    fn saw_written(&mut self, bytes: &[u8]) {
        if let Phase::Exchange { answered } = &mut self.phase {
            if bytes.starts_with(b"HTTP/1.") && bytes.get(9).is_some_and(|status| *status != b'1') {
                *answered = true;
            }
        }
    }
}

impl AsyncRead for Timed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // A read after an answer went out waits for the next request.
        let this = self.get_mut();
        if this.phase == (Phase::Exchange { answered: true }) {
            this.phase = Phase::Idle;
            let idle = this.idle_timeout;
            this.restart(idle);
        }
        if matches!(this.phase, Phase::Idle | Phase::Head) && this.expired(cx) {
            let what = if this.phase == Phase::Idle { "idle_timeout" } else { "request_header_timeout" };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, format!("{what} reached"))));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.observe(&buf.filled()[before..]);
        }
        result
    }
}

impl AsyncWrite for Timed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.saw_written(buf);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.saw_written(first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Timed {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for Timed {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Timed {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Timed {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for Timed {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Timed {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Timed {
    /// Pingora peeks for the HTTP/2 preface on an h2c listener before any
    /// read, and waits for all of it: bounded by the idle deadline, so a
    /// client that connects and sends nothing is closed as on HTTP/1.1.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match tokio::time::timeout_at(self.deadline, self.inner.try_peek(buf)).await {
            Ok(peeked) => peeked,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle_timeout reached")),
        }
    }
}
