//! The UDP server's reply cache: `N` fixed slots of `TX` bytes, keyed by
//! (peer address, seq), replaced oldest first.
//!
//! A reply is written straight into the slot it will be remembered in, so
//! the cache costs no second reply buffer.

use core::net::SocketAddr;

struct Entry<const TX: usize> {
    key: Option<(SocketAddr, u32)>,
    len: usize,
    reply: [u8; TX],
}

impl<const TX: usize> Entry<TX> {
    const EMPTY: Self = Entry {
        key: None,
        len: 0,
        reply: [0; TX],
    };
}

/// Remembers the last `N` replies.
pub(crate) struct ReplyCache<const TX: usize, const N: usize> {
    entries: [Entry<TX>; N],
    /// The slot the next reply replaces (the oldest).
    next: usize,
}

impl<const TX: usize, const N: usize> ReplyCache<TX, N> {
    pub(crate) const fn new() -> Self {
        ReplyCache {
            entries: [const { Entry::EMPTY }; N],
            next: 0,
        }
    }

    /// The reply remembered for (`peer`, `seq`).
    pub(crate) fn get(&self, peer: SocketAddr, seq: u32) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| e.key == Some((peer, seq)))
            .and_then(|e| e.reply.get(..e.len))
    }

    /// The buffer of the slot the next reply goes into. The entry that was
    /// there is forgotten at once (it is about to be overwritten).
    pub(crate) fn slot(&mut self) -> &mut [u8; TX] {
        let entry = &mut self.entries[self.next % N];
        entry.key = None;
        entry.len = 0;
        &mut entry.reply
    }

    /// Keeps the `len` bytes just written into [`slot`](Self::slot) as the
    /// reply to (`peer`, `seq`) and returns them.
    pub(crate) fn commit(&mut self, peer: SocketAddr, seq: u32, len: usize) -> &[u8] {
        let index = self.next % N;
        self.next = (index + 1) % N;
        let entry = &mut self.entries[index];
        entry.key = Some((peer, seq));
        entry.len = len.min(TX);
        &entry.reply[..entry.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_n_replies() {
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let mut cache = ReplyCache::<8, 2>::new();
        cache.slot()[..3].copy_from_slice(b"one");
        cache.commit(a, 1, 3);
        cache.slot()[..3].copy_from_slice(b"two");
        cache.commit(b, 1, 3);
        assert_eq!(cache.get(a, 1), Some(&b"one"[..]));
        assert_eq!(cache.get(b, 1), Some(&b"two"[..]));
        assert_eq!(cache.get(a, 2), None);
        // A third reply replaces the oldest.
        cache.slot()[..5].copy_from_slice(b"three");
        assert_eq!(cache.get(a, 1), None, "the slot being written is forgotten");
        cache.commit(a, 2, 5);
        assert_eq!(cache.get(a, 2), Some(&b"three"[..]));
        assert_eq!(cache.get(b, 1), Some(&b"two"[..]));
    }
}
