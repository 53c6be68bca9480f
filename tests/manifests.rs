//! `deploy/kubernetes/` against the router's own facts: every manifest
//! parses and passes `kubernetes-validate --strict`; the Deployment's ports,
//! probes, `--config` path and mounts, drain timings, security context and
//! resources agree with the config in its ConfigMap, which the router's own
//! validation accepts (for the fleet overlay, `--check` against a real etcd).
//! Drifted copies are caught. No cluster is at hand: nothing is applied.

mod common;

use common::etcd::Etcd;
use common::facts::reachable_ports;
use mirador_router::config::{Config, Inputs, QuotaBackend, Store};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");
const NAME: &str = "mirador-router";

/// Every document of a YAML file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The files a kustomization reads (resources, recursively, and patches).
fn kustomized_files(dir: &Path) -> Vec<PathBuf> {
    let [kustomization] = documents(&dir.join("kustomization.yaml")).try_into().expect("one kustomization");
    let mut files = Vec::new();
    for key in ["resources", "patches"] {
        for entry in kustomization[key].as_array().into_iter().flatten() {
            let path = dir.join(entry.as_str().or(entry["path"].as_str()).expect("a path"));
            let path =
                path.canonicalize().unwrap_or_else(|e| panic!("{} names {}: {e}", dir.display(), path.display()));
            if path.is_dir() {
                files.extend(kustomized_files(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// The resources `kubectl apply -k dir` creates. Patches are modelled for
/// ConfigMaps only (their data merged key by key, as kustomize's strategic
/// merge does); any other patch fails here rather than being misread.
fn kustomize(dir: &Path) -> Vec<Value> {
    let [kustomization] = documents(&dir.join("kustomization.yaml")).try_into().expect("one kustomization");
    let mut resources = Vec::new();
    for entry in kustomization["resources"].as_array().into_iter().flatten() {
        let path = dir.join(entry.as_str().expect("a resource path"));
        resources.extend(if path.is_dir() { kustomize(&path) } else { documents(&path) });
    }
    for entry in kustomization["patches"].as_array().into_iter().flatten() {
        for patch in documents(&dir.join(entry["path"].as_str().expect("a patch path"))) {
            assert_eq!(patch["kind"], "ConfigMap", "only ConfigMap patches are modelled");
            let target = resources
                .iter_mut()
                .find(|r| r["kind"] == "ConfigMap" && r["metadata"]["name"] == patch["metadata"]["name"])
                .unwrap_or_else(|| panic!("the patch {} targets no ConfigMap", patch["metadata"]["name"]));
            for (key, value) in patch["data"].as_object().expect("data") {
                target["data"][key] = value.clone();
            }
        }
    }
    resources
}

fn find<'a>(resources: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = resources.iter().filter(|r| r["kind"] == kind && r["metadata"]["name"] == NAME).collect();
    assert_eq!(found.len(), 1, "one {kind} {NAME}");
    found[0]
}

/// What the pod gives the router's config at start: the admin token in the
/// Secret's mount, and an answer of cluster DNS for every host name of the
/// tenants' endpoints (a Service's address; 10.96.0.0/12 is a usual Service CIDR).
fn pod_inputs(text: &str) -> Inputs {
    let doc: toml::Table = text.parse().expect("TOML");
    let mut inputs = Inputs::default();
    if let Some(file) = admin_token_file(text) {
        inputs = inputs.with_file(&file, "a-long-random-admin-token");
    }
    let mut urls = Vec::new();
    fn collect(value: &toml::Value, urls: &mut Vec<String>) {
        match value {
            toml::Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => urls.push(s.clone()),
            toml::Value::Array(items) => items.iter().for_each(|v| collect(v, urls)),
            toml::Value::Table(table) => table.values().for_each(|v| collect(v, urls)),
            _ => {}
        }
    }
    if let Some(tenants) = doc.get("tenants") {
        collect(tenants, &mut urls);
    }
    for (i, url) in urls.iter().enumerate() {
        let url = url::Url::parse(url).expect("an endpoint URL");
        if let (Some(url::Host::Domain(host)), Some(port)) = (url.host(), url.port_or_known_default()) {
            let addr = std::net::SocketAddr::from(([10, 96, 0, 10 + i as u8], port));
            inputs = inputs.with_address(host, port, addr);
        }
    }
    inputs
}

/// Everything in `resources` that disagrees with the router, one sentence each.
fn problems(resources: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let deployment = find(resources, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let containers = pod["containers"].as_array().expect("containers");
    let Some(container) = containers.iter().find(|c| c["name"] == NAME) else {
        return vec![format!("no container {NAME}")];
    };
    let config = &match mounted_config(resources, pod, container) {
        Ok(config) => config,
        Err(why) => return vec![why],
    };

    // Ports and probes.
    let port_of = |port: &Value| -> Option<u16> {
        match port {
            Value::String(name) => container["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_u64()),
            other => other.as_u64(),
        }
        .map(|p| p as u16)
    };
    let ports: BTreeSet<u16> = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64().map(|p| p as u16))
        .collect();
    if ports != reachable_ports(config) {
        problems.push(format!("container ports {ports:?}, but the config listens on {:?}", reachable_ports(config)));
    }
    let admin = config.admin.listen;
    if admin.ip().is_loopback() {
        problems.push(format!("admin listens on {admin}: the kubelet's probes cannot reach loopback"));
    }
    for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health")] {
        let get = &container[probe]["httpGet"];
        if get["path"] != path || port_of(&get["port"]) != Some(admin.port()) {
            problems
                .push(format!("{probe} asks {} on {}, the router serves {path} on {admin}", get["path"], get["port"]));
        }
    }

    // Drain: the preStop sleep is the grace period, and the pod outlives both.
    let grace = config.server.grace_period.as_secs_f64().ceil() as u64;
    let pre_stop = &container["lifecycle"]["preStop"];
    let sleep = match pre_stop["exec"]["command"].as_array().map(Vec::as_slice) {
        Some([sleep, seconds]) if sleep == "sleep" => seconds.as_str().and_then(|s| s.parse::<u64>().ok()),
        _ => pre_stop["sleep"]["seconds"].as_u64(),
    };
    if sleep != Some(grace) {
        problems.push(format!("preStop sleeps {sleep:?} s, but [server] grace_period is {grace} s"));
    }
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    let needed = sleep.unwrap_or(0) + grace + mirador_router::server::RUNTIME_SHUTDOWN_SECONDS;
    if termination <= needed {
        problems.push(format!("terminationGracePeriodSeconds {termination}: preStop, grace_period and the runtimes' wind-down take {needed} s"));
    }

    // Locked down, sized, and the files it writes on a writable volume.
    let security = &container["securityContext"];
    let non_root = security["runAsNonRoot"] == true || pod["securityContext"]["runAsNonRoot"] == true;
    let drops_all = security["capabilities"]["drop"].as_array().is_some_and(|d| d.iter().any(|c| c == "ALL"));
    if !non_root
        || security["readOnlyRootFilesystem"] != true
        || security["allowPrivilegeEscalation"] != false
        || !drops_all
    {
        problems.push(format!("securityContext is not locked down (non-root {non_root}): {security}"));
    }
    for (kind, resource) in [("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory")] {
        if container["resources"][kind][resource].is_null() {
            problems.push(format!("resources.{kind}.{resource} is not set"));
        }
    }
    for file in [&config.server.pid_file, &config.server.upgrade_sock] {
        let dir = file.parent().and_then(Path::to_str).unwrap_or_default();
        if volume_at(pod, container, dir).is_none_or(|v| v["emptyDir"].is_null()) {
            problems.push(format!("{}: its directory is no emptyDir, and the root is read-only", file.display()));
        }
    }
    let image = container["image"].as_str().unwrap_or_default();
    if !image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))) {
        problems.push(format!("image {image} is not this version, {}", env!("CARGO_PKG_VERSION")));
    }

    // The Service, the budget and the autoscaler point at these pods.
    let selects = |selector: &Value| {
        selector.as_object().is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
    };
    let service = find(resources, "Service");
    if !selects(&service["spec"]["selector"]) {
        problems.push("the Service selects other pods".into());
    }
    for port in service["spec"]["ports"].as_array().into_iter().flatten() {
        if port_of(&port["targetPort"]).is_none_or(|p| !ports.contains(&p)) {
            problems.push(format!("Service port {} targets no container port", port["name"]));
        }
    }
    let budget = find(resources, "PodDisruptionBudget");
    if !selects(&budget["spec"]["selector"]["matchLabels"]) {
        problems.push("the PodDisruptionBudget selects other pods".into());
    }
    let autoscaler = find(resources, "HorizontalPodAutoscaler");
    let target = &autoscaler["spec"]["scaleTargetRef"];
    if target["kind"] != "Deployment" || target["name"] != deployment["metadata"]["name"] {
        problems.push(format!("the HorizontalPodAutoscaler scales {target}"));
    }
    let min_available = budget["spec"]["minAvailable"].as_u64().unwrap_or(0);
    if autoscaler["spec"]["minReplicas"].as_u64().unwrap_or(1) <= min_available {
        problems.push("minReplicas does not exceed the budget's minAvailable: no node could be drained".into());
    }
    problems
}

/// The volume mounted in `container` at `dir`.
fn volume_at<'a>(pod: &'a Value, container: &Value, dir: &str) -> Option<&'a Value> {
    let mount = container["volumeMounts"].as_array()?.iter().find(|m| m["mountPath"] == dir)?;
    pod["volumes"].as_array()?.iter().find(|v| v["name"] == mount["name"])
}

/// The config the container starts with: `--config` is a key of the
/// ConfigMap mounted as a directory, the admin token under a Secret's
/// mount; the router's own validation accepts it with the pod's inputs.
fn mounted_config(resources: &[Value], pod: &Value, container: &Value) -> Result<Config, String> {
    let command: Vec<&str> = ["command", "args"]
        .iter()
        .flat_map(|k| container[k].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let path =
        command.windows(2).find(|w| w[0] == "--config").map(|w| w[1]).ok_or("the container passes no --config")?;
    let (dir, key) = path.rsplit_once('/').ok_or("--config is not an absolute path")?;
    let volume = volume_at(pod, container, dir).ok_or(format!("--config {path}: nothing is mounted at {dir}"))?;
    let configmap = find(resources, "ConfigMap");
    if volume["configMap"]["name"] != configmap["metadata"]["name"] || !volume["configMap"]["items"].is_null() {
        return Err(format!("--config {path}: {dir} is not the ConfigMap {NAME} as a directory"));
    }
    let mount = container["volumeMounts"].as_array().into_iter().flatten().find(|m| m["mountPath"] == dir);
    if mount.is_some_and(|m| !m["subPath"].is_null()) {
        return Err(format!("{dir} is a subPath mount: ConfigMap edits would never reach the file"));
    }
    let text = configmap["data"][key].as_str().ok_or(format!("--config {path}: the ConfigMap has no key {key}"))?;
    let config = mirador_router::config::compile(path, text, &pod_inputs(text))
        .map_err(|errors| format!("the router refuses the ConfigMap's {key}: {errors:?}"))?;
    if let Some(file) = admin_token_file(text) {
        let (dir, _) = file.rsplit_once('/').unwrap_or_default();
        if volume_at(pod, container, dir).is_none_or(|v| v["secret"].is_null()) {
            return Err(format!("admin.token_file {file}: no Secret is mounted at {dir}"));
        }
    }
    Ok(config)
}

fn admin_token_file(text: &str) -> Option<String> {
    let doc: toml::Table = text.parse().ok()?;
    doc.get("admin")?.get("token_file")?.as_str().map(str::to_string)
}

/// The base: tenants in the file, and everything agrees with the router.
#[test]
fn the_base_manifests_agree_with_the_router() {
    let resources = kustomize(&Path::new(ROOT).join("base"));
    let found = problems(&resources);
    assert!(found.is_empty(), "deploy/kubernetes/base: {found:#?}");
    let configmap = find(&resources, "ConfigMap");
    let text = configmap["data"]["mirador-router.toml"].as_str().unwrap();
    let config = mirador_router::config::compile("base", text, &pod_inputs(text)).unwrap();
    assert_eq!(config.store, Store::File);
    assert!(!config.tenants.is_empty(), "the base's tenants are in its file");
    assert!(config.admin.watch_config, "a ConfigMap edit reloads every pod");
}

/// The fleet overlay: the ConfigMap's store is the overlay's etcd Service
/// and holds no tenants, and the router's `--check` passes with that store
/// section against a real etcd (the overlay's endpoint swapped for its address).
#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_overlay_agrees_with_the_router_and_checks_against_a_real_etcd() {
    let resources = kustomize(&Path::new(ROOT).join("overlays/fleet"));
    let found = problems(&resources);
    assert!(found.is_empty(), "deploy/kubernetes/overlays/fleet: {found:#?}");
    let text = find(&resources, "ConfigMap")["data"]["mirador-router.toml"].as_str().unwrap().to_string();
    let config = mirador_router::config::compile("fleet", &text, &pod_inputs(&text)).unwrap();
    assert!(config.tenants.is_empty(), "with etcd, the file holds no tenants");
    let Store::Etcd(store) = &config.store else { panic!("the fleet's store is etcd: {:?}", config.store) };
    let [endpoint] = store.endpoints.as_slice() else { panic!("one etcd endpoint: {:?}", store.endpoints) };
    let url = url::Url::parse(endpoint).unwrap();
    let service = resources
        .iter()
        .find(|r| r["kind"] == "Service" && r["metadata"]["name"] == url.host_str().unwrap())
        .unwrap_or_else(|| panic!("{endpoint} names no Service of the overlay"));
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert!(
        ports.iter().any(|p| p["port"].as_u64() == url.port().map(u64::from)),
        "{endpoint}: not the Service's port"
    );

    // Global quotas name the overlay's Redis Service, and fall back to the
    // share of the Deployment's replicas.
    let QuotaBackend::Redis(quotas) = &config.quotas else {
        panic!("the fleet's quotas are Redis: {:?}", config.quotas)
    };
    let redis = url::Url::parse(&quotas.url.0).unwrap();
    let service = resources
        .iter()
        .find(|r| r["kind"] == "Service" && r["metadata"]["name"] == redis.host_str().unwrap())
        .unwrap_or_else(|| panic!("the Redis URL names no Service of the overlay"));
    assert!(
        service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["port"].as_u64() == redis.port().map(u64::from)),
        "the Redis URL's port is not the Service's"
    );
    let router_replicas = resources
        .iter()
        .find(|r| r["kind"] == "Deployment" && r["metadata"]["name"] == "mirador-router")
        .map(|d| d["spec"]["replicas"].as_u64())
        .unwrap();
    assert_eq!(router_replicas, Some(u64::from(quotas.expected_replicas)), "expected_replicas is the Deployment's");

    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let token = dir.path().join("token");
    std::fs::write(&token, "a-long-random-admin-token").unwrap();
    let local = text
        .replace(endpoint.trim_end_matches('/'), &etcd.url())
        .replace(&admin_token_file(&text).unwrap(), token.to_str().unwrap());
    let path = dir.path().join("mirador-router.toml");
    std::fs::write(&path, local).unwrap();
    let check = ["--config", path.to_str().unwrap(), "--check"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirador-router")).args(check).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "--check: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(": ok (0 tenants)"), "--check: {stdout}");
}

/// Each way the manifests can drift from the router is caught.
#[test]
fn drifted_manifests_are_caught() {
    let base = kustomize(&Path::new(ROOT).join("base"));
    type Drift = fn(&mut Value, &mut Value);
    let drifts: Vec<(&str, Drift, &str)> = vec![
        ("a container port", |d, _| router(d)["ports"][0]["containerPort"] = json!(8081), "container ports"),
        (
            "the readiness path",
            |d, _| router(d)["readinessProbe"]["httpGet"]["path"] = json!("/healthz"),
            "readinessProbe",
        ),
        ("the liveness port", |d, _| router(d)["livenessProbe"]["httpGet"]["port"] = json!("http"), "livenessProbe"),
        (
            "the preStop sleep",
            |d, _| router(d)["lifecycle"]["preStop"]["exec"]["command"] = json!(["sleep", "1"]),
            "preStop",
        ),
        (
            "the termination grace",
            |d, _| d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(10),
            "terminationGracePeriodSeconds",
        ),
        (
            "the --config path",
            |d, _| router(d)["command"][2] = json!("/etc/mirador-router/mirador-router.toml"),
            "--config",
        ),
        ("a subPath mount", |d, _| router(d)["volumeMounts"][0]["subPath"] = json!("mirador-router.toml"), "subPath"),
        (
            "a writable root",
            |d, _| router(d)["securityContext"]["readOnlyRootFilesystem"] = json!(false),
            "securityContext",
        ),
        ("no memory limit", |d, _| router(d)["resources"]["limits"] = json!({"cpu": "2"}), "limits.memory"),
        (
            "the admin on loopback",
            |_, c| edit_toml(c, "listen = \"0.0.0.0:9900\"", "listen = \"127.0.0.1:9900\""),
            "loopback",
        ),
        (
            "the listener's port",
            |_, c| edit_toml(c, "listen = [\"0.0.0.0:8080\"]", "listen = [\"0.0.0.0:8081\"]"),
            "container ports",
        ),
        ("a longer grace period", |_, c| edit_toml(c, "grace_period = \"5s\"", "grace_period = \"15s\""), "preStop"),
        ("a key the router refuses", |_, c| edit_toml(c, "threads = 2", "threads = 2\nthreds = 2"), "refuses"),
    ];
    for (what, drift, expected) in drifts {
        let mut resources = base.clone();
        let d = resources.iter().position(|r| r["kind"] == "Deployment").unwrap();
        let c = resources.iter().position(|r| r["kind"] == "ConfigMap").unwrap();
        let (mut deployment, mut configmap) = (resources[d].take(), resources[c].take());
        drift(&mut deployment, &mut configmap);
        (resources[d], resources[c]) = (deployment, configmap);
        let found = problems(&resources);
        assert!(found.iter().any(|p| p.contains(expected)), "{what}: expected {expected:?} in {found:#?}");
    }
}

/// The router's container of a Deployment.
fn router(deployment: &mut Value) -> &mut Value {
    &mut deployment["spec"]["template"]["spec"]["containers"][0]
}

fn edit_toml(configmap: &mut Value, from: &str, to: &str) {
    let text = configmap["data"]["mirador-router.toml"].as_str().unwrap();
    assert!(text.contains(from), "the ConfigMap has {from:?}");
    configmap["data"]["mirador-router.toml"] = json!(text.replacen(from, to, 1));
}

/// The venv `scripts/test` makes (`$MIRADOR_VENV`, else `.venv`) has `kubernetes-validate`.
fn kubernetes_validate() -> PathBuf {
    let python = common::venv_python();
    let tool = python.with_file_name("kubernetes-validate");
    assert!(tool.exists(), "{} is missing: scripts/test installs kubernetes-validate into the venv", tool.display());
    tool
}

/// Every manifest a kustomization names passes `kubernetes-validate --strict`
/// (the API schemas, unknown fields refused), no YAML file under
/// deploy/kubernetes is left out of a kustomization, and a misspelt field fails.
#[test]
fn every_manifest_passes_kubernetes_validate_strict() {
    let mut named: BTreeSet<PathBuf> = BTreeSet::new();
    for dir in ["base", "overlays/fleet"] {
        named.extend(kustomized_files(&Path::new(ROOT).join(dir)));
    }
    let mut on_disk = BTreeSet::new();
    let mut stack = vec![PathBuf::from(ROOT)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "kustomization.yaml") {
                on_disk.insert(path.canonicalize().unwrap());
            }
        }
    }
    assert_eq!(on_disk, named, "every file under deploy/kubernetes is a resource or patch of a kustomization");
    let tool = kubernetes_validate();
    let validate = |files: &[PathBuf]| std::process::Command::new(&tool).arg("--strict").args(files).output().unwrap();
    let files: Vec<PathBuf> = named.into_iter().collect();
    let out = validate(&files);
    let report = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubernetes-validate --strict: {report}");
    let passed = report.lines().filter(|l| l.contains(" passed for resource ")).count();
    let resources: usize = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().filter(|l| l.starts_with("kind: ")).count())
        .sum();
    assert_eq!(passed, resources, "every resource validated: {report}");

    let dir = tempfile::tempdir().unwrap();
    let drifted = dir.path().join("deployment.yaml");
    let text = std::fs::read_to_string(Path::new(ROOT).join("base/deployment.yaml")).unwrap();
    std::fs::write(&drifted, text.replacen("readinessProbe:", "readinesProbe:", 1)).unwrap();
    let out = validate(&[drifted]);
    assert!(!out.status.success(), "a misspelt field fails: {}", String::from_utf8_lossy(&out.stdout));
}
