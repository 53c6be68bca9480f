//! TLS listeners: their certificate chains and keys, read through the
//! gathered [`Inputs`], parsed, checked to match, and bounded in time — so
//! that a listener `--check` accepts can hand every certificate out.

use super::check::{listen_addr, Problems};
use super::error::KeyPath;
use super::inputs::Inputs;
use super::model::{der_fingerprint, ClientCertificates, ServedCertificate, TlsListener};
use super::raw::{ClientCertMode, RawCertificate, RawTlsListener};
use super::secrets;
use std::sync::Arc;

/// Most certificates one listener serves.
pub const MAX_CERTIFICATES: usize = 64;
/// A certificate closer to its end than this is a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

pub(super) fn tls_listeners(
    raw: Vec<RawTlsListener>,
    path: &KeyPath,
    inputs: &Inputs,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Vec<TlsListener> {
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, RawTlsListener { listen, certificates, http2, client_ca_file, client_cert })| {
            let at = path.index(i);
            let Some(listen) = listen else {
                problems.add(&at.key("listen"), "a TLS listener needs its address, e.g. \"0.0.0.0:8443\"");
                return None;
            };
            let listen = listen_addr(&listen, &at.key("listen"), problems);
            if certificates.is_empty() {
                problems.add(&at.key("certificates"), "a TLS listener needs at least one certificate");
            }
            if certificates.len() > MAX_CERTIFICATES {
                problems.add(&at.key("certificates"), format!("more than {MAX_CERTIFICATES} certificates"));
            }
            let certificates: Vec<ServedCertificate> = certificates
                .into_iter()
                .enumerate()
                .filter_map(|(j, raw)| certificate(raw, &at.key("certificates").index(j), inputs, problems, warnings))
                .collect();
            let clients = match (client_ca_file, client_cert) {
                (Some(ca_file), mode) => {
                    client_certificates(ca_file, mode.unwrap_or_default(), &at.key("client_ca_file"), inputs, problems)
                }
                (None, Some(_)) => {
                    problems.add(
                        &at.key("client_cert"),
                        "needs client_ca_file: the CAs client certificates are checked against",
                    );
                    None
                }
                (None, None) => None,
            };
            Some(TlsListener { listen: listen?, certificates, http2: http2.unwrap_or(true), clients })
        })
        .collect()
}

fn certificate(
    raw: RawCertificate,
    path: &KeyPath,
    inputs: &Inputs,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<ServedCertificate> {
    let RawCertificate { cert_file, key_file } = raw;
    let now = inputs.now();
    let chain = match secrets::pem_certificates(inputs, &cert_file) {
        Ok(chain) => chain,
        Err(why) => {
            problems.add(&path.key("cert_file"), why);
            return None;
        }
    };
    let key = match secrets::pem_key(inputs, &key_file) {
        Ok(key) => key,
        Err(why) => {
            problems.add(&path.key("key_file"), why);
            return None;
        }
    };
    let (subject, names, not_after) = match x509_parser::parse_x509_certificate(&chain[0]) {
        Ok((_, leaf)) => {
            let subject = leaf.subject().to_string();
            let mut names: Vec<String> = leaf
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|name| match name {
                            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            if names.is_empty() {
                let cn = leaf.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
                names.extend(cn.map(str::to_ascii_lowercase));
            }
            (subject, names, leaf.validity().not_after.timestamp())
        }
        Err(e) => {
            problems.add(&path.key("cert_file"), format!("{cert_file}: the first certificate does not parse ({e})"));
            return None;
        }
    };
    if not_after <= now {
        problems.add(&path.key("cert_file"), format!("{cert_file} ({subject}) expired at {}", shown(not_after)));
        return None;
    }
    if not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
        warnings.push(format!(
            "{}: {cert_file} ({subject}) expires at {}, in under {EXPIRY_WARNING_DAYS} days",
            path,
            shown(not_after)
        ));
    }
    let fingerprint = der_fingerprint(chain.iter().map(|c| c.as_ref()).chain(std::iter::once(key.secret_der())));
    let provider = rustls::crypto::ring::default_provider();
    match rustls::sign::CertifiedKey::from_der(chain, key, &provider) {
        Ok(certified) => Some(ServedCertificate {
            cert_file,
            subject,
            names,
            not_after,
            certified: Arc::new(certified),
            fingerprint,
        }),
        Err(e) => {
            problems.add(&path.key("key_file"), format!("{key_file} is not the key of {cert_file}: {e}"));
            None
        }
    }
}

/// The verifier of a listener's client certificates: the CAs of `ca_file`
/// (rustls' WebPKI verifier, with the ring provider the listeners use).
fn client_certificates(
    ca_file: String,
    mode: ClientCertMode,
    path: &KeyPath,
    inputs: &Inputs,
    problems: &mut Problems,
) -> Option<ClientCertificates> {
    let cas = secrets::pem_certificates(inputs, &ca_file).map_err(|why| problems.add(path, why)).ok()?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, ca) in cas.iter().enumerate() {
        if let Err(e) = roots.add(ca.clone()) {
            problems.add(path, format!("{ca_file}: certificate {} is not a usable CA: {e}", i + 1));
            return None;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let required = mode == ClientCertMode::Required;
    let builder = if required { builder } else { builder.allow_unauthenticated() };
    match builder.build() {
        Ok(verifier) => Some(ClientCertificates {
            fingerprint: der_fingerprint(cas.iter().map(|c| c.as_ref())),
            ca_file,
            required,
            verifier,
        }),
        Err(e) => {
            problems.add(path, format!("{ca_file}: {e}"));
            None
        }
    }
}

fn shown(unix: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}
