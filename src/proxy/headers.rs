//! What the router changes in the headers it forwards.
//!
//! Upstream: `Host` is the endpoint's authority; the client's Victoria
//! tenant headers (`AccountID`, `ProjectID`) and `Authorization` never
//! travel on (the router sets the ids of a shared VictoriaLogs or
//! VictoriaTraces itself; a deployment's own upstream credential replaces
//! the client's);
//! `X-Forwarded-For` gets the client appended, `X-Forwarded-Proto` and
//! `X-Request-ID` are set. Downstream: the answer carries the request id.

use crate::config::ClientLimits;
use crate::upstream::Pool;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Names as inserted: Pingora keeps each header's case in a second map, and
/// a `&'static str` goes in without the copy a `HeaderName` of our own costs
/// (README, Performance).
const WIRE_X_REQUEST_ID: &str = "X-Request-ID";
const WIRE_X_FORWARDED_FOR: &str = "X-Forwarded-For";
const WIRE_X_FORWARDED_PROTO: &str = "X-Forwarded-Proto";
const WIRE_ACCOUNT_ID: &str = "AccountID";
const WIRE_PROJECT_ID: &str = "ProjectID";
/// Victoria's tenant headers: only the router may set them.
static ACCOUNT_ID: HeaderName = HeaderName::from_static("accountid");
static PROJECT_ID: HeaderName = HeaderName::from_static("projectid");

/// Longest client-sent `X-Request-ID` that is propagated as is.
const MAX_REQUEST_ID: usize = 128;

/// Rewrites the request for `pool`'s endpoint of `authority`, sent by `client`.
pub fn rewrite_upstream(
    upstream: &mut RequestHeader,
    pool: Option<(&Pool, &HeaderValue)>,
    client: Option<IpAddr>,
    request_id: Option<&HeaderValue>,
    scheme: &'static str,
) -> pingora::Result<()> {
    if let Some((_, authority)) = pool {
        upstream.insert_header(http::header::HOST, authority.clone())?;
    }
    upstream.remove_header(&ACCOUNT_ID);
    upstream.remove_header(&PROJECT_ID);
    if let Some((account, project)) = pool.and_then(|(pool, _)| pool.tenant_headers.as_ref()) {
        upstream.insert_header(WIRE_ACCOUNT_ID, account.clone())?;
        upstream.insert_header(WIRE_PROJECT_ID, project.clone())?;
    }
    // The client's credential proves it to the router; it never travels on.
    upstream.remove_header(&http::header::AUTHORIZATION);
    if let Some(credential) = pool.and_then(|(pool, _)| pool.upstream_auth.clone()) {
        upstream.insert_header(http::header::AUTHORIZATION, credential)?;
    }
    if let Some(ip) = client {
        let earlier = upstream.headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
        upstream.insert_header(WIRE_X_FORWARDED_FOR, forwarded_for(earlier, ip))?;
    }
    upstream.insert_header(WIRE_X_FORWARDED_PROTO, HeaderValue::from_static(scheme))?;
    if let Some(id) = request_id {
        upstream.insert_header(WIRE_X_REQUEST_ID, id.clone())?;
    }
    Ok(())
}

/// Whether the request head is within the listener's header count and
/// size (names, values and the target); else which limit it is over.
pub fn within_limits(request: &RequestHeader, limits: &ClientLimits) -> Result<(), &'static str> {
    if request.headers.len() > limits.max_request_headers {
        return Err("max_request_headers");
    }
    let target = request.uri.path_and_query().map_or(0, |p| p.as_str().len());
    let bytes = request.headers.iter().fold(target, |sum, (name, value)| sum + name.as_str().len() + value.len());
    if bytes > limits.max_request_header_bytes {
        return Err("max_request_header_bytes");
    }
    Ok(())
}

/// Adds the request id to the answer.
pub fn rewrite_downstream(response: &mut ResponseHeader, request_id: Option<&HeaderValue>) -> pingora::Result<()> {
    if let Some(id) = request_id {
        response.insert_header(WIRE_X_REQUEST_ID, id.clone())?;
    }
    Ok(())
}

/// `X-Forwarded-For`: the client's chain, if any, and its address. IPv4 is
/// written digit by digit, without `Display` (README, Performance).
fn forwarded_for(earlier: Option<&str>, ip: IpAddr) -> HeaderValue {
    let mut text = Vec::with_capacity(earlier.map_or(0, |e| e.len() + 2) + 39);
    if let Some(earlier) = earlier {
        text.extend_from_slice(earlier.as_bytes());
        text.extend_from_slice(b", ");
    }
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push(b'.');
                }
                if octet >= 100 {
                    text.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    text.push(b'0' + octet / 10 % 10);
                }
                text.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(text, "{v6}");
        }
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The client's `X-Request-ID` when it is sane, else a new UUID.
pub fn request_id(request: &RequestHeader) -> HeaderValue {
    match request.headers.get(&X_REQUEST_ID) {
        Some(id) if !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.as_bytes().iter().all(u8::is_ascii_graphic) => {
            id.clone()
        }
        _ => {
            let mut buf = uuid::Uuid::encode_buffer();
            let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_client_to_the_chain() {
        let ip = |text: &str| text.parse().unwrap();
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            assert_eq!(forwarded_for(None, ip(text)), text);
        }
        assert_eq!(forwarded_for(Some("203.0.113.7"), ip("10.0.0.1")), "203.0.113.7, 10.0.0.1");
    }

    #[test]
    fn a_sane_request_id_is_kept_and_any_other_replaced() {
        let with = |id: &str| {
            let mut request = RequestHeader::build("GET", b"/", None).unwrap();
            request.insert_header("x-request-id", id).unwrap();
            request_id(&request)
        };
        assert_eq!(with("abc-123"), "abc-123");
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        for bad in ["has space", "", long.as_str()] {
            let fresh = with(bad);
            assert_ne!(fresh, bad);
            assert_eq!(fresh.len(), 36, "a UUID");
        }
    }

    #[test]
    fn tenant_headers_and_the_client_credential_never_travel_on() {
        let mut request = RequestHeader::build("GET", b"/api/v1/query", None).unwrap();
        for (name, value) in [("AccountID", "7"), ("projectid", "1"), ("Authorization", "Bearer t")] {
            request.append_header(name, value).unwrap();
        }
        rewrite_upstream(&mut request, None, None, None, "http").unwrap();
        for name in ["accountid", "projectid", "authorization"] {
            assert!(request.headers.get(name).is_none(), "{name} forwarded");
        }
        assert_eq!(request.headers["x-forwarded-proto"], "http");
    }
}
