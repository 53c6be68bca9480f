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

#[path = "config_property/keys.rs"]
mod keys;

use keys::{settings, Setting, Table, Verdict};

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
        let line = found.expect("every setting is in the text").0 + 1;
        // A root table's value is the line under its header: an error inside
        // it is there (`[tiers]` / `gold = { … }`); a key it lacks is missed
        // at the header (`[store]` of kind "etcd" with no `endpoints`).
        let in_value = |suffix: &str| {
            let key = suffix.trim_start_matches('.').split(['.', '[']).next().unwrap_or_default();
            !key.is_empty() && s.value.contains(key)
        };
        let inside = matches!(s.verdict, Verdict::Refused(suffix) | Verdict::Unreadable(suffix) if in_value(suffix));
        line + usize::from(s.table == Table::Root && inside)
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
