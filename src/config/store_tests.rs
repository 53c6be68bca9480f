//! `[store]` settings and the tenants and tiers read from a store's keys.

use super::*;

fn layer(section: Section, id: &str, text: &str) -> Layer {
    let key = format!("/mirador/{}/{id}", section.key());
    Layer { name: format!("etcd:{key}"), section, id: id.into(), text: text.into() }
}

const ETCD: &str = "[store]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n";

#[test]
fn the_store_is_the_file_unless_etcd_is_named_and_etcd_settings_are_bounded() {
    let config = compile("a.toml", "", &Inputs::default()).unwrap();
    assert_eq!(config.store, Store::File);
    let config = compile("a.toml", ETCD, &Inputs::default()).unwrap();
    let Store::Etcd(etcd) = &config.store else { panic!("etcd expected") };
    assert_eq!((etcd.prefix.as_str(), etcd.timeout), ("/mirador/", std::time::Duration::from_secs(2)));
    assert_eq!(etcd.tenant_key("acme"), "/mirador/tenants/acme");

    let bad = "[store]\nkind = \"etcd\"\nendpoints = [\"https://e:2379\", \"e:2379\"]\nprefix = \"mirador\"\ntimeout = \"10m\"\nusername = \"root\"\n";
    let errors: Vec<String> =
        compile("b.toml", bad, &Inputs::default()).unwrap_err().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errors,
        [
            "b.toml:5:1: store.timeout: must be at most 5m, got \"10m\"",
            "b.toml:3:14: store.endpoints[0]: \"https://e:2379\" is not an etcd endpoint; expected http://host:port (TLS to etcd is not supported)",
            "b.toml:3:32: store.endpoints[1]: \"e:2379\" is not an etcd endpoint; expected http://host:port (TLS to etcd is not supported)",
            "b.toml:4:1: store.prefix: \"mirador\": must start and end with \"/\", be printable ASCII without spaces and at most 256 bytes",
            "b.toml:1:2: store: username needs password_env or password_file",
        ]
    );
    let stray = compile("c.toml", "[store]\nprefix = \"/x/\"\n", &Inputs::default()).unwrap_err();
    assert_eq!(stray[0].key, "store");
    assert!(stray[0].message.contains("set kind = \"etcd\""), "{}", stray[0]);
}

#[test]
fn tenants_and_tiers_from_layers_are_validated_with_the_file() {
    let layers = [
        layer(Section::Tiers, "gold", "[quotas]\nrequests_per_second = 50\n"),
        layer(Section::Tenants, "acme", "tier = \"gold\"\n[metrics]\nendpoints = [\"http://127.0.0.1:8428\"]\n"),
    ];
    let config = parse_layered("r.toml", ETCD, &layers).unwrap();
    assert_eq!(config.tenants["acme"].quotas.requests_per_second, Some(50));
}

#[test]
fn an_error_in_a_layer_is_placed_in_that_layer_and_tenants_in_the_file_are_refused() {
    let layers = [
        layer(Section::Tenants, "acme", "[metrics]\nendpoints = [\"http://127.0.0.1:8428\"]\ntimeout = \"never\"\n"),
        layer(Section::Tenants, "typo", "[metrics]\nendpoint = []\n"),
    ];
    let errors: Vec<String> =
        parse_layered("r.toml", ETCD, &layers).unwrap_err().iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("etcd:/mirador/tenants/typo:2:1: metrics.endpoint: unknown field `endpoint`"),
        "{errors:?}"
    );

    let errors = parse_layered("r.toml", ETCD, &layers[..1]).unwrap_err();
    let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors[0].file, "etcd:/mirador/tenants/acme", "{shown:?}");
    assert_eq!((errors[0].position, errors[0].key.as_str()), (Some((3, 1)), "tenants.acme.metrics.timeout"));

    let with_file_tenant = format!("{ETCD}[tenants.old.metrics]\nendpoints = [\"http://127.0.0.1:8428\"]\n");
    let errors = parse_layered("r.toml", &with_file_tenant, &[]).unwrap_err();
    assert_eq!(errors[0].key, "tenants");
    assert!(errors[0].message.contains("`mirador-router store import`"), "{}", errors[0]);
}

#[test]
fn quotas_are_local_unless_redis_is_named_and_redis_settings_are_bounded() {
    let config = compile("a.toml", "", &Inputs::default()).unwrap();
    assert_eq!(config.quotas, QuotaBackend::Local);
    let redis = "[quotas]\nbackend = \"redis\"\nurl = \"redis://:hunter2@127.0.0.1:6379/0\"\nexpected_replicas = 3\n";
    let config = compile("a.toml", redis, &Inputs::default()).unwrap();
    let QuotaBackend::Redis(settings) = &config.quotas else { panic!("redis expected") };
    assert_eq!(
        (settings.prefix.as_str(), settings.expected_replicas, settings.timeout),
        ("mirador:quota:", 3, std::time::Duration::from_millis(250))
    );
    assert!(!format!("{config:?}").contains("hunter2"), "the URL's password is never shown");

    let bad = "[quotas]\nbackend = \"redis\"\nurl = \"rediss://:hunter2@r:6379/x\"\nprefix = \"a b\"\nexpected_replicas = 0\ntimeout = \"1m\"\n";
    let errors: Vec<String> =
        compile("b.toml", bad, &Inputs::default()).unwrap_err().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errors,
        [
            "b.toml:6:1: quotas.timeout: must be at most 10s, got \"1m\"",
            "b.toml:3:1: quotas.url: is not a Redis URL; expected redis://[user:password@]host:port[/db] (TLS to Redis is not supported)",
            "b.toml:4:1: quotas.prefix: \"a b\": must be 1 to 256 bytes of printable ASCII without spaces",
            "b.toml:5:1: quotas.expected_replicas: 0: must be 1 to 1024",
        ]
    );
    assert!(!errors.concat().contains("hunter2"), "the URL's password is never shown");
    let missing = compile("c.toml", "[quotas]\nbackend = \"redis\"\n", &Inputs::default()).unwrap_err();
    assert_eq!(missing[0].key, "quotas.url", "{}", missing[0]);
    let stray = compile("d.toml", "[quotas]\nexpected_replicas = 3\n", &Inputs::default()).unwrap_err();
    assert_eq!(stray[0].key, "quotas");
    assert!(stray[0].message.contains("set backend = \"redis\""), "{}", stray[0]);
    let unknown = compile("e.toml", "[quotas]\nbackend = \"memcached\"\n", &Inputs::default()).unwrap_err();
    assert_eq!(unknown[0].key, "quotas.backend", "{}", unknown[0]);
}
