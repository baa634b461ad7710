//! A lossy UDP relay for tests: sits between one client and a server and
//! drops, duplicates, delays (reordering) and corrupts datagrams at set
//! rates, from a seeded generator so each run makes the same decisions for
//! the same sequence of datagrams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;

/// Fault rates, each a probability in [0, 1], per datagram and direction.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Dropped.
    pub drop: f64,
    /// Sent twice.
    pub duplicate: f64,
    /// Held back and sent after the next datagram (or after `delay`).
    pub reorder: f64,
    /// One bit flipped (never in the header's seq field, which the
    /// contract's CRC does not cover; see docs/PROTOCOL.md).
    pub corrupt: f64,
    /// How long a held datagram waits at most.
    pub delay: Duration,
    /// Seed of the generator.
    pub seed: u64,
}

/// What the relay did, per kind of fault.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams received from either side.
    pub seen: AtomicU64,
    /// Dropped.
    pub dropped: AtomicU64,
    /// Duplicated.
    pub duplicated: AtomicU64,
    /// Reordered.
    pub reordered: AtomicU64,
    /// Corrupted.
    pub corrupted: AtomicU64,
}

/// A running relay.
pub struct LossyRelay {
    /// Where clients send to.
    pub addr: SocketAddr,
    /// Counters.
    pub stats: Arc<RelayStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// One direction's held-back datagram.
struct Held(Option<(Vec<u8>, tokio::time::Instant)>);

impl LossyRelay {
    /// Starts a relay in front of `server`, applying `faults` both ways.
    pub async fn start(server: SocketAddr, faults: Faults) -> LossyRelay {
        let front = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind relay front");
        let back = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind relay back");
        back.connect(server).await.expect("connect relay to server");
        let addr = front.local_addr().expect("relay address");
        let stats = Arc::new(RelayStats::default());
        let task = tokio::spawn(run(front, back, faults, stats.clone()));
        LossyRelay { addr, stats, task }
    }
}

async fn run(front: UdpSocket, back: UdpSocket, faults: Faults, stats: Arc<RelayStats>) {
    let mut rng = Rng(faults.seed);
    let mut client: Option<SocketAddr> = None;
    let (mut up_buf, mut down_buf) = (vec![0u8; 70_000], vec![0u8; 70_000]);
    let (mut held_up, mut held_down) = (Held(None), Held(None));
    loop {
        let next_release = [&held_up, &held_down]
            .iter()
            .filter_map(|h| h.0.as_ref().map(|(_, at)| *at))
            .min();
        let sleep_until =
            next_release.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = front.recv_from(&mut up_buf) => {
                let Ok((n, from)) = r else { continue };
                client = Some(from);
                let datagram = up_buf[..n].to_vec();
                forward(&mut rng, &faults, &stats, datagram, &mut held_up, |d| {
                    let _ = back.try_send(d);
                });
            }
            r = back.recv(&mut down_buf) => {
                let Ok(n) = r else { continue };
                let Some(to) = client else { continue };
                let datagram = down_buf[..n].to_vec();
                forward(&mut rng, &faults, &stats, datagram, &mut held_down, |d| {
                    let _ = front.try_send_to(d, to);
                });
            }
            _ = tokio::time::sleep_until(sleep_until) => {
                let now = tokio::time::Instant::now();
                if let Some((d, at)) = held_up.0.take() {
                    if at <= now { let _ = back.try_send(&d); } else { held_up.0 = Some((d, at)); }
                }
                if let Some((d, at)) = held_down.0.take() {
                    if at <= now {
                        if let Some(to) = client { let _ = front.try_send_to(&d, to); }
                    } else {
                        held_down.0 = Some((d, at));
                    }
                }
            }
        }
    }
}

fn forward(
    rng: &mut Rng,
    faults: &Faults,
    stats: &RelayStats,
    mut datagram: Vec<u8>,
    held: &mut Held,
    send: impl Fn(&[u8]),
) {
    stats.seen.fetch_add(1, Ordering::Relaxed);
    if rng.chance(faults.drop) {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if rng.chance(faults.corrupt) && !datagram.is_empty() {
        // Any byte but the seq field (offsets 4..8), and any bit but the
        // AUTH flag (0x08 of byte 3): the CRC does not cover the header
        // (the contract's choice), so a seq or a flag changed in transit
        // is not detectable; a request that gains the AUTH flag is truly
        // answered `unauthorized`.
        let positions = datagram.len() - 4;
        let mut at = (rng.next() % positions as u64) as usize;
        if at >= 4 {
            at += 4;
        }
        let mut bit = rng.next() % 8;
        if at == 3 && bit == 3 {
            bit = 4;
        }
        datagram[at] ^= 1 << bit;
        stats.corrupted.fetch_add(1, Ordering::Relaxed);
    }
    let copies = if rng.chance(faults.duplicate) {
        stats.duplicated.fetch_add(1, Ordering::Relaxed);
        2
    } else {
        1
    };
    if held.0.is_none() && rng.chance(faults.reorder) {
        stats.reordered.fetch_add(1, Ordering::Relaxed);
        held.0 = Some((datagram, tokio::time::Instant::now() + faults.delay));
        return;
    }
    for _ in 0..copies {
        send(&datagram);
    }
    // Whatever was held back goes out after this one: reordered.
    if let Some((d, _)) = held.0.take() {
        send(&d);
    }
}
