//! The request body as tonic reads it: bounded in time (`body_timeout`
//! between two reads, as on the HTTP listeners), and a gzip export kept
//! compressed: the deployment gets the client's gzip bytes with
//! `Content-Encoding: gzip`, the router never recompresses.
//!
//! tonic decompresses a message whose gRPC frame has the compressed flag
//! set; [`KeepCompressed`] clears that flag on the way in (it only reads the
//! 5-byte message prefixes, tonic still does the framing), so the message
//! reaches the pass-through codec as it was sent, and records that it was
//! compressed. [`decoded_len`] then measures the decoded size against
//! `max_body_bytes` without keeping it (a gzip bomb stops at the limit).

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body whose gRPC messages pass with the compressed flag
/// cleared, failing when the client sends nothing for `timeout`.
pub struct KeepCompressed<B> {
    inner: B,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The bytes of the current message prefix read so far.
    prefix: [u8; 5],
    seen: usize,
    /// Bytes of the current message still to come.
    left: u64,
    compressed: Arc<AtomicBool>,
}

impl<B> KeepCompressed<B> {
    /// `inner` with `timeout` between reads, and the flag set once a
    /// compressed message went through.
    pub fn new(inner: B, timeout: Duration) -> (Self, Arc<AtomicBool>) {
        let compressed = Arc::new(AtomicBool::new(false));
        let deadline = Box::pin(tokio::time::sleep(timeout));
        let body = KeepCompressed {
            inner,
            timeout,
            deadline,
            prefix: [0; 5],
            seen: 0,
            left: 0,
            compressed: compressed.clone(),
        };
        (body, compressed)
    }

    fn clear_flags(&mut self, chunk: Bytes) -> Bytes {
        let mut copy: Option<BytesMut> = None;
        let mut i = 0;
        while i < chunk.len() {
            if self.left > 0 {
                let n = self.left.min((chunk.len() - i) as u64);
                self.left -= n;
                i += n as usize;
                continue;
            }
            if self.seen == 0 && chunk[i] == 1 {
                self.compressed.store(true, Ordering::Relaxed);
                copy.get_or_insert_with(|| BytesMut::from(&chunk[..]))[i] = 0;
            }
            self.prefix[self.seen] = chunk[i];
            self.seen += 1;
            i += 1;
            if self.seen == self.prefix.len() {
                self.left =
                    u64::from(u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]));
                self.seen = 0;
            }
        }
        copy.map_or(chunk, BytesMut::freeze)
    }
}

impl<B> Body for KeepCompressed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() {
            return match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err("the client sent no more of the message within body_timeout".into())))
                }
                Poll::Pending => Poll::Pending,
            };
        }
        let next = tokio::time::Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
        polled.map(|frame| {
            frame.map(|frame| match frame {
                Ok(frame) => Ok(match frame.into_data() {
                    Ok(data) => Frame::data(self.clear_flags(data)),
                    Err(frame) => frame,
                }),
                Err(e) => Err(e.into()),
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The decoded size of gzip `message`, or `None` when it is over `limit`;
/// an error when it is no gzip.
pub fn decoded_len(message: &[u8], limit: u64) -> std::io::Result<Option<u64>> {
    let mut decoder = flate2::read::GzDecoder::new(message).take(limit + 1);
    let len = std::io::copy(&mut decoder, &mut std::io::sink())?;
    Ok((len <= limit).then_some(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut framed = vec![flag];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(message);
        framed
    }

    #[tokio::test]
    async fn the_compressed_flag_is_cleared_wherever_the_chunks_split() {
        let message = framed(1, b"\x01\x01compressed bytes\x01");
        for split in 0..message.len() {
            let (mut body, compressed) =
                KeepCompressed::new(http_body_util::Empty::<Bytes>::new(), Duration::from_secs(1));
            let mut out = body.clear_flags(Bytes::copy_from_slice(&message[..split])).to_vec();
            out.extend_from_slice(&body.clear_flags(Bytes::copy_from_slice(&message[split..])));
            assert_eq!(out, framed(0, b"\x01\x01compressed bytes\x01"), "split at {split}");
            assert!(compressed.load(Ordering::Relaxed));
        }
        let (mut body, compressed) = KeepCompressed::new(http_body_util::Empty::<Bytes>::new(), Duration::from_secs(1));
        let plain = framed(0, b"\x01plain");
        assert_eq!(&body.clear_flags(Bytes::from(plain.clone()))[..], &plain[..]);
        assert!(!compressed.load(Ordering::Relaxed));
    }

    #[test]
    fn the_decoded_size_is_measured_up_to_the_limit() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&[b'x'; 5000]).unwrap();
        let gzip = encoder.finish().unwrap();
        assert_eq!(decoded_len(&gzip, 5000).unwrap(), Some(5000));
        assert_eq!(decoded_len(&gzip, 4999).unwrap(), None);
        assert!(decoded_len(b"not gzip", 5000).is_err());
    }
}
