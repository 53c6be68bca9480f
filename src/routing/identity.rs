//! Who a request is: the tenant named by the header, proved (or named) by a
//! credential — a bearer token, a basic-auth user, a JWT, or the
//! connection's client certificate.
//!
//! Static credentials are known to the table only by SHA-256 digests. The
//! rules (README, "Tenant credentials"): a valid credential alone
//! identifies its tenant; two credentials, or a credential and a header,
//! naming different tenants is 403; a wrong credential is 401 even when the
//! header names a tenant without credentials; a tenant with credentials —
//! or every tenant under `require_credentials` — refuses the header alone
//! (401). A client certificate whose names no tenant lists is a wrong
//! credential (401); a JWT may make the request read-only.

use super::{RoutingTable, Tokens};
use crate::rejection::Rejection;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// What a request presents of itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'r> {
    /// The tenant header's value ("" when absent).
    pub header: &'r str,
    /// The raw `Authorization` header.
    pub authorization: Option<&'r [u8]>,
    /// The names of the connection's verified client certificate.
    pub certificate: Option<&'r [String]>,
}

/// Who a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    pub tenant: &'a str,
    /// A credential that allows reads only (a JWT's read-only claim).
    pub read_only: bool,
}

/// The identity of a request, or why it has none.
pub fn identify<'a>(table: &'a RoutingTable, presented: Presented<'a>) -> Result<Identity<'a>, Rejection> {
    let mut proved: Option<Identity<'a>> = None;
    if let Some(names) = presented.certificate {
        for name in names {
            if let Some(tenant) = table.certificate_tenant(name) {
                prove(&mut proved, Identity { tenant, read_only: false })?;
            }
        }
        if proved.is_none() {
            tracing::info!(names = ?names, "client certificate refused: no tenant lists its names");
            return Err(Rejection::Unauthorized);
        }
    }
    if let Some(value) = presented.authorization {
        prove(&mut proved, credential(table, value)?)?;
    }
    let header = presented.header;
    match proved {
        Some(identity) if !header.is_empty() && header != identity.tenant => Err(Rejection::CredentialMismatch),
        Some(identity) => Ok(identity),
        None if header.is_empty() => Err(Rejection::NoTenant),
        None if table.require_credentials() || table.tenant(header).is_some_and(|t| t.has_credentials) => {
            Err(Rejection::Unauthorized)
        }
        None => Ok(Identity { tenant: header, read_only: false }),
    }
}

/// Adds one credential's identity to what the others proved: two naming
/// different tenants is 403; read-only when any is.
fn prove<'a>(proved: &mut Option<Identity<'a>>, identity: Identity<'a>) -> Result<(), Rejection> {
    match proved {
        Some(other) if other.tenant != identity.tenant => Err(Rejection::CredentialMismatch),
        Some(other) => {
            other.read_only |= identity.read_only;
            Ok(())
        }
        None => {
            *proved = Some(identity);
            Ok(())
        }
    }
}

/// The identity an `Authorization` value proves: a static bearer token, a
/// JWT, a basic-auth user; a wrong or malformed one is 401.
fn credential<'a>(table: &'a RoutingTable, value: &[u8]) -> Result<Identity<'a>, Rejection> {
    let Some(token) = strip_scheme(value, b"bearer ").map(<[u8]>::trim_ascii) else {
        let tenant = credential_tenant(table, value).ok_or(Rejection::Unauthorized)?;
        return Ok(Identity { tenant, read_only: false });
    };
    if let Some(tenant) = table.bearer_tenant(&sha256(token)) {
        return Ok(Identity { tenant, read_only: false });
    }
    let tokens = table.tokens().filter(|_| Tokens::looks_like_jwt(token)).ok_or(Rejection::Unauthorized)?;
    // The shape check above leaves ASCII only.
    let claims = tokens.verify(std::str::from_utf8(token).unwrap_or_default()).map_err(|why| {
        tracing::info!(reason = %why, "JWT refused");
        Rejection::Unauthorized
    })?;
    let route = table.tenant(&claims.tenant).ok_or(Rejection::UnknownTenant)?;
    Ok(Identity { tenant: &route.id, read_only: claims.read_only })
}

/// The tenant of a basic-auth credential, or `None` for a wrong or malformed one.
fn credential_tenant<'a>(table: &'a RoutingTable, value: &[u8]) -> Option<&'a str> {
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
             client_cert_subjects = [\"spiffe://example.org/ns/acme/sa/vmagent\", \"Agent.Acme.Example\"]\n\
             [tenants.other.auth]\nclient_cert_subjects = [\"other-agent\"]\n\
             [tenants.other.metrics]\nendpoints = [\"http://127.0.0.1:3\"]\n\
             [tenants.acme.metrics]\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [tenants.open.metrics]\nendpoints = [\"http://127.0.0.1:2\"]\n",
            hex(sha256(b"acme-token")),
            hex(sha256(b"s3cret")),
        );
        RoutingTable::build(&parse("t.toml", &text).unwrap(), &Shared::for_tests())
    }

    /// The tenant `identify` finds for a header and an `Authorization` value.
    fn who<'a>(t: &'a RoutingTable, header: &'a str, authorization: Option<&'a [u8]>) -> Result<&'a str, Rejection> {
        identify(t, Presented { header, authorization, certificate: None }).map(|identity| identity.tenant)
    }

    /// The same with a client certificate's names.
    fn with_cert<'a>(
        t: &'a RoutingTable,
        header: &'a str,
        authorization: Option<&'a [u8]>,
        names: &'a [String],
    ) -> Result<&'a str, Rejection> {
        identify(t, Presented { header, authorization, certificate: Some(names) }).map(|identity| identity.tenant)
    }

    fn basic(user_pass: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass)).into_bytes()
    }

    #[test]
    fn every_rule_of_the_credential_table() {
        let t = table(false);
        assert_eq!(who(&t, "", Some(b"Bearer acme-token")), Ok("acme"), "a credential alone names its tenant");
        assert_eq!(who(&t, "acme", Some(b"bearer acme-token")), Ok("acme"));
        assert_eq!(who(&t, "", Some(&basic("grafana:s3cret"))), Ok("acme"));
        assert_eq!(who(&t, "open", Some(b"Bearer acme-token")), Err(Rejection::CredentialMismatch));
        assert_eq!(
            who(&t, "open", Some(b"Bearer wrong")),
            Err(Rejection::Unauthorized),
            "wrong even for an open tenant"
        );
        assert_eq!(who(&t, "acme", Some(&basic("grafana:wrong"))), Err(Rejection::Unauthorized));
        assert_eq!(who(&t, "acme", Some(b"Digest x")), Err(Rejection::Unauthorized));
        assert_eq!(who(&t, "acme", None), Err(Rejection::Unauthorized), "a tenant with credentials needs one");
        assert_eq!(who(&t, "open", None), Ok("open"));
        assert_eq!(who(&t, "nobody", None), Ok("nobody"), "unknown tenants are refused later, with 403");
        assert_eq!(who(&t, "", None), Err(Rejection::NoTenant));
    }

    #[test]
    fn require_credentials_refuses_the_header_alone() {
        let t = table(true);
        assert_eq!(who(&t, "open", None), Err(Rejection::Unauthorized));
        assert_eq!(who(&t, "nobody", None), Err(Rejection::Unauthorized));
        assert_eq!(who(&t, "", Some(b"Bearer acme-token")), Ok("acme"));
    }

    #[test]
    fn a_client_certificate_is_a_credential() {
        let t = table(false);
        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let acme = names(&["spiffe://example.org/ns/acme/sa/vmagent"]);
        assert_eq!(with_cert(&t, "", None, &acme), Ok("acme"), "the certificate alone names its tenant");
        assert_eq!(with_cert(&t, "acme", None, &acme), Ok("acme"));
        assert_eq!(with_cert(&t, "", None, &names(&["agent.acme.example"])), Ok("acme"), "DNS names without case");
        assert_eq!(with_cert(&t, "open", None, &acme), Err(Rejection::CredentialMismatch), "A's certificate, header B");
        assert_eq!(with_cert(&t, "", Some(b"Bearer acme-token"), &acme), Ok("acme"), "two credentials, one tenant");
        assert_eq!(
            with_cert(&t, "", Some(b"Bearer acme-token"), &names(&["other-agent"])),
            Err(Rejection::CredentialMismatch),
            "a certificate and a token of two tenants"
        );
        assert_eq!(
            with_cert(&t, "", None, &names(&["other-agent", "spiffe://example.org/ns/acme/sa/vmagent"])),
            Err(Rejection::CredentialMismatch),
            "one certificate naming two tenants"
        );
        assert_eq!(
            with_cert(&t, "open", None, &names(&["spiffe://example.org/ns/nobody"])),
            Err(Rejection::Unauthorized),
            "a valid certificate no tenant lists is a wrong credential"
        );
        assert_eq!(
            with_cert(&t, "", None, &names(&["SPIFFE://example.org/ns/acme/sa/vmagent"])),
            Err(Rejection::Unauthorized),
            "URIs compare as written"
        );
    }
}
