//! TLS at the edge: the certificates each TLS listener hands out, chosen per
//! handshake by the SNI name, and swapped whole on reload — new handshakes
//! get the new certificates, established connections keep theirs.
//!
//! Pingora's rustls listener takes a `ResolvesServerCert` (0.9.1,
//! `TlsSettings::set_cert_resolver`); each listener's is a [`Certificates`]
//! holding its set behind an `ArcSwap`. The TLS versions are Pingora's: 1.2
//! and 1.3 only.

use crate::config::{ServedCertificate, TlsListener};
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// One listener's certificates: the first is the default (no SNI, or a
/// name none matches); the others by their DNS names, `*.` wildcards
/// matching one label.
#[derive(Debug)]
struct Set {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
    wildcards: HashMap<String, Arc<CertifiedKey>>,
}

impl Set {
    fn new(certificates: &[ServedCertificate]) -> Option<Set> {
        let default = certificates.first()?.certified.clone();
        let (mut by_name, mut wildcards) = (HashMap::new(), HashMap::new());
        // The first certificate naming a name serves it.
        for certificate in certificates {
            for name in &certificate.names {
                let table = match name.strip_prefix("*.") {
                    Some(parent) => wildcards.entry(parent.to_string()),
                    None => by_name.entry(name.clone()),
                };
                table.or_insert_with(|| certificate.certified.clone());
            }
        }
        Some(Set { default, by_name, wildcards })
    }

    fn choose(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(str::to_ascii_lowercase) else { return self.default.clone() };
        if let Some(exact) = self.by_name.get(&name) {
            return exact.clone();
        }
        let parent = name.split_once('.').map(|(_, parent)| parent);
        parent.and_then(|parent| self.wildcards.get(parent)).unwrap_or(&self.default).clone()
    }
}

/// The certificate resolver of one TLS listener.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<Set>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().choose(hello.server_name()))
    }
}

/// Every TLS listener's certificates, by address.
pub struct Edge {
    listeners: HashMap<SocketAddr, Arc<Certificates>>,
    metrics: Option<Arc<Metrics>>,
}

impl Edge {
    /// The resolvers for the TLS listeners of a validated config (each has
    /// at least one certificate).
    pub fn new(configured: &[TlsListener], metrics: Option<Arc<Metrics>>) -> Edge {
        let listeners = configured
            .iter()
            .filter_map(|listener| {
                let set = Set::new(&listener.certificates)?;
                Some((listener.listen, Arc::new(Certificates { current: ArcSwap::from_pointee(set) })))
            })
            .collect();
        let edge = Edge { listeners, metrics };
        edge.record_expiry(configured);
        edge
    }

    /// Pingora's settings for `listener`: its resolver, HTTP/2 by ALPN when on.
    pub fn settings(&self, listener: &TlsListener) -> Option<TlsSettings> {
        let resolver = self.listeners.get(&listener.listen)?.clone();
        // The paths are unused: a resolver is set.
        let mut settings = TlsSettings::intermediate("", "").ok()?;
        settings.set_cert_resolver(resolver);
        if listener.http2 {
            settings.enable_h2();
        }
        Some(settings)
    }

    /// Swaps in the certificates of `listeners` (a reload's) for the TLS
    /// listeners running; what cannot change without a restart (a TLS
    /// listener added or removed) is returned to be reported.
    pub fn apply(&self, listeners: &[TlsListener]) -> Vec<String> {
        let mut notes = Vec::new();
        for listener in listeners {
            match (self.listeners.get(&listener.listen), Set::new(&listener.certificates)) {
                (Some(running), Some(set)) => running.current.store(Arc::new(set)),
                _ => notes.push(format!("TLS listener {} is new: it starts with a restart", listener.listen)),
            }
        }
        for running in self.listeners.keys().filter(|addr| !listeners.iter().any(|l| l.listen == **addr)) {
            notes.push(format!("TLS listener {running} is gone from the config: it stops with a restart"));
        }
        self.record_expiry(listeners);
        notes
    }

    /// Sets each served certificate's expiry gauge (and drops the others').
    fn record_expiry(&self, listeners: &[TlsListener]) {
        let Some(metrics) = &self.metrics else { return };
        let gauge = metrics.tls_certificate_expiry();
        gauge.reset();
        for listener in listeners.iter().filter(|l| self.listeners.contains_key(&l.listen)) {
            for certificate in &listener.certificates {
                let labels = [listener.listen.to_string(), certificate.subject.clone()];
                gauge.with_label_values(&labels).set(certificate.not_after as f64);
            }
        }
    }
}
