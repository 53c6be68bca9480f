//! Path canonicalisation and classification: any path is refused or
//! classified without a panic, and what is forwarded reads back as the
//! very endpoint that was classified (and, on a shared cluster, names the
//! router's tenant id).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirador_router::api::{classify, cluster_form, names_a_tenant, Listener, Signal, VictoriaTenant};

fuzz_target!(|input: (u8, &str)| {
    let (pick, path) = input;
    let listener = match pick % 4 {
        0 => Listener::Unified,
        1 => Listener::DropIn(Signal::Metrics),
        2 => Listener::DropIn(Signal::Logs),
        _ => Listener::DropIn(Signal::Traces),
    };
    let method = if pick & 0x10 == 0 { http::Method::GET } else { http::Method::POST };
    let Ok(classified) = classify(listener, &method, path) else { return };
    let forwarded = classified.path.encoded();
    let again = classify(listener, &method, &forwarded).expect("the forwarded path classifies");
    assert_eq!(again.endpoint, classified.endpoint, "{path} forwarded as {forwarded}");
    assert_eq!(again.path.encoded(), forwarded, "canonical form is a fixed point");
    // On a shared cluster the path forwarded names the tenant the router chose, once.
    if let Some(form) = cluster_form(classified.endpoint) {
        let id = VictoriaTenant { account: u32::from(pick), project: 0 };
        let rewritten = form.path(&classified.path.encoded_route_path(), id);
        assert!(rewritten.starts_with(&format!("/{}/{id}/", form.service.as_str())), "{rewritten}");
        assert!(names_a_tenant(&rewritten), "{rewritten}");
    }
});
