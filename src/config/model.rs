//! The validated configuration: what the rest of the router works from.
//!
//! Serde never sees these types. A value of [`Config`] has passed every check
//! of [`super::validate`]: addresses parsed, durations positive, every
//! enabled signal has a deployment, every endpoint resolved.

use super::raw::{AccessLogFormat, MigrationPhase, TenantStatus, WritePolicy};
use crate::api::{AdminOp, Signal, VictoriaTenant};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: Server,
    pub admin: Admin,
    pub tenancy: Tenancy,
    pub health_check: HealthCheck,
    pub observability: Observability,
    /// Where tenants live: the file or etcd (a restart applies a change).
    pub store: Store,
    /// Boxed in an `Arc`: a `Tenant` is over a kilobyte, and B-tree nodes
    /// filled in key order are half empty (README, Performance).
    pub tenants: BTreeMap<String, std::sync::Arc<Tenant>>,
    /// What is valid but needs an operator's eye (a certificate about to
    /// expire): printed by `--check`, logged at start and on reload.
    pub warnings: Vec<String>,
    /// DNS discovery: the resolvers and every name's answer in force.
    pub dns: Dns,
    /// Where rate quotas are kept: this router or Redis (a restart applies a change).
    pub quotas: QuotaBackend,
}

/// `[dns]` and the answers the deployments' `dns` names were built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    /// Empty: the system's resolvers.
    pub nameservers: Vec<SocketAddr>,
    /// Every `dns` entry of every deployment (migration targets too).
    pub answers: super::dns::Answers,
}

impl Config {
    /// Every `dns` name in force and how often it is looked up again: the
    /// shortest `dns_refresh` of the deployments (migration targets too)
    /// that list it.
    pub fn dns_refresh(&self) -> BTreeMap<&str, Duration> {
        let deployments = self.tenants.values().flat_map(|t| Signal::ALL.into_iter().filter_map(|s| t.deployment(s)));
        let with_target = deployments.flat_map(|d| std::iter::once(d).chain(d.migration.as_deref().map(|m| &m.to)));
        let mut every = BTreeMap::new();
        for deployment in with_target {
            for name in &deployment.dns {
                let at = every.entry(name.as_str()).or_insert(deployment.dns_refresh);
                *at = (*at).min(deployment.dns_refresh);
            }
        }
        every
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observability {
    /// Whether requests are counted and `/metrics` is served.
    pub metrics: bool,
    pub access_log: AccessLogFormat,
    /// Whether access log paths keep their query string.
    pub access_log_query: bool,
    /// How often tenant usage is read from the deployments; `None`: never.
    pub usage_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Unified listeners: the path decides the signal.
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    /// Drop-in listeners: every request on one is that signal.
    pub signal_listeners: Vec<(Signal, SocketAddr)>,
    /// How long in-flight requests get to finish after SIGTERM.
    pub grace_period: Duration,
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    /// Pingora's tokio work stealing between worker threads.
    pub work_stealing: bool,
    /// What one client may hold of the proxy listeners.
    pub clients: ClientLimits,
    /// Whether the plain listeners also take HTTP/2 with prior knowledge (h2c).
    pub http2: bool,
    /// TLS listeners (unified): the path decides the signal.
    pub tls: Vec<TlsListener>,
    /// The OTLP/gRPC listener, when on: the gRPC method decides the signal.
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// The `[[server.tls]]` listener whose certificates and client CA the
    /// OTLP/gRPC listener serves TLS with; h2c when `None`.
    pub otlp_grpc_tls: Option<SocketAddr>,
}

impl Server {
    /// Every address the router serves clients on: unified, drop-in, TLS
    /// and OTLP/gRPC listeners (the admin listener is not among them).
    pub fn listeners(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.listen
            .iter()
            .copied()
            .chain(self.signal_listeners.iter().map(|(_, addr)| *addr))
            .chain(self.tls.iter().map(|tls| tls.listen))
            .chain(self.otlp_grpc_listen)
    }
}

/// A TLS listener: its certificates (the first the default, the others
/// chosen by the SNI name against their DNS names), HTTP/2 by ALPN.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub certificates: Vec<ServedCertificate>,
    pub http2: bool,
    /// Client certificates the listener asks for, when it has a `client_ca_file`.
    pub clients: Option<ClientCertificates>,
}

/// How a TLS listener verifies client certificates: the CAs of
/// `client_ca_file`, and whether a client must present one.
#[derive(Clone)]
pub struct ClientCertificates {
    pub ca_file: String,
    pub required: bool,
    /// Checks a presented chain against the CAs (rustls' WebPKI verifier).
    pub verifier: std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// SHA-256 over the CA certificates: equal for equal material.
    pub fingerprint: [u8; 32],
}

impl PartialEq for ClientCertificates {
    fn eq(&self, other: &Self) -> bool {
        (&self.ca_file, self.required, self.fingerprint) == (&other.ca_file, other.required, other.fingerprint)
    }
}

impl std::fmt::Debug for ClientCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificates").field("ca_file", &self.ca_file).field("required", &self.required).finish()
    }
}

/// A certificate a TLS listener serves: its chain and key, parsed and
/// checked to match, and what operators see of it.
#[derive(Clone)]
pub struct ServedCertificate {
    pub cert_file: String,
    /// The leaf's subject, as shown in metrics and logs.
    pub subject: String,
    /// The leaf's DNS names (SANs; the CN when it has none), for SNI.
    pub names: Vec<String>,
    /// The leaf's `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
    pub certified: std::sync::Arc<rustls::sign::CertifiedKey>,
    /// SHA-256 over the chain and key: equal for equal material.
    pub fingerprint: [u8; 32],
}

impl PartialEq for ServedCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.cert_file == other.cert_file && self.fingerprint == other.fingerprint
    }
}

impl std::fmt::Debug for ServedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedCertificate")
            .field("cert_file", &self.cert_file)
            .field("subject", &self.subject)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// What one client may hold of a proxy listener: connections, and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Longest a request head may take to arrive, from its first byte.
    pub request_header_timeout: Duration,
    /// Longest wait for a request on an open connection (keep-alive, or a new one).
    pub idle_timeout: Duration,
    /// Longest wait for the next bytes of a request body.
    pub body_timeout: Duration,
    /// Open connections per listener.
    pub max_connections: usize,
    /// Open connections per client address, per listener.
    pub max_connections_per_client: usize,
    /// Headers of one request, and their bytes (names, values and the target).
    pub max_request_headers: usize,
    pub max_request_header_bytes: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            request_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            max_request_headers: 100,
            max_request_header_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Bearer token every admin request but /health and /ready must carry.
    pub token: Option<Secret>,
    /// Reload when the config file's content changes.
    pub watch_config: bool,
}

/// A secret read from a file: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tenancy {
    /// The header naming the tenant, as a valid HTTP header name.
    pub header: http::HeaderName,
    /// Every tenant must prove itself with a credential, not the header alone.
    pub require_credentials: bool,
    /// JWT bearer tokens naming their tenant by a claim.
    pub jwt: Option<Jwt>,
}

/// How JWT bearer tokens are verified and read (`[tenancy.jwt]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Jwt {
    pub issuer: String,
    pub audience: String,
    /// Asymmetric only: never `none`, never HS*.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// The claim naming the tenant, as a path into nested objects.
    pub tenant_claim: Vec<String>,
    /// The claim that, when `true`, makes a token read-only.
    pub read_only_claim: Option<Vec<String>>,
    /// Tolerated clock skew for `exp` and `nbf`.
    pub leeway: Duration,
    pub source: JwksSource,
    /// How often the key set is read again (the last good set is kept).
    pub refresh: Duration,
    /// The key set as read at load; empty when a URL could not be fetched
    /// (then the last good set is kept, and refreshing goes on).
    pub keys: std::sync::Arc<KeySet>,
}

/// Where a JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(String),
    Url(String),
}

impl JwksSource {
    pub fn as_str(&self) -> &str {
        match self {
            JwksSource::File(path) | JwksSource::Url(path) => path,
        }
    }
}

/// The verification keys of a JWKS, by `kid`, each with the algorithms it may verify.
#[derive(Clone, Default)]
pub struct KeySet {
    pub keys: Vec<VerificationKey>,
    /// SHA-256 of the JWKS text the set was read from.
    pub fingerprint: [u8; 32],
}

#[derive(Clone)]
pub struct VerificationKey {
    pub kid: Option<String>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub key: jsonwebtoken::DecodingKey,
}

impl KeySet {
    /// The key for a token's `kid` and `alg`: the one with that `kid`, or
    /// the only key when the token names none.
    pub fn find(&self, kid: Option<&str>, algorithm: jsonwebtoken::Algorithm) -> Option<&VerificationKey> {
        let key = match kid {
            Some(kid) => self.keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        };
        key.filter(|key| key.algorithms.contains(&algorithm))
    }
}

impl PartialEq for KeySet {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|key| key.kid.as_deref().unwrap_or("-")).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

/// How an endpoint's health is judged: active probes and live traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    pub path: String,
    /// Consecutive successful probes that make a down endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failed probes that take a healthy endpoint down.
    pub unhealthy_threshold: u32,
    /// Consecutive failures of live traffic that eject an endpoint; 0: never.
    pub passive_failures: u32,
    /// How long an ejected endpoint stays out before a probe may re-admit it.
    pub ejection_cooldown: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
            path: "/health".to_string(),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            passive_failures: 3,
            ejection_cooldown: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub admin_email: Option<String>,
    pub status: TenantStatus,
    /// Indexed by [`Signal::index`].
    pub deployments: [Option<Deployment>; 3],
    pub quotas: Quotas,
    pub features: Features,
    /// Credentials that prove this tenant; when set, one is always needed.
    pub auth: Option<Auth>,
    /// The tier it inherits from (its own `tier`, or the default tier).
    pub tier: Option<String>,
}

/// SHA-256 digests of a tenant's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub bearer_sha256: Vec<[u8; 32]>,
    /// `(username, SHA-256 of the password)`.
    pub basic: Vec<(String, [u8; 32])>,
    /// Client certificate names (SAN URI, SAN DNS, CN) that prove the tenant.
    pub cert_subjects: Vec<String>,
}

impl Tenant {
    pub fn deployment(&self, signal: Signal) -> Option<&Deployment> {
        self.deployments[signal.index()].as_ref()
    }

    /// Whether some signal of the tenant is enabled and has a deployment.
    pub fn routes_something(&self) -> bool {
        Signal::ALL.into_iter().any(|s| self.features.allows(s) && self.deployment(s).is_some())
    }
}

/// One Victoria* deployment: the endpoints of one tenant's signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub endpoints: Vec<Endpoint>,
    pub backup_endpoints: Vec<Endpoint>,
    /// Longest wait for the upstream to make progress (connect, each read, each write).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Most upstream attempts one request makes (first try included).
    pub max_attempts: u32,
    /// Replay ingest requests on another endpoint after a failure once sent
    /// (possible duplicate samples where the backend does not deduplicate).
    pub retry_ingest: bool,
    pub namespace: Option<String>,
    /// `[health_check]` with this deployment's overrides applied.
    pub health_check: HealthCheck,
    /// Limits of this signal alone, on top of the tenant's.
    pub quotas: Option<Quotas>,
    /// The `Authorization` header value sent upstream instead of the client's.
    pub upstream_auth: Option<Secret>,
    pub tls: Option<UpstreamTls>,
    /// HTTP/2 to every endpoint (vmselect's too): ALPN h2 for `https://`,
    /// prior knowledge (h2c) for `http://`; else HTTP/1.1.
    pub http2: bool,
    /// On a shared multi-tenant cluster: the tenant's ids there (and, for
    /// metrics, vmselect: `endpoints` are then vminsert). `None`: dedicated.
    pub cluster: Option<SharedCluster>,
    /// The move of this signal to another deployment, when one is under way.
    pub migration: Option<Box<Migration>>,
    /// The deployment's OTLP/gRPC port(s): OTLP/gRPC exports are proxied
    /// there as gRPC; empty: re-sent as OTLP/HTTP to `endpoints`.
    pub otlp_grpc_endpoints: Vec<Endpoint>,
    /// Ingest to one endpoint or to every primary, and which answers count.
    pub write_policy: WritePolicy,
    /// Names whose addresses are primaries too (after `endpoints`), as written.
    pub dns: Vec<String>,
    /// How often `dns` is resolved again.
    pub dns_refresh: Duration,
}

/// A signal's move from its deployment to `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub to: Deployment,
    pub phase: MigrationPhase,
    /// Share of reads replayed to `to` and compared, in phase `shadow`.
    pub shadow_sample: f64,
    /// Larger request bodies are not copied (and counted).
    pub mirror_max_body: u64,
    /// The copies waiting for the other deployment, at most (entries, bytes).
    pub mirror_queue: usize,
    pub mirror_queue_bytes: u64,
}

impl Deployment {
    /// The deployment that serves: the one written, or a migration's `to`
    /// once it is `switched` or `done`.
    pub fn serving(&self) -> &Deployment {
        match &self.migration {
            Some(m) if matches!(m.phase, MigrationPhase::Switched | MigrationPhase::Done) => &m.to,
            _ => self,
        }
    }

    /// The deployment ingest requests are copied to: `to` while mirroring
    /// or shadowing, the old one once switched; none when done.
    pub fn mirror_target(&self) -> Option<&Deployment> {
        let m = self.migration.as_ref()?;
        match m.phase {
            MigrationPhase::Mirror | MigrationPhase::Shadow => Some(&m.to),
            MigrationPhase::Switched => Some(self),
            MigrationPhase::Done => None,
        }
    }
}

/// A tenant's place in a shared multi-tenant Victoria* cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedCluster {
    pub tenant: VictoriaTenant,
    /// vmselect of a VictoriaMetrics cluster; `None` for VictoriaLogs and
    /// VictoriaTraces, which take the ids as headers on every endpoint.
    pub select: Option<Endpoints>,
    /// The tenant this one knowingly shares its ids with.
    pub share_tenant_id_with: Option<String>,
}

/// The endpoints of one service: primaries and backups.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoints {
    pub endpoints: Vec<Endpoint>,
    pub backup_endpoints: Vec<Endpoint>,
}

impl Deployment {
    /// Every endpoint of the deployment, vmselect's included.
    pub fn all_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        let select = self.cluster.iter().flat_map(|c| c.select.iter());
        self.endpoints
            .iter()
            .chain(&self.backup_endpoints)
            .chain(select.flat_map(|s| s.endpoints.iter().chain(&s.backup_endpoints)))
    }

    /// The deployment of a shared metrics cluster's vmselect: this one with
    /// vmselect's endpoints.
    pub fn select_service(&self) -> Option<Deployment> {
        let select = self.cluster.as_ref()?.select.as_ref()?;
        Some(Deployment {
            endpoints: select.endpoints.clone(),
            backup_endpoints: select.backup_endpoints.clone(),
            ..self.clone()
        })
    }
}

/// TLS towards `https://` endpoints: CAs to trust (instead of the system's)
/// and an optional client certificate. Certificates are DER.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    pub ca: Vec<Vec<u8>>,
    /// Certificate chain (leaf first) and private key (DER).
    pub client: Option<(Vec<Vec<u8>>, Vec<u8>)>,
}

impl UpstreamTls {
    /// SHA-256 over every certificate and key, each prefixed by its length:
    /// equal for equal material, so it can stand for the material in keys.
    pub fn fingerprint(&self) -> [u8; 32] {
        let client = self.client.iter().flat_map(|(chain, key)| chain.iter().chain(std::iter::once(key)));
        // An empty item between the CAs and the client material.
        let cas = self.ca.iter().map(Vec::as_slice).chain(std::iter::once(&[][..]));
        der_fingerprint(cas.chain(client.map(Vec::as_slice)))
    }
}

/// SHA-256 over DER items, each prefixed by its length: equal for equal
/// sequences of material, so it can stand for the material.
pub(super) fn der_fingerprint<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for der in ders {
        hash.update((der.len() as u64).to_le_bytes());
        hash.update(der);
    }
    hash.finalize().into()
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("ca", &self.ca.len()).field("client", &self.client.is_some()).finish()
    }
}

/// One upstream address, parsed and resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Normalised `scheme://host:port`, as shown to operators.
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

impl Endpoint {
    /// The `Host` header the upstream expects: the port only when not the scheme's default.
    pub fn authority(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Limits of a tenant (or of one of its signals), per router instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Quotas {
    pub requests_per_second: Option<u32>,
    /// Requests allowed at once above the steady rate; default: one second's worth.
    pub burst: Option<u32>,
    pub max_concurrent_requests: Option<u32>,
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// Indexed by [`Signal::index`]: whether the tenant may use the signal.
    pub signals: [bool; 3],
    pub read_only: bool,
    /// Admin operations granted, sorted, each once; none for a read-only tenant.
    pub admin_api: Vec<AdminOp>,
}

impl Features {
    pub fn allows(&self, signal: Signal) -> bool {
        self.signals[signal.index()]
    }
}

/// Where tenants live.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Store {
    #[default]
    File,
    Etcd(EtcdSettings),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EtcdSettings {
    /// `http://host:port` of each member.
    pub endpoints: Vec<String>,
    /// Keys are `<prefix>tenants/<id>` and `<prefix>tiers/<name>`.
    pub prefix: String,
    pub credentials: Option<(String, Secret)>,
    pub timeout: Duration,
}

impl EtcdSettings {
    pub fn tenant_key(&self, id: &str) -> String {
        format!("{}tenants/{id}", self.prefix)
    }

    pub fn tier_key(&self, name: &str) -> String {
        format!("{}tiers/{name}", self.prefix)
    }
}

/// Where rate quotas are kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum QuotaBackend {
    /// Each router counts its own: a tenant's limit is per replica.
    #[default]
    Local,
    /// One GCRA per tenant (and signal) in Redis, shared by the fleet.
    Redis(RedisQuotas),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisQuotas {
    /// `redis://[user:password@]host:port[/db]`; a secret, since it may
    /// carry the password.
    pub url: Secret,
    /// Keys are `<prefix><tenant>` and `<prefix><tenant>/<signal>`.
    pub prefix: String,
    /// While Redis is unreachable each router admits rate / this.
    pub expected_replicas: u32,
    pub timeout: Duration,
}
