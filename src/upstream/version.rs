//! The HTTP version an endpoint is spoken to: HTTP/1.1, or — when its
//! deployment says `http2 = true` — HTTP/2 only: ALPN `h2` for `https://`,
//! prior knowledge (h2c) for `http://`. Requests and health probes set it
//! the same way, so a probe judges the protocol the traffic uses.
//!
//! HTTP/2 only, not "h2, else HTTP/1.1" (Pingora's `ALPN::H2H1`): the
//! operator said the deployment speaks HTTP/2, so one that does not fails
//! its probes with the reason instead of quietly serving HTTP/1.1; and
//! Pingora takes a plaintext `H2H1` peer for HTTP/1.1, so h2c needs `H2`.

use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

/// Requests multiplexed on one upstream HTTP/2 connection; Pingora opens
/// another connection beyond it.
pub const MAX_STREAMS: usize = 100;
/// What an HTTP/2 endpoint may send before the router reads it: per
/// answer, and per connection (all answers on it together).
pub const STREAM_WINDOW: u32 = 1 << 20;
pub const CONNECTION_WINDOW: u32 = 8 << 20;

/// Sets the version on the peer of one attempt (or probe).
pub fn apply(peer: &mut HttpPeer, http2: bool) {
    if http2 {
        peer.options.alpn = ALPN::H2;
        peer.options.max_h2_streams = MAX_STREAMS;
        peer.options.h2_stream_window_size = Some(STREAM_WINDOW);
        peer.options.h2_connection_window_size = Some(CONNECTION_WINDOW);
    }
}
