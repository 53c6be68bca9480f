//! The file format: serde structs that mirror the TOML one to one.
//!
//! Nothing here is trusted or defaulted beyond "absent": every field is an
//! `Option` or a plain container, and [`super::validate`] turns these into the
//! internal model. Unknown keys are errors (`deny_unknown_fields`) so that a
//! typo never silently changes behaviour.

use crate::api::{AdminOp, Signal};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub tenancy: RawTenancy,
    #[serde(default)]
    pub health_check: RawHealthCheck,
    #[serde(default)]
    pub observability: RawObservability,
    #[serde(default)]
    pub tenants: BTreeMap<String, RawTenant>,
    #[serde(default)]
    pub tiers: BTreeMap<String, RawTier>,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub quotas: RawQuotaBackend,
}

/// `[dns]`: where the names of `dns = [...]` are resolved.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// `ip:port` of each nameserver; empty: the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub nameservers: Vec<String>,
}

/// Settings tenants inherit by naming the tier: each key the tenant does
/// not set itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    #[serde(default)]
    pub quotas: RawQuotas,
    #[serde(default)]
    pub features: RawFeatures,
    /// Per deployment, under its own `health_check` overrides.
    pub health_check: Option<RawHealthCheck>,
    pub metrics: Option<RawTierSignal>,
    pub logs: Option<RawTierSignal>,
    pub traces: Option<RawTierSignal>,
}

/// What a tier sets for one signal's deployment.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTierSignal {
    pub timeout: Option<String>,
    pub max_attempts: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawObservability {
    pub metrics: Option<bool>,
    pub access_log: Option<AccessLogFormat>,
    pub access_log_query: Option<bool>,
    /// How often each deployment's own /metrics is read for tenant usage ("0s": never).
    pub usage_interval: Option<String>,
}

/// How access log lines are written (to stdout), or not at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    #[default]
    Off,
    Json,
    Logfmt,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Vec<String>>,
    pub threads: Option<i64>,
    #[serde(default)]
    pub signal_listeners: RawSignalListeners,
    pub grace_period: Option<String>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub work_stealing: Option<bool>,
    pub request_header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub max_connections: Option<i64>,
    pub max_connections_per_client: Option<i64>,
    pub max_request_headers: Option<i64>,
    pub max_request_header_bytes: Option<i64>,
    /// HTTP/2 with prior knowledge (h2c) on the plain listeners, besides HTTP/1.1.
    pub http2: Option<bool>,
    /// TLS listeners (unified): `[[server.tls]]`.
    pub tls: Option<Vec<RawTlsListener>>,
    /// OTLP over gRPC for every signal; off when absent.
    pub otlp_grpc_listen: Option<String>,
    /// TLS on the OTLP/gRPC listener with the certificates (and client CA)
    /// of the `[[server.tls]]` listener at this address.
    pub otlp_grpc_tls: Option<String>,
}

/// One TLS listener: its address and certificates (the first the default,
/// the others chosen by SNI), HTTP/2 offered by ALPN.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsListener {
    pub listen: Option<String>,
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    pub http2: Option<bool>,
    /// PEM file of the CAs that sign client certificates: asks clients for one.
    pub client_ca_file: Option<String>,
    pub client_cert: Option<ClientCertMode>,
}

/// Whether a TLS listener with `client_ca_file` needs a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    Optional,
    #[default]
    Required,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignalListeners {
    pub metrics: Option<String>,
    pub logs: Option<String>,
    pub traces: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub watch_config: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenancy {
    pub header: Option<String>,
    pub require_credentials: Option<bool>,
    /// The tier of tenants that name none.
    pub default_tier: Option<String>,
    pub jwt: Option<RawJwt>,
}

/// JWT bearer tokens (OIDC access tokens) as tenant credentials.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub tenant_claim: Option<String>,
    pub read_only_claim: Option<String>,
    pub leeway: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub path: Option<String>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
    pub passive_failures: Option<i64>,
    pub ejection_cooldown: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub name: Option<String>,
    pub admin_email: Option<String>,
    pub status: Option<TenantStatus>,
    /// The tier whose settings the tenant inherits (else `tenancy.default_tier`).
    pub tier: Option<String>,
    pub metrics: Option<RawDeployment>,
    pub logs: Option<RawDeployment>,
    pub traces: Option<RawDeployment>,
    #[serde(default)]
    pub quotas: RawQuotas,
    #[serde(default)]
    pub features: RawFeatures,
    pub auth: Option<RawAuth>,
}

/// Credentials that prove a tenant: hashes only, never plaintext.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub bearer_tokens_sha256: Vec<String>,
    /// A file with one hex SHA-256 per line.
    pub bearer_tokens_sha256_file: Option<String>,
    #[serde(default)]
    pub basic_auth: Vec<RawBasicUser>,
    /// Client certificate names (SAN URI, SAN DNS or CN) that prove the tenant.
    #[serde(default)]
    pub client_cert_subjects: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicUser {
    pub username: String,
    pub password_sha256: String,
}

/// Credentials the router sends to a deployment, read from the environment
/// or a file: never written in the config itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamAuth {
    pub bearer_token_env: Option<String>,
    pub bearer_token_file: Option<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
}

/// Whether a tenant's requests are served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    #[default]
    Active,
    Suspended,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub backup_endpoints: Vec<String>,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub max_attempts: Option<i64>,
    pub retry_ingest: Option<bool>,
    pub namespace: Option<String>,
    pub health_check: Option<RawHealthCheck>,
    pub quotas: Option<RawQuotas>,
    pub upstream_auth: Option<RawUpstreamAuth>,
    pub tls: Option<RawUpstreamTls>,
    /// A shared multi-tenant cluster: the tenant's Victoria ids there.
    pub account_id: Option<i64>,
    pub project_id: Option<i64>,
    /// A shared VictoriaMetrics cluster's vminsert and vmselect, instead of `endpoints`.
    pub insert_endpoints: Option<Vec<String>>,
    pub insert_backup_endpoints: Option<Vec<String>>,
    pub select_endpoints: Option<Vec<String>>,
    pub select_backup_endpoints: Option<Vec<String>>,
    /// The tenant this one knowingly shares its Victoria ids with.
    pub share_tenant_id_with: Option<String>,
    /// Speak HTTP/2 to the endpoints: ALPN h2 for `https://`, prior knowledge (h2c) for `http://`.
    pub http2: Option<bool>,
    /// Carrying this signal to another deployment.
    pub migration: Option<Box<RawMigration>>,
    /// The deployment's own OTLP/gRPC port (VictoriaTraces' `-otlpGRPCListenAddr`):
    /// OTLP/gRPC exports are proxied there as gRPC instead of re-sent as OTLP/HTTP.
    pub otlp_grpc_endpoints: Option<Vec<String>>,
    /// Ingest to one endpoint, or to every primary (`all`, `quorum`).
    pub write_policy: Option<WritePolicy>,
    /// Names whose addresses are primaries too: `name:port` (A/AAAA) or
    /// `srv+_service._tcp.name` (SRV), re-resolved every `dns_refresh`.
    pub dns: Option<Vec<String>>,
    pub dns_refresh: Option<String>,
}

/// `[tenants.<id>.<signal>.migration]`: the deployment the signal moves to,
/// and how far it has come.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMigration {
    pub to: RawDeployment,
    pub phase: MigrationPhase,
    pub shadow_sample: Option<f64>,
    pub mirror_max_body: Option<i64>,
    pub mirror_queue: Option<i64>,
    pub mirror_queue_bytes: Option<i64>,
}

/// Which of a deployment's primaries an ingest request goes to, and which
/// answers make it a success: `one` (any one endpoint, as reads), `all`
/// (every primary took it), `quorum` (a majority of the primaries did).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WritePolicy {
    #[default]
    One,
    All,
    Quorum,
}

impl WritePolicy {
    /// Answers of `primaries` needed for a success.
    pub fn needed(self, primaries: usize) -> usize {
        match self {
            WritePolicy::One => 1,
            WritePolicy::All => primaries,
            WritePolicy::Quorum => primaries / 2 + 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WritePolicy::One => "one",
            WritePolicy::All => "all",
            WritePolicy::Quorum => "quorum",
        }
    }
}

/// Where a migration is: `mirror` (writes copied to `to`), `shadow` (and a
/// sample of reads compared), `switched` (`to` serves, writes copied back),
/// `done` (the old deployment is forgotten).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPhase {
    Mirror,
    Shadow,
    Switched,
    Done,
}

impl MigrationPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationPhase::Mirror => "mirror",
            MigrationPhase::Shadow => "shadow",
            MigrationPhase::Switched => "switched",
            MigrationPhase::Done => "done",
        }
    }
}

/// How the router verifies `https://` endpoints, and proves itself to them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM file of the CAs that sign the endpoints' certificates.
    pub ca_file: Option<String>,
    /// PEM certificate chain and key for mutual TLS.
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotas {
    pub requests_per_second: Option<i64>,
    pub burst: Option<i64>,
    pub max_concurrent_requests: Option<i64>,
    pub max_body_bytes: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatures {
    pub signals: Option<Vec<Signal>>,
    pub read_only: Option<bool>,
    /// Admin operations of the deployments the tenant may call.
    pub admin_api: Option<Vec<AdminOp>>,
}

/// `[store]`: where tenants and tiers live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    File,
    Etcd,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: Option<StoreKind>,
    pub endpoints: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    /// Deadline of each etcd call (connect, read, write).
    pub timeout: Option<String>,
}

/// `[quotas]`: where rate quotas are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaBackendKind {
    #[default]
    Local,
    Redis,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotaBackend {
    pub backend: Option<QuotaBackendKind>,
    pub url: Option<String>,
    pub prefix: Option<String>,
    /// The fallback while Redis is unreachable is rate / this.
    pub expected_replicas: Option<i64>,
    /// Deadline of each Redis call (connect, lease).
    pub timeout: Option<String>,
}
