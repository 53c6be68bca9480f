//! DNS discovery against a real DNS server (dnsmasq on a loopback port):
//! A and SRV answers changing under a continuous loop of reads. A new
//! address is probed before its first request, a removed one takes no new
//! request while one in flight to it completes, no read fails, an unchanged
//! address keeps its health and its pooled connections, and a DNS outage
//! keeps the last good set serving with the failure in the metrics and the
//! health API. With tenants in etcd, a refresh rebuilds from the file merged
//! with etcd's tenants, as the last reload did.

mod common;

use common::dnsmasq::Dnsmasq;
use common::etcd::Etcd;
use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Reads of tenant `acme` one after another until stopped.
struct Reads {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reads {
    fn start(base: &str) -> Reads {
        let (stop, ok, failed) = (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        let url = format!("{base}/api/v1/query?query=up");
        let task = tokio::spawn({
            let (stop, ok, failed): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<Mutex<Vec<String>>>) =
                (stop.clone(), Arc::clone(&ok), Arc::clone(&failed));
            async move {
                let http = client();
                while !stop.load(Ordering::SeqCst) {
                    match http.get(&url).header("X-Tenant-ID", "acme").send().await {
                        Ok(r) if r.status() == 200 => drop(ok.fetch_add(1, Ordering::SeqCst)),
                        Ok(r) => failed.lock().unwrap().push(format!("status {}", r.status())),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                }
            }
        });
        Reads { stop, ok, failed, task }
    }

    /// Stops the loop: reads answered 200, and what the others got.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        (self.ok.load(Ordering::SeqCst), self.failed.lock().unwrap().clone())
    }
}

/// Recording upstreams on `ips`, all on one port (a `name:port` entry names one).
async fn on_one_port(names: &[&str], ips: &[&str]) -> Vec<Upstream> {
    for _ in 0..100 {
        let first = tokio::net::TcpListener::bind((ips[0], 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match tokio::net::TcpListener::bind((*ip, port)).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => break,
            }
        }
        if listeners.len() == ips.len() {
            return names.iter().zip(listeners).map(|(name, l)| Upstream::serve(name, l)).collect();
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// Hosts-file lines giving `vm.test` the addresses of `upstreams`.
fn hosts(upstreams: &[&Upstream]) -> String {
    upstreams.iter().map(|u| format!("{} vm.test\n", u.addr.ip())).collect()
}

async fn wait_served(upstreams: &[&Upstream]) {
    Wait::new("every upstream to take a read", Duration::from_secs(10))
        .until(|| upstreams.iter().all(|u| !u.seen().is_empty()))
        .await;
}

/// The tenant's health answer, `signals.metrics`.
async fn metrics_health(router: &RouterProcess) -> Value {
    let (status, body) = router.admin_get("/api/v1/tenants/acme/health").await;
    assert_eq!(status, 200, "{body}");
    body["signals"]["metrics"].clone()
}

/// The health of the endpoint `url` in `health` (a `metrics_health`).
fn endpoint_health<'a>(health: &'a Value, url: &str) -> &'a Value {
    let endpoints = health["endpoints"].as_array().unwrap();
    endpoints.iter().find(|e| e["endpoint"] == url).unwrap_or_else(|| panic!("no {url} in {health}"))
}

/// Checks what a DNS change made at `changed` did: `new` probed before its
/// first request, `removed` given no request after it; returns the time
/// from the change to that first request.
fn check_the_swap(changed: Instant, new: &Upstream, removed: &Upstream) -> Duration {
    let first = new.seen()[0].at;
    let probed = new.first_probe_at().expect("the new address was probed");
    assert!(probed < first, "{} took a request before its first probe", new.name);
    let late: Vec<_> = removed.seen().into_iter().filter(|s| s.at > first).collect();
    assert!(late.is_empty(), "{} took {} request(s) after {} took its first", removed.name, late.len(), new.name);
    println!(
        "{}: probed {:?} before its first request, {:?} after the DNS change",
        new.name,
        first - probed,
        first - changed
    );
    first - changed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_records_change_under_a_read_loop() {
    let dir = tempfile::tempdir().unwrap();
    let upstreams = on_one_port(&["a", "b", "c"], &["127.0.0.2", "127.0.0.3", "127.0.0.4"]).await;
    let [a, b, c] = &upstreams[..] else { unreachable!() };
    let dns = Dnsmasq::start(dir.path(), &hosts(&[a, b]), "").await;
    let port = a.addr.port();
    let router = RouterProcess::start(&format!(
        "{}[tenants.acme.metrics]\ndns = [\"vm.test:{port}\"]\ndns_refresh = \"1s\"\n\
         health_check = {{ interval = \"200ms\" }}\n",
        dns.section()
    ));
    let base = router.base("unified");
    let reads = Reads::start(&base);
    wait_served(&[a, b]).await;
    let before = metrics_health(&router).await;
    let since_a = endpoint_health(&before, &a.url())["since"].clone();
    assert_eq!(before["dns"][0]["ok"], true, "{before}");

    // Slow reads in flight on both addresses, b's still running after the swap.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{base}/api/v1/query?query=up&delay_ms=2500");
            tokio::spawn(async move {
                let r = client().get(url).header("X-Tenant-ID", "acme").send().await.unwrap();
                let by = r.headers().get("x-upstream").map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), by)
            })
        })
        .collect();
    let slow_on = |u: &Upstream| u.seen().iter().filter(|s| s.path_and_query.contains("delay_ms")).count();
    Wait::new("the slow reads to arrive", Duration::from_secs(5)).until(|| slow_on(a) + slow_on(b) == 4).await;
    assert!(slow_on(b) > 0, "no slow read went to b");
    let a_peers: HashSet<_> = a.seen().iter().map(|s| s.peer).collect();

    let changed = Instant::now();
    dns.set_hosts(&hosts(&[a, c]));
    wait_served(&[c]).await;
    let took = check_the_swap(changed, c, b);
    let b_seen = b.seen().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.seen().len(), b_seen, "b took requests after the swap");
    for handle in slow {
        let (status, by) = handle.await.unwrap();
        assert_eq!(status, 200, "a slow read in flight across the swap failed (served by {by:?})");
    }

    // a is the same endpoint: its health state and its pooled connections stay.
    let after = metrics_health(&router).await;
    assert_eq!(endpoint_health(&after, &a.url())["since"], since_a, "a's health was not kept: {after}");
    let reused = || a.seen().iter().filter(|s| s.at > changed && a_peers.contains(&s.peer)).count();
    Wait::new("a read of a on a connection opened before the change", Duration::from_secs(3))
        .until(|| reused() > 0)
        .await;
    println!("a: {} requests after the change on connections opened before it", reused());
    let (ok, failed) = reads.finish().await;
    println!("A records: {ok} reads, {} failed, change to first request on the new address {took:?}", failed.len());
    assert!(failed.is_empty(), "reads failed: {failed:?}");
    assert!(took < Duration::from_secs(5), "the new address took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn srv_answers_change_and_a_dns_outage_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await);
    let conf = |ups: &[&Upstream]| {
        ups.iter()
            .map(|u| {
                let (name, port) = (&u.name, u.addr.port());
                format!("srv-host=_vm._tcp.test,{name}.test,{port}\nhost-record={name}.test,127.0.0.1\n")
            })
            .collect::<String>()
    };
    let mut dns = Dnsmasq::start(dir.path(), "", &conf(&[&a, &b])).await;
    let router = RouterProcess::start(&format!(
        "{}[tenants.acme.metrics]\ndns = [\"srv+_vm._tcp.test\"]\ndns_refresh = \"1s\"\n\
         health_check = {{ interval = \"200ms\" }}\n",
        dns.section()
    ));
    let reads = Reads::start(&router.base("unified"));
    wait_served(&[&a, &b]).await;

    let changed = Instant::now();
    dns.set_conf(&conf(&[&a, &c])).await;
    wait_served(&[&c]).await;
    let took = check_the_swap(changed, &c, &b);

    // DNS down: the failure is counted and shown, a and c keep serving.
    let down = Instant::now();
    dns.stop();
    Wait::new("dns_names_failing to be 1", Duration::from_secs(10))
        .every(Duration::from_millis(100))
        .until_async(|| async { router.metric("mirador_router_dns_names_failing").await == Some(1.0) })
        .await;
    println!("DNS stopped: the name counted failing after {:?}", down.elapsed());
    let health = metrics_health(&router).await;
    assert_eq!(health["dns"][0]["ok"], false, "{health}");
    assert_eq!(health["dns"][0]["addresses"].as_array().unwrap().len(), 2, "{health}");
    assert!(router.metric("mirador_router_dns_resolutions_total{result=\"failed\"}").await.unwrap() >= 1.0);
    let (a_seen, c_seen) = (a.seen().len(), c.seen().len());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(a.seen().len() > a_seen && c.seen().len() > c_seen, "the last good set stopped serving");

    dns.start_again().await;
    Wait::new("dns_names_failing to be 0", Duration::from_secs(10))
        .every(Duration::from_millis(100))
        .until_async(|| async { router.metric("mirador_router_dns_names_failing").await == Some(0.0) })
        .await;
    assert_eq!(metrics_health(&router).await["dns"][0]["ok"], true);
    let (ok, failed) = reads.finish().await;
    println!("SRV: {ok} reads, {} failed, change to first request on the new target {took:?}", failed.len());
    assert!(failed.is_empty(), "reads failed: {failed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_with_tenants_in_etcd_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let upstreams = on_one_port(&["a", "b"], &["127.0.0.5", "127.0.0.6"]).await;
    let [a, b] = &upstreams[..] else { unreachable!() };
    let dns = Dnsmasq::start(dir.path(), &hosts(&[a]), "").await;
    let port = a.addr.port();
    etcd.put(
        "/fleet/tenants/acme",
        &format!(
            "[metrics]\ndns = [\"vm.test:{port}\"]\ndns_refresh = \"1s\"\nhealth_check = {{ interval = \"200ms\" }}\n"
        ),
    );
    let store = format!("[store]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"/fleet/\"\n", etcd.url());
    let router = RouterProcess::builder().tenants(format!("{}{store}", dns.section())).start();
    let reads = Reads::start(&router.base("unified"));
    wait_served(&[a]).await;

    let changed = Instant::now();
    dns.set_hosts(&hosts(&[b]));
    wait_served(&[b]).await;
    let took = check_the_swap(changed, b, a);
    let (status, last) = router.admin_get("/api/v1/reload").await;
    assert_eq!((status, &last["last"]["trigger"]), (200, &Value::from("dns-refresh")), "{last}");
    assert_eq!(last["last"]["report"]["changed"], serde_json::json!(["acme"]), "{last}");
    let (ok, failed) = reads.finish().await;
    println!("etcd tenant: {ok} reads, {} failed, change to first request on the new address {took:?}", failed.len());
    assert!(failed.is_empty(), "reads failed: {failed:?}");
}
