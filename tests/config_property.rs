//! The config contract as a property, against the real binary (issue 12,
//! "Hardening"): every config `--check` accepts starts, serves and reloads;
//! every config it refuses names the key path of each wrong value — or, for
//! text that does not parse (broken TOML, bytes that are not UTF-8), the line
//! and the byte — and the router refuses it the same way, at start and on
//! SIGHUP, while the running config keeps serving.
//!
//! A config is a valid base (tenant `acme` on a live stand-in) with generated
//! values for the keys of the file format: in range, at the bounds, out of
//! range, huge, negative, of the wrong type, unknown keys. Each value carries
//! its verdict, so the list of errors is checked exactly: every refused value
//! named at its key and line, and nothing else named.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// The table a generated key is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
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
    fn path(self) -> &'static str {
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
enum Verdict {
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
struct Setting {
    table: Table,
    key: &'static str,
    value: String,
    verdict: Verdict,
}

impl Setting {
    /// The key path an error about it names.
    fn error_key(&self) -> String {
        let suffix = match self.verdict {
            Verdict::Valid => "",
            Verdict::Refused(suffix) | Verdict::Unreadable(suffix) => suffix,
        };
        match self.table {
            Table::Root => format!("{}{suffix}", self.key),
            table => format!("{}.{}{suffix}", table.path(), self.key),
        }
    }

    fn is(&self, table: Table, key: &str) -> bool {
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
        unknown(Root, "tiers", "gold = { quotas = {} }"),
        unknown(Root, "store", "kind = \"etcd\""),
    ]
}

/// Up to eight keys, each once, with a value each: only accepted values, or
/// any.
fn settings(accepted_only: bool) -> impl Strategy<Value = Vec<Setting>> {
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
        if setting.is(Table::Features, "admin_api") && valid && setting.value != "[]" && read_only {
            setting.verdict = Verdict::Refused("");
        }
        if setting.is(Table::Metrics, "backup_endpoints") && setting.value == "[\"{primary}\"]" {
            setting.verdict = if primary_listed { Verdict::Refused("[0]") } else { Verdict::Valid };
        }
    }
    settings
}

/// Text that is not a config: broken TOML, or bytes that are not UTF-8.
#[derive(Debug, Clone)]
enum Corruption {
    /// A line of broken TOML inserted before line `at`.
    Garbage { at: Index, line: &'static str },
    /// `threads` a second time in `[server]`.
    DuplicateKey,
    /// Bytes that are not UTF-8, inserted at a character boundary.
    NotUtf8 { at: Index, bytes: &'static [u8] },
}

fn corruption() -> impl Strategy<Value = Corruption> {
    let garbage = prop::sample::select(vec!["= 1", "[tenants.", "key", "x = 1 2", "y = \"abc", "z = 'abc", "[a b]"]);
    let bytes: Vec<&'static [u8]> =
        vec![&[0xff], &[0xfe, 0xff], &[0xc3], &[0x80], &[0xed, 0xa0, 0x80], &[0xf4, 0x90, 0x80, 0x80], &[0xc0, 0xaf]];
    prop_oneof![
        (any::<Index>(), garbage).prop_map(|(at, line)| Corruption::Garbage { at, line }),
        Just(Corruption::DuplicateKey),
        (any::<Index>(), prop::sample::select(bytes)).prop_map(|(at, bytes)| Corruption::NotUtf8 { at, bytes }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    settings: Vec<Setting>,
    corruption: Option<Corruption>,
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        3 => settings(true).prop_map(|settings| Case { settings, corruption: None }),
        3 => settings(false).prop_map(|settings| Case { settings, corruption: None }),
        1 => (settings(true), corruption()).prop_map(|(settings, c)| Case { settings, corruption: Some(c) }),
    ]
}

/// What `--check` must answer for a config.
#[derive(Debug, PartialEq)]
enum Expect {
    Accepted,
    /// Refused by validation: exactly these errors, by key path and line.
    Refused(BTreeSet<(String, usize)>),
    /// One error, at one of these key paths and lines.
    Unreadable(Vec<(String, usize)>),
    /// One error with no key, at this line; for bytes that are not UTF-8,
    /// with this message.
    Unparsable {
        line: usize,
        message: Option<String>,
    },
}

/// The stand-ins a config's deployment points at.
struct Urls<'a> {
    primary: &'a str,
    backup: &'a str,
}

/// The config file of `case` on the router's `base` text, and what the
/// router must make of it.
fn lay_out(base: &str, case: &Case, urls: &Urls) -> (Vec<u8>, Expect) {
    let render = |s: &Setting| {
        let value = s.value.replace("{primary}", urls.primary).replace("{backup}", urls.backup);
        match s.table {
            Table::Root => format!("[{}]\n{value}", s.key),
            _ => format!("{} = {value}", s.key),
        }
    };
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    let server = lines.iter().position(|l| l == "[server]").expect("a [server] table");
    let mut by_table: BTreeMap<Table, Vec<&Setting>> = BTreeMap::new();
    for setting in &case.settings {
        by_table.entry(setting.table).or_default().push(setting);
    }
    for setting in by_table.remove(&Table::Server).unwrap_or_default() {
        let end = server + lines[server..].iter().position(String::is_empty).unwrap_or(lines.len() - server);
        let prefix = format!("{} = ", setting.key);
        if let Some(i) = (server..end).find(|&i| lines[i].starts_with(&prefix)) {
            lines.remove(i);
        }
        lines.insert(server + 1, render(setting));
    }
    by_table.entry(Table::Metrics).or_default();
    for (table, settings) in &by_table {
        lines.push(String::new());
        if *table != Table::Root {
            lines.push(format!("[{}]", table.path()));
        }
        if *table == Table::Metrics && !settings.iter().any(|s| s.key == "endpoints") {
            lines.push(format!("endpoints = [\"{}\"]", urls.primary));
        }
        lines.extend(settings.iter().map(|s| render(s)));
    }
    let text = lines.join("\n") + "\n";
    let line_of = |s: &Setting| -> usize {
        let mut header = "";
        let wanted = match s.table {
            Table::Root => format!("[{}]", s.key),
            _ => format!("{} = ", s.key),
        };
        let found = text.lines().enumerate().find(|(_, line)| {
            if line.starts_with('[') {
                header = line;
            }
            match s.table {
                Table::Root => *line == wanted,
                table => header == format!("[{}]", table.path()) && line.starts_with(&wanted),
            }
        });
        found.expect("every setting is in the text").0 + 1
    };
    match &case.corruption {
        Some(corruption) => corrupt(&text, corruption),
        None => {
            let at = |s: &&Setting| (s.error_key(), line_of(s));
            let unreadable: Vec<_> =
                case.settings.iter().filter(|s| matches!(s.verdict, Verdict::Unreadable(_))).map(|s| at(&s)).collect();
            let refused: BTreeSet<_> =
                case.settings.iter().filter(|s| matches!(s.verdict, Verdict::Refused(_))).map(|s| at(&s)).collect();
            let expect = match () {
                _ if !unreadable.is_empty() => Expect::Unreadable(unreadable),
                _ if !refused.is_empty() => Expect::Refused(refused),
                _ => Expect::Accepted,
            };
            (text.into_bytes(), expect)
        }
    }
}

fn corrupt(text: &str, corruption: &Corruption) -> (Vec<u8>, Expect) {
    let mut lines: Vec<&str> = text.lines().collect();
    match corruption {
        Corruption::Garbage { at, line } => {
            let i = at.index(lines.len() + 1);
            lines.insert(i, line);
            (format!("{}\n", lines.join("\n")).into_bytes(), Expect::Unparsable { line: i + 1, message: None })
        }
        Corruption::DuplicateKey => {
            let i = lines.iter().position(|l| l.starts_with("threads = ")).expect("threads in [server]") + 1;
            lines.insert(i, "threads = 3");
            (format!("{}\n", lines.join("\n")).into_bytes(), Expect::Unparsable { line: i + 1, message: None })
        }
        Corruption::NotUtf8 { at, bytes } => {
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
            let offset = boundaries[at.index(boundaries.len())];
            let mut out = text.as_bytes()[..offset].to_vec();
            out.extend_from_slice(bytes);
            out.extend_from_slice(&text.as_bytes()[offset..]);
            let line = text[..offset].matches('\n').count() + 1;
            let message = format!("the file is not UTF-8 text (byte {offset})");
            (out, Expect::Unparsable { line, message: Some(message) })
        }
    }
}

/// One error line of `--check`: `file:line:column: key: message`, the
/// place and the key each when the router knows them.
#[derive(Debug)]
struct Reported {
    line: Option<usize>,
    key: String,
    message: String,
}

fn is_key_path(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.[]\"".contains(&b))
}

/// Runs `--check` on the file; the error lines (none when accepted) and
/// each as parsed. Fails on any line that is not an error in that shape.
fn check(path: &Path, expect: &Expect) -> Result<Vec<String>, TestCaseError> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirador-router"))
        .arg("--check")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let file = path.display().to_string();
    let shown = format!("expected {expect:?}; stdout:\n{stdout}stderr:\n{stderr}");
    if *expect == Expect::Accepted {
        prop_assert_eq!(out.status.code(), Some(0), "{}", shown);
        prop_assert_eq!(stdout.trim(), format!("{file}: ok (1 tenants)"));
        return Ok(Vec::new());
    }
    prop_assert_eq!(out.status.code(), Some(1), "{}", shown);
    let mut lines: Vec<String> = stderr.lines().map(str::to_string).collect();
    let summary = lines.pop().unwrap_or_default();
    prop_assert_eq!(&summary, &format!("{file}: {} error(s); nothing started", lines.len()), "{}", shown);
    let mut reported = Vec::new();
    for line in &lines {
        let rest = line.strip_prefix(&file).unwrap_or_else(|| panic!("an error not of {file}: {line}"));
        let (place, body) = match rest.strip_prefix(':').and_then(|r| r.split_once(": ")) {
            Some((place, body)) if place.split(':').all(|n| n.parse::<usize>().is_ok()) => (Some(place), body),
            _ => (None, rest.strip_prefix(": ").unwrap_or(rest)),
        };
        let line_no = place.and_then(|p| p.split(':').next()).and_then(|n| n.parse().ok());
        let (key, message) = match body.split_once(": ") {
            Some((key, message)) if is_key_path(key) => (key.to_string(), message.to_string()),
            _ => (String::new(), body.to_string()),
        };
        reported.push(Reported { line: line_no, key, message });
    }
    match expect {
        Expect::Accepted => unreachable!(),
        Expect::Refused(wanted) => {
            let got: BTreeSet<(String, usize)> =
                reported.iter().map(|r| (r.key.clone(), r.line.unwrap_or(0))).collect();
            prop_assert_eq!(&got, wanted, "{}", shown);
        }
        Expect::Unreadable(any_of) => {
            prop_assert_eq!(reported.len(), 1, "{}", shown);
            let got = (reported[0].key.clone(), reported[0].line.unwrap_or(0));
            prop_assert!(any_of.contains(&got), "{:?} is none of the unreadable values; {}", got, shown);
        }
        Expect::Unparsable { line, message } => {
            prop_assert_eq!(reported.len(), 1, "{}", shown);
            prop_assert_eq!(reported[0].line, Some(*line), "{}", shown);
            prop_assert_eq!(&reported[0].key, "", "{}", shown);
            if let Some(message) = message {
                prop_assert_eq!(&reported[0].message, message, "{}", shown);
            }
        }
    }
    Ok(lines)
}

/// How the router must answer a query of `acme` under a config.
struct Serving {
    header: String,
    /// 200 from the deployment's stand-in, or the router's own refusal.
    status: u16,
}

fn serving(settings: &[Setting]) -> Serving {
    let valid = |table, key| settings.iter().find(|s| s.is(table, key) && s.verdict == Verdict::Valid);
    let header = valid(Table::Tenancy, "header").map_or("X-Tenant-ID".to_string(), |s| {
        serde_json::from_str::<String>(&s.value).expect("a header name is a plain string")
    });
    let status = if valid(Table::Tenancy, "require_credentials").is_some_and(|s| s.value == "true") {
        401
    } else if valid(Table::Tenant, "status").is_some_and(|s| s.value == "\"suspended\"")
        || valid(Table::Features, "signals").is_some_and(|s| s.value == "[]")
    {
        403
    } else {
        200
    };
    Serving { header, status }
}

/// The router answers a query of `acme` as `serving` says, from `upstream`.
async fn serves(router: &RouterProcess, serving: &Serving, upstream: &str) -> Result<(), TestCaseError> {
    let response = client()
        .get(format!("{}/api/v1/query", router.base("unified")))
        .header(serving.header.as_str(), "acme")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let served_by = response.headers().get("x-upstream").map(|v| v.to_str().unwrap().to_string());
    prop_assert_eq!(status, serving.status, "served by {:?}; log:\n{}", served_by, router.log());
    let expected = (serving.status == 200).then(|| upstream.to_string());
    prop_assert_eq!(served_by, expected);
    Ok(())
}

/// The tenant API shows the deployment in force.
async fn in_force(router: &RouterProcess, url: &str) -> Result<(), TestCaseError> {
    let (status, tenant) = router.admin("GET", "/api/v1/tenants/acme", None).await;
    prop_assert_eq!(status, 200, "{}", tenant);
    prop_assert_eq!(&tenant["metrics"]["endpoints"], &json!([url]), "{}", tenant);
    Ok(())
}

const CASES: u32 = 40;

#[test]
fn every_config_check_accepts_serves_and_reloads_and_every_refusal_names_its_place() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (one, two, backup) = runtime.block_on(async {
        (Upstream::start("one").await, Upstream::start("two").await, Upstream::start("backup").await)
    });
    let (first_urls, second_urls) =
        (Urls { primary: &one.url(), backup: &backup.url() }, Urls { primary: &two.url(), backup: &backup.url() });
    let mut runner = TestRunner::new(RunnerConfig { cases: CASES, max_shrink_iters: 64, ..RunnerConfig::default() });
    let (accepted, reloaded) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner
        .run(&(case(), case()), |(first, second)| {
            runtime.block_on(async {
                let (primary, backup) = (first_urls.primary.to_string(), first_urls.backup.to_string());
                let laid_out = first.clone();
                let mut router = RouterProcess::builder()
                    .no_wait()
                    .config_at(move |dir, text| {
                        let path = dir.join("mirador-router.toml");
                        let urls = Urls { primary: &primary, backup: &backup };
                        std::fs::write(&path, lay_out(text, &laid_out, &urls).0).unwrap();
                        path
                    })
                    .start();
                let base = router.text_with_tenants("");
                let (bytes, expect) = lay_out(&base, &first, &first_urls);
                prop_assert_eq!(std::fs::read(&router.config_path).unwrap(), bytes.clone());
                let errors = check(&router.config_path, &expect)?;
                if expect != Expect::Accepted {
                    // The router refuses to start on it, with the same errors.
                    let status = router.wait_exit(Duration::from_secs(20));
                    prop_assert_eq!(status.code(), Some(1));
                    let log = router.log();
                    for error in &errors {
                        prop_assert!(log.contains(error.as_str()), "{} not in the log:\n{}", error, log);
                    }
                    return Ok(());
                }
                accepted.set(accepted.get() + 1);
                router.wait_listening();
                serves(&router, &serving(&first.settings), "one").await?;
                in_force(&router, &one.url()).await?;

                // A second config, on SIGHUP: in force when accepted, else
                // refused with the errors of `--check` and the first serves on.
                let (bytes, expect) = lay_out(&base, &second, &second_urls);
                std::fs::write(&router.config_path, bytes).unwrap();
                let errors = check(&router.config_path, &expect)?;
                router.signal("HUP");
                let (status, last) = if expect == Expect::Accepted {
                    reloaded.set(reloaded.get() + 1);
                    router.wait_for_log("config reloaded", 1);
                    serves(&router, &serving(&second.settings), "two").await?;
                    in_force(&router, &two.url()).await?;
                    router.admin("GET", "/api/v1/reload", None).await
                } else {
                    router.wait_for_log("config reload refused", 1);
                    serves(&router, &serving(&first.settings), "one").await?;
                    in_force(&router, &one.url()).await?;
                    router.admin("GET", "/api/v1/reload", None).await
                };
                prop_assert_eq!(status, 200);
                prop_assert_eq!(&last["last"]["trigger"], "sighup");
                prop_assert_eq!(&last["last"]["ok"], &json!(errors.is_empty()), "{}", last);
                prop_assert_eq!(&last["last"]["errors"], &json!(errors), "{}", last);
                prop_assert!(router.exited().is_none(), "the router ended; log:\n{}", router.log());
                Ok(())
            })
        })
        .unwrap();
    let (accepted, reloaded) = (accepted.get(), reloaded.get());
    eprintln!("{CASES} configs: {accepted} accepted and started, {reloaded} second configs reloaded");
    assert!(accepted > 0, "no generated config was accepted");
}
