//! Identity: any tenant headers, `Authorization` headers and path, through
//! the proxy's own `resolve` against a table with credentials — a request is
//! refused or resolved to the tenant its credential proves (or, with no
//! credential, the one its header names), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirador_router::api::Listener;
use mirador_router::config::{compile, Inputs};
use mirador_router::proxy::{resolve, RequestCtx};
use mirador_router::routing::{RoutingTable, Shared};
use std::sync::OnceLock;

/// `acme` has credentials (digests of secrets no fuzzer finds), so it is
/// never resolved without one; `open` has none.
const CONFIG: &str = r#"
[tenants.acme.auth]
bearer_tokens_sha256 = ["c0ddb9cc35b27c1e82b7d2a0a5c1e3c57a1b14bf0e02dae6e7fbc0c5b5e6ea53"]
basic_auth = [{ username = "grafana", password_sha256 = "7a1b14bf0e02dae6e7fbc0c5b5e6ea53c0ddb9cc35b27c1e82b7d2a0a5c1e3c5" }]
[tenants.acme.metrics]
endpoints = ["http://127.0.0.1:1"]
[tenants.open.metrics]
endpoints = ["http://127.0.0.1:2"]
"#;

fn table() -> &'static RoutingTable {
    static TABLE: OnceLock<RoutingTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let config = compile("fuzz.toml", CONFIG, &Inputs::default()).expect("the fuzz config compiles");
        RoutingTable::build(&config, &Shared::for_tests())
    })
}

fuzz_target!(|input: (Vec<&[u8]>, Vec<&[u8]>, &str)| {
    let (tenants, authorizations, path) = input;
    let Ok(mut request) = pingora::http::RequestHeader::build("GET", path.as_bytes(), None) else { return };
    for value in tenants.iter().take(4) {
        let Ok(value) = http::HeaderValue::from_bytes(value) else { return };
        request.append_header("X-Tenant-ID", value).unwrap();
    }
    for value in authorizations.iter().take(4) {
        let Ok(value) = http::HeaderValue::from_bytes(value) else { return };
        request.append_header("Authorization", value).unwrap();
    }
    let mut ctx = RequestCtx::new();
    if resolve(table(), Listener::Unified, &request, None, &mut ctx).is_ok() {
        let pool = ctx.pool.as_ref().expect("a resolved request has a pool");
        assert!(tenants.len() <= 1 && authorizations.len() <= 1, "an ambiguous identity resolved");
        match authorizations.first() {
            // Only acme has credentials: a resolved credential is acme's.
            Some(_) => assert_eq!(&*pool.tenant, "acme"),
            None => {
                assert_eq!(&*pool.tenant, "open", "acme needs a credential");
                assert_eq!(tenants.first().copied(), Some(&b"open"[..]));
            }
        }
    }
});
