//! `[tenancy.jwt]`: how JWT bearer tokens are verified, and the JWKS they
//! are verified with — read through the gathered [`Inputs`] (a file, or a
//! URL fetched at load) and parsed here, so that `--check` shows a key set
//! that does not parse. The tokens themselves are verified on the request
//! path, in `routing`.

use super::check::{duration, Bounds, Problems};
use super::error::KeyPath;
use super::inputs::Inputs;
use super::model::{JwksSource, Jwt, KeySet, VerificationKey};
use super::raw::RawJwt;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::sync::Arc;
use std::time::Duration;

/// Most keys one JWKS may hold.
pub const MAX_JWKS_KEYS: usize = 100;
/// The algorithms allowed when `algorithms` is not given.
const DEFAULT_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
/// `jwks_refresh`: a second to a day.
const REFRESH_BOUNDS: Bounds = (Duration::from_secs(1), Duration::from_secs(86_400));
/// `leeway`: none to ten minutes.
const LEEWAY_BOUNDS: Bounds = (Duration::ZERO, Duration::from_secs(600));
/// Most levels of a claim path.
const MAX_CLAIM_DEPTH: usize = 8;

pub(super) fn jwt(
    raw: RawJwt,
    path: &KeyPath,
    inputs: &Inputs,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<Jwt> {
    let RawJwt {
        issuer,
        audience,
        jwks_file,
        jwks_url,
        jwks_refresh,
        algorithms,
        tenant_claim,
        read_only_claim,
        leeway,
    } = raw;
    let mut required = |value: Option<String>, key: &str, example: &str| {
        let value = value.filter(|v| !v.is_empty());
        if value.is_none() {
            problems.add(&path.key(key), format!("is required: every token is checked for it, e.g. {example}"));
        }
        value
    };
    let issuer = required(issuer, "issuer", "\"https://idp.example\"");
    let audience = required(audience, "audience", "\"mirador\"");
    let tenant_claim = required(tenant_claim, "tenant_claim", "\"tenant\" or \"mirador.tenant\"");
    let tenant_claim = tenant_claim.and_then(|claim| claim_path(&claim, &path.key("tenant_claim"), problems));
    let read_only_claim = read_only_claim.map(|claim| claim_path(&claim, &path.key("read_only_claim"), problems));
    let algorithms = match algorithms {
        None => DEFAULT_ALGORITHMS.to_vec(),
        Some(names) => names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                algorithm(name).map_err(|why| problems.add(&path.key("algorithms").index(i), why)).ok()
            })
            .collect(),
    };
    if algorithms.is_empty() {
        problems.add(&path.key("algorithms"), "lists no algorithm: tokens could never verify");
    }
    let refresh = duration(
        jwks_refresh.as_deref(),
        Duration::from_secs(300),
        REFRESH_BOUNDS,
        &path.key("jwks_refresh"),
        problems,
    );
    // A longer clock skew would keep expired tokens valid.
    let leeway = duration(leeway.as_deref(), Duration::from_secs(30), LEEWAY_BOUNDS, &path.key("leeway"), problems);
    let (source, at) = match (jwks_file, jwks_url) {
        (Some(file), None) => (JwksSource::File(file), path.key("jwks_file")),
        (None, Some(url)) => {
            if let Err(why) = check_jwks_url(&url) {
                problems.add(&path.key("jwks_url"), why);
            }
            (JwksSource::Url(url), path.key("jwks_url"))
        }
        (Some(_), Some(_)) => {
            problems.add(path, "set jwks_file or jwks_url, not both");
            return None;
        }
        (None, None) => {
            problems.add(path, "needs jwks_file or jwks_url: the keys tokens are verified with");
            return None;
        }
    };
    let read = inputs.bytes(source.as_str()).and_then(|bytes| key_set(bytes, &algorithms));
    let keys = match (read, &source) {
        (Ok(keys), _) => keys,
        // An identity provider that is down (or answers nonsense) does not
        // stop the router: its tokens are refused until a refresh gets keys.
        (Err(why), JwksSource::Url(_)) => {
            warnings.push(format!("{at}: {why}; JWTs are refused until a refresh reads the keys"));
            KeySet::default()
        }
        (Err(why), JwksSource::File(_)) => {
            problems.add(&at, why);
            KeySet::default()
        }
    };
    Some(Jwt {
        issuer: issuer?,
        audience: audience?,
        algorithms,
        tenant_claim: tenant_claim?,
        read_only_claim: read_only_claim.flatten(),
        leeway,
        source,
        refresh,
        keys: Arc::new(keys),
    })
}

fn claim_path(claim: &str, path: &KeyPath, problems: &mut Problems) -> Option<Vec<String>> {
    let parts: Vec<String> = claim.split('.').map(str::to_string).collect();
    if parts.iter().any(String::is_empty) || parts.len() > MAX_CLAIM_DEPTH {
        problems.add(path, format!("{claim:?} is not a claim path: names joined by '.', at most {MAX_CLAIM_DEPTH}"));
        return None;
    }
    Some(parts)
}

/// An allowed algorithm by its JOSE name: asymmetric ones only.
fn algorithm(name: &str) -> Result<Algorithm, String> {
    match name.parse::<Algorithm>() {
        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Err(format!(
            "{name} is refused: a shared secret, and a public key could be used as one; use RS*, PS*, ES* or EdDSA"
        )),
        Ok(algorithm) => Ok(algorithm),
        Err(_) if name.eq_ignore_ascii_case("none") => Err("\"none\" is refused: unsigned tokens prove nothing".into()),
        Err(_) => Err(format!(
            "{name:?} is not a JOSE algorithm: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
        )),
    }
}

/// A JWKS URL: https, or http on a loopback address only.
fn check_jwks_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!("{url}: keys must come over https (http only from a loopback address)")),
        other => Err(format!("{url}: scheme {other:?} is not http(s)")),
    }
}

/// The verification keys of a JWKS document: each signing key of a type
/// one of `allowed` can use, with the algorithms it may verify (its own
/// `alg` when it names one). Encryption keys and symmetric (`oct`) keys are
/// left out; a document with no usable key is refused.
pub fn key_set(bytes: &[u8], allowed: &[Algorithm]) -> Result<KeySet, String> {
    use sha2::{Digest, Sha256};
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(bytes).map_err(|e| format!("is not a JWKS (a JSON object with \"keys\"): {e}"))?;
    if document.keys.len() > MAX_JWKS_KEYS {
        return Err(format!("holds {} keys, over {MAX_JWKS_KEYS}", document.keys.len()));
    }
    let mut keys = Vec::new();
    for value in document.keys {
        // A key of a type this build does not know is skipped, not fatal:
        // identity providers publish keys for other uses too.
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
        if let Some(key) = verification_key(&jwk, allowed)? {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(format!("has no signing key for the allowed algorithms ({})", names(allowed)));
    }
    Ok(KeySet { keys, fingerprint: Sha256::digest(bytes).into() })
}

fn verification_key(jwk: &Jwk, allowed: &[Algorithm]) -> Result<Option<VerificationKey>, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => {
            vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Ok(None),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
        // Symmetric keys are never accepted: see `algorithm`.
        AlgorithmParameters::OctetKey(_) | AlgorithmParameters::OctetKeyPair(_) => return Ok(None),
    };
    let own = jwk.common.key_algorithm.and_then(key_algorithm);
    let algorithms: Vec<Algorithm> =
        family.into_iter().filter(|a| allowed.contains(a) && own.is_none_or(|own| own == *a)).collect();
    if algorithms.is_empty() {
        return Ok(None);
    }
    let kid = jwk.common.key_id.clone();
    let key =
        DecodingKey::from_jwk(jwk).map_err(|e| format!("key {}: {e}", kid.as_deref().unwrap_or("without a kid")))?;
    Ok(Some(VerificationKey { kid, algorithms, key }))
}

fn key_algorithm(algorithm: KeyAlgorithm) -> Option<Algorithm> {
    Some(match algorithm {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn names(algorithms: &[Algorithm]) -> String {
    algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")
}
