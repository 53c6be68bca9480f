//! From a request head to its pool, in four named steps:
//! identify (who: header and credential, each given once) → classify (the
//! canonical path's endpoint of the API surface: [`crate::api::classify`])
//! → route (the tenant's pool for it, or why not) → admit (quotas: rate,
//! requests in flight, declared body size).
//!
//! Every refusal is counted under the tenant when it is configured, else
//! under `unknown`, and answered with [`ErrorReply::rejection`].

use super::migrating::migrating;
use super::retry;
use super::RequestCtx;
use crate::api::{classify, cluster_form, Access, Listener, Unserved};
use crate::metrics::UNKNOWN_TENANT;
use crate::quota::Exceeded;
use crate::rejection::Rejection;
use crate::reply::{ErrorReply, Refused};
use crate::routing::{identify, Identity, Presented, RoutingTable, TenantRoute};
use crate::upstream::Pool;
use http::HeaderName;
use pingora::http::RequestHeader;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// Resolves `request` on `listener` against `table` into `ctx` (its tenant,
/// pool, quota slots, body limit and the path to forward), or gives the
/// answer to refuse it with. `certificate`: the names of the connection's
/// verified client certificate.
pub fn resolve(
    table: &RoutingTable,
    listener: Listener,
    request: &RequestHeader,
    certificate: Option<&[String]>,
    ctx: &mut RequestCtx,
) -> Result<(), ErrorReply> {
    let path = request.uri.path();
    let header = table.tenant_header();
    let (named, repeated) = single(request, header);
    let (authorization, repeated_authorization) = single(request, &http::header::AUTHORIZATION);
    let named = named.map(|v| v.to_str().unwrap_or("\u{fffd}")).unwrap_or("");
    let identified = match (repeated, repeated_authorization) {
        (true, _) => Err(Rejection::AmbiguousIdentity),
        (_, true) => Err(Rejection::AmbiguousIdentity),
        _ => identify(
            table,
            Presented { header: named, authorization: authorization.map(|v| v.as_bytes()), certificate },
        ),
    };
    let tenant = identified.as_ref().map_or(named, |identity| identity.tenant);
    ctx.tenant = table.tenant(tenant).map(|route| route.id.clone());
    let mut about = Refused { header: header.as_str(), tenant, path, ..Refused::default() };
    let refuse = |rejection: Rejection, about: &Refused| {
        let label = table.tenant(tenant).map_or(UNKNOWN_TENANT, |route| &route.id);
        tracing::debug!(tenant = label, reason = rejection.as_str(), "request refused");
        if let Some(rejections) = table.rejections(tenant) {
            rejections.get(rejection).inc();
        }
        ErrorReply::rejection(rejection, about)
    };

    let Identity { tenant, read_only } = identified.map_err(|rejection| {
        let detail = match (repeated, certificate) {
            (true, _) => header.as_str(),
            (false, Some(_)) => "Authorization or client certificate",
            (false, None) => "Authorization",
        };
        refuse(rejection, &Refused { detail, ..about })
    })?;
    let classified = classify(listener, &request.method, path).map_err(|unserved| match unserved {
        Unserved::BadPath(problem) => refuse(Rejection::BadPath, &Refused { detail: &problem.to_string(), ..about }),
        Unserved::NotServed => refuse(Rejection::Unroutable, &about),
        Unserved::TenantInPath => refuse(Rejection::TenantInPath, &about),
        Unserved::Method(endpoint) => {
            refuse(Rejection::MethodNotAllowed, &Refused { detail: &endpoint.method_names(), ..about })
        }
    })?;
    about.signal = Some(classified.signal);
    // A read-only credential (a JWT's claim) writes nothing, as a read-only tenant.
    if read_only && matches!(classified.access, Access::Ingest | Access::Admin) {
        return Err(refuse(Rejection::ReadOnly, &about));
    }
    let (route, pool) = table.route(tenant, classified.endpoint).map_err(|rejection| {
        let detail = classified.endpoint.op.map_or("", |op| op.as_str());
        refuse(rejection, &Refused { detail, ..about })
    })?;
    admit(route, pool, request, ctx).map_err(|(rejection, wait)| refuse(rejection, &Refused { wait, ..about }))?;

    // Forward exactly the path that was classified: the canonical one (on a
    // shared VictoriaMetrics cluster, its cluster form), and never an
    // absolute-form target.
    let forwarded = match pool.cluster.and_then(|id| Some((id, cluster_form(classified.endpoint)?))) {
        Some((id, form)) => Cow::Owned(form.path(&classified.path.encoded_route_path(), id)),
        None => classified.path.encoded(),
    };
    if forwarded != path || request.uri.authority().is_some() {
        let target = match request.uri.query() {
            Some(query) => format!("{forwarded}?{query}"),
            None => forwarded.into_owned(),
        };
        // The canonical path is percent-encoded and the query came as a
        // valid URI: this parses. Were it not to, nothing is forwarded.
        let uri = http::Uri::try_from(target).map_err(|_| {
            refuse(Rejection::BadPath, &Refused { detail: "the canonical path is not a valid target", ..about })
        })?;
        ctx.upstream_uri = Some(uri);
    }
    // A pool's and its tenant's series exist (at 0) from their first
    // request on, so `increase()` sees even the first error or refusal.
    let _ = (pool.metrics(), route.rejections());
    ctx.pool = Some(pool.clone());
    ctx.migrating = migrating(route, &classified, request, header);
    if classified.access == Access::Ingest {
        ctx.fanout = route.fanout(classified.signal).cloned();
    }
    ctx.read = retry::is_read(classified.access);
    ctx.replay_ingest = classified.access == Access::Ingest && pool.retry_ingest;
    Ok(())
}

/// The first value of header `name`, and whether the request repeats it.
fn single<'r>(request: &'r RequestHeader, name: &HeaderName) -> (Option<&'r http::HeaderValue>, bool) {
    let mut values = request.headers.get_all(name).iter();
    (values.next(), values.next().is_some())
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
