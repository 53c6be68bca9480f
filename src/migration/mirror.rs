//! Copies of ingest requests for another deployment: a bounded queue per
//! tenant, signal and target. A mirrored request's copy is sent at once from
//! the Pingora worker that took the request, after its answer (its I/O in
//! the worker's own poll: a copy handed to another thread cost a wake-up and
//! a context switch per event, a quarter of the mirrored request's CPU); a
//! copy the target cannot take yet goes to the queue's retries, drained by a
//! worker off the request path with backoff until the target takes it.
//!
//! Copies whose format concatenates ([`super::join`]: line formats, remote
//! write 1.0) wait in a lane per path and headers, with one sender per lane:
//! a copy arriving at an idle lane is sent at once, alone; copies arriving
//! while the lane's request is out are joined into its next one. Nothing
//! waits on a timer, so a quiet tenant's copies go one by one as before and
//! a busy tenant's share an HTTP exchange (benches/load.sh's saturating
//! remote writes: 55 copies per request). A joined request the target refuses (4xx) is sent
//! again copy by copy, so one bad copy fails alone; one the target cannot
//! take yet sends its copies to the retries, each on its own.
//!
//! The queue is bounded twice, in copies (`mirror_queue`) and in bytes
//! (`mirror_queue_bytes`, counting copies queued and being sent); a copy
//! that does not fit is dropped at once, counted and logged with its request
//! id — the client's answer never waits for the mirror. A copy is retried
//! while the target cannot take it (no healthy endpoint, connect error,
//! timeout, 429, 5xx) with backoff from 100 ms to 5 s, for at most
//! [`MAX_AGE`]; a 4xx other than 429 is final (the target refuses what the
//! serving deployment took: counted `failed`, logged).
//!
//! Queues outlive tables ([`MirrorRegistry`]): a reload that keeps a
//! migration's target keeps its queue (and the copies in it), with the
//! target's new pool. A queue no table holds any more is drained, then its
//! worker ends.

use super::join::{self, Format, Joinable, Part};
use crate::api::Signal;
use crate::config::Deployment;
use crate::metrics::{Metrics, MirrorMetrics};
use crate::upstream::{Pick, Pool, Sent, Tried};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use pingora::connectors::http::Connector;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Semaphore};

/// Retried copies one queue sends at once.
const CONCURRENCY: usize = 4;
/// First attempts one queue has out at once from the workers; past it, a
/// copy waits its turn in the retries (a slow target is not given a
/// connection per request).
const FIRST_ATTEMPTS: usize = 256;
/// A copy not delivered within this long is given up (counted `failed`).
pub const MAX_AGE: Duration = Duration::from_secs(3600);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The `User-Agent` of copies.
pub const AGENT: &str = "mirador-router-mirror";

/// One ingest request to copy: as the target's mode wants it.
#[derive(Debug, Clone)]
pub struct Copy {
    pub method: Method,
    /// Path and query, in the target's form (a shared cluster's included).
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub request_id: String,
    /// How its body joins others' into one request, if it does.
    pub format: Option<Format>,
    queued_at: Instant,
}

impl Copy {
    pub fn new(method: Method, path: String, headers: Vec<(HeaderName, HeaderValue)>, body: Bytes, id: String) -> Self {
        Copy { method, path, headers, body, request_id: id, format: None, queued_at: Instant::now() }
    }

    /// The copy, joinable with others of `format` ([`MirrorQueue::send`]).
    pub fn joining(self, format: Option<Format>) -> Self {
        Copy { format, ..self }
    }
}

/// Why a copy was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    QueueFull,
    TooLarge,
}

/// What one queue did, for the API and the metrics.
#[derive(Debug, Default)]
pub struct Counts {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_too_large: AtomicU64,
    /// Copies queued or being sent, and their bytes.
    pub queued: AtomicU64,
    pub queued_bytes: AtomicU64,
    /// Requests sent to the target: first attempts and retries, each
    /// copy alone or many joined.
    pub sent: AtomicU64,
    /// Unix milliseconds at which the oldest copy being sent was queued; 0 idle.
    oldest_ms: AtomicU64,
}

/// What the worker and the queue share.
struct State {
    tenant: Arc<str>,
    signal: Signal,
    target: ArcSwap<Pool>,
    max_bytes: AtomicU64,
    max_body: AtomicU64,
    counts: Counts,
    metrics: Option<MirrorMetrics>,
    /// Joinable copies waiting, with their parts in a joined body, by
    /// lane. A lane is here while its sender works it.
    lanes: Mutex<HashMap<Vec<u8>, Lane>>,
}

/// A lane's copies waiting, each with its part in a joined body.
type Lane = VecDeque<(Copy, Part)>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A migration's copies for one target. Dropping the last table that
/// holds it lets its worker drain what is queued and end.
pub struct MirrorQueue {
    tx: mpsc::Sender<Copy>,
    /// Copies queued or being sent, at most.
    capacity: usize,
    /// Whether a worker drains the queue (else nothing is sent: tests of
    /// routing alone).
    drained: bool,
    first_attempts: Arc<Semaphore>,
    state: Arc<State>,
}

impl MirrorQueue {
    /// The largest body copied.
    pub fn max_body(&self) -> u64 {
        self.state.max_body.load(Ordering::Relaxed)
    }

    /// The target's pool (its endpoints' health, its cluster ids).
    pub fn target(&self) -> Arc<Pool> {
        self.state.target.load_full()
    }

    pub fn counts(&self) -> &Counts {
        &self.state.counts
    }

    /// Seconds the oldest copy being sent has waited; 0 when idle.
    pub fn oldest_seconds(&self) -> f64 {
        let since = self.state.counts.oldest_ms.load(Ordering::Relaxed);
        if since == 0 {
            return 0.0;
        }
        (now_ms().saturating_sub(since)) as f64 / 1000.0
    }

    /// Sends `copy` now, from the runtime of the caller (the worker that
    /// took the request), counted in the queue's bounds while it is out; a
    /// copy the target cannot take yet goes on to the retries. A copy that
    /// joins others ([`join`]) waits in its lane while the lane's request
    /// is out, and goes in the next one. Off a runtime, or with
    /// [`FIRST_ATTEMPTS`] out, it is queued. Drops it (counted) when it
    /// does not fit.
    pub fn send(&self, copy: Copy) -> Result<(), Dropped> {
        let (Ok(runtime), true) = (Handle::try_current(), self.drained) else { return self.push(copy) };
        let joinable = copy.format.and_then(|f| join::joinable(f, &copy.method, &copy.path, &copy.headers, &copy.body));
        if let Some(Joinable { lane, part }) = joinable {
            self.admit(&copy)?;
            let mut lanes = lock(&self.state.lanes);
            match lanes.get_mut(&lane) {
                Some(waiting) => waiting.push_back((copy, part)),
                None => {
                    lanes.insert(lane.clone(), VecDeque::from([(copy, part)]));
                    drop(lanes);
                    runtime.spawn(work_lane(self.state.clone(), self.tx.clone(), lane));
                }
            }
            return Ok(());
        }
        let Ok(slot) = self.first_attempts.clone().try_acquire_owned() else { return self.push(copy) };
        self.admit(&copy)?;
        let (state, retries) = (self.state.clone(), self.tx.clone());
        runtime.spawn(async move {
            first_attempt(&state, &retries, copy).await;
            drop(slot);
        });
        Ok(())
    }

    /// Queues `copy` for the retries (a fan-out's failed copy, tried once
    /// already), or drops it (counted) when it does not fit.
    pub fn push(&self, copy: Copy) -> Result<(), Dropped> {
        self.admit(&copy)?;
        self.tx.try_send(copy).map_err(|refused| {
            let copy = refused.into_inner();
            release(&self.state, &copy);
            self.dropped(Dropped::QueueFull, &copy.request_id)
        })
    }

    /// Counts `copy` in the bounds (copies waiting and being sent), or
    /// drops it when it does not fit.
    fn admit(&self, copy: &Copy) -> Result<(), Dropped> {
        let state = &self.state;
        let size = copy.body.len() as u64;
        let counts = &state.counts;
        let bytes = counts.queued_bytes.fetch_add(size, Ordering::AcqRel) + size;
        let copies = counts.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(m) = &state.metrics {
            m.queued.inc();
        }
        if bytes > state.max_bytes.load(Ordering::Relaxed) || copies > self.capacity as u64 {
            release(state, copy);
            return Err(self.dropped(Dropped::QueueFull, &copy.request_id));
        }
        Ok(())
    }

    /// Counts and logs a copy that is not made.
    pub fn dropped(&self, why: Dropped, request_id: &str) -> Dropped {
        let state = &self.state;
        let (counter, reason) = match why {
            Dropped::QueueFull => (&state.counts.dropped_queue_full, "queue_full"),
            Dropped::TooLarge => (&state.counts.dropped_too_large, "body_too_large"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &state.metrics {
            match why {
                Dropped::QueueFull => m.dropped_queue_full.inc(),
                Dropped::TooLarge => m.dropped_too_large.inc(),
            }
        }
        tracing::warn!(
            tenant = &*state.tenant,
            signal = %state.signal,
            request_id,
            reason,
            target = %endpoints(&state.target.load()),
            "mirror copy dropped"
        );
        why
    }
}

/// `copy` leaves the bounds: delivered, given up or dropped.
fn release(state: &State, copy: &Copy) {
    let counts = &state.counts;
    counts.queued.fetch_sub(1, Ordering::AcqRel);
    counts.queued_bytes.fetch_sub(copy.body.len() as u64, Ordering::AcqRel);
    if let Some(m) = &state.metrics {
        m.queued.dec();
    }
}

fn endpoints(pool: &Pool) -> String {
    pool.endpoints().iter().map(|e| &*e.url).collect::<Vec<_>>().join(",")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What makes a queue itself: a new capacity is a new queue.
type Key = (Arc<str>, Signal, String, usize);

/// The queues in force, kept across table builds.
pub struct MirrorRegistry {
    runtime: Option<Handle>,
    metrics: Option<Arc<Metrics>>,
    queues: Mutex<HashMap<Key, Weak<MirrorQueue>>>,
}

/// What a queue is built from: the target deployment's pool and the
/// migration's bounds.
pub struct Target<'a> {
    pub deployment: &'a Deployment,
    pub pool: Arc<Pool>,
    pub capacity: usize,
    pub max_bytes: u64,
    pub max_body: u64,
}

impl MirrorRegistry {
    /// Workers run on `runtime`; without one no copy is ever sent (tests of
    /// routing alone).
    pub fn new(runtime: Option<Handle>, metrics: Option<Arc<Metrics>>) -> Self {
        MirrorRegistry { runtime, metrics, queues: Mutex::new(HashMap::new()) }
    }

    /// The queue of `tenant`'s `signal` towards `target`: the one in force
    /// (given the target's new pool and bounds), or a new one with its worker.
    pub fn queue(&self, tenant: &Arc<str>, signal: Signal, target: Target) -> Arc<MirrorQueue> {
        let mut queues = lock(&self.queues);
        queues.retain(|_, queue| queue.strong_count() > 0);
        let urls: Vec<&str> = target.deployment.endpoints.iter().map(|e| e.url.as_str()).collect();
        let key = (tenant.clone(), signal, urls.join(","), target.capacity);
        if let Some(queue) = queues.get(&key).and_then(Weak::upgrade) {
            queue.state.target.store(target.pool);
            queue.state.max_bytes.store(target.max_bytes, Ordering::Relaxed);
            queue.state.max_body.store(target.max_body, Ordering::Relaxed);
            return queue;
        }
        let (tx, rx) = mpsc::channel(target.capacity);
        let state = Arc::new(State {
            tenant: tenant.clone(),
            signal,
            target: ArcSwap::new(target.pool),
            max_bytes: AtomicU64::new(target.max_bytes),
            max_body: AtomicU64::new(target.max_body),
            counts: Counts::default(),
            metrics: self.metrics.as_ref().map(|m| m.mirror(tenant, signal)),
            lanes: Mutex::new(HashMap::new()),
        });
        if let Some(runtime) = &self.runtime {
            runtime.spawn(drain(rx, state.clone()));
        }
        let queue = Arc::new(MirrorQueue {
            tx,
            capacity: target.capacity,
            drained: self.runtime.is_some(),
            first_attempts: Arc::new(Semaphore::new(FIRST_ATTEMPTS)),
            state,
        });
        queues.insert(key, Arc::downgrade(&queue));
        queue
    }
}

/// The connector copies and shadow reads go through (Pingora's pooled
/// upstream connections).
pub fn connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| Connector::new(None))
}

/// Sends every copy the queue receives, [`CONCURRENCY`] at a time, until
/// the queue is gone and empty.
async fn drain(mut rx: mpsc::Receiver<Copy>, state: Arc<State>) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(copy) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let state = state.clone();
        tokio::spawn(async move {
            deliver(&state, &copy).await;
            drop(slot);
        });
    }
    // Wait for the copies still being sent.
    let _ = slots.acquire_many(CONCURRENCY as u32).await;
}

/// A copy the target cannot take yet, and why.
struct Retry(String);

/// One attempt at `copy`: delivered (`Ok(Ok)`), refused for good by the
/// target (`Ok(Err)`, a 4xx other than 429), or to retry.
async fn attempt(state: &State, copy: &Copy) -> Result<Result<(), String>, Retry> {
    let pool = state.target.load_full();
    let Pick::Endpoint(index) = pool.select(Tried::default()) else {
        return Err(Retry("no healthy endpoint".into()));
    };
    state.counts.sent.fetch_add(1, Ordering::Relaxed);
    if let Some(m) = &state.metrics {
        m.sent.inc();
    }
    let sent =
        Sent { agent: AGENT, method: copy.method.as_str(), path: &copy.path, headers: &copy.headers, body: &copy.body };
    match tokio::time::timeout(pool.timeout, pool.send(connector(), index, sent, 64 << 10)).await {
        Ok(Ok((status, _))) if (200..300).contains(&status) => Ok(Ok(())),
        Ok(Ok((status, body))) if status != 429 && (400..500).contains(&status) => {
            Ok(Err(format!("answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]))))
        }
        Ok(Ok((status, _))) => Err(Retry(format!("answered {status}"))),
        Ok(Err(e)) => Err(Retry(e)),
        Err(_) => Err(Retry(format!("no answer within {:?}", pool.timeout))),
    }
}

/// The first attempt at `copy`: delivered or refused for good (settled),
/// or on to the retries.
async fn first_attempt(state: &State, retries: &mpsc::Sender<Copy>, copy: Copy) {
    match attempt(state, &copy).await {
        Ok(delivered) => settle(state, &copy, delivered),
        Err(Retry(why)) => retry(state, retries, copy, &why),
    }
}

/// `copy` goes to the retries; counted in the bounds already, so the
/// channel has room.
fn retry(state: &State, retries: &mpsc::Sender<Copy>, copy: Copy, why: &str) {
    tracing::debug!(tenant = &*state.tenant, request_id = copy.request_id, why, "mirror copy retried");
    if let Err(refused) = retries.try_send(copy) {
        settle(state, &refused.into_inner(), Err("the retry queue is gone".into()));
    }
}

/// Sends a lane's copies, as many as join into one request at a time,
/// until the lane is empty.
async fn work_lane(state: Arc<State>, retries: mpsc::Sender<Copy>, lane: Vec<u8>) {
    loop {
        let batch = {
            let mut lanes = lock(&state.lanes);
            let Some(waiting) = lanes.get_mut(&lane) else { return };
            if waiting.is_empty() {
                lanes.remove(&lane);
                return;
            }
            let mut weight = 0;
            let mut batch = Vec::new();
            while let Some((_, next)) = waiting.front() {
                if !batch.is_empty() && (batch.len() == join::MAX_COPIES || weight + next.weight > join::MAX_BYTES) {
                    break;
                }
                weight += next.weight;
                batch.push(waiting.pop_front().expect("a front copy"));
            }
            batch
        };
        send_joined(&state, &retries, batch).await;
    }
}

/// Sends `batch` (copies of one lane) as one request: every copy delivered
/// with it; refused for good, each copy again on its own; not taken yet,
/// each to the retries.
async fn send_joined(state: &State, retries: &mpsc::Sender<Copy>, batch: Vec<(Copy, Part)>) {
    if batch.len() == 1 {
        let (copy, _) = batch.into_iter().next().expect("one copy");
        return first_attempt(state, retries, copy).await;
    }
    let first = &batch[0].0;
    let format = first.format.expect("a joined copy has a format");
    let joined = Copy {
        method: first.method.clone(),
        path: first.path.clone(),
        headers: join::joined_headers(&first.headers),
        body: join::join(format, batch.iter().map(|(copy, part)| (&copy.body, *part))),
        request_id: format!("{} and {} more", first.request_id, batch.len() - 1),
        format: None,
        queued_at: first.queued_at,
    };
    match attempt(state, &joined).await {
        Ok(Ok(())) => {
            for (copy, _) in &batch {
                settle(state, copy, Ok(()));
            }
        }
        Ok(Err(why)) => {
            tracing::info!(
                tenant = &*state.tenant,
                request_id = joined.request_id,
                why,
                "joined mirror copies refused; sent one by one"
            );
            for (copy, _) in batch {
                first_attempt(state, retries, copy).await;
            }
        }
        Err(Retry(why)) => {
            for (copy, _) in batch {
                retry(state, retries, copy, &why);
            }
        }
    }
}

/// Sends one retried copy until the target takes or refuses it, or it is
/// too old.
async fn deliver(state: &State, copy: &Copy) {
    let queued_ms = now_ms().saturating_sub(copy.queued_at.elapsed().as_millis() as u64);
    let _ = state.counts.oldest_ms.compare_exchange(0, queued_ms, Ordering::AcqRel, Ordering::Relaxed);
    let mut backoff = FIRST_BACKOFF;
    let outcome = loop {
        let why = match attempt(state, copy).await {
            Ok(delivered) => break delivered,
            Err(Retry(why)) => why,
        };
        if copy.queued_at.elapsed() >= MAX_AGE {
            break Err(format!("not delivered within {MAX_AGE:?}: {why}"));
        }
        tracing::debug!(tenant = &*state.tenant, request_id = copy.request_id, why, "mirror copy retried");
        if let Some(m) = &state.metrics {
            m.oldest_seconds.set(copy.queued_at.elapsed().as_secs_f64());
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    settle(state, copy, outcome);
    // The next copy in line is younger; it sets its own age when sent.
    if state.counts.oldest_ms.compare_exchange(queued_ms, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
        if let Some(m) = &state.metrics {
            m.oldest_seconds.set(0.0);
        }
    }
}

/// Counts what became of `copy` (and logs a failure), and lets it leave
/// the bounds.
fn settle(state: &State, copy: &Copy, outcome: Result<(), String>) {
    let counts = &state.counts;
    match outcome {
        Ok(()) => {
            counts.ok.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &state.metrics {
                m.ok.inc();
            }
        }
        Err(why) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &state.metrics {
                m.failed.inc();
            }
            tracing::warn!(tenant = &*state.tenant, signal = %state.signal, request_id = copy.request_id, why, "mirror copy failed");
        }
    }
    release(state, copy);
}
