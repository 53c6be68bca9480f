//! `dns = [...]` and `[dns]`: endpoints built from the gathered answers,
//! every bound refused at its key.

use super::*;
use crate::api::Signal;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

fn answered(addrs: &[&str]) -> Answer {
    Answer { addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(), error: None }
}

fn messages(text: &str, inputs: &Inputs) -> Vec<String> {
    compile("d.toml", text, inputs).unwrap_err().iter().map(|e| e.to_string()).collect()
}

#[test]
fn names_give_primaries_beside_the_fixed_endpoints_each_address_once() {
    let text = "[dns]\nnameservers = [\"127.0.0.1:5353\"]\n\n[tenants.acme.metrics]\n\
                endpoints = [\"http://127.0.0.2:8428\"]\ndns = [\"vm.svc:8428\", \"srv+_vm._tcp.svc\"]\n";
    let inputs = Inputs::default()
        .with_answer("vm.svc:8428", answered(&["127.0.0.2:8428", "127.0.0.3:8428"]))
        .with_answer("srv+_vm._tcp.svc", answered(&["127.0.0.4:9000", "127.0.0.3:8428"]));
    let config = compile("d.toml", text, &inputs).unwrap();
    let deployment = config.tenants["acme"].deployment(Signal::Metrics).unwrap();
    let urls: Vec<&str> = deployment.endpoints.iter().map(|e| e.url.as_str()).collect();
    assert_eq!(urls, ["http://127.0.0.2:8428", "http://127.0.0.3:8428", "http://127.0.0.4:9000"]);
    assert_eq!(deployment.dns_refresh, Duration::from_secs(10));
    assert_eq!(config.dns.nameservers, ["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]);
    assert_eq!(config.dns.answers.len(), 2);
    let every = Duration::from_secs(10);
    assert_eq!(config.dns_refresh(), BTreeMap::from([("srv+_vm._tcp.svc", every), ("vm.svc:8428", every)]));
}

#[test]
fn a_name_with_no_address_is_refused_and_a_failing_one_serves_its_kept_addresses() {
    let text = "[tenants.acme.logs]\ndns = [\"vl.svc:9428\"]\ndns_refresh = \"2s\"\n";
    let failing = |addrs: &[&str]| Answer { error: Some("connection refused".into()), ..answered(addrs) };
    let never = Inputs::default().with_answer("vl.svc:9428", failing(&[]));
    assert_eq!(
        messages(text, &never),
        ["d.toml:2:8: tenants.acme.logs.dns[0]: cannot resolve \"vl.svc:9428\": connection refused"]
    );
    let kept = Inputs::default().with_answer("vl.svc:9428", failing(&["127.0.0.5:9428"]));
    let config = compile("d.toml", text, &kept).unwrap();
    let deployment = config.tenants["acme"].deployment(Signal::Logs).unwrap();
    assert_eq!(deployment.endpoints[0].url, "http://127.0.0.5:9428");
    assert_eq!(config.dns_refresh(), BTreeMap::from([("vl.svc:9428", Duration::from_secs(2))]));
}

#[test]
fn every_dns_bound_is_refused_at_its_key() {
    let servers: Vec<String> = (0..=MAX_NAMESERVERS).map(|i| format!("\"127.0.0.1:{}\"", 5300 + i)).collect();
    let text = format!(
        "[dns]\nnameservers = [{}]\n\n[tenants.a.metrics]\nendpoints = [\"http://127.0.0.2:1\"]\n\
         dns = [\"vm.svc\", \"srv+vm.svc\"]\ndns_refresh = \"500ms\"\n\n\
         [tenants.b.metrics]\nendpoints = [\"http://127.0.0.2:2\"]\ndns_refresh = \"2h\"\n\n\
         [tenants.c.metrics]\naccount_id = 1\ninsert_endpoints = [\"http://127.0.0.2:3\"]\n\
         select_endpoints = [\"http://127.0.0.2:4\"]\ndns = [\"vm.svc:80\"]\n",
        servers.join(", ")
    );
    let inputs = Inputs::default().with_answer("vm.svc:80", answered(&["127.0.0.9:80"]));
    let errors = messages(&text, &inputs);
    let expected = [
        "dns.nameservers: at most 8 nameservers, got 9",
        "tenants.a.metrics.dns[0]: \"vm.svc\" is not a name to resolve; expected name:port or srv+_service._tcp.name",
        "tenants.a.metrics.dns[1]: \"srv+vm.svc\" is not an SRV name; expected srv+_service._tcp.name",
        "tenants.a.metrics.dns_refresh: must be at least 1s, got \"500ms\"",
        "tenants.b.metrics.dns_refresh: the deployment lists no dns names to refresh",
        "tenants.b.metrics.dns_refresh: must be at most 1h, got \"2h\"",
        "tenants.c.metrics.dns: a shared metrics deployment names insert_endpoints and select_endpoints; dns names are for endpoints",
    ];
    for message in expected {
        assert!(errors.iter().any(|e| e.ends_with(message)), "no {message:?} in {errors:#?}");
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn a_bad_nameserver_is_refused_at_its_index() {
    let errors = messages("[dns]\nnameservers = [\"127.0.0.1:53\", \"ns.example:53\"]\n", &Inputs::default());
    assert_eq!(
        errors,
        ["d.toml:2:32: dns.nameservers[1]: \"ns.example:53\" is not a nameserver address; expected ip:port such as 127.0.0.1:53"]
    );
}

#[test]
fn a_name_listed_twice_is_looked_up_at_the_shorter_refresh() {
    let text = "[tenants.a.metrics]\ndns = [\"vm.svc:80\"]\ndns_refresh = \"5s\"\n\n\
                [tenants.b.logs]\ndns = [\"vm.svc:80\"]\ndns_refresh = \"2s\"\n";
    let inputs = Inputs::default().with_answer("vm.svc:80", answered(&["127.0.0.2:80"]));
    let config = compile("d.toml", text, &inputs).unwrap();
    assert_eq!(config.dns_refresh(), BTreeMap::from([("vm.svc:80", Duration::from_secs(2))]));
}
