//! Remembered replies to authenticated requests, keyed by (session, seq):
//! a retransmission, or a frame resent on a new TCP connection, gets the
//! reply again without the function running again, only at the address the
//! request first came from, at most [`MAX_RESENDS`] times.

use super::SID_LEN;
use crate::association::Origin;

/// How many times a remembered reply is sent again.
pub const MAX_RESENDS: u8 = 4;

/// How long a reply is remembered (ms).
pub const REMEMBER_MS: u64 = 60_000;

/// Where a server keeps remembered replies. A device uses
/// [`FixedReplies`]; a host may keep them on the heap.
pub trait ReplyStore {
    /// The reply remembered for (`sid`, `seq`), if `origin` may have it
    /// again and it was not sent too often (counting this send).
    fn resend(&mut self, sid: &[u8; SID_LEN], seq: u32, origin: &Origin, now: u64)
    -> Option<&[u8]>;
    /// Remembers `reply` for (`sid`, `seq`) from `origin`.
    fn remember(&mut self, sid: &[u8; SID_LEN], seq: u32, origin: &Origin, reply: &[u8], now: u64);
    /// Forgets every reply of session `sid` (it was evicted).
    fn forget(&mut self, sid: &[u8; SID_LEN]);
}

struct Entry<const SIZE: usize> {
    key: Option<([u8; SID_LEN], u32)>,
    origin: Origin,
    at: u64,
    sent: u8,
    len: usize,
    reply: [u8; SIZE],
}

/// The last `N` replies of up to `SIZE` bytes (longer ones are not
/// remembered), oldest replaced first.
pub struct FixedReplies<const N: usize, const SIZE: usize> {
    entries: [Entry<SIZE>; N],
    next: usize,
}

impl<const N: usize, const SIZE: usize> FixedReplies<N, SIZE> {
    /// An empty store.
    pub const fn new() -> Self {
        FixedReplies {
            entries: [const {
                Entry {
                    key: None,
                    origin: Origin::SERIAL,
                    at: 0,
                    sent: 0,
                    len: 0,
                    reply: [0; SIZE],
                }
            }; N],
            next: 0,
        }
    }
}

impl<const N: usize, const SIZE: usize> Default for FixedReplies<N, SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const SIZE: usize> ReplyStore for FixedReplies<N, SIZE> {
    fn resend(
        &mut self,
        sid: &[u8; SID_LEN],
        seq: u32,
        origin: &Origin,
        now: u64,
    ) -> Option<&[u8]> {
        let e = self
            .entries
            .iter_mut()
            .find(|e| e.key == Some((*sid, seq)))?;
        if now.saturating_sub(e.at) >= REMEMBER_MS
            || e.sent >= MAX_RESENDS
            || !origin.may_receive_reply_of(&e.origin)
        {
            return None;
        }
        e.sent += 1;
        e.reply.get(..e.len)
    }

    fn remember(&mut self, sid: &[u8; SID_LEN], seq: u32, origin: &Origin, reply: &[u8], now: u64) {
        if reply.len() > SIZE || N == 0 {
            return;
        }
        let e = &mut self.entries[self.next % N];
        self.next = (self.next + 1) % N;
        e.key = Some((*sid, seq));
        e.origin = *origin;
        e.at = now;
        e.sent = 0;
        e.len = reply.len();
        e.reply[..reply.len()].copy_from_slice(reply);
    }

    fn forget(&mut self, sid: &[u8; SID_LEN]) {
        for e in &mut self.entries {
            if e.key.is_some_and(|(s, _)| s == *sid) {
                e.key = None;
            }
        }
    }
}
