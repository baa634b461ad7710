//! UDP: one frame per datagram, retransmission by the client, at-most-once
//! execution on the server.
//!
//! # Timing (client)
//! A request unanswered after the retransmission timeout is sent again with
//! the same seq. The first timeout is `initial_timeout` (default 250 ms)
//! times a random factor in [1, 1.5); each retransmission doubles it, as
//! CoAP's (RFC 7252) ACK_TIMEOUT / ACK_RANDOM_FACTOR / MAX_RETRANSMIT scheme
//! does, with defaults scaled for a LAN: CoAP's 2 s suits constrained radio
//! links, while a LAN round trip is well under a millisecond, so 250 ms
//! leaves ample room for a slow function yet recovers from a loss quickly.
//! At most `retries` retransmissions (default 4) are sent, and the whole call
//! never outlasts `timeout` (default 5 s): with the defaults the attempts go
//! out at about 0, 0.3, 0.9, 2.0 and 4.3 s.
//!
//! # At-most-once (server)
//! The server remembers each reply by (client address, seq) and answers a
//! retransmission with the remembered reply, without calling the function
//! again. The cache is bounded by age (60 s), by total entries (4096) and per
//! client (256), see [`crate::ServerConfig`]; a retransmission that arrives
//! after its entry is gone runs the function again, so clients should keep
//! their whole retry window (5 s by default) well under the age limit.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use at_core::{Frame, FrameError, HEADER_LEN, Kind};
use log::debug;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::Value;
use crate::cache::ReplyCache;
use crate::client::reply_to_result;
use crate::error::{Error, ProtocolError};
use crate::log_limit::protocol_warn;
use crate::server::{Logged, Shared};

/// The largest datagram payload UDP can carry (over IPv6; IPv4's is 65507).
const MAX_DATAGRAM: usize = 65_527;

pub(crate) async fn serve(
    socket: UdpSocket,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let config = &shared.config;
    let max_body = config.max_frame;
    // Room for any datagram, so a size check is never fooled by truncation.
    let mut buf = vec![0u8; MAX_DATAGRAM.max(HEADER_LEN + max_body as usize) + 1];
    let mut out = vec![0u8; (HEADER_LEN + max_body as usize).max(at_core::MIN_REPLY_BUFFER)];
    let mut error_replies = Ration::new(ERROR_REPLIES_PER_SECOND);
    let mut cache = ReplyCache::new(
        config.udp_cache_entries,
        config.udp_cache_per_client,
        config.udp_cache_age,
    );
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (len, peer) = match received {
            Ok(pair) => pair,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some
                // systems; they concern one peer, not the socket.
                debug!("udp receive error: {e}");
                continue;
            }
        };
        let now = Instant::now();
        let reply_len = match Frame::parse(&buf[..len], max_body) {
            Err(e @ FrameError::SizeMismatch { .. }) => {
                protocol_warn!("udp from {peer}: dropped: {e}");
                None
            }
            Err(e) => {
                protocol_warn!("udp from {peer}: bad frame: {e}");
                // Error replies to bad datagrams are rationed: a flood of
                // garbage (perhaps from spoofed addresses) must neither
                // crowd out real calls nor be reflected at full rate.
                if error_replies.take(now) {
                    at_core::respond_to_error(&e, &mut out)
                } else {
                    None
                }
            }
            Ok(frame) if frame.kind != Kind::Request => {
                protocol_warn!(
                    "udp from {peer}: ignoring a {:?} frame: servers answer requests only",
                    frame.kind
                );
                None
            }
            Ok(frame) => {
                let seq = frame.seq();
                let request = (frame.header.length, frame.header.crc);
                if let Some(reply) = cache.get(peer, seq, request, now) {
                    debug!("udp from {peer}: seq {seq} again: resending the remembered reply");
                    send(&socket, reply, peer).await;
                    continue;
                }
                let calls = Logged {
                    registry: &shared.registry,
                    seq,
                };
                let n = at_core::respond(&calls, &frame, &mut out);
                if let Some(n) = n {
                    cache.insert(peer, seq, request, &out[..n], now);
                }
                n
            }
        };
        if let Some(n) = reply_len {
            send(&socket, &out[..n], peer).await;
        }
    }
    drop(alive);
}

/// Error replies to bad datagrams sent per second at most (the contract
/// answers them "if any"); beyond this they are dropped.
pub const ERROR_REPLIES_PER_SECOND: u32 = 1000;

/// A budget of `per_second` events, refilled each second.
struct Ration {
    per_second: u32,
    left: u32,
    since: Instant,
}

impl Ration {
    fn new(per_second: u32) -> Ration {
        Ration {
            per_second,
            left: per_second,
            since: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        if now.duration_since(self.since) >= Duration::from_secs(1) {
            self.since = now;
            self.left = self.per_second;
        }
        if self.left > 0 {
            self.left -= 1;
            true
        } else {
            false
        }
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, peer).await {
        debug!("udp send to {peer} failed: {e}");
    }
}

/// Timing of a UDP client; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct UdpConfig {
    /// Bound on the whole call, retransmissions included. Default 5 s.
    pub timeout: Duration,
    /// The first retransmission timeout (before jitter). Default 250 ms.
    pub initial_timeout: Duration,
    /// Most retransmissions per call. Default 4.
    pub retries: u32,
    /// Cap on one retransmission timeout, however often it has doubled.
    /// Default 4 s (more than the default timeout allows, so no cap applies
    /// with the other defaults).
    pub max_backoff: Duration,
    /// Largest reply body accepted. Default 65536.
    pub max_frame: u32,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            timeout: Duration::from_secs(5),
            initial_timeout: Duration::from_millis(250),
            retries: 4,
            max_backoff: Duration::from_secs(4),
            max_frame: at_core::DEFAULT_MAX_BODY,
        }
    }
}

/// A UDP client: calls over a socket connected to one server, retransmitted
/// until answered.
///
/// ```no_run
/// # async fn example() -> Result<(), at_host::Error> {
/// use at_host::{UdpClient, UdpConfig};
/// let mut client = UdpClient::connect("127.0.0.1:16724".parse().unwrap(), UdpConfig::default()).await?;
/// let sum = client.call("add", &[at_core::Value::Int(10), at_core::Value::Int(20)]).await?;
/// assert_eq!(sum.to_string(), "30");
/// # Ok(()) }
/// ```
pub struct UdpClient {
    socket: UdpSocket,
    config: UdpConfig,
    next_seq: u32,
    rng: u64,
    recv_buf: Vec<u8>,
    stats: UdpStats,
}

/// Counters of a UDP client, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Requests sent the first time.
    pub sent: u64,
    /// Retransmissions.
    pub retransmitted: u64,
    /// Datagrams ignored: other seqs, late duplicates, corrupt frames.
    pub ignored: u64,
}

struct InFlight {
    frame: Vec<u8>,
    retries_left: u32,
    timeout: Duration,
    resend_at: Instant,
    result: Option<Result<Value, Error>>,
}

impl UdpClient {
    /// A client bound to an ephemeral local port, sending to `server`.
    pub async fn connect(server: SocketAddr, config: UdpConfig) -> Result<UdpClient, Error> {
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        let rng = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1;
        Ok(UdpClient {
            socket,
            recv_buf: vec![0u8; MAX_DATAGRAM + 1],
            config,
            next_seq: 1,
            rng,
            stats: UdpStats::default(),
        })
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Counters so far.
    pub fn stats(&self) -> UdpStats {
        self.stats
    }

    /// Calls `func(args)` and waits for its reply, retransmitting as needed.
    pub async fn call(&mut self, func: &str, args: &[at_core::Value<'_>]) -> Result<Value, Error> {
        let mut results = self.call_many(&[(func, args)]).await?;
        results
            .pop()
            .unwrap_or(Err(Error::Protocol(ProtocolError::Closed)))
    }

    /// Sends several calls at once and waits for all their replies, each
    /// retransmitted on its own schedule; results come in the order of
    /// `calls`. The whole batch is bounded by the config's `timeout`; a call
    /// still unanswered then is [`Error::Timeout`].
    pub async fn call_many(
        &mut self,
        calls: &[(&str, &[at_core::Value<'_>])],
    ) -> Result<Vec<Result<Value, Error>>, Error> {
        let start = Instant::now();
        let deadline = start + self.config.timeout;
        let mut order = Vec::with_capacity(calls.len());
        let mut flights: HashMap<u32, InFlight> = HashMap::with_capacity(calls.len());
        for (func, args) in calls {
            let seq = self.take_seq();
            let frame = encode_request(seq, func, args, self.config.max_frame)?;
            let timeout = self.jittered(self.config.initial_timeout);
            self.socket.send(&frame).await?;
            self.stats.sent += 1;
            flights.insert(
                seq,
                InFlight {
                    frame,
                    retries_left: self.config.retries,
                    timeout,
                    resend_at: Instant::now() + timeout,
                    result: None,
                },
            );
            order.push(seq);
        }
        let mut open = flights.len();
        while open > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Retransmit what is due.
            for (seq, flight) in flights.iter_mut().filter(|(_, f)| f.result.is_none()) {
                if flight.resend_at <= now && flight.retries_left > 0 {
                    debug!(
                        "udp seq {seq}: no reply after {:?}, retransmitting",
                        flight.timeout
                    );
                    self.socket.send(&flight.frame).await?;
                    self.stats.retransmitted += 1;
                    flight.retries_left -= 1;
                    flight.timeout = (flight.timeout * 2).min(self.config.max_backoff);
                    flight.resend_at = now + flight.timeout;
                }
            }
            let wake = flights
                .values()
                .filter(|f| f.result.is_none() && f.retries_left > 0)
                .map(|f| f.resend_at)
                .min()
                .unwrap_or(deadline)
                .min(deadline);
            let received =
                match tokio::time::timeout_at(wake.into(), self.socket.recv(&mut self.recv_buf))
                    .await
                {
                    Err(_) => continue, // a retransmission or the deadline is due
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        // ICMP port unreachable for an earlier datagram: the
                        // server may be restarting; retransmission decides.
                        debug!("udp: {e}");
                        continue;
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Ok(Ok(n)) => n,
                };
            let frame = match Frame::parse(&self.recv_buf[..received], self.config.max_frame) {
                Ok(frame) if frame.kind.is_reply() => frame,
                Ok(_) => {
                    self.ignore("a request frame");
                    continue;
                }
                Err(e) => {
                    self.ignore(&format!("bad frame: {e}"));
                    continue;
                }
            };
            let Some(flight) = flights.get_mut(&frame.seq()).filter(|f| f.result.is_none()) else {
                self.ignore(&format!("reply with seq {} not awaited", frame.seq()));
                continue;
            };
            let result = reply_to_result(&frame);
            // The server saw our request corrupted in transit: as good as
            // lost, so retransmit now rather than report it.
            if let Err(e @ Error::Remote { .. }) = &result
                && matches!(
                    e.code(),
                    Some(at_core::ErrorCode::ChecksumMismatch | at_core::ErrorCode::BadFrame)
                )
            {
                debug!(
                    "udp seq {}: the server saw it corrupted ({e}); retransmitting",
                    frame.seq()
                );
                flight.resend_at = Instant::now();
                self.stats.ignored += 1;
                continue;
            }
            flight.result = Some(result);
            open -= 1;
        }
        let waited = start.elapsed();
        Ok(order
            .into_iter()
            .map(|seq| {
                flights
                    .remove(&seq)
                    .and_then(|f| f.result)
                    .unwrap_or(Err(Error::Timeout(waited)))
            })
            .collect())
    }

    fn ignore(&mut self, what: &str) {
        debug!("udp: ignoring {what}");
        self.stats.ignored += 1;
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        seq
    }

    /// `base` times a random factor in [1, 1.5).
    fn jittered(&mut self, base: Duration) -> Duration {
        // xorshift64: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 + 0.5 * unit)
    }
}

/// A request frame for `func(args)` with `seq`, at most 16 + `max_frame`
/// bytes.
pub(crate) fn encode_request(
    seq: u32,
    func: &str,
    args: &[at_core::Value<'_>],
    max_frame: u32,
) -> Result<Vec<u8>, Error> {
    let limit = HEADER_LEN + max_frame as usize;
    // Most requests are small: try a small buffer before the largest.
    let mut frame = vec![0u8; limit.min(1024)];
    loop {
        match encode_request_into(seq, func, args, &mut frame) {
            Ok(n) => {
                frame.truncate(n);
                return Ok(frame);
            }
            Err(at_core::EncodeError::BufferTooSmall) if frame.len() < limit => {
                frame = vec![0u8; limit];
            }
            Err(e) => return Err(ProtocolError::Encode(e).into()),
        }
    }
}

/// Writes a request frame into `out`; returns its length.
pub(crate) fn encode_request_into(
    seq: u32,
    func: &str,
    args: &[at_core::Value<'_>],
    out: &mut [u8],
) -> Result<usize, at_core::EncodeError> {
    let mut failure = at_core::EncodeError::BufferTooSmall;
    at_core::encode_frame_with(Kind::Request, seq, out, |body| {
        at_core::Request::write(func, args, body).map_err(|e| {
            failure = e;
            at_core::BufferTooSmall
        })
    })
    .map_err(|_| failure)
}
