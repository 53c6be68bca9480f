//! The README's client table, proven with the real clients Debian packages
//! (`prometheus` 2.42; `vmagent`, `vmalert`, `vmctl` of `victoria-metrics`
//! 1.79) against the router and real VictoriaMetrics — one instance per
//! tenant, checked directly — and, where no client is packaged (Grafana,
//! Promtail, Filebeat), the request shape that client sends, against a
//! recording upstream or real VictoriaMetrics.

mod common;

use common::victoria::{force_flush, spawn, start_victoria_metrics, start_vmagent};
use common::*;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Duration;

fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Tenant `id` on `vm`, proved by basic auth `<id>-user:<id>-pass` or the
/// bearer token `<id>-token`.
fn tenant(id: &str, vm: SocketAddr) -> String {
    format!(
        "[tenants.{id}.metrics]\nendpoints = [\"http://{vm}\"]\n[tenants.{id}.auth]\n\
         basic_auth = [{{ username = \"{id}-user\", password_sha256 = \"{}\" }}]\n\
         bearer_tokens_sha256 = [\"{}\"]\n",
        sha256_hex(&format!("{id}-pass")),
        sha256_hex(&format!("{id}-token"))
    )
}

/// `GET url?query` answered as JSON.
async fn get_json(url: String, query: &[(&str, &str)]) -> serde_json::Value {
    let text = client().get(url).query(query).send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The series names `vm` itself holds for `selector`, flushed first.
async fn names(vm: SocketAddr, selector: &str) -> Vec<String> {
    force_flush(vm).await;
    let body = get_json(format!("http://{vm}/api/v1/label/__name__/values"), &[("match[]", selector)]).await;
    body["data"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// Waits until `vm` holds a series named `name`.
async fn wait_for(vm: SocketAddr, name: &str, within: Duration) {
    let what = format!("{name} to arrive in {vm}");
    Wait::new(what, within)
        .every(Duration::from_millis(250))
        .until_async(|| async { names(vm, &format!("{{__name__={name:?}}}")).await.contains(&name.to_string()) })
        .await;
}

async fn import(vm: SocketAddr, text: &str) {
    let r = client().post(format!("http://{vm}/api/v1/import/prometheus")).body(text.to_string()).send().await;
    assert_eq!(r.unwrap().status(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_remote_writes_with_basic_auth_and_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_vm_a, vm_a) = start_victoria_metrics(dir.path(), "vm-a").await;
    let (_vm_b, vm_b) = start_victoria_metrics(dir.path(), "vm-b").await;
    let router = RouterProcess::start(&format!("{}{}", tenant("alpha", vm_a), tenant("beta", vm_b)));
    let (unified, admin) = (router.base("unified"), router.admin);
    // Prometheus scrapes the router's own /metrics and writes it through the
    // router: alpha by basic_auth, beta by an Authorization bearer token.
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s}}\n\
             scrape_configs: [{{job_name: mirador, static_configs: [{{targets: ['{admin}']}}]}}]\n\
             remote_write:\n\
             - url: {unified}/api/v1/write\n  basic_auth: {{username: alpha-user, password: alpha-pass}}\n  \
               queue_config: {{batch_send_deadline: 1s}}\n  \
               write_relabel_configs: [{{target_label: via, replacement: basic}}]\n\
             - url: {unified}/api/v1/write\n  authorization: {{credentials: beta-token}}\n  \
               queue_config: {{batch_send_deadline: 1s}}\n  \
               write_relabel_configs: [{{target_label: via, replacement: bearer}}]\n"
        ),
    )
    .unwrap();
    let web = free_addr();
    let _prometheus = spawn(
        "prometheus",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("prometheus").display()),
            format!("--web.listen-address={web}"),
            "--log.level=error".into(),
        ],
    );
    wait_for(vm_a, "mirador_router_requests_total", Duration::from_secs(60)).await;
    wait_for(vm_b, "mirador_router_requests_total", Duration::from_secs(60)).await;
    // Each tenant's instance holds only its own remote-write's samples.
    assert_eq!(names(vm_a, "{via=\"bearer\"}").await, Vec::<String>::new());
    assert_eq!(names(vm_b, "{via=\"basic\"}").await, Vec::<String>::new());
    assert!(!names(vm_a, "{via=\"basic\"}").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn vmagent_writes_with_a_header_basic_auth_or_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_vm_a, vm_a) = start_victoria_metrics(dir.path(), "vm-a").await;
    let (_vm_b, vm_b) = start_victoria_metrics(dir.path(), "vm-b").await;
    let header_only = format!("[tenants.gamma.metrics]\nendpoints = [\"http://{vm_b}\"]\n");
    let router = RouterProcess::start(&format!("{}{}{header_only}", tenant("alpha", vm_a), tenant("beta", vm_b)));
    let url = format!("{}/api/v1/write", router.base("unified"));
    let mut agents = Vec::new();
    for (name, credential) in [
        ("basic", vec!["-remoteWrite.basicAuth.username=alpha-user", "-remoteWrite.basicAuth.password=alpha-pass"]),
        ("bearer", vec!["-remoteWrite.bearerToken=beta-token"]),
        ("header", vec!["-remoteWrite.headers=X-Tenant-ID:gamma"]),
    ] {
        let (agent, addr) = start_vmagent(&dir.path().join(name), &url, &credential).await;
        agents.push(agent);
        let r = client()
            .post(format!("http://{addr}/api/v1/import/prometheus"))
            .body(format!("mirador_vmagent_{name} 1\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    wait_for(vm_a, "mirador_vmagent_basic", Duration::from_secs(30)).await;
    wait_for(vm_b, "mirador_vmagent_bearer", Duration::from_secs(30)).await;
    wait_for(vm_b, "mirador_vmagent_header", Duration::from_secs(30)).await;
    assert_eq!(names(vm_a, "{__name__=~\"mirador_vmagent_.*\"}").await, ["mirador_vmagent_basic"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn vmalert_evaluates_recording_rules_with_basic_auth_and_writes_back_with_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_vm, vm) = start_victoria_metrics(dir.path(), "vm").await;
    let router = RouterProcess::start(&tenant("alpha", vm));
    import(vm, "mirador_seed{kind=\"a\"} 3\nmirador_seed{kind=\"b\"} 4\n").await;
    wait_for(vm, "mirador_seed", Duration::from_secs(30)).await;
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: mirador\n  interval: 1s\n  rules:\n  - record: mirador:seed:sum\n    expr: sum(mirador_seed)\n",
    )
    .unwrap();
    let base = router.base("unified");
    let addr = free_addr();
    // vmalert 1.79 has no -datasource.headers: the tenant's basic-auth credential instead.
    let _vmalert = spawn(
        "vmalert",
        &[
            format!("-rule={}", rules.display()),
            format!("-httpListenAddr={addr}"),
            format!("-datasource.url={base}"),
            "-datasource.basicAuth.username=alpha-user".into(),
            "-datasource.basicAuth.password=alpha-pass".into(),
            format!("-remoteWrite.url={base}"),
            // Writes back proved by the tenant's bearer token: both credential flags work.
            "-remoteWrite.bearerToken=alpha-token".into(),
            "-remoteWrite.flushInterval=100ms".into(),
            "-evaluationInterval=1s".into(),
            "-loggerLevel=ERROR".into(),
        ],
    );
    wait_for(vm, "mirador:seed:sum", Duration::from_secs(60)).await;
    // The recorded samples as stored.
    let text = client()
        .get(format!("http://{vm}/api/v1/export"))
        .query(&[("match[]", "mirador:seed:sum")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(exported["values"].as_array().unwrap().iter().all(|v| v == 7), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn vmctl_migrates_a_tenants_data_to_another_tenant_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let (_vm_a, vm_a) = start_victoria_metrics(dir.path(), "vm-a").await;
    let (_vm_b, vm_b) = start_victoria_metrics(dir.path(), "vm-b").await;
    let router = RouterProcess::start(&format!("{}{}", tenant("alpha", vm_a), tenant("beta", vm_b)));
    // Samples ten minutes old: stamped now, 1.79's native export (asked directly, too) came back empty.
    let at = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 600) * 1000;
    import(vm_a, &format!("mirador_migrated{{n=\"1\"}} 1 {at}\nmirador_migrated{{n=\"2\"}} 2 {at}\n")).await;
    wait_for(vm_a, "mirador_migrated", Duration::from_secs(30)).await;
    let base = router.base("unified");
    let vmctl = [
        "vmctl".to_string(),
        "vm-native".into(),
        format!("--vm-native-src-addr={base}"),
        "--vm-native-src-user=alpha-user".into(),
        "--vm-native-src-password=alpha-pass".into(),
        format!("--vm-native-dst-addr={base}"),
        "--vm-native-dst-user=beta-user".into(),
        "--vm-native-dst-password=beta-pass".into(),
        "'--vm-native-filter-match={__name__=\"mirador_migrated\"}'".into(),
        "--vm-native-filter-time-start=2000-01-01T00:00:00Z".into(),
    ]
    .join(" ");
    // vmctl 1.79 draws progress bars and stops without a terminal, and has
    // no -s: script(1) gives it one, and "y" answers its question.
    let output = std::process::Command::new("script")
        .args(["-qec", &format!("echo y | {vmctl}"), "/dev/null"])
        .output()
        .expect("vmctl runs");
    assert!(
        output.status.success(),
        "vmctl: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    wait_for(vm_b, "mirador_migrated", Duration::from_secs(30)).await;
    let series = get_json(format!("http://{vm_b}/api/v1/series"), &[("match[]", "mirador_migrated")]).await;
    let count = series["data"].as_array().unwrap().len();
    assert_eq!(count, 2);
}

/// Grafana's Prometheus data source, as it browses and queries (Grafana
/// `pkg/promlib`: instant and range queries by POST form when the data
/// source's HTTP method is POST, the default; label and series browsing by
/// GET with `start`/`end`): through the router with the data source's basic
/// auth, each answer equals VictoriaMetrics' own.
#[tokio::test(flavor = "multi_thread")]
async fn grafana_prometheus_data_source_requests_are_answered_as_victoria_metrics_answers_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_vm, vm) = start_victoria_metrics(dir.path(), "vm").await;
    let router = RouterProcess::start(&tenant("alpha", vm));
    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 300;
    import(vm, &format!("mirador_grafana{{job=\"a\"}} 5 {}\n", at * 1000)).await;
    wait_for(vm, "mirador_grafana", Duration::from_secs(30)).await;
    let (start, end) = ((at - 600).to_string(), (at + 60).to_string());
    let form =
        |pairs: &[(&str, &str)]| url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let range = form(&[("query", "mirador_grafana"), ("start", &start), ("end", &end), ("step", "60")]);
    let instant = form(&[("query", "mirador_grafana"), ("time", &end)]);
    let browse = form(&[("start", &start), ("end", &end)]);
    let series = form(&[("match[]", "mirador_grafana"), ("start", &start), ("end", &end)]);
    for (method, path, body) in [
        ("POST", "/api/v1/query_range", range.clone()),
        ("POST", "/api/v1/query", instant.clone()),
        ("GET", "/api/v1/labels", browse.clone()),
        ("GET", "/api/v1/label/__name__/values", browse.clone()),
        ("GET", "/api/v1/label/job/values", browse.clone()),
        ("GET", "/api/v1/series", series.clone()),
        ("GET", "/api/v1/status/buildinfo", String::new()),
        ("POST", "/prometheus/api/v1/query_range", range.clone()),
    ] {
        let send = |base: String, auth: bool| {
            let request = match method {
                "POST" => client()
                    .post(format!("{base}{path}"))
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.clone()),
                _ => client().get(format!("{base}{path}?{body}")),
            };
            let request = if auth { request.basic_auth("alpha-user", Some("alpha-pass")) } else { request };
            async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            }
        };
        let direct = send(format!("http://{vm}"), false).await;
        let proxied = send(router.base("unified"), true).await;
        assert_eq!(direct.0, 200, "{method} {path}: {}", direct.1);
        assert_eq!(proxied, direct, "{method} {path}");
        // Each answer carries the seeded series (or its label), not an empty success.
        // (1.79 answers buildinfo with empty data: Grafana only needs a success.)
        let seeded =
            path.ends_with("buildinfo") || ["mirador_grafana", "\"job\"", "\"a\""].iter().any(|s| direct.1.contains(s));
        assert!(seeded, "{method} {path}: {}", direct.1);
    }
}

/// Log shippers and the OpenTelemetry collector, by the request each sends
/// (Promtail `clients/pkg/promtail/client`: snappy-compressed protobuf,
/// `Content-Type: application/x-protobuf`; Filebeat `libbeat/outputs/elasticsearch`:
/// a `GET /` version probe, then `_bulk` NDJSON; the collector's `otlphttp`
/// exporter: protobuf POST to its per-signal endpoint; Grafana's
/// VictoriaLogs data source: LogsQL by POST form): each reaches the
/// tenant's deployment of that signal with its path, headers and body as
/// sent.
#[tokio::test(flavor = "multi_thread")]
async fn log_shippers_and_the_otel_collector_reach_their_signal_with_the_body_as_sent() {
    let fleet = Fleet::start(&["alpha"]).await;
    let router = RouterProcess::start(&fleet.toml());
    let base = router.base("unified");
    let body: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    for (signal, method, path, content_type) in [
        ("logs", "POST", "/insert/loki/api/v1/push", "application/x-protobuf"),
        ("logs", "GET", "/insert/elasticsearch/", ""),
        ("logs", "POST", "/insert/elasticsearch/_bulk", "application/x-ndjson"),
        ("logs", "POST", "/insert/opentelemetry/v1/logs", "application/x-protobuf"),
        ("logs", "POST", "/select/logsql/query", "application/x-www-form-urlencoded"),
        ("metrics", "POST", "/opentelemetry/v1/metrics", "application/x-protobuf"),
        ("traces", "POST", "/insert/opentelemetry/v1/traces", "application/x-protobuf"),
    ] {
        let request = match method {
            "POST" => client().post(format!("{base}{path}")).header("Content-Type", content_type).body(body.clone()),
            _ => client().get(format!("{base}{path}")),
        };
        let response = request.header("X-Tenant-ID", "alpha").send().await.unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        let seen = fleet.get("alpha", signal).seen().pop().expect("the request arrived");
        assert_eq!((seen.method.as_str(), seen.path_and_query.as_str()), (method, path));
        if method == "POST" {
            assert_eq!(seen.headers["content-type"], content_type, "{path}");
            assert_eq!(seen.body_len, body.len() as u64, "{path}");
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hasher::write(&mut hasher, &body);
            assert_eq!(seen.body_hash, std::hash::Hasher::finish(&hasher), "{path}: the body as sent");
        }
    }
}

/// The OpenTelemetry Python SDK (from PyPI, in the `.venv` that
/// `scripts/test` makes) with its OTLP/HTTP exporters and the tenant header:
/// its span, metric point and log record each reach the tenant's deployment
/// of that signal, as protobuf.
#[tokio::test(flavor = "multi_thread")]
async fn the_opentelemetry_sdk_exports_traces_metrics_and_logs_through_the_router() {
    let python = common::venv_python();
    let fleet = Fleet::start(&["alpha", "beta"]).await;
    let router = RouterProcess::start(&fleet.toml());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/otel_sdk.py");
    let base = router.base("unified");
    let run = move || std::process::Command::new(&python).args([script, &base, "alpha"]).output();
    let output = tokio::task::spawn_blocking(run).await.unwrap().expect("python runs");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for (signal, path) in [
        ("traces", "/insert/opentelemetry/v1/traces"),
        ("metrics", "/opentelemetry/v1/metrics"),
        ("logs", "/insert/opentelemetry/v1/logs"),
    ] {
        // (The metric reader exports again at exit: one request or more.)
        let seen = fleet.get("alpha", signal).seen();
        assert!(!seen.is_empty(), "nothing of {signal} arrived");
        for seen in &seen {
            assert_eq!((seen.method.as_str(), seen.path_and_query.as_str()), ("POST", path));
            assert_eq!(seen.headers["content-type"], "application/x-protobuf");
            assert!(seen.body_len > 20 && seen.body_complete, "{signal}: {seen:?}");
        }
        assert!(fleet.get("beta", signal).seen().is_empty());
    }
}
