//! The validated configuration: what the rest of the router works from.
//!
//! Serde never sees these types. A value of [`Config`] has passed every check
//! of [`super::validate`]: addresses parsed, durations positive, every
//! enabled signal has a deployment, every endpoint resolved.

use super::raw::TenantStatus;
use crate::routing::Signal;
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
    pub tenants: BTreeMap<String, Tenant>,
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tenancy {
    /// The header naming the tenant, as a valid HTTP header name.
    pub header: http::HeaderName,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    pub path: String,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
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
}

impl Tenant {
    pub fn deployment(&self, signal: Signal) -> Option<&Deployment> {
        self.deployments[signal.index()].as_ref()
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
    pub namespace: Option<String>,
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

/// Per-tenant limits. Parsed and validated now; enforced by the quotas issue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas {
    pub requests_per_second: Option<u32>,
    pub max_concurrent_requests: Option<u32>,
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// Indexed by [`Signal::index`]: whether the tenant may use the signal.
    pub signals: [bool; 3],
    pub read_only: bool,
}

impl Features {
    pub fn allows(&self, signal: Signal) -> bool {
        self.signals[signal.index()]
    }
}
