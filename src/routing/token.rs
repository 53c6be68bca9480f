//! JWT bearer tokens (`[tenancy.jwt]`): verified against the JWKS in force
//! (`jsonwebtoken`, on ring), read for the tenant and read-only claims.
//!
//! The key set is held behind an `ArcSwap` and refreshed on its interval by
//! [`super::refresh_forever`]; a refresh that fails keeps the last good set. A
//! reload builds a new [`Tokens`] from the reload's config, keeping the
//! keys in force when the reload could not fetch them.

use crate::config::{read_jwks, Jwt, KeySet};
use arc_swap::ArcSwap;
use jsonwebtoken::{decode, decode_header, Validation};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub tenant: String,
    pub read_only: bool,
}

pub struct Tokens {
    settings: Jwt,
    keys: ArcSwap<KeySet>,
}

impl Tokens {
    /// The verifier of a config's `[tenancy.jwt]`; `before` is the one in
    /// force, whose keys are kept when `settings` has none (a JWKS URL that
    /// could not be fetched) for the same source.
    pub fn new(settings: &Jwt, before: Option<&Tokens>) -> Tokens {
        let kept = before.filter(|b| settings.keys.keys.is_empty() && b.settings.source == settings.source);
        let keys = kept.map_or_else(|| settings.keys.clone(), |before| before.keys.load_full());
        Tokens { settings: settings.clone(), keys: ArcSwap::new(keys) }
    }

    /// Whether `token` has the shape of a JWT (three base64url parts):
    /// only those are verified, other bearer tokens are static ones.
    pub fn looks_like_jwt(token: &[u8]) -> bool {
        token.iter().filter(|&&b| b == b'.').count() == 2
            && token.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }

    /// The interval and the source of the key set.
    pub(super) fn schedule(&self) -> (Duration, &str) {
        (self.settings.refresh, self.settings.source.as_str())
    }

    /// The claims of a valid token, or why it is not one (for the log,
    /// never the answer).
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let settings = &self.settings;
        let header = decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        if !settings.algorithms.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not allowed", header.alg));
        }
        let keys = self.keys.load();
        let key = keys.find(header.kid.as_deref(), header.alg).ok_or_else(|| match &header.kid {
            Some(kid) => format!("no key {kid:?} for {:?} in the key set", header.alg),
            None => "the token names no kid and the key set has more than one key".to_string(),
        })?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = decode::<Value>(token, &key.key, &validation).map_err(|e| format!("refused: {e}"))?.claims;
        let tenant = match claim(&claims, &settings.tenant_claim) {
            Some(Value::String(tenant)) if !tenant.is_empty() => tenant.clone(),
            _ => return Err(format!("no string claim {:?}", settings.tenant_claim.join("."))),
        };
        let read_only =
            settings.read_only_claim.as_ref().is_some_and(|path| claim(&claims, path) == Some(&Value::Bool(true)));
        Ok(Claims { tenant, read_only })
    }

    /// Reads the key set again; the set in force stays when that fails.
    pub(super) fn refresh(&self) -> Result<usize, String> {
        let bytes = read_jwks(&self.settings.source)?;
        let set = crate::config::key_set(&bytes, &self.settings.algorithms)?;
        let count = set.keys.len();
        if *self.keys.load_full() != set {
            tracing::info!(source = self.settings.source.as_str(), keys = count, "JWKS changed");
            self.keys.store(Arc::new(set));
        }
        Ok(count)
    }
}

/// The value at a claim path.
fn claim<'v>(claims: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(claims, |value, name| value.get(name))
}
