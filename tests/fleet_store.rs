//! Tenants in etcd (`[store] kind = "etcd"`): three real routers on one
//! real etcd, behind a real HAProxy. A change made through any replica's
//! admin API routes on all three; two concurrent changes of one tenant: one
//! wins, the other is told (409), nothing is lost; etcd restarted: the
//! watches resume, also for a replica that was away while the revisions it
//! missed were compacted; a bad value is refused everywhere with the old
//! table serving; `store import|export`.

mod common;

use common::etcd::Etcd;
use common::haproxy::Haproxy;
use common::{served_by, wait_until_async, RouterProcess, Upstream};
use std::time::{Duration, Instant};

/// The `[store]` of a router with its tenants in `etcd`, under `/fleet/`.
fn store_toml(etcd: &Etcd) -> String {
    format!("[store]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"/fleet/\"\n", etcd.url())
}

/// Routers with tenants in `etcd`, under `/fleet/`.
fn replicas(etcd: &Etcd, n: usize) -> Vec<RouterProcess> {
    (0..n).map(|_| RouterProcess::builder().tenants(store_toml(etcd)).start()).collect()
}

/// A tenant's etcd value: its metrics on `upstream`.
fn tenant_toml(upstream: &Upstream) -> String {
    format!("[metrics]\nendpoints = [\"{}\"]\n", upstream.url())
}

fn tenant_json(id: &str, upstream: &Upstream) -> String {
    format!(r#"{{"id": "{id}", "metrics": {{"endpoints": ["{}"]}}}}"#, upstream.url())
}

/// Waits until every replica routes `tenant` to `upstream`; how long since `since`.
async fn routed_everywhere(replicas: &[RouterProcess], tenant: &str, upstream: &str, since: Instant) -> Duration {
    for router in replicas {
        let base = router.base("unified");
        wait_until_async(format!("{tenant} routed to {upstream} by {base}"), Duration::from_secs(10), || async {
            served_by(&base, tenant).await.as_deref() == Ok(upstream)
        })
        .await;
    }
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_on_one_replica_routes_on_every_replica_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let routers = replicas(&etcd, 3);
    let unified: Vec<_> = routers.iter().map(|r| r.unified).collect();
    let front = Haproxy::start(dir.path(), &unified).await;
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);

    let since = Instant::now();
    let (status, body) = routers[0].admin("POST", "/api/v1/tenants", Some(&tenant_json("acme", &a))).await;
    assert_eq!(status, 201, "{body}");
    let mut took = vec![routed_everywhere(&routers, "acme", "a", since).await];
    assert!(etcd.get("/fleet/tenants/acme").unwrap().contains(&a.url()), "the tenant is one key in etcd");
    for change in 1..20 {
        let (via, to) = (&routers[change % 3], if change % 2 == 1 { &b } else { &a });
        let since = Instant::now();
        let (status, body) = via.admin("PUT", "/api/v1/tenants/acme", Some(&tenant_json("acme", to))).await;
        assert_eq!(status, 200, "change {change}: {body}");
        let expected = if change % 2 == 1 { "b" } else { "a" };
        took.push(routed_everywhere(&routers, "acme", expected, since).await);
        // Through the balancer, every replica in turn answers from the new table.
        for read in 0..6 {
            assert_eq!(served_by(&front.base(), "acme").await.as_deref(), Ok(expected), "change {change}, read {read}");
        }
    }
    took.sort();
    let (p50, max) = (took[took.len() / 2], took[took.len() - 1]);
    eprintln!("a change through one replica's admin API routed on all 3: p50 {p50:?}, max {max:?} over 20 changes");
    assert!(max < Duration::from_secs(2), "a change took {max:?} to route everywhere");
    for router in &routers {
        let (_, listed) = router.admin_get("/api/v1/tenants").await;
        assert_eq!(listed["tenants"][0]["id"], "acme", "{listed}");
        assert!(!router.log().contains("panicked"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_changes_of_one_tenant_one_wins_and_the_other_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let routers = replicas(&etcd, 3);
    let (a, b, c) = (Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await);
    let (status, _) = routers[0].admin("POST", "/api/v1/tenants", Some(&tenant_json("acme", &c))).await;
    assert_eq!(status, 201);
    routed_everywhere(&routers, "acme", "c", Instant::now()).await;

    let (mut conflicts, mut trials) = (0, 0);
    while conflicts < 3 && trials < 30 {
        trials += 1;
        let (to_a, to_b) = (tenant_json("acme", &a), tenant_json("acme", &b));
        let (one, two) = tokio::join!(
            routers[1].admin("PUT", "/api/v1/tenants/acme", Some(&to_a)),
            routers[2].admin("PUT", "/api/v1/tenants/acme", Some(&to_b)),
        );
        let statuses = (one.0, two.0);
        let winner = match statuses {
            (200, 409) => "a",
            (409, 200) => "b",
            // One after the other (the second replica had seen the first
            // change): both applied, the later one in force.
            (200, 200) => {
                let stored = etcd.get("/fleet/tenants/acme").unwrap();
                if stored.contains(&a.url()) {
                    "a"
                } else {
                    "b"
                }
            }
            other => panic!("trial {trials}: {other:?}: {} / {}", one.1, two.1),
        };
        if statuses.0 == 409 || statuses.1 == 409 {
            conflicts += 1;
            let loser = if statuses.0 == 409 { &one.1 } else { &two.1 };
            assert!(loser["error"].as_str().unwrap().contains("changed by someone else"), "{loser}");
        }
        // What etcd holds is what every replica routes: no change lost, none half-applied.
        let won = if winner == "a" { &a } else { &b };
        assert!(etcd.get("/fleet/tenants/acme").unwrap().contains(&won.url()), "etcd holds the winner");
        routed_everywhere(&routers, "acme", winner, Instant::now()).await;
        // Back to c through the first replica before the next trial.
        let (status, body) = routers[0].admin("PUT", "/api/v1/tenants/acme", Some(&tenant_json("acme", &c))).await;
        assert_eq!(status, 200, "{body}");
        routed_everywhere(&routers, "acme", "c", Instant::now()).await;
    }
    eprintln!(
        "{conflicts} conflicts (409) in {trials} trials of two concurrent updates; every winner routed everywhere"
    );
    assert!(conflicts >= 1, "no two updates in {trials} trials were concurrent enough to conflict");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_restarted_the_watches_resume_and_a_bad_value_is_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path()).await;
    let routers = replicas(&etcd, 3);
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    etcd.put("/fleet/tenants/acme", &tenant_toml(&a));
    routed_everywhere(&routers, "acme", "a", Instant::now()).await;

    etcd.stop();
    for router in &routers {
        wait_until_async("the store said unreachable", Duration::from_secs(15), || async {
            let (status, ready) = router.admin_get("/ready").await;
            status == 200 && ready["store"]["reachable"] == false
        })
        .await;
        assert_eq!(served_by(&router.base("unified"), "acme").await.as_deref(), Ok("a"), "the last table serves");
        let metrics = reqwest::get(format!("http://{}/metrics", router.admin)).await.unwrap().text().await.unwrap();
        assert!(metrics.contains("mirador_router_store_up 0"), "{metrics}");
    }
    let (status, body) = routers[1].admin("PUT", "/api/v1/tenants/acme", Some(&tenant_json("acme", &b))).await;
    assert_eq!(status, 503, "a change with etcd away is refused as unavailable: {body}");
    assert_eq!(served_by(&routers[1].base("unified"), "acme").await.as_deref(), Ok("a"), "and changed nothing");
    etcd.restart().await;
    let since = Instant::now();
    etcd.put("/fleet/tenants/beta", &tenant_toml(&b));
    let resumed = routed_everywhere(&routers, "beta", "b", since).await;
    eprintln!("after an etcd restart, a new tenant routed on all 3 replicas {resumed:?} after it was written");
    for router in &routers {
        let (_, ready) = router.admin_get("/ready").await;
        assert_eq!(ready["store"]["reachable"], true, "{ready}");
    }

    // A bad value: refused by every replica, naming its key; the old table serves.
    etcd.put("/fleet/tenants/beta", "[metrics]\nendpoints = \"not a list\"\n");
    for router in &routers {
        let last = wait_until_async("the bad value refused", Duration::from_secs(10), || async {
            let (_, last) = router.admin_get("/api/v1/reload").await;
            (last["last"]["ok"] == false).then_some(last)
        })
        .await;
        let errors = last["last"]["errors"].to_string();
        assert!(errors.contains("etcd:/fleet/tenants/beta") && errors.contains("metrics.endpoints"), "{errors}");
        assert_eq!(served_by(&router.base("unified"), "beta").await.as_deref(), Ok("b"), "the old table serves");
        assert_eq!(served_by(&router.base("unified"), "acme").await.as_deref(), Ok("a"));
    }
    // Fixed: applied everywhere.
    etcd.put("/fleet/tenants/beta", &tenant_toml(&a));
    routed_everywhere(&routers, "beta", "a", Instant::now()).await;
}

/// A replica away (stopped) while etcd restarts, its tenants change and
/// etcd compacts every revision it missed: when it is back, its watch is
/// broken and the events it missed are gone, and the full read that follows
/// leaves it routing exactly what etcd holds, as the replica that never
/// left does.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_back_after_a_compaction_reads_everything_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path()).await;
    let routers = replicas(&etcd, 2);
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    etcd.put("/fleet/tenants/acme", &tenant_toml(&a));
    etcd.put("/fleet/tenants/gone", &tenant_toml(&a));
    routed_everywhere(&routers, "gone", "a", Instant::now()).await;

    routers[1].signal("STOP");
    etcd.restart().await;
    for round in 0..20 {
        etcd.put("/fleet/tenants/acme", &tenant_toml(if round % 2 == 0 { &b } else { &a }));
    }
    etcd.put("/fleet/tenants/acme", &tenant_toml(&b));
    etcd.put("/fleet/tenants/beta", &tenant_toml(&b));
    etcd.ctl(&["del", "/fleet/tenants/gone"]);
    let status: serde_json::Value = serde_json::from_str(&etcd.ctl(&["endpoint", "status", "-w", "json"])).unwrap();
    let revision = status[0]["Status"]["header"]["revision"].as_i64().expect("etcd's revision");
    etcd.ctl(&["compact", &revision.to_string()]);
    routers[1].signal("CONT");

    let since = Instant::now();
    routed_everywhere(&routers, "acme", "b", since).await;
    routed_everywhere(&routers, "beta", "b", since).await;
    for router in &routers {
        let base = router.base("unified");
        wait_until_async(format!("gone unknown to {base}"), Duration::from_secs(10), || async {
            served_by(&base, "gone").await.is_err()
        })
        .await;
    }
    eprintln!(
        "a replica back after a compaction of revision {revision} routed what etcd holds in {:?}",
        since.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn store_import_and_export_move_tenants_between_a_file_and_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let a = Upstream::start("a").await;
    let config = dir.path().join("router.toml");
    std::fs::write(&config, store_toml(&etcd)).unwrap();
    let tenants = dir.path().join("tenants.toml");
    let run =
        |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_mirador-router")).args(args).output().unwrap();
    std::fs::write(&tenants, "[tenants.acme.metrics]\nendpoints = [\"not a url\"]\n").unwrap();
    let refused = run(&["store", "import", "--config", config.to_str().unwrap(), "--from", tenants.to_str().unwrap()]);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("tenants.acme.metrics.endpoints")
    );
    assert_eq!(etcd.get("/fleet/tenants/acme"), None, "nothing written from a bad file");

    let file = format!(
        "[tiers.gold.quotas]\nrequests_per_second = 7\n\n[tenants.acme]\ntier = \"gold\"\n[tenants.acme.metrics]\nendpoints = [\"{}\"]\n",
        a.url()
    );
    std::fs::write(&tenants, &file).unwrap();
    let imported = run(&["store", "import", "--config", config.to_str().unwrap(), "--from", tenants.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    assert!(etcd.get("/fleet/tiers/gold").unwrap().contains("requests_per_second = 7"));
    let again = run(&["store", "import", "--config", config.to_str().unwrap(), "--from", tenants.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--overwrite"));

    let exported = run(&["store", "export", "--config", config.to_str().unwrap()]);
    assert!(exported.status.success());
    let back: toml::Table = toml::from_str(&String::from_utf8_lossy(&exported.stdout)).unwrap();
    assert_eq!(back, toml::from_str::<toml::Table>(&file).unwrap(), "export gives back what was imported");

    let check = run(&["--check", "--config", config.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("ok (1 tenants)"));
}
