//! The OTLP/gRPC listener (`[server] otlp_grpc_listen`): the three OTLP
//! collector services' `Export` for every signal, on one port (h2c, or TLS
//! with a `[[server.tls]]` listener's certificates and client CA:
//! `otlp_grpc_tls`), on a tokio runtime of its own (Pingora runs its own).
//! A verified client certificate's names identify the tenant as on HTTP.
//!
//! The gRPC method names the signal. Each call loads the routing table
//! once and takes the pipeline of the signal's OTLP/HTTP request
//! ([`proxy::resolve_export`]: the tenant from the metadata, the same
//! refusals, quotas and shared-cluster forms), then the message, as the
//! same protobuf bytes and never decoded here, goes to the pool as that
//! OTLP/HTTP `POST` ([`proxy::deliver`]), or as gRPC to a deployment's
//! `otlp_grpc_endpoints` ([`proxy::deliver_grpc`]). The answer maps to a gRPC status
//! in one place ([`status`]). Framing, gzip and status encoding are
//! tonic's ([`tonic::server::Grpc`] with a pass-through codec), HTTP/2 is
//! hyper's. A gzip message stays compressed ([`gzip`]).

mod codec;
mod gzip;
pub mod status;

use crate::api::Signal;
use crate::config::{ClientLimits, Observability};
use crate::edge::ClientNames;
use crate::proxy::{self, RequestCtx};
use crate::rejection::Rejection;
use crate::reply::{ErrorKind, ErrorReply, Refused};
use crate::routing::RouteStore;
use bytes::Bytes;
use codec::Raw;
use gzip::KeepCompressed;
use http::{HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pingora::connectors::http::Connector;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tonic::codec::CompressionEncoding;
use tonic::server::{Grpc, UnaryService};
use tonic::Status;

/// The longest export message taken whatever the tenant's `max_body_bytes`
/// (tonic's own default is 4 MiB; collectors batch larger).
pub const MAX_MESSAGE: usize = 64 << 20;

/// The gRPC methods served and the signal each exports.
pub const METHODS: [(&str, Signal); 3] = [
    ("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", Signal::Metrics),
    ("/opentelemetry.proto.collector.logs.v1.LogsService/Export", Signal::Logs),
    ("/opentelemetry.proto.collector.trace.v1.TraceService/Export", Signal::Traces),
];

/// What every call of the listener shares.
struct Listener {
    routes: Arc<RouteStore>,
    observability: Observability,
    connector: Connector,
    /// Longest wait for the next bytes of a message (`server.body_timeout`).
    body_timeout: std::time::Duration,
}

/// Binds `addr` and serves OTLP/gRPC on a thread with its own runtime of
/// `threads` workers, until the process ends; over TLS with `tls` (the
/// edge's config for the listener named by `otlp_grpc_tls`). A bind error
/// is returned here, before anything runs.
pub fn spawn(
    addr: SocketAddr,
    threads: usize,
    routes: Arc<RouteStore>,
    observability: Observability,
    clients: ClientLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("otlp-grpc")
        .enable_all()
        .build()?;
    let socket = runtime.block_on(async { bind(addr) })?;
    let body_timeout = clients.body_timeout;
    let listener = Arc::new(Listener { routes, observability, connector: Connector::new(None), body_timeout });
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    std::thread::Builder::new()
        .name("otlp-grpc-accept".into())
        .spawn(move || runtime.block_on(serve(socket, listener, clients, tls)))?;
    Ok(())
}

/// A listening socket with `SO_REUSEPORT`, so that a `--upgrade` process
/// binds it while the old one still serves.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections, at most `max_connections` at a time, each served
/// as HTTP/2 (after the TLS handshake, within `request_header_timeout`,
/// when `tls`).
async fn serve(
    socket: tokio::net::TcpListener,
    listener: Arc<Listener>,
    clients: ClientLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(clients.max_connections));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "OTLP/gRPC accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (listener, tls) = (listener.clone(), tls.clone());
        tokio::spawn(async move {
            let Some(tls) = tls else { return connection(stream, listener, peer.ip(), None).await };
            match tokio::time::timeout(clients.request_header_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    // Only a verified certificate gets past the handshake.
                    let leaf = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first());
                    let names = leaf.and_then(|der| ClientNames::of(der)).map(Arc::new);
                    connection(stream, listener, peer.ip(), names).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "OTLP/gRPC TLS handshake failed"),
                Err(_) => tracing::debug!("OTLP/gRPC TLS handshake timed out"),
            }
            drop(slot);
        });
    }
}

/// One client connection as HTTP/2; `names`: its verified client certificate's.
async fn connection<IO>(io: IO, listener: Arc<Listener>, client: IpAddr, names: Option<Arc<ClientNames>>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let (listener, names) = (listener.clone(), names.clone());
        async move { Ok::<_, Infallible>(listener.call(request, client, names.as_deref()).await) }
    });
    let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(256)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "OTLP/gRPC connection ended");
    }
}

type Answer = http::Response<tonic::body::Body>;

impl Listener {
    /// One gRPC call: the method's signal, the route, the message, the delivery.
    async fn call(
        self: Arc<Self>,
        request: http::Request<Incoming>,
        client: IpAddr,
        certificate: Option<&ClientNames>,
    ) -> Answer {
        let path = request.uri().path();
        // Counted as the HTTP listeners count a path or method they do not
        // serve, under the tenant `unknown` (no tenant is read yet).
        let unserved = |rejection| {
            if let Some(rejections) = self.routes.load().rejections("") {
                rejections.get(rejection).inc();
            }
        };
        let Some(&(method, signal)) = METHODS.iter().find(|(method, _)| *method == path) else {
            unserved(Rejection::Unroutable);
            let message = format!("{path:?} is no OTLP collector method: {}", METHODS.map(|(m, _)| m).join(", "));
            return Status::unimplemented(message).into_http();
        };
        if request.method() != Method::POST {
            unserved(Rejection::MethodNotAllowed);
            return plain(StatusCode::METHOD_NOT_ALLOWED, Status::unimplemented("gRPC calls are POST"));
        }
        let content_type = request.headers().get(http::header::CONTENT_TYPE).map(HeaderValue::as_bytes);
        if !content_type.is_some_and(|t| t == b"application/grpc" || t.starts_with(b"application/grpc+proto")) {
            let status = Status::invalid_argument("content-type must be application/grpc");
            return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, status);
        }
        let table = self.routes.load();
        let mut ctx = RequestCtx::new();
        if let Err(reply) = proxy::resolve_export(
            &table,
            signal,
            request.headers(),
            certificate.map(|names| names.0.as_slice()),
            &mut ctx,
        ) {
            ctx.finish_export(method, reply.status, (0, 0), &self.observability);
            return status::status_of(reply.status, &reply.message, reply.retry_after).into_http();
        }
        // The call holds its pool (and its table's handles) from here on.
        drop(table);
        let limit = ctx.max_body.map_or(MAX_MESSAGE, |max| max.min(MAX_MESSAGE as u64) as usize);
        let (parts, body) = request.into_parts();
        let (body, compressed) = KeepCompressed::new(body, self.body_timeout);
        let request = http::Request::from_parts(parts, body);
        let call = Call { listener: self.clone(), ctx, signal, method, client, compressed, limit: limit as u64 };
        let call = Arc::new(Mutex::new(Some(call)));
        let mut grpc = Grpc::new(Raw)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut answer = grpc.unary(Export(call.clone()), request).await;
        // The call was never made: the message did not decode (tonic answered).
        let Some(Call { ctx, .. }) = call.lock().ok().and_then(|mut call| call.take()) else { return answer };
        // tonic's message size limit: OUT_OF_RANGE for a frame over it.
        let status = if answer.headers().get("grpc-status").is_some_and(|code| code == "11") {
            let reply = body_too_large(&ctx);
            answer = status::status_of(reply.status, &reply.message, None).into_http();
            reply.status
        } else {
            400
        };
        ctx.finish_export(method, status, (0, 0), &self.observability);
        answer
    }
}

/// The refusal of a message over the tenant's `max_body_bytes`, counted as
/// the HTTP pipeline counts a body cut off past it (the pool's handle of
/// the tenant's `rejections_total{reason="body_too_large"}`).
fn body_too_large(ctx: &RequestCtx) -> ErrorReply {
    if let Some(metrics) = ctx.pool.as_ref().and_then(|pool| pool.metrics()) {
        metrics.body_too_large.inc();
    }
    let tenant = ctx.tenant.as_deref().unwrap_or_default();
    ErrorReply::rejection(Rejection::BodyTooLarge, &Refused { tenant, ..Refused::default() })
}

/// A refusal of the request itself, with an HTTP status a gRPC client
/// reads as that failure (gRPC over HTTP/2: 415 for a content type that
/// is not gRPC), and the gRPC status beside it.
fn plain(http: StatusCode, status: Status) -> Answer {
    let mut answer: Answer = status.into_http();
    *answer.status_mut() = http;
    answer
}

/// One resolved export waiting for its message.
struct Call {
    listener: Arc<Listener>,
    ctx: RequestCtx,
    signal: Signal,
    method: &'static str,
    client: IpAddr,
    /// Set when the message came gzip-compressed (and stays so).
    compressed: Arc<AtomicBool>,
    /// The most bytes the decoded message may have.
    limit: u64,
}

impl Call {
    async fn export(self, message: Bytes) -> Result<tonic::Response<Bytes>, Status> {
        let Call { listener, mut ctx, signal, method, client, compressed, limit } = self;
        let bytes_in = message.len() as u64;
        let gzip = compressed.load(Ordering::Relaxed);
        let decoded = if gzip { gzip::decoded_len(&message, limit) } else { Ok(Some(bytes_in)) };
        let passthrough = ctx.pool.as_ref().is_some_and(|pool| !pool.otlp_grpc_endpoints().is_empty());
        let delivered = match decoded {
            Ok(Some(_)) if passthrough => {
                let called = proxy::deliver_grpc(&listener.connector, &mut ctx, method, message, gzip, Some(client));
                let (status, result) = match called.await {
                    Ok(answer) => status::of_grpc_answer(answer),
                    Err(reply) => {
                        (reply.status, Err(status::status_of(reply.status, &reply.message, reply.retry_after)))
                    }
                };
                let bytes_out = result.as_ref().map_or(0, |body| body.len() as u64);
                ctx.finish_export(method, status, (bytes_in, bytes_out), &listener.observability);
                return result.map(tonic::Response::new);
            }
            Ok(Some(_)) => proxy::deliver(&listener.connector, &mut ctx, signal, message, gzip, Some(client)).await,
            Ok(None) => Err(body_too_large(&ctx)),
            Err(_) => Err(ErrorReply::new(ErrorKind::BadData, "the message is not valid gzip")),
        };
        let (status, result) = match delivered {
            Ok(answer) if (200..300).contains(&answer.status) => {
                // An ExportServiceResponse (partial success) passes back; any
                // other body is no protobuf message: an empty response.
                let protobuf =
                    answer.content_type.as_ref().is_some_and(|t| t.as_bytes().starts_with(b"application/x-protobuf"));
                (answer.status, Ok(if protobuf { answer.body } else { Bytes::new() }))
            }
            Ok(answer) => {
                let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(512)]).trim().to_string();
                let message = format!("the {signal} deployment answered {}: {text}", answer.status);
                (answer.status, Err(status::status_of(answer.status, &message, answer.retry_after)))
            }
            Err(reply) => (reply.status, Err(status::status_of(reply.status, &reply.message, reply.retry_after))),
        };
        let bytes_out = result.as_ref().map_or(0, |body| body.len() as u64);
        ctx.finish_export(method, status, (bytes_in, bytes_out), &listener.observability);
        result.map(tonic::Response::new)
    }
}

/// The unary service tonic calls with the decoded message: takes the
/// [`Call`] (a call whose message never decodes leaves it in place).
struct Export(Arc<Mutex<Option<Call>>>);

impl UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let call = self.0.lock().ok().and_then(|mut call| call.take());
        Box::pin(async move {
            match call {
                Some(call) => call.export(request.into_inner()).await,
                None => Err(Status::internal("the export was already made")),
            }
        })
    }
}
