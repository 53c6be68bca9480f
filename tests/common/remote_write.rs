//! Prometheus remote write 1.0 bodies: a `WriteRequest` of single-sample
//! series, protobuf-encoded by hand (its four messages are small) and
//! snappy-compressed as a block, as Prometheus and vmagent send them. Also
//! `benches/load.sh`'s POST body (examples/remote_write_body.rs).

/// One series: its name, further labels, a value and a timestamp (ms).
pub struct Series<'a> {
    pub name: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    pub value: f64,
    pub timestamp_ms: i64,
}

use prost::encoding::encode_varint as varint;

/// Field `field` of wire type 2 (length-delimited) holding `bytes`.
fn delimited(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(field << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The protobuf `WriteRequest` of `series`, uncompressed.
pub fn write_request(series: &[Series]) -> Vec<u8> {
    let mut request = Vec::new();
    for s in series {
        let mut ts = Vec::new();
        for (name, value) in std::iter::once(&("__name__", s.name)).chain(s.labels) {
            let mut label = Vec::new();
            delimited(&mut label, 1, name.as_bytes());
            delimited(&mut label, 2, value.as_bytes());
            delimited(&mut ts, 1, &label);
        }
        let mut sample = vec![1 << 3 | 1];
        sample.extend_from_slice(&s.value.to_le_bytes());
        varint(2 << 3, &mut sample);
        varint(s.timestamp_ms as u64, &mut sample);
        delimited(&mut ts, 2, &sample);
        delimited(&mut request, 1, &ts);
    }
    request
}

/// The body a client posts: `write_request(series)` as a snappy block.
pub fn body(series: &[Series]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(&write_request(series)).expect("snappy compresses any input")
}
