//! The reply cache of the datagram-like servers (UDP, MQTT): `N` fixed
//! slots of `TX` bytes, keyed by (caller, seq) where the caller is a peer
//! address (UDP) or an MQTT name, replaced oldest first.
//!
//! A reply is written straight into the slot it will be remembered in, so
//! the cache costs no second reply buffer.

use core::net::SocketAddr;

struct Entry<K, const TX: usize> {
    key: Option<(K, u32)>,
    len: usize,
    reply: [u8; TX],
}

impl<K, const TX: usize> Entry<K, TX> {
    const EMPTY: Self = Entry {
        key: None,
        len: 0,
        reply: [0; TX],
    };
}

/// Remembers the last `N` replies.
pub(crate) struct ReplyCache<const TX: usize, const N: usize, K = SocketAddr> {
    entries: [Entry<K, TX>; N],
    /// The slot the next reply replaces (the oldest).
    next: usize,
}

impl<K: PartialEq, const TX: usize, const N: usize> ReplyCache<TX, N, K> {
    pub(crate) const fn new() -> Self {
        ReplyCache {
            entries: [const { Entry::EMPTY }; N],
            next: 0,
        }
    }

    /// The reply remembered for (`peer`, `seq`).
    pub(crate) fn get(&self, peer: &K, seq: u32) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| e.key.as_ref().is_some_and(|(k, s)| k == peer && *s == seq))
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
    pub(crate) fn commit(&mut self, peer: K, seq: u32, len: usize) -> &[u8] {
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
        let mut cache = ReplyCache::<8, 2, SocketAddr>::new();
        cache.slot()[..3].copy_from_slice(b"one");
        cache.commit(a, 1, 3);
        cache.slot()[..3].copy_from_slice(b"two");
        cache.commit(b, 1, 3);
        assert_eq!(cache.get(&a, 1), Some(&b"one"[..]));
        assert_eq!(cache.get(&b, 1), Some(&b"two"[..]));
        assert_eq!(cache.get(&a, 2), None);
        // A third reply replaces the oldest.
        cache.slot()[..5].copy_from_slice(b"three");
        assert_eq!(
            cache.get(&a, 1),
            None,
            "the slot being written is forgotten"
        );
        cache.commit(a, 2, 5);
        assert_eq!(cache.get(&a, 2), Some(&b"three"[..]));
        assert_eq!(cache.get(&b, 1), Some(&b"two"[..]));
    }
}
