//! Shadow reads: in phase `shadow`, a share of the reads the serving
//! deployment answered 200 is replayed to the new one, off the request path,
//! and the two answers compared ([`super::same_answer`]). Results are
//! counted (match, mismatch, error) and the last mismatches kept for the
//! admin API. At most [`MAX_IN_FLIGHT`] replays run at once per migration;
//! a read sampled beyond that is not replayed (counted `error`, skipped).

use super::compare::same_answer;
use super::mirror::connector;
use crate::api::Signal;
use crate::metrics::ShadowMetrics;
use crate::upstream::{Pick, Pool, Sent, Tried};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The largest answer compared; a larger one is not replayed.
pub const MAX_ANSWER: usize = 4 << 20;
/// Mismatches kept for the API.
const KEPT: usize = 5;
const MAX_IN_FLIGHT: usize = 8;
/// The `User-Agent` of replays.
pub const AGENT: &str = "mirador-router-shadow";

/// One mismatch, as the API shows it (answers cut to 1 KiB).
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub at: String,
    pub request_id: String,
    pub path: String,
    pub serving: String,
    pub shadow: String,
}

#[derive(Debug, Default, Serialize)]
pub struct ShadowCounts {
    pub matched: u64,
    pub mismatched: u64,
    pub errors: u64,
}

/// A migration's shadow reads: the sample, the new deployment's pool, results.
pub struct Shadow {
    pub tenant: Arc<str>,
    pub signal: Signal,
    pub sample: f64,
    target: Arc<Pool>,
    reads: AtomicU64,
    matched: AtomicU64,
    mismatched: AtomicU64,
    errors: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    last: Mutex<VecDeque<Mismatch>>,
    /// Why the last read not compared was not.
    last_error: Mutex<Option<String>>,
    metrics: Option<ShadowMetrics>,
}

/// A sampled read to replay: as the new deployment's mode wants it.
#[derive(Debug, Clone)]
pub struct Replay {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub request_id: String,
}

impl Shadow {
    pub fn new(
        tenant: Arc<str>,
        signal: Signal,
        sample: f64,
        target: Arc<Pool>,
        metrics: Option<ShadowMetrics>,
    ) -> Self {
        Shadow {
            tenant,
            signal,
            sample,
            target,
            reads: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: Arc::default(),
            last: Mutex::new(VecDeque::new()),
            last_error: Mutex::new(None),
            metrics,
        }
    }

    /// The pool reads are replayed to.
    pub fn target(&self) -> &Arc<Pool> {
        &self.target
    }

    /// Whether this read is in the sample: exactly `sample` of reads, spread
    /// evenly (the n-th read is taken when ⌊n·s⌋ moves).
    pub fn sampled(&self) -> bool {
        let n = self.reads.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.sample).floor() > (n * self.sample).floor()
    }

    pub fn counts(&self) -> ShadowCounts {
        ShadowCounts {
            matched: self.matched.load(Ordering::Relaxed),
            mismatched: self.mismatched.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn last_mismatches(&self) -> Vec<Mismatch> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// Replays `read` (whose serving answer was `answer`, with its
    /// `Content-Encoding`) to the new deployment and records the comparison,
    /// on the current runtime.
    pub fn replay(self: &Arc<Self>, read: Replay, answer: Vec<u8>, encoding: Option<String>) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.record(Err("too many replays in flight".into()), &read);
            return;
        }
        let shadow = self.clone();
        tokio::spawn(async move {
            let result = shadow.compare(&read, answer, encoding).await;
            shadow.record(result, &read);
            shadow.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }

    async fn compare(
        &self,
        read: &Replay,
        answer: Vec<u8>,
        encoding: Option<String>,
    ) -> Result<Option<Mismatch>, String> {
        let serving = decoded(answer, encoding.as_deref())?;
        let pool = &self.target;
        let Pick::Endpoint(index) = pool.select(Tried::default()) else {
            return Err("no healthy endpoint".into());
        };
        let sent = Sent {
            agent: AGENT,
            method: read.method.as_str(),
            path: &read.path,
            headers: &read.headers,
            body: &read.body,
        };
        let answered = tokio::time::timeout(pool.timeout, pool.send(connector(), index, sent, MAX_ANSWER)).await;
        let (status, shadow) = answered.map_err(|_| "no answer in time".to_string())??;
        if status != 200 {
            return Err(format!("answered {status}"));
        }
        if same_answer(&serving, &shadow) {
            return Ok(None);
        }
        let cut = |body: &[u8]| String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
        Ok(Some(Mismatch {
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            request_id: read.request_id.clone(),
            path: read.path.clone(),
            serving: cut(&serving),
            shadow: cut(&shadow),
        }))
    }

    fn record(&self, result: Result<Option<Mismatch>, String>, read: &Replay) {
        let metrics = self.metrics.as_ref();
        match result {
            Ok(None) => {
                self.matched.fetch_add(1, Ordering::Relaxed);
                metrics.inspect(|m| m.matched.inc());
            }
            Ok(Some(mismatch)) => {
                self.mismatched.fetch_add(1, Ordering::Relaxed);
                metrics.inspect(|m| m.mismatched.inc());
                tracing::info!(tenant = &*self.tenant, signal = %self.signal, request_id = read.request_id, path = read.path, "shadow read differs");
                let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                if last.len() == KEPT {
                    last.pop_front();
                }
                last.push_back(mismatch);
            }
            Err(why) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                metrics.inspect(|m| m.error.inc());
                tracing::debug!(tenant = &*self.tenant, request_id = read.request_id, why, "shadow read not compared");
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{}: {why}", read.path));
            }
        }
    }
}

/// The serving answer's bytes as sent before `Content-Encoding`.
fn decoded(answer: Vec<u8>, encoding: Option<&str>) -> Result<Vec<u8>, String> {
    match encoding {
        None | Some("identity") => Ok(answer),
        Some("gzip") => {
            let mut out = Vec::new();
            let reader = flate2::read::GzDecoder::new(answer.as_slice()).take(MAX_ANSWER as u64 + 1);
            std::io::BufReader::new(reader).read_to_end(&mut out).map_err(|e| format!("gzip: {e}"))?;
            (out.len() <= MAX_ANSWER).then_some(out).ok_or_else(|| "the answer is too large".into())
        }
        Some(other) => Err(format!("answer in {other:?} encoding is not compared")),
    }
}
