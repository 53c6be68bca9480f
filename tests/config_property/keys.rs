//! The keys of the file format the config property writes, with values
//! each accepted or refused and the verdict the router must reach on them,
//! and the settings of one generated config (verdicts that depend on
//! another key settled).

use proptest::prelude::*;

/// The table a generated key is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    Server,
    HealthCheck,
    Tenancy,
    Observability,
    Tenant,
    Metrics,
    Quotas,
    Features,
    /// A top-level table of its own (`[tiers]`): the key is the table.
    Root,
}

impl Table {
    /// Its key path, which is also its `[header]`.
    pub fn path(self) -> &'static str {
        match self {
            Table::Server => "server",
            Table::HealthCheck => "health_check",
            Table::Tenancy => "tenancy",
            Table::Observability => "observability",
            Table::Tenant => "tenants.acme",
            Table::Metrics => "tenants.acme.metrics",
            Table::Quotas => "tenants.acme.quotas",
            Table::Features => "tenants.acme.features",
            Table::Root => "",
        }
    }
}

/// What the router must make of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// Read, then refused by validation: an error at the key plus this
    /// suffix (`[0]`, `.timeout`).
    Refused(&'static str),
    /// Refused while the text is read into the file format (a wrong type,
    /// an unknown key, a number no integer holds): the only error, at the
    /// key plus this suffix.
    Unreadable(&'static str),
}

/// One generated `key = value` line; `{primary}` and `{backup}` in the value
/// stand for the stand-ins' URLs.
#[derive(Debug, Clone)]
pub struct Setting {
    pub table: Table,
    pub key: &'static str,
    pub value: String,
    pub verdict: Verdict,
}

impl Setting {
    /// The key path an error about it names.
    pub fn error_key(&self) -> String {
        let suffix = match self.verdict {
            Verdict::Valid => "",
            Verdict::Refused(suffix) | Verdict::Unreadable(suffix) => suffix,
        };
        match self.table {
            Table::Root => format!("{}{suffix}", self.key),
            table => format!("{}.{}{suffix}", table.path(), self.key),
        }
    }

    pub fn is(&self, table: Table, key: &str) -> bool {
        self.table == table && self.key == key
    }
}

/// A key of the file format: values it accepts, values it refuses.
struct Key {
    table: Table,
    name: &'static str,
    /// None for a key the file format does not have.
    valid: Option<BoxedStrategy<String>>,
    invalid: Vec<(String, Verdict)>,
}

fn fixed(values: &[&str]) -> Option<BoxedStrategy<String>> {
    Some(prop::sample::select(values.iter().map(|v| v.to_string()).collect::<Vec<_>>()).boxed())
}

fn refused(values: &[&str], verdict: Verdict) -> Vec<(String, Verdict)> {
    values.iter().map(|v| (v.to_string(), verdict)).collect()
}

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// Values the file format cannot read where it wants a string.
const NOT_STRINGS: &[&str] =
    &["30", "-1", "1.5", "true", "[\"1s\"]", "{ s = 1 }", "1979-05-27", "18446744073709551615", "1e400"];
/// Values the file format cannot read where it wants an integer.
const NOT_INTEGERS: &[&str] = &[
    "\"5\"",
    "1.0",
    "true",
    "[1]",
    "18446744073709551615",
    "-9223372036854775809",
    "99999999999999999999999",
    "1e400",
];
const NOT_BOOLS: &[&str] = &["\"true\"", "1", "\"yes\"", "[]"];
/// Strings that are no duration at all, or one far out of any bound.
const NOT_DURATIONS: &[&str] =
    &["\"500000000000y\"", "\"18446744073709551615s\"", "\"-5s\"", "\"\"", "\"forever\"", "\"30\"", "\"1 parsec\""];

/// A duration of at most an hour (`max` = "1h") or five minutes ("5m").
/// Accepted values stay at a second or more where a shorter one would make
/// the request through the router a race; `floor` lists the shorter ones
/// that are safe.
fn duration(table: Table, name: &'static str, max: &str, floor: &[&str]) -> Key {
    let (at_most, over): (&[&str], &[&str]) = match max {
        "1h" => (
            &["\"1s\"", "\"30s\"", "\"1m 30s\"", "\"1h\"", "\"3600s\"", "\"60m\""],
            &["\"1h 1ms\"", "\"3601s\"", "\"2h\""],
        ),
        "5m" => (&["\"1s\"", "\"2s\"", "\"5m\"", "\"300s\""], &["\"5m 1ms\"", "\"301s\"", "\"1h\""]),
        other => panic!("no bound {other}"),
    };
    let mut valid: Vec<&str> = at_most.to_vec();
    valid.extend(floor);
    let mut invalid = refused(over, Verdict::Refused(""));
    invalid.extend(refused(NOT_DURATIONS, Verdict::Refused("")));
    invalid.extend(refused(NOT_STRINGS, Verdict::Unreadable("")));
    if name != "grace_period" {
        invalid.extend(refused(&["\"0s\"", "\"0ms\"", "\"999us\""], Verdict::Refused("")));
    }
    Key { table, name, valid: fixed(&valid), invalid }
}

fn integer(table: Table, name: &'static str, valid: &[&str], out_of_range: &[&str]) -> Key {
    let mut invalid = refused(out_of_range, Verdict::Refused(""));
    invalid.extend(refused(&["9223372036854775807", "-9223372036854775808"], Verdict::Refused("")));
    invalid.extend(refused(NOT_INTEGERS, Verdict::Unreadable("")));
    Key { table, name, valid: fixed(valid), invalid }
}

fn boolean(table: Table, name: &'static str) -> Key {
    Key { table, name, valid: fixed(&["true", "false"]), invalid: refused(NOT_BOOLS, Verdict::Unreadable("")) }
}

fn text(table: Table, name: &'static str) -> Key {
    let named = ["\"\"", "\"ACME ✓ — 株式会社\"", "\"nul\\u0000byte\""].map(String::from).to_vec();
    let valid = prop_oneof![prop::sample::select(named), "\\PC{0,16}".prop_map(|s| toml_string(&s))];
    Key {
        table,
        name,
        valid: Some(valid.boxed()),
        invalid: refused(&["5", "{ a = 1 }", "[\"a\"]"], Verdict::Unreadable("")),
    }
}

fn choice(table: Table, name: &'static str, valid: &[&str], invalid: Vec<(String, Verdict)>) -> Key {
    Key { table, name, valid: fixed(valid), invalid }
}

/// A key the file format does not have: never accepted.
fn unknown(table: Table, name: &'static str, value: &str) -> Key {
    Key { table, name, valid: None, invalid: refused(&[value], Verdict::Unreadable("")) }
}

fn keys() -> Vec<Key> {
    use Table::*;
    let r = |values: &[&str], suffix| refused(values, Verdict::Refused(suffix));
    let u = |values: &[&str], suffix| refused(values, Verdict::Unreadable(suffix));
    let cat = |parts: Vec<Vec<(String, Verdict)>>| parts.concat();
    vec![
        duration(Server, "request_header_timeout", "1h", &[]),
        duration(Server, "idle_timeout", "1h", &[]),
        duration(Server, "body_timeout", "1h", &[]),
        duration(Server, "grace_period", "1h", &["\"0s\"", "\"1ms\""]),
        integer(Server, "threads", &["1", "2", "8", "256"], &["0", "-1", "257"]),
        boolean(Server, "work_stealing"),
        integer(Server, "max_connections", &["1000", "10000", "1000000"], &["0", "-1", "1000001"]),
        integer(Server, "max_connections_per_client", &["10", "1000"], &["0", "-5", "1000001"]),
        integer(Server, "max_request_headers", &["32", "100", "256"], &["0", "257"]),
        integer(Server, "max_request_header_bytes", &["16384", "65536", "1048576"], &["0", "1048577"]),
        boolean(Server, "http2"),
        unknown(Server, "idle_timeuot", "\"5s\""),
        duration(HealthCheck, "interval", "1h", &["\"10ms\""]),
        duration(HealthCheck, "timeout", "5m", &[]),
        choice(
            HealthCheck,
            "path",
            &["\"/health\"", "\"/\"", "\"/-/healthy\""],
            cat(vec![r(&["\"health\"", "\"\""], ""), u(&["[]", "1"], "")]),
        ),
        integer(HealthCheck, "healthy_threshold", &["1", "3", "1000"], &["0", "1001", "-1"]),
        integer(HealthCheck, "unhealthy_threshold", &["1", "3", "1000"], &["0", "1001"]),
        integer(HealthCheck, "passive_failures", &["0", "3", "1000"], &["-1", "1001"]),
        duration(HealthCheck, "ejection_cooldown", "1h", &["\"1ms\""]),
        unknown(HealthCheck, "intervl", "\"5s\""),
        choice(
            Tenancy,
            "header",
            &["\"X-Org-ID\"", "\"x-tenant\"", "\"X-Tenant-ID\""],
            cat(vec![r(&["\"bad header\"", "\"\"", "\"X-T\\u00e9nant\""], ""), u(&["1", "[\"X-Org\"]"], "")]),
        ),
        boolean(Tenancy, "require_credentials"),
        unknown(Tenancy, "headr", "\"X-Org\""),
        boolean(Observability, "metrics"),
        choice(
            Observability,
            "access_log",
            &["\"off\"", "\"json\"", "\"logfmt\""],
            u(&["\"xml\"", "\"JSON\"", "true"], ""),
        ),
        boolean(Observability, "access_log_query"),
        // Off ("0s"), or a second to an hour.
        choice(
            Observability,
            "usage_interval",
            &["\"0s\"", "\"1s\"", "\"60s\"", "\"1h\""],
            cat(vec![r(&["\"500ms\"", "\"1h 1s\"", "\"2h\""], ""), r(NOT_DURATIONS, ""), u(NOT_STRINGS, "")]),
        ),
        unknown(Observability, "tracing", "true"),
        text(Tenant, "name"),
        choice(
            Tenant,
            "admin_email",
            &["\"ops@acme.example\""],
            cat(vec![r(&["\"ops.acme.example\"", "\"\""], ""), u(&["1"], "")]),
        ),
        choice(
            Tenant,
            "status",
            &["\"active\"", "\"active\"", "\"suspended\""],
            u(&["\"paused\"", "\"Active\"", "1"], ""),
        ),
        unknown(Tenant, "colour", "\"blue\""),
        choice(
            Metrics,
            "endpoints",
            &["[\"{primary}\"]"],
            cat(vec![
                r(
                    &[
                        "[\"ftp://127.0.0.1:21\"]",
                        "[\"http://user:pw@127.0.0.1:9\"]",
                        "[\"{primary}/select\"]",
                        "[\"http://\"]",
                    ],
                    "[0]",
                ),
                r(&["[\"{primary}\", \"{primary}\"]"], "[1]"),
                r(&["[]"], ""),
                u(&["\"{primary}\"", "1"], ""),
                u(&["[1]"], "[0]"),
            ]),
        ),
        choice(
            Metrics,
            "backup_endpoints",
            &["[]", "[\"{backup}\"]"],
            cat(vec![r(&["[\"{primary}\"]", "[\"ftp://127.0.0.1:21\"]"], "[0]"), u(&["\"{backup}\""], "")]),
        ),
        duration(Metrics, "timeout", "1h", &[]),
        duration(Metrics, "connect_timeout", "5m", &[]),
        integer(Metrics, "max_attempts", &["1", "3", "16"], &["0", "17", "-3"]),
        boolean(Metrics, "retry_ingest"),
        // `true` needs an upstream that speaks HTTP/2 (tests/edge_h2.rs); the
        // stand-ins here speak HTTP/1.1 only.
        choice(Metrics, "http2", &["false"], refused(NOT_BOOLS, Verdict::Unreadable(""))),
        text(Metrics, "namespace"),
        choice(
            Metrics,
            "health_check",
            &["{ interval = \"5s\", unhealthy_threshold = 2 }", "{ path = \"/\" }", "{}"],
            cat(vec![
                r(&["{ timeout = \"0s\" }", "{ timeout = \"6m\" }"], ".timeout"),
                r(&["{ path = \"x\" }"], ".path"),
                r(&["{ healthy_threshold = 1001 }"], ".healthy_threshold"),
                u(&["{ interval = 5 }"], ".interval"),
                u(&["{ intervl = \"5s\" }"], ".intervl"),
                u(&["{ passive_failures = 18446744073709551615 }"], ".passive_failures"),
                u(&["\"5s\""], ""),
            ]),
        ),
        choice(
            Metrics,
            "quotas",
            &["{ max_body_bytes = 1048576 }", "{ requests_per_second = 100000, burst = 100000 }"],
            cat(vec![
                r(&["{ burst = 10 }"], ".burst"),
                r(&["{ max_concurrent_requests = 0 }"], ".max_concurrent_requests"),
                u(&["{ rps = 1 }"], ".rps"),
            ]),
        ),
        choice(
            Metrics,
            "upstream_auth",
            &["{ bearer_token_env = \"PATH\" }"],
            cat(vec![
                r(&["{ bearer_token_env = \"MIRADOR_PROPERTY_UNSET\" }", "{ username = \"u\" }"], ""),
                u(&["{ token = \"x\" }"], ".token"),
            ]),
        ),
        // A deployment of http:// endpoints has no TLS setting it could use.
        Key {
            table: Metrics,
            name: "tls",
            valid: None,
            invalid: cat(vec![
                r(&["{}"], ""),
                r(&["{ ca_file = \"/nonexistent/ca.pem\" }"], ".ca_file"),
                u(&["true"], ""),
            ]),
        },
        unknown(Metrics, "timeuot", "\"1s\""),
        integer(Quotas, "requests_per_second", &["1000", "10000000"], &["0", "-1", "10000001"]),
        integer(Quotas, "burst", &["100", "10000000"], &["0", "10000001"]),
        integer(Quotas, "max_concurrent_requests", &["1", "100", "1000000"], &["0", "1000001"]),
        integer(Quotas, "max_body_bytes", &["1", "1099511627776"], &["0", "1099511627777"]),
        unknown(Quotas, "rps", "1"),
        choice(
            Features,
            "signals",
            &["[\"metrics\"]", "[\"metrics\"]", "[]"],
            cat(vec![
                r(&["[\"logs\"]"], "[0]"),
                r(&["[\"metrics\", \"traces\"]"], "[1]"),
                u(&["[\"metric\"]"], "[0]"),
                u(&["\"metrics\""], ""),
            ]),
        ),
        boolean(Features, "read_only"),
        choice(
            Features,
            "admin_api",
            &["[\"snapshot\"]", "[\"force_flush\", \"metrics\"]", "[]"],
            u(&["[\"rm_rf\"]"], "[0]"),
        ),
        unknown(Features, "signal", "[\"metrics\"]"),
        // Tiers no generated tenant names: checked on their own.
        choice(
            Root,
            "tiers",
            &["gold = { quotas = { requests_per_second = 5 } }", "silver = { metrics = { timeout = \"5s\" } }"],
            cat(vec![
                r(&["gold = { quotas = { requests_per_second = 0 } }"], ".gold.quotas.requests_per_second"),
                r(&["gold = { metrics = { max_attempts = 99 } }"], ".gold.metrics.max_attempts"),
                u(&["gold = { quotas = { rps = 1 } }"], ".gold.quotas.rps"),
            ]),
        ),
        // etcd is reached only by tests/fleet_store.rs: here, a store missing its endpoints.
        choice(Root, "store", &["kind = \"file\""], r(&["kind = \"etcd\""], ".endpoints")),
        // Redis is reached only by tests/fleet_quota.rs: here, Redis without its url.
        choice(
            Root,
            "quotas",
            &["backend = \"local\""],
            cat(vec![
                r(&["backend = \"redis\""], ".url"),
                u(&["backend = \"memcached\""], ".backend"),
                u(&["replicas = 3"], ".replicas"),
            ]),
        ),
        // A name that resolves needs a DNS server (tests/dns.rs): here, names that are none.
        Key {
            table: Metrics,
            name: "dns",
            valid: None,
            invalid: cat(vec![
                r(&["[\"vm.svc\"]", "[\"10.0.0.1:80\"]", "[\"srv+vm.svc\"]", "[\"vm.svc:0\"]"], "[0]"),
                u(&["\"vm.svc:80\""], ""),
                u(&["[1]"], "[0]"),
            ]),
        },
        Key {
            table: Metrics,
            name: "dns_refresh",
            valid: None,
            invalid: refused(&["\"500ms\"", "\"2h\""], Verdict::Refused("")),
        },
        choice(
            Root,
            "dns",
            &["nameservers = [\"127.0.0.1:5353\"]", "nameservers = []"],
            cat(vec![
                r(&["nameservers = [\"ns.example:53\"]"], ".nameservers[0]"),
                u(&["nameservers = \"127.0.0.1:53\""], ".nameservers"),
                u(&["servers = []"], ".servers"),
            ]),
        ),
    ]
}

/// Up to eight keys, each once, with a value each: only accepted values, or
/// any.
pub fn settings(accepted_only: bool) -> impl Strategy<Value = Vec<Setting>> {
    let count = keys().len();
    prop::sample::subsequence((0..count).collect::<Vec<_>>(), 0..=8).prop_flat_map(move |chosen| {
        let mut all = keys();
        let picks: Vec<BoxedStrategy<Setting>> = chosen
            .into_iter()
            .rev()
            .map(|i| all.remove(i))
            .filter(|key| !accepted_only || key.valid.is_some())
            .map(|Key { table, name, valid, invalid }| {
                let invalid = prop::sample::select(invalid).prop_map(move |(value, verdict)| Setting {
                    table,
                    key: name,
                    value,
                    verdict,
                });
                let Some(valid) = valid else { return invalid.boxed() };
                let valid = valid.prop_map(move |value| Setting { table, key: name, value, verdict: Verdict::Valid });
                if accepted_only {
                    return valid.boxed();
                }
                prop_oneof![valid, invalid].boxed()
            })
            .collect();
        picks.prop_map(settle)
    })
}

/// Verdicts that depend on another key of the same config.
fn settle(mut settings: Vec<Setting>) -> Vec<Setting> {
    let value = |settings: &[Setting], table, key| {
        settings.iter().find(|s| s.is(table, key)).map(|s| (s.value.clone(), s.verdict))
    };
    let rate = value(&settings, Table::Quotas, "requests_per_second");
    let read_only = value(&settings, Table::Features, "read_only");
    let signals = value(&settings, Table::Features, "signals");
    let dns_listed = settings.iter().any(|s| s.is(Table::Metrics, "dns"));
    let endpoints = value(&settings, Table::Metrics, "endpoints");
    // Whether the deployment lists the primary, which a backup may not repeat.
    let primary_listed = match &endpoints {
        None => true,
        Some((value, _)) => ["[\"{primary}\"]", "[\"{primary}\", \"{primary}\"]"].contains(&value.as_str()),
    };
    for setting in &mut settings {
        let valid = setting.verdict == Verdict::Valid;
        if setting.is(Table::Quotas, "burst") && valid && !matches!(rate, Some((_, Verdict::Valid))) {
            setting.verdict = Verdict::Refused("");
        }
        let read_only = matches!(&read_only, Some((value, Verdict::Valid)) if value == "true");
        // An admin operation must run somewhere: not read-only, and on an
        // enabled signal (`signals = []` enables none).
        let no_signals = matches!(&signals, Some((value, Verdict::Valid)) if value == "[]");
        if setting.is(Table::Features, "admin_api") && valid && setting.value != "[]" && (read_only || no_signals) {
            setting.verdict = Verdict::Refused("");
        }
        // Names to resolve stand in for endpoints: `endpoints = []` beside `dns` is no error.
        if setting.is(Table::Metrics, "endpoints") && setting.value == "[]" && dns_listed {
            setting.verdict = Verdict::Valid;
        }
        if setting.is(Table::Metrics, "backup_endpoints") && setting.value == "[\"{primary}\"]" {
            setting.verdict = if primary_listed { Verdict::Refused("[0]") } else { Verdict::Valid };
        }
    }
    settings
}
