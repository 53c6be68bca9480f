//! `https://` endpoints: a CA generated in the test, server TLS and mutual
//! TLS through the real router binary, and a wrong CA refused with a clear
//! reason. Upstream credentials come from an environment variable or a file.

mod common;

use common::*;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::sync::Arc;
use tokio_rustls::rustls;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    Ca { cert: params.self_signed(&key).unwrap(), key }
}

/// A certificate for `names` signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// An HTTPS upstream on 127.0.0.1 answering `x-upstream: name`; with
/// `client_ca`, it requires a client certificate signed by that CA.
async fn https_upstream(
    name: &'static str,
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&Ca>,
) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert.der().clone()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let config = builder.with_single_cert(chain, PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else { return };
                let service =
                    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("x-upstream", name)
                                .header("x-seen-authorization", auth)
                                .body(Full::new(bytes::Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn https_endpoints_with_a_private_ca_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("mirador test server CA");
    let client_ca = ca("mirador test client CA");
    let other_ca = ca("somebody else's CA");
    let (server_cert, server_key) = leaf(&server_ca, &["127.0.0.1"]);
    let (client_cert, client_key) = leaf(&client_ca, &["mirador-router"]);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ca_file = write("server-ca.pem", &server_ca.cert.pem());
    let wrong_ca_file = write("other-ca.pem", &other_ca.cert.pem());
    let client_cert_file = write("client.pem", &client_cert);
    let client_key_file = write("client.key", &client_key);
    let token_file = write("upstream.token", "vm-token-from-a-file\n");

    let tls_only = https_upstream("tls", &server_cert, &server_key, None).await;
    let mutual = https_upstream("mtls", &server_cert, &server_key, Some(&client_ca)).await;
    let router = RouterProcess::start(&format!(
        "[tenants.tls.metrics]\nendpoints = [\"https://{tls_only}\"]\ntls = {{ ca_file = \"{ca_file}\" }}\n\
         upstream_auth = {{ bearer_token_file = \"{token_file}\" }}\n\
         [tenants.mtls.metrics]\nendpoints = [\"https://{mutual}\"]\n\
         tls = {{ ca_file = \"{ca_file}\", client_cert_file = \"{client_cert_file}\", client_key_file = \"{client_key_file}\" }}\n\
         [tenants.nocert.metrics]\nendpoints = [\"https://{mutual}\"]\ntls = {{ ca_file = \"{ca_file}\" }}\n\
         [tenants.wrongca.metrics]\nendpoints = [\"https://{tls_only}\"]\ntls = {{ ca_file = \"{wrong_ca_file}\" }}\n"
    ));
    let get = |tenant: &'static str| {
        client().get(format!("{}/api/v1/query", router.base("unified"))).header("X-Tenant-ID", tenant).send()
    };

    let ok = get("tls").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-upstream"], "tls");
    assert_eq!(ok.headers()["x-seen-authorization"], "Bearer vm-token-from-a-file", "the upstream credential is sent");
    let mutual_ok = get("mtls").await.unwrap();
    assert_eq!((mutual_ok.status().as_u16(), mutual_ok.headers()["x-upstream"].to_str().unwrap()), (200, "mtls"));

    // Without the client certificate, or trusting the wrong CA: the endpoint
    // never becomes healthy, the request gets 503, and the reason is plain.
    for (tenant, needle) in [("nocert", "CertificateRequired"), ("wrongca", "UnknownIssuer")] {
        let refused = get(tenant).await.unwrap();
        assert_eq!(refused.status(), 503, "{tenant}");
        let (_, health) = router.admin("GET", &format!("/api/v1/tenants/{tenant}/health"), None).await;
        let endpoint = &health["signals"]["metrics"]["endpoints"][0];
        let reason = endpoint["last_error"].as_str().unwrap_or_default();
        assert!(reason.contains(needle), "{tenant}: {endpoint}");
    }
    let log = router.log();
    assert!(
        log.contains("endpoint down at its first probe") && log.contains("UnknownIssuer"),
        "a clear log line for the wrong CA"
    );
    assert!(!log.contains("vm-token-from-a-file"), "secrets never reach the log");
    let (_, tenants) = router.admin("GET", "/api/v1/tenants/tls", None).await;
    assert!(!tenants.to_string().contains("vm-token-from-a-file"), "nor the admin API");
    let metrics = client().get(format!("http://{}/metrics", router.admin)).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("vm-token-from-a-file"));
}
