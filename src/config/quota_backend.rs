//! `[quotas]`: where rate quotas are kept — each router on its own (the
//! default) or Redis, one GCRA per tenant (and signal) shared by a fleet.
//! Only the settings are validated here; the Redis client and the leases
//! are `crate::quota`'s.

use super::check::{duration, Bounds, Problems};
use super::error::KeyPath;
use super::model::{QuotaBackend, RedisQuotas, Secret};
use super::raw::{QuotaBackendKind, RawQuotaBackend};
use std::time::Duration;

/// The longest key prefix accepted.
const MAX_PREFIX_BYTES: usize = 256;
/// The most routers `expected_replicas` may name.
pub const MAX_EXPECTED_REPLICAS: i64 = 1024;
/// A Redis call's deadline: a millisecond to ten seconds. It bounds how long
/// a refill may hang before the router falls back to its local share; the
/// request path never waits on it.
const TIMEOUT_BOUNDS: Bounds = (Duration::from_millis(1), Duration::from_secs(10));

pub(super) fn quota_backend(raw: RawQuotaBackend, path: &KeyPath, problems: &mut Problems) -> QuotaBackend {
    let RawQuotaBackend { backend, url, prefix, expected_replicas, timeout } = raw;
    let timeout =
        duration(timeout.as_deref(), Duration::from_millis(250), TIMEOUT_BOUNDS, &path.key("timeout"), problems);
    if backend.unwrap_or_default() == QuotaBackendKind::Local {
        if url.is_some() || prefix.is_some() || expected_replicas.is_some() {
            problems.add(
                path,
                "url, prefix and expected_replicas are Redis settings: set backend = \"redis\" or remove them",
            );
        }
        return QuotaBackend::Local;
    }
    let url = match url {
        None => {
            problems.add(&path.key("url"), "backend = \"redis\" needs a url such as \"redis://127.0.0.1:6379/0\"");
            String::new()
        }
        Some(url) => {
            if let Err(why) = redis_url(&url) {
                // The URL may hold a password: the message names only its shape.
                problems.add(&path.key("url"), why);
            }
            url
        }
    };
    let prefix = prefix.unwrap_or_else(|| "mirador:quota:".to_string());
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_BYTES || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        problems.add(
            &path.key("prefix"),
            format!("{prefix:?}: must be 1 to {MAX_PREFIX_BYTES} bytes of printable ASCII without spaces"),
        );
    }
    let expected_replicas = match expected_replicas {
        None => 1,
        Some(n) if (1..=MAX_EXPECTED_REPLICAS).contains(&n) => n as u32,
        Some(n) => {
            problems.add(&path.key("expected_replicas"), format!("{n}: must be 1 to {MAX_EXPECTED_REPLICAS}"));
            1
        }
    };
    QuotaBackend::Redis(RedisQuotas { url: Secret(url), prefix, expected_replicas, timeout })
}

/// Whether `url` names one Redis server: `redis://[user:password@]host:port[/db]`.
fn redis_url(url: &str) -> Result<(), String> {
    let expected =
        "is not a Redis URL; expected redis://[user:password@]host:port[/db] (TLS to Redis is not supported)";
    let parsed = url::Url::parse(url).map_err(|_| expected.to_string())?;
    let db = parsed.path().trim_start_matches('/');
    let ok = parsed.scheme() == "redis"
        && parsed.host_str().is_some_and(|h| !h.is_empty())
        && parsed.port_or_known_default().is_some()
        && (db.is_empty() || db.parse::<u16>().is_ok())
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    if ok {
        Ok(())
    } else {
        Err(expected.to_string())
    }
}
