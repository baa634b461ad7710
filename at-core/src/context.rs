//! [`Context`]: what the one request -> reply path knows of a frame
//! besides its bytes (contract section 10): where and when it came, and
//! the server's topics.

use crate::association::Origin;
use crate::subscriptions::Topics;

/// What the request -> reply path knows of a frame besides its bytes
/// (contract section 10): where it came from, when, and the server's
/// topics. A device server makes one per frame.
pub struct Context<'c> {
    /// Where the frame came from (its association).
    pub origin: Origin,
    /// The board's clock, in ms.
    pub now: u64,
    /// How long ago (ms) the whole frame arrived: `deadline_ms` counts
    /// from then. 0 on a server that answers a frame as soon as it has it.
    pub waited_ms: u64,
    /// The size of the frame as it came (a UDP subscribe's datagram sets
    /// how much its events may total).
    pub frame_len: usize,
    /// The server's topics, when it offers events.
    pub topics: Option<&'c mut dyn Topics>,
}

impl Context<'_> {
    /// A frame from `origin` at `now`, answered at once, on a server
    /// without topics.
    pub fn new(origin: Origin, now: u64) -> Context<'static> {
        Context {
            origin,
            now,
            waited_ms: 0,
            frame_len: 0,
            topics: None,
        }
    }
}
