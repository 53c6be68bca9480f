//! The canonical form of a request path: what VictoriaMetrics, VictoriaLogs
//! and VictoriaTraces route on, so the router classifies what the backend
//! will execute.
//!
//! The backends are Go servers: `net/http` percent-decodes the path
//! (`%2F` included) before any handler sees it, and their handlers collapse
//! `//` and strip one `/prometheus/` or `/graphite/` prefix (VictoriaMetrics
//! `lib/httpserver/httpserver.go`, `app/vminsert/main.go`,
//! `app/vmselect/main.go`; checked against the `victoria-metrics` binary —
//! README, "Path canonicalisation"). Here:
//!
//! - every percent-escape is decoded once; an invalid escape, an encoded
//!   `/` or an encoded or raw control character (NUL included) has no safe
//!   reading and is refused;
//! - runs of `/` become one (the backends collapse only pairs: this is
//!   stricter, never looser);
//! - `.` and `..` segments are refused (the backends route them literally
//!   to nothing, a client or intermediary may resolve them);
//! - one leading `/prometheus/` or `/graphite/` is an alias: classification
//!   looks at the path without it, and the path forwarded keeps it, as
//!   VictoriaMetrics strips it itself.
//!
//! The canonical path is what is forwarded, re-encoded where it has to be.

use std::borrow::Cow;
use std::fmt;

/// Why a path has no safe canonical reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    InvalidEscape,
    EncodedSlash,
    ControlCharacter,
    DotSegment,
    NotUtf8,
    TooLong,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path does not start with /",
            PathError::InvalidEscape => "the path has a % not followed by two hex digits",
            PathError::EncodedSlash => "the path has an encoded / (%2F)",
            PathError::ControlCharacter => "the path has a control character (NUL included)",
            PathError::DotSegment => "the path has a . or .. segment",
            PathError::NotUtf8 => "the path does not decode to UTF-8",
            PathError::TooLong => "the path is longer than 4096 bytes (percent-encoded)",
        })
    }
}

/// Longest path the router reads.
pub const MAX_PATH: usize = 4096;

/// A path in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical<'a> {
    /// Decoded, slashes collapsed, alias kept: what is forwarded.
    pub path: Cow<'a, str>,
    /// Where the path without its alias starts in `path`.
    alias_len: usize,
}

impl Canonical<'_> {
    /// The path classification looks at: without the alias.
    pub fn route_path(&self) -> &str {
        &self.path[self.alias_len..]
    }

    /// Whether the path had a `/prometheus/` or `/graphite/` alias.
    pub fn aliased(&self) -> bool {
        self.alias_len > 0
    }

    /// The path as it goes upstream: percent-encoded where a byte cannot
    /// stand in a path as it is. Borrowed when nothing needs encoding.
    pub fn encoded(&self) -> Cow<'_, str> {
        encode(&self.path)
    }

    /// [`Canonical::route_path`] as it goes upstream, percent-encoded: the
    /// suffix of a shared cluster's path.
    pub fn encoded_route_path(&self) -> Cow<'_, str> {
        encode(self.route_path())
    }
}

/// `path` percent-encoded where a byte cannot stand in a path as it is;
/// borrowed when nothing needs encoding.
fn encode(path: &str) -> Cow<'_, str> {
    if path.bytes().all(path_safe) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len() + 8);
    for byte in path.bytes() {
        if path_safe(byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Cow::Owned(out)
}

/// Bytes that stand in a path as they are (RFC 3986 pchar and `/`).
fn path_safe(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&byte)
}

/// The canonical form of the raw (still percent-encoded) `path`.
pub fn canonicalize(path: &str) -> Result<Canonical<'_>, PathError> {
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let clean = !path.contains('%') && !path.contains("//") && bytes.iter().all(|b| !b.is_ascii_control());
    let path: Cow<str> = if clean { Cow::Borrowed(path) } else { Cow::Owned(decode_and_collapse(bytes)?) };
    if path.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(PathError::DotSegment);
    }
    // The bound is on the path as it goes upstream, so that what is
    // forwarded reads back as what was classified (found by fuzzing: a raw
    // path under the bound whose encoding was over it).
    if path.len() * 3 > MAX_PATH && path.bytes().map(|b| if path_safe(b) { 1 } else { 3 }).sum::<usize>() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    let alias_len = ["/prometheus/", "/graphite/"]
        .into_iter()
        .find(|alias| path.starts_with(alias))
        .map_or(0, |alias| alias.len() - 1);
    Ok(Canonical { path, alias_len })
}

fn decode_and_collapse(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::InvalidEscape)?;
                let decoded = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PathError::InvalidEscape)?;
                i += 3;
                if decoded == b'/' {
                    return Err(PathError::EncodedSlash);
                }
                decoded
            }
            raw => {
                i += 1;
                raw
            }
        };
        if byte.is_ascii_control() {
            return Err(PathError::ControlCharacter);
        }
        if byte == b'/' && out.last() == Some(&b'/') {
            continue;
        }
        out.push(byte);
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(path: &str) -> Result<(String, String), PathError> {
        canonicalize(path).map(|c| (c.path.to_string(), c.route_path().to_string()))
    }

    #[test]
    fn spellings_that_victoria_metrics_reads_as_one_path() {
        let query = Ok(("/api/v1/query".to_string(), "/api/v1/query".to_string()));
        for spelling in [
            "/api/v1/query",
            "//api/v1/query",
            "/api//v1/query",
            "///api/v1/query",
            "/api/v1/%71uery",
            "/%61pi/v1/query",
        ] {
            assert_eq!(canonical(spelling), query, "{spelling}");
        }
        let aliased = Ok(("/prometheus/api/v1/query".to_string(), "/api/v1/query".to_string()));
        for spelling in [
            "/prometheus/api/v1/query",
            "/prometheus//api/v1/query",
            "//prometheus/api/v1/query",
            "/%70rometheus/api/v1/query",
        ] {
            assert_eq!(canonical(spelling), aliased, "{spelling}");
        }
        assert_eq!(canonical("/graphite/metrics/find").unwrap().1, "/metrics/find");
        assert_eq!(
            canonical("/prometheus/prometheus/api/v1/query").unwrap().1,
            "/prometheus/api/v1/query",
            "one alias"
        );
        assert_eq!(canonical("/prometheus").unwrap().1, "/prometheus", "an alias needs its slash");
        assert_eq!(canonical("/api/v1/admin/tsdb/delete%5Fseries").unwrap().1, "/api/v1/admin/tsdb/delete_series");
        assert_eq!(canonical("/vmui/").unwrap().1, "/vmui/", "a trailing slash stays");
    }

    #[test]
    fn paths_with_no_safe_reading_are_refused() {
        for (path, error) in [
            ("/api/v1/admin%2Ftsdb%2Fdelete_series", PathError::EncodedSlash),
            ("/snapshot%2flist", PathError::EncodedSlash),
            ("/api/v1/query%00", PathError::ControlCharacter),
            ("/api/v1/query%0a", PathError::ControlCharacter),
            ("/api/v1/query%zz", PathError::InvalidEscape),
            ("/api/v1/query%2", PathError::InvalidEscape),
            ("/api/v1/./query", PathError::DotSegment),
            ("/api/v1/../v1/query", PathError::DotSegment),
            ("/api/v1/%2e%2e/query", PathError::DotSegment),
            ("/api/v1/%2E/query", PathError::DotSegment),
            ("api/v1/query", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("/%ff", PathError::NotUtf8),
        ] {
            assert_eq!(canonical(path), Err(error), "{path}");
        }
        assert_eq!(canonical(&format!("/{}", "a".repeat(MAX_PATH))), Err(PathError::TooLong));
        // Under the bound as it came, over it once encoded for upstream.
        assert_eq!(canonical(&format!("/{}", "\"".repeat(MAX_PATH / 2))), Err(PathError::TooLong));
        let fits = canonicalize("/\"\"").unwrap();
        assert_eq!(canonicalize(&fits.encoded()).unwrap().encoded(), fits.encoded());
    }

    #[test]
    fn a_clean_path_is_borrowed_and_forwarded_as_it_came() {
        let c = canonicalize("/prometheus/api/v1/query_range").unwrap();
        assert!(matches!(c.path, Cow::Borrowed(_)));
        assert!(matches!(c.encoded(), Cow::Borrowed("/prometheus/api/v1/query_range")));
        assert!(c.aliased());
    }

    #[test]
    fn what_is_forwarded_decodes_to_what_was_classified() {
        let c = canonicalize("/api/v1/label/a%20b%3Fc%25/values").unwrap();
        assert_eq!(c.route_path(), "/api/v1/label/a b?c%/values");
        assert_eq!(c.encoded(), "/api/v1/label/a%20b%3Fc%25/values");
        assert_eq!(canonicalize("/api/v1/l%C3%A9").unwrap().encoded(), "/api/v1/l%C3%A9");
    }
}
