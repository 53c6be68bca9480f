//! One request to a pool's endpoint outside Pingora's proxy phases, through
//! the pool's peer (its TLS, HTTP version and timeouts): a GET off the
//! request path (the usage collector reads each deployment's own `/metrics`
//! this way, with the upstream credential), and a POST of a whole body (an
//! OTLP/gRPC export re-sent as OTLP/HTTP), telling whether anything of it
//! reached the endpoint. Answers are read bounded.

use super::Pool;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;

impl Pool {
    /// The body of `GET path` on endpoint `index`, at most `max_bytes`: the
    /// text, or why there is none.
    pub async fn fetch(
        &self,
        connector: &Connector,
        index: usize,
        path: &str,
        max_bytes: usize,
    ) -> Result<String, String> {
        let endpoint = self.endpoint(index);
        let peer = self.peer(index);
        let mut request = RequestHeader::build("GET", path.as_bytes(), None).map_err(|e| e.to_string())?;
        request.insert_header(http::header::HOST, endpoint.authority.clone()).map_err(|e| e.to_string())?;
        request.insert_header(http::header::USER_AGENT, "mirador-router-usage").map_err(|e| e.to_string())?;
        if let Some(auth) = &self.upstream_auth {
            request.insert_header(http::header::AUTHORIZATION, auth.clone()).map_err(|e| e.to_string())?;
        }
        if self.http2 {
            let scheme = if endpoint.url.starts_with("https://") { "https" } else { "http" };
            let authority = endpoint.authority.to_str().unwrap_or_default();
            let uri = http::Uri::builder().scheme(scheme).authority(authority).path_and_query(path).build();
            request.set_uri(uri.map_err(|e| e.to_string())?);
        }
        let (mut session, _) = connector.get_http_session(&*peer).await.map_err(|e| e.to_string())?;
        session.write_request_header(Box::new(request)).await.map_err(|e| e.to_string())?;
        session.finish_request_body().await.map_err(|e| e.to_string())?;
        session.read_response_header().await.map_err(|e| e.to_string())?;
        let status = session.response_header().map_or(0, |r| r.status.as_u16());
        let mut body = Vec::new();
        while let Some(chunk) = session.read_response_body().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > max_bytes {
                return Err(format!("{path} is over {max_bytes} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        if status != 200 {
            return Err(format!("{path} answered {status}"));
        }
        String::from_utf8(body).map_err(|_| format!("{path} is not UTF-8 text"))
    }
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
        mut request: RequestHeader,
        body: bytes::Bytes,
        max_answer: usize,
    ) -> Result<Answer, PostFailed> {
        let endpoint = self.endpoint(index);
        let peer = self.peer(index);
        let failed = |error, reused| PostFailed { error, connected: true, reused };
        if self.http2 {
            let scheme = if endpoint.url.starts_with("https://") { "https" } else { "http" };
            let authority = endpoint.authority.to_str().unwrap_or_default();
            let path = request.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            let uri = http::Uri::builder().scheme(scheme).authority(authority).path_and_query(path).build();
            let uri = uri.map_err(|e| pingora::Error::because(pingora::ErrorType::InternalError, "target", e));
            request.set_uri(uri.map_err(|error| PostFailed { error, connected: false, reused: false })?);
        }
        let (mut session, reused) = connector.get_http_session(&*peer).await.map_err(|error| PostFailed {
            error,
            connected: false,
            reused: false,
        })?;
        session.write_request_header(Box::new(request)).await.map_err(|e| failed(e, reused))?;
        session.write_request_body(body, true).await.map_err(|e| failed(e, reused))?;
        session.finish_request_body().await.map_err(|e| failed(e, reused))?;
        session.read_response_header().await.map_err(|e| failed(e, reused))?;
        let (status, retry_after, content_type) = session.response_header().map_or((0, None, None), |r| {
            let retry_after = r.headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse().ok());
            (r.status.as_u16(), retry_after, r.headers.get(http::header::CONTENT_TYPE).cloned())
        });
        let mut answer = Vec::new();
        while let Some(chunk) = session.read_response_body().await.map_err(|e| failed(e, reused))? {
            if answer.len() + chunk.len() > max_answer {
                let error = pingora::Error::explain(pingora::ErrorType::Custom("answer too large"), "answer too large");
                return Err(failed(error, reused));
            }
            answer.extend_from_slice(&chunk);
        }
        connector.release_http_session(session, &*peer, peer.options.idle_timeout).await;
        Ok(Answer { status, retry_after, content_type, body: answer.into() })
    }
}
