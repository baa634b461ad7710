//! The UDP server's reply cache: what makes execution at-most-once.
//!
//! Replies are kept by (client address, seq) and bounded three ways: by age,
//! by total entries, and per client, so one client (or a spoofer cycling
//! seqs) can only ever evict its own entries once it reaches its share.
//!
//! Every datagram costs one hash of its sender's address to look the reply
//! up, and one more to remember a new one. A client's entries sit in the
//! order they came: while its seqs only go up (as a client's do, counting
//! its calls), a new seq is told by one comparison with the newest and an
//! old one found by a binary search; otherwise by a scan of its seqs (at
//! most its share, 256 by default, compared 16 at a time). Its share's
//! oldest entry is the one its next reply evicts. Remembering allocates
//! nothing once the client has reached its share: the evicted entry's
//! buffer takes the new reply. The address map hashes with `foldhash`,
//! seeded at random, so addresses a spoofer picks cannot be aimed at one
//! bucket.

use std::collections::VecDeque;
use std::collections::hash_map::Entry as Slot;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Reply buffers kept for reuse at most (those of entries evicted by age or
/// by the global bound, which no insert took at once).
const SPARE_BUFFERS: usize = 64;

/// The largest buffer kept for reuse: a large reply's buffer is freed with
/// its entry, so that small replies never hold large buffers.
const SPARE_CAPACITY: usize = 4096;

/// One remembered reply.
struct Entry {
    /// Its place in the global order ([`ReplyCache::order`]).
    id: u64,
    /// The request's length and CRC: the same (client, seq) with another
    /// body (a client restarted and counting from 1 again) is a new call.
    request: (u32, u32),
    reply: Vec<u8>,
}

/// The replies remembered for one client address, oldest first.
struct Client {
    addr: SocketAddr,
    /// The seq of each entry, apart so that a search reads them alone.
    seqs: VecDeque<u32>,
    entries: VecDeque<Entry>,
    /// How many neighbours in `seqs` are out of order (the newer not
    /// above the older). While none are, as for a client counting up,
    /// `seqs` is sorted and a seq is found by halving.
    descents: usize,
}

impl Client {
    /// Where the newest entry for `seq` is (a seq used again for another
    /// request leaves the older entry behind, unfound, until it ages out).
    fn find(&self, seq: u32) -> Option<usize> {
        if self.descents == 0 {
            // Sorted without repeats: at most one match, and a seq above
            // the newest (each new call's) is told by one comparison.
            if self.seqs.back().is_none_or(|&last| seq > last) {
                return None;
            }
            return self.seqs.binary_search(&seq).ok();
        }
        // Most lookups are misses (each call has a new seq): compare
        // blocks of 16 without an early exit, which the compiler does in a
        // few vector instructions, and look closer only at a hit.
        let (front, back) = self.seqs.as_slices();
        if !has_seq(front, seq) && !has_seq(back, seq) {
            return None;
        }
        self.seqs.iter().rposition(|&s| s == seq)
    }

    /// Remembers `entry` for `seq`, as the newest.
    fn push(&mut self, seq: u32, entry: Entry) {
        if self.seqs.back().is_some_and(|&last| last >= seq) {
            self.descents += 1;
        }
        self.seqs.push_back(seq);
        self.entries.push_back(entry);
    }

    /// Forgets the oldest entry; its buffer.
    fn pop_oldest(&mut self) -> Option<Vec<u8>> {
        if let (Some(&first), Some(&second)) = (self.seqs.front(), self.seqs.get(1))
            && first >= second
        {
            self.descents -= 1;
        }
        self.seqs.pop_front();
        self.entries.pop_front().map(|e| e.reply)
    }
}

/// Whether `seq` is among `seqs`.
fn has_seq(seqs: &[u32], seq: u32) -> bool {
    let blocks = seqs.chunks_exact(16);
    let rest = blocks.remainder();
    blocks
        .map(|block| block.iter().fold(false, |hit, &s| hit | (s == seq)))
        .fold(false, |hit, block| hit | block)
        || rest.contains(&seq)
}

/// An entry's place in the global order: its id, the client's place in
/// [`ReplyCache::clients`], and when it is forgotten by age.
#[derive(Clone, Copy)]
struct Stamp {
    id: u64,
    place: usize,
    expires: Instant,
}

/// A client address as the index hashes it: its IP as one `u128` and its
/// port (two writes to the hasher, where `SocketAddr`'s own `Hash` makes
/// four). Equal as the addresses are.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Peer(SocketAddr);

impl std::hash::Hash for Peer {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let ip = match self.0.ip() {
            std::net::IpAddr::V4(ip) => u128::from(ip.to_bits()),
            std::net::IpAddr::V6(ip) => ip.to_bits(),
        };
        state.write_u128(ip);
        state.write_u16(self.0.port());
    }
}

/// A bounded map from (client, seq) to the reply frame sent.
pub(super) struct ReplyCache {
    /// Each client's place in `clients`.
    index: HashMap<Peer, usize>,
    /// The clients with replies remembered; `None` marks a free place.
    clients: Vec<Option<Client>>,
    /// Free places in `clients`.
    free: Vec<usize>,
    /// Every entry in the order remembered (so, by age). Also holds the
    /// stamps of entries a client's own share evicted: those are skipped,
    /// and dropped when they grow to twice the entries.
    order: VecDeque<Stamp>,
    /// Entries remembered, over all clients.
    live: usize,
    /// Buffers of evicted entries, for the next replies.
    spare: Vec<Vec<u8>>,
    next_id: u64,
    max_entries: usize,
    max_per_client: usize,
    max_age: Duration,
}

impl ReplyCache {
    pub(super) fn new(max_entries: usize, max_per_client: usize, max_age: Duration) -> Self {
        ReplyCache {
            index: HashMap::default(),
            clients: Vec::new(),
            free: Vec::new(),
            order: VecDeque::new(),
            live: 0,
            spare: Vec::new(),
            next_id: 0,
            max_entries: max_entries.max(1),
            max_per_client: max_per_client.clamp(1, max_entries.max(1)),
            // Longer is as good as forever, and keeps `Instant + age` in
            // range.
            max_age: max_age.min(Duration::from_secs(365 * 24 * 3600)),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.live
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
        let place = *self.index.get(&Peer(client))?;
        let client = self.clients.get(place)?.as_ref()?;
        let entry = &client.entries[client.find(seq)?];
        (entry.request == request).then_some(&*entry.reply)
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
        let place = match self.index.entry(Peer(client)) {
            Slot::Occupied(found) => *found.get(),
            Slot::Vacant(vacant) => {
                let fresh = Client {
                    addr: client,
                    seqs: VecDeque::new(),
                    entries: VecDeque::new(),
                    descents: 0,
                };
                let place = match self.free.pop() {
                    Some(place) => {
                        self.clients[place] = Some(fresh);
                        place
                    }
                    None => {
                        self.clients.push(Some(fresh));
                        self.clients.len() - 1
                    }
                };
                *vacant.insert(place)
            }
        };
        let Some(Some(owner)) = self.clients.get_mut(place) else {
            return;
        };
        // The client's own share first: its oldest entry makes room.
        if owner.entries.len() >= self.max_per_client
            && let Some(old) = owner.pop_oldest()
        {
            self.live -= 1;
            keep_spare(&mut self.spare, old);
        }
        let mut buffer = self.spare.pop().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(reply);
        let id = self.next_id;
        self.next_id += 1;
        owner.push(
            seq,
            Entry {
                id,
                request,
                reply: buffer,
            },
        );
        self.live += 1;
        // `max_age` is at most a year (see `new`): no overflow.
        let expires = now.checked_add(self.max_age).unwrap_or(now);
        self.order.push_back(Stamp { id, place, expires });
        // Then the global bound: the oldest entries of anyone go.
        while self.live > self.max_entries {
            let Some(stamp) = self.order.pop_front() else {
                break;
            };
            self.forget(stamp);
        }
        if self.order.len() > 2 * self.max_entries + 64 {
            self.order.retain(|s| holds_stamp(&self.clients, s));
        }
    }

    /// Drops entries older than the age limit (the order is by time).
    fn expire(&mut self, now: Instant) {
        // The common case, nothing to expire, reads the front alone.
        while let Some(&stamp) = self.order.front() {
            if now < stamp.expires {
                break;
            }
            self.order.pop_front();
            self.forget(stamp);
        }
    }

    /// Forgets the entry of `stamp`, just taken off the front of the
    /// order, unless its client's share evicted it already: then it is
    /// that client's oldest (entries leave a client oldest first).
    fn forget(&mut self, stamp: Stamp) {
        if !holds_stamp(&self.clients, &stamp) {
            return;
        }
        let Some(slot) = self.clients.get_mut(stamp.place) else {
            return;
        };
        let Some(client) = slot else {
            return;
        };
        if let Some(old) = client.pop_oldest() {
            self.live -= 1;
            keep_spare(&mut self.spare, old);
        }
        if client.entries.is_empty() {
            self.index.remove(&Peer(client.addr));
            *slot = None;
            self.free.push(stamp.place);
        }
    }
}

/// Whether `stamp`'s entry is still remembered: its client holds entries
/// from one at least as old. (Places are reused, but a client that takes
/// a place later has only entries newer than any stamp left from before.)
fn holds_stamp(clients: &[Option<Client>], stamp: &Stamp) -> bool {
    clients
        .get(stamp.place)
        .and_then(Option::as_ref)
        .and_then(|c| c.entries.front())
        .is_some_and(|oldest| oldest.id <= stamp.id)
}

/// Keeps `buffer` for a later reply, unless enough are kept already.
fn keep_spare(spare: &mut Vec<Vec<u8>>, buffer: Vec<u8>) {
    if spare.len() < SPARE_BUFFERS && buffer.capacity() <= SPARE_CAPACITY {
        spare.push(buffer);
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
        assert!(cache.index.len() <= 50);
        assert!(cache.clients.len() <= 51);
    }

    /// One entry of the model: port, seq, request, reply, when.
    type ModelEntry = (u16, u32, (u32, u32), Vec<u8>, Instant);

    /// A plain model of the rules: every entry in one list, oldest first.
    struct Model {
        entries: Vec<ModelEntry>,
        max_entries: usize,
        max_per_client: usize,
        max_age: Duration,
    }

    impl Model {
        fn expire(&mut self, now: Instant) {
            let age = self.max_age;
            self.entries.retain(|e| now.duration_since(e.4) < age);
        }

        fn get(
            &mut self,
            port: u16,
            seq: u32,
            request: (u32, u32),
            now: Instant,
        ) -> Option<Vec<u8>> {
            self.expire(now);
            let newest = self
                .entries
                .iter()
                .rev()
                .find(|e| e.0 == port && e.1 == seq)?;
            (newest.2 == request).then(|| newest.3.clone())
        }

        fn insert(&mut self, port: u16, seq: u32, request: (u32, u32), reply: &[u8], now: Instant) {
            self.expire(now);
            if self.entries.iter().filter(|e| e.0 == port).count() >= self.max_per_client
                && let Some(i) = self.entries.iter().position(|e| e.0 == port)
            {
                self.entries.remove(i);
            }
            self.entries.push((port, seq, request, reply.to_vec(), now));
            while self.entries.len() > self.max_entries {
                self.entries.remove(0);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// The cache answers as the model does through any run of inserts
        /// and lookups from a few clients, with time moving on.
        #[test]
        fn answers_as_the_model(
            max_entries in 1usize..12,
            max_per_client in 1usize..6,
            ops in proptest::collection::vec(
                (proptest::bool::ANY, 0u16..4, 0u32..12, 0u32..2, 0u64..3, proptest::collection::vec(0u8..255, 0..4)),
                1..200,
            ),
        ) {
            let t0 = Instant::now();
            let age = Duration::from_secs(5);
            let mut cache = ReplyCache::new(max_entries, max_per_client, age);
            let mut model = Model {
                entries: Vec::new(),
                max_entries: max_entries.max(1),
                max_per_client: max_per_client.clamp(1, max_entries.max(1)),
                max_age: age,
            };
            let mut now = t0;
            // Seqs 0 to 5 as drawn, or (7 to 11) each client's next one up,
            // so that runs of rising seqs (the sorted case) come too.
            let mut next = [10u32; 4];
            for (insert, port, seq, crc, wait, reply) in ops {
                now += Duration::from_secs(wait);
                let seq = match seq {
                    0..6 => seq,
                    6 => next[usize::from(port)],
                    _ => {
                        next[usize::from(port)] += 1;
                        next[usize::from(port)]
                    }
                };
                let request = (33, crc);
                if insert {
                    cache.insert(addr(port), seq, request, &reply, now);
                    model.insert(port, seq, request, &reply, now);
                } else {
                    let got = cache.get(addr(port), seq, request, now).map(<[u8]>::to_vec);
                    proptest::prop_assert_eq!(got, model.get(port, seq, request, now));
                }
                proptest::prop_assert_eq!(cache.len(), model.entries.len());
                proptest::prop_assert!(cache.order.len() <= 2 * max_entries + 64 + 1);
                proptest::prop_assert!(cache.index.len() <= cache.len());
            }
        }
    }

    #[test]
    fn a_client_at_its_share_reuses_its_buffers() {
        let t0 = Instant::now();
        let mut cache = ReplyCache::new(100, 4, Duration::from_secs(60));
        for seq in 0..4 {
            cache.insert(addr(1), seq, REQ, b"reply", t0);
        }
        let buffers: Vec<*const u8> = cache.clients[0]
            .as_ref()
            .map(|c| c.entries.iter().map(|e| e.reply.as_ptr()).collect())
            .unwrap_or_default();
        for seq in 4..40 {
            cache.insert(addr(1), seq, REQ, b"reply", t0);
        }
        let after: Vec<*const u8> = cache.clients[0]
            .as_ref()
            .map(|c| c.entries.iter().map(|e| e.reply.as_ptr()).collect())
            .unwrap_or_default();
        assert_eq!(after.len(), 4);
        assert!(after.iter().all(|p| buffers.contains(p)));
    }
}
