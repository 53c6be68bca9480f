//! Carrying a tenant's signal from one deployment to another, phase by
//! phase (`[tenants.<id>.<signal>.migration]`):
//!
//! | phase | serves | ingest copied to | reads compared |
//! |---|---|---|---|
//! | `mirror` | the deployment | `to` | — |
//! | `shadow` | the deployment | `to` | a `shadow_sample` share, against `to` |
//! | `switched` | `to` | the deployment (a rollback loses nothing) | — |
//! | `done` | `to` | — | — |
//!
//! A copy is taken of an ingest request the serving deployment answered
//! 2xx (what the client will not send again), from the body as it streamed
//! (never read twice from the client), in the target's form (a shared
//! cluster's path and ids included), through a bounded queue ([`mirror`]).
//! Shadow reads are replayed after the serving answer went to the client
//! ([`shadow`]), compared by [`same_answer`]. Everything here is off the
//! request path but the copy of the body's chunks.

mod compare;
mod join;
mod mirror;
mod shadow;

pub use compare::{normalise, same_answer, Normalised};
pub use join::{join, joinable, snappy_block, Format, Joinable, Part};
pub use mirror::{connector, Copy, Counts, Dropped, MirrorQueue, MirrorRegistry, Target, MAX_AGE};
pub use shadow::{Mismatch, Replay, Shadow, ShadowCounts, MAX_ANSWER};

use crate::api::Signal;
use crate::config::{Deployment, MigrationPhase, WritePolicy};
use crate::metrics::Metrics;
use crate::quota::QuotaRegistry;
use crate::upstream::{HealthRegistry, Pool};
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use serde_json::{json, Value};
use std::sync::Arc;

/// What the routing table holds of one signal's migration.
pub struct SignalMigration {
    pub phase: MigrationPhase,
    /// The endpoints of the deployment written and of `to`, for the API.
    pub from: Vec<String>,
    pub to: Vec<String>,
    /// Where ingest copies go (none once `done`).
    pub mirror: Option<Arc<MirrorQueue>>,
    /// Phase `shadow` only.
    pub shadow: Option<Arc<Shadow>>,
}

/// What a migration is built from: the registries tables share.
pub struct Registries<'a> {
    pub health: &'a HealthRegistry,
    pub quotas: &'a QuotaRegistry,
    pub mirrors: &'a MirrorRegistry,
    pub metrics: Option<&'a Arc<Metrics>>,
}

impl SignalMigration {
    /// The migration of `tenant`'s `signal` written in `deployment`, if any.
    pub fn build(tenant: &Arc<str>, signal: Signal, deployment: &Deployment, with: &Registries) -> Option<Self> {
        let migration = deployment.migration.as_ref()?;
        let pool = |d: &Deployment| Arc::new(Pool::new(tenant.clone(), signal, d, with.health, with.quotas, None));
        let mirror = deployment.mirror_target().map(|target| {
            let bounds = Target {
                deployment: target,
                pool: pool(target),
                capacity: migration.mirror_queue,
                max_bytes: migration.mirror_queue_bytes,
                max_body: migration.mirror_max_body,
            };
            with.mirrors.queue(tenant, signal, bounds)
        });
        let shadow = (migration.phase == MigrationPhase::Shadow).then(|| {
            // Reads of a shared VictoriaMetrics cluster go to its vmselect.
            let reads = migration.to.select_service();
            let target = pool(reads.as_ref().unwrap_or(&migration.to));
            let metrics = with.metrics.map(|m| m.shadow(tenant, signal));
            Arc::new(Shadow::new(tenant.clone(), signal, migration.shadow_sample, target, metrics))
        });
        let urls = |d: &Deployment| d.endpoints.iter().chain(&d.backup_endpoints).map(|e| e.url.clone()).collect();
        Some(SignalMigration {
            phase: migration.phase,
            from: urls(deployment),
            to: urls(&migration.to),
            mirror,
            shadow,
        })
    }

    /// The migration as the admin API shows it.
    pub fn status(&self) -> Value {
        let mirror = self.mirror.as_deref().map(queue_status);
        let shadow = self.shadow.as_ref().map(|shadow| {
            json!({
                "sample": shadow.sample,
                "results": shadow.counts(),
                "last_mismatches": shadow.last_mismatches(),
                "last_error": shadow.last_error(),
            })
        });
        json!({ "phase": self.phase.as_str(), "from": self.from, "to": self.to, "mirror": mirror, "shadow": shadow })
    }
}

/// A deployment's write fan-out (`write_policy = "all" | "quorum"`): each
/// primary endpoint's own retry queue, in the pool's order, for the copies
/// an endpoint did not take at once.
pub struct FanOut {
    pub policy: WritePolicy,
    pub retries: Vec<Arc<MirrorQueue>>,
}

impl FanOut {
    /// The fan-out of `deployment` (the serving one), when its policy asks for one.
    pub fn build(tenant: &Arc<str>, signal: Signal, deployment: &Deployment, with: &Registries) -> Option<Self> {
        if deployment.write_policy == WritePolicy::One {
            return None;
        }
        let retries = deployment
            .endpoints
            .iter()
            .map(|endpoint| {
                let alone = Deployment {
                    endpoints: vec![endpoint.clone()],
                    backup_endpoints: Vec::new(),
                    ..deployment.clone()
                };
                let pool = Arc::new(Pool::new(tenant.clone(), signal, &alone, with.health, with.quotas, None));
                let target =
                    Target { deployment: &alone, pool, capacity: 10_000, max_bytes: 256 << 20, max_body: 8 << 20 };
                with.mirrors.queue(tenant, signal, target)
            })
            .collect();
        Some(FanOut { policy: deployment.write_policy, retries })
    }

    /// The fan-out as the admin API shows it: each primary's retry queue.
    pub fn status(&self) -> Value {
        let endpoints: Vec<Value> = self.retries.iter().map(|queue| queue_status(queue)).collect();
        json!({ "write_policy": self.policy.as_str(), "endpoints": endpoints })
    }
}

/// A copy queue's target, depth and counts.
fn queue_status(queue: &MirrorQueue) -> Value {
    let c = queue.counts();
    let get = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    let pool = queue.target();
    let target: Vec<&str> = pool.endpoints().iter().map(|e| &*e.url).collect();
    json!({
        "target": target,
        "queued": get(&c.queued),
        "queued_bytes": get(&c.queued_bytes),
        "oldest_seconds": queue.oldest_seconds(),
        "ok": get(&c.ok),
        "failed": get(&c.failed),
        "sent": get(&c.sent),
        "dropped_queue_full": get(&c.dropped_queue_full),
        "dropped_too_large": get(&c.dropped_too_large),
    })
}

/// The client headers a copy or a replay carries: all but the connection's
/// own, the client's credentials and tenant naming (the target's pool sets
/// its own), and what the router recomputes.
pub fn copied_headers(request: &RequestHeader, tenant_header: &HeaderName) -> Vec<(HeaderName, HeaderValue)> {
    use http::header;
    const DROPPED: [HeaderName; 12] = [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::COOKIE,
        header::EXPECT,
        header::ACCEPT_ENCODING,
    ];
    request
        .headers
        .iter()
        .filter(|(name, _)| !DROPPED.contains(name) && *name != tenant_header)
        .filter(|(name, _)| {
            let name = name.as_str();
            !matches!(name, "accountid" | "projectid" | "keep-alive" | "proxy-connection")
                && !name.starts_with("x-forwarded-")
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}
