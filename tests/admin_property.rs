//! Admin mutations mean what they answer (issue 12, "Hardening"), as a
//! property against the real binary: after every generated `POST`, `PUT` or
//! `DELETE` of a tenant — valid bodies and broken ones — the answer, the
//! config file and the routing agree with a model of what should be in
//! force. A 2xx shows the tenant as now in force; a refusal (400 naming the
//! field, 404, 409) changes nothing. The file holds exactly the model's
//! tenants; `GET /api/v1/tenants[/<id>]` shows them; a query and an ingest
//! of each tenant and signal through the unified listener reach a stand-in
//! of that deployment, or are refused as the tenant's table says (unknown,
//! suspended, no such signal, read-only, over `max_body_bytes`); and a
//! restarted router serves the same.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Ids the mutations name: they collide on purpose (409, 404), and `base`
/// is in the file from the start.
const IDS: [&str; 4] = ["base", "acme", "beta", "gamma-2"];

/// Stand-ins the deployments point at, each answering with its name.
const UPSTREAMS: usize = 4;

/// A tenant table that validates: one or two signals on stand-ins.
#[derive(Debug, Clone)]
struct ValidTenant {
    /// Per signal, the stand-ins (by index) of its endpoints.
    signals: Vec<(&'static str, Vec<usize>)>,
    name: Option<String>,
    timeout: Option<&'static str>,
    suspended: Option<bool>,
    read_only: Option<bool>,
    max_body_bytes: Option<u64>,
    /// Whether the body repeats the id (a PUT may leave it out).
    with_id: bool,
}

fn valid_tenant() -> impl Strategy<Value = ValidTenant> {
    let endpoints = prop::sample::subsequence((0..UPSTREAMS).collect::<Vec<_>>(), 1..=2);
    (
        prop::sample::subsequence(SIGNALS.to_vec(), 1..=2),
        prop::collection::vec(endpoints, 2),
        prop::option::of("[A-Za-z][A-Za-z .]{0,11}"),
        prop::option::of(prop::sample::select(vec!["5s", "250ms", "1h"])),
        prop::option::weighted(0.2, any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(vec![1, INGEST_BODY.len() as u64, 1 << 20, 1 << 40])),
        any::<bool>(),
    )
        .prop_map(|(signals, endpoints, name, timeout, suspended, read_only, max_body_bytes, with_id)| {
            ValidTenant {
                signals: signals.into_iter().zip(endpoints).collect(),
                name,
                timeout,
                suspended,
                read_only,
                max_body_bytes,
                with_id,
            }
        })
}

/// Bodies the router must refuse, each for one reason.
#[derive(Debug, Clone, Copy)]
enum Broken {
    NotJson,
    NotAnObject,
    Empty,
    OnlyId,
    OtherId,
    BadId,
    NullField,
    UnknownField,
    UnknownSignalField,
    BadScheme,
    EndpointWithPath,
    DuplicateEndpoint,
    NoEndpoints,
    HugeDuration,
    TimeoutNotAString,
    EndpointsNotAList,
    ReadOnlyNotABool,
    HugeInteger,
    ReadOnlyWithAdminOps,
    SignalWithoutDeployment,
    SignalsOff,
}

const BROKEN: [Broken; 21] = [
    Broken::NotJson,
    Broken::NotAnObject,
    Broken::Empty,
    Broken::OnlyId,
    Broken::OtherId,
    Broken::BadId,
    Broken::NullField,
    Broken::UnknownField,
    Broken::UnknownSignalField,
    Broken::BadScheme,
    Broken::EndpointWithPath,
    Broken::DuplicateEndpoint,
    Broken::NoEndpoints,
    Broken::HugeDuration,
    Broken::TimeoutNotAString,
    Broken::EndpointsNotAList,
    Broken::ReadOnlyNotABool,
    Broken::HugeInteger,
    Broken::ReadOnlyWithAdminOps,
    Broken::SignalWithoutDeployment,
    Broken::SignalsOff,
];

#[derive(Debug, Clone)]
enum Body {
    Valid(ValidTenant),
    Broken(Broken),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        3 => valid_tenant().prop_map(Body::Valid),
        2 => prop::sample::select(BROKEN.to_vec()).prop_map(Body::Broken),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Create(&'static str, Body),
    Update(&'static str, Body),
    Delete(&'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let id = prop::sample::select(IDS.to_vec());
    prop_oneof![
        3 => (id.clone(), body()).prop_map(|(id, body)| Mutation::Create(id, body)),
        3 => (id.clone(), body()).prop_map(|(id, body)| Mutation::Update(id, body)),
        1 => id.prop_map(Mutation::Delete),
    ]
}

/// How a body fares before the tenant's existence is looked at.
#[derive(Debug)]
enum Refusal {
    /// Not a tenant at all: 400 whatever the tenant.
    BadBody(String),
    /// A tenant that does not validate: 400 once it exists (PUT) or does not (POST).
    Invalid(String),
}

/// The stand-ins' URLs and names, by index.
struct Fleet {
    upstreams: Vec<Upstream>,
}

impl Fleet {
    fn url(&self, i: usize) -> String {
        self.upstreams[i].url()
    }

    /// The tenant table (without its id) of a valid body.
    fn table(&self, tenant: &ValidTenant) -> Map<String, Value> {
        let mut table = Map::new();
        if let Some(name) = &tenant.name {
            table.insert("name".into(), json!(name));
        }
        if let Some(suspended) = tenant.suspended {
            table.insert("status".into(), json!(if suspended { "suspended" } else { "active" }));
        }
        for (signal, endpoints) in &tenant.signals {
            let mut deployment = Map::new();
            deployment.insert("endpoints".into(), endpoints.iter().map(|&i| self.url(i)).collect());
            if let Some(timeout) = tenant.timeout {
                deployment.insert("timeout".into(), json!(timeout));
            }
            table.insert(signal.to_string(), Value::Object(deployment));
        }
        if let Some(read_only) = tenant.read_only {
            table.insert("features".into(), json!({ "read_only": read_only }));
        }
        if let Some(bytes) = tenant.max_body_bytes {
            table.insert("quotas".into(), json!({ "max_body_bytes": bytes }));
        }
        table
    }

    /// The request body, and what the router must refuse it for.
    fn body(&self, body: &Body, id: &str, put: bool) -> (String, Option<Refusal>) {
        let tenant = match body {
            Body::Valid(tenant) => tenant,
            Body::Broken(broken) => return self.broken(*broken, id, put),
        };
        let mut table = self.table(tenant);
        if tenant.with_id || !put {
            table.insert("id".into(), json!(id));
        }
        (Value::Object(table).to_string(), None)
    }

    fn broken(&self, broken: Broken, id: &str, put: bool) -> (String, Option<Refusal>) {
        let at = |key: &str| format!("tenants.{id}.{key}");
        let up = self.url(0);
        let metrics = |deployment: Value| json!({ "id": id, "metrics": deployment });
        let invalid = |body: Value, key: String| (body.to_string(), Some(Refusal::Invalid(key)));
        let bad_body = |body: String, why: &str| (body, Some(Refusal::BadBody(why.to_string())));
        let routes_nothing = format!("tenant {id:?} would route nothing");
        match broken {
            Broken::NotJson => bad_body("{\"id\": ".into(), "the body is not JSON"),
            Broken::NotAnObject => bad_body(json!([id]).to_string(), "the body must be a JSON object"),
            Broken::Empty if put => invalid(json!({}), routes_nothing),
            Broken::Empty => bad_body("{}".into(), "id: missing"),
            Broken::OnlyId => invalid(json!({ "id": id }), routes_nothing),
            Broken::OtherId if put => bad_body(
                json!({ "id": "someone-else", "metrics": { "endpoints": [up] } }).to_string(),
                &format!("id: \"someone-else\" in the body does not match {id:?} in the path"),
            ),
            Broken::OtherId | Broken::BadId => {
                let body = json!({ "id": "bad id", "metrics": { "endpoints": [up] } }).to_string();
                let why = if put { "does not match".to_string() } else { "id: tenant id \"bad id\" must be".into() };
                bad_body(body, &why)
            }
            Broken::NullField => bad_body(
                metrics(json!({ "endpoints": [up], "timeout": null })).to_string(),
                &format!("{}: null is not a value", at("metrics.timeout")),
            ),
            Broken::UnknownField => {
                invalid(json!({ "id": id, "metrics": { "endpoints": [up] }, "colour": "blue" }), at("colour"))
            }
            Broken::UnknownSignalField => {
                invalid(metrics(json!({ "endpoints": [up], "timeuot": "1s" })), at("metrics.timeuot"))
            }
            Broken::BadScheme => {
                invalid(metrics(json!({ "endpoints": ["ftp://127.0.0.1:21"] })), at("metrics.endpoints[0]"))
            }
            Broken::EndpointWithPath => {
                invalid(metrics(json!({ "endpoints": [format!("{up}/select")] })), at("metrics.endpoints[0]"))
            }
            Broken::DuplicateEndpoint => invalid(metrics(json!({ "endpoints": [up, up] })), at("metrics.endpoints[1]")),
            Broken::NoEndpoints => invalid(metrics(json!({ "endpoints": [] })), at("metrics.endpoints")),
            Broken::HugeDuration => {
                invalid(metrics(json!({ "endpoints": [up], "timeout": "500000000000y" })), at("metrics.timeout"))
            }
            Broken::TimeoutNotAString => {
                invalid(metrics(json!({ "endpoints": [up], "timeout": 5 })), at("metrics.timeout"))
            }
            Broken::EndpointsNotAList => invalid(metrics(json!({ "endpoints": up })), at("metrics.endpoints")),
            Broken::ReadOnlyNotABool => invalid(
                json!({ "id": id, "metrics": { "endpoints": [up] }, "features": { "read_only": "yes" } }),
                at("features.read_only"),
            ),
            Broken::HugeInteger => invalid(
                json!({ "id": id, "metrics": { "endpoints": [up] }, "quotas": { "max_body_bytes": u64::MAX } }),
                at("quotas.max_body_bytes"),
            ),
            Broken::ReadOnlyWithAdminOps => invalid(
                json!({
                    "id": id,
                    "metrics": { "endpoints": [up] },
                    "features": { "read_only": true, "admin_api": ["snapshot"] }
                }),
                at("features.admin_api"),
            ),
            Broken::SignalWithoutDeployment => invalid(
                json!({ "id": id, "metrics": { "endpoints": [up] }, "features": { "signals": ["logs"] } }),
                at("features.signals[0]"),
            ),
            Broken::SignalsOff => invalid(
                json!({ "id": id, "metrics": { "endpoints": [up] }, "features": { "signals": [] } }),
                routes_nothing,
            ),
        }
    }
}

/// What should be in force: each tenant's table, without its id.
type Model = BTreeMap<String, Map<String, Value>>;

fn with_id(id: &str, table: &Map<String, Value>) -> Value {
    let mut tenant = table.clone();
    tenant.insert("id".into(), json!(id));
    Value::Object(tenant)
}

/// Applies one mutation to the router and to the model, and checks the
/// answer against what the model says it must be; whether it is in force.
async fn mutate(
    router: &RouterProcess,
    fleet: &Fleet,
    model: &mut Model,
    mutation: &Mutation,
) -> Result<bool, TestCaseError> {
    // The stand-ins are shared by tenants and signals, which the deployment
    // checks refuse (tests/validation.rs): this property is about the file,
    // the answer and the routing, so creates and updates skip them.
    let (method, path, id, body) = match mutation {
        Mutation::Create(id, body) => ("POST", "/api/v1/tenants?force=true".to_string(), *id, Some(body)),
        Mutation::Update(id, body) => ("PUT", format!("/api/v1/tenants/{id}?force=true"), *id, Some(body)),
        Mutation::Delete(id) => ("DELETE", format!("/api/v1/tenants/{id}"), *id, None),
    };
    let exists = model.contains_key(id);
    let (text, refusal) = match body {
        Some(body) => fleet.body(body, id, method == "PUT"),
        None => (String::new(), None),
    };
    let (status, answer) = router.admin(method, &path, body.map(|_| text.as_str())).await;
    let shown = format!("{method} {path} {text} → {status} {answer}");
    let (expected, why) = match (&refusal, method, exists) {
        (Some(Refusal::BadBody(why)), _, _) => (400, why.clone()),
        (_, "POST", true) => (409, format!("tenant {id:?} exists already")),
        (_, "PUT" | "DELETE", false) => (404, format!("unknown tenant {id:?}")),
        (Some(Refusal::Invalid(why)), _, _) => (400, why.clone()),
        (None, "POST", false) => (201, String::new()),
        (None, _, true) => (200, String::new()),
        other => unreachable!("{other:?}"),
    };
    prop_assert_eq!(status, expected, "{}", shown);
    if expected >= 400 {
        prop_assert_eq!(&answer["status"], "error", "{}", shown);
        let error = answer["error"].as_str().unwrap_or_default();
        prop_assert!(error.contains(&why), "the error should say {:?}: {}", why, shown);
        return Ok(false);
    }
    let changes = &answer["changes"];
    match mutation {
        Mutation::Delete(_) => {
            model.remove(id);
            prop_assert_eq!(&answer["tenant"], &Value::Null, "{}", shown);
            prop_assert_eq!(&changes["removed"], &json!([id]), "{}", shown);
        }
        Mutation::Create(_, Body::Valid(tenant)) | Mutation::Update(_, Body::Valid(tenant)) => {
            model.insert(id.to_string(), fleet.table(tenant));
            prop_assert_eq!(&answer["tenant"], &with_id(id, &model[id]), "{}", shown);
            let (added, changed) = if exists { (json!([]), json!([id])) } else { (json!([id]), json!([])) };
            prop_assert_eq!(&changes["added"], &added, "{}", shown);
            // An update that leaves the validated tenant as it was changes nothing.
            prop_assert!(changes["changed"] == changed || changes["changed"] == json!([]), "{}", shown);
            prop_assert_eq!(&changes["removed"], &json!([]), "{}", shown);
        }
        Mutation::Create(_, Body::Broken(_)) | Mutation::Update(_, Body::Broken(_)) => unreachable!("{shown}"),
    }
    Ok(true)
}

/// A body every ingest request sends: over the smaller `max_body_bytes`.
const INGEST_BODY: &str = "up{job=\"x\"} 1\n";

/// The stand-ins (by name) that may serve a request, or the router's refusal.
type Answer = Result<Vec<String>, u16>;

/// Which stand-ins may answer a query and an ingest of `id`'s `signal`
/// under the model, or the router's refusal: 403 for an unknown or
/// suspended tenant, a signal it has no deployment for, and a read-only
/// tenant's ingest; 413 for a body over its `max_body_bytes`.
fn answers(fleet: &Fleet, model: &Model, id: &str, signal: &str) -> (Answer, Answer) {
    let Some(table) = model.get(id) else { return (Err(403), Err(403)) };
    let Some(deployment) = table.get(signal) else { return (Err(403), Err(403)) };
    if table.get("status") == Some(&json!("suspended")) {
        return (Err(403), Err(403));
    }
    let urls = &deployment["endpoints"];
    let names: Vec<String> = fleet
        .upstreams
        .iter()
        .filter(|u| urls.as_array().unwrap().contains(&json!(u.url())))
        .map(|u| u.name.clone())
        .collect();
    let ingest = if table.get("features").is_some_and(|f| f["read_only"] == json!(true)) {
        Err(403)
    } else if table.get("quotas").is_some_and(|q| q["max_body_bytes"].as_u64() < Some(INGEST_BODY.len() as u64)) {
        Err(413)
    } else {
        Ok(names.clone())
    };
    (Ok(names), ingest)
}

/// The file, the tenant API and the routing all show the model.
async fn agrees(router: &RouterProcess, fleet: &Fleet, model: &Model, after: &str) -> Result<(), TestCaseError> {
    let text = std::fs::read_to_string(&router.config_path).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("after {after}: the file: {e}\n{text}"));
    let in_file: BTreeMap<String, Value> = match file.get("tenants") {
        Some(tenants) => serde_json::from_value(serde_json::to_value(tenants).unwrap()).unwrap(),
        None => BTreeMap::new(),
    };
    let modelled: BTreeMap<String, Value> =
        model.iter().map(|(id, t)| (id.clone(), Value::Object(t.clone()))).collect();
    prop_assert_eq!(&in_file, &modelled, "after {}: the file\n{}", after, text);

    let (status, listed) = router.admin("GET", "/api/v1/tenants", None).await;
    prop_assert_eq!(status, 200);
    let listed: BTreeMap<String, Value> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    let expected: BTreeMap<String, Value> = model.iter().map(|(id, t)| (id.clone(), with_id(id, t))).collect();
    prop_assert_eq!(&listed, &expected, "after {}: GET /api/v1/tenants", after);

    let http = client();
    for id in IDS {
        let (status, tenant) = router.admin("GET", &format!("/api/v1/tenants/{id}"), None).await;
        match model.get(id) {
            Some(table) => prop_assert_eq!((status, tenant), (200, with_id(id, table)), "after {}", after),
            None => prop_assert_eq!(status, 404, "after {}: {} {}", after, id, tenant),
        }
        for signal in SIGNALS {
            let (query, ingest) = answers(fleet, model, id, signal);
            let base = router.base("unified");
            let asked = http.get(format!("{base}{}", query_path(signal)));
            let sent = http.post(format!("{base}{}", ingest_path(signal))).body(INGEST_BODY);
            for (what, request, expected) in [("query", asked, query), ("ingest", sent, ingest)] {
                let response = request.header("X-Tenant-ID", id).send().await.unwrap();
                let status = response.status().as_u16();
                let served_by = response.headers().get("x-upstream").map(|v| v.to_str().unwrap().to_string());
                let shown = format!("after {after}: {what} of {id} {signal}: {status} from {served_by:?}");
                match expected {
                    Ok(names) => {
                        prop_assert_eq!(status, 200, "{}", shown);
                        prop_assert!(
                            names.contains(&served_by.unwrap_or_default()),
                            "{}, not one of {:?}",
                            shown,
                            names
                        );
                    }
                    Err(refused) => prop_assert_eq!((status, served_by.as_deref()), (refused, None), "{}", shown),
                }
            }
        }
    }
    Ok(())
}

const CASES: u32 = 4;

#[test]
fn every_admin_mutation_is_in_force_in_the_answer_the_file_and_the_routing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fleet = runtime.block_on(async {
        let mut upstreams = Vec::new();
        for i in 0..UPSTREAMS {
            upstreams.push(Upstream::start(&format!("u{i}")).await);
        }
        Fleet { upstreams }
    });
    let mut runner = TestRunner::new(RunnerConfig { cases: CASES, max_shrink_iters: 32, ..RunnerConfig::default() });
    // Mutations refused, and in force.
    let tally = [std::cell::Cell::new(0), std::cell::Cell::new(0)];
    runner
        .run(&prop::collection::vec(mutation(), 12..=16), |sequence| {
            runtime.block_on(async {
                let mut router =
                    RouterProcess::start(&format!("[tenants.base.metrics]\nendpoints = [\"{}\"]\n", fleet.url(0)));
                let mut model = Model::new();
                model.insert(
                    "base".into(),
                    json!({ "metrics": { "endpoints": [fleet.url(0)] } }).as_object().unwrap().clone(),
                );
                agrees(&router, &fleet, &model, "the start").await?;
                for (i, mutation) in sequence.iter().enumerate() {
                    let in_force = mutate(&router, &fleet, &mut model, mutation).await?;
                    tally[usize::from(in_force)].set(tally[usize::from(in_force)].get() + 1);
                    agrees(&router, &fleet, &model, &format!("mutation {i}: {mutation:?}")).await?;
                }
                // What the file holds is what a restarted router serves.
                router.restart();
                agrees(&router, &fleet, &model, "a restart").await?;
                Ok(())
            })
        })
        .unwrap();
    let (refused, in_force) = (tally[0].get(), tally[1].get());
    eprintln!("{CASES} routers: {in_force} mutations in force, {refused} refused; each checked in the answer, the file and the routing");
    assert!(refused > 0 && in_force > 0);
}
