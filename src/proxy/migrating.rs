//! A request of a tenant whose signal is migrating: an ingest request's
//! copy for the other deployment, or a sampled read to replay to the new
//! one. The body's chunks are kept as they stream (`Bytes` are shared, not
//! copied) up to the migration's bound; at the end of the request, a copy is
//! queued only when the serving deployment answered 2xx, a replay only when
//! it answered 200.

use crate::api::{cluster_form, Access, Classified};
use crate::migration::{copied_headers, Copy, Dropped, Format, MirrorQueue, Replay, Shadow, MAX_ANSWER};
use crate::routing::TenantRoute;
use crate::upstream::Pool;
use bytes::{Bytes, BytesMut};
use http::HeaderName;
use pingora::http::RequestHeader;
use std::sync::Arc;

/// What a migrating request carries to its end.
pub enum Migrating {
    Mirror { queue: Arc<MirrorQueue>, copy: Pending },
    Shadow { shadow: Arc<Shadow>, read: Pending, answer: Body },
}

/// A request as it will be sent to the other deployment, its body so far.
pub struct Pending {
    method: http::Method,
    path: String,
    headers: Vec<(HeaderName, http::HeaderValue)>,
    body: Body,
    /// How a copy joins others ([`crate::migration::Format`]).
    format: Option<Format>,
}

/// Chunks kept up to a bound; past it, nothing is kept.
pub struct Body {
    chunks: Vec<Bytes>,
    size: u64,
    max: u64,
    over: bool,
}

impl Body {
    fn new(max: u64) -> Self {
        Body { chunks: Vec::new(), size: 0, max, over: false }
    }

    fn push(&mut self, chunk: &Bytes) {
        if self.over {
            return;
        }
        self.size += chunk.len() as u64;
        if self.size > self.max {
            self.over = true;
            self.chunks = Vec::new();
        } else if !chunk.is_empty() {
            self.chunks.push(chunk.clone());
        }
    }

    fn restart(&mut self) {
        *self = Body::new(self.max);
    }

    fn whole(self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut whole = BytesMut::with_capacity(self.size as usize);
                for chunk in self.chunks {
                    whole.extend_from_slice(&chunk);
                }
                whole.freeze()
            }
        }
    }
}

/// The migration work `request` brings, if its tenant's signal migrates:
/// for ingest, a copy in the mirror target's form; for a sampled read in
/// phase `shadow`, a replay in the new deployment's form.
pub fn migrating(
    route: &TenantRoute,
    classified: &Classified,
    request: &RequestHeader,
    tenant_header: &HeaderName,
) -> Option<Box<Migrating>> {
    let migration = route.migration(classified.signal)?;
    let pending = |target: &Pool, max: u64| {
        let headers = copied_headers(request, tenant_header);
        Pending {
            method: request.method.clone(),
            path: target_path(target, classified, request),
            format: Format::of(classified.endpoint.pattern, &headers),
            headers,
            body: Body::new(max),
        }
    };
    match classified.access {
        Access::Ingest => {
            let queue = migration.mirror.as_ref()?;
            let copy = pending(&queue.target(), queue.max_body());
            Some(Box::new(Migrating::Mirror { queue: queue.clone(), copy }))
        }
        Access::Query => {
            let shadow = migration.shadow.as_ref().filter(|shadow| shadow.sampled())?;
            let read = pending(shadow.target(), 1 << 20);
            Some(Box::new(Migrating::Shadow { shadow: shadow.clone(), read, answer: Body::new(MAX_ANSWER as u64) }))
        }
        _ => None,
    }
}

/// The path and query the request takes on `target`: its cluster form on a
/// shared VictoriaMetrics cluster, else the canonical path.
fn target_path(target: &Pool, classified: &Classified, request: &RequestHeader) -> String {
    let path = match target.cluster.and_then(|id| Some((id, cluster_form(classified.endpoint)?))) {
        Some((id, form)) => form.path(&classified.path.encoded_route_path(), id),
        None => classified.path.encoded().into_owned(),
    };
    match request.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

impl Migrating {
    /// Whether the serving answer is kept, to compare.
    pub fn compares(&self) -> bool {
        matches!(self, Migrating::Shadow { .. })
    }

    /// A chunk of the request body, as it streams upstream.
    pub fn request_chunk(&mut self, chunk: &Bytes) {
        match self {
            Migrating::Mirror { copy, .. } => copy.body.push(chunk),
            Migrating::Shadow { read, .. } => read.body.push(chunk),
        }
    }

    /// A new attempt replays the body from its start.
    pub fn restart(&mut self) {
        match self {
            Migrating::Mirror { copy, .. } => copy.body.restart(),
            Migrating::Shadow { read, answer, .. } => {
                read.body.restart();
                answer.restart();
            }
        }
    }

    /// A chunk of the serving deployment's answer.
    pub fn response_chunk(&mut self, chunk: &Bytes) {
        if let Migrating::Shadow { answer, .. } = self {
            answer.push(chunk);
        }
    }

    /// The request ended: the serving deployment answered `status` (with
    /// `encoding`), the client's body was whole or not.
    pub fn finish(self, status: Option<u16>, encoding: Option<String>, body_whole: bool, request_id: String) {
        match self {
            Migrating::Mirror { queue, copy } => {
                if !status.is_some_and(|s| (200..300).contains(&s)) || !body_whole {
                    return;
                }
                if copy.body.over {
                    queue.dropped(Dropped::TooLarge, &request_id);
                    return;
                }
                let Pending { method, path, headers, body, format } = copy;
                let _ = queue.send(Copy::new(method, path, headers, body.whole(), request_id).joining(format));
            }
            Migrating::Shadow { shadow, read, answer } => {
                if status != Some(200) || read.body.over || answer.over {
                    return;
                }
                let Pending { method, path, headers, body, .. } = read;
                let replay = Replay { method, path, headers, body: body.whole(), request_id };
                shadow.replay(replay, answer.whole().to_vec(), encoding);
            }
        }
    }
}
