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
        let endpoint = self.endpoint(index);
        let peer = self.peer(index);
        let mut request = RequestHeader::build("GET", path.as_bytes(), None).map_err(|e| e.to_string())?;
        request.insert_header(http::header::HOST, endpoint.authority.clone()).map_err(|e| e.to_string())?;
        request.insert_header(http::header::USER_AGENT, agent).map_err(|e| e.to_string())?;
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
