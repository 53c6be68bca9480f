//! Per-tenant usage ("cost transparency"): what each tenant's deployments
//! hold and spend, read from their own `/metrics` by a low-rate collector —
//! every `[observability] usage_interval` (default 60 s), off the request
//! path (on the probes' runtime), at most [`CONCURRENCY`] fetches at once,
//! each endpoint once per round however many tenants share it.
//!
//! Per tenant and signal, from one healthy primary endpoint of the pool (a
//! replica's view: replicas hold the same data, so they are not summed):
//! VictoriaMetrics' storage bytes (`vm_data_size_bytes`, every part), rows
//! stored (`vm_rows{type="storage/…"}`), rows added per second (the rate of
//! `vm_rows_added_to_storage_total` between rounds), active series
//! (`vm_cache_entries{type="storage/hour_metric_ids"}`); VictoriaLogs' and
//! VictoriaTraces' the same from their own names (`vl_*`, `vt_*`:
//! `*_data_size_bytes`, `*_storage_rows{type="storage/…"}`, the rate of
//! `*_rows_ingested_total`; no active series); for every Victoria*
//! server the process's resident memory and CPU (the rate of
//! `process_cpu_seconds_total`). A shared cluster's services report the
//! whole cluster, not the tenant: they are "not reported".

use crate::api::Signal;
use crate::metrics::Metrics;
use crate::routing::RouteStore;
use crate::upstream::{Pool, Role};
use pingora::connectors::http::Connector;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Fetches at once, across every deployment.
pub const CONCURRENCY: usize = 4;
/// Longest a `/metrics` fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of one `/metrics` answer.
const MAX_METRICS_BYTES: usize = 16 * 1024 * 1024;

/// One tenant's signal, as last read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reading {
    /// The endpoint read (absent when none was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Unix time of the reading.
    pub at: u64,
    pub storage_bytes: Option<f64>,
    pub rows: Option<f64>,
    pub rows_per_second: Option<f64>,
    pub active_series: Option<f64>,
    pub memory_bytes: Option<f64>,
    pub cpu_cores: Option<f64>,
    /// Why there is no reading (the endpoint's error, or "not reported").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A tenant's signal and where it is read: a pool's endpoint, or why none.
type Wanted = ((Arc<str>, Signal), Result<(Arc<Pool>, usize), String>);

/// What one endpoint's `/metrics` says, and when it was read.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    storage_bytes: Option<f64>,
    rows: Option<f64>,
    rows_added_total: Option<f64>,
    active_series: Option<f64>,
    memory_bytes: Option<f64>,
    cpu_seconds_total: Option<f64>,
}

impl Sample {
    /// The figures of a Prometheus text exposition (sums over the label
    /// sets that count).
    fn parse(text: &str) -> Sample {
        let mut sample = Sample::default();
        let add = |slot: &mut Option<f64>, value: f64| *slot = Some(slot.unwrap_or(0.0) + value);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            match name {
                "vm_data_size_bytes" | "vl_data_size_bytes" | "vt_data_size_bytes" => {
                    add(&mut sample.storage_bytes, value)
                }
                "vm_rows" | "vl_storage_rows" | "vt_storage_rows" if labels.starts_with("type=\"storage/") => {
                    add(&mut sample.rows, value)
                }
                "vm_rows_added_to_storage_total" | "vl_rows_ingested_total" | "vt_rows_ingested_total" => {
                    add(&mut sample.rows_added_total, value)
                }
                "vm_cache_entries" if labels.starts_with("type=\"storage/hour_metric_ids\"") => {
                    add(&mut sample.active_series, value)
                }
                "process_resident_memory_bytes" => sample.memory_bytes = Some(value),
                "process_cpu_seconds_total" => sample.cpu_seconds_total = Some(value),
                _ => {}
            }
        }
        sample
    }
}

/// The latest readings, and what rates are computed from.
#[derive(Default)]
pub struct Usage {
    readings: Mutex<HashMap<(Arc<str>, Signal), Reading>>,
    /// Endpoint URL → its last sample and when it was taken.
    previous: Mutex<HashMap<Arc<str>, (Instant, Sample)>>,
}

impl Usage {
    /// A tenant's readings by signal.
    pub fn tenant(&self, tenant: &str) -> Vec<(Signal, Reading)> {
        let readings = self.readings.lock().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<(Signal, Reading)> =
            readings.iter().filter(|((t, _), _)| &**t == tenant).map(|((_, s), r)| (*s, r.clone())).collect();
        found.sort_by_key(|(signal, _)| signal.index());
        found
    }

    /// One round: every pool of the current table read (each endpoint once).
    pub async fn collect(&self, store: &RouteStore, connector: &Arc<Connector>, metrics: Option<&Metrics>) {
        let table = store.load_full();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // Which endpoint each pool is read at, or why none.
        let mut wanted: Vec<Wanted> = Vec::new();
        for id in table.tenant_ids() {
            let Some(route) = table.tenant(id) else { continue };
            for (pool, service) in route.services() {
                // vmselect of a shared cluster: the vminsert pool stands for it.
                if service.is_some_and(|s| !s.on_insert()) {
                    continue;
                }
                let chosen = if pool.cluster.is_some() {
                    Err("not reported: a shared cluster reports the whole cluster, not the tenant".to_string())
                } else {
                    let healthy =
                        pool.endpoints().iter().position(|e| e.role == Role::Primary && e.health.is_healthy());
                    healthy.map(|i| (pool.clone(), i)).ok_or_else(|| "no healthy primary endpoint".to_string())
                };
                wanted.push(((route.id.clone(), pool.signal), chosen));
            }
        }
        let mut fetched: HashMap<Arc<str>, Result<Sample, String>> = HashMap::new();
        let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for (_, chosen) in &wanted {
            let Ok((pool, index)) = chosen else { continue };
            let url = pool.endpoint(*index).url.clone();
            if fetched.insert(url.clone(), Err("not read".into())).is_some() {
                continue;
            }
            let (pool, index, connector, semaphore) = (pool.clone(), *index, connector.clone(), semaphore.clone());
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                let read = tokio::time::timeout(
                    FETCH_TIMEOUT,
                    pool.fetch(&connector, "mirador-router-usage", index, "/metrics", MAX_METRICS_BYTES),
                );
                let result = match read.await {
                    Ok(Ok(text)) => Ok(Sample::parse(&text)),
                    Ok(Err(why)) => Err(why),
                    Err(_) => Err(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())),
                };
                (url, result)
            });
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok((url, result)) = done {
                fetched.insert(url, result);
            }
        }
        let readings = self.readings_of(wanted, &fetched, now);
        if let Some(metrics) = metrics {
            metrics.set_usage(readings.iter().map(|((tenant, signal), reading)| {
                let values = [
                    reading.storage_bytes,
                    reading.rows,
                    reading.rows_per_second,
                    reading.active_series,
                    reading.memory_bytes,
                    reading.cpu_cores,
                ];
                (&**tenant, *signal, values)
            }));
        }
        *self.readings.lock().unwrap_or_else(|p| p.into_inner()) = readings;
    }

    /// Readings from the samples of this round and the rates since the last.
    fn readings_of(
        &self,
        wanted: Vec<Wanted>,
        fetched: &HashMap<Arc<str>, Result<Sample, String>>,
        now: u64,
    ) -> HashMap<(Arc<str>, Signal), Reading> {
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let taken = Instant::now();
        let mut rates: HashMap<Arc<str>, (Option<f64>, Option<f64>)> = HashMap::new();
        for (url, result) in fetched {
            let Ok(sample) = result else { continue };
            let rate = |now: Option<f64>, before: Option<f64>, seconds: f64| match (now, before) {
                (Some(now), Some(before)) if now >= before && seconds > 0.0 => Some((now - before) / seconds),
                _ => None,
            };
            let (rows, cpu) = match previous.get(url) {
                Some((at, before)) => {
                    let seconds = taken.duration_since(*at).as_secs_f64();
                    (
                        rate(sample.rows_added_total, before.rows_added_total, seconds),
                        rate(sample.cpu_seconds_total, before.cpu_seconds_total, seconds),
                    )
                }
                None => (None, None),
            };
            rates.insert(url.clone(), (rows, cpu));
            previous.insert(url.clone(), (taken, *sample));
        }
        previous.retain(|url, _| fetched.contains_key(url));
        wanted
            .into_iter()
            .map(|(key, chosen)| {
                let reading = match chosen {
                    Err(note) => Reading { at: now, note: Some(note), ..Reading::default() },
                    Ok((pool, index)) => {
                        let url = pool.endpoint(index).url.clone();
                        let endpoint = Some(url.to_string());
                        match fetched.get(&url) {
                            Some(Ok(sample)) => {
                                let (rows_per_second, cpu_cores) = rates.get(&url).copied().unwrap_or_default();
                                Reading {
                                    endpoint,
                                    at: now,
                                    storage_bytes: sample.storage_bytes,
                                    rows: sample.rows,
                                    rows_per_second,
                                    active_series: sample.active_series,
                                    memory_bytes: sample.memory_bytes,
                                    cpu_cores,
                                    note: None,
                                }
                            }
                            Some(Err(why)) => {
                                Reading { endpoint, at: now, note: Some(why.clone()), ..Reading::default() }
                            }
                            None => Reading { endpoint, at: now, note: Some("not read".into()), ..Reading::default() },
                        }
                    }
                };
                (key, reading)
            })
            .collect()
    }
}

/// Collects every `interval`, for ever (on the runtime it is spawned on).
pub async fn collect_forever(
    store: Arc<RouteStore>,
    usage: Arc<Usage>,
    interval: Duration,
    metrics: Option<Arc<Metrics>>,
) {
    let connector = Arc::new(Connector::new(None));
    loop {
        let started = Instant::now();
        usage.collect(&store, &connector, metrics.as_deref()).await;
        tracing::debug!(took_ms = started.elapsed().as_millis() as u64, "usage collected");
        tokio::time::sleep(interval.saturating_sub(started.elapsed()).max(Duration::from_secs(1))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figures_are_read_from_a_victoriametrics_exposition() {
        // As VictoriaMetrics 1.79 prints them (Debian's victoria-metrics).
        let text =
            "# HELP x\nvm_data_size_bytes{type=\"indexdb\"} 360\nvm_data_size_bytes{type=\"storage/small\"} 159\n\
                    vm_rows{type=\"indexdb\"} 18\nvm_rows{type=\"storage/big\"} 5\nvm_rows{type=\"storage/small\"} 2\n\
                    vm_rows_added_to_storage_total 7\nvm_cache_entries{type=\"storage/hour_metric_ids\"} 3\n\
                    vm_cache_entries{type=\"storage/tsid\"} 99\nprocess_resident_memory_bytes 24694784\n\
                    process_cpu_seconds_total 0.08\nnot a sample\n";
        let s = Sample::parse(text);
        assert_eq!(s.storage_bytes, Some(519.0));
        assert_eq!(s.rows, Some(7.0), "storage rows only, not the index's");
        assert_eq!((s.rows_added_total, s.active_series), (Some(7.0), Some(3.0)));
        assert_eq!((s.memory_bytes, s.cpu_seconds_total), (Some(24694784.0), Some(0.08)));
        assert_eq!(Sample::parse("").storage_bytes, None, "nothing known: not reported, not zero");
    }

    #[test]
    fn victorialogs_and_victoriatraces_figures_are_read_from_their_own_names() {
        // The names VictoriaLogs' storage metrics print (app/vlstorage), and
        // VictoriaTraces' vt_* of the same shape.
        let logs = "vl_data_size_bytes{type=\"indexdb\"} 100\nvl_data_size_bytes{type=\"storage\"} 900\n\
                    vl_storage_rows{type=\"storage/inmemory\"} 4\nvl_storage_rows{type=\"storage/big\"} 6\n\
                    vl_indexdb_rows 50\nvl_rows_ingested_total{type=\"jsonline\"} 7\n\
                    vl_rows_ingested_total{type=\"opentelemetry\",format=\"protobuf\"} 3\nprocess_resident_memory_bytes 1e6\n";
        let s = Sample::parse(logs);
        assert_eq!((s.storage_bytes, s.rows, s.rows_added_total), (Some(1000.0), Some(10.0), Some(10.0)));
        assert_eq!((s.active_series, s.memory_bytes), (None, Some(1e6)), "no series in logs");
        let traces = "vt_data_size_bytes{type=\"storage\"} 64\nvt_storage_rows{type=\"storage/small\"} 2\n\
                      vt_rows_ingested_total{type=\"opentelemetry_traces_otlphttp_protobuf\"} 2\n";
        let s = Sample::parse(traces);
        assert_eq!((s.storage_bytes, s.rows, s.rows_added_total), (Some(64.0), Some(2.0), Some(2.0)));
    }
}
