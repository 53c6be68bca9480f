//! From a request head to its pool, in four named steps:
//! identify (who: header and credential) → classify (which signal, ingest
//! or query: [`crate::api::classify`]) → route (the tenant's pool, or why
//! not) → admit (quotas: rate, requests in flight, declared body size).
//!
//! Every refusal is counted under the tenant when it is configured, else
//! under `unknown`, and answered with [`ErrorReply::rejection`].

use super::retry;
use super::RequestCtx;
use crate::api::{classify, Access, Listener};
use crate::metrics::UNKNOWN_TENANT;
use crate::quota::Exceeded;
use crate::rejection::Rejection;
use crate::reply::{ErrorReply, Refused};
use crate::routing::{identify, RoutingTable, TenantRoute};
use crate::upstream::Pool;
use pingora::http::RequestHeader;
use std::sync::Arc;
use std::time::Duration;

/// Resolves `request` on `listener` against `table` into `ctx` (its tenant,
/// pool, quota slots and body limit), or gives the answer to refuse it with.
pub fn resolve(
    table: &RoutingTable,
    listener: Listener,
    request: &RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<(), ErrorReply> {
    let path = request.uri.path();
    let header = table.tenant_header();
    let named = request.headers.get(header).map(|v| v.to_str().unwrap_or("\u{fffd}")).unwrap_or("");
    let authorization = request.headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
    let identified = identify(table, named, authorization);
    let tenant = *identified.as_ref().unwrap_or(&named);
    ctx.tenant = table.tenant(tenant).map(|route| route.id.clone());
    let mut about = Refused { header: header.as_str(), tenant, path, signal: None, wait: None };
    let refuse = |rejection: Rejection, about: &Refused| {
        let label = table.tenant(tenant).map_or(UNKNOWN_TENANT, |route| &route.id);
        tracing::debug!(tenant = label, reason = rejection.as_str(), "request refused");
        if let Some(rejections) = table.rejections(tenant) {
            rejections.get(rejection).inc();
        }
        ErrorReply::rejection(rejection, about)
    };

    let tenant = identified.map_err(|rejection| refuse(rejection, &about))?;
    let classified = classify(listener, path).ok_or_else(|| refuse(Rejection::Unroutable, &about))?;
    about.signal = Some(classified.signal);
    let (route, pool) = table.route(tenant, classified.signal, classified.access).map_err(|r| refuse(r, &about))?;
    admit(route, pool, request, ctx).map_err(|(rejection, wait)| refuse(rejection, &Refused { wait, ..about }))?;

    // A pool's and its tenant's series exist (at 0) from their first
    // request on, so `increase()` sees even the first error or refusal.
    let _ = (pool.metrics(), route.rejections());
    ctx.pool = Some(pool.clone());
    ctx.read = retry::is_read(&request.method, classified.listed && classified.access == Access::Query);
    Ok(())
}

/// Takes an in-flight slot under the tenant's and the signal's quotas and
/// checks the declared body size; the slots are held by `ctx` until the
/// request ends. A refusal names the quota, and for the rate when to retry.
fn admit(
    route: &TenantRoute,
    pool: &Arc<Pool>,
    request: &RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<(), (Rejection, Option<Duration>)> {
    for (slot, limits) in ctx.slots.iter_mut().zip([&route.limits, &pool.limits]) {
        let Some(limits) = limits else { continue };
        *slot = match limits.admit() {
            Ok(in_flight) => in_flight,
            Err(Exceeded::Rate(wait)) => return Err((Rejection::RateLimited, Some(wait))),
            Err(Exceeded::Concurrency) => return Err((Rejection::ConcurrencyLimited, None)),
        };
        ctx.max_body = match (ctx.max_body, limits.max_body_bytes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let declared = request.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.zip(ctx.max_body).is_some_and(|(declared, max)| declared > max) {
        return Err((Rejection::BodyTooLarge, None));
    }
    Ok(())
}
