//! One endpoint's active health probe: a GET of the deployment's health
//! path, answered 200 within the probe timeout, or the reason it was not.
//!
//! Every probe goes through one Pingora HTTP connector shared by all
//! probes (TLS when the endpoint is `https://`, HTTP/2 when the deployment
//! speaks it: [`version`]), on the probes' own runtime,
//! never on the request path. Pingora's `HttpHealthCheck` is not used: it
//! makes a connector per endpoint, each with its own load of the system CAs
//! (README, Performance).

use super::tls::TlsMaterial;
use super::version;
use crate::config::{Endpoint, HealthCheck};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use std::time::Duration;
use tokio::time::Instant;

/// One endpoint's probe. Kept small, since it lives as long as its
/// endpoint: the peer and request are built afresh for each probe (a few
/// hundred bytes, once per interval) instead of being held between probes.
pub(crate) struct Probe {
    endpoint: Endpoint,
    tls: TlsMaterial,
    path: Box<str>,
    timeout: Duration,
    http2: bool,
}

impl Probe {
    pub(super) fn new(endpoint: &Endpoint, settings: &HealthCheck, tls: TlsMaterial, http2: bool) -> Probe {
        let path = settings.path.as_str().into();
        Probe { endpoint: endpoint.clone(), tls, path, timeout: settings.timeout, http2 }
    }

    /// Probes once: the latency, or why the endpoint is not healthy.
    pub(super) async fn run(&self, connector: &Connector) -> Result<Duration, String> {
        let start = Instant::now();
        match tokio::time::timeout(self.timeout, self.exchange(connector)).await {
            Ok(Ok(200)) => Ok(start.elapsed()),
            Ok(Ok(status)) => Err(format!("health check answered {status}")),
            Ok(Err(e)) => Err(probe_error(&e)),
            Err(_) => Err(format!("no answer within {}", humantime::format_duration(self.timeout))),
        }
    }

    /// One GET on a fresh connection; the status.
    async fn exchange(&self, connector: &Connector) -> pingora::Result<u16> {
        let endpoint = &self.endpoint;
        let sni = if endpoint.tls { endpoint.host.clone() } else { String::new() };
        let mut peer = HttpPeer::new(endpoint.addr, endpoint.tls, sni);
        peer.options.connection_timeout = Some(self.timeout);
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        self.tls.apply(&mut peer);
        version::apply(&mut peer, self.http2);
        // One stream per HTTP/2 connection: the connection is not pooled,
        // so every probe connects afresh, as in HTTP/1.1.
        peer.options.max_h2_streams = 1;
        let mut request = RequestHeader::build("GET", self.path.as_bytes(), None)?;
        request.insert_header(http::header::HOST, endpoint.authority())?;
        request.insert_header(http::header::USER_AGENT, "mirador-router-health-check")?;
        if self.http2 {
            // HTTP/2 has no `Connection` header; its `:scheme` is the endpoint's
            // (Pingora's client would say https for a Host-only request).
            let scheme = if endpoint.tls { "https" } else { "http" };
            let uri = http::Uri::builder().scheme(scheme).authority(endpoint.authority()).path_and_query(&*self.path);
            request.set_uri(
                uri.build().map_err(|e| {
                    pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "health check URI", e)
                })?,
            );
        } else {
            request.insert_header(http::header::CONNECTION, "close")?;
        }

        let (mut session, _) = connector.get_http_session(&peer).await?;
        session.set_write_timeout(Some(self.timeout));
        session.write_request_header(Box::new(request)).await?;
        session.finish_request_body().await?;
        session.set_read_timeout(Some(self.timeout));
        session.read_response_header().await?;
        let status = session.response_header().map_or(0, |r| r.status.as_u16());
        while session.read_response_body().await?.is_some() {}
        Ok(status)
    }
}

/// A reason for the admin API and the log: the error kind, and every cause
/// in its chain that says more (Pingora keeps TLS verdicts such as
/// `UnknownIssuer` a few causes deep).
fn probe_error(e: &pingora::Error) -> String {
    let mut reason = match e.etype() {
        pingora::ErrorType::CustomCode(_, code) => format!("health check answered {code}"),
        other => other.as_str().to_string(),
    };
    if let Some(context) = e.context.as_ref().map(|c| c.as_str()).filter(|c| !c.is_empty()) {
        reason = format!("{reason}: {context}");
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.cause.as_deref().map(|c| c as _);
    while let Some(inner) = cause {
        // Pingora chains its own errors boxed.
        let nested = inner
            .downcast_ref::<Box<pingora::Error>>()
            .map(|b| &**b)
            .or_else(|| inner.downcast_ref::<pingora::Error>());
        let text = match nested {
            Some(pingora_error) => pingora_error.context.as_ref().map(|c| c.as_str().to_string()).unwrap_or_default(),
            None => inner.to_string(),
        };
        if !text.is_empty() && !reason.contains(&text) {
            reason = format!("{reason}: {text}");
        }
        cause = match nested {
            Some(pingora_error) => pingora_error.cause.as_deref().map(|c| c as _),
            None => inner.source(),
        };
    }
    reason.chars().take(300).collect()
}
