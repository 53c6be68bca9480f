//! TLS at the edge: the certificates each TLS listener hands out, chosen per
//! handshake by the SNI name, and swapped whole on reload — new handshakes
//! get the new certificates, established connections keep theirs.
//!
//! Pingora's rustls listener takes a `ResolvesServerCert` (0.9.1,
//! `TlsSettings::set_cert_resolver`); each listener's is a [`Certificates`]
//! holding its set behind an `ArcSwap`. The TLS versions are Pingora's: 1.2
//! and 1.3 only.
//!
//! Client certificates: a listener with `client_ca_file` asks for one (or
//! needs one) through a [`ClientAuth`] verifier, also swapped on reload;
//! after the handshake, [`Names`] reads the verified leaf's names (SAN URIs,
//! SAN DNS names, CN) into the connection's TLS digest, where the proxy
//! finds them for every request of the connection. The OTLP/gRPC listener
//! gets a rustls config over the same resolver and verifier
//! ([`Edge::grpc_server_config`]) and reads the names itself.

use crate::config::{ClientCertificates, ServedCertificate, TlsListener};
use crate::metrics::Metrics;
use arc_swap::{ArcSwap, ArcSwapOption};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::any::Any;
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

/// The client certificate verifier of one TLS listener: none asked for
/// while the listener has no `client_ca_file`; swapped whole on reload.
#[derive(Debug, Default)]
pub struct ClientAuth {
    current: ArcSwapOption<ClientCertificates>,
}

impl ClientAuth {
    fn verifier(&self) -> Result<Arc<ClientCertificates>, rustls::Error> {
        self.current.load_full().ok_or(rustls::Error::General("no client certificates are asked for".into()))
    }
}

impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        self.current.load().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current.load().as_ref().is_some_and(|clients| clients.required)
    }

    /// No hints: a client sends the certificate it has (RFC 8446, 4.2.4).
    /// Hints would be borrowed from a verifier a reload may swap.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()?.verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().as_ref().map(|clients| clients.verifier.supported_verify_schemes()).unwrap_or_default()
    }
}

/// Most names read from one client certificate.
pub const MAX_CLIENT_NAMES: usize = 32;

/// The names of a connection's verified client certificate, in the form
/// tenants list them (`client_cert_subjects`): SAN URIs as written, SAN DNS
/// names and the CN in lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientNames(pub Vec<String>);

impl ClientNames {
    /// The names of a DER certificate (at most [`MAX_CLIENT_NAMES`]), or
    /// `None` when it does not parse.
    pub fn of(der: &[u8]) -> Option<ClientNames> {
        use x509_parser::extensions::GeneralName;
        let (_, leaf) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = leaf.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => names.push(uri.to_string()),
                    GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                    _ => {}
                }
            }
        }
        let cn = leaf.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
        names.extend(cn.map(str::to_ascii_lowercase));
        names.truncate(MAX_CLIENT_NAMES);
        Some(ClientNames(names))
    }
}

/// Puts the client certificate's names into the TLS digest after each
/// handshake (only a verified certificate gets this far).
struct Names;

#[async_trait::async_trait]
impl TlsAccept for Names {
    async fn handshake_complete_callback(&self, tls: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let names = ClientNames::of(tls.peer_certificate_der()?)?;
        Some(Arc::new(names))
    }
}

/// One TLS listener's swappable state.
struct Running {
    certificates: Arc<Certificates>,
    clients: Arc<ClientAuth>,
}

/// Every TLS listener's certificates, by address.
pub struct Edge {
    listeners: HashMap<SocketAddr, Running>,
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
                let certificates = Arc::new(Certificates { current: ArcSwap::from_pointee(set) });
                let clients =
                    Arc::new(ClientAuth { current: ArcSwapOption::from(listener.clients.clone().map(Arc::new)) });
                Some((listener.listen, Running { certificates, clients }))
            })
            .collect();
        let edge = Edge { listeners, metrics };
        edge.record_expiry(configured);
        edge
    }

    /// Pingora's settings for `listener`: its resolver, its client
    /// certificate verifier (which asks for none without a CA file), the
    /// callback that reads a client certificate's names, HTTP/2 by ALPN when on.
    pub fn settings(&self, listener: &TlsListener) -> Option<TlsSettings> {
        let running = self.listeners.get(&listener.listen)?;
        let mut settings = TlsSettings::with_callbacks(Box::new(Names)).ok()?;
        settings.set_cert_resolver(running.certificates.clone());
        settings.set_client_cert_verifier(running.clients.clone());
        if listener.http2 {
            settings.enable_h2();
        }
        Some(settings)
    }

    /// A rustls server config with `listen`'s resolver and client
    /// certificate verifier (so a reload swaps them here too), offering
    /// HTTP/2 only: the OTLP/gRPC listener's TLS. `None` when no TLS
    /// listener is on `listen`.
    pub fn grpc_server_config(&self, listen: SocketAddr) -> Option<Arc<rustls::ServerConfig>> {
        let running = self.listeners.get(&listen)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .ok()?;
        let mut config =
            builder.with_client_cert_verifier(running.clients.clone()).with_cert_resolver(running.certificates.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Some(Arc::new(config))
    }

    /// Swaps in the certificates of `listeners` (a reload's) for the TLS
    /// listeners running; what cannot change without a restart (a TLS
    /// listener added or removed) is returned to be reported.
    pub fn apply(&self, listeners: &[TlsListener]) -> Vec<String> {
        let mut notes = Vec::new();
        for listener in listeners {
            match (self.listeners.get(&listener.listen), Set::new(&listener.certificates)) {
                (Some(running), Some(set)) => {
                    running.certificates.current.store(Arc::new(set));
                    running.clients.current.store(listener.clients.clone().map(Arc::new));
                }
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
