//! The product's first promise, as a property: for random tenant sets,
//! tenant ids, signals, listeners and paths, a request is either refused by
//! the router or reaches an endpoint of exactly its own tenant and signal.
//!
//! Two levels: the library (the proxy's own `resolve` over a routing table,
//! many cases) and the real binary against recording upstreams (fewer
//! cases, each a router).

mod common;

use common::*;
use mirador_router::api::{canonicalize, classify, names_a_tenant, Access, Listener, Signal, SURFACE};
use mirador_router::config::parse;
use mirador_router::proxy::{resolve, RequestCtx};
use mirador_router::routing::{RoutingTable, Shared};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use std::collections::BTreeMap;

/// A tenant: id and which signals it has a deployment for.
#[derive(Debug, Clone)]
struct TenantSpec {
    id: String,
    signals: [bool; 3],
}

fn tenant_specs() -> impl Strategy<Value = Vec<TenantSpec>> {
    prop::collection::btree_map("[a-zA-Z0-9][a-zA-Z0-9_-]{0,11}", prop::array::uniform3(any::<bool>()), 1..6)
        .prop_map(|m| m.into_iter().map(|(id, signals)| TenantSpec { id, signals }).collect())
}

/// Paths clients send: every table entry made concrete, plus near misses.
fn paths() -> impl Strategy<Value = String> {
    let concrete: Vec<String> = SURFACE.iter().map(|e| e.pattern.replace('*', "x")).collect();
    prop_oneof![
        prop::sample::select(concrete),
        "/[a-z/_]{0,20}",
        prop::sample::select(vec![
            "/".to_string(),
            "/health".into(),
            "/api/v1/writer".into(),
            "/select/0:0/prometheus".into()
        ]),
    ]
}

fn listeners() -> impl Strategy<Value = Listener> {
    prop_oneof![
        Just(Listener::Unified),
        Just(Listener::DropIn(Signal::Metrics)),
        Just(Listener::DropIn(Signal::Logs)),
        Just(Listener::DropIn(Signal::Traces)),
    ]
}

/// A tenant header: a configured id, a case-changed one, or a random string.
fn header_for(specs: &[TenantSpec], pick: usize, mangle: u8, random: &str) -> String {
    let id = &specs[pick % specs.len()].id;
    match mangle % 4 {
        0 | 1 => id.clone(),
        2 => id.to_uppercase(),
        _ => random.to_string(),
    }
}

/// A distinct endpoint port for every `(tenant, signal)` pair.
fn ports_of(specs: &[TenantSpec]) -> BTreeMap<(String, Signal), u16> {
    specs
        .iter()
        .flat_map(|s| Signal::ALL.map(|sig| (s.id.clone(), sig)))
        .enumerate()
        .map(|(i, key)| (key, 20000 + i as u16))
        .collect()
}

/// `(tenant, signal)` → endpoint port, one distinct port per pair.
fn config_text(specs: &[TenantSpec], port_of: impl Fn(&str, Signal) -> u16) -> String {
    let mut text = String::new();
    for spec in specs {
        for signal in Signal::ALL {
            if spec.signals[signal.index()] {
                let port = port_of(&spec.id, signal);
                text += &format!("[tenants.{}.{signal}]\nendpoints = [\"http://127.0.0.1:{port}\"]\n", spec.id);
            }
        }
        if !spec.signals.iter().any(|s| *s) {
            text += &format!("[tenants.{}]\n", spec.id);
        }
    }
    text
}

#[test]
fn the_table_routes_a_request_to_its_own_tenant_and_signal_or_refuses_it() {
    let mut runner = TestRunner::new(RunnerConfig { cases: 512, ..RunnerConfig::default() });
    let strategy = (
        tenant_specs(),
        prop::collection::vec((listeners(), paths(), any::<usize>(), any::<u8>(), "[ -~]{0,8}"), 1..40),
    );
    runner
        .run(&strategy, |(specs, requests)| {
            let ports = ports_of(&specs);
            let text = config_text(&specs, |id, signal| ports[&(id.to_string(), signal)]);
            let config = parse("prop.toml", &text).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let table = RoutingTable::build(&config, &Shared::for_tests());
            for (listener, path, pick, mangle, random) in requests {
                let tenant = header_for(&specs, pick, mangle, &random);
                let mut request = pingora::http::RequestHeader::build("GET", path.as_bytes(), None).unwrap();
                request.insert_header("X-Tenant-ID", tenant.as_str()).unwrap();
                let mut ctx = RequestCtx::new();
                // The signal the request is for: its endpoint's in the API surface.
                let classified = classify(listener, &http::Method::GET, &path).ok();
                let signal = classified.as_ref().map(|c| c.signal);
                // No generated tenant is granted an admin operation.
                let admin = classified.as_ref().is_some_and(|c| c.access == Access::Admin);
                match (resolve(&table, listener, &request, None, &mut ctx), signal) {
                    (Ok(()), Some(signal)) => {
                        let pool = ctx.pool.as_ref().expect("a resolved request has a pool");
                        prop_assert_eq!(&*pool.tenant, tenant.as_str());
                        prop_assert_eq!(pool.signal, signal);
                        for endpoint in pool.endpoints() {
                            let own = format!("http://127.0.0.1:{}", ports[&(tenant.clone(), signal)]);
                            prop_assert_eq!(&*endpoint.url, own.as_str());
                        }
                    }
                    (Ok(()), None) => prop_assert!(false, "{path} resolved on {listener:?} though it has no signal"),
                    (Err(reply), Some(signal)) => {
                        let configured =
                            !admin && specs.iter().find(|s| s.id == tenant).is_some_and(|s| s.signals[signal.index()]);
                        prop_assert!(
                            !configured,
                            "refused {tenant} {signal} ({}) though it is configured",
                            reply.message
                        );
                        prop_assert!(ctx.pool.is_none());
                    }
                    (Err(reply), None) => {
                        // 403 only for a path that names a Victoria tenant itself.
                        let tenant_in_path = canonicalize(&path).is_ok_and(|c| names_a_tenant(c.route_path()));
                        let allowed =
                            matches!(reply.status, 400 | 401 | 404 | 405) || (tenant_in_path && reply.status == 403);
                        prop_assert!(allowed, "{} for {path}", reply.status)
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_router_binary_never_sends_a_request_to_another_tenants_endpoint() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(RunnerConfig { cases: 24, ..RunnerConfig::default() });
    let strategy = (
        tenant_specs(),
        prop::collection::vec((listeners(), paths(), any::<usize>(), any::<u8>(), "[a-zA-Z0-9_-]{1,8}"), 40),
    );
    runner
        .run(&strategy, |(specs, requests)| {
            runtime.block_on(async {
                let ids: Vec<&str> = specs.iter().map(|s| s.id.as_str()).collect();
                let fleet = Fleet::start(&ids).await;
                let text = config_text(&specs, |id, signal| fleet.get(id, signal.as_str()).addr.port());
                let router = RouterProcess::start(&text);
                let http = client();
                for (listener, path, pick, mangle, random) in requests {
                    let tenant = header_for(&specs, pick, mangle, &random);
                    let base = match listener {
                        Listener::Unified => router.base("unified"),
                        Listener::DropIn(s) => router.base(s.as_str()),
                    };
                    let signal = classify(listener, &http::Method::GET, &path).ok().map(|c| c.signal);
                    let response =
                        http.get(format!("{base}{path}")).header("X-Tenant-ID", &tenant).send().await.unwrap();
                    let status = response.status().as_u16();
                    match response.headers().get("x-upstream") {
                        Some(served_by) => {
                            let signal = signal.expect("served, so the path has a signal");
                            prop_assert_eq!(served_by.to_str().unwrap(), format!("{tenant}/{signal}"));
                        }
                        None => prop_assert!(
                            matches!(status, 400 | 401 | 403 | 404 | 405),
                            "status {status} for {tenant} {path}"
                        ),
                    }
                }
                for ((tenant, signal), upstream) in &fleet.upstreams {
                    for seen in upstream.seen() {
                        prop_assert_eq!(seen.headers["x-tenant-id"].to_str().unwrap(), tenant.as_str(), "{}", signal);
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

/// The same promise with identities proven by client certificates: every
/// tenant lists its SPIFFE id; a request presents the names of a
/// certificate (its own tenant's, another's, or no tenant's) and maybe a
/// header. It reaches its certificate's tenant and signal, or is refused:
/// 401 for names no tenant lists, 403 for a header naming another tenant.
#[test]
fn a_certificate_identity_reaches_its_own_tenant_or_is_refused() {
    let spiffe = |id: &str| format!("spiffe://example.org/ns/{id}/sa/agent");
    let mut runner = TestRunner::new(RunnerConfig { cases: 256, ..RunnerConfig::default() });
    let strategy =
        (tenant_specs(), prop::collection::vec((paths(), any::<usize>(), any::<usize>(), 0u8..4, "[a-z]{1,6}"), 1..30));
    runner
        .run(&strategy, |(specs, requests)| {
            let ports = ports_of(&specs);
            let mut text = config_text(&specs, |id, signal| ports[&(id.to_string(), signal)]);
            for spec in &specs {
                text += &format!("[tenants.{}.auth]\nclient_cert_subjects = [\"{}\"]\n", spec.id, spiffe(&spec.id));
            }
            let config = parse("prop.toml", &text).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let table = RoutingTable::build(&config, &Shared::for_tests());
            for (path, owner, other, form, random) in requests {
                let owner = &specs[owner % specs.len()].id;
                let other = &specs[other % specs.len()].id;
                // 0: the certificate alone; 1: with its own tenant's header;
                // 2: with another tenant's header; 3: a certificate no tenant lists.
                let (names, header) = match form {
                    0 => (vec![spiffe(owner)], None),
                    1 => (vec![spiffe(owner)], Some(owner.clone())),
                    2 => (vec![spiffe(owner)], Some(other.clone())),
                    _ => (vec![spiffe(&format!("{random}-unlisted")), random.clone()], Some(owner.clone())),
                };
                let mut request = pingora::http::RequestHeader::build("GET", path.as_bytes(), None).unwrap();
                if let Some(header) = &header {
                    request.insert_header("X-Tenant-ID", header.as_str()).unwrap();
                }
                let mut ctx = RequestCtx::new();
                let result = resolve(&table, Listener::Unified, &request, Some(&names), &mut ctx);
                let mismatched = header.as_ref().is_some_and(|h| h != owner);
                match result {
                    Ok(()) => {
                        prop_assert!(form != 3 && !mismatched, "served {names:?} with header {header:?}");
                        let pool = ctx.pool.as_ref().expect("a resolved request has a pool");
                        prop_assert_eq!(&*pool.tenant, owner.as_str());
                        let own = format!("http://127.0.0.1:{}", ports[&(owner.clone(), pool.signal)]);
                        prop_assert!(pool.endpoints().iter().all(|e| *e.url == *own), "{owner}: not its own endpoint");
                    }
                    Err(reply) if form == 3 => prop_assert_eq!(reply.status, 401, "unlisted names: {}", reply.message),
                    Err(reply) if mismatched => prop_assert_eq!(reply.status, 403, "{}", reply.message),
                    Err(reply) => {
                        // Refused for the path or the signal, never for the identity:
                        // a path of a signal the owner has is served.
                        let classified = classify(Listener::Unified, &http::Method::GET, &path).ok();
                        let spec = specs.iter().find(|s| &s.id == owner).unwrap();
                        let served =
                            classified.is_some_and(|c| c.access != Access::Admin && spec.signals[c.signal.index()]);
                        prop_assert!(!served, "{owner} refused {path}: {} {}", reply.status, reply.message);
                        prop_assert!(
                            matches!(reply.status, 400 | 403 | 404 | 405),
                            "{}: {}",
                            reply.status,
                            reply.message
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
