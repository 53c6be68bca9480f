//! OTLP over gRPC (`[server] otlp_grpc_listen`): the real OpenTelemetry
//! Python SDK exporting every signal for two tenants, each export arriving
//! at its tenant's deployment as the OTLP/HTTP protobuf POST of its signal;
//! refusals as gRPC codes; failover when an endpoint dies mid-stream;
//! malformed calls; `--check` on the key.

mod common;

use common::{RouterProcess, Upstream, Wait};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::Code;

const METRICS_PATH: &str = "/opentelemetry/v1/metrics";
const LOGS_PATH: &str = "/insert/opentelemetry/v1/logs";
const TRACES_PATH: &str = "/insert/opentelemetry/v1/traces";

/// Runs the SDK script for `tenant` against `addr`, its exporters
/// compressing with `compression` when given (`gzip`); its output when it failed.
async fn sdk_export(addr: SocketAddr, tenant: &str, signals: &str, compression: Option<&str>) -> Result<(), String> {
    let (python, tenant, signals) = (common::venv_python(), tenant.to_string(), signals.to_string());
    let compression = compression.map(str::to_string);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/otel_sdk_grpc.py");
    let run = move || {
        let mut command = std::process::Command::new(&python);
        command.args([script, &addr.to_string(), &tenant, &signals]).env_remove("OTEL_EXPORTER_OTLP_COMPRESSION");
        if let Some(compression) = &compression {
            command.env("OTEL_EXPORTER_OTLP_COMPRESSION", compression);
        }
        command.output()
    };
    let output = tokio::task::spawn_blocking(run).await.unwrap().expect("python runs");
    match output.status.success() {
        true => Ok(()),
        false => {
            Err(format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
        }
    }
}

fn string(value: &Option<AnyValue>) -> Option<&str> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(text) => Some(text),
        _ => None,
    }
}

/// The `mirador.tenant` and `service.name` attributes of a resource.
fn resource_tenant(resource: &Option<Resource>) -> (String, String) {
    let attributes = resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
    let get = |key: &str| {
        attributes.iter().find(|kv| kv.key == key).and_then(|kv| string(&kv.value)).unwrap_or("").to_string()
    };
    (get("mirador.tenant"), get("service.name"))
}

/// What one upstream received at `path`, every body decoded: the resource
/// (tenant, service) pairs and the names (metric names, span names, log bodies).
fn received(upstream: &Upstream, path: &str) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let (mut resources, mut names) = (BTreeSet::new(), BTreeSet::new());
    for seen in upstream.seen() {
        assert_eq!((seen.method.as_str(), seen.path_and_query.as_str()), ("POST", path), "{}", upstream.name);
        assert_eq!(seen.headers["content-type"], "application/x-protobuf");
        assert!(seen.headers.get("authorization").is_none(), "the client's metadata stays at the router");
        let body = seen.body.expect("bodies kept");
        let body: bytes::Bytes = match seen.headers.get("content-encoding") {
            Some(encoding) if encoding == "gzip" => {
                let mut decoded = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut decoded).unwrap();
                decoded.into()
            }
            Some(other) => panic!("content-encoding {other:?}"),
            None => body,
        };
        match path {
            METRICS_PATH => {
                for rm in ExportMetricsServiceRequest::decode(body).expect("a metrics export").resource_metrics {
                    resources.insert(resource_tenant(&rm.resource));
                    names.extend(rm.scope_metrics.iter().flat_map(|s| s.metrics.iter().map(|m| m.name.clone())));
                }
            }
            LOGS_PATH => {
                for rl in ExportLogsServiceRequest::decode(body).expect("a logs export").resource_logs {
                    resources.insert(resource_tenant(&rl.resource));
                    let bodies = rl.scope_logs.iter().flat_map(|s| s.log_records.iter());
                    names.extend(bodies.filter_map(|r| string(&r.body)).map(str::to_string));
                }
            }
            _ => {
                for rs in ExportTraceServiceRequest::decode(body).expect("a trace export").resource_spans {
                    resources.insert(resource_tenant(&rs.resource));
                    names.extend(rs.scope_spans.iter().flat_map(|s| s.spans.iter().map(|span| span.name.clone())));
                }
            }
        }
    }
    (resources, names)
}

/// The real OpenTelemetry Python SDK with its OTLP/gRPC exporters, for two
/// tenants (beta's compressing with gzip): each tenant's deployments of each
/// signal receive that signal's OTLP/HTTP protobuf POST, decoding to exactly
/// what the tenant sent.
#[tokio::test(flavor = "multi_thread")]
async fn the_opentelemetry_sdk_exports_every_signal_over_grpc_each_tenant_to_its_own_deployments() {
    let fleet = common::Fleet::start(&["alpha", "beta"]).await;
    for upstream in fleet.upstreams.values() {
        upstream.keep_bodies();
    }
    let router = RouterProcess::builder().otlp_grpc().tenants(fleet.toml()).start();
    let addr = router.otlp_grpc.unwrap();
    let (alpha, beta) = tokio::join!(
        sdk_export(addr, "alpha", "traces,metrics,logs", None),
        sdk_export(addr, "beta", "traces,metrics,logs", Some("gzip"))
    );
    alpha.unwrap();
    beta.unwrap();
    for tenant in ["alpha", "beta"] {
        let resource = BTreeSet::from([(tenant.to_string(), format!("svc-{tenant}"))]);
        for (signal, path, name) in [
            ("metrics", METRICS_PATH, format!("metric_{tenant}_total")),
            ("logs", LOGS_PATH, format!("log-{tenant}")),
            ("traces", TRACES_PATH, format!("span-{tenant}")),
        ] {
            let upstream = fleet.get(tenant, signal);
            assert!(!upstream.seen().is_empty(), "nothing of {tenant}'s {signal} arrived");
            // beta's SDK compresses: its exports stay gzip.
            let gzip = upstream.seen().iter().all(|seen| seen.headers.get("content-encoding").is_some());
            assert_eq!(gzip, tenant == "beta", "{tenant} {signal}");
            assert_eq!(received(upstream, path), (resource.clone(), BTreeSet::from([name])), "{tenant} {signal}");
        }
    }
}

fn gauge(name: &str) -> ExportMetricsServiceRequest {
    let point = NumberDataPoint {
        value: Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(1)),
        ..Default::default()
    };
    let metric = Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge { data_points: vec![point] })),
        ..Default::default()
    };
    let resource = Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("rust".into())) }),
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
            ..Default::default()
        }],
    }
}

async fn metrics_client(addr: SocketAddr) -> MetricsServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    MetricsServiceClient::new(channel).max_encoding_message_size(usize::MAX)
}

/// One metrics export with `metadata`: its gRPC status code and message.
async fn export_metrics(
    client: &mut MetricsServiceClient<tonic::transport::Channel>,
    metadata: &[(&'static str, &str)],
    message: ExportMetricsServiceRequest,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(message);
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    client.export(request).await.map(|_| ())
}

fn sha256_hex(secret: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Each refusal of the HTTP pipeline as its gRPC code (no tenant, unknown,
/// suspended, no or wrong credential, read-only, `features.signals`, no
/// deployment of the signal, over the rate), counted in the same rejection
/// metrics; nothing of a refused export reaches an endpoint.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_grpc_codes_and_reach_no_endpoint() {
    let up = Upstream::start("acme/metrics").await;
    let url = up.url();
    let tenants = format!(
        r#"
[tenants.acme.metrics]
endpoints = ["{url}"]
[tenants.frozen]
status = "suspended"
[tenants.frozen.metrics]
endpoints = ["{url}"]
[tenants.locked.auth]
bearer_tokens_sha256 = ["{token}"]
[tenants.locked.metrics]
endpoints = ["{url}"]
[tenants.reader.features]
read_only = true
[tenants.reader.metrics]
endpoints = ["{url}"]
[tenants.logsonly.features]
signals = ["logs"]
[tenants.logsonly.metrics]
endpoints = ["{url}"]
[tenants.logsonly.logs]
endpoints = ["{url}"]
[tenants.slow.quotas]
requests_per_second = 1
burst = 1
[tenants.slow.metrics]
endpoints = ["{url}"]
"#,
        token = sha256_hex("right-token"),
    );
    let router = RouterProcess::builder().otlp_grpc().tenants(tenants).start();
    let addr = router.otlp_grpc.unwrap();
    let mut client = metrics_client(addr).await;
    for (what, metadata, code) in [
        ("no tenant", vec![], Code::Unauthenticated),
        ("unknown tenant", vec![("x-tenant-id", "nobody")], Code::PermissionDenied),
        ("suspended", vec![("x-tenant-id", "frozen")], Code::PermissionDenied),
        ("no credential", vec![("x-tenant-id", "locked")], Code::Unauthenticated),
        ("wrong credential", vec![("authorization", "Bearer wrong-token")], Code::Unauthenticated),
        ("read-only", vec![("x-tenant-id", "reader")], Code::PermissionDenied),
        ("features.signals without metrics", vec![("x-tenant-id", "logsonly")], Code::PermissionDenied),
    ] {
        let refused = export_metrics(&mut client, &metadata, gauge("refused")).await.expect_err(what);
        assert_eq!(refused.code(), code, "{what}: {refused:?}");
    }
    assert!(up.seen().is_empty(), "a refused export reached the endpoint: {:?}", up.seen());

    // The signal: acme has no logs deployment.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut logs = LogsServiceClient::new(channel);
    let mut request = tonic::Request::new(ExportLogsServiceRequest::default());
    request.metadata_mut().insert("x-tenant-id", "acme".parse().unwrap());
    let refused = logs.export(request).await.expect_err("logs are not enabled for acme");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("signal logs is not enabled"), "{refused:?}");

    // The right credential, then the quota: one export a second.
    export_metrics(&mut client, &[("authorization", "Bearer right-token")], gauge("locked")).await.unwrap();
    export_metrics(&mut client, &[("x-tenant-id", "slow")], gauge("first")).await.unwrap();
    let refused =
        export_metrics(&mut client, &[("x-tenant-id", "slow")], gauge("second")).await.expect_err("over quota");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // Retryable: the status carries a google.rpc.RetryInfo.
    let details = String::from_utf8_lossy(refused.details()).to_string();
    assert!(details.contains("type.googleapis.com/google.rpc.RetryInfo"), "{refused:?}");
    assert_eq!(up.seen().len(), 2, "the accepted exports only");

    let (_, text) = admin_metrics(&router).await;
    for (tenant, reason) in [
        ("unknown", "no_tenant"),
        ("unknown", "unknown_tenant"),
        ("frozen", "suspended"),
        ("acme", "signal_not_enabled"),
        ("reader", "read_only"),
        ("logsonly", "signal_not_enabled"),
        ("slow", "rate_limited"),
    ] {
        let series = format!("mirador_router_rejections_total{{reason=\"{reason}\",tenant=\"{tenant}\"}}");
        assert!(text.lines().any(|l| l.starts_with(&series) && !l.ends_with(" 0")), "{series} in\n{text}");
    }
}

async fn admin_metrics(router: &RouterProcess) -> (u16, String) {
    let response = common::client().get(format!("http://{}/metrics", router.admin)).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A continuous export loop while one of two endpoints dies: every export
/// is answered OK and arrives at an endpoint (the one still up).
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_killed_during_a_continuous_export_loses_no_export() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let tenants = format!("[tenants.acme.metrics]\nendpoints = [\"{}\", \"{}\"]\n", a.url(), b.url());
    let router = RouterProcess::builder().otlp_grpc().tenants(tenants).start();
    let mut client = metrics_client(router.otlp_grpc.unwrap()).await;
    let mut sent = BTreeSet::new();
    for i in 0..200 {
        if i == 60 {
            a.stop().await;
        }
        let message = gauge(&format!("export_{i}"));
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hasher::write(&mut hasher, &message.encode_to_vec());
        sent.insert(std::hash::Hasher::finish(&hasher));
        export_metrics(&mut client, &[("x-tenant-id", "acme")], message)
            .await
            .unwrap_or_else(|status| panic!("export {i} failed: {status:?}"));
    }
    let arrived: BTreeSet<u64> = a.seen().iter().chain(b.seen().iter()).map(|seen| seen.body_hash).collect();
    assert_eq!(arrived, sent, "every export arrived");
    assert!(!a.seen().is_empty() && b.seen().len() > 140, "a: {}, b: {}", a.seen().len(), b.seen().len());
}

/// A raw gRPC call over HTTP/2 as tenant acme: the HTTP status,
/// `grpc-status` and `grpc-message` (from the head or the trailers).
async fn raw_call(addr: SocketAddr, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Option<String>, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    call_over(tcp, &format!("http://{addr}{path}"), content_type, Some("acme"), body).await.unwrap()
}

/// A gRPC call over HTTP/2 on `io` (TCP, or a TLS stream), naming `tenant`
/// in the metadata when given; why it failed when it did.
async fn call_over<IO>(
    io: IO,
    uri: &str,
    content_type: &str,
    tenant: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, Option<String>, String), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = h2::client::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = http::Request::post(uri).header("content-type", content_type).header("te", "trailers");
    if let Some(tenant) = tenant {
        request = request.header("x-tenant-id", tenant);
    }
    let (response, mut stream) = sender.send_request(request.body(()).unwrap(), false).map_err(|e| e.to_string())?;
    // A call refused by its head may be answered (and its stream closed)
    // before the body goes: the answer is what counts.
    let _ = stream.send_data(body.into(), true);
    let response = response.await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let head = response.headers().clone();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.map_err(|e| e.to_string())?;
    }
    let trailers = body.trailers().await.map_err(|e| e.to_string())?.unwrap_or_default();
    let get = |name: &str| head.get(name).or_else(|| trailers.get(name)).map(|v| v.to_str().unwrap().to_string());
    Ok((status, get("grpc-status"), get("grpc-message").unwrap_or_default()))
}

/// A gRPC length-prefixed message.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Calls no gRPC client makes get their gRPC status, nothing reaches the
/// endpoint, and the listener serves the next export.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_calls_get_their_grpc_status_and_the_router_serves_on() {
    let up = Upstream::start("acme/metrics").await;
    let tenants = format!(
        "[tenants.acme.quotas]\nmax_body_bytes = 1000\n[tenants.acme.metrics]\nendpoints = [\"{}\"]\n",
        up.url()
    );
    let router = RouterProcess::builder().otlp_grpc().tenants(tenants).start();
    let addr = router.otlp_grpc.unwrap();
    let export = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    let small = gauge("small").encode_to_vec();

    let (status, code, _) = raw_call(addr, export, "application/json", frame(&small)).await;
    assert_eq!((status, code.as_deref()), (415, Some("3")), "wrong content-type");

    let mut truncated = frame(&small);
    truncated.truncate(truncated.len() - 5);
    let (status, code, message) = raw_call(addr, export, "application/grpc", truncated).await;
    assert_eq!((status, code.as_deref()), (200, Some("13")), "truncated frame: {message}");

    let oversized = gauge(&"x".repeat(5000)).encode_to_vec();
    let (status, code, message) = raw_call(addr, export, "application/grpc", frame(&oversized)).await;
    assert_eq!((status, code.as_deref()), (200, Some("8")), "oversized message: {message}");
    assert!(message.contains("max_body_bytes"), "{message}");

    let (status, code, message) = raw_call(
        addr,
        "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
        "application/grpc",
        frame(&small),
    )
    .await;
    assert_eq!((status, code.as_deref()), (200, Some("12")), "unknown method: {message}");

    assert!(up.seen().is_empty(), "nothing malformed reached the endpoint: {:?}", up.seen());
    let (status, code, message) = raw_call(addr, export, "application/grpc", frame(&small)).await;
    assert_eq!((status, code.as_deref()), (200, Some("0")), "a good export after them: {message}");
    assert_eq!(up.seen().len(), 1);
    let mut client = metrics_client(addr).await;
    export_metrics(&mut client, &[("x-tenant-id", "acme")], gauge("tonic")).await.unwrap();
    let (_, text) = admin_metrics(&router).await;
    for series in [
        "mirador_router_rejections_total{reason=\"unroutable\",tenant=\"unknown\"} 1",
        "mirador_router_rejections_total{reason=\"body_too_large\",tenant=\"acme\"} 1",
    ] {
        assert!(text.lines().any(|l| l == series), "{series} in\n{text}");
    }
}

/// A gzip export (`grpc-encoding: gzip`) goes on with its gzip bytes and
/// `Content-Encoding: gzip`; `max_body_bytes` bounds the decoded size, so a
/// small message that inflates past it is refused.
#[tokio::test(flavor = "multi_thread")]
async fn gzip_exports_stay_compressed_and_the_body_limit_is_on_the_decoded_size() {
    let up = Upstream::start("acme/metrics").await;
    up.keep_bodies();
    let tenants = format!(
        "[tenants.acme.quotas]\nmax_body_bytes = 1000\n[tenants.acme.metrics]\nendpoints = [\"{}\"]\n",
        up.url()
    );
    let router = RouterProcess::builder().otlp_grpc().tenants(tenants).start();
    let mut client = metrics_client(router.otlp_grpc.unwrap()).await.send_compressed(CompressionEncoding::Gzip);
    export_metrics(&mut client, &[("x-tenant-id", "acme")], gauge("zipped")).await.unwrap();
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["content-encoding"], "gzip");
    let body = seen[0].body.clone().unwrap();
    assert_eq!(&body[..2], b"\x1f\x8b", "gzip bytes");
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut decoded).unwrap();
    assert_eq!(decoded, gauge("zipped").encode_to_vec(), "the message as the client encoded it");

    let inflating = gauge(&"x".repeat(50_000));
    let refused = export_metrics(&mut client, &[("x-tenant-id", "acme")], inflating).await.expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("max_body_bytes"), "{refused:?}");
    assert_eq!(up.seen().len(), 1, "the oversized export reached no endpoint");
}

/// A client that stops sending in the middle of a message gets an error
/// status after `body_timeout`, and nothing reaches the endpoint.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_stalls_is_cut_off_after_body_timeout() {
    let up = Upstream::start("acme/metrics").await;
    let router = RouterProcess::builder()
        .otlp_grpc()
        .config_at(|dir, text| {
            let path = dir.join("router.toml");
            std::fs::write(&path, text.replacen("[server]\n", "[server]\nbody_timeout = \"500ms\"\n", 1)).unwrap();
            path
        })
        .tenants(format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()))
        .start();
    let addr = router.otlp_grpc.unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request =
        http::Request::post(format!("http://{addr}/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"))
            .header("content-type", "application/grpc")
            .header("x-tenant-id", "acme")
            .body(())
            .unwrap();
    let (response, mut stream) = sender.send_request(request, false).unwrap();
    let framed = frame(&gauge("stalled").encode_to_vec());
    stream.send_data(framed[..framed.len() / 2].to_vec().into(), false).unwrap();
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("answered").unwrap();
    let elapsed = started.elapsed();
    let head = response.headers().clone();
    let mut body = response.into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    let code = head.get("grpc-status").or_else(|| trailers.get("grpc-status")).map(|v| v.to_str().unwrap().to_string());
    assert!(code.is_some_and(|code| code != "0"), "{head:?} {trailers:?}");
    assert!(elapsed >= Duration::from_millis(400), "cut off after {elapsed:?}");
    assert!(up.seen().is_empty());
    drop(stream);
}

/// The SDK retries an export the deployment answers 503 (UNAVAILABLE with
/// RetryInfo), and its data arrives once the deployment is back.
#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_retries_on_unavailable_and_the_data_arrives_once_the_deployment_is_back() {
    let up = Upstream::start("acme/traces").await;
    up.keep_bodies();
    up.set_status(503);
    let tenants = format!("[tenants.acme.traces]\nendpoints = [\"{}\"]\n", up.url());
    let router = RouterProcess::builder().otlp_grpc().tenants(tenants).start();
    let addr = router.otlp_grpc.unwrap();
    let exporting = tokio::spawn(sdk_export(addr, "acme", "traces", None));
    Wait::new("the first export to meet the 503", Duration::from_secs(20))
        .until(|| if up.seen().is_empty() { Err("no export yet".to_string()) } else { Ok(()) })
        .await;
    up.set_status(200);
    tokio::time::timeout(Duration::from_secs(40), exporting).await.expect("the SDK ends").unwrap().unwrap();
    let seen = up.seen();
    assert!(seen.len() >= 2, "retried: {} attempt(s)", seen.len());
    let (resources, names) = received(&up, TRACES_PATH);
    assert_eq!(names, BTreeSet::from(["span-acme".to_string()]));
    assert_eq!(resources, BTreeSet::from([("acme".to_string(), "svc-acme".to_string())]));
}

/// An export's access log line: `protocol` grpc, the gRPC method as the
/// path, the tenant, signal, endpoint and HTTP status it stands for; a
/// refusal's too. The per-tenant request counter counts it.
#[tokio::test(flavor = "multi_thread")]
async fn an_export_has_its_access_log_line_and_request_metrics() {
    let up = Upstream::start("acme/metrics").await;
    let router = RouterProcess::builder()
        .otlp_grpc()
        .tenants(format!(
            "[observability]\naccess_log = \"json\"\n[tenants.acme.metrics]\nendpoints = [\"{}\"]\n",
            up.url()
        ))
        .start();
    let mut client = metrics_client(router.otlp_grpc.unwrap()).await;
    export_metrics(&mut client, &[("x-tenant-id", "acme"), ("x-request-id", "req-7")], gauge("logged")).await.unwrap();
    export_metrics(&mut client, &[("x-tenant-id", "nobody")], gauge("refused")).await.expect_err("unknown");
    router.wait_for_log("{\"ts\":", 2);
    let lines: Vec<serde_json::Value> =
        router.log().lines().filter(|l| l.starts_with("{\"ts\":")).map(|l| serde_json::from_str(l).unwrap()).collect();
    let method = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    let line = lines.iter().find(|l| l["tenant"] == "acme").expect("the export's line");
    assert_eq!(
        (&line["protocol"], &line["signal"], &line["method"], &line["path"], &line["status"], &line["endpoint"]),
        (&"grpc".into(), &"metrics".into(), &"POST".into(), &method.into(), &200.into(), &up.url().into())
    );
    assert_eq!((&line["attempts"], &line["request_id"]), (&1.into(), &"req-7".into()));
    assert!(line["bytes_in"].as_u64().unwrap() > 20, "{line}");
    let refused = lines.iter().find(|l| l["tenant"] == "unknown").expect("the refusal's line");
    assert_eq!((&refused["protocol"], &refused["status"]), (&"grpc".into(), &403.into()));
    let (_, text) = admin_metrics(&router).await;
    let series = "mirador_router_requests_total{signal=\"metrics\",status_class=\"2xx\",tenant=\"acme\"} 1";
    assert!(text.lines().any(|l| l == series), "{series} in\n{text}");
}

/// A reload applies to the gRPC listener at its next call: a tenant's new
/// deployment takes its exports, a removed tenant is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_applies_to_the_grpc_listener() {
    let (old, new) = (Upstream::start("old").await, Upstream::start("new").await);
    let router = RouterProcess::builder()
        .otlp_grpc()
        .tenants(format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", old.url()))
        .start();
    let mut client = metrics_client(router.otlp_grpc.unwrap()).await;
    export_metrics(&mut client, &[("x-tenant-id", "acme")], gauge("before")).await.unwrap();
    router.write_tenants(&format!("[tenants.beta.metrics]\nendpoints = [\"{}\"]\n", new.url()));
    router.signal("HUP");
    router.wait_for_log("config reloaded", 1);
    export_metrics(&mut client, &[("x-tenant-id", "beta")], gauge("after")).await.unwrap();
    let refused =
        export_metrics(&mut client, &[("x-tenant-id", "acme")], gauge("gone")).await.expect_err("acme is gone");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!((old.seen().len(), new.seen().len()), (1, 1));
}

/// TLS on the gRPC listener (`otlp_grpc_tls`) with a `[[server.tls]]`
/// listener's certificate and client CA: a verified client certificate
/// names the tenant without any metadata, and without one the handshake
/// fails (`client_cert = "required"`).
#[tokio::test(flavor = "multi_thread")]
async fn over_tls_a_client_certificate_names_the_tenant() {
    use common::tls::{ca, issue, write_pair};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (ca(), ca());
    let up = Upstream::start("acme/metrics").await;
    up.keep_bodies();
    let (cert, key) = issue(&server_ca, "edge.test", &["edge.test"]);
    let (cert, key) = write_pair(dir.path(), "edge", &cert, &key);
    let clients = dir.path().join("clients-ca.pem");
    std::fs::write(&clients, client_ca.cert.pem()).unwrap();
    let tls_listen = common::free_addr();
    let tls = format!(
        "[[server.tls]]\nlisten = \"{tls_listen}\"\ncertificates = [{{ cert_file = \"{}\", key_file = \"{}\" }}]\n\
         client_ca_file = \"{}\"\nclient_cert = \"required\"\n",
        cert.display(),
        key.display(),
        clients.display()
    );
    let router = RouterProcess::builder()
        .otlp_grpc()
        .config_at(move |dir, text| {
            let path = dir.join("router.toml");
            let text = text.replacen("[server]\n", &format!("[server]\notlp_grpc_tls = \"{tls_listen}\"\n"), 1);
            std::fs::write(&path, format!("{text}\n{tls}")).unwrap();
            path
        })
        .tenants(format!(
            "[tenants.acme.auth]\nclient_cert_subjects = [\"agent.acme.svc\"]\n[tenants.acme.metrics]\nendpoints = [\"{}\"]\n",
            up.url()
        ))
        .start();
    let addr = router.otlp_grpc.unwrap();
    let connector = |identity: Option<(String, String)>| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(server_ca.cert.pem().as_bytes()).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    };
    let export = "https://edge.test/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    let message = gauge("over_tls").encode_to_vec();
    let call = |identity, message: Vec<u8>| {
        let connector = connector(identity);
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let name = ServerName::try_from("edge.test").unwrap();
            let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
            call_over(tls, export, "application/grpc", None, frame(&message)).await
        }
    };
    let identity = issue(&client_ca, "agent.acme.svc", &["agent.acme.svc"]);
    let answered = call(Some(identity), message.clone()).await.unwrap();
    assert_eq!((answered.0, answered.1.as_deref()), (200, Some("0")), "{answered:?}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.as_deref(), Some(&message[..]));

    let refused =
        tokio::time::timeout(Duration::from_secs(10), call(None, message)).await.expect("an answer or an error");
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    assert_eq!(up.seen().len(), 1);
}

/// What the gRPC stand-in for VictoriaTraces' OTLP/gRPC port received:
/// each call's metadata and span names.
#[derive(Default)]
struct TracesSeen {
    calls: std::sync::Mutex<Vec<(tonic::metadata::MetadataMap, Vec<String>)>>,
    /// Answer UNAVAILABLE instead (the deployment's own status passes back).
    unavailable: std::sync::atomic::AtomicBool,
}

struct TracesStandIn(std::sync::Arc<TracesSeen>);

#[tonic::async_trait]
impl TraceService for TracesStandIn {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let (metadata, _, message) = request.into_parts();
        let names = message.resource_spans.iter().flat_map(|rs| rs.scope_spans.iter()).flat_map(|s| s.spans.iter());
        self.0.calls.lock().unwrap().push((metadata, names.map(|span| span.name.clone()).collect()));
        if self.0.unavailable.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(tonic::Status::unavailable("stand-in is draining"));
        }
        let partial = ExportTracePartialSuccess { rejected_spans: 1, error_message: "one span too old".into() };
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: Some(partial) }))
    }
}

/// A tonic `TraceService` server on 127.0.0.1:0 (h2c).
async fn traces_stand_in() -> (SocketAddr, std::sync::Arc<TracesSeen>) {
    use tonic::codegen::Service;
    let seen = std::sync::Arc::new(TracesSeen::default());
    let server = TraceServiceServer::new(TracesStandIn(seen.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let mut server = server.clone();
                    async move { server.call(request).await }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A traces deployment with `otlp_grpc_endpoints` gets the call as gRPC
/// (tonic's server standing in for VictoriaTraces' gRPC port): the message,
/// the pool's credential and no client credential in its metadata, its
/// partial success and its error status passed back; a call whose endpoint
/// is down goes to the next; nothing goes to the HTTP endpoint.
#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_with_otlp_grpc_endpoints_gets_the_call_as_grpc() {
    let http = Upstream::start("acme/traces").await;
    let (grpc, seen) = traces_stand_in().await;
    // A second gRPC endpoint that is down: calls that start there fail over.
    let dead = common::free_addr();
    let router = RouterProcess::builder()
        .otlp_grpc()
        .tenants(format!(
            "[observability]\naccess_log = \"json\"\n\
             [tenants.acme.auth]\nbearer_tokens_sha256 = [\"{}\"]\n[tenants.acme.traces]\nendpoints = [\"{}\"]\n\
             otlp_grpc_endpoints = [\"http://{dead}\", \"http://{grpc}\"]\nupstream_auth = {{ bearer_token_env = \"HOME\" }}\n",
            sha256_hex("acme-token"),
            http.url()
        ))
        .start();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", router.otlp_grpc.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = TraceServiceClient::new(channel);
    let span = opentelemetry_proto::tonic::trace::v1::Span { name: "passed-through".into(), ..Default::default() };
    let message = ExportTraceServiceRequest {
        resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
            scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    for _ in 0..4 {
        let mut request = tonic::Request::new(message.clone());
        request.metadata_mut().insert("authorization", "Bearer acme-token".parse().unwrap());
        let answer = client.export(request).await.unwrap().into_inner();
        let partial = answer.partial_success.map(|p| (p.rejected_spans, p.error_message));
        assert_eq!(partial, Some((1, "one span too old".into())));
    }
    {
        let calls = seen.calls.lock().unwrap();
        assert_eq!(calls.len(), 4, "every call, some after failing over from the dead endpoint");
        let (metadata, names) = &calls[0];
        assert_eq!(names, &["passed-through".to_string()]);
        let home = std::env::var("HOME").unwrap();
        assert_eq!(metadata.get("authorization").unwrap().to_str().unwrap(), format!("Bearer {home}"));
        assert!(metadata.get("x-request-id").is_some(), "{metadata:?}");
    }
    assert!(http.seen().is_empty(), "nothing went as OTLP/HTTP");
    // The access log names the gRPC endpoint that answered.
    router.wait_for_log("{\"ts\":", 4);
    let endpoint = format!("\"endpoint\":\"http://{grpc}\"");
    assert_eq!(router.log().lines().filter(|l| l.starts_with("{\"ts\":") && l.contains(&endpoint)).count(), 4);

    seen.unavailable.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", "Bearer acme-token".parse().unwrap());
    let refused = client.export(request).await.expect_err("the deployment's status");
    assert_eq!((refused.code(), refused.message()), (Code::Unavailable, "stand-in is draining"));
}

fn check(server_lines: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grpc.toml");
    std::fs::write(&path, format!("[server]\nlisten = [\"127.0.0.1:8080\"]\n{server_lines}\n[tenants.acme.metrics]\nendpoints = [\"http://127.0.0.1:8428\"]\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirador-router"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text.replace(&path.display().to_string(), "grpc.toml"))
}

/// `--check` takes an address for `otlp_grpc_listen` and refuses anything
/// else, or an address another listener has; `otlp_grpc_tls` names a
/// `[[server.tls]]` listener and needs the gRPC listener.
#[test]
fn check_accepts_and_refuses_otlp_grpc_listen_values() {
    assert_eq!(check("otlp_grpc_listen = \"0.0.0.0:4317\""), (Some(0), "grpc.toml: ok (1 tenants)\n".to_string()));
    assert_eq!(check("otlp_grpc_listen = \"[::1]:4317\""), (Some(0), "grpc.toml: ok (1 tenants)\n".to_string()));
    assert_eq!(
        check("otlp_grpc_listen = \"4317\""),
        (
            Some(1),
            "grpc.toml:3:1: server.otlp_grpc_listen: \"4317\" is not a listen address; expected ip:port such as 0.0.0.0:8080\ngrpc.toml: 1 error(s); nothing started\n".to_string()
        )
    );
    assert_eq!(
        check("otlp_grpc_listen = \"127.0.0.1:8080\""),
        (
            Some(1),
            "grpc.toml:3:1: server.otlp_grpc_listen: address 127.0.0.1:8080 is already used by another listener\ngrpc.toml: 1 error(s); nothing started\n".to_string()
        )
    );
    assert_eq!(
        check("otlp_grpc_listen = \"0.0.0.0:4317\"\notlp_grpc_tls = \"127.0.0.1:8443\""),
        (
            Some(1),
            "grpc.toml:4:1: server.otlp_grpc_tls: no [[server.tls]] listener is on 127.0.0.1:8443: name the one whose certificates it serves\ngrpc.toml: 1 error(s); nothing started\n".to_string()
        )
    );
    assert_eq!(
        check("otlp_grpc_tls = \"127.0.0.1:8443\""),
        (
            Some(1),
            "grpc.toml:3:1: server.otlp_grpc_tls: needs server.otlp_grpc_listen: the listener it puts TLS on\ngrpc.toml: 1 error(s); nothing started\n".to_string()
        )
    );
    assert_eq!(
        check("otlp_grpc_listen = 4317"),
        (Some(1), "grpc.toml:3:20: server.otlp_grpc_listen: invalid type: integer `4317`, expected a string\ngrpc.toml: 1 error(s); nothing started\n".to_string())
    );
}
