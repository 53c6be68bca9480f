//! The walk that lets a mirror copy's remote-write body be joined
//! (src/migration/join.rs): on any bytes it accepts exactly what the `snap`
//! crate's decoder accepts, with the length it decodes to; and two blocks
//! it accepts, joined, decode to the two bodies one after the other.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mirador_router::migration::{join, joinable, snappy_block, Format};

fn decoded(block: &[u8]) -> Option<Vec<u8>> {
    snap::raw::Decoder::new().decompress_vec(block).ok()
}

fuzz_target!(|input: (u16, &[u8])| {
    let (split, data) = input;
    assert_eq!(snappy_block(data).map(|(n, _)| n), decoded(data).map(|d| d.len() as u64), "{data:?}");
    let at = usize::from(split) % (data.len() + 1);
    let (a, b) = (Bytes::copy_from_slice(&data[..at]), Bytes::copy_from_slice(&data[at..]));
    let part = |body: &Bytes| joinable(Format::RemoteWrite, &http::Method::POST, "/api/v1/write", &[], body);
    let (Some(pa), Some(pb)) = (part(&a), part(&b)) else { return };
    let joined = join(Format::RemoteWrite, [(&a, pa.part), (&b, pb.part)].into_iter());
    let mut both = decoded(&a).unwrap();
    both.extend(decoded(&b).unwrap());
    assert_eq!(decoded(&joined), Some(both), "{a:?} + {b:?}");
});
