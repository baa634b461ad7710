//! The UDP server's reply cache: what makes execution at-most-once.
//!
//! Replies are kept by (client address, seq) and bounded three ways: by age,
//! by total entries, and per client, so one client (or a spoofer cycling
//! seqs) can only ever evict its own entries once it reaches its share.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

type Key = (SocketAddr, u32);

struct Entry {
    id: u64,
    /// The request's length and CRC: the same (client, seq) with another
    /// body (a client restarted and counting from 1 again) is a new call.
    request: (u32, u32),
    reply: Box<[u8]>,
}

/// A bounded map from (client, seq) to the reply frame sent.
pub(super) struct ReplyCache {
    entries: HashMap<Key, Entry>,
    /// Insertion order over all clients: (id, key, time). May hold ids whose entry
    /// was already evicted; those are skipped.
    order: VecDeque<(u64, Key, Instant)>,
    /// Insertion order per client.
    per_client: HashMap<SocketAddr, VecDeque<(u64, u32)>>,
    next_id: u64,
    max_entries: usize,
    max_per_client: usize,
    max_age: Duration,
}

impl ReplyCache {
    pub(super) fn new(max_entries: usize, max_per_client: usize, max_age: Duration) -> Self {
        ReplyCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            per_client: HashMap::new(),
            next_id: 0,
            max_entries: max_entries.max(1),
            max_per_client: max_per_client.clamp(1, max_entries.max(1)),
            max_age,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The reply remembered for this call (same client, seq, request length
    /// and CRC), if it is still fresh.
    pub(super) fn get(
        &mut self,
        client: SocketAddr,
        seq: u32,
        request: (u32, u32),
        now: Instant,
    ) -> Option<&[u8]> {
        self.expire(now);
        self.entries
            .get(&(client, seq))
            .filter(|e| e.request == request)
            .map(|e| &*e.reply)
    }

    /// Remembers a reply to the request with this (length, CRC).
    pub(super) fn insert(
        &mut self,
        client: SocketAddr,
        seq: u32,
        request: (u32, u32),
        reply: &[u8],
        now: Instant,
    ) {
        self.expire(now);
        let id = self.next_id;
        self.next_id += 1;
        let queue = self.per_client.entry(client).or_default();
        // The client's own share first: evict its oldest live entries.
        while queue.len() >= self.max_per_client {
            let Some((old_id, old_seq)) = queue.pop_front() else {
                break;
            };
            remove_if(&mut self.entries, (client, old_seq), old_id);
        }
        queue.push_back((id, seq));
        if let Some(old) = self.entries.insert(
            (client, seq),
            Entry {
                id,
                request,
                reply: reply.into(),
            },
        ) {
            // Same (client, seq) again: the new entry replaces it.
            let _ = old;
        }
        self.order.push_back((id, (client, seq), now));
        // Then the global bound: evict the oldest entries of anyone.
        while self.entries.len() > self.max_entries {
            let Some((old_id, key, _)) = self.order.pop_front() else {
                break;
            };
            remove_if(&mut self.entries, key, old_id);
        }
        self.compact();
    }

    /// Drops entries older than the age limit (the order queue is by time).
    fn expire(&mut self, now: Instant) {
        // The queue holds each entry's time too: the common case (nothing
        // to expire) looks at the front alone, without a lookup.
        while let Some(&(id, key, at)) = self.order.front() {
            if now.duration_since(at) < self.max_age {
                break;
            }
            remove_if(&mut self.entries, key, id);
            self.order.pop_front();
        }
    }

    /// Keeps the bookkeeping queues proportional to the live entries.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.max_entries + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(id, key, _)| entries.get(key).is_some_and(|e| e.id == *id));
        }
        if self.per_client.len() > 2 * self.max_entries + 64 {
            let entries = &self.entries;
            self.per_client.retain(|client, queue| {
                queue
                    .retain(|(id, seq)| entries.get(&(*client, *seq)).is_some_and(|e| e.id == *id));
                !queue.is_empty()
            });
        }
    }
}

fn remove_if(entries: &mut HashMap<Key, Entry>, key: Key, id: u64) {
    // One lookup (one hash of the key), not a get and then a remove.
    if let std::collections::hash_map::Entry::Occupied(found) = entries.entry(key)
        && found.get().id == id
    {
        found.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: (u32, u32) = (33, 0x0BBC_D047);

    #[test]
    fn another_request_under_the_same_seq_is_a_new_call() {
        let t0 = Instant::now();
        let mut cache = ReplyCache::new(10, 10, Duration::from_secs(5));
        cache.insert(addr(1), 1, REQ, b"old", t0);
        assert_eq!(cache.get(addr(1), 1, (33, 0xDEAD_BEEF), t0), None);
        cache.insert(addr(1), 1, (33, 0xDEAD_BEEF), b"new", t0);
        assert_eq!(
            cache.get(addr(1), 1, (33, 0xDEAD_BEEF), t0),
            Some(&b"new"[..])
        );
        assert_eq!(cache.get(addr(1), 1, REQ, t0), None);
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn remembers_and_forgets_by_age() {
        let t0 = Instant::now();
        let mut cache = ReplyCache::new(10, 10, Duration::from_secs(5));
        cache.insert(addr(1), 7, REQ, b"reply", t0);
        assert_eq!(cache.get(addr(1), 7, REQ, t0), Some(&b"reply"[..]));
        assert_eq!(cache.get(addr(2), 7, REQ, t0), None);
        assert_eq!(cache.get(addr(1), 8, REQ, t0), None);
        assert_eq!(
            cache.get(addr(1), 7, REQ, t0 + Duration::from_secs(6)),
            None
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn one_client_cannot_evict_the_others() {
        let t0 = Instant::now();
        let mut cache = ReplyCache::new(100, 10, Duration::from_secs(60));
        cache.insert(addr(1), 1, REQ, b"a", t0);
        for seq in 0..10_000 {
            cache.insert(addr(2), seq, REQ, b"flood", t0);
        }
        assert_eq!(cache.get(addr(1), 1, REQ, t0), Some(&b"a"[..]));
        assert_eq!(cache.len(), 11);
        assert_eq!(cache.get(addr(2), 9_999, REQ, t0), Some(&b"flood"[..]));
        assert_eq!(cache.get(addr(2), 9_989, REQ, t0), None);
        assert!(cache.order.len() <= 2 * 100 + 64 + 1);
    }

    #[test]
    fn total_is_bounded_across_many_clients() {
        let t0 = Instant::now();
        let mut cache = ReplyCache::new(50, 5, Duration::from_secs(60));
        for port in 0..1_000 {
            cache.insert(addr(port), 1, REQ, b"x", t0);
        }
        assert_eq!(cache.len(), 50);
        assert_eq!(cache.get(addr(999), 1, REQ, t0), Some(&b"x"[..]));
        assert_eq!(cache.get(addr(0), 1, REQ, t0), None);
        assert!(cache.per_client.len() <= 2 * 50 + 64 + 1);
    }
}
