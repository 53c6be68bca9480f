//! Micro-benchmarks of the request path's own work: classification, table
//! lookup at 10 / 1k / 100k tenants (must be flat), endpoint selection,
//! building a table from a 10k-tenant config off the request path, and the
//! swap that publishes a table, and what a shared tenant adds: its cluster
//! form and rewritten path.
//!
//! Run: `cargo bench --bench routing`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mirador_router::api::{
    classify, cluster_form, lookup as surface_lookup, Endpoint, Listener, Signal, VictoriaTenant,
};
use mirador_router::config::parse;
use mirador_router::routing::{RouteStore, RoutingTable, Shared};
use mirador_router::upstream::Tried;
use std::hint::black_box;

fn config_text(tenants: usize) -> String {
    (0..tenants)
        .map(|i| {
            let port = 10_000 + (i % 50_000);
            format!(
                "[tenants.tenant-{i}.metrics]\nendpoints = [\"http://127.0.0.1:{port}\", \"http://127.0.0.2:{port}\"]\n\
                 [tenants.tenant-{i}.logs]\nendpoints = [\"http://127.0.0.1:{port}\"]\n"
            )
        })
        .collect()
}

fn classification(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    for path in [
        "/api/v1/write",
        "/prometheus/api/v1/query_range",
        "/insert/loki/api/v1/push",
        "/api/v1/label/job/values",
        "//api/v1/%71uery",
        "/no/such/path",
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(path), path, |b, path| {
            b.iter(|| classify(Listener::Unified, &http::Method::POST, black_box(path)).is_ok())
        });
    }
    group.finish();
}

/// The endpoint most requests are: a metrics query.
fn query() -> &'static Endpoint {
    surface_lookup("/api/v1/query", Some(Signal::Metrics), false).unwrap()
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("table_lookup");
    for tenants in [10, 1_000, 100_000] {
        let table = RoutingTable::build(&parse("bench.toml", &config_text(tenants)).unwrap(), &Shared::for_tests());
        let id = format!("tenant-{}", tenants / 2);
        group.bench_with_input(BenchmarkId::from_parameter(tenants), &id, |b, id| {
            b.iter(|| table.route(black_box(id), query()).map(|(_, p)| p.select(Tried::default())))
        });
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let text = config_text(10_000);
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.bench_function("parse_validate_build_10k_tenants", |b| {
        b.iter(|| RoutingTable::build(&parse("bench.toml", black_box(&text)).unwrap(), &Shared::for_tests()))
    });
    group.finish();
}

fn select_and_swap(c: &mut Criterion) {
    let table = RoutingTable::build(&parse("bench.toml", &config_text(1_000)).unwrap(), &Shared::for_tests());
    let (_, pool) = table.route("tenant-7", query()).unwrap();
    c.bench_function("select_endpoint", |b| b.iter(|| black_box(pool).select(Tried::default())));
    let store =
        RouteStore::new(RoutingTable::build(&parse("bench.toml", &config_text(10)).unwrap(), &Shared::for_tests()));
    let spare = std::sync::Arc::new(RoutingTable::build(
        &parse("bench.toml", &config_text(10_000)).unwrap(),
        &Shared::for_tests(),
    ));
    c.bench_function("swap_10k_tenant_table", |b| b.iter(|| store.swap_arc(spare.clone())));
    c.bench_function("load_and_route", |b| b.iter(|| store.load().route(black_box("tenant-5"), query()).is_ok()));
}

/// What routing a shared tenant's request adds: the cluster form of the
/// classified endpoint, and the path written for it.
fn cluster_rewrite(c: &mut Criterion) {
    let id = VictoriaTenant { account: 42, project: 0 };
    c.bench_function("cluster_form_and_path", |b| {
        b.iter(|| {
            let classified = classify(Listener::Unified, &http::Method::POST, black_box("/api/v1/query")).unwrap();
            let form = cluster_form(classified.endpoint).unwrap();
            form.path(&classified.path.encoded_route_path(), black_box(id))
        })
    });
}

criterion_group!(benches, classification, lookup, build, select_and_swap, cluster_rewrite);
criterion_main!(benches);
