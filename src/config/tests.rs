//! Config tests compile text against inputs they give (no DNS, no files).

use super::*;
use crate::api::Signal;
use std::time::Duration;

/// Compiles `text` with no files, variables or host names to read.
fn compile_alone(file: &str, text: &str) -> Result<Config, Vec<ConfigError>> {
    compile(file, text, &Inputs::default())
}

fn errors(text: &str) -> Vec<String> {
    match compile_alone("bad.toml", text) {
        Ok(_) => panic!("config should be refused"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn the_shipped_config_and_the_embedded_default_are_valid() {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/mirador-router.toml")).unwrap();
    assert_eq!(shipped, EMBEDDED, "the embedded default is the shipped file");
    let config = compile_alone("conf/mirador-router.toml", EMBEDDED).unwrap();
    let tenant = &config.tenants["platformbuilds"];
    assert_eq!(tenant.name, "PLATFORMBUILDS");
    assert!(Signal::ALL.iter().all(|s| tenant.features.allows(*s)));
    assert_eq!(tenant.deployment(Signal::Metrics).unwrap().endpoints[0].url, "http://127.0.0.1:8428");
    assert_eq!(tenant.quotas.max_body_bytes, Some(33554432));
}

#[test]
fn an_empty_file_gets_the_documented_defaults() {
    let config = compile_alone("empty.toml", "").unwrap();
    assert_eq!(config.server.listen, vec!["0.0.0.0:8080".parse().unwrap()]);
    assert_eq!(config.server.threads, 2);
    assert!(config.server.signal_listeners.is_empty());
    assert_eq!(config.admin.listen, "127.0.0.1:9900".parse().unwrap());
    assert_eq!(config.tenancy.header.as_str(), "x-tenant-id");
    assert_eq!(config.health_check.interval, Duration::from_secs(30));
    assert_eq!(config.health_check.timeout, Duration::from_secs(2));
    assert_eq!(config.health_check.path, "/health");
    assert_eq!((config.health_check.healthy_threshold, config.health_check.unhealthy_threshold), (1, 3));
    assert!(config.tenants.is_empty());
}

#[test]
fn deployments_get_defaults_and_signals_follow_deployments() {
    let config = compile_alone("t.toml", "[tenants.acme.metrics]\nendpoints = [\"http://vm.local.:8428\"]\n");
    // A host name that does not resolve is refused with its key path.
    let err = config.unwrap_err();
    assert_eq!(err.len(), 1);
    assert!(err[0].to_string().starts_with("t.toml:2:14: tenants.acme.metrics.endpoints[0]: cannot resolve host"));

    let inputs = Inputs::default().with_address("localhost", 8428, "127.0.0.1:8428".parse().unwrap());
    let config =
        compile("t.toml", "[tenants.acme.metrics]\nendpoints = [\"http://localhost:8428/\"]\n", &inputs).unwrap();
    let tenant = &config.tenants["acme"];
    let metrics = tenant.deployment(Signal::Metrics).unwrap();
    assert_eq!(metrics.timeout, Duration::from_secs(30));
    assert_eq!(metrics.connect_timeout, Duration::from_secs(2));
    assert_eq!(metrics.endpoints[0].url, "http://localhost:8428");
    assert_eq!(metrics.endpoints[0].authority(), "localhost:8428");
    assert_eq!(metrics.endpoints[0].addr, "127.0.0.1:8428".parse().unwrap());
    assert_eq!(tenant.features.signals, [true, false, false]);
    assert_eq!(tenant.status, TenantStatus::Active);
    assert_eq!(tenant.name, "acme");
}

/// Every kind of semantic mistake at once: all are reported, in file order of
/// validation, each with file, line, column and key path.
#[test]
fn a_bad_config_yields_every_error_with_its_place() {
    let text = r#"[server]
listen = ["0.0.0.0:8080", "nonsense"]
threads = 0
grace_period = "soon"

[server.signal_listeners]
metrics = "0.0.0.0:8080"

[admin]
listen = "127.0.0.1:99999"

[tenancy]
header = "X Tenant"

[health_check]
interval = "0s"
path = "health"
unhealthy_threshold = 0

[tenants."bad.id"]
[tenants."bad.id".metrics]
endpoints = ["http://127.0.0.1:1"]

[tenants.acme]
admin_email = "nobody"

[tenants.acme.metrics]
endpoints = [
  "http://127.0.0.1:8428",
  "ftp://127.0.0.1:21",
  "http://127.0.0.1:8428",
  "http://user:pw@127.0.0.1:1/prefix",
  "http://127.0.0.1:8080",
]
timeout = "-1s"

[tenants.acme.logs]
endpoints = []

[tenants.acme.quotas]
max_body_bytes = 0

[tenants.acme.features]
signals = ["metrics", "traces"]
"#;
    assert_eq!(
        errors(text),
        [
            r#"bad.toml:2:27: server.listen[1]: "nonsense" is not a listen address; expected ip:port such as 0.0.0.0:8080"#,
            "bad.toml:3:1: server.threads: must be between 1 and 256, got 0",
            r#"bad.toml:4:1: server.grace_period: "soon" is not a duration (expected number at 0); write e.g. "30s" or "250ms""#,
            r#"bad.toml:10:1: admin.listen: "127.0.0.1:99999" is not a listen address; expected ip:port such as 0.0.0.0:8080"#,
            "bad.toml:7:1: server.signal_listeners.metrics: address 0.0.0.0:8080 is already used by another listener",
            r#"bad.toml:13:1: tenancy.header: "X Tenant" is not a valid HTTP header name"#,
            r#"bad.toml:17:1: health_check.path: must start with '/', got "health""#,
            "bad.toml:16:1: health_check.interval: must be longer than zero",
            "bad.toml:18:1: health_check.unhealthy_threshold: must be between 1 and 1000, got 0",
            r#"bad.toml:25:1: tenants.acme.admin_email: "nobody" is not an email address"#,
            r#"bad.toml:30:3: tenants.acme.metrics.endpoints[1]: "ftp://127.0.0.1:21" has scheme "ftp"; expected http or https"#,
            "bad.toml:31:3: tenants.acme.metrics.endpoints[2]: duplicate endpoint http://127.0.0.1:8428",
            r#"bad.toml:32:3: tenants.acme.metrics.endpoints[3]: "http://user:pw@127.0.0.1:1/prefix" carries credentials; endpoint URLs must not"#,
            r#"bad.toml:32:3: tenants.acme.metrics.endpoints[3]: "http://user:pw@127.0.0.1:1/prefix" has a path or query; endpoints are scheme://host:port only"#,
            "bad.toml:33:3: tenants.acme.metrics.endpoints[4]: endpoint http://127.0.0.1:8080 is one of the router's own listeners (a proxy loop)",
            r#"bad.toml:35:1: tenants.acme.metrics.timeout: "-1s" is not a duration (expected number at 0); write e.g. "30s" or "250ms""#,
            "bad.toml:38:1: tenants.acme.logs.endpoints: the deployment lists no endpoints",
            "bad.toml:41:1: tenants.acme.quotas.max_body_bytes: must be greater than zero, got 0",
            "bad.toml:44:23: tenants.acme.features.signals[1]: signal traces is enabled but the tenant has no [tenants.acme.traces] deployment",
            r#"bad.toml:20:10: tenants."bad.id": tenant id "bad.id" must be 1 to 64 characters of A-Z a-z 0-9 _ -, starting with a letter or digit"#,
        ]
    );
}

#[test]
fn an_unknown_key_is_an_error_at_its_line() {
    assert_eq!(
        errors("[tenants.acme.metrics]\nendpoints = [\"http://127.0.0.1:1\"]\ntimeuot = \"5s\"\n"),
        ["bad.toml:3:1: tenants.acme.metrics.timeuot: unknown field `timeuot`, expected one of `endpoints`, `backup_endpoints`, `timeout`, `connect_timeout`, `max_attempts`, `retry_ingest`, `namespace`, `health_check`, `quotas`, `upstream_auth`, `tls`, `account_id`, `project_id`, `insert_endpoints`, `insert_backup_endpoints`, `select_endpoints`, `select_backup_endpoints`, `share_tenant_id_with`, `http2`, `migration`, `otlp_grpc_endpoints`, `write_policy`, `dns`, `dns_refresh`"]
    );
}

#[test]
fn a_wrong_type_or_enum_value_is_an_error_at_its_value() {
    assert_eq!(
        errors("[tenants.acme]\nstatus = \"paused\"\n"),
        ["bad.toml:2:10: tenants.acme.status: unknown variant `paused`, expected `active` or `suspended`"]
    );
    assert_eq!(
        errors("[tenants.acme.features]\nsignals = [\"metrics\", \"profiles\"]\n"),
        ["bad.toml:2:23: tenants.acme.features.signals[1]: unknown variant `profiles`, expected one of `metrics`, `logs`, `traces`"]
    );
}

#[test]
fn a_number_out_of_range_of_the_file_format_is_an_error_at_its_key() {
    assert_eq!(
        errors("[server]\nmax_connections = 18446744073709551615\n"),
        ["bad.toml:2:19: server.max_connections: invalid value: integer `18446744073709551615`, expected i64"]
    );
    // Another key's error, with such a number elsewhere in the file.
    assert_eq!(
        errors("[server]\nidle_timeuot = \"5s\"\nmax_connections = 1e400\n")[0].split(", expected").next().unwrap(),
        "bad.toml:2:1: server.idle_timeuot: unknown field `idle_timeuot`"
    );
}

#[test]
fn a_toml_syntax_error_names_its_line() {
    let errors = errors("[server]\nlisten = [\"0.0.0.0:8080\"\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("bad.toml:2:"), "{}", errors[0]);
}

#[test]
fn tenant_ids_are_plain_and_bounded() {
    for good in ["a", "acme", "ACME-prod_2", &"x".repeat(64)] {
        assert!(check_tenant_id(good).is_ok(), "{good}");
    }
    for bad in ["", "-acme", "_acme", "ac me", "acmé", "a.b", "a/b", &"x".repeat(65)] {
        assert!(check_tenant_id(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_missing_file_is_one_error_naming_it() {
    let errors = Source::File("/nonexistent/mirador.toml".into()).load().unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().starts_with("/nonexistent/mirador.toml: cannot read the file:"));
}

#[test]
fn files_and_variables_come_from_the_inputs() {
    let text = r#"[admin]
token_file = "/run/admin.token"
[tenants.acme.metrics]
endpoints = ["http://127.0.0.1:8428"]
upstream_auth = { bearer_token_env = "ACME_TOKEN" }
[tenants.acme.auth]
bearer_tokens_sha256_file = "/run/acme.sha256"
"#;
    let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let inputs = Inputs::default()
        .with_file("/run/admin.token", " s3cret \n")
        .with_file("/run/acme.sha256", format!("{digest}\n\n"))
        .with_env("ACME_TOKEN", "upstream-token");
    let config = compile("t.toml", text, &inputs).unwrap();
    assert_eq!(config.admin.token, Some(Secret("s3cret".into())));
    let acme = &config.tenants["acme"];
    assert_eq!(acme.auth.as_ref().unwrap().bearer_sha256.len(), 1);
    let upstream = acme.deployment(Signal::Metrics).unwrap().upstream_auth.clone();
    assert_eq!(upstream, Some(Secret("Bearer upstream-token".into())));

    assert_eq!(
        errors(text),
        [
            "bad.toml:2:1: admin.token_file: cannot read /run/admin.token: not found",
            "bad.toml:5:1: tenants.acme.metrics.upstream_auth: environment variable ACME_TOKEN is not set",
            "bad.toml:7:1: tenants.acme.auth.bearer_tokens_sha256_file: cannot read /run/acme.sha256: not found",
            "bad.toml:6:15: tenants.acme.auth: lists no credential: add bearer_tokens_sha256, basic_auth or client_cert_subjects, or remove the table",
        ]
    );
}

#[test]
fn gathering_reads_what_the_text_names() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "from-disk\n").unwrap();
    let text = format!("[admin]\ntoken_file = \"{}\"\n", token.display());
    let config = parse("t.toml", &text).unwrap();
    assert_eq!(config.admin.token, Some(Secret("from-disk".into())));
}

#[test]
fn gathering_resolves_the_host_names_of_a_shared_clusters_services() {
    let text = "[tenants.s.metrics]\naccount_id = 1\ninsert_endpoints = [\"http://localhost:18480\"]\n\
                select_endpoints = [\"http://localhost:18481\"]\nselect_backup_endpoints = [\"http://localhost:18482\"]\n";
    let config = parse("t.toml", text).unwrap_or_else(|e| panic!("{e:?}"));
    let metrics = config.tenants["s"].deployment(Signal::Metrics).unwrap();
    let addrs: Vec<_> = metrics.all_endpoints().map(|e| (e.addr.ip().is_loopback(), e.addr.port())).collect();
    assert_eq!(addrs, [(true, 18480), (true, 18481), (true, 18482)]);
}

#[test]
fn a_file_that_is_not_utf8_is_refused_at_its_line_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"[tenants.acme]\nname = \"Caf\xe9\"\n").unwrap();
    let errors = Source::File(path.clone()).load().unwrap_err();
    let expected = format!("{}:2:12: the file is not UTF-8 text (byte 26)", path.display());
    assert_eq!(errors.iter().map(ToString::to_string).collect::<Vec<_>>(), [expected]);
}

#[test]
fn durations_and_quotas_are_bounded_so_that_what_passes_runs() {
    let text = r#"[server]
grace_period = "2h"
[health_check]
interval = "500000000000y"
timeout = "10m"
ejection_cooldown = "0s"
[tenants.acme.metrics]
endpoints = ["http://127.0.0.1:8428"]
timeout = "18446744073709551615s"
connect_timeout = "0.5ms"
[tenants.acme.quotas]
requests_per_second = 10000001
max_concurrent_requests = 4294967296
max_body_bytes = 1099511627777
"#;
    assert_eq!(
        errors(text),
        [
            r#"bad.toml:2:1: server.grace_period: must be at most 1h, got "2h""#,
            r#"bad.toml:4:1: health_check.interval: must be at most 1h, got "500000000000y""#,
            r#"bad.toml:5:1: health_check.timeout: must be at most 5m, got "10m""#,
            "bad.toml:6:1: health_check.ejection_cooldown: must be longer than zero",
            r#"bad.toml:9:1: tenants.acme.metrics.timeout: must be at most 1h, got "18446744073709551615s""#,
            r#"bad.toml:10:1: tenants.acme.metrics.connect_timeout: must be at least 1ms, got "0.5ms""#,
            "bad.toml:12:1: tenants.acme.quotas.requests_per_second: must be at most 10000000, got 10000001",
            "bad.toml:13:1: tenants.acme.quotas.max_concurrent_requests: must be at most 1000000, got 4294967296",
            "bad.toml:14:1: tenants.acme.quotas.max_body_bytes: must be at most 1099511627776, got 1099511627777",
        ]
    );
}

#[test]
fn client_limits_have_edge_defaults_and_bounds() {
    let config = compile_alone("t.toml", "").unwrap();
    assert_eq!(config.server.clients, ClientLimits::default());
    assert_eq!(config.server.clients.request_header_timeout, Duration::from_secs(10));
    let text = r#"[server]
request_header_timeout = "0s"
idle_timeout = "2h"
max_connections = 10
max_connections_per_client = 11
max_request_headers = 257
max_request_header_bytes = 0
"#;
    assert_eq!(
        errors(text),
        [
            "bad.toml:2:1: server.request_header_timeout: must be longer than zero",
            r#"bad.toml:3:1: server.idle_timeout: must be at most 1h, got "2h""#,
            "bad.toml:5:1: server.max_connections_per_client: must be at most 10, got 11",
            "bad.toml:6:1: server.max_request_headers: must be at most 256, got 257",
            "bad.toml:7:1: server.max_request_header_bytes: must be greater than zero, got 0",
        ]
    );
}

#[test]
fn http2_is_off_by_default_and_on_where_the_file_says() {
    let config = compile_alone("t.toml", "[tenants.acme.metrics]\nendpoints = [\"http://127.0.0.1:8428\"]\n").unwrap();
    assert!(!config.server.http2, "h2c on plain listeners is off by default");
    assert!(!config.tenants["acme"].deployment(Signal::Metrics).unwrap().http2, "HTTP/1.1 upstream by default");

    // h2c (http://) and ALPN h2 (https://) endpoints alike; a shared
    // cluster's vmselect speaks what its vminsert does.
    let text = r#"[server]
http2 = true
[tenants.acme.metrics]
endpoints = ["http://127.0.0.1:8428", "https://127.0.0.2:8428"]
http2 = true
[tenants.small.metrics]
account_id = 1
insert_endpoints = ["http://127.0.0.1:8480"]
select_endpoints = ["https://127.0.0.1:8481"]
http2 = true
"#;
    let config = compile_alone("t.toml", text).unwrap();
    assert!(config.server.http2);
    assert!(config.tenants["acme"].deployment(Signal::Metrics).unwrap().http2);
    let small = config.tenants["small"].deployment(Signal::Metrics).unwrap();
    assert!(small.http2 && small.select_service().unwrap().http2);
    assert_eq!(
        errors("[server]\nhttp2 = \"yes\"\n"),
        ["bad.toml:2:9: server.http2: invalid type: string \"yes\", expected a boolean"]
    );
}

const SHARED: &str = r#"
[tenants.small.metrics]
account_id = 42
insert_endpoints = ["http://127.0.0.1:8480", "http://127.0.0.2:8480"]
select_endpoints = ["http://127.0.0.1:8481"]
select_backup_endpoints = ["http://127.0.0.2:8481"]
[tenants.small.logs]
account_id = 42
project_id = 7
endpoints = ["http://127.0.0.1:9428"]
"#;

#[test]
fn a_shared_cluster_deployment_carries_its_ids_and_its_services() {
    let config = compile_alone("t.toml", SHARED).unwrap();
    let small = &config.tenants["small"];
    let metrics = small.deployment(Signal::Metrics).unwrap();
    let cluster = metrics.cluster.as_ref().unwrap();
    assert_eq!((cluster.tenant.account, cluster.tenant.project), (42, 0));
    let urls = |endpoints: &[Endpoint]| endpoints.iter().map(|e| e.url.clone()).collect::<Vec<_>>();
    assert_eq!(urls(&metrics.endpoints), ["http://127.0.0.1:8480", "http://127.0.0.2:8480"]);
    let select = metrics.select_service().unwrap();
    assert_eq!(urls(&select.endpoints), ["http://127.0.0.1:8481"]);
    assert_eq!(urls(&select.backup_endpoints), ["http://127.0.0.2:8481"]);
    assert_eq!(metrics.all_endpoints().count(), 4);
    let logs = small.deployment(Signal::Logs).unwrap().cluster.as_ref().unwrap();
    assert_eq!((logs.tenant.account, logs.tenant.project, logs.select.is_none()), (42, 7, true));
}

#[test]
fn a_shared_cluster_deployment_is_refused_with_every_problem_named() {
    let bad = r#"
[tenants.a.metrics]
account_id = 4294967296
endpoints = ["http://127.0.0.1:8428"]
select_endpoints = ["http://127.0.0.1:8481"]
[tenants.b.metrics]
project_id = 1
insert_endpoints = ["http://127.0.0.1:8480"]
endpoints = ["http://127.0.0.1:8428"]
[tenants.c.logs]
account_id = -1
endpoints = ["http://127.0.0.1:9428"]
select_endpoints = ["http://127.0.0.1:9429"]
"#;
    let found = errors(bad);
    for expected in [
        "tenants.a.metrics.account_id: must be between 0 and 4294967295, got 4294967296",
        "tenants.a.metrics.endpoints: a shared metrics deployment names insert_endpoints",
        "tenants.a.metrics.insert_endpoints: the deployment lists no endpoints",
        "tenants.b.metrics.project_id: a project_id needs an account_id",
        "tenants.b.metrics.insert_endpoints: only a shared metrics deployment (with account_id) has vminsert",
        "tenants.c.logs.account_id: must be between 0 and 4294967295, got -1",
        "tenants.c.logs.select_endpoints: VictoriaLogs and VictoriaTraces are one service",
    ] {
        assert!(found.iter().any(|e| e.contains(expected)), "{expected:?} not in {found:#?}");
    }
}

#[test]
fn two_tenants_share_a_cluster_tenant_only_when_one_says_so() {
    let twin = SHARED.replace("small", "twin");
    let both = format!("{SHARED}{twin}");
    let found = errors(&both);
    assert!(
        found.iter().any(|e| e.contains("tenants.twin.metrics.account_id: tenant \"small\" already uses 42:0")),
        "{found:#?}"
    );
    assert!(found.iter().any(|e| e.contains("tenants.twin.logs.account_id: tenant \"small\" already uses 42:7")));
    // Said explicitly, for each signal: valid.
    let agreed = both.replace("[tenants.twin.metrics]\n", "[tenants.twin.metrics]\nshare_tenant_id_with = \"small\"\n");
    let agreed = agreed.replace("[tenants.twin.logs]\n", "[tenants.twin.logs]\nshare_tenant_id_with = \"small\"\n");
    assert!(compile_alone("t.toml", &agreed).is_ok(), "{:?}", errors(&agreed));
    // Another account on the same cluster: valid.
    let other = format!("{SHARED}{}", twin.replace("account_id = 42", "account_id = 43"));
    assert!(compile_alone("t.toml", &other).is_ok(), "{:?}", errors(&other));
    // A typo in share_tenant_id_with, or a tenant that does not share: refused.
    let typo = other.replace("[tenants.twin.logs]\n", "[tenants.twin.logs]\nshare_tenant_id_with = \"smal\"\n");
    assert!(errors(&typo).iter().any(|e| e.contains("tenants.twin.logs.share_tenant_id_with: tenant \"smal\"")));
    // A dedicated deployment on a shared cluster's endpoint: refused.
    let dedicated = format!("{SHARED}[tenants.d.logs]\nendpoints = [\"http://127.0.0.1:9428\"]\n");
    assert!(
        errors(&dedicated)
            .iter()
            .any(|e| e
                .contains("tenants.d.logs.endpoints: http://127.0.0.1:9428 is a shared cluster of tenant \"small\""))
    );
}

#[test]
fn an_admin_grant_must_run_on_a_deployment_of_the_tenant() {
    let granted = |ops: &str| format!("{SHARED}[tenants.small.features]\nadmin_api = [{ops}]\n");
    assert!(compile_alone("t.toml", &granted("\"delete_series\"")).is_ok());
    let found = errors(&granted("\"snapshot\""));
    assert!(
        found.iter().any(|e| e.contains("tenants.small.features.admin_api: operation snapshot runs on none")),
        "{found:#?}"
    );
}

#[test]
fn the_shipped_shared_cluster_example_is_valid_once_uncommented() {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/mirador-router.toml")).unwrap();
    let example = &shipped[shipped.find("# [tenants.smallco.metrics]").expect("the example is shipped")..];
    let example = &example[..example.find("\n\n").unwrap_or(example.len())];
    let text: String = example.lines().map(|line| format!("{}\n", line.trim_start_matches("# "))).collect();
    let hosts = [
        ("vminsert-1", 8480),
        ("vminsert-2", 8480),
        ("vmselect-1", 8481),
        ("vmselect-2", 8481),
        ("vlogs-shared", 9428),
    ];
    let inputs = hosts.iter().enumerate().fold(Inputs::default(), |inputs, (i, (host, port))| {
        inputs.with_address(host, *port, ([10, 0, 0, i as u8 + 1], *port).into())
    });
    let config = compile("example.toml", &text, &inputs).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let metrics = config.tenants["smallco"].deployment(Signal::Metrics).unwrap();
    assert_eq!(metrics.cluster.as_ref().unwrap().tenant.account, 42);
    assert_eq!(metrics.select_service().unwrap().endpoints.len(), 2);
}

/// A self-signed certificate for `names` valid until `not_after` (unix
/// seconds): (cert PEM, key PEM).
fn certificate(names: &[&str], not_after: i64) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = time_of(not_after);
    let key = rcgen::KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn time_of(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn tls_config(files: &[(&str, &(String, String))]) -> (String, Inputs) {
    let mut text = String::from("[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncertificates = [\n");
    let mut inputs = Inputs::default().with_now(NOW);
    for (name, (cert, key)) in files {
        text += &format!("  {{ cert_file = \"/tls/{name}.pem\", key_file = \"/tls/{name}.key\" }},\n");
        inputs = inputs
            .with_file(&format!("/tls/{name}.pem"), cert.as_bytes())
            .with_file(&format!("/tls/{name}.key"), key.as_bytes());
    }
    (text + "]\n", inputs)
}

#[test]
fn tls_listener_certificates_are_parsed_matched_and_bounded_in_time() {
    let edge = certificate(&["edge.example", "*.edge.example"], NOW + 90 * DAY);
    let other = certificate(&["other.example"], NOW + 90 * DAY);
    let (text, inputs) = tls_config(&[("edge", &edge), ("other", &other)]);
    let config = compile("t.toml", &text, &inputs).unwrap_or_else(|e| panic!("{e:?}"));
    let listener = &config.server.tls[0];
    assert_eq!((listener.listen.port(), listener.http2), (8443, true));
    assert_eq!(listener.certificates[0].names, ["edge.example", "*.edge.example"]);
    assert_eq!(listener.certificates[1].not_after, NOW + 90 * DAY);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    // A key that is not the certificate's, an expired certificate, a file that is no PEM.
    let mismatched = (edge.0.clone(), other.1.clone());
    let expired = certificate(&["old.example"], NOW - DAY);
    let garbage = ("not a certificate".to_string(), edge.1.clone());
    let (text, inputs) = tls_config(&[("mismatched", &mismatched), ("expired", &expired), ("garbage", &garbage)]);
    let found: Vec<String> = compile("t.toml", &text, &inputs).unwrap_err().iter().map(|e| e.to_string()).collect();
    for expected in [
        "server.tls[0].certificates[0].key_file: /tls/mismatched.key is not the key of /tls/mismatched.pem",
        "server.tls[0].certificates[1].cert_file: /tls/expired.pem (CN=rcgen self signed cert) expired at",
        "server.tls[0].certificates[2].cert_file: /tls/garbage.pem holds no PEM certificate",
    ] {
        assert!(found.iter().any(|e| e.contains(expected)), "{expected:?} not in {found:#?}");
    }

    // Under 14 days left: valid, with a warning naming the certificate.
    let soon = certificate(&["soon.example"], NOW + 3 * DAY);
    let (text, inputs) = tls_config(&[("soon", &soon)]);
    let config = compile("t.toml", &text, &inputs).unwrap();
    assert_eq!(config.warnings.len(), 1);
    assert!(config.warnings[0].contains("server.tls[0].certificates[0]: /tls/soon.pem"), "{:?}", config.warnings);

    // No certificate, or no address: refused.
    let found = errors("[[server.tls]]\nlisten = \"127.0.0.1:8443\"\n[[server.tls]]\ncertificates = []\n");
    assert!(found
        .iter()
        .any(|e| e.contains("server.tls[0].certificates: a TLS listener needs at least one certificate")));
    assert!(found.iter().any(|e| e.contains("server.tls[1].listen: a TLS listener needs its address")), "{found:#?}");
}

#[test]
fn client_certificates_need_a_ca_and_each_subject_names_one_tenant() {
    let edge = certificate(&["edge.example"], NOW + 90 * DAY);
    let ca = certificate(&["clients CA"], NOW + 90 * DAY);
    let (text, inputs) = tls_config(&[("edge", &edge)]);
    let inputs = inputs.with_file("/tls/clients.pem", ca.0.as_bytes());
    let with_ca = format!("{text}client_ca_file = \"/tls/clients.pem\"\n");
    let config = compile("t.toml", &with_ca, &inputs).unwrap_or_else(|e| panic!("{e:?}"));
    let clients = config.server.tls[0].clients.as_ref().expect("client certificates asked for");
    assert!(clients.required, "required unless it says optional");
    let optional = format!("{with_ca}client_cert = \"optional\"\n");
    assert!(!compile("t.toml", &optional, &inputs).unwrap().server.tls[0].clients.as_ref().unwrap().required);

    let refused = |text: &str| -> Vec<String> {
        compile("t.toml", text, &inputs).unwrap_err().iter().map(|e| e.to_string()).collect()
    };
    let found = refused(&format!("{text}client_cert = \"required\"\n"));
    assert!(found.iter().any(|e| e.contains("server.tls[0].client_cert: needs client_ca_file")), "{found:#?}");
    let found = refused(&format!("{text}client_ca_file = \"/tls/missing.pem\"\n"));
    assert!(
        found.iter().any(|e| e.contains("server.tls[0].client_ca_file: cannot read /tls/missing.pem")),
        "{found:#?}"
    );
    let found = refused(&format!("{text}client_cert = \"sometimes\"\n"));
    assert!(found.iter().any(|e| e.contains("unknown variant `sometimes`")), "{found:#?}");

    // One subject, two tenants; an empty subject.
    let tenants = "[tenants.a.auth]\nclient_cert_subjects = [\"spiffe://x/a\", \"\"]\n\
                   [tenants.b.auth]\nclient_cert_subjects = [\"spiffe://x/a\"]\n";
    let found = refused(&format!("{with_ca}{tenants}"));
    assert!(found.iter().any(|e| e.contains("tenants.a.auth.client_cert_subjects[1]: must be a certificate name")));
    assert!(found.iter().any(|e| e.contains("client_cert_subjects: \"spiffe://x/a\" is also tenant")), "{found:#?}");
    // Subjects alone are a credential; DNS names and CNs compare in lower case.
    let alone = format!("{with_ca}[tenants.a.auth]\nclient_cert_subjects = [\"Agent.A.Svc\"]\n");
    let config = compile("t.toml", &alone, &inputs).unwrap();
    assert_eq!(config.tenants["a"].auth.as_ref().unwrap().cert_subjects, ["agent.a.svc"]);
}

/// An EC P-256 JWKS with one key, `kid` k1 (a real key: the parse checks it).
fn jwks_text() -> String {
    use base64::Engine;
    let key = rcgen::KeyPair::generate().unwrap();
    let point = key.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}"}},{{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}}]}}"#,
        b64(&point[1..33]),
        b64(&point[33..65])
    )
}

#[test]
fn jwt_settings_refuse_what_could_not_prove_a_tenant() {
    let inputs = Inputs::default().with_file("/idp/jwks.json", jwks_text()).with_file("/idp/bad.json", "{}");
    let base = "[tenancy.jwt]\nissuer = \"https://idp\"\naudience = \"mirador\"\ntenant_claim = \"org.tenant\"\n";
    let ok = format!("{base}jwks_file = \"/idp/jwks.json\"\n");
    let config = compile("t.toml", &ok, &inputs).unwrap_or_else(|e| panic!("{e:?}"));
    let jwt = config.tenancy.jwt.as_ref().unwrap();
    assert_eq!(jwt.tenant_claim, ["org", "tenant"]);
    assert_eq!(jwt.keys.keys.len(), 1, "the symmetric key is left out");
    assert_eq!(jwt.keys.keys[0].algorithms, [jsonwebtoken::Algorithm::ES256]);
    assert_eq!((jwt.refresh, jwt.leeway), (Duration::from_secs(300), Duration::from_secs(30)));

    let refused = |text: String| -> Vec<String> {
        compile("t.toml", &text, &inputs).unwrap_err().iter().map(|e| e.to_string()).collect()
    };
    for (text, expected) in [
        (format!("{ok}algorithms = [\"HS256\"]\n"), "tenancy.jwt.algorithms[0]: HS256 is refused"),
        (format!("{ok}algorithms = [\"none\"]\n"), "tenancy.jwt.algorithms[0]: \"none\" is refused"),
        (format!("{ok}algorithms = [\"RS1\"]\n"), "tenancy.jwt.algorithms[0]: \"RS1\" is not a JOSE algorithm"),
        (format!("{ok}algorithms = []\n"), "tenancy.jwt.algorithms: lists no algorithm"),
        (format!("{base}jwks_file = \"/idp/bad.json\"\n"), "tenancy.jwt.jwks_file: is not a JWKS"),
        (format!("{base}jwks_file = \"/idp/none.json\"\n"), "tenancy.jwt.jwks_file: cannot read /idp/none.json"),
        (format!("{ok}jwks_url = \"https://idp/jwks\"\n"), "tenancy.jwt: set jwks_file or jwks_url, not both"),
        (base.to_string(), "tenancy.jwt: needs jwks_file or jwks_url"),
        (format!("{base}jwks_url = \"http://idp.example/jwks\"\n"), "keys must come over https"),
        (format!("{ok}jwks_refresh = \"0s\"\n"), "tenancy.jwt.jwks_refresh"),
        (format!("{ok}leeway = \"1h\"\n"), "tenancy.jwt.leeway"),
        (format!("{ok}read_only_claim = \"a..b\"\n"), "tenancy.jwt.read_only_claim: \"a..b\" is not a claim path"),
        (ok.replace("issuer = \"https://idp\"\n", ""), "tenancy.jwt.issuer: is required"),
        (ok.replace("audience = \"mirador\"\n", ""), "tenancy.jwt.audience: is required"),
    ] {
        let found = refused(text);
        assert!(found.iter().any(|e| e.contains(expected)), "{expected:?} not in {found:#?}");
    }
    // An ES256 key with only RS256 allowed: no usable key.
    let found = refused(format!("{ok}algorithms = [\"RS256\"]\n"));
    assert!(found.iter().any(|e| e.contains("has no signing key for the allowed algorithms (RS256)")), "{found:#?}");
    // A URL that cannot be fetched is a warning: tokens wait for a refresh.
    let unreachable = format!("{base}jwks_url = \"http://127.0.0.1:9/jwks\"\n");
    let config = compile("t.toml", &unreachable, &inputs).unwrap();
    assert!(config.tenancy.jwt.unwrap().keys.keys.is_empty());
    assert!(config.warnings.iter().any(|w| w.contains("JWTs are refused until a refresh")), "{:?}", config.warnings);
    // And one that answers nonsense.
    let answered = inputs.clone().with_file("http://127.0.0.1:9/jwks", "<html>");
    let config = compile("t.toml", &unreachable, &answered).unwrap();
    assert!(config.warnings.iter().any(|w| w.contains("jwks_url: is not a JWKS")), "{:?}", config.warnings);
}

const TIERED: &str = r#"
[tenancy]
default_tier = "bronze"

[tiers.gold]
quotas = { requests_per_second = 5000, max_body_bytes = 67108864 }
features = { signals = ["metrics", "logs", "traces"] }
health_check = { interval = "5s", path = "/ready" }
metrics = { timeout = "20s", max_attempts = 2 }

[tiers.bronze]
quotas = { requests_per_second = 10 }
features = { read_only = true }

[tenants.acme]
tier = "gold"
quotas = { max_body_bytes = 1024 }
[tenants.acme.metrics]
endpoints = ["http://127.0.0.1:1"]
max_attempts = 5
health_check = { interval = "7s" }

[tenants.small.metrics]
endpoints = ["http://127.0.0.1:2"]
[tenants.small.logs]
endpoints = ["http://127.0.0.1:3"]
"#;

#[test]
fn tenants_inherit_their_tier_key_by_key_and_their_own_keys_win() {
    let config = compile_alone("t.toml", TIERED).unwrap_or_else(|e| panic!("{e:?}"));
    let acme = &config.tenants["acme"];
    assert_eq!(acme.tier.as_deref(), Some("gold"));
    assert_eq!(acme.quotas.requests_per_second, Some(5000), "from the tier");
    assert_eq!(acme.quotas.max_body_bytes, Some(1024), "its own");
    assert_eq!(acme.features.signals, [true, false, false], "the tier allows logs and traces; acme has only metrics");
    let metrics = acme.deployment(Signal::Metrics).unwrap();
    assert_eq!((metrics.timeout, metrics.max_attempts), (Duration::from_secs(20), 5));
    assert_eq!(metrics.health_check.interval, Duration::from_secs(7), "the deployment's own override");
    assert_eq!(metrics.health_check.path, "/ready", "the tier's");
    assert_eq!(metrics.health_check.timeout, Duration::from_secs(2), "the global default");
    // The default tier for a tenant naming none.
    let small = &config.tenants["small"];
    assert_eq!(small.tier.as_deref(), Some("bronze"));
    assert!(small.features.read_only);
    assert_eq!(small.quotas.requests_per_second, Some(10));
    assert_eq!(small.features.signals, [true, true, false]);

    // The admin API's effective view: the merged table; the tenant's own is unchanged.
    let effective = effective_tenant(TIERED, "acme").unwrap();
    assert_eq!(effective["quotas"], serde_json::json!({ "requests_per_second": 5000, "max_body_bytes": 1024 }));
    assert_eq!(effective["metrics"]["timeout"], "20s");
    assert_eq!(effective["metrics"]["max_attempts"], 5);
    assert_eq!(effective["metrics"]["health_check"], serde_json::json!({ "interval": "7s", "path": "/ready" }));
    assert_eq!(effective_tenant(TIERED, "small").unwrap()["tier"], "bronze");
    assert!(effective_tenant(TIERED, "nobody").is_none());
}

#[test]
fn a_bad_tier_is_reported_at_the_tier_and_a_missing_one_at_the_tenant() {
    let text = "[tiers.gold]\nquotas = { requests_per_second = -1 }\nmetrics = { max_attempts = 99 }\n\
                [tiers.\"bad name\"]\n\
                [tenants.acme]\ntier = \"gold\"\n[tenants.acme.metrics]\nendpoints = [\"http://127.0.0.1:1\"]\n\
                [tenants.beta]\ntier = \"silver\"\n[tenants.beta.metrics]\nendpoints = [\"http://127.0.0.1:2\"]\n";
    assert_eq!(
        errors(text),
        [
            "bad.toml:4:8: tiers.\"bad name\": tier name \"bad name\" must be 1 to 64 characters of A-Z a-z 0-9 _ -, starting with a letter or digit",
            "bad.toml:2:12: tiers.gold.quotas.requests_per_second: must be greater than zero, got -1",
            "bad.toml:3:13: tiers.gold.metrics.max_attempts: must be between 1 and 16, got 99",
            "bad.toml:10:1: tenants.beta.tier: no tier \"silver\" (tiers: bad name, gold)",
        ],
        "the tier's errors once, at the tier, not again at acme"
    );
    assert_eq!(
        errors("[tenancy]\ndefault_tier = \"gold\"\n"),
        ["bad.toml:2:1: tenancy.default_tier: no tier \"gold\" (tiers: none)"]
    );
    // A tier's key the file format does not know.
    let found = errors("[tiers.gold]\nquotas = { requests_per_minute = 5 }\n");
    assert!(found[0].contains("tiers.gold.quotas.requests_per_minute: unknown field"), "{found:?}");
}

#[test]
fn a_migration_is_read_with_its_defaults_and_its_target_checked_like_a_deployment() {
    let config = compile_alone(
        "t.toml",
        "[tenants.acme.metrics]\nendpoints = [\"http://127.0.0.1:8428\"]\n\
         [tenants.acme.metrics.migration]\nto = { endpoints = [\"http://127.0.0.1:18428\"], timeout = \"5s\" }\nphase = \"shadow\"\n",
    )
    .unwrap();
    let metrics = config.tenants["acme"].deployment(Signal::Metrics).unwrap();
    let migration = metrics.migration.as_ref().unwrap();
    assert_eq!(migration.phase, MigrationPhase::Shadow);
    assert_eq!(migration.to.endpoints[0].url, "http://127.0.0.1:18428");
    assert_eq!(migration.to.timeout, Duration::from_secs(5));
    assert_eq!((migration.shadow_sample, migration.mirror_max_body), (0.1, 8 << 20));
    assert_eq!((migration.mirror_queue, migration.mirror_queue_bytes), (10_000, 256 << 20));
    assert_eq!(metrics.serving().endpoints[0].url, "http://127.0.0.1:8428", "shadow: the old one serves");
    assert_eq!(metrics.mirror_target().unwrap().endpoints[0].url, "http://127.0.0.1:18428");

    let base = "[tenants.acme.metrics]\nendpoints = [\"http://127.0.0.1:8428\"]\n[tenants.acme.metrics.migration]\n";
    let refused = |rest: &str| errors(&format!("{base}{rest}"));
    assert_eq!(
        refused("to = { endpoints = [\"http://127.0.0.1:8428\"] }\nphase = \"mirror\"\n"),
        ["bad.toml:4:1: tenants.acme.metrics.migration.to: lists http://127.0.0.1:8428, which the deployment itself lists: a migration goes to another deployment"]
    );
    assert_eq!(
        refused("to = { endpoints = [\"http://127.0.0.1:18428\"] }\nphase = \"halfway\"\n"),
        ["bad.toml:5:9: tenants.acme.metrics.migration.phase: unknown variant `halfway`, expected one of `mirror`, `shadow`, `switched`, `done`"]
    );
    assert_eq!(
        refused("to = { endpoints = [\"http://127.0.0.1:18428\"] }\nphase = \"shadow\"\nshadow_sample = 1.5\n"),
        ["bad.toml:6:1: tenants.acme.metrics.migration.shadow_sample: must be between 0 and 1 (a share of reads), got 1.5"]
    );
    assert_eq!(
        refused("to = { endpoints = [\"http://127.0.0.1:18428\"] }\nphase = \"mirror\"\nmirror_queue = 0\n"),
        ["bad.toml:6:1: tenants.acme.metrics.migration.mirror_queue: must be greater than zero, got 0"]
    );
    let nested = refused("phase = \"mirror\"\n[tenants.acme.metrics.migration.to]\nendpoints = [\"http://127.0.0.1:18428\"]\n[tenants.acme.metrics.migration.to.migration]\nto = { endpoints = [\"http://127.0.0.1:28428\"] }\nphase = \"mirror\"\n");
    assert_eq!(nested.len(), 1, "{nested:?}");
    assert!(
        nested[0]
            .ends_with("tenants.acme.metrics.migration.to.migration: a migration's target does not migrate itself"),
        "{nested:?}"
    );
    let missing = refused("phase = \"mirror\"\n");
    assert!(missing[0].contains("missing field `to`"), "{missing:?}");
}
