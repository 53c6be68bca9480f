//! Classification of a spelling equals classification of what
//! VictoriaMetrics executes for it, as a property over generated spellings
//! of every endpoint of the surface: case, percent-escapes, doubled
//! slashes, dot segments and aliases.
//!
//! The model of VictoriaMetrics is its routing as read from its handlers
//! (and checked against the binary in tests/api_surface.rs): Go decodes the
//! path (`%2F` included; an invalid escape is 400), `vminsert`/`vmselect`
//! replace `//` with `/` once, `vmselect` strips one `/prometheus/` or
//! `/graphite/`, `vmstorage` and the built-in routes match the decoded path
//! as it is. Whatever endpoint the model runs for a spelling, the router
//! classifies the spelling as that endpoint, or refuses it (400): never as
//! another endpoint, another class, or not at all.

use mirador_router::api::{classify, lookup, Listener, Signal, Unserved, SURFACE};
use proptest::prelude::*;

/// Go's `url.PathUnescape` of a path: `None` for an invalid escape.
fn go_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The paths VictoriaMetrics may route a raw path as, by handler: the
/// decoded path (built-ins, vmstorage), with `//` replaced once (vminsert),
/// and then without one alias (vmselect).
fn victoria_metrics_reads(raw: &str) -> Vec<String> {
    let Some(decoded) = go_decode(raw) else { return Vec::new() };
    let collapsed = decoded.replace("//", "/");
    let mut reads = vec![decoded, collapsed.clone()];
    for alias in ["/prometheus/", "/graphite/"] {
        if let Some(rest) = collapsed.strip_prefix(alias) {
            reads.push(format!("/{rest}"));
        }
    }
    reads
}

/// A spelling of `path`: each byte maybe percent-encoded (either case),
/// each slash maybe doubled, maybe an alias, maybe a dot segment, maybe a
/// letter upper-cased.
fn spelling(path: String) -> impl Strategy<Value = String> {
    let n = path.len();
    (
        prop::collection::vec(0u8..8, n),
        prop::sample::select(vec!["", "", "/prometheus", "/graphite", "/%70rometheus", "//prometheus"]),
        prop::option::of(0..n.max(1)),
        prop::option::of(0..n.max(1)),
    )
        .prop_map(move |(choices, alias, dot_at, upper_at)| {
            let mut out = alias.to_string();
            for (i, (byte, choice)) in path.bytes().zip(choices).enumerate() {
                let byte = if upper_at == Some(i) { byte.to_ascii_uppercase() } else { byte };
                match choice {
                    0 => out.push_str(&format!("%{byte:02X}")),
                    1 => out.push_str(&format!("%{byte:02x}")),
                    2 if byte == b'/' => out.push_str("//"),
                    3 if byte == b'/' && dot_at == Some(i) => out.push_str("/./"),
                    _ => out.push(byte as char),
                }
            }
            out
        })
}

fn paths() -> impl Strategy<Value = String> {
    let concrete: Vec<String> =
        SURFACE.iter().filter(|e| e.signal == Signal::Metrics).map(|e| e.pattern.replace('*', "x")).collect();
    prop::sample::select(concrete).prop_flat_map(spelling)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn the_router_classifies_a_spelling_as_the_endpoint_victoria_metrics_runs(raw in paths()) {
        let run: Vec<_> = victoria_metrics_reads(&raw)
            .iter()
            .filter_map(|path| lookup(path, Some(Signal::Metrics), false))
            .collect();
        for listener in [Listener::Unified, Listener::DropIn(Signal::Metrics)] {
            match classify(listener, &http::Method::POST, &raw) {
                Ok(classified) => {
                    // What the router forwards is read by VictoriaMetrics as the endpoint classified.
                    let forwarded = classified.path.encoded();
                    let executed: Vec<_> = victoria_metrics_reads(&forwarded)
                        .iter()
                        .filter_map(|path| lookup(path, Some(Signal::Metrics), false))
                        .collect();
                    prop_assert!(executed.iter().all(|e| *e == classified.endpoint),
                        "{raw}: forwarded {forwarded} runs {executed:?}, classified {:?}", classified.endpoint);
                    prop_assert!(run.iter().all(|e| *e == classified.endpoint),
                        "{raw}: VictoriaMetrics runs {run:?}, the router classified {:?}", classified.endpoint);
                }
                // Refused (400, 403): nothing is forwarded.
                Err(Unserved::BadPath(_) | Unserved::TenantInPath) => {}
                Err(Unserved::Method(endpoint)) => {
                    prop_assert!(run.iter().all(|e| *e == endpoint), "{raw}: {run:?} vs {endpoint:?}");
                }
                Err(Unserved::NotServed) => {
                    prop_assert!(run.is_empty(), "{raw}: VictoriaMetrics runs {run:?}, the router serves nothing");
                }
            }
        }
    }
}
