//! TLS listeners of the real router with certificates made in the test
//! (rcgen): the certificate chosen by SNI (exact, wildcard, default),
//! HTTP/2 by ALPN (`curl --http2`), TLS 1.1 refused (`openssl s_client`), `X-Forwarded-Proto:
//! https` upstream, the expiry gauge, and certificates rotated by SIGHUP
//! under a loop of new handshakes — none fails, new ones get the new
//! certificate, an established connection goes on, and a broken rotated key
//! is refused with the old certificate still served.

mod common;

use common::tls::{self, ca, leaf, write_pair};
use common::*;
use rcgen::{CertificateParams, KeyPair};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;

fn connector() -> tokio_rustls::TlsConnector {
    tls::any_certificate_connector(&[])
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `addr` naming `sni`, and the leaf certificate it got.
async fn handshake(addr: SocketAddr, sni: &str) -> std::io::Result<(Tls, Vec<u8>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = connector().connect(name, tcp).await?;
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    Ok((tls, leaf))
}

/// One HTTP/1.1 query for tenant acme on `tls`: the status line.
async fn query(tls: &mut Tls) -> std::io::Result<String> {
    tls.write_all(b"GET /api/v1/query HTTP/1.1\r\nHost: edge.test\r\nX-Tenant-ID: acme\r\n\r\n").await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The stand-in answers with its name: "up".
    while !seen.ends_with(b"\r\n\r\nup") {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other(format!("closed: {}", String::from_utf8_lossy(&seen))));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&seen).lines().next().unwrap_or("").to_string())
}

/// A router with one TLS listener serving `pairs` (the first the default).
fn router_with_tls(up: &Upstream, tls: SocketAddr, pairs: Vec<(PathBuf, PathBuf)>) -> RouterProcess {
    let certificates: Vec<String> = pairs
        .iter()
        .map(|(c, k)| format!("{{ cert_file = \"{}\", key_file = \"{}\" }}", c.display(), k.display()))
        .collect();
    let table = format!("[[server.tls]]\nlisten = \"{tls}\"\ncertificates = [{}]\n", certificates.join(", "));
    RouterProcess::builder()
        .config_at(move |dir, text| {
            let path = dir.join("router.toml");
            std::fs::write(&path, format!("{text}\n{table}")).unwrap();
            path
        })
        .tenants(format!("[tenants.acme.metrics]\nendpoints = [\"{}\"]\n", up.url()))
        .start()
}

async fn wait_tls(addr: SocketAddr) {
    wait_until_async("the TLS listener", Duration::from_secs(20), || async {
        handshake(addr, "edge.test").await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_chooses_the_certificate_http2_is_offered_and_tls_1_1_is_refused() {
    let up = Upstream::start("up").await;
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let default = leaf(&ca, &["edge.test"]);
    let other = leaf(&ca, &["other.test", "*.wild.test"]);
    let pairs = vec![
        write_pair(dir.path(), "default", &default.0, &default.1),
        write_pair(dir.path(), "other", &other.0, &other.1),
    ];
    let tls = free_addr();
    let router = router_with_tls(&up, tls, pairs);
    wait_tls(tls).await;
    for (sni, expected) in [
        ("edge.test", &default.2),
        ("other.test", &other.2),
        ("OTHER.test", &other.2),
        ("a.wild.test", &other.2),
        ("a.b.wild.test", &default.2),
        ("nothing.test", &default.2),
    ] {
        let (mut stream, got) = handshake(tls, sni).await.unwrap();
        assert!(&got == expected, "SNI {sni} got the wrong certificate");
        assert_eq!(query(&mut stream).await.unwrap(), "HTTP/1.1 200 OK", "{sni}");
    }
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // HTTP/2 by ALPN, with curl verifying the chain against the test CA.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let curl = |args: &[&str]| std::process::Command::new("curl").args(args).output().unwrap();
    let resolve = format!("other.test:{}:127.0.0.1", tls.port());
    let url = format!("https://other.test:{}/api/v1/query", tls.port());
    let h2 = curl(&[
        "-sS",
        "--http2",
        "--cacert",
        ca_file.to_str().unwrap(),
        "--resolve",
        &resolve,
        "-H",
        "X-Tenant-ID: acme",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&h2.stdout), "200 2", "{}", String::from_utf8_lossy(&h2.stderr));
    // TLS 1.1 offered alone: the router answers with an alert (rustls:
    // handshake_failure, 40) and no session is made.
    let old = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &tls.to_string(), "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&old.stdout), String::from_utf8_lossy(&old.stderr));
    assert!(!old.status.success() && said.contains("SSL alert number") && said.contains("Cipher is (NONE)"), "{said}");

    // Each served certificate's expiry, by listener and subject.
    let metrics = client().get(format!("http://{}/metrics", router.admin)).send().await.unwrap().text().await.unwrap();
    let gauge = format!(
        "mirador_router_tls_certificate_expiry_timestamp_seconds{{listener=\"{tls}\",subject=\"CN=other.test\"}}"
    );
    assert!(metrics.contains(&gauge), "{gauge} not in\n{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotate_on_reload_under_new_handshakes_and_a_broken_one_is_refused() {
    let up = Upstream::start("up").await;
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let first = leaf(&ca, &["edge.test"]);
    let pair = write_pair(dir.path(), "edge", &first.0, &first.1);
    let tls = free_addr();
    let router = router_with_tls(&up, tls, vec![pair]);
    wait_tls(tls).await;
    // An established keep-alive connection, from before the rotation.
    let (mut established, got) = handshake(tls, "edge.test").await.unwrap();
    assert!(got == first.2);
    assert_eq!(query(&mut established).await.unwrap(), "HTTP/1.1 200 OK");

    // New handshakes in a loop, each with a request, recording what they got.
    let stop = Arc::new(AtomicBool::new(false));
    let (failures, handshakes) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicUsize::new(0)));
    let seen_leaves = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let looping = {
        let (stop, failures, handshakes, seen_leaves) =
            (stop.clone(), failures.clone(), handshakes.clone(), seen_leaves.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match handshake(tls, "edge.test").await {
                    Ok((mut stream, leaf)) => match query(&mut stream).await {
                        Ok(status) if status == "HTTP/1.1 200 OK" => {
                            seen_leaves.lock().unwrap().push(leaf);
                            handshakes.fetch_add(1, Ordering::SeqCst);
                        }
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    },
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // cert-manager style: the files are replaced in place, then SIGHUP.
    let second = leaf(&ca, &["edge.test"]);
    write_pair(dir.path(), "edge", &second.0, &second.1);
    router.signal("HUP");
    wait_until("new handshakes to get the rotated certificate", Duration::from_secs(20), || {
        seen_leaves.lock().unwrap().last().is_some_and(|leaf| *leaf == second.2)
    })
    .await;
    assert_eq!(query(&mut established).await.unwrap(), "HTTP/1.1 200 OK", "the established connection went on");

    // A broken rotation (a key of another certificate): refused, the second kept.
    let third = leaf(&ca, &["edge.test"]);
    write_pair(dir.path(), "edge", &third.0, &first.1);
    router.signal("HUP");
    router.wait_for_log("is not the key of", 1);
    let before = handshakes.load(Ordering::SeqCst);
    wait_until("more handshakes after the refused reload", Duration::from_secs(10), || {
        handshakes.load(Ordering::SeqCst) > before + 20
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    looping.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed handshakes or requests: {failures:?}");
    let leaves = seen_leaves.lock().unwrap().clone();
    assert!(leaves.iter().all(|leaf| *leaf == first.2 || *leaf == second.2), "the broken certificate was served");
    assert!(leaves.last() == Some(&second.2), "the rotated certificate is no longer served");
    let rotated_at = leaves.iter().position(|leaf| *leaf == second.2).unwrap();
    assert!(leaves[rotated_at..].iter().all(|leaf| *leaf == second.2), "the old certificate came back");
    eprintln!("{} handshakes, rotated after {rotated_at}", leaves.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn vmagent_writes_over_https_and_the_series_is_read_back_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (_vm, vm) = common::victoria::start_victoria_metrics(dir.path(), "vm").await;
    let ca = ca();
    let cert = leaf(&ca, &["edge.test"]);
    let pair = write_pair(dir.path(), "edge", &cert.0, &cert.1);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let tls = free_addr();
    let router = RouterProcess::builder()
        .config_at(move |dir, text| {
            let path = dir.join("router.toml");
            let table = format!(
                "[[server.tls]]\nlisten = \"{tls}\"\ncertificates = [{{ cert_file = \"{}\", key_file = \"{}\" }}]\n",
                pair.0.display(),
                pair.1.display()
            );
            std::fs::write(&path, format!("{text}\n{table}")).unwrap();
            path
        })
        .tenants(format!("[tenants.acme.metrics]\nendpoints = [\"http://{vm}\"]\n"))
        .start();
    wait_tls(tls).await;
    // vmagent verifies the router's certificate with the test CA, as edge.test.
    let url = format!("https://{tls}/api/v1/write");
    let ca_flag = format!("-remoteWrite.tlsCAFile={}", ca_file.display());
    let flags = [ca_flag.as_str(), "-remoteWrite.tlsServerName=edge.test", "-remoteWrite.headers=X-Tenant-ID:acme"];
    let (_vmagent, agent) = common::victoria::start_vmagent(&dir.path().join("vmagent"), &url, &flags).await;
    let pushed = client()
        .post(format!("http://{agent}/api/v1/import/prometheus"))
        .body("mirador_https_e2e 42\n")
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 204);
    // Read back through the TLS listener over HTTP/2.
    let resolve = format!("edge.test:{}:127.0.0.1", tls.port());
    let url = format!("https://edge.test:{}/api/v1/series?match[]=mirador_https_e2e", tls.port());
    let answer = Wait::new("the series over HTTPS and HTTP/2", Duration::from_secs(60))
        .every(Duration::from_millis(300))
        .until_async(|| {
            let (ca_file, resolve, url) = (ca_file.clone(), resolve.clone(), url.clone());
            async move {
                common::victoria::force_flush(vm).await;
                let out = std::process::Command::new("curl")
                    .args(["-sS", "--http2", "--cacert", ca_file.to_str().unwrap(), "--resolve", &resolve])
                    .args(["-H", "X-Tenant-ID: acme", "-w", "\n%{http_version}", &url])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                text.contains("mirador_https_e2e").then_some(text)
            }
        })
        .await;
    assert!(answer.ends_with("\n2"), "not HTTP/2: {answer}");
    drop(router);
}

#[test]
fn check_accepts_a_certificate_about_to_expire_with_a_warning() {
    let ca = ca();
    let mut params = CertificateParams::new(vec!["soon.test".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    (params.not_before, params.not_after) = (now - time::Duration::days(30), now + time::Duration::days(3));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = write_pair(dir.path(), "soon", &cert.pem(), &key.serialize_pem());
    let config = dir.path().join("router.toml");
    std::fs::write(
        &config,
        format!(
            "[[server.tls]]\nlisten = \"127.0.0.1:18443\"\ncertificates = [{{ cert_file = \"{}\", key_file = \"{}\" }}]\n",
            cert_file.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirador-router"))
        .args(["--config", config.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: server.tls[0].certificates[0]:") && stderr.contains("in under 14 days"),
        "{stderr}"
    );
}
