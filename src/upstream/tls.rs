//! TLS towards `https://` endpoints, in the form Pingora's peers take.
//!
//! Built once per pool (and per probed endpoint) from the validated config, so no
//! certificate is parsed on the request path. Without a `tls` table an
//! `https://` endpoint is verified against the system's CAs.

use crate::config::UpstreamTls;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use std::sync::Arc;

/// A deployment's TLS settings in the form Pingora's peers take, built once per pool.
#[derive(Default, Clone)]
pub struct TlsMaterial {
    ca: Option<Arc<[WrappedX509]>>,
    client: Option<Arc<CertKey>>,
}

impl TlsMaterial {
    pub fn new(tls: Option<&UpstreamTls>) -> Self {
        let Some(UpstreamTls { ca, client }) = tls else { return TlsMaterial::default() };
        // The DER was parsed when the config was validated: `parse_x509` cannot fail here.
        let ca: Vec<WrappedX509> = ca.iter().map(|der| WrappedX509::new(der.clone(), parse_x509)).collect();
        TlsMaterial {
            ca: (!ca.is_empty()).then(|| Arc::from(ca)),
            client: client.as_ref().map(|(chain, key)| Arc::new(CertKey::new(chain.clone(), key.clone()))),
        }
    }
}

impl TlsMaterial {
    /// Sets the CAs and client certificate on a peer of an `https://` endpoint.
    pub fn apply(&self, peer: &mut HttpPeer) {
        if peer.is_tls() {
            peer.options.ca = self.ca.clone();
            peer.client_cert_key = self.client.clone();
        }
    }
}
