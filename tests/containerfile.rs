//! The Containerfile against the router's own facts: the ports it exposes
//! are the reachable listeners of the config it copies in, the health check
//! asks the admin listener's `/health`, the user is not root, the entrypoint
//! passes the path the config is copied to, and every `COPY --from` names a
//! stage. No image is built here (no registry for the base images): this is
//! what can be checked of the recipe without one.

mod common;

use common::facts::reachable_ports;
use mirador_router::config::Config;
use std::collections::BTreeSet;

const CONTAINERFILE: &str = include_str!("../Containerfile");

/// One instruction: its keyword (upper case) and the rest, continuation
/// lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                let (keyword, rest) = pending.split_once(char::is_whitespace).unwrap_or((&pending, ""));
                out.push((keyword.to_ascii_uppercase(), rest.trim().to_string()));
                pending.clear();
            }
        }
    }
    out
}

/// A JSON-array (exec form) argument list.
fn exec_form(rest: &str) -> Option<Vec<String>> {
    serde_json::from_str(rest).ok()
}

/// Everything in `containerfile` that disagrees with the router, one
/// sentence each; `config_of` gives the parsed config of a file the recipe
/// copies from the build context.
fn problems(containerfile: &str, config_of: impl Fn(&str) -> Config) -> Vec<String> {
    let mut problems = Vec::new();
    let mut stages: Vec<String> = Vec::new();
    // What the final stage holds: destination → source (and the stage it came from).
    let mut copied: Vec<(String, String, Option<String>)> = Vec::new();
    let (mut user, mut exposed, mut health, mut entrypoint) = (None, BTreeSet::new(), None, None);
    for (keyword, rest) in instructions(containerfile) {
        let words: Vec<&str> = rest.split_whitespace().collect();
        match keyword.as_str() {
            "FROM" => {
                match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => stages.push(name.to_string()),
                    _ => problems.push(format!("FROM {rest}: every stage is named (FROM image AS name)")),
                }
                copied.clear();
                (user, exposed, health, entrypoint) = (None, BTreeSet::new(), None, None);
            }
            "COPY" => {
                let from = words.iter().find_map(|w| w.strip_prefix("--from=")).map(str::to_string);
                if let Some(stage) = &from {
                    if !stages[..stages.len().saturating_sub(1)].contains(stage) {
                        problems.push(format!("COPY --from={stage}: no earlier stage is named {stage}"));
                    }
                }
                let paths: Vec<&str> = words.iter().copied().filter(|w| !w.starts_with("--")).collect();
                if let [source, destination] = paths.as_slice() {
                    copied.push((destination.to_string(), source.to_string(), from));
                }
            }
            "USER" => user = Some(rest.clone()),
            "EXPOSE" => exposed.extend(words.iter().map(|w| w.trim_end_matches("/tcp").to_string())),
            "HEALTHCHECK" => health = Some(rest.clone()),
            "ENTRYPOINT" => entrypoint = exec_form(&rest),
            _ => {}
        }
    }
    if stages.len() < 2 {
        problems.push(format!("{} stage(s): the build and the image are separate stages", stages.len()));
    }
    match user.as_deref().map(|u| u.split(':').next().unwrap_or(u)) {
        None => problems.push("no USER in the image: it would run as root".into()),
        Some("root" | "0") => problems.push("USER is root".into()),
        Some(_) => {}
    }
    let Some(entrypoint) = entrypoint else {
        problems.push("no ENTRYPOINT in exec form".into());
        return problems;
    };
    let config_path = entrypoint.windows(2).find(|w| w[0] == "--config").map(|w| w[1].clone());
    let Some(config_path) = config_path else {
        problems.push(format!("the ENTRYPOINT {entrypoint:?} passes no --config"));
        return problems;
    };
    let source_of = |destination: &str| copied.iter().find(|(d, _, _)| d == destination);
    match source_of(&entrypoint[0]) {
        Some((_, source, Some(_))) if source.ends_with("/target/release/mirador-router") => {}
        other => problems.push(format!("{} is not the release binary of a build stage: {other:?}", entrypoint[0])),
    }
    let config = match source_of(&config_path) {
        Some((_, source, None)) => config_of(source),
        other => {
            problems.push(format!("--config {config_path} is not copied from the build context: {other:?}"));
            return problems;
        }
    };
    let ports: BTreeSet<String> = reachable_ports(&config).iter().map(u16::to_string).collect();
    if exposed != ports {
        problems.push(format!("EXPOSE {exposed:?}, but the config's reachable listeners are {ports:?}"));
    }
    let url = health.as_deref().and_then(|h| h.split_once("CMD")).and_then(|(_, cmd)| exec_form(cmd.trim())).and_then(
        |cmd| cmd.into_iter().find(|arg| arg.starts_with("http://")).and_then(|url| url::Url::parse(&url).ok()),
    );
    match url {
        None => problems.push(format!("HEALTHCHECK {health:?} asks no http:// URL in exec form")),
        Some(url) => {
            let admin = config.admin.listen;
            let host_ok = url
                .host_str()
                .and_then(|h| h.parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback() || ip == admin.ip() || admin.ip().is_unspecified());
            if url.path() != "/health" || url.port() != Some(admin.port()) || !host_ok {
                problems.push(format!("HEALTHCHECK asks {url}, but the admin listener serves /health on {admin}"));
            }
        }
    }
    problems
}

/// A config file of the build context, parsed and validated by the router.
fn shipped_config(source: &str) -> Config {
    let path = format!("{}/{source}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    mirador_router::config::parse(source, &text).unwrap_or_else(|errors| panic!("{source}: {errors:?}"))
}

/// The shipped Containerfile agrees with the router and the config it copies in.
#[test]
fn the_containerfile_agrees_with_the_router() {
    let found = problems(CONTAINERFILE, shipped_config);
    assert!(found.is_empty(), "Containerfile: {found:#?}");
}

/// Each way the recipe can drift from the router is caught: a port, the
/// health path or port, root, another --config path, a stage that is not there.
#[test]
fn a_drifted_containerfile_is_caught() {
    let drifts = [
        ("EXPOSE 8080", "EXPOSE 8081", "EXPOSE"),
        ("/health\"]", "/healthz\"]", "HEALTHCHECK"),
        ("127.0.0.1:9900/health", "127.0.0.1:9901/health", "HEALTHCHECK"),
        ("USER 10001:10001", "USER root", "USER is root"),
        ("USER 10001:10001\n", "", "no USER"),
        ("\"--config\", \"/etc/mirador-router/mirador-router.toml\"", "\"--config\", \"/etc/router.toml\"", "--config"),
        ("--from=builder", "--from=build", "no earlier stage"),
    ];
    for (from, to, expected) in drifts {
        assert!(CONTAINERFILE.contains(from), "the Containerfile has {from:?}");
        let drifted = CONTAINERFILE.replacen(from, to, 1);
        let found = problems(&drifted, shipped_config);
        assert!(found.iter().any(|p| p.contains(expected)), "{from:?} → {to:?}: expected {expected:?} in {found:#?}");
    }
}

/// The build context leaves out build output, the venv and git history, and
/// keeps what the build reads.
#[test]
fn the_build_context_leaves_out_build_output() {
    let ignore = include_str!("../.dockerignore");
    let patterns: BTreeSet<&str> =
        ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for needed in ["target/", ".venv/", ".git/"] {
        assert!(patterns.contains(needed), ".dockerignore lacks {needed}");
    }
    for kept in ["src", "Cargo.toml", "Cargo.lock", "conf", "benches", "examples"] {
        assert!(
            !patterns.iter().any(|p| p.trim_end_matches('/') == kept || *p == "*"),
            ".dockerignore leaves out {kept}, which the build reads"
        );
    }
}
