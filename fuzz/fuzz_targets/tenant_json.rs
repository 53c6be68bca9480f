//! Tenant JSON → TOML mutation: any body is refused with a reason or becomes
//! a `[tenants.<id>]` table that the config compiler then judges — never a
//! panic, and an accepted body compiles to exactly the tenant it names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirador_router::admin::tenants;
use mirador_router::config::{compile, Inputs};

fuzz_target!(|data: &[u8]| {
    let Ok((id, item)) = tenants::from_json(data, None) else { return };
    let mut doc: toml_edit::DocumentMut = "[server]\nthreads = 1\n".parse().unwrap();
    if tenants::create(&mut doc, &id, item).is_err() {
        return;
    }
    let text = doc.to_string();
    if let Ok(config) = compile("fuzz.toml", &text, &Inputs::default()) {
        assert!(config.tenants.len() <= 1, "one body, one tenant: {text}");
        if let Some(tenant) = config.tenants.values().next() {
            assert_eq!(tenant.id, id);
        }
    }
});
