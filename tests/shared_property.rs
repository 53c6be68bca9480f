//! Property: with random tenants, each signal dedicated or on a shared
//! cluster with random ids, random paths of the surface (some with a
//! spoofed tenant segment in front) and spoofed `AccountID`/`ProjectID`
//! headers, a request reaches exactly its own tenant's (service, account,
//! project) — or is refused and reaches nobody. A spoofed id never reaches
//! any upstream.

mod common;

use common::cluster;
use common::*;
use mirador_router::api::{Access, Signal, SURFACE};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct TenantSpec {
    /// Victoria ids of each of metrics and logs, `None` for dedicated.
    metrics: Option<(u32, u32)>,
    logs: Option<(u32, u32)>,
}

#[derive(Debug, Clone)]
struct RequestSpec {
    tenant: usize,
    endpoint: usize,
    /// A tenant segment put in front of the path.
    spoof_path: Option<String>,
    spoof_headers: Vec<(&'static str, String)>,
}

fn ids() -> impl Strategy<Value = Option<(u32, u32)>> {
    prop_oneof![Just(None), (any::<u32>(), prop_oneof![Just(0u32), any::<u32>()]).prop_map(Some)]
}

fn endpoints() -> Vec<&'static mirador_router::api::Endpoint> {
    SURFACE.iter().filter(|e| matches!(e.signal, Signal::Metrics | Signal::Logs) && e.access != Access::Admin).collect()
}

fn request(tenants: usize) -> impl Strategy<Value = RequestSpec> {
    let spoof_path = prop_oneof![
        3 => Just(None),
        1 => (prop_oneof![Just("insert"), Just("select"), Just("delete")], any::<u32>(), any::<bool>())
            .prop_map(|(root, id, multi)| Some(if multi { format!("/{root}/multitenant") } else { format!("/{root}/{id}") })),
        1 => any::<u32>().prop_map(|id| Some(format!("/prometheus/insert/{id}:0"))),
    ];
    let header = prop_oneof![Just("AccountID"), Just("accountid"), Just("ProjectID"), Just("PROJECTID")];
    let value = prop_oneof![any::<u32>().prop_map(|n| n.to_string()), Just("multitenant".to_string())];
    (0..tenants, 0..endpoints().len(), spoof_path, prop::collection::vec((header, value), 0..3)).prop_map(
        |(tenant, endpoint, spoof_path, spoof_headers)| RequestSpec { tenant, endpoint, spoof_path, spoof_headers },
    )
}

fn case() -> impl Strategy<Value = (Vec<TenantSpec>, Vec<RequestSpec>)> {
    prop::collection::vec((ids(), ids()).prop_map(|(metrics, logs)| TenantSpec { metrics, logs }), 2..6)
        .prop_filter("distinct ids per signal", |tenants| {
            let distinct = |pick: fn(&TenantSpec) -> Option<(u32, u32)>| {
                let all: Vec<_> = tenants.iter().filter_map(pick).collect();
                all.iter().collect::<std::collections::HashSet<_>>().len() == all.len()
            };
            distinct(|t| t.metrics) && distinct(|t| t.logs)
        })
        .prop_flat_map(|tenants| {
            let n = tenants.len();
            (Just(tenants), prop::collection::vec(request(n), 40))
        })
}

async fn run(tenants: Vec<TenantSpec>, requests: Vec<RequestSpec>) {
    let vminsert = cluster::vminsert("vminsert").await;
    let vmselect = cluster::vmselect("vmselect").await;
    let vlogs = Upstream::start("vlogs").await;
    let mut own = Vec::new();
    let mut config = String::new();
    for (i, tenant) in tenants.iter().enumerate() {
        let (metrics, logs) =
            (Upstream::start(&format!("t{i}-metrics")).await, Upstream::start(&format!("t{i}-logs")).await);
        config += &match tenant.metrics {
            Some((a, p)) => format!(
                "[tenants.t{i}.metrics]\naccount_id = {a}\nproject_id = {p}\ninsert_endpoints = [\"{}\"]\nselect_endpoints = [\"{}\"]\n",
                vminsert.url(),
                vmselect.url()
            ),
            None => format!("[tenants.t{i}.metrics]\nendpoints = [\"{}\"]\n", metrics.url()),
        };
        config += &match tenant.logs {
            Some((a, p)) => {
                format!("[tenants.t{i}.logs]\naccount_id = {a}\nproject_id = {p}\nendpoints = [\"{}\"]\n", vlogs.url())
            }
            None => format!("[tenants.t{i}.logs]\nendpoints = [\"{}\"]\n", logs.url()),
        };
        own.push((metrics, logs));
    }
    let router = RouterProcess::start(&config);
    let base = router.base("unified");
    let endpoints = endpoints();
    for (n, spec) in requests.iter().enumerate() {
        let endpoint = endpoints[spec.endpoint];
        let path = format!("{}{}", spec.spoof_path.as_deref().unwrap_or(""), endpoint.pattern.replace('*', "x"));
        let method = if endpoint.allows(&http::Method::GET) { reqwest::Method::GET } else { reqwest::Method::POST };
        let request_id = format!("p-{n}");
        let mut request = client()
            .request(method, format!("{base}{path}"))
            .header("X-Tenant-ID", format!("t{}", spec.tenant))
            .header("X-Request-ID", &request_id);
        for (name, value) in &spec.spoof_headers {
            request = request.header(*name, value);
        }
        let status = request.send().await.unwrap().status().as_u16();
        let stands = [&vminsert, &vmselect, &vlogs].into_iter().chain(own.iter().flat_map(|(m, l)| [m, l]));
        let saw: Vec<_> = stands
            .flat_map(|up| up.seen().into_iter().map(move |seen| (up.name.clone(), seen)))
            .filter(|(_, seen)| seen.headers.get("x-request-id").is_some_and(|v| v == request_id.as_str()))
            .collect();
        let what = format!("{spec:?} {path} → {status}, seen {saw:?}");
        if spec.spoof_path.is_some() {
            assert_eq!((status, saw.len()), (403, 0), "{what}");
            continue;
        }
        if saw.is_empty() {
            // Refused: only where the shared cluster has no form of the endpoint.
            assert_eq!(status, 403, "{what}");
            assert!(tenants[spec.tenant].metrics.is_some() && endpoint.signal == Signal::Metrics, "{what}");
            continue;
        }
        assert_eq!(saw.len(), 1, "{what}");
        let (name, seen) = &saw[0];
        let header =
            |h: &str| seen.headers.get_all(h).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
        let tenant = &tenants[spec.tenant];
        let i = spec.tenant;
        match (endpoint.signal, tenant.metrics, tenant.logs) {
            (Signal::Metrics, Some((a, p)), _) => {
                assert!(name == "vminsert" || name == "vmselect", "{what}");
                assert_eq!(cluster::parse(&seen.path_and_query).unwrap().tenant, format!("{a}:{p}"), "{what}");
                assert!(header("accountid").is_empty() && header("projectid").is_empty(), "{what}");
            }
            (Signal::Logs, _, Some((a, p))) => {
                assert_eq!(name, "vlogs", "{what}");
                assert_eq!(
                    (header("accountid"), header("projectid")),
                    (vec![a.to_string()], vec![p.to_string()]),
                    "{what}"
                );
            }
            (signal, _, _) => {
                assert_eq!(*name, format!("t{i}-{signal}"), "{what}");
                assert!(header("accountid").is_empty() && header("projectid").is_empty(), "{what}");
            }
        }
        assert!((200..300).contains(&status), "{what}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn a_request_reaches_its_own_tenants_service_and_ids_or_nobody((tenants, requests) in case()) {
        tokio::runtime::Runtime::new().unwrap().block_on(run(tenants, requests));
    }
}
