//! The config compiler: any bytes either compile to a config whose routing
//! table builds, or give errors that each name a place — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirador_router::config::{compile, text_of, Inputs};
use mirador_router::routing::{RoutingTable, Shared};

fuzz_target!(|data: &[u8]| {
    let text = match text_of("fuzz.toml", data.to_vec()) {
        Ok(text) => text,
        Err(error) => {
            assert!(error.position.is_some(), "a text that is not UTF-8 is located: {error}");
            return;
        }
    };
    match compile("fuzz.toml", &text, &Inputs::default()) {
        Ok(config) => {
            let table = RoutingTable::build(&config, &Shared::for_tests());
            assert_eq!(table.tenant_count(), config.tenants.len());
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for error in errors {
                assert!(!error.key.is_empty() || error.position.is_some(), "an error names a key or a place: {error}");
            }
        }
    }
});
