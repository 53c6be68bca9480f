//! The etcd client of the tenant store: a snapshot of the prefix, a
//! compare-and-swap write of one key, and the watch that reloads on every
//! change. The client runs on a runtime of its own, so the reload path
//! (synchronous, under the reload lock) and the admin listener call it the
//! same way, with the configured deadline.
//!
//! The watch resumes from the revision of the table in force: after etcd
//! restarts, or the revision was compacted away, the router reads the whole
//! prefix again (one reload) and watches on from there, so no change is
//! missed. While etcd cannot be reached the last table keeps serving;
//! [`EtcdStore::health`] and `mirador_router_store_up` say so.

use super::{Entry, Snapshot};
use crate::config::EtcdSettings;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, WatchOptions};
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A value larger than this is refused on write (etcd's own request limit
/// is 1.5 MiB; a tenant is a few hundred bytes).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd ({endpoints}) cannot be reached: {why}")]
    Unreachable { endpoints: String, why: String },
    /// The key changed after this router read it.
    #[error("{key} was changed by someone else since this router read it (revision {seen}): read it again and retry")]
    Conflict { key: String, seen: i64 },
    #[error("{0}")]
    Refused(String),
}

/// Whether etcd answers, for `/ready` and the status page.
#[derive(Debug, Clone, Serialize)]
pub struct StoreHealth {
    pub kind: &'static str,
    pub reachable: bool,
    /// Since when it is (or is not) reachable, RFC 3339.
    pub since: String,
    pub last_error: Option<String>,
    /// The etcd revision of the table in force.
    pub revision: i64,
}

pub struct EtcdStore {
    settings: EtcdSettings,
    runtime: tokio::runtime::Runtime,
    client: Client,
    /// What the table in force was built from: mutations compare against it.
    applied: Mutex<Snapshot>,
    /// The revision of the last snapshot read, applied or refused: where
    /// the watch goes on from (a refused change is not watched again).
    read: AtomicI64,
    health: Mutex<StoreHealth>,
    up: prometheus::IntGauge,
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl EtcdStore {
    /// A client of `settings`' cluster; connecting waits at most its timeout.
    pub fn connect(settings: EtcdSettings) -> Result<Arc<EtcdStore>, StoreError> {
        let unreachable = |why: String| StoreError::Unreachable { endpoints: settings.endpoints.join(","), why };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mirador-store")
            .enable_all()
            .build()
            .map_err(|e| unreachable(format!("cannot start its runtime: {e}")))?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(settings.timeout)
            .with_timeout(settings.timeout)
            // A dead member is noticed by the watch within seconds, not at the next write.
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &settings.credentials {
            options = options.with_user(user.clone(), password.0.clone());
        }
        let connect = Client::connect(settings.endpoints.clone(), Some(options));
        let client = runtime
            .block_on(async { tokio::time::timeout(settings.timeout, connect).await })
            .map_err(|_| unreachable(format!("no answer within {:?}", settings.timeout)))?
            .map_err(|e| unreachable(e.to_string()))?;
        let up = prometheus::IntGauge::new(
            "mirador_router_store_up",
            "1 while etcd (the tenant store) answers, 0 while it does not.",
        )
        .expect("valid metric");
        let health = StoreHealth { kind: "etcd", reachable: true, since: now(), last_error: None, revision: 0 };
        let (applied, read) = (Mutex::default(), AtomicI64::new(0));
        Ok(Arc::new(EtcdStore { settings, runtime, client, applied, read, health: Mutex::new(health), up }))
    }

    pub fn settings(&self) -> &EtcdSettings {
        &self.settings
    }

    /// The gauge to register with the router's metrics.
    pub fn up_gauge(&self) -> prometheus::IntGauge {
        self.up.clone()
    }

    pub fn health(&self) -> StoreHealth {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn mark(&self, error: Option<String>) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let reachable = error.is_none();
        if health.reachable != reachable {
            health.since = now();
            match &error {
                Some(why) => {
                    tracing::error!(%why, "etcd (the tenant store) cannot be reached; the table in force keeps serving")
                }
                None => tracing::info!("etcd (the tenant store) answers again"),
            }
        }
        health.reachable = reachable;
        if error.is_some() {
            health.last_error = error;
        }
        self.up.set(i64::from(reachable));
    }

    /// Runs one etcd call on the store's runtime, waiting at most the timeout.
    fn call<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.settings.timeout;
        self.runtime.spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, call).await);
        });
        let why = match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(Ok(Ok(value))) => {
                self.mark(None);
                return Ok(value);
            }
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(_)) | Err(_) => format!("no answer within {timeout:?}"),
        };
        self.mark(Some(why.clone()));
        Err(StoreError::Unreachable { endpoints: self.settings.endpoints.join(","), why })
    }

    /// Every key under the prefix, at one revision.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut client = self.client.clone();
        let prefix = self.settings.prefix.clone();
        let response = self.call(async move { client.get(prefix, Some(GetOptions::new().with_prefix())).await })?;
        let revision = response.header().map_or(0, |h| h.revision());
        self.read.fetch_max(revision, Ordering::AcqRel);
        let entries = response
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let value = String::from_utf8_lossy(kv.value()).into_owned();
                (key, Entry { value, mod_revision: kv.mod_revision() })
            })
            .collect();
        Ok(Snapshot { revision, entries })
    }

    /// Writes `key` (deletes it when `value` is `None`) if its revision is
    /// still `expected` (0: the key must not exist); the revision written at.
    pub fn write(&self, key: &str, value: Option<&str>, expected: i64) -> Result<i64, StoreError> {
        if value.is_some_and(|v| v.len() > MAX_VALUE_BYTES) {
            return Err(StoreError::Refused(format!("{key}: the value is over {MAX_VALUE_BYTES} bytes")));
        }
        let operation = match value {
            Some(value) => TxnOp::put(key, value, None),
            None => TxnOp::delete(key, None),
        };
        let txn = Txn::new().when([Compare::mod_revision(key, CompareOp::Equal, expected)]).and_then([operation]);
        let mut client = self.client.clone();
        let response = self.call(async move { client.txn(txn).await })?;
        if !response.succeeded() {
            return Err(StoreError::Conflict { key: key.to_string(), seen: expected });
        }
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// The snapshot the table in force was built from.
    pub fn applied(&self) -> Snapshot {
        self.applied.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the snapshot of the table just swapped in.
    pub fn set_applied(&self, snapshot: Snapshot) {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).revision = snapshot.revision;
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }

    fn read_revision(&self) -> i64 {
        self.read.load(Ordering::Acquire).max(self.applied.lock().unwrap_or_else(|p| p.into_inner()).revision)
    }
}

/// Watches the prefix from the revision in force and calls `reload` (the
/// router's reload path; `true` when it applied) on every change, on a
/// blocking thread. After a broken watch or a compacted revision, the whole
/// prefix is read again by one reload before watching on.
pub fn watch(store: Arc<EtcdStore>, reload: Arc<dyn Fn() -> bool + Send + Sync>) {
    let runtime = store.runtime.handle().clone();
    runtime.spawn(async move {
        const FIRST_BACKOFF: Duration = Duration::from_millis(200);
        let mut backoff = FIRST_BACKOFF;
        let mut resync = false;
        loop {
            if resync {
                let reload = reload.clone();
                let applied = tokio::task::spawn_blocking(move || reload()).await.unwrap_or(false);
                if !applied && !store.health().reachable {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            let options = WatchOptions::new().with_prefix().with_start_revision(store.read_revision() + 1);
            let mut client = store.client.clone();
            let mut stream = match client.watch(store.settings.prefix.clone(), Some(options)).await {
                Ok(stream) => stream,
                Err(e) => {
                    store.mark(Some(format!("watch: {e}")));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    resync = true;
                    continue;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(response)) if response.canceled() || response.compact_revision() > 0 => {
                        tracing::warn!(
                            compact_revision = response.compact_revision(),
                            reason = response.cancel_reason(),
                            "the etcd watch was cancelled (its revision compacted?): reading every tenant again"
                        );
                        break;
                    }
                    Ok(Some(response)) => {
                        store.mark(None);
                        backoff = FIRST_BACKOFF;
                        let revision = response.header().map_or(0, |h| h.revision());
                        if !response.events().is_empty() && revision > store.read_revision() {
                            let reload = reload.clone();
                            let _ = tokio::task::spawn_blocking(move || reload()).await;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        store.mark(Some(format!("watch: {e}")));
                        break;
                    }
                }
            }
            resync = true;
            tokio::time::sleep(backoff).await;
        }
    });
}
