//! Write fan-out (`write_policy = "all" | "quorum"`): an ingest request goes
//! to every primary endpoint of its pool at once, and the client's answer
//! follows the policy — VictoriaMetrics' own high-availability recipe, two
//! single-node instances written alike.
//!
//! The router reads the whole body (within `max_body_bytes`), sends it to
//! each primary, and answers itself: the first 2xx answer when enough
//! primaries took the write (`all`: every one; `quorum`: a majority), a
//! 4xx an endpoint gave when it refused the data (the request is wrong,
//! not the endpoint), else 503 with `Retry-After`. A primary that did not
//! take it (down, connect error, timeout, 429, 5xx) gets the copy later,
//! through its own bounded retry queue (the migration's mirror queue,
//! [`crate::migration::MirrorQueue`]). Reads keep choosing one endpoint.

use super::RequestCtx;
use crate::migration::{copied_headers, Copy, FanOut};
use crate::reply::{ErrorKind, ErrorReply, BODY_TOO_LARGE};
use crate::upstream::{Pool, Sent};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, Result};
use std::sync::Arc;

/// The `User-Agent` of fanned-out writes.
const AGENT: &str = "mirador-router-fanout";
/// The largest endpoint answer passed back.
const MAX_ANSWER: usize = 1 << 20;

/// One primary's answer: its status and body, or why it has none.
type Taken = Result<(u16, Bytes), String>;

/// Sends the request to every primary of `ctx`'s pool and answers the
/// client by `fanout`'s policy.
pub async fn fan_out(session: &mut Session, ctx: &mut RequestCtx, fanout: &FanOut, tenant: &HeaderName) -> Result<()> {
    let pool = ctx.pool.clone().ok_or_else(|| Error::explain(pingora::ErrorType::InternalError, "no pool"))?;
    let mut whole = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        ctx.body_bytes += chunk.len() as u64;
        if ctx.max_body.is_some_and(|max| ctx.body_bytes > max) {
            if let Some(metrics) = pool.metrics() {
                metrics.body_too_large.inc();
            }
            return Err(Error::explain(BODY_TOO_LARGE, "request body over max_body_bytes"));
        }
        whole.extend_from_slice(&chunk);
    }
    ctx.body_ended = true;
    let body = whole.freeze();
    let request = session.req_header();
    let path = match &ctx.upstream_uri {
        Some(uri) => uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        None => request.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
    };
    let mut headers = copied_headers(request, tenant);
    if let Some(id) = &ctx.request_id {
        headers.retain(|(name, _)| name != "x-request-id");
        headers.push((HeaderName::from_static("x-request-id"), id.clone()));
    }
    let method = request.method.clone();
    let request_id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();

    let mut sends = tokio::task::JoinSet::new();
    for index in 0..fanout.retries.len() {
        let (pool, body, headers, path, method) =
            (pool.clone(), body.clone(), headers.clone(), path.clone(), method.clone());
        sends.spawn(async move { (index, send(&pool, index, method.as_str(), &path, &headers, &body).await) });
    }
    let mut answers: Vec<(usize, Taken)> = sends.join_all().await;
    answers.sort_by_key(|(index, _)| *index);

    let mut took = 0;
    let mut first_ok = None;
    let mut refused = None;
    for (index, taken) in &answers {
        match taken {
            Ok((status, _)) if (200..300).contains(status) => {
                took += 1;
                first_ok = first_ok.or(Some(*index));
            }
            Ok((status, _)) if *status != 429 && (400..500).contains(status) => refused = refused.or(Some(*index)),
            other => {
                let why = match other {
                    Ok((status, _)) => format!("answered {status}"),
                    Err(e) => e.clone(),
                };
                let endpoint = &*pool.endpoint(*index).url;
                tracing::warn!(tenant = &*pool.tenant, signal = %pool.signal, endpoint, request_id, why, "fanned-out write not taken; queued for retry");
                let copy = Copy::new(method.clone(), path.clone(), headers.clone(), body.clone(), request_id.clone());
                let _ = fanout.retries[*index].push(copy);
            }
        }
    }
    let needed = fanout.policy.needed(fanout.retries.len());
    let answer = match (refused, first_ok) {
        (Some(index), _) => Some(index),
        (None, Some(index)) if took >= needed => Some(index),
        _ => None,
    };
    match answer.and_then(|index| answers.iter().find(|(i, _)| *i == index)) {
        Some((_, Ok((status, body)))) => reply(session, *status, body.clone()).await,
        _ => {
            let policy = fanout.policy.as_str();
            let message = format!(
                "write_policy {policy}: {took} of {} endpoints took the write, {needed} needed",
                fanout.retries.len()
            );
            let mut reply = ErrorReply::new(ErrorKind::Unavailable, message);
            reply.retry_after = Some(pool.retry_after.as_secs().clamp(1, 60));
            super::send(&reply, session, false).await
        }
    }
}

/// One primary's answer to the write, within the pool's timeout.
async fn send(
    pool: &Arc<Pool>,
    index: usize,
    method: &str,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &Bytes,
) -> Taken {
    if !pool.endpoint(index).health.is_healthy() {
        return Err("the endpoint is down".into());
    }
    let sent = Sent { agent: AGENT, method, path, headers, body };
    let answered =
        tokio::time::timeout(pool.timeout, pool.send(crate::migration::connector(), index, sent, MAX_ANSWER));
    let (status, body) = answered.await.map_err(|_| format!("no answer within {:?}", pool.timeout))??;
    Ok((status, body))
}

/// The chosen endpoint's answer, to the client.
async fn reply(session: &mut Session, status: u16, body: Bytes) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(1))?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    let empty = body.is_empty();
    session.write_response_header(Box::new(header), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
