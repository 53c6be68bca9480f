//! What a config refers to outside its own text — files (admin token, token
//! hashes, upstream credentials, TLS material), environment variables and
//! the addresses of endpoint host names — gathered once, before validation.
//!
//! [`Inputs::gather`] is the only I/O of config loading; validation then
//! reads these plain values, so it is a pure function of text and inputs
//! and tests give it inputs of their own ([`Inputs::with_file`], ...).

use super::dns::{self, Answer, Answers};
use super::raw::{RawConfig, RawDeployment, RawUpstreamAuth, RawUpstreamTls};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Not `Debug`: it holds secrets.
#[derive(Clone, Default)]
pub struct Inputs {
    /// File path → its bytes, or why it could not be read.
    files: HashMap<String, Result<Vec<u8>, String>>,
    /// Variable name → its value, when set.
    env: HashMap<String, String>,
    /// (host, port) → the first address it resolved to.
    addresses: HashMap<(String, u16), SocketAddr>,
    /// Each `dns` entry → its answer (or the last good one, when it failed).
    answers: Answers,
    /// The time of the gathering, in seconds since the Unix epoch: what
    /// certificate lifetimes are checked against (0 when not gathered).
    now: i64,
}

impl Inputs {
    /// Reads every file, variable and host name `raw` refers to.
    pub fn gather(raw: &RawConfig) -> Inputs {
        Self::gather_keeping(raw, &Answers::new())
    }

    /// [`Inputs::gather`], where a `dns` name that fails now keeps its
    /// addresses in `kept` (the answers in force), with the error beside them.
    pub fn gather_keeping(raw: &RawConfig, kept: &Answers) -> Inputs {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let mut inputs = Inputs { now: now.map_or(0, |since| since.as_secs() as i64), ..Inputs::default() };
        if let Some(file) = &raw.admin.token_file {
            inputs.read_file(file);
        }
        for listener in raw.server.tls.iter().flatten() {
            for certificate in &listener.certificates {
                inputs.read_file(&certificate.cert_file);
                inputs.read_file(&certificate.key_file);
            }
            if let Some(file) = &listener.client_ca_file {
                inputs.read_file(file);
            }
        }
        if let Some(jwt) = &raw.tenancy.jwt {
            if let Some(file) = &jwt.jwks_file {
                inputs.read_file(file);
            }
            if let Some(url) = &jwt.jwks_url {
                inputs.files.insert(url.clone(), fetch(url));
            }
        }
        inputs.read_env(raw.store.password_env.as_deref());
        if let Some(file) = &raw.store.password_file {
            inputs.read_file(file);
        }
        for tenant in raw.tenants.values() {
            if let Some(file) = tenant.auth.as_ref().and_then(|auth| auth.bearer_tokens_sha256_file.as_ref()) {
                inputs.read_file(file);
            }
            for deployment in [&tenant.metrics, &tenant.logs, &tenant.traces].into_iter().flatten() {
                inputs.gather_deployment(deployment);
            }
        }
        let nameservers: Vec<SocketAddr> = raw.dns.nameservers.iter().filter_map(|n| n.parse().ok()).collect();
        let deployments = raw.tenants.values().flat_map(|t| [&t.metrics, &t.logs, &t.traces]).flatten();
        let with_targets = deployments.flat_map(|d| std::iter::once(d).chain(d.migration.as_ref().map(|m| &m.to)));
        let entries: std::collections::BTreeSet<&str> =
            with_targets.flat_map(|d| d.dns.iter().flatten()).map(String::as_str).collect();
        inputs.answers = dns::resolve(entries, &nameservers, kept);
        inputs
    }

    fn gather_deployment(&mut self, deployment: &RawDeployment) {
        // Every endpoint list: a shared metrics cluster's vminsert and vmselect too.
        let cluster = [
            &deployment.insert_endpoints,
            &deployment.insert_backup_endpoints,
            &deployment.select_endpoints,
            &deployment.select_backup_endpoints,
        ];
        let grpc = deployment.otlp_grpc_endpoints.iter().flatten();
        let urls = deployment.endpoints.iter().chain(&deployment.backup_endpoints).chain(grpc);
        for url in urls.chain(cluster.into_iter().flatten().flatten()) {
            let Some((host, port)) = url::Url::parse(url).ok().as_ref().and_then(host_to_resolve) else { continue };
            if let Ok(Some(addr)) = (host.as_str(), port).to_socket_addrs().map(|mut found| found.next()) {
                self.addresses.insert((host, port), addr);
            }
        }
        if let Some(auth) = &deployment.upstream_auth {
            let RawUpstreamAuth { bearer_token_env, bearer_token_file, username: _, password_env, password_file } =
                auth;
            for name in [bearer_token_env, password_env].into_iter().flatten() {
                if let Ok(value) = std::env::var(name) {
                    self.env.insert(name.clone(), value);
                }
            }
            for file in [bearer_token_file, password_file].into_iter().flatten() {
                self.read_file(file);
            }
        }
        if let Some(tls) = &deployment.tls {
            let RawUpstreamTls { ca_file, client_cert_file, client_key_file } = tls;
            for file in [ca_file, client_cert_file, client_key_file].into_iter().flatten() {
                self.read_file(file);
            }
        }
    }

    pub(super) fn read_env(&mut self, name: Option<&str>) {
        if let Some(value) = name.and_then(|name| std::env::var(name).ok()) {
            self.env.insert(name.unwrap_or_default().to_string(), value);
        }
    }

    pub(super) fn read_file(&mut self, path: &str) {
        if !self.files.contains_key(path) {
            let read = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"));
            self.files.insert(path.to_string(), read);
        }
    }

    /// The same inputs at time `now` (seconds since the Unix epoch).
    pub fn with_now(mut self, now: i64) -> Self {
        self.now = now;
        self
    }

    pub(super) fn now(&self) -> i64 {
        self.now
    }

    /// The same inputs with `path` holding `bytes`.
    pub fn with_file(mut self, path: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.files.insert(path.to_string(), Ok(bytes.into()));
        self
    }

    /// The same inputs with the environment variable `name` set to `value`.
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_string(), value.to_string());
        self
    }

    /// The same inputs with `host` (at `port`) resolving to `addr`.
    pub fn with_address(mut self, host: &str, port: u16, addr: SocketAddr) -> Self {
        self.addresses.insert((host.to_string(), port), addr);
        self
    }

    /// The same inputs with the `dns` entry `entry` answered by `answer`.
    pub fn with_answer(mut self, entry: &str, answer: Answer) -> Self {
        self.answers.insert(entry.to_string(), answer);
        self
    }

    /// The answer of a `dns` entry; `None` when it was not looked up.
    pub(super) fn answer(&self, entry: &str) -> Option<&Answer> {
        self.answers.get(entry)
    }

    /// Every answer gathered, for the model to keep.
    pub(super) fn answers(&self) -> &Answers {
        &self.answers
    }

    /// A file's bytes, or why there are none.
    pub(super) fn bytes(&self, path: &str) -> Result<&[u8], String> {
        match self.files.get(path) {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!("cannot read {path}: not found")),
        }
    }

    /// A file's text, or why there is none.
    pub(super) fn text(&self, path: &str) -> Result<&str, String> {
        std::str::from_utf8(self.bytes(path)?).map_err(|e| format!("{path} is not UTF-8 text: {e}"))
    }

    pub(super) fn env(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    pub(super) fn address(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self.addresses.get(&(host.to_string(), port)).copied()
    }
}

/// Most bytes of a JWKS document.
pub const MAX_JWKS_BYTES: u64 = 1024 * 1024;
/// Longest a JWKS fetch may take.
const JWKS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The body of a GET of `url` (a JWKS): a 200 within 10 s and 1 MiB, or why not.
/// HTTPS is verified against the system's CAs.
pub fn fetch(url: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let agent = ureq::AgentBuilder::new().timeout(JWKS_TIMEOUT).redirects(0).build();
    let response = agent.get(url).call().map_err(|e| format!("GET {url}: {e}"))?;
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_JWKS_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    if body.len() as u64 > MAX_JWKS_BYTES {
        return Err(format!("GET {url}: the body is over {MAX_JWKS_BYTES} bytes"));
    }
    Ok(body)
}

/// The bytes of a JWKS source as read now: the file, or a GET of the URL.
pub fn read_jwks(source: &super::model::JwksSource) -> Result<Vec<u8>, String> {
    match source {
        super::model::JwksSource::File(path) => std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}")),
        super::model::JwksSource::Url(url) => fetch(url),
    }
}

/// The host and port of an endpoint URL whose host is a name to resolve
/// (not an IP address).
fn host_to_resolve(url: &url::Url) -> Option<(String, u16)> {
    let host = url.host_str().filter(|h| !h.is_empty())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().is_err().then(|| (host.to_string(), url.port_or_known_default().unwrap_or(80)))
}
