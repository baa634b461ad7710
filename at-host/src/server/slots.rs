//! The TCP connection table: who holds the server's connection slots, by
//! peer address, so that no one address locks the others out.
//!
//! Two limits apply when a connection arrives: at most `max_per_address`
//! from one address, and at most `max_connections` in all. Over the first,
//! the newcomer is refused (`busy`). At the second, the longest-idle
//! connection of the address holding the most slots is closed to make room,
//! provided that address holds more than the newcomer's does; otherwise the
//! newcomer is refused. A connection counts as idle only while it waits
//! for bytes from its peer (never while a call of its own runs).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;

/// `idle_since` of a connection that is not waiting for its peer.
const BUSY: u64 = u64::MAX;

/// The connections being served, by peer address.
pub(super) struct Slots {
    inner: Mutex<Table>,
    /// The zero of every `idle_since`.
    epoch: Instant,
    max_connections: usize,
    max_per_address: usize,
}

#[derive(Default)]
struct Table {
    by_address: HashMap<IpAddr, Vec<Arc<Slot>>>,
    total: usize,
    next_id: u64,
}

/// One served connection's entry in the table.
pub(super) struct Slot {
    id: u64,
    address: IpAddr,
    /// Nanoseconds since [`Slots::epoch`] when the connection started
    /// waiting for its peer, or [`BUSY`].
    idle_since: AtomicU64,
    /// Notified once when the table closes this connection for another.
    evict: Notify,
}

/// Why a connection was refused a slot.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Its address already holds `max_per_address` connections.
    PerAddress(usize),
    /// Every slot is taken and none could be freed for it.
    Full(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PerAddress(n) => write!(f, "over {n} connections from one address"),
            Refusal::Full(n) => write!(f, "over {n} connections"),
        }
    }
}

/// A slot held; gives it back when dropped.
pub(super) struct Ticket {
    slots: Arc<Slots>,
    slot: Arc<Slot>,
}

/// The address a limit counts: an IPv4 peer of a dual-stack socket
/// (`::ffff:a.b.c.d`) is the IPv4 address it is.
fn canonical(address: IpAddr) -> IpAddr {
    address.to_canonical()
}

impl Slots {
    pub(super) fn new(max_connections: usize, max_per_address: usize) -> Arc<Slots> {
        Arc::new(Slots {
            inner: Mutex::new(Table::default()),
            epoch: Instant::now(),
            max_connections: max_connections.max(1),
            max_per_address: max_per_address.max(1),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table is consistent after every statement that can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(BUSY - 1)
    }

    /// A slot for a connection from `address`, closing another address's
    /// longest-idle connection if every slot is taken and that is fair.
    pub(super) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, Refusal> {
        let address = canonical(address);
        let mut table = self.table();
        let own = table.by_address.get(&address).map_or(0, Vec::len);
        if own >= self.max_per_address {
            return Err(Refusal::PerAddress(self.max_per_address));
        }
        if table.total >= self.max_connections {
            let victim = table
                .victim(own)
                .ok_or(Refusal::Full(self.max_connections))?;
            table.remove(victim.address, victim.id);
            log::info!(
                "closing the longest-idle connection from {} to serve {address}",
                victim.address
            );
            victim.evict.notify_one();
        }
        let id = table.next_id;
        table.next_id += 1;
        let slot = Arc::new(Slot {
            id,
            address,
            idle_since: AtomicU64::new(BUSY),
            evict: Notify::new(),
        });
        table
            .by_address
            .entry(address)
            .or_default()
            .push(Arc::clone(&slot));
        table.total += 1;
        Ok(Ticket {
            slots: Arc::clone(self),
            slot,
        })
    }

    /// How many connections are held (for tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.table().total
    }
}

impl Table {
    /// The connection to close for a newcomer whose address holds `own`:
    /// the longest-idle one of the address holding the most, if that
    /// address holds more than `own` and one of its connections is idle.
    fn victim(&self, own: usize) -> Option<Arc<Slot>> {
        let (_, held) = self
            .by_address
            .iter()
            .max_by_key(|(_, held)| held.len())
            .filter(|(_, held)| held.len() > own)?;
        held.iter()
            .filter(|s| s.idle_since.load(Ordering::Relaxed) != BUSY)
            .min_by_key(|s| s.idle_since.load(Ordering::Relaxed))
            .cloned()
    }

    fn remove(&mut self, address: IpAddr, id: u64) {
        let Some(held) = self.by_address.get_mut(&address) else {
            return;
        };
        let before = held.len();
        held.retain(|s| s.id != id);
        self.total -= before - held.len();
        if held.is_empty() {
            self.by_address.remove(&address);
        }
    }
}

impl Ticket {
    /// Marks the connection as waiting for its peer since `now`.
    pub(super) fn idle(&self, now: Instant) {
        let since = self.slots.since_epoch(now);
        self.slot.idle_since.store(since, Ordering::Relaxed);
    }

    /// Marks the connection as working (not to be closed for another).
    pub(super) fn busy(&self) {
        self.slot.idle_since.store(BUSY, Ordering::Relaxed);
    }

    /// Completes when the table has closed this connection for another.
    pub(super) async fn evicted(&self) {
        self.slot.evict.notified().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.slots.table().remove(self.slot.address, self.slot.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_is_held_to_its_limit_and_a_dropped_ticket_frees_a_slot() {
        let slots = Slots::new(10, 2);
        let a = slots.admit(ip("10.0.0.1")).unwrap();
        let _b = slots.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            slots.admit(ip("10.0.0.1")).err(),
            Some(Refusal::PerAddress(2))
        );
        // The same address seen through a dual-stack socket counts too.
        assert_eq!(
            slots.admit(ip("::ffff:10.0.0.1")).err(),
            Some(Refusal::PerAddress(2))
        );
        let _c = slots.admit(ip("10.0.0.2")).unwrap();
        drop(a);
        assert_eq!(slots.held(), 2);
        let _d = slots.admit(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn a_full_table_closes_the_longest_idle_of_the_biggest_holder() {
        let slots = Slots::new(4, 10);
        let held: Vec<Ticket> = (0..3)
            .map(|_| slots.admit(ip("10.0.0.1")).unwrap())
            .collect();
        let other = slots.admit(ip("10.0.0.2")).unwrap();
        other.idle(Instant::now());
        // held[1] waits longest, held[0] is working, held[2] went idle last.
        held[1].idle(Instant::now());
        held[2].idle(Instant::now());
        let newcomer = slots.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(slots.held(), 4);
        let table = slots.table();
        let ids: Vec<u64> = table.by_address[&ip("10.0.0.1")]
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [held[0].slot.id, held[2].slot.id]);
        drop(table);
        // The evicted connection is told, even though it was not waiting yet.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), held[1].evicted())
                .await
                .unwrap()
        });
        // Its ticket, dropped later, frees nothing twice.
        drop(held);
        assert_eq!(slots.held(), 2);
        drop((other, newcomer));
        assert_eq!(slots.held(), 0);
    }

    #[test]
    fn a_full_table_refuses_when_no_other_address_holds_more() {
        let slots = Slots::new(2, 10);
        let a = slots.admit(ip("10.0.0.1")).unwrap();
        let b = slots.admit(ip("10.0.0.2")).unwrap();
        a.idle(Instant::now());
        b.idle(Instant::now());
        // 10.0.0.2 holds 1, as much as the biggest holder: nothing to gain.
        assert_eq!(slots.admit(ip("10.0.0.2")).err(), Some(Refusal::Full(2)));
        // A working connection is never closed for another.
        let slots = Slots::new(2, 10);
        let _a = slots.admit(ip("10.0.0.1")).unwrap();
        let _b = slots.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.admit(ip("10.0.0.2")).err(), Some(Refusal::Full(2)));
    }
}
