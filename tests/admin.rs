//! The admin API and the reload path against the real router binary:
//! tenant CRUD persisted to the TOML file, reloads under load, broken files,
//! early SIGHUP, bearer tokens.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn file(router: &RouterProcess) -> String {
    std::fs::read_to_string(&router.config_path).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_crud_routes_at_once_and_persists_to_the_file_with_comments_kept() {
    let first = Upstream::start("first").await;
    let second = Upstream::start("second").await;
    let existing = Upstream::start("existing").await;
    let mut router = RouterProcess::start(&format!(
        "# Operators' notes: this comment must survive every API change.\n[tenants.acme.metrics]\nendpoints = [\"{}\"] # acme's VM\n",
        existing.url()
    ));

    // Create: routes at once, and is in the file.
    let body = json!({"id": "newco", "name": "NewCo", "metrics": {"endpoints": [first.url()], "timeout": "5s"}});
    let (status, answer) = router.admin("POST", "/api/v1/tenants", Some(&body.to_string())).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["changes"]["added"], json!(["newco"]));
    assert_eq!(answer["tenant"], body);
    assert_eq!(served_by(&router.base("unified"), "newco").await, Ok("first".into()));
    assert!(file(&router).contains("[tenants.newco.metrics]"));
    assert_eq!(router.admin("GET", "/api/v1/tenants/newco", None).await, (200, body.clone()));

    // Create of an existing id: 409; unknown id: 404.
    assert_eq!(router.admin("POST", "/api/v1/tenants", Some(&body.to_string())).await.0, 409);
    assert_eq!(router.admin("GET", "/api/v1/tenants/nobody", None).await.0, 404);
    assert_eq!(router.admin("DELETE", "/api/v1/tenants/nobody", None).await.0, 404);

    // Update: traffic moves.
    let moved = json!({"id": "newco", "metrics": {"endpoints": [second.url()]}});
    let (status, answer) = router.admin("PUT", "/api/v1/tenants/newco", Some(&moved.to_string())).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changes"]["changed"], json!(["newco"]));
    assert_eq!(served_by(&router.base("unified"), "newco").await, Ok("second".into()));

    // Bad input: 400 naming the field, file untouched, routing unchanged.
    let before = file(&router);
    for (bad, field) in [
        ("{not json".to_string(), "the body is not JSON"),
        (
            json!({"id": "newco", "metrics": {"endpoints": ["ftp://x:1"]}}).to_string(),
            "tenants.newco.metrics.endpoints[0]",
        ),
        (
            json!({"id": "newco", "metrics": {"endpoints": [second.url()], "timeuot": "1s"}}).to_string(),
            "tenants.newco.metrics.timeuot",
        ),
        (json!({"id": "newco", "colour": "blue"}).to_string(), "tenants.newco.colour"),
    ] {
        let (status, answer) = router.admin("PUT", "/api/v1/tenants/newco", Some(&bad)).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(field), "{answer} should name {field}");
    }
    assert_eq!(file(&router), before, "a refused change leaves the file as it was");
    assert_eq!(served_by(&router.base("unified"), "newco").await, Ok("second".into()));

    // A change that would leave a tenant routing nothing is 400, not a 2xx
    // that loses it: an empty PUT, a PUT or POST of the id alone, signals
    // all turned off. Removing a tenant is DELETE's.
    for (method, path, bad) in [
        ("PUT", "/api/v1/tenants/newco", json!({})),
        ("PUT", "/api/v1/tenants/newco", json!({"id": "newco"})),
        ("PUT", "/api/v1/tenants/newco", json!({"id": "newco", "name": "N"})),
        (
            "PUT",
            "/api/v1/tenants/newco",
            json!({"metrics": {"endpoints": [second.url()]}, "features": {"signals": []}}),
        ),
        ("POST", "/api/v1/tenants", json!({"id": "ghost"})),
    ] {
        let (status, answer) = router.admin(method, path, Some(&bad.to_string())).await;
        assert_eq!(status, 400, "{method} {bad}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains("would route nothing"), "{answer}");
    }
    assert_eq!(file(&router), before, "a refused change leaves the file as it was");
    assert_eq!(served_by(&router.base("unified"), "newco").await, Ok("second".into()));
    assert_eq!(router.admin("GET", "/api/v1/tenants/ghost", None).await.0, 404, "a refused POST creates nothing");

    // Two concurrent creates both land (each on a VictoriaLogs of its own).
    let (logs_a, logs_b) = (Upstream::start("logs-a").await, Upstream::start("logs-b").await);
    logs_a.set_kind("victoria-logs");
    logs_b.set_kind("victoria-logs");
    let twin_a = json!({"id": "twin-a", "logs": {"endpoints": [logs_a.url()]}}).to_string();
    let twin_b = json!({"id": "twin-b", "logs": {"endpoints": [logs_b.url()]}}).to_string();
    let (a, b) = tokio::join!(
        router.admin("POST", "/api/v1/tenants", Some(&twin_a)),
        router.admin("POST", "/api/v1/tenants", Some(&twin_b)),
    );
    assert_eq!((a.0, b.0), (201, 201));
    assert!(file(&router).contains("[tenants.twin-a.logs]") && file(&router).contains("[tenants.twin-b.logs]"));

    // Delete: 403 at once, gone from the file.
    let (status, answer) = router.admin("DELETE", "/api/v1/tenants/twin-b", None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changes"]["removed"], json!(["twin-b"]));
    let r = client()
        .get(format!("{}/select/logsql/query", router.base("unified")))
        .header("X-Tenant-ID", "twin-b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(!file(&router).contains("twin-b"));

    // Comments and the untouched tenant survive every change.
    let text = file(&router);
    assert!(text.contains("# Operators' notes: this comment must survive every API change."), "{text}");
    assert!(text.contains("# acme's VM"), "{text}");

    // Restart: the same tenants, the same routing.
    let (_, listed) = router.admin("GET", "/api/v1/tenants", None).await;
    router.restart();
    assert_eq!(router.admin("GET", "/api/v1/tenants", None).await, (200, listed));
    assert_eq!(served_by(&router.base("unified"), "newco").await, Ok("second".into()));
    assert_eq!(served_by(&router.base("unified"), "acme").await, Ok("existing".into()));

    // Every mutation is in the audit log with its source address.
    let log = router.log();
    for action in ["action=\"create\"", "action=\"update\"", "action=\"delete\""] {
        assert!(log.contains(action) && log.contains("source=\"127.0.0.1:"), "no audit line for {action}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_reloads_under_load_fail_no_request() {
    let mut upstreams = Vec::new();
    for i in 0..4 {
        upstreams.push(Upstream::start(&format!("u{i}")).await);
    }
    let pool_for =
        |version: usize| -> Vec<String> { vec![upstreams[version % 4].url(), upstreams[(version + 1) % 4].url()] };
    let tenants_for = |version: usize| {
        let endpoints: Vec<String> = pool_for(version).iter().map(|u| format!("\"{u}\"")).collect();
        format!("[tenants.acme.metrics]\nendpoints = [{}]\n", endpoints.join(", "))
    };
    let router = Arc::new(RouterProcess::start(&tenants_for(0)));
    // versions[i] = endpoint names of table version i.
    let names =
        |version: usize| -> Vec<String> { vec![format!("u{}", version % 4), format!("u{}", (version + 1) % 4)] };
    let version = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (router, version, stop, outcomes) = (router.clone(), version.clone(), stop.clone(), outcomes.clone());
        loops.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::SeqCst) {
                let started_in = version.load(Ordering::SeqCst);
                let r = http
                    .get(format!("{}/api/v1/query", router.base("unified")))
                    .header("X-Tenant-ID", "acme")
                    .send()
                    .await;
                let ended_in = version.load(Ordering::SeqCst);
                let served = r
                    .ok()
                    .filter(|r| r.status() == 200)
                    .and_then(|r| r.headers().get("x-upstream").map(|v| v.to_str().unwrap().to_string()));
                outcomes.lock().unwrap().push((started_in, ended_in, served));
            }
        }));
    }
    let mut durations = Vec::new();
    for reload in 1..=20 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        router.write_tenants(&tenants_for(reload));
        if reload % 2 == 0 {
            let (status, answer) = router.admin("POST", "/api/v1/reload", None).await;
            assert_eq!(status, 200, "{answer}");
            durations.push(answer["changes"]["duration_ms"].as_f64().unwrap());
        } else {
            router.signal("HUP");
            router.wait_for_log("config reloaded", reload);
        }
        version.store(reload, Ordering::SeqCst);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.unwrap();
    }
    let outcomes = outcomes.lock().unwrap();
    let failed = outcomes.iter().filter(|(_, _, served)| served.is_none()).count();
    let misrouted: Vec<_> = outcomes
        .iter()
        .filter(|(start, end, served)| {
            let served = served.as_ref().unwrap();
            // Valid in a table in force at some time during the request: the
            // counter moves after a reload finished, so one ahead is possible.
            !(*start..=*end + 1).any(|v| names(v).contains(served))
        })
        .collect();
    durations.sort_by(f64::total_cmp);
    eprintln!(
        "{} requests during 20 reloads: {failed} failed, {} misrouted; API reload took {:.2}–{:.2} ms",
        outcomes.len(),
        misrouted.len(),
        durations[0],
        durations[durations.len() - 1]
    );
    assert!(outcomes.len() > 100);
    assert_eq!(failed, 0);
    assert!(misrouted.is_empty(), "{misrouted:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_on_sighup_is_refused_and_visible_through_the_api() {
    let up = Upstream::start("up").await;
    let router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()));
    router.write_tenants("[tenants.acme.metrics]\nendpoints = [\"http://127.0.0.1:1\", \"http://127.0.0.1:1\"]\n");
    router.signal("HUP");
    router.wait_for_log("config reload refused", 1);
    assert_eq!(served_by(&router.base("unified"), "acme").await, Ok("up".into()), "the old table keeps serving");
    let (status, last) = router.admin("GET", "/api/v1/reload", None).await;
    assert_eq!(status, 200);
    assert_eq!((&last["last"]["ok"], &last["last"]["trigger"]), (&json!(false), &json!("sighup")));
    let errors = last["last"]["errors"].as_array().unwrap();
    assert!(errors[0].as_str().unwrap().contains("tenants.acme.metrics.endpoints[1]: duplicate endpoint"), "{last}");
    // The API reload reports the same errors with their key paths.
    let (status, answer) = router.admin("POST", "/api/v1/reload", None).await;
    assert_eq!(status, 400);
    assert_eq!(answer["errors"][0]["key"], "tenants.acme.metrics.endpoints[1]");
    assert!(router.log().contains("duplicate endpoint"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_during_start_up_does_not_kill_the_router() {
    let up = Upstream::start("up").await;
    let tenants = format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url());
    let mut router = RouterProcess::builder().tenants(tenants).no_wait().start();
    let (pid, unified) = (router.pid(), router.unified);
    // main() takes SIGHUP over first thing; before main runs nothing can.
    // Wait for that (SigCgt bit 0 in /proc), then SIGHUP repeatedly while the
    // router loads its config, probes endpoints and binds.
    let caught = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & 1 != 0)
    };
    Wait::new("the router to catch SIGHUP (SigCgt bit 0)", Duration::from_secs(20))
        .every(Duration::from_micros(200))
        .blocking(caught);
    assert!(
        std::net::TcpStream::connect(unified).is_err(),
        "the test must signal during start-up, before the listener is up"
    );
    Wait::new(format!("the router to listen on {unified} while SIGHUP comes every 2 ms"), Duration::from_secs(20))
        .every(Duration::from_millis(2))
        .blocking(|| {
            if std::net::TcpStream::connect(unified).is_ok() {
                return true;
            }
            let _ = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status();
            assert!(router.exited().is_none(), "the router died of an early SIGHUP");
            false
        });
    let r = client().get(format!("http://{unified}/api/v1/query")).header("X-Tenant-ID", "acme").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(router.exited().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_guards_the_admin_api() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin.token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    let up = Upstream::start("up").await;
    let router = RouterProcess::builder()
        .tenants(format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()))
        .admin_extra(format!("token_file = \"{}\"", token_file.display()))
        .start();
    let admin = router.admin;
    let http = client();
    let get = |token: Option<&'static str>| {
        let mut r = http.get(format!("http://{admin}/api/v1/tenants"));
        if let Some(token) = token {
            r = r.header("Authorization", format!("Bearer {token}"));
        }
        r.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(get(Some("s3cret-token-0123456789")).await.unwrap().status(), 200);
    assert_eq!(
        http.get(format!("http://{admin}/health")).send().await.unwrap().status(),
        200,
        "liveness needs no token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reloading_1000_tenants_is_timed() {
    let up = Upstream::start("up").await;
    let router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()));
    let many: String = (0..1000).map(|i| format!("[tenants.t{i}.metrics]\nendpoints = [\"{}\"]\n", up.url())).collect();
    router.write_tenants(&many);
    let (status, answer) = router.admin("POST", "/api/v1/reload", None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changes"]["added"].as_array().unwrap().len(), 1000);
    eprintln!("reload of 1,000 tenants (debug build): {:.1} ms", answer["changes"]["duration_ms"].as_f64().unwrap());
    assert_eq!(served_by(&router.base("unified"), "t999").await, Ok("up".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_file_watch_follows_a_configmap_symlink_swap() {
    let old = Upstream::start("old").await;
    let new = Upstream::start("new").await;
    let tenants_for = |upstream: &Upstream| format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", upstream.url());
    let router = RouterProcess::builder()
        .tenants(tenants_for(&old))
        .admin_extra("watch_config = true")
        .config_at(|dir, text| {
            // The layout kubelet gives a mounted ConfigMap.
            let v1 = dir.join("..2026_v1");
            std::fs::create_dir(&v1).unwrap();
            std::fs::write(v1.join("mirador-router.toml"), text).unwrap();
            std::os::unix::fs::symlink("..2026_v1", dir.join("..data")).unwrap();
            let config = dir.join("mirador-router.toml");
            std::os::unix::fs::symlink("..data/mirador-router.toml", &config).unwrap();
            config
        })
        .start();
    let (dir, unified) = (router.dir.path(), router.unified);
    let (v1, v2) = (dir.join("..2026_v1"), dir.join("..2026_v2"));
    let served_by = || async {
        let r =
            client().get(format!("http://{unified}/api/v1/query")).header("X-Tenant-ID", "acme").send().await.unwrap();
        r.headers()["x-upstream"].to_str().unwrap().to_string()
    };
    assert_eq!(served_by().await, "old");

    // The update: a new directory, then an atomic swap of the ..data symlink.
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("mirador-router.toml"), router.text_with_tenants(&tenants_for(&new))).unwrap();
    std::os::unix::fs::symlink("..2026_v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    Wait::new("the file watch to notice the swap (action=\"file-watch\" in the log)", Duration::from_secs(20))
        .every(Duration::from_millis(20))
        .until(|| router.log().contains("action=\"file-watch\""))
        .await;
    assert_eq!(served_by().await, "new");
}
