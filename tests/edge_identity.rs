//! Tenants proven by the connection or a token, against the real router:
//!
//! - client certificates (rcgen, checked by curl): a SPIFFE-style SAN URI of
//!   tenant A reaches A; A's certificate with the header naming B is 403; a
//!   valid certificate no tenant lists is 401; no certificate, or one from
//!   another CA, fails the handshake where one is required; an optional
//!   listener serves the header alone for an open tenant.
//! - JWTs (keys made in the test, JWKS served by a loopback server and
//!   rotated): ES256 and EdDSA tokens name their tenant; every refusal —
//!   expired, not yet valid, wrong issuer, wrong audience, unknown `kid`,
//!   bad signature, `alg: none`, HS256 signed with the public key — is 401
//!   with the reason in the log and not in the answer; the read-only claim
//!   refuses writes; a new `kid` is picked up and a removed one refused.

mod common;

use base64::Engine;
use common::tls::{ca, issue, write_pair, Ca};
use common::*;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------- mTLS

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const ACME_ID: &str = "spiffe://example.org/ns/acme/sa/vmagent";

/// curl to `url` on `tls` (as edge.test) with an optional client
/// certificate and headers: (exit code, "status" or stderr).
fn curl(ca_file: &Path, tls: SocketAddr, cert: Option<&(PathBuf, PathBuf)>, headers: &[&str]) -> (i32, String) {
    let resolve = format!("edge.test:{}:127.0.0.1", tls.port());
    let url = format!("https://edge.test:{}/api/v1/query?query=up", tls.port());
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "10", "--cacert", ca_file.to_str().unwrap(), "--resolve", &resolve]);
    command.args(["-o", "/dev/null", "-w", "%{http_code}"]);
    if let Some((cert, key)) = cert {
        command.args(["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    }
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command.arg(&url).output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let shown = if code == 0 { &out.stdout } else { &out.stderr };
    (code, String::from_utf8_lossy(shown).trim().to_string())
}

/// A router with TLS listeners `required` and `optional`, both asking for
/// client certificates of `client_ca`; tenants acme (its SPIFFE id), beta
/// (a DNS name) and open (no credentials).
fn mtls_router(
    dir: &Path,
    server: &Ca,
    client_ca: &Ca,
    ups: [&Upstream; 3],
    listeners: [SocketAddr; 2],
) -> RouterProcess {
    let (cert, key) = issue(server, "edge.test", &["edge.test"]);
    let (cert, key) = write_pair(dir, "edge", &cert, &key);
    let clients = write(dir, "clients-ca.pem", &client_ca.cert.pem());
    let pair = format!("certificates = [{{ cert_file = \"{}\", key_file = \"{}\" }}]", cert.display(), key.display());
    let tls = format!(
        "[[server.tls]]\nlisten = \"{}\"\n{pair}\nclient_ca_file = \"{}\"\nclient_cert = \"required\"\n\
         [[server.tls]]\nlisten = \"{}\"\n{pair}\nclient_ca_file = \"{}\"\nclient_cert = \"optional\"\n",
        listeners[0],
        clients.display(),
        listeners[1],
        clients.display()
    );
    RouterProcess::builder()
        .config_at(move |dir, text| {
            let path = dir.join("router.toml");
            std::fs::write(&path, format!("{text}\n{tls}")).unwrap();
            path
        })
        .tenants(format!(
            "[tenants.acme.auth]\nclient_cert_subjects = [\"{ACME_ID}\"]\n[tenants.acme.metrics]\nendpoints = [\"{}\"]\n\
             [tenants.beta.auth]\nclient_cert_subjects = [\"agent.beta.svc\"]\n[tenants.beta.metrics]\nendpoints = [\"{}\"]\n\
             [tenants.open.metrics]\nendpoints = [\"{}\"]\n",
            ups[0].url(),
            ups[1].url(),
            ups[2].url()
        ))
        .start()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_names_its_tenant_and_a_missing_or_foreign_one_fails_the_handshake() {
    let (acme, beta, open) =
        (Upstream::start("acme").await, Upstream::start("beta").await, Upstream::start("open").await);
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca, foreign_ca) = (ca(), ca(), ca());
    let (required, optional) = (free_addr(), free_addr());
    let router = mtls_router(dir.path(), &server_ca, &client_ca, [&acme, &beta, &open], [required, optional]);
    let ca_file = write(dir.path(), "ca.pem", &server_ca.cert.pem());
    let acme_cert = {
        let (cert, key) = issue(&client_ca, "vmagent", &[ACME_ID]);
        write_pair(dir.path(), "acme", &cert, &key)
    };
    let beta_cert = {
        let (cert, key) = issue(&client_ca, "Agent.Beta.Svc", &[]);
        write_pair(dir.path(), "beta", &cert, &key)
    };
    let stranger = {
        let (cert, key) = issue(&client_ca, "stranger", &["spiffe://example.org/ns/x/sa/y"]);
        write_pair(dir.path(), "stranger", &cert, &key)
    };
    let foreign = {
        let (cert, key) = issue(&foreign_ca, "vmagent", &[ACME_ID]);
        write_pair(dir.path(), "foreign", &cert, &key)
    };
    wait_until("the mTLS listener", Duration::from_secs(20), || {
        curl(&ca_file, required, Some(&acme_cert), &[]) == (0, "200".to_string())
    })
    .await;

    let paths = |up: &Upstream| up.seen().iter().filter(|s| s.path_and_query.starts_with("/api/v1/query")).count();
    assert_eq!(paths(&acme), 1, "the wait's request: the SAN URI alone names acme");
    // With its own name in the header too.
    assert_eq!(curl(&ca_file, required, Some(&acme_cert), &["X-Tenant-ID: acme"]), (0, "200".into()));
    // A CN (compared without case) names beta.
    assert_eq!(curl(&ca_file, required, Some(&beta_cert), &[]), (0, "200".into()));
    assert_eq!((paths(&acme), paths(&beta), paths(&open)), (2, 1, 0), "each certificate reached its own tenant only");
    // A's certificate with the header naming B.
    assert_eq!(curl(&ca_file, required, Some(&acme_cert), &["X-Tenant-ID: beta"]), (0, "403".into()));
    // A certificate with a wrong bearer token: the wrong credential is 401.
    assert_eq!(curl(&ca_file, required, Some(&acme_cert), &["Authorization: Bearer nope"]), (0, "401".into()));
    // Valid, but no tenant lists its names.
    assert_eq!(curl(&ca_file, required, Some(&stranger), &["X-Tenant-ID: open"]), (0, "401".into()));
    assert_eq!(paths(&open), 0);

    // No certificate, or one of another CA: the handshake fails (curl: no HTTP status).
    let (code, error) = curl(&ca_file, required, None, &["X-Tenant-ID: open"]);
    assert_ne!(code, 0, "no certificate where one is required: {error}");
    let (code, error) = curl(&ca_file, required, Some(&foreign), &[]);
    assert_ne!(code, 0, "a certificate of another CA: {error}");
    let (code, error) = curl(&ca_file, optional, Some(&foreign), &[]);
    assert_ne!(code, 0, "an invalid certificate fails even where one is optional: {error}");

    // Optional: the header alone serves an open tenant, not one with credentials.
    assert_eq!(curl(&ca_file, optional, None, &["X-Tenant-ID: open"]), (0, "200".into()));
    assert_eq!(curl(&ca_file, optional, None, &["X-Tenant-ID: acme"]), (0, "401".into()));
    assert_eq!(curl(&ca_file, optional, Some(&acme_cert), &[]), (0, "200".into()));
    assert_eq!((paths(&acme), paths(&open)), (3, 1));
    assert!(router.log().contains("client certificate refused"), "the refusal is logged");
}

// ---------------------------------------------------------------- JWT

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "mirador";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key made in the test, and its public JWK.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

fn es256(kid: &str) -> SigningKey {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    // The uncompressed point: 0x04 ‖ x ‖ y.
    let point = key.public_key_raw();
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    });
    SigningKey { kid: kid.into(), alg: Algorithm::ES256, encoding: EncodingKey::from_ec_der(&key.serialize_der()), jwk }
}

fn ed25519(kid: &str) -> SigningKey {
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(key.public_key_raw()) });
    SigningKey { kid: kid.into(), alg: Algorithm::EdDSA, encoding: EncodingKey::from_ed_der(&key.serialize_der()), jwk }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Standard claims for `tenant`, valid for ten minutes.
fn claims(tenant: &str) -> serde_json::Value {
    serde_json::json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": "agent", "exp": now() + 600, "nbf": now() - 5,
                        "mirador": { "tenant": tenant } })
}

fn sign(key: &SigningKey, claims: &serde_json::Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn jwks(keys: &[&SigningKey]) -> String {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// A loopback server answering every GET with the current JWKS text.
async fn jwks_server(body: Arc<Mutex<String>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let text = body.lock().unwrap().clone();
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(text)))) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service).await;
            });
        }
    });
    addr
}

/// A GET or POST through the router with `token`: the status and body.
async fn send(
    router: &RouterProcess,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let url = format!("{}{path}", router.base("unified"));
    let mut request = match method {
        "POST" => client().post(url).body("x"),
        _ => client().get(url),
    };
    request = request.header("Authorization", format!("Bearer {token}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn jwts_name_their_tenant_every_bad_token_is_401_and_the_key_set_rotates() {
    let (acme, beta, locked) =
        (Upstream::start("acme").await, Upstream::start("beta").await, Upstream::start("locked").await);
    let (k1, k2, k3) = (es256("k1"), ed25519("k2"), es256("k3"));
    let body = Arc::new(Mutex::new(jwks(&[&k1, &k2])));
    let jwks_addr = jwks_server(body.clone()).await;
    let router = RouterProcess::builder()
        .config_at(move |dir, text| {
            let path = dir.join("router.toml");
            let jwt = format!(
                "[tenancy.jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"http://{jwks_addr}/jwks\"\n\
                 jwks_refresh = \"1s\"\nalgorithms = [\"ES256\", \"EdDSA\"]\ntenant_claim = \"mirador.tenant\"\n\
                 read_only_claim = \"mirador.read_only\"\nleeway = \"0s\"\n"
            );
            // [tenancy] may already be in the text: put the sub-table last.
            std::fs::write(&path, format!("{text}\n{jwt}")).unwrap();
            path
        })
        .tenants(format!(
            "[tenants.acme.metrics]\nendpoints = [\"{}\"]\n[tenants.beta.metrics]\nendpoints = [\"{}\"]\n\
             [tenants.locked.auth]\nbearer_tokens_sha256 = [\"{}\"]\n[tenants.locked.metrics]\nendpoints = [\"{}\"]\n",
            acme.url(),
            beta.url(),
            "0".repeat(64),
            locked.url()
        ))
        .start();
    let query = "/api/v1/query?query=up";

    // Valid tokens: ES256 and EdDSA, alone or with their own tenant's header.
    assert_eq!(send(&router, "GET", query, &sign(&k1, &claims("acme")), &[]).await.0, 200);
    assert_eq!(send(&router, "GET", query, &sign(&k2, &claims("beta")), &[("X-Tenant-ID", "beta")]).await.0, 200);
    // A tenant with an auth table takes a JWT for it as its credential.
    assert_eq!(send(&router, "GET", query, &sign(&k1, &claims("locked")), &[]).await.0, 200);
    assert_eq!((acme.seen().len(), beta.seen().len(), locked.seen().len()), (1, 1, 1), "each to its own tenant");
    // A token for acme with the header naming beta.
    assert_eq!(send(&router, "GET", query, &sign(&k1, &claims("acme")), &[("X-Tenant-ID", "beta")]).await.0, 403);
    // A valid token naming no configured tenant.
    assert_eq!(send(&router, "GET", query, &sign(&k1, &claims("nobody")), &[]).await.0, 403);

    // Every refusal: 401, the reason in the log, not in the answer.
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("acme");
        change(&mut c);
        c
    };
    let other_key = es256("k1"); // same kid, another key: a bad signature
    let unknown_kid = es256("k9");
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let secret = k1.jwk.to_string();
        jsonwebtoken::encode(&header, &claims("acme"), &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let alg_none =
        format!("{}.{}.", b64(br#"{"alg":"none","kid":"k1","typ":"JWT"}"#), b64(claims("acme").to_string().as_bytes()));
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", sign(&k1, &with(&|c| c["exp"] = (now() - 60).into())), "ExpiredSignature"),
        ("not yet valid", sign(&k1, &with(&|c| c["nbf"] = (now() + 600).into())), "ImmatureSignature"),
        ("wrong issuer", sign(&k1, &with(&|c| c["iss"] = "https://evil.test".into())), "InvalidIssuer"),
        ("wrong audience", sign(&k1, &with(&|c| c["aud"] = "grafana".into())), "InvalidAudience"),
        ("no exp", sign(&k1, &with(&|c| c.as_object_mut().unwrap().retain(|k, _| k != "exp"))), "exp"),
        ("no tenant claim", sign(&k1, &with(&|c| c["mirador"] = serde_json::json!({}))), "mirador.tenant"),
        ("unknown kid", sign(&unknown_kid, &claims("acme")), "no key \"k9\""),
        ("bad signature", sign(&other_key, &claims("acme")), "InvalidSignature"),
        ("HS256 with the public key", hs256_with_public_key, "HS256"),
        ("alg none", alg_none, "not a JWT"),
        ("garbage", "aaa.bbb.ccc".to_string(), "not a JWT"),
    ];
    for (what, token, reason) in &cases {
        let (status, answer) = send(&router, "GET", query, token, &[("X-Tenant-ID", "acme")]).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert!(!answer.contains(reason), "{what}: the reason is not in the answer: {answer}");
        let log = router.log();
        assert!(log.lines().any(|l| l.contains("JWT refused") && l.contains(reason)), "{what}: {reason} not logged");
    }
    assert_eq!(acme.seen().len(), 1, "no refused token reached acme");

    // The read-only claim: reads pass, writes are refused.
    let reader = sign(&k1, &with(&|c| c["mirador"]["read_only"] = true.into()));
    assert_eq!(send(&router, "GET", query, &reader, &[]).await.0, 200);
    assert_eq!(send(&router, "POST", "/api/v1/write", &reader, &[]).await.0, 403);
    assert_eq!(send(&router, "POST", "/api/v1/write", &sign(&k1, &claims("acme")), &[]).await.0, 200);

    // Rotation: a new kid is picked up by the refresh, a removed one refused.
    let new_token = sign(&k3, &claims("acme"));
    assert_eq!(send(&router, "GET", query, &new_token, &[]).await.0, 401, "k3 is not published yet");
    *body.lock().unwrap() = jwks(&[&k2, &k3]);
    let old_token = sign(&k1, &claims("acme"));
    wait_until_async("the JWKS refresh", Duration::from_secs(20), || async {
        send(&router, "GET", query, &new_token, &[]).await.0 == 200
    })
    .await;
    assert_eq!(send(&router, "GET", query, &old_token, &[]).await.0, 401, "k1 was removed");
    // A broken JWKS keeps the last good set.
    *body.lock().unwrap() = "{not json".into();
    router.wait_for_log("JWKS refresh failed", 1);
    assert_eq!(send(&router, "GET", query, &new_token, &[]).await.0, 200, "the last good set stays");
    let metrics = client().get(format!("http://{}/metrics", router.admin)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mirador_router_jwks_refreshes_total{result=\"failure\"}"), "{metrics}");
}

// ---------------------------------------------------------------- real clients

/// Whether `vm` holds series `name`, after a flush.
async fn holds(vm: SocketAddr, name: &str) -> bool {
    common::victoria::force_flush(vm).await;
    let url = format!("http://{vm}/api/v1/series?match[]={name}");
    client().get(url).send().await.unwrap().text().await.unwrap().contains(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn vmagent_proves_its_tenant_by_client_certificate_and_by_jwt() {
    let dir = tempfile::tempdir().unwrap();
    let (_acme_vm, acme_vm) = common::victoria::start_victoria_metrics(dir.path(), "acme").await;
    let (_beta_vm, beta_vm) = common::victoria::start_victoria_metrics(dir.path(), "beta").await;
    let (server_ca, client_ca) = (ca(), ca());
    let (cert, key) = issue(&server_ca, "edge.test", &["edge.test"]);
    let (cert, key) = write_pair(dir.path(), "edge", &cert, &key);
    let ca_file = write(dir.path(), "ca.pem", &server_ca.cert.pem());
    let clients = write(dir.path(), "clients-ca.pem", &client_ca.cert.pem());
    let agent_cert = {
        let (cert, key) = issue(&client_ca, "vmagent", &[ACME_ID]);
        write_pair(dir.path(), "agent", &cert, &key)
    };
    let signing = es256("idp-1");
    let jwks_file = write(dir.path(), "jwks.json", &jwks(&[&signing]));
    let tls = free_addr();
    let config = format!(
        "[[server.tls]]\nlisten = \"{tls}\"\ncertificates = [{{ cert_file = \"{}\", key_file = \"{}\" }}]\n\
         client_ca_file = \"{}\"\n\
         [tenancy.jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_file = \"{}\"\n\
         tenant_claim = \"mirador.tenant\"\n",
        cert.display(),
        key.display(),
        clients.display(),
        jwks_file.display()
    );
    let router = RouterProcess::builder()
        .config_at(move |dir, text| {
            let path = dir.join("router.toml");
            std::fs::write(&path, format!("{text}\n{config}")).unwrap();
            path
        })
        .tenants(format!(
            "[tenants.acme.auth]\nclient_cert_subjects = [\"{ACME_ID}\"]\n[tenants.acme.metrics]\nendpoints = [\"http://{acme_vm}\"]\n\
             [tenants.beta.metrics]\nendpoints = [\"http://{beta_vm}\"]\n"
        ))
        .start();

    // vmagent with its client certificate over TLS: no header, no token.
    let tls_flags = [
        format!("-remoteWrite.tlsCAFile={}", ca_file.display()),
        "-remoteWrite.tlsServerName=edge.test".to_string(),
        format!("-remoteWrite.tlsCertFile={}", agent_cert.0.display()),
        format!("-remoteWrite.tlsKeyFile={}", agent_cert.1.display()),
    ];
    let tls_flags: Vec<&str> = tls_flags.iter().map(String::as_str).collect();
    let url = format!("https://{tls}/api/v1/write");
    let (_a, by_cert) = common::victoria::start_vmagent(&dir.path().join("a"), &url, &tls_flags).await;
    // vmagent with a JWT on the plain listener.
    let token = format!("-remoteWrite.bearerToken={}", sign(&signing, &claims("beta")));
    let url = format!("{}/api/v1/write", router.base("unified"));
    let (_b, by_jwt) = common::victoria::start_vmagent(&dir.path().join("b"), &url, &[token.as_str()]).await;
    for (agent, series) in [(by_cert, "mirador_mtls_e2e"), (by_jwt, "mirador_jwt_e2e")] {
        let pushed = client()
            .post(format!("http://{agent}/api/v1/import/prometheus"))
            .body(format!("{series} 1\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(pushed.status(), 204);
    }
    wait_until_async("both series in their tenants' instances", Duration::from_secs(60), || async {
        holds(acme_vm, "mirador_mtls_e2e").await && holds(beta_vm, "mirador_jwt_e2e").await
    })
    .await;
    assert!(!holds(beta_vm, "mirador_mtls_e2e").await, "acme's series is not in beta's instance");
    assert!(!holds(acme_vm, "mirador_jwt_e2e").await, "beta's series is not in acme's instance");
    drop(router);
}
