//! One GET of a path on a pool's endpoint, off the request path (the usage
//! collector reads each deployment's own `/metrics` this way, and the admin
//! API checks a new endpoint is the server it should be): through the
//! pool's peer (its TLS, HTTP version and timeouts) with its upstream
//! credential, the body bounded.

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
        let sent = Sent { agent, method: "GET", path, headers: &[], body: &[] };
        let (status, body) = self.send(connector, index, sent, max_bytes).await?;
        if status != 200 {
            return Err(format!("{path} answered {status}"));
        }
        String::from_utf8(body).map_err(|_| format!("{path} is not UTF-8 text"))
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
    ) -> Result<(u16, Vec<u8>), String> {
        let Sent { agent, method, path, headers, body } = sent;
        let endpoint = self.endpoint(index);
        let peer = self.peer(index);
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
        if self.http2 {
            let scheme = if endpoint.url.starts_with("https://") { "https" } else { "http" };
            let authority = endpoint.authority.to_str().unwrap_or_default();
            let uri = http::Uri::builder().scheme(scheme).authority(authority).path_and_query(path).build();
            request.set_uri(uri.map_err(|e| e.to_string())?);
        }
        let (mut session, _) = connector.get_http_session(&*peer).await.map_err(e)?;
        session.write_request_header(Box::new(request)).await.map_err(e)?;
        if !body.is_empty() {
            session.write_request_body(bytes::Bytes::copy_from_slice(body), true).await.map_err(e)?;
        }
        session.finish_request_body().await.map_err(e)?;
        session.read_response_header().await.map_err(e)?;
        let status = session.response_header().map_or(0, |r| r.status.as_u16());
        let mut answer = Vec::new();
        while let Some(chunk) = session.read_response_body().await.map_err(e)? {
            if answer.len() + chunk.len() > max_bytes {
                return Err(format!("the answer to {path} is over {max_bytes} bytes"));
            }
            answer.extend_from_slice(&chunk);
        }
        Ok((status, answer))
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
    pub body: &'a [u8],
}
