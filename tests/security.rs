//! Isolation at the door: quotas (rate, concurrency, body size) and tenant
//! credentials, against the real router binary. (Suspended tenants, disabled
//! signals and read-only writes/reads are in tests/routing.rs.)

mod common;

use base64::Engine;
use common::*;
use mirador_router::routing::sha256;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use std::time::{Duration, Instant};

fn hex(bytes: [u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn get(router: &RouterProcess, tenant: Option<&str>, auth: Option<&str>, query: &str) -> reqwest::Response {
    let mut request = client().get(format!("{}/api/v1/query{query}", router.base("unified")));
    if let Some(tenant) = tenant {
        request = request.header("X-Tenant-ID", tenant);
    }
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_over_the_rate_gets_429_while_another_tenant_is_unaffected() {
    let limited = Upstream::start("limited").await;
    let free = Upstream::start("free").await;
    let router = RouterProcess::start(&format!(
        "[tenants.limited.metrics]\nendpoints = [\"{}\"]\n[tenants.limited.quotas]\nrequests_per_second = 5\nburst = 5\n\
         [tenants.free.metrics]\nendpoints = [\"{}\"]\n",
        limited.url(),
        free.url()
    ));
    let burst = futures_util::future::join_all((0..40).map(|i| {
        let tenant = if i % 2 == 0 { "limited" } else { "free" };
        let router = &router;
        async move { (tenant, get(router, Some(tenant), None, "").await) }
    }))
    .await;
    let (mut limited_ok, mut limited_429, mut free_ok) = (0, 0, 0);
    for (tenant, response) in burst {
        match (tenant, response.status().as_u16()) {
            ("limited", 200) => limited_ok += 1,
            ("limited", 429) => {
                let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
                limited_429 += 1;
            }
            ("free", 200) => free_ok += 1,
            (tenant, status) => panic!("{tenant}: {status}"),
        }
    }
    assert_eq!(free_ok, 20, "the other tenant is unaffected");
    assert!((5..=7).contains(&limited_ok), "{limited_ok} admitted of a burst of 5");
    assert_eq!(limited_ok + limited_429, 20);
    assert_eq!(limited.seen().len(), limited_ok, "refused requests never reach the upstream");

    // Accuracy over time: as fast as possible for 2 s at 20 requests/s, burst 20.
    let router2 = RouterProcess::start(&format!(
        "[tenants.paced.metrics]\nendpoints = [\"{}\"]\n[tenants.paced.quotas]\nrequests_per_second = 20\nburst = 20\n",
        limited.url()
    ));
    let start = Instant::now();
    let (mut admitted, mut sent) = (0u32, 0u32);
    while start.elapsed() < Duration::from_secs(2) {
        sent += 1;
        if get(&router2, Some("paced"), None, "").await.status() == 200 {
            admitted += 1;
        }
    }
    let expected = 20.0 + 20.0 * start.elapsed().as_secs_f64();
    eprintln!("rate 20/s, burst 20, 2 s flat out: {admitted} admitted of {sent} sent; GCRA allows {expected:.1}");
    assert!((admitted as f64 - expected).abs() <= 2.0, "{admitted} admitted, {expected:.1} allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn n_plus_one_slow_requests_get_exactly_one_429_and_no_slot_leaks() {
    let slow = Upstream::start("slow").await;
    let router = RouterProcess::start(&format!(
        "[tenants.acme.metrics]\nendpoints = [\"{}\"]\ntimeout = \"10s\"\nhealth_check = {{ passive_failures = 0 }}\n[tenants.acme.quotas]\nmax_concurrent_requests = 3\n",
        slow.url()
    ));
    let slow_request = || get(&router, Some("acme"), None, "?delay_ms=800");
    let in_flight = futures_util::future::join_all((0..3).map(|_| slow_request()));
    let fourth = async {
        Wait::new("the 3 slow requests to reach the upstream", Duration::from_secs(10))
            .every(Duration::from_millis(5))
            .until(|| match slow.seen().len() {
                3.. => Ok(()),
                seen => Err(format!("{seen} arrived")),
            })
            .await;
        get(&router, Some("acme"), None, "").await
    };
    let (three, fourth) = tokio::join!(in_flight, fourth);
    assert!(three.iter().all(|r| r.status() == 200));
    assert_eq!(fourth.status(), 429);
    assert_eq!(fourth.headers()["retry-after"], "1");

    // Slots come back after client disconnects and upstream errors, every time.
    for round in 0..15 {
        let abandoned = tokio::time::timeout(Duration::from_millis(30), slow_request()).await;
        assert!(abandoned.is_err(), "round {round}: the client gave up");
        assert_eq!(get(&router, Some("acme"), None, "?reset=1").await.status(), 502);
        assert_eq!(get(&router, Some("acme"), None, "?status=500").await.status(), 500);
    }
    // Eventually all three slots are free again at once.
    Wait::new("all 3 concurrency slots to be free at once (else slots leaked)", Duration::from_secs(10))
        .every(Duration::from_millis(100))
        .until_async(|| async {
            let three = (0..3).map(|_| get(&router, Some("acme"), None, "?delay_ms=300"));
            let three = futures_util::future::join_all(three).await;
            let statuses: Vec<u16> = three.iter().map(|r| r.status().as_u16()).collect();
            if statuses.iter().all(|&s| s == 200) {
                Ok(())
            } else {
                Err(format!("statuses {statuses:?}"))
            }
        })
        .await;
}

/// Whether a request failed because the peer closed or reset the connection
/// (while the body was being written, or before the answer was read).
fn connection_cut(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof) {
                return true;
            }
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled() {
                return true;
            }
        }
        source = error.source();
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_get_413_and_never_reach_the_upstream_whole() {
    let sink = Upstream::start("sink").await;
    let router = RouterProcess::start(&format!(
        "[tenants.acme.metrics]\nendpoints = [\"{}\"]\n[tenants.acme.quotas]\nmax_body_bytes = 1000\n",
        sink.url()
    ));
    let url = format!("{}/api/v1/import", router.base("unified"));
    let declared = client().post(&url).header("X-Tenant-ID", "acme").body(vec![b'x'; 1001]).send().await.unwrap();
    assert_eq!(declared.status(), 413);
    assert!(sink.seen().is_empty(), "refused by Content-Length before any upstream contact");

    let ok = client().post(&url).header("X-Tenant-ID", "acme").body(vec![b'x'; 1000]).send().await.unwrap();
    assert_eq!(ok.status(), 200);

    // Chunked, no length: cut off once past the limit. request_body_filter
    // fails the request as soon as the bytes read pass max_body_bytes, and
    // fail_to_proxy answers 413 with Connection: close. A client still
    // writing its 16 KiB may find the connection cut before it reads that
    // answer (EPIPE or a reset): that is the other allowed outcome.
    let chunks =
        futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 256]))));
    let chunked =
        client().post(&url).header("X-Tenant-ID", "acme").body(reqwest::Body::wrap_stream(chunks)).send().await;
    match chunked {
        Ok(response) => assert_eq!(response.status(), 413),
        Err(e) => assert!(connection_cut(&e), "neither a 413 nor a cut connection: {e:?}"),
    }
    router.wait_for_log("request body over 1000 bytes", 1);
    // The router sent the request head upstream before the body passed the
    // limit, then dropped that connection: the upstream sees the request end.
    wait_until("the upstream to see the refused chunked request end", Duration::from_secs(5), || {
        sink.seen().len() >= 2
    })
    .await;
    for seen in sink.seen().iter().skip(1) {
        assert!(
            !seen.body_complete || seen.body_len <= 1000,
            "the upstream got a complete oversized body: {} bytes",
            seen.body_len
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_prove_tenants_and_never_travel_upstream() {
    let acme = Upstream::start("acme").await;
    let other = Upstream::start("other").await;
    let router = RouterProcess::start(&format!(
        "[tenants.acme.metrics]\nendpoints = [\"{}\"]\n\
         [tenants.acme.auth]\nbearer_tokens_sha256 = [\"{}\"]\nbasic_auth = [{{ username = \"grafana\", password_sha256 = \"{}\" }}]\n\
         [tenants.other.metrics]\nendpoints = [\"{}\"]\n",
        acme.url(),
        hex(sha256(b"acme-token-7f3a")),
        hex(sha256(b"grafana-pw")),
        other.url()
    ));
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("grafana:grafana-pw"));
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(get(&router, Some("acme"), None, "").await), 401, "missing");
    assert_eq!(status(get(&router, Some("acme"), Some("Bearer nope"), "").await), 401, "wrong");
    assert_eq!(
        status(get(&router, Some("other"), Some("Bearer nope"), "").await),
        401,
        "wrong, even for a tenant without credentials"
    );
    assert_eq!(
        status(get(&router, Some("other"), Some("Bearer acme-token-7f3a"), "").await),
        403,
        "another tenant's token with my header"
    );
    assert_eq!(
        status(get(&router, None, Some("Bearer acme-token-7f3a"), "").await),
        200,
        "a credential alone names its tenant"
    );
    assert_eq!(status(get(&router, Some("acme"), Some(&basic), "").await), 200, "basic auth for Grafana");
    assert_eq!(
        status(get(&router, Some("other"), None, "").await),
        200,
        "a tenant without credentials keeps the header alone"
    );
    let seen = acme.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.headers.get("authorization").is_none()), "the client's credential is stripped");
}

#[test]
fn a_tenants_credential_never_reaches_another_tenants_pool() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(RunnerConfig { cases: 8, ..RunnerConfig::default() });
    let strategy = (
        prop::collection::btree_set("[a-z]{3,8}", 2..5),
        prop::collection::vec((any::<usize>(), any::<usize>(), 0u8..4), 30),
    );
    runner
        .run(&strategy, |(ids, requests)| {
            runtime.block_on(async {
                let ids: Vec<String> = ids.into_iter().collect();
                let mut upstreams = Vec::new();
                let mut config = String::new();
                for id in &ids {
                    let upstream = Upstream::start(id).await;
                    config += &format!(
                        "[tenants.{id}.metrics]\nendpoints = [\"{}\"]\n[tenants.{id}.auth]\nbearer_tokens_sha256 = [\"{}\"]\n",
                        upstream.url(),
                        hex(sha256(format!("token-of-{id}").as_bytes()))
                    );
                    upstreams.push(upstream);
                }
                let router = RouterProcess::start(&config);
                for (cred, named, shape) in requests {
                    let cred_of = &ids[cred % ids.len()];
                    let named = &ids[named % ids.len()];
                    let token = format!("Bearer token-of-{cred_of}");
                    let (header, auth) = match shape {
                        0 => (None, Some(token.as_str())),
                        1 => (Some(named.as_str()), Some(token.as_str())),
                        2 => (Some(named.as_str()), None),
                        _ => (Some(named.as_str()), Some("Bearer forged")),
                    };
                    let response = get(&router, header, auth, "").await;
                    match response.headers().get("x-upstream") {
                        Some(served) => {
                            prop_assert_eq!(served.to_str().unwrap(), cred_of.as_str(), "served by the credential's own tenant");
                            prop_assert!(auth == Some(token.as_str()));
                        }
                        None => prop_assert!(matches!(response.status().as_u16(), 401 | 403)),
                    }
                }
                for (id, upstream) in ids.iter().zip(&upstreams) {
                    for seen in upstream.seen() {
                        prop_assert!(seen.headers.get("authorization").is_none());
                        prop_assert!(seen.headers.get("x-tenant-id").is_none_or(|h| h == id.as_str()));
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_identity_bad_paths_and_wrong_methods_never_reach_an_upstream() {
    let up = Upstream::start("up").await;
    let router = RouterProcess::start(&format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()));
    let base = router.base("unified");
    let http = client();
    let query = format!("{base}/api/v1/query");
    let cases = [
        // Several tenant headers, even equal ones; several Authorization headers.
        (
            http.get(&query).header("X-Tenant-ID", "acme").header("X-Tenant-ID", "other"),
            400,
            "several x-tenant-id headers",
        ),
        (
            http.get(&query).header("X-Tenant-ID", "acme").header("x-tenant-id", "acme"),
            400,
            "several x-tenant-id headers",
        ),
        (
            http.get(&query)
                .header("X-Tenant-ID", "acme")
                .header("Authorization", "Bearer a")
                .header("Authorization", "Bearer b"),
            400,
            "several Authorization headers",
        ),
        // Paths with no safe canonical reading, named.
        (
            http.get(format!("{base}/api/v1/admin%2Ftsdb%2Fdelete_series")).header("X-Tenant-ID", "acme"),
            400,
            "encoded /",
        ),
        (http.get(format!("{base}/api/v1/query%zz")).header("X-Tenant-ID", "acme"), 400, "two hex digits"),
        (http.get(format!("{base}/api/v1/query%00")).header("X-Tenant-ID", "acme"), 400, "control character"),
        // A method the endpoint does not take.
        (http.get(format!("{base}/api/v1/write")).header("X-Tenant-ID", "acme"), 405, "takes POST, PUT only"),
        (http.delete(&query).header("X-Tenant-ID", "acme"), 405, "takes GET, HEAD, POST only"),
        // An admin endpoint not granted.
        (http.get(format!("{base}/snapshot/create")).header("X-Tenant-ID", "acme"), 403, "snapshot is not granted"),
    ];
    for (request, status, says) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{says}");
        if status == 405 {
            assert!(response.headers().contains_key("allow"), "405 names the methods in Allow");
        }
        let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert!(body["error"].as_str().unwrap().contains(says), "{body} should say {says:?}");
    }
    // Dot segments, as sent raw (an HTTP client library resolves them itself).
    for target in ["/api/v1/../v1/query", "/api/v1/./query", "/api/v1/%2e%2e/v1/query"] {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(router.unified).unwrap();
        write!(socket, "GET {target} HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: acme\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
        assert!(answer.contains(". or .. segment"), "{target}: {answer}");
    }
    assert!(up.seen().is_empty(), "a refused request reached the upstream: {:?}", up.seen());
    let fine = http.get(&query).header("X-Tenant-ID", "acme").send().await.unwrap();
    assert_eq!(fine.status(), 200);
}
