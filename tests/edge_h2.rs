//! HTTP/2 through the real router, on real sockets: one TLS connection
//! carrying 100 concurrent streams of four tenants, each to its own
//! upstream; a 100 MiB upload over HTTP/2 streamed through whole with the
//! router's memory bounded; h2c with prior knowledge on plain listeners
//! only with `[server] http2 = true` (curl and an h2 client), HTTP/2
//! connections closed after `idle_timeout`; and deployments with `http2 =
//! true` spoken to in HTTP/2, over TLS (ALPN h2) and h2c.

mod common;

use bytes::Bytes;
use common::h2_upstream::H2Upstream;
use common::tls::{self, ca, leaf, write_pair};
use common::*;
use std::collections::BTreeSet;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::ServerName;

const TENANTS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// Allowed growth of the router's peak RSS while 100 MB pass through it
/// (the bound of tests/streaming.rs for HTTP/1.1).
const MAX_GROWTH: u64 = 40 * 1024 * 1024;

/// `[tenants.<name>.metrics]` for each (tenant, endpoint URL).
fn tenants_at<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    pairs.into_iter().map(|(tenant, url)| format!("[tenants.{tenant}.metrics]\nendpoints = [\"{url}\"]\n")).collect()
}

/// A certificate for `edge.test` in a temporary directory: (dir, cert, key).
fn edge_certificate() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = leaf(&ca(), &["edge.test"]);
    let (cert_path, key_path) = write_pair(dir.path(), "edge", &cert, &key);
    (dir, cert_path, key_path)
}

/// A router with `server` lines under `[server]`, `tenants`, and a TLS
/// listener at `tls` with `certificate` when given.
fn router(
    server: &str,
    tenants: String,
    tls: Option<(SocketAddr, &(tempfile::TempDir, PathBuf, PathBuf))>,
) -> RouterProcess {
    let server = server.to_string();
    let listener = tls.map(|(addr, (_, cert, key))| {
        format!(
            "\n[[server.tls]]\nlisten = \"{addr}\"\ncertificates = [{{ cert_file = \"{}\", key_file = \"{}\" }}]\n",
            cert.display(),
            key.display()
        )
    });
    let router = RouterProcess::builder()
        .config_at(move |dir, text| {
            let path = dir.join("router.toml");
            let text = text.replacen("[server]\n", &format!("[server]\n{server}\n"), 1);
            std::fs::write(&path, text + &listener.unwrap_or_default()).unwrap();
            path
        })
        .tenants(tenants)
        .start();
    if let Some((addr, _)) = tls {
        Wait::new(format!("the TLS listener on {addr}"), Duration::from_secs(20))
            .blocking(|| std::net::TcpStream::connect(addr).is_ok());
    }
    router
}

/// One HTTP/2 client connection: requests go out on `send`; `peer_max_streams`
/// follows the server's SETTINGS_MAX_CONCURRENT_STREAMS; `driver` ends when
/// the connection does.
struct H2Client {
    send: h2::client::SendRequest<Bytes>,
    peer_max_streams: watch::Receiver<usize>,
    driver: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

impl H2Client {
    async fn over<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: T) -> H2Client {
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake::<_, Bytes>(io)
            .await
            .expect("HTTP/2 handshake with the router");
        let (settings, peer_max_streams) = watch::channel(0);
        let driver = tokio::spawn(poll_fn(move |cx| {
            let polled = std::pin::Pin::new(&mut connection).poll(cx);
            settings.send_replace(connection.max_concurrent_send_streams());
            polled
        }));
        H2Client { send, peer_max_streams, driver }
    }

    /// Over TLS to `addr`, offering ALPN h2 alone (and checking it was chosen).
    async fn tls(addr: SocketAddr) -> H2Client {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("edge.test").unwrap();
        let stream = tls::any_certificate_connector(&[b"h2"]).connect(name, tcp).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the router chose h2 by ALPN");
        Self::over(stream).await
    }

    /// In cleartext to `addr`, with prior knowledge (h2c).
    async fn h2c(addr: SocketAddr) -> H2Client {
        Self::over(tokio::net::TcpStream::connect(addr).await.unwrap()).await
    }

    /// Sends a request with no body; its answer to await.
    async fn get(&self, uri: &str, tenant: &str) -> h2::client::ResponseFuture {
        let request = http::Request::get(uri).header("x-tenant-id", tenant).body(()).unwrap();
        let mut send = self.send.clone().ready().await.expect("the connection takes a stream");
        send.send_request(request, true).expect("stream sent").0
    }
}

/// The status and whole body of an answer.
async fn answer(response: h2::client::ResponseFuture) -> Result<(u16, Vec<u8>), h2::Error> {
    let response = response.await?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, bytes))
}

/// The `n=` marker of a recorded path.
fn marker(path_and_query: &str) -> usize {
    path_and_query.split(['?', '&']).find_map(|kv| kv.strip_prefix("n=")?.parse().ok()).expect("n= in the path")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_tls_connection_carries_100_concurrent_streams_each_to_its_tenants_upstream() {
    let mut upstreams = Vec::new();
    for tenant in TENANTS {
        upstreams.push(Upstream::start(tenant).await);
    }
    let certificate = edge_certificate();
    let tls = free_addr();
    let tenants = tenants_at(TENANTS.iter().zip(&upstreams).map(|(t, up)| (*t, up.url())));
    let _router = router("", tenants, Some((tls, &certificate)));

    let client = H2Client::tls(tls).await;
    // Every upstream answers after a second: 100 streams taken one after
    // another would take 100 s, so answers within a few seconds were
    // concurrent on the one connection.
    const DELAY_MS: u64 = 1000;
    let started = Instant::now();
    let mut pending = Vec::new();
    for n in 0..100 {
        let tenant = TENANTS[n % TENANTS.len()];
        let uri = format!("https://edge.test/api/v1/query?query=up&n={n}&delay_ms={DELAY_MS}");
        let client = &client;
        pending.push(async move { (n, tenant, answer(client.get(&uri, tenant).await).await) });
    }
    let answers = tokio::time::timeout(Duration::from_secs(30), futures_util::future::join_all(pending))
        .await
        .expect("100 streams answered within 30 s");
    let elapsed = started.elapsed();
    for (n, tenant, outcome) in &answers {
        let (status, body) = outcome.as_ref().unwrap_or_else(|e| panic!("stream {n}: {e}"));
        assert_eq!((*status, String::from_utf8_lossy(body).as_ref()), (200, *tenant), "stream {n} of {tenant}");
    }
    assert!(elapsed < Duration::from_secs(8), "100 streams of 1 s each took {elapsed:?}: not concurrent");
    assert_eq!(*client.peer_max_streams.borrow(), 128, "the router's SETTINGS_MAX_CONCURRENT_STREAMS");

    // Each upstream got exactly its tenant's streams, none of another's.
    for (i, (tenant, upstream)) in TENANTS.iter().zip(&upstreams).enumerate() {
        let seen = upstream.seen();
        let markers: BTreeSet<usize> = seen.iter().map(|s| marker(&s.path_and_query)).collect();
        let expected: BTreeSet<usize> = (0..100).filter(|n| n % TENANTS.len() == i).collect();
        assert_eq!(seen.len(), 25, "{tenant}: {seen:?}");
        assert_eq!(markers, expected, "{tenant} received exactly its own streams");
        assert!(seen.iter().all(|s| s.path_and_query.starts_with("/api/v1/query?query=up&")), "{tenant}");
        assert!(seen.iter().all(|s| s.headers["x-forwarded-proto"] == "https"), "{tenant}");
    }
    assert!(!client.driver.is_finished(), "the connection is still open");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_heads_over_http2_meet_the_same_limits_as_over_http1() {
    let upstream = Upstream::start("alpha").await;
    let certificate = edge_certificate();
    let tls = free_addr();
    let _router = router("", tenants_at([("alpha", upstream.url())]), Some((tls, &certificate)));
    let client = H2Client::tls(tls).await;
    let with_header = |bytes: usize| {
        let request = http::Request::get("https://edge.test/api/v1/query?query=up")
            .header("x-tenant-id", "alpha")
            .header("x-padding", "p".repeat(bytes))
            .body(())
            .unwrap();
        let send = client.send.clone();
        async move { answer(send.ready().await?.send_request(request, true)?.0).await }
    };
    // Over max_request_header_bytes (64 KiB) but within the HTTP/2 header
    // list limit: the router's own 431, with its JSON error, as for HTTP/1.1.
    let (status, body) = with_header(65 * 1024).await.unwrap();
    assert_eq!(status, 431);
    assert!(String::from_utf8_lossy(&body).contains("max_request_header_bytes"), "{}", String::from_utf8_lossy(&body));
    // Over the header list limit: the HTTP/2 layer answers 431 itself.
    let over = with_header(128 * 1024).await;
    assert!(matches!(over, Ok((431, _))), "{over:?}");
    // The connection goes on.
    let (status, body) = answer(client.get("https://edge.test/api/v1/query?query=up", "alpha").await).await.unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"alpha"[..]));
    assert_eq!(upstream.seen().len(), 1, "neither refused head went upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mib_upload_over_http2_streams_through_whole_without_growing_memory() {
    let upstream = Upstream::start("sink").await;
    let certificate = edge_certificate();
    let tls = free_addr();
    let router = router("", tenants_at([("alpha", upstream.url())]), Some((tls, &certificate)));
    let before = router.peak_rss();

    let HundredMib { chunk, chunks, hash } = hundred_mib();

    let client = H2Client::tls(tls).await;
    let request =
        http::Request::post("https://edge.test/api/v1/write").header("x-tenant-id", "alpha").body(()).unwrap();
    let mut largest_grant = 0;
    let upload = async {
        let (response, mut body) = client.send.clone().ready().await.unwrap().send_request(request, false).unwrap();
        for _ in 0..chunks {
            // Flow control: send only what the router's window allows.
            let mut left = chunk.clone();
            while !left.is_empty() {
                body.reserve_capacity(left.len());
                let granted = poll_fn(|cx| body.poll_capacity(cx)).await.expect("stream open").unwrap();
                largest_grant = largest_grant.max(granted);
                body.send_data(left.split_to(granted.min(left.len())), false).unwrap();
            }
        }
        body.send_data(Bytes::new(), true).unwrap();
        answer(response).await
    };
    let (status, _) =
        tokio::time::timeout(Duration::from_secs(180), upload).await.expect("100 MiB uploaded within 180 s").unwrap();
    assert_eq!(status, 200);
    // HTTP/2's default window is 64 KiB - 1: the router's is larger (1 MiB
    // per stream, 4 MiB per connection), so a whole 256 KiB chunk may go at once.
    assert_eq!(largest_grant, chunk.len(), "the router's receive window");

    let seen = &upstream.seen()[0];
    assert_eq!(seen.body_len, HUNDRED_MB);
    assert_eq!(seen.body_hash, hash, "the body arrives byte for byte");
    assert!(seen.body_complete);
    let growth = router.peak_rss().saturating_sub(before);
    eprintln!("router peak RSS {} KiB before, grew by {} KiB", before >> 10, growth >> 10);
    assert!(growth < MAX_GROWTH, "router peak RSS grew by {} MiB", growth >> 20);
}

/// `curl` over one of the router's plain listeners: (exit code, `%{http_code} %{http_version}`, stderr).
fn curl(args: &[&str], url: &str) -> (i32, String, String) {
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-H", "X-Tenant-ID: alpha", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_with_prior_knowledge_only_where_server_http2_is_on() {
    let upstream = Upstream::start("alpha").await;
    let beta = Upstream::start("beta").await;
    let tenants = tenants_at([("alpha", upstream.url()), ("beta", beta.url())]);
    let h2c = router("http2 = true\nidle_timeout = \"1s\"", tenants.clone(), None);
    let query = |base: String| format!("{base}/api/v1/query?query=up");

    // curl with prior knowledge speaks HTTP/2 on the unified and a drop-in listener ...
    for listener in ["unified", "metrics"] {
        let (code, out, err) = curl(&["--http2-prior-knowledge"], &query(h2c.base(listener)));
        assert_eq!((code, out.as_str()), (0, "200 2"), "{listener}: {err}");
    }
    // ... and HTTP/1.1 goes on being served there.
    let (code, out, err) = curl(&["--http1.1"], &query(h2c.base("unified")));
    assert_eq!((code, out.as_str()), (0, "200 1.1"), "{err}");

    // An h2 client in cleartext: two tenants on one connection.
    let client = H2Client::h2c(h2c.unified).await;
    let unified = format!("http://{}", h2c.unified);
    for (n, tenant) in ["alpha", "beta", "alpha"].into_iter().enumerate() {
        let uri = format!("{unified}/api/v1/query?query=up&n={n}");
        let (status, body) = answer(client.get(&uri, tenant).await).await.unwrap();
        assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (200, tenant));
    }
    // alpha also served the three curl requests, which carry no marker.
    let markers = |up: &Upstream| {
        up.seen()
            .iter()
            .filter(|s| s.path_and_query.contains("n="))
            .map(|s| marker(&s.path_and_query))
            .collect::<Vec<_>>()
    };
    assert_eq!(markers(&upstream), [0, 2]);
    assert_eq!(markers(&beta), [1]);
    assert_eq!(upstream.seen().len(), 5);
    // With no stream open, the connection is closed after idle_timeout (1 s).
    let ended = tokio::time::timeout(Duration::from_secs(10), client.driver).await;
    assert!(matches!(ended, Ok(Ok(_))), "an idle HTTP/2 connection outlived idle_timeout: {ended:?}");

    // A client that connects and sends nothing is closed after idle_timeout
    // too: waiting for the HTTP/2 preface is bounded like waiting for a request.
    let mut silent = tokio::net::TcpStream::connect(h2c.unified).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a silent connection outlived idle_timeout: {read:?}");

    // Without `http2 = true` the listener is HTTP/1.1 only: the preface is
    // no HTTP/1.1 request, and curl gets no HTTP/2 answer.
    let plain = router("", tenants, None);
    let (code, out, err) = curl(&["--http2-prior-knowledge"], &query(plain.base("unified")));
    // Pingora reads the preface as a malformed HTTP/1 request and closes
    // the connection without an answer: curl's "Empty reply from server".
    assert_eq!((code, out.as_str()), (52, "000 0"), "prior knowledge on an HTTP/1.1-only listener: {err}");
    let (code, out, err) = curl(&["--http1.1"], &query(plain.base("unified")));
    assert_eq!((code, out.as_str()), (0, "200 1.1"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deployments_with_http2_are_spoken_to_in_http2_over_tls_and_h2c() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = ca();
    let (cert, key, _) = leaf(&upstream_ca, &["127.0.0.1"]);
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, upstream_ca.cert.pem()).unwrap();
    // HTTP/2 only: ALPN h2 alone over TLS, prior knowledge in cleartext.
    let over_tls = H2Upstream::start("h2-tls", Some(tls::acceptor(&cert, &key, &[b"h2"]))).await;
    let h2c = H2Upstream::start("h2c", None).await;
    let http1_only_client = H2Upstream::start("h2-tls-for-http1", Some(tls::acceptor(&cert, &key, &[b"h2"]))).await;
    let tenants = format!(
        "[tenants.secure.metrics]\nendpoints = [\"https://{tls}\"]\nhttp2 = true\ntls = {{ ca_file = \"{ca}\" }}\n\
         [tenants.clear.metrics]\nendpoints = [\"http://{h2c}\"]\nhttp2 = true\n\
         [tenants.default.metrics]\nendpoints = [\"https://{other}\"]\ntls = {{ ca_file = \"{ca}\" }}\n",
        tls = over_tls.addr,
        h2c = h2c.addr,
        other = http1_only_client.addr,
        ca = ca_file.display(),
    );
    let router = router("", tenants, None);
    let unified = router.base("unified");

    for (tenant, upstream, scheme) in [("secure", &over_tls, "https"), ("clear", &h2c, "http")] {
        let response = client()
            .post(format!("{unified}/api/v1/import/prometheus?n=7"))
            .header("X-Tenant-ID", tenant)
            .body("up 1\n")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{tenant}");
        assert_eq!(response.headers()["x-upstream"], upstream.name.as_str(), "{tenant}");
        assert_eq!(response.version(), reqwest::Version::HTTP_11, "the client's side stays HTTP/1.1");
        let seen = upstream.seen();
        assert_eq!(seen.len(), 1, "{tenant}: {seen:?}");
        let seen = &seen[0];
        assert_eq!(seen.version, http::Version::HTTP_2, "{tenant}: the upstream saw HTTP/2");
        assert_eq!((seen.method.as_str(), seen.path_and_query.as_str()), ("POST", "/api/v1/import/prometheus?n=7"));
        assert_eq!(seen.scheme.as_deref(), Some(scheme), "{tenant}");
        assert_eq!(seen.authority.as_deref(), Some(upstream.addr.to_string().as_str()), "{tenant}");
        assert_eq!(seen.body_len, 5, "{tenant}");
        assert!(upstream.probes() >= 1, "{tenant}: health probes in HTTP/2 too");
        // The usage collector's first round (at start) reads /metrics in HTTP/2 too.
        wait_until("a usage read in HTTP/2", std::time::Duration::from_secs(10), || upstream.usage_reads() >= 1).await;
    }

    // Without `http2`, an https:// endpoint is offered HTTP/1.1 only: an
    // endpoint that speaks nothing but h2 refuses the handshake, never
    // becomes healthy, and the router answers 503 itself.
    let refused =
        client().get(format!("{unified}/api/v1/query")).header("X-Tenant-ID", "default").send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(http1_only_client.seen().is_empty() && http1_only_client.probes() == 0);
    assert!(http1_only_client.connections() >= 1, "the probe did connect");
}
