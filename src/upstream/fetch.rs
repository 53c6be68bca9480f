//! One request to a pool's endpoint outside Pingora's proxy phases, through
//! the pool's peer (its TLS, HTTP version and timeouts): a GET off the
//! request path (the usage collector reads each deployment's own `/metrics`
//! this way, and the admin API checks a new endpoint is the server it
//! should be), a request with the pool's credential and tenant headers (a
//! migration's copies and shadow reads, [`Pool::send`]), and a POST of a
//! whole body (an OTLP/gRPC export re-sent as OTLP/HTTP), telling whether
//! anything of it reached the endpoint. Answers are read bounded.

use super::{HealthRegistry, Pool};
use crate::api::Signal;
use crate::config::Deployment;
use crate::quota::QuotaRegistry;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;

impl Pool {
    /// A pool of `deployment` outside any table, for one-off fetches (the
    /// admin API's checks of a new endpoint): no probes, quota state or series.
    pub fn detached(tenant: &str, signal: Signal, deployment: &Deployment) -> Pool {
        let (health, quotas) = (HealthRegistry::assume_healthy(), QuotaRegistry::default());
        Pool::new(tenant.into(), signal, deployment, &health, &quotas, None)
    }

    /// The body of `GET path` on endpoint `index`, at most `max_bytes`, sent
    /// as `agent` (the `User-Agent`): the text, or why there is none.
    pub async fn fetch(
        &self,
        connector: &Connector,
        agent: &'static str,
        index: usize,
        path: &str,
        max_bytes: usize,
    ) -> Result<String, String> {
        let sent = Sent { agent, method: "GET", path, headers: &[], body: &bytes::Bytes::new() };
        let (status, body) = self.send(connector, index, sent, max_bytes).await?;
        if status != 200 {
            return Err(format!("{path} answered {status}"));
        }
        String::from_utf8(body.to_vec()).map_err(|_| format!("{path} is not UTF-8 text"))
    }

    /// Sends one request to endpoint `index` with the pool's credential (and
    /// a shared VictoriaLogs/VictoriaTraces' tenant headers): its status and
    /// body (at most `max_bytes`), or why there is none.
    pub async fn send(
        &self,
        connector: &Connector,
        index: usize,
        sent: Sent<'_>,
        max_bytes: usize,
    ) -> Result<(u16, bytes::Bytes), String> {
        let Sent { agent, method, path, headers, body } = sent;
        let endpoint = self.endpoint(index);
        let e = |e: Box<pingora::Error>| e.to_string();
        let mut request = RequestHeader::build(method, path.as_bytes(), None).map_err(e)?;
        for (name, value) in headers {
            request.append_header(name.clone(), value.clone()).map_err(e)?;
        }
        request.insert_header(http::header::HOST, endpoint.authority.clone()).map_err(e)?;
        request.insert_header(http::header::USER_AGENT, agent).map_err(e)?;
        request.insert_header(http::header::CONTENT_LENGTH, body.len()).map_err(e)?;
        if let Some(auth) = &self.upstream_auth {
            request.insert_header(http::header::AUTHORIZATION, auth.clone()).map_err(e)?;
        }
        if let Some((account, project)) = &self.tenant_headers {
            request.insert_header("AccountID", account.clone()).map_err(e)?;
            request.insert_header("ProjectID", project.clone()).map_err(e)?;
        }
        let body = body.clone();
        let answer = self.post(connector, index, request, body, max_bytes).await.map_err(|f| f.error.to_string())?;
        Ok((answer.status, answer.body))
    }
}

/// One request [`Pool::send`] sends: the path with its query, extra headers
/// and the body.
#[derive(Debug, Clone, Copy)]
pub struct Sent<'a> {
    pub agent: &'static str,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(http::HeaderName, http::HeaderValue)],
    pub body: &'a bytes::Bytes,
}

/// The endpoint's answer to a [`Pool::post`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when the endpoint sent one.
    pub retry_after: Option<u64>,
    pub content_type: Option<http::HeaderValue>,
    pub body: bytes::Bytes,
}

/// Why a [`Pool::post`] has no answer, and how far it got: `connected`
/// false means nothing of the request reached the endpoint.
#[derive(Debug)]
pub struct PostFailed {
    pub error: Box<pingora::Error>,
    pub connected: bool,
    /// The attempt went out on a reused keep-alive connection.
    pub reused: bool,
}

impl Pool {
    /// `request` with `body` to endpoint `index`, through its peer, on a
    /// pooled connection when one is idle (given back after a whole
    /// answer). The answer's body is read up to `max_answer` bytes.
    pub async fn post(
        &self,
        connector: &Connector,
        index: usize,
        request: RequestHeader,
        body: bytes::Bytes,
        max_answer: usize,
    ) -> Result<Answer, PostFailed> {
        let endpoint = self.endpoint(index);
        let target = self.http2.then(|| (endpoint.url.starts_with("https://"), &endpoint.authority));
        let peer = self.peer(index);
        let (session, exchanged) = exchange(connector, &peer, target, request, body, max_answer).await?;
        connector.release_http_session(session, &*peer, peer.options.idle_timeout).await;
        let Exchanged { status, head, body, .. } = exchanged;
        let retry_after = head.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse().ok());
        Ok(Answer { status, retry_after, content_type: head.get(http::header::CONTENT_TYPE).cloned(), body })
    }
}

/// What came back on a session: the answer's status, head and body.
struct Exchanged {
    status: u16,
    head: http::HeaderMap,
    body: bytes::Bytes,
    reused: bool,
}

/// `request` and `body` out on a session to `peer` (pooled when one is
/// idle), the answer's head and body (at most `max_answer` bytes) in; the
/// session, for trailers and to give back. `absolute`: HTTP/2 takes the
/// target with its scheme (`https` when true) and this authority.
async fn exchange(
    connector: &Connector,
    peer: &pingora::upstreams::peer::HttpPeer,
    absolute: Option<(bool, &http::HeaderValue)>,
    mut request: RequestHeader,
    body: bytes::Bytes,
    max_answer: usize,
) -> Result<(pingora::protocols::http::client::HttpSession, Exchanged), PostFailed> {
    let failed = |error, reused| PostFailed { error, connected: true, reused };
    if let Some((tls, authority)) = absolute {
        let scheme = if tls { "https" } else { "http" };
        let path = request.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let uri =
            http::Uri::builder().scheme(scheme).authority(authority.to_str().unwrap_or_default()).path_and_query(path);
        let uri = uri.build().map_err(|e| pingora::Error::because(pingora::ErrorType::InternalError, "target", e));
        request.set_uri(uri.map_err(|error| PostFailed { error, connected: false, reused: false })?);
    }
    let (mut session, reused) = connector.get_http_session(peer).await.map_err(|error| PostFailed {
        error,
        connected: false,
        reused: false,
    })?;
    session.write_request_header(Box::new(request)).await.map_err(|e| failed(e, reused))?;
    session.write_request_body(body, false).await.map_err(|e| failed(e, reused))?;
    session.finish_request_body().await.map_err(|e| failed(e, reused))?;
    session.read_response_header().await.map_err(|e| failed(e, reused))?;
    let (status, head) = session.response_header().map(|r| (r.status.as_u16(), r.headers.clone())).unwrap_or_default();
    let mut answer = Vec::new();
    while let Some(chunk) = session.read_response_body().await.map_err(|e| failed(e, reused))? {
        if answer.len() + chunk.len() > max_answer {
            let error = pingora::Error::explain(pingora::ErrorType::Custom("answer too large"), "answer too large");
            return Err(failed(error, reused));
        }
        answer.extend_from_slice(&chunk);
    }
    Ok((session, Exchanged { status, head, body: answer.into(), reused }))
}

/// A gRPC endpoint's answer to a [`Pool::call_grpc`]: the gRPC status
/// (from the trailers, or the head of a trailers-only answer) and the
/// response message's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcAnswer {
    pub http_status: u16,
    /// `grpc-status`; `None` when the endpoint sent none.
    pub code: Option<i32>,
    pub message: String,
    /// `grpc-status-details-bin`, decoded.
    pub details: bytes::Bytes,
    /// The first response message, without its 5-byte prefix.
    pub body: bytes::Bytes,
}

impl Pool {
    /// The gRPC call `request` with the framed message `body` to OTLP/gRPC
    /// endpoint `index`, over HTTP/2 on a pooled connection when one is
    /// idle. The answer is read up to `max_answer` bytes.
    pub async fn call_grpc(
        &self,
        connector: &Connector,
        index: usize,
        request: RequestHeader,
        body: bytes::Bytes,
        max_answer: usize,
    ) -> Result<GrpcAnswer, PostFailed> {
        use pingora::protocols::http::client::HttpSession;
        let endpoint = &self.otlp_grpc_endpoints()[index];
        let peer = self.grpc_peer(index);
        let target = Some((endpoint.url.starts_with("https://"), &endpoint.authority));
        let (mut session, Exchanged { status: http_status, head, body: answer, reused }) =
            exchange(connector, &peer, target, request, body, max_answer).await?;
        let trailers = match &mut session {
            HttpSession::H2(h2) => {
                h2.read_trailers().await.map_err(|error| PostFailed { error, connected: true, reused })?
            }
            _ => None,
        };
        connector.release_http_session(session, &*peer, peer.options.idle_timeout).await;
        let status = trailers.as_ref().filter(|t| t.contains_key("grpc-status")).unwrap_or(&head);
        let text = |name: &str| status.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let code = text("grpc-status").parse().ok();
        let message = percent_decode(&text("grpc-message"));
        let details = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            text("grpc-status-details-bin").trim_end_matches('='),
        )
        .unwrap_or_default();
        // One message: a 5-byte prefix (compressed flag, length), then its bytes.
        let body = match answer.get(1..5) {
            Some(len) => {
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                answer.get(5..5 + len).map(bytes::Bytes::copy_from_slice).unwrap_or_default()
            }
            None => bytes::Bytes::new(),
        };
        Ok(GrpcAnswer { http_status, code, message, details: details.into(), body })
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2: `%XX`).
fn percent_decode(text: &str) -> String {
    let (bytes, mut out, mut i) = (text.as_bytes(), Vec::with_capacity(text.len()), 0);
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
