//! Shared harness for the integration tests: recording upstreams, the real
//! router binary, a fleet of one upstream per tenant × signal, test
//! certificates and TLS ends, and an HTTP/2 upstream.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod dnsmasq;
pub mod etcd;
pub mod facts;
pub mod h2_upstream;
pub mod haproxy;
pub mod redis;
pub mod remote_write;
pub mod router;
pub mod tls;
pub mod upstream;
pub mod victoria;
pub mod wait;

pub use router::{free_addr, RouterProcess};
pub use upstream::Upstream;
pub use wait::{wait_until, wait_until_async, wait_until_blocking, Wait};

use std::collections::BTreeMap;

pub const SIGNALS: [&str; 3] = ["metrics", "logs", "traces"];

pub const HUNDRED_MB: u64 = 100 * 1024 * 1024;

/// A 100 MiB upload: `chunks` copies of one 256 KiB `chunk`, and the hash
/// a recording upstream computes over the whole body.
pub struct HundredMib {
    pub chunk: bytes::Bytes,
    pub chunks: usize,
    pub hash: u64,
}

pub fn hundred_mib() -> HundredMib {
    use std::hash::Hasher;
    const CHUNK: usize = 256 * 1024;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let chunks = (HUNDRED_MB as usize) / CHUNK;
    let mut expected = std::collections::hash_map::DefaultHasher::new();
    for _ in 0..chunks {
        expected.write(&chunk);
    }
    HundredMib { chunk: chunk.into(), chunks, hash: expected.finish() }
}

/// A query path of each signal on the unified listener.
pub fn query_path(signal: &str) -> &'static str {
    match signal {
        "metrics" => "/api/v1/query",
        "logs" => "/select/logsql/query",
        "traces" => "/select/jaeger/api/traces",
        other => panic!("no signal {other}"),
    }
}

/// An ingest path of each signal on the unified listener.
pub fn ingest_path(signal: &str) -> &'static str {
    match signal {
        "metrics" => "/api/v1/import/prometheus",
        "logs" => "/insert/jsonline",
        "traces" => "/insert/opentelemetry/v1/traces",
        other => panic!("no signal {other}"),
    }
}

/// The Python of the venv `scripts/test` makes with the OpenTelemetry SDK
/// (`$MIRADOR_VENV`, else `.venv`).
pub fn venv_python() -> std::path::PathBuf {
    let python = std::env::var("MIRADOR_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv").into())
        .join("bin/python");
    assert!(python.exists(), "{} is missing: scripts/test makes the venv with the OpenTelemetry SDK", python.display());
    python
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One recording upstream per tenant × signal, named `tenant/signal`.
pub struct Fleet {
    pub upstreams: BTreeMap<(String, String), Upstream>,
}

impl Fleet {
    pub async fn start(tenants: &[&str]) -> Fleet {
        let mut upstreams = BTreeMap::new();
        for tenant in tenants {
            for signal in SIGNALS {
                let upstream = Upstream::start(&format!("{tenant}/{signal}")).await;
                upstreams.insert((tenant.to_string(), signal.to_string()), upstream);
            }
        }
        Fleet { upstreams }
    }

    pub fn get(&self, tenant: &str, signal: &str) -> &Upstream {
        &self.upstreams[&(tenant.to_string(), signal.to_string())]
    }

    /// `[tenants.*.<signal>]` tables pointing each pair at its own upstream.
    pub fn toml(&self) -> String {
        self.upstreams
            .iter()
            .map(|((tenant, signal), up)| format!("[tenants.{tenant}.{signal}]\nendpoints = [\"{}\"]\n", up.url()))
            .collect()
    }
}

/// Which upstream answered `GET {base}/api/v1/query` for `tenant`, or the
/// status when the router answered itself.
pub async fn served_by(base: &str, tenant: &str) -> Result<String, u16> {
    let response = client().get(format!("{base}/api/v1/query")).header("X-Tenant-ID", tenant).send().await.unwrap();
    match response.headers().get("x-upstream") {
        Some(name) if response.status() == 200 => Ok(name.to_str().unwrap().to_string()),
        _ => Err(response.status().as_u16()),
    }
}
