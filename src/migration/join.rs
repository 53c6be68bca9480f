//! Copies that may travel as one request to the mirror target: ingest
//! formats whose bodies concatenate into a body the backend reads as the
//! sum of its parts. Joining the copies waiting for one target spares an
//! HTTP exchange per copy — the mirror's cost on a busy tenant.
//!
//! Joined, and only these:
//! - **line formats** with no `Content-Encoding` (or `identity`): the
//!   Prometheus text, JSON-line and CSV imports, InfluxDB line protocol,
//!   VictoriaLogs' JSON lines and Elasticsearch bulk. Bodies are joined
//!   with a newline between them where one does not end with one.
//! - **Prometheus remote write 1.0**: a snappy block of a `WriteRequest`.
//!   Protobuf reads two messages one after the other as one message whose
//!   repeated fields (`timeseries`, `metadata`) hold both; a snappy block's
//!   copies point back at most to its own start, so blocks concatenate
//!   once each one's length preamble is replaced by the total's
//!   (<https://github.com/google/snappy/blob/main/format_description.txt>).
//!   A body is joined only after its block is walked and found well-formed.
//!   Remote write 2.0 is never joined: its series refer to a symbol table
//!   by index, which a concatenation would shift.
//!
//! Everything else (gzip, zstd, OTLP, Loki's JSON, native import) is sent
//! copy by copy, as before. Requests are joined only when their method,
//! path with query and headers are the same, but for the headers that
//! name one request (request id, trace context, user agent).

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};

/// A joined request's body at most (on the wire, and for remote write also
/// decoded): an eighth of VictoriaMetrics' default `-maxInsertRequestSize`,
/// half vmagent's default `-remoteWrite.maxBlockSize`.
pub const MAX_BYTES: u64 = 4 << 20;
/// Copies joined into one request at most.
pub const MAX_COPIES: usize = 1000;

/// How the bodies of an endpoint's requests join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Lines: joined with a newline between them.
    Lines,
    /// Prometheus remote write 1.0, a snappy block.
    RemoteWrite,
}

/// Line formats, by canonical path (`/api/v1/import/prometheus/*` carries
/// its extra labels in the path, which joins only equal ones).
const LINES: [&str; 10] = [
    "/api/v1/import",
    "/api/v1/import/csv",
    "/api/v1/import/prometheus",
    "/api/v1/import/prometheus/*",
    "/write",
    "/influx/write",
    "/api/v2/write",
    "/influx/api/v2/write",
    "/insert/jsonline",
    "/insert/elasticsearch/_bulk",
];

/// Headers that tell one request from another without changing what it
/// writes: left out of the comparison, and out of a joined request.
fn names_one_request(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-request-id"
            | "user-agent"
            | "traceparent"
            | "tracestate"
            | "b3"
            | "uber-trace-id"
            | "x-amzn-trace-id"
            | "x-cloud-trace-context"
            | "date"
    ) || name.as_str().starts_with("x-b3-")
}

fn header<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &str) -> Result<Option<&'a [u8]>, ()> {
    let mut found = headers.iter().filter(|(n, _)| n.as_str() == name).map(|(_, v)| v.as_bytes());
    let first = found.next();
    // Two values of one header: not a request to guess about.
    if found.next().is_some() {
        return Err(());
    }
    Ok(first)
}

impl Format {
    /// How requests to the endpoint `pattern` with `headers` join, if they do.
    pub fn of(pattern: &str, headers: &[(HeaderName, HeaderValue)]) -> Option<Format> {
        let lines = LINES.contains(&pattern);
        if !lines && pattern != "/api/v1/write" {
            return None;
        }
        let encoding = header(headers, "content-encoding").ok()?.map(<[u8]>::to_ascii_lowercase);
        if lines {
            return matches!(encoding.as_deref(), None | Some(b"identity")).then_some(Format::Lines);
        }
        if !matches!(encoding.as_deref(), None | Some(b"snappy")) {
            return None;
        }
        let version = header(headers, "x-prometheus-remote-write-version").ok()?;
        if version.is_some_and(|v| !v.starts_with(b"0.1")) {
            return None;
        }
        let content_type = header(headers, "content-type").ok()?.map(<[u8]>::to_ascii_lowercase);
        match content_type.as_deref() {
            None => Some(Format::RemoteWrite),
            Some(t) if t == b"application/x-protobuf" => Some(Format::RemoteWrite),
            Some(t) if t.starts_with(b"application/x-protobuf;") => {
                let params = t[b"application/x-protobuf;".len()..].trim_ascii();
                (params == b"proto=prometheus.writerequest").then_some(Format::RemoteWrite)
            }
            Some(_) => None,
        }
    }
}

/// What a copy that may be joined is joined by: its lane (requests that
/// join have the same) and its part in a joined body.
pub struct Joinable {
    pub lane: Vec<u8>,
    pub part: Part,
}

/// A joinable body's place in a joined one, found once (the walk of a
/// snappy block is the most of a mirrored write's own CPU): its weight in
/// a joined request's bound (for remote write its decoded length, which
/// the joined preamble sums) and the bytes of its head left out (its
/// snappy preamble).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub weight: u64,
    pub skip: usize,
}

/// Whether a request of `format` (`method`, `path` with its query,
/// `headers`, `body`) may be joined, and with which.
pub fn joinable(
    format: Format,
    method: &Method,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
) -> Option<Joinable> {
    let part = match format {
        Format::Lines => Part { weight: body.len() as u64, skip: 0 },
        Format::RemoteWrite => {
            let (decoded, preamble) = snappy_block(body)?;
            Part { weight: decoded, skip: preamble }
        }
    };
    if part.weight > MAX_BYTES {
        return None;
    }
    let mut lane = Vec::with_capacity(64 + path.len());
    lane.push(format as u8);
    for part in [method.as_str().as_bytes(), b" ", path.as_bytes()] {
        lane.extend_from_slice(part);
    }
    for (name, value) in headers.iter().filter(|(name, _)| !names_one_request(name)) {
        for part in [b"\n", name.as_str().as_bytes(), b":", value.as_bytes()] {
            lane.extend_from_slice(part);
        }
    }
    Some(Joinable { lane, part })
}

/// The headers of a joined request: its first copy's, but for those that
/// name one request.
pub fn joined_headers(first: &[(HeaderName, HeaderValue)]) -> Vec<(HeaderName, HeaderValue)> {
    first.iter().filter(|(name, _)| !names_one_request(name)).cloned().collect()
}

/// The body `bodies` make as one request of `format`, each with its part
/// ([`joinable`]).
pub fn join<'a>(format: Format, bodies: impl Iterator<Item = (&'a Bytes, Part)> + Clone) -> Bytes {
    match format {
        Format::Lines => {
            let size: usize = bodies.clone().map(|(b, _)| b.len() + 1).sum();
            let mut out = BytesMut::with_capacity(size);
            for (body, _) in bodies.filter(|(b, _)| !b.is_empty()) {
                out.put_slice(body);
                if !body.ends_with(b"\n") {
                    out.put_u8(b'\n');
                }
            }
            out.freeze()
        }
        Format::RemoteWrite => {
            let total: u64 = bodies.clone().map(|(_, part)| part.weight).sum();
            let mut out =
                BytesMut::with_capacity(5 + bodies.clone().map(|(b, part)| b.len() - part.skip).sum::<usize>());
            prost::encoding::encode_varint(total, &mut out);
            for (body, part) in bodies {
                out.put_slice(&body[part.skip..]);
            }
            out.freeze()
        }
    }
}

/// A well-formed snappy block's decoded length and the length of its
/// preamble; `None` for anything else. Walks the block's elements without
/// decoding them: every literal and copy within the block, every copy
/// pointing back inside what the block has decoded so far, and the sum
/// exactly the preamble's length.
pub fn snappy_block(block: &[u8]) -> Option<(u64, usize)> {
    let (mut declared, mut at, mut shift) = (0u64, 0usize, 0u32);
    loop {
        let byte = *block.get(at)?;
        at += 1;
        declared |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    if declared > u64::from(u32::MAX) {
        return None;
    }
    let preamble = at;
    let le = |from: usize, n: usize| -> Option<u64> {
        let bytes = block.get(from..from + n)?;
        Some(bytes.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    };
    let mut decoded = 0u64;
    while at < block.len() {
        let tag = block[at];
        at += 1;
        let (length, offset) = match tag & 3 {
            0 => {
                let short = u64::from(tag >> 2);
                let length = if short < 60 {
                    short + 1
                } else {
                    let n = (short - 59) as usize;
                    let length = le(at, n)? + 1;
                    at += n;
                    length
                };
                let end = at.checked_add(usize::try_from(length).ok()?)?;
                if end > block.len() {
                    return None;
                }
                at = end;
                decoded += length;
                continue;
            }
            1 => {
                let low = u64::from(*block.get(at)?);
                at += 1;
                (4 + u64::from((tag >> 2) & 7), (u64::from(tag >> 5) << 8) | low)
            }
            2 => {
                let offset = le(at, 2)?;
                at += 2;
                (1 + u64::from(tag >> 2), offset)
            }
            _ => {
                let offset = le(at, 4)?;
                at += 4;
                (1 + u64::from(tag >> 2), offset)
            }
        };
        if offset == 0 || offset > decoded {
            return None;
        }
        decoded += length;
        if decoded > declared {
            return None;
        }
    }
    (decoded == declared).then_some((declared, preamble))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `bodies` with their parts, as a lane holds them.
    fn parts(format: Format, bodies: &[Bytes]) -> Vec<(&Bytes, Part)> {
        bodies.iter().map(|b| (b, joinable(format, &Method::POST, "/", &[], b).unwrap().part)).collect()
    }

    fn join(format: Format, parts: &[(&Bytes, Part)]) -> Bytes {
        super::join(format, parts.iter().copied())
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(HeaderName, HeaderValue)> {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn only_formats_that_concatenate_are_joined() {
        let snappy = [("content-encoding", "snappy"), ("content-type", "application/x-protobuf")];
        assert_eq!(Format::of("/api/v1/write", &h(&snappy)), Some(Format::RemoteWrite));
        assert_eq!(Format::of("/api/v1/write", &h(&[])), Some(Format::RemoteWrite));
        let typed = [("content-type", "application/x-protobuf;proto=prometheus.WriteRequest")];
        assert_eq!(Format::of("/api/v1/write", &h(&typed)), Some(Format::RemoteWrite));
        assert_eq!(
            Format::of("/api/v1/write", &h(&[("x-prometheus-remote-write-version", "0.1.0")])),
            Some(Format::RemoteWrite)
        );
        // Remote write 2.0 (a symbol table), zstd, gzip: never.
        let v2 = [("content-type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")];
        assert_eq!(Format::of("/api/v1/write", &h(&v2)), None);
        assert_eq!(Format::of("/api/v1/write", &h(&[("x-prometheus-remote-write-version", "2.0.0")])), None);
        assert_eq!(Format::of("/api/v1/write", &h(&[("content-encoding", "zstd")])), None);
        assert_eq!(Format::of("/api/v1/write", &h(&[("content-type", "application/json")])), None);
        assert_eq!(Format::of("/api/v1/import", &h(&[])), Some(Format::Lines));
        assert_eq!(Format::of("/insert/jsonline", &h(&[("content-encoding", "identity")])), Some(Format::Lines));
        assert_eq!(Format::of("/api/v1/import", &h(&[("content-encoding", "gzip")])), None);
        let twice = [("content-encoding", "identity"), ("content-encoding", "gzip")];
        assert_eq!(Format::of("/api/v1/import", &h(&twice)), None);
        for pattern in
            ["/api/v1/import/native", "/opentelemetry/v1/metrics", "/insert/loki/api/v1/push", "/api/v1/push"]
        {
            assert_eq!(Format::of(pattern, &h(&[])), None, "{pattern}");
        }
    }

    #[test]
    fn lanes_differ_by_path_query_and_headers_but_not_request_ids() {
        let lane = |path: &str, headers: &[(&str, &str)]| {
            joinable(Format::Lines, &Method::POST, path, &h(headers), b"a 1\n").unwrap().lane
        };
        let base = lane("/write?db=a", &[("content-type", "text/plain")]);
        assert_eq!(
            base,
            lane("/write?db=a", &[("content-type", "text/plain"), ("x-request-id", "r2"), ("user-agent", "t")])
        );
        assert_ne!(base, lane("/write?db=b", &[("content-type", "text/plain")]));
        assert_ne!(base, lane("/write?db=a", &[("content-type", "text/csv")]));
        assert_ne!(base, lane("/write?db=a", &[]));
        let joined = joined_headers(&h(&[("x-request-id", "r"), ("vl-stream-fields", "app")]));
        assert_eq!(joined, h(&[("vl-stream-fields", "app")]));
    }

    #[test]
    fn lines_are_joined_with_a_newline_where_one_is_missing() {
        let bodies = [Bytes::from("a 1\n"), Bytes::from("b 2"), Bytes::new(), Bytes::from("c 3\r\n")];
        assert_eq!(join(Format::Lines, &parts(Format::Lines, &bodies)), Bytes::from("a 1\nb 2\nc 3\r\n"));
    }

    #[test]
    fn a_body_that_is_not_a_snappy_block_is_not_joined() {
        assert_eq!(
            snappy_block(&snap::raw::Encoder::new().compress_vec(b"abcabcabcabc").unwrap()).map(|b| b.0),
            Some(12)
        );
        assert_eq!(snappy_block(b""), None, "no preamble");
        assert_eq!(snappy_block(&[0]), Some((0, 1)), "the empty block");
        assert_eq!(snappy_block(&[3, 0b0000_1000, b'a', b'b']), None, "a literal past the end");
        assert_eq!(snappy_block(&[4, 0b0000_0100, b'a', b'b', 0b0000_0110, 3, 0]), None, "a copy before the start");
        assert_eq!(snappy_block(&[4, 0b0000_0100, b'a', b'b', 0b0000_0110, 0, 0]), None, "offset 0");
        assert_eq!(snappy_block(&[5, 0b0000_0100, b'a', b'b']), None, "shorter than declared");
        assert_eq!(snappy_block(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), None, "a preamble past 32 bits");
        let four = joinable(Format::RemoteWrite, &Method::POST, "/api/v1/write", &[], "x".repeat(4096).as_bytes());
        assert!(four.is_none(), "text posted to the remote write path");
    }

    proptest! {
        #[test]
        fn joined_snappy_blocks_decode_to_the_bodies_one_after_the_other(
            raws in prop::collection::vec(prop::collection::vec(prop::sample::select(b"ab\x00\xff{}".to_vec()), 0..3000), 1..8)
        ) {
            let blocks: Vec<Bytes> = raws.iter().map(|raw| snap::raw::Encoder::new().compress_vec(raw).unwrap().into()).collect();
            for block in &blocks {
                prop_assert!(snappy_block(block).is_some());
            }
            let joined = join(Format::RemoteWrite, &parts(Format::RemoteWrite, &blocks));
            let decoded = snap::raw::Decoder::new().decompress_vec(&joined).unwrap();
            prop_assert_eq!(decoded, raws.concat());
            prop_assert_eq!(snappy_block(&joined).map(|b| b.0), Some(raws.iter().map(Vec::len).sum::<usize>() as u64));
        }

        #[test]
        fn what_the_walk_accepts_of_a_damaged_block_decodes_to_its_length(
            raw in prop::collection::vec(prop::sample::select(b"abc\x00".to_vec()), 1..500),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut block = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
            let at = at.index(block.len());
            block[at] = byte;
            let decoded = snap::raw::Decoder::new().decompress_vec(&block).ok().map(|d| d.len() as u64);
            // The walk accepts exactly what decodes (it checks no checksum: there is none).
            prop_assert_eq!(snappy_block(&block).map(|b| b.0), decoded);
        }
    }
}
