//! Validation of the secrets of a tenant: credential hashes, and upstream
//! credentials and TLS material from the environment or files (as gathered
//! in [`Inputs`]). Secrets are wrapped in [`Secret`] so that no `Debug`
//! print, log line or API answer shows them.

use super::check::Problems;
use super::error::KeyPath;
use super::inputs::Inputs;
use super::model::{Auth, Secret, Tenant, UpstreamTls};
use super::raw::{RawAuth, RawBasicUser, RawUpstreamAuth, RawUpstreamTls};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::{BTreeMap, HashMap};

/// A hex SHA-256 digest: 64 hex digits.
fn digest(text: &str, path: &KeyPath, problems: &mut Problems) -> Option<[u8; 32]> {
    let text = text.trim();
    let mut out = [0u8; 32];
    let ok = text.len() == 64
        && (0..32).all(|i| match u8::from_str_radix(text.get(2 * i..2 * i + 2).unwrap_or("zz"), 16) {
            Ok(byte) => {
                out[i] = byte;
                true
            }
            Err(_) => false,
        });
    if !ok {
        problems.add(
            path,
            "must be a hex SHA-256 digest (64 hex digits), e.g. the output of `printf %s TOKEN | sha256sum`",
        );
        return None;
    }
    Some(out)
}

pub(super) fn auth(raw: RawAuth, path: &KeyPath, inputs: &Inputs, problems: &mut Problems) -> Auth {
    let RawAuth { bearer_tokens_sha256, bearer_tokens_sha256_file, basic_auth, client_cert_subjects } = raw;
    let mut bearer: Vec<[u8; 32]> = bearer_tokens_sha256
        .iter()
        .enumerate()
        .filter_map(|(i, hex)| digest(hex, &path.key("bearer_tokens_sha256").index(i), problems))
        .collect();
    if let Some(file) = bearer_tokens_sha256_file {
        let at = path.key("bearer_tokens_sha256_file");
        match inputs.text(&file) {
            Ok(text) => {
                bearer.extend(text.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| digest(l, &at, problems)))
            }
            Err(why) => problems.add(&at, why),
        }
    }
    let basic = basic_auth
        .into_iter()
        .enumerate()
        .filter_map(|(i, RawBasicUser { username, password_sha256 })| {
            let at = path.key("basic_auth").index(i);
            if username.is_empty() || username.contains(':') {
                problems.add(&at.key("username"), "must be non-empty and contain no ':'");
            }
            Some((username, digest(&password_sha256, &at.key("password_sha256"), problems)?))
        })
        .collect::<Vec<_>>();
    for (i, subject) in client_cert_subjects.iter().enumerate() {
        if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN || subject.chars().any(char::is_control) {
            problems.add(
                &path.key("client_cert_subjects").index(i),
                format!("must be a certificate name (SAN URI, SAN DNS or CN) of 1 to {MAX_SUBJECT_LEN} characters"),
            );
        }
    }
    if bearer.is_empty() && basic.is_empty() && client_cert_subjects.is_empty() {
        problems.add(
            path,
            "lists no credential: add bearer_tokens_sha256, basic_auth or client_cert_subjects, or remove the table",
        );
    }
    // DNS names compare without case, as certificates are read.
    let cert_subjects = client_cert_subjects.into_iter().map(|s| subject_key(&s)).collect();
    Auth { bearer_sha256: bearer, basic, cert_subjects }
}

/// Longest client certificate name a tenant may list.
pub const MAX_SUBJECT_LEN: usize = 1024;

/// A certificate name as compared: URIs as written, other names (DNS, CN) in
/// lower case.
pub fn subject_key(name: &str) -> String {
    if name.contains("://") {
        name.to_string()
    } else {
        name.to_ascii_lowercase()
    }
}

/// A credential must identify one tenant: no token hash or basic-auth user
/// may belong to two.
pub(super) fn credentials_unique(tenants: &BTreeMap<String, std::sync::Arc<Tenant>>, problems: &mut Problems) {
    let mut tokens: HashMap<[u8; 32], &str> = HashMap::new();
    let mut users: HashMap<&str, &str> = HashMap::new();
    let mut subjects: HashMap<&str, &str> = HashMap::new();
    for (id, tenant) in tenants {
        let Some(auth) = &tenant.auth else { continue };
        let path = KeyPath::root().key("tenants").key(id).key("auth");
        for token in &auth.bearer_sha256 {
            if let Some(other) = tokens.insert(*token, id).filter(|other| other != id) {
                problems.add(
                    &path.key("bearer_tokens_sha256"),
                    format!("a token hash is also tenant {other:?}'s: a credential must name one tenant"),
                );
            }
        }
        for (user, _) in &auth.basic {
            if let Some(other) = users.insert(user, id).filter(|other| other != id) {
                problems.add(
                    &path.key("basic_auth"),
                    format!("user {user:?} is also tenant {other:?}'s: a credential must name one tenant"),
                );
            }
        }
        for subject in &auth.cert_subjects {
            if let Some(other) = subjects.insert(subject, id).filter(|other| other != id) {
                problems.add(
                    &path.key("client_cert_subjects"),
                    format!("{subject:?} is also tenant {other:?}'s: a credential must name one tenant"),
                );
            }
        }
    }
}

/// The `Authorization` value to send upstream, from env or file.
pub(super) fn upstream_auth(
    raw: RawUpstreamAuth,
    path: &KeyPath,
    inputs: &Inputs,
    problems: &mut Problems,
) -> Option<Secret> {
    let RawUpstreamAuth { bearer_token_env, bearer_token_file, username, password_env, password_file } = raw;
    let read = |env: Option<String>, file: Option<String>, what: &str, problems: &mut Problems| -> Option<String> {
        let value = match (env, file) {
            (Some(name), None) => inputs.env(&name).ok_or_else(|| format!("environment variable {name} is not set")),
            (None, Some(file)) => inputs.text(&file),
            (Some(_), Some(_)) => Err(format!("set {what}_env or {what}_file, not both")),
            (None, None) => Err(format!("needs {what}_env or {what}_file")),
        };
        match value.map(|v| v.trim().to_string()) {
            Ok(v) if !v.is_empty() => Some(v),
            Ok(_) => {
                problems.add(path, format!("the {what} is empty"));
                None
            }
            Err(why) => {
                problems.add(path, why);
                None
            }
        }
    };
    let header = match username {
        Some(user) => {
            if bearer_token_env.is_some() || bearer_token_file.is_some() {
                problems.add(path, "set a bearer token or a username and password, not both");
                return None;
            }
            let password = read(password_env, password_file, "password", problems)?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {encoded}")
        }
        None => format!("Bearer {}", read(bearer_token_env, bearer_token_file, "bearer_token", problems)?),
    };
    if http::HeaderValue::from_str(&header).is_err() {
        problems.add(path, "the credential has characters a header cannot carry");
        return None;
    }
    Some(Secret(header))
}

/// Certificates (and a key) for TLS to the deployment, read and parsed now so
/// that a bad file is a config error, never a failure on the request path.
pub(super) fn upstream_tls(
    raw: RawUpstreamTls,
    path: &KeyPath,
    inputs: &Inputs,
    problems: &mut Problems,
) -> Option<UpstreamTls> {
    let RawUpstreamTls { ca_file, client_cert_file, client_key_file } = raw;
    let certs = |file: &str, key: &str, problems: &mut Problems| -> Option<Vec<Vec<u8>>> {
        match pem_certificates(inputs, file) {
            Ok(certs) if certs.iter().any(|der| x509_parser::parse_x509_certificate(der).is_err()) => {
                problems.add(&path.key(key), format!("{file} holds a certificate that does not parse"))
            }
            Ok(certs) => return Some(certs.iter().map(|der| der.to_vec()).collect()),
            Err(why) => problems.add(&path.key(key), why),
        }
        None
    };
    let ca = match &ca_file {
        Some(file) => certs(file, "ca_file", problems)?,
        None => Vec::new(),
    };
    let client = match (client_cert_file, client_key_file) {
        (None, None) => None,
        (Some(cert_file), Some(key_file)) => {
            let chain = certs(&cert_file, "client_cert_file", problems)?;
            match pem_key(inputs, &key_file) {
                Ok(key) => Some((chain, key.secret_der().to_vec())),
                Err(why) => {
                    problems.add(&path.key("client_key_file"), why);
                    return None;
                }
            }
        }
        _ => {
            problems.add(path, "client_cert_file and client_key_file go together");
            return None;
        }
    };
    if ca.is_empty() && client.is_none() {
        problems.add(path, "sets nothing: give ca_file, or client_cert_file and client_key_file");
        return None;
    }
    Some(UpstreamTls { ca, client })
}

/// The PEM certificates of `file`, in order; why not when it cannot be
/// read, does not parse as PEM, or holds none.
pub(super) fn pem_certificates(inputs: &Inputs, file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> = inputs.bytes(file).and_then(|pem| {
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| format!("{file}: {e}"))
    })?;
    if chain.is_empty() {
        return Err(format!("{file} holds no PEM certificate"));
    }
    Ok(chain)
}

/// The PEM private key of `file`, or why there is none.
pub(super) fn pem_key(inputs: &Inputs, file: &str) -> Result<PrivateKeyDer<'static>, String> {
    inputs.bytes(file).and_then(|pem| {
        PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("cannot read a PEM private key from {file}: {e}"))
    })
}
