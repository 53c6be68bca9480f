//! Memory and build time at scale: 10,000 tenants × 3 signals, every pool
//! with an endpoint of its own (30,000 endpoints), as live heap bytes counted
//! by a counting global allocator — exact and free of RSS noise — by what
//! holds them: the parsed config, the routing table, the health-probe schedule, and
//! metric series once every pool has served.
//!
//! Run: `cargo bench --bench memory` (`-- 100000` for another tenant count).
//! Under `cargo test --benches` it runs on 300 tenants as a smoke test.
//!
//! Probes go to addresses of 127.0.0.0/8 where nothing listens (refused at
//! once), as for dead endpoints; nothing leaves the machine.

use mirador_router::config::parse;
use mirador_router::metrics::Metrics;
use mirador_router::reload::build_table;
use mirador_router::routing::{RoutingTable, Shared};
use mirador_router::upstream::HealthRegistry;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn config_text(tenants: usize) -> String {
    let mut text = String::from("[health_check]\ninterval = \"60s\"\ntimeout = \"1s\"\n");
    for i in 0..tenants {
        let (a, b, c) = ((i >> 16) & 255, (i >> 8) & 255, i & 255);
        for (signal, port) in [("metrics", 8428), ("logs", 9428), ("traces", 10428)] {
            text += &format!("[tenants.t{i}.{signal}]\nendpoints = [\"http://127.{}.{b}.{c}:{port}\"]\n", a + 1);
        }
    }
    text
}

fn mib(bytes: isize) -> String {
    format!("{:8.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let tenants = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if benching { 10_000 } else { 300 });
    let pools = tenants * 3;
    println!("{tenants} tenants x 3 signals, {pools} pools and endpoints; live heap bytes by holder");

    let start = live();
    let text = config_text(tenants);
    let started = Instant::now();
    let config = parse("scale.toml", &text).expect("valid config");
    let parse_ms = started.elapsed().as_secs_f64() * 1e3;
    let after_config = live();
    println!(
        "parsed config            {}  (parse + validate {parse_ms:.0} ms)",
        mib(after_config - start - text.len() as isize)
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let per_pool = |bytes: isize| format!("{} ({:6.0} B per pool)", mib(bytes), bytes as f64 / pools as f64);

    let shared = Shared::for_tests();
    let before = live();
    let table = RoutingTable::build(&config, &shared);
    println!("routing table            {}", per_pool(live() - before));
    drop((table, shared));

    let shared = Shared::new(HealthRegistry::new(runtime.handle().clone(), None), None);
    let before = live();
    let table = build_table(&config, &shared, None);
    println!("  + probe schedule       {}", per_pool(live() - before));
    drop((table, shared));

    let metrics = Metrics::new();
    let shared =
        Shared::new(HealthRegistry::new(runtime.handle().clone(), Some(metrics.clone())), Some(metrics.clone()));
    let before_table = live();
    let started = Instant::now();
    let table = build_table(&config, &shared, None);
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let after_table = live();
    println!(
        "  + metrics (as run)     {}  build and first probes {build_ms:.0} ms",
        per_pool(after_table - before_table)
    );

    let started = Instant::now();
    let again = RoutingTable::build(&config, &shared);
    let all_ms = started.elapsed().as_secs_f64() * 1e3;
    drop(again);
    let started = Instant::now();
    let again = RoutingTable::rebuild(&config, &shared, Some((&config, &table)));
    let reuse_ms = started.elapsed().as_secs_f64() * 1e3;
    drop(again);
    println!("table build for a reload {all_ms:.0} ms with every tenant changed, {reuse_ms:.0} ms with none (kept tenants are taken over)");

    // Every pool serves once: its metric series exist from then on.
    let before_series = live();
    for i in 0..tenants {
        let route = table.tenant(&format!("t{i}")).expect("configured tenant");
        for pool in route.pools() {
            if let Some(m) = pool.metrics() {
                m.answered(200);
            }
            if let Some(histogram) = pool.attempt_duration(0) {
                histogram.observe(0.001);
            }
        }
    }
    let after_series = live();
    println!("series of every pool     {}", per_pool(after_series - before_series));
    println!("total                    {}", mib(after_series - start));
}
