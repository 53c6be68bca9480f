//! Who a request is: the tenant named by the header, proved (or named) by a
//! credential.
//!
//! A credential is a bearer token or a basic-auth user, known to the table
//! only by SHA-256 digests. The rules (README, "Tenant credentials"):
//! a valid credential alone identifies its tenant; a credential and a header
//! naming different tenants is 403; a wrong credential is 401 even when the
//! header names a tenant without credentials; a tenant with credentials — or
//! every tenant under `require_credentials` — refuses the header alone (401).

use super::RoutingTable;
use crate::rejection::Rejection;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The tenant id of a request: `header` is the tenant header's value ("" when
/// absent), `authorization` the raw `Authorization` header.
pub fn identify<'a>(
    table: &'a RoutingTable,
    header: &'a str,
    authorization: Option<&[u8]>,
) -> Result<&'a str, Rejection> {
    let proved = match authorization {
        None => None,
        Some(value) => Some(credential_tenant(table, value).ok_or(Rejection::Unauthorized)?),
    };
    match proved {
        Some(tenant) if !header.is_empty() && header != tenant => Err(Rejection::CredentialMismatch),
        Some(tenant) => Ok(tenant),
        None if header.is_empty() => Err(Rejection::NoTenant),
        None if table.require_credentials() || table.tenant(header).is_some_and(|t| t.has_credentials) => {
            Err(Rejection::Unauthorized)
        }
        None => Ok(header),
    }
}

/// The tenant a credential belongs to, or `None` for a wrong or malformed one.
fn credential_tenant<'a>(table: &'a RoutingTable, value: &[u8]) -> Option<&'a str> {
    if let Some(token) = strip_scheme(value, b"bearer ") {
        return table.bearer_tenant(&sha256(token.trim_ascii()));
    }
    let encoded = strip_scheme(value, b"basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let (user, password) = (std::str::from_utf8(&decoded[..colon]).ok()?, &decoded[colon + 1..]);
    let (tenant, digest) = table.basic_user(user)?;
    bool::from(sha256(password).ct_eq(digest)).then_some(tenant)
}

/// `value` without its auth scheme (case-insensitive), when it has that scheme.
fn strip_scheme<'v>(value: &'v [u8], scheme: &[u8]) -> Option<&'v [u8]> {
    let head = value.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme).then(|| &value[scheme.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::routing::Shared;

    fn hex(bytes: [u8; 32]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn table(require: bool) -> RoutingTable {
        let text = format!(
            "[tenancy]\nrequire_credentials = {require}\n\
             [tenants.acme.auth]\nbearer_tokens_sha256 = [\"{}\"]\nbasic_auth = [{{ username = \"grafana\", password_sha256 = \"{}\" }}]\n\
             [tenants.acme.metrics]\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [tenants.open.metrics]\nendpoints = [\"http://127.0.0.1:2\"]\n",
            hex(sha256(b"acme-token")),
            hex(sha256(b"s3cret")),
        );
        RoutingTable::build(&parse("t.toml", &text).unwrap(), &Shared::for_tests())
    }

    fn basic(user_pass: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass)).into_bytes()
    }

    #[test]
    fn every_rule_of_the_credential_table() {
        let t = table(false);
        assert_eq!(identify(&t, "", Some(b"Bearer acme-token")), Ok("acme"), "a credential alone names its tenant");
        assert_eq!(identify(&t, "acme", Some(b"bearer acme-token")), Ok("acme"));
        assert_eq!(identify(&t, "", Some(&basic("grafana:s3cret"))), Ok("acme"));
        assert_eq!(identify(&t, "open", Some(b"Bearer acme-token")), Err(Rejection::CredentialMismatch));
        assert_eq!(
            identify(&t, "open", Some(b"Bearer wrong")),
            Err(Rejection::Unauthorized),
            "wrong even for an open tenant"
        );
        assert_eq!(identify(&t, "acme", Some(&basic("grafana:wrong"))), Err(Rejection::Unauthorized));
        assert_eq!(identify(&t, "acme", Some(b"Digest x")), Err(Rejection::Unauthorized));
        assert_eq!(identify(&t, "acme", None), Err(Rejection::Unauthorized), "a tenant with credentials needs one");
        assert_eq!(identify(&t, "open", None), Ok("open"));
        assert_eq!(identify(&t, "nobody", None), Ok("nobody"), "unknown tenants are refused later, with 403");
        assert_eq!(identify(&t, "", None), Err(Rejection::NoTenant));
    }

    #[test]
    fn require_credentials_refuses_the_header_alone() {
        let t = table(true);
        assert_eq!(identify(&t, "open", None), Err(Rejection::Unauthorized));
        assert_eq!(identify(&t, "nobody", None), Err(Rejection::Unauthorized));
        assert_eq!(identify(&t, "", Some(b"Bearer acme-token")), Ok("acme"));
    }
}
