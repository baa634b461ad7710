//! The UDP server: one bound socket, polled without blocking over any
//! [`embedded_nal::UdpFullStack`], executing each request at most once.
//!
//! - One datagram is one frame, checked by [`at_core::Frame::parse`]; a
//!   datagram whose size is not 16 + `length` is dropped (and logged).
//! - A datagram that fills the whole `RX` buffer may have been cut short by
//!   the stack, so it is never taken as a frame: it is answered
//!   `frame_too_large` when its header announces more than the limit
//!   (`RX - 17` bytes of body), `bad_frame` for a wrong magic, and dropped
//!   otherwise.
//! - **At most once**: the last `CACHE` replies are remembered by (peer
//!   address, seq). A retransmitted request gets the remembered reply again
//!   and the function does not run again. Replies are remembered oldest out
//!   first, with no clock: a retransmission that arrives after `CACHE` newer
//!   calls (from anyone) runs again, so size `CACHE` for the number of calls
//!   in flight during a client's whole retry window.
//! - Replies to frames that could not be read (bad magic, CRC) are not
//!   remembered: nothing was executed.
//! - A reply the stack cannot take now (`WouldBlock`) is dropped: the client
//!   retransmits and gets it from the cache.
//!
//! # Memory
//! `RX + 128 + CACHE * (TX + 40)` bytes or so, inside the [`UdpServer`]
//! value.

use at_core::auth::{Open, Origin, Responder, Transport};
use at_core::subscriptions::Topics;
use at_core::{
    Context, Frame, FrameError, Functions, HEADER_LEN, Header, HeaderError, Kind, MAGIC,
    MIN_REPLY_BUFFER,
};
use core::net::SocketAddr;
use embedded_nal::{UdpClientStack, UdpFullStack, nb};

use crate::cache::ReplyCache;
use crate::logging::{log_debug, log_info, log_warn};

/// The most datagrams one poll reads.
pub const DATAGRAMS_PER_POLL: usize = 8;

/// How many plain notifications the server remembers, so that a repeated
/// one runs at most once (contract 10.2, 10.8 rule 7).
pub const NOTIFY_MEMORY: usize = 8;

/// The most events one poll sends.
pub const EVENTS_PER_POLL: usize = 8;

/// A UDP server with an `RX`-byte datagram buffer (bodies up to `RX - 17`
/// bytes: one byte is kept to notice truncated datagrams), and a cache of
/// the last `CACHE` replies of up to `TX` bytes each (`TX` at least
/// [`MIN_REPLY_BUFFER`]).
pub struct UdpServer<S: UdpFullStack, const RX: usize, const TX: usize, const CACHE: usize> {
    socket: S::UdpSocket,
    rx: [u8; RX],
    /// Error replies to unreadable frames (never cached).
    err: [u8; MIN_REPLY_BUFFER],
    cache: ReplyCache<TX, CACHE>,
    name: &'static str,
    /// Plain notifications run lately, by (address, seq, length, CRC),
    /// oldest replaced first.
    notified: [Option<(SocketAddr, u32, u32, u32)>; NOTIFY_MEMORY],
    next_notified: usize,
    /// The seq of the last plain event sent (one counter for every address).
    events_sent: u32,
}

impl<S: UdpFullStack, const RX: usize, const TX: usize, const CACHE: usize>
    UdpServer<S, RX, TX, CACHE>
{
    const CHECK: () = {
        assert!(
            RX > HEADER_LEN + 1,
            "RX must hold a header, a body and a spare byte"
        );
        assert!(
            TX >= MIN_REPLY_BUFFER,
            "TX must be at least MIN_REPLY_BUFFER"
        );
        assert!(CACHE > 0, "CACHE must be at least 1");
    };

    /// Binds a socket to `port` (all addresses) and returns the server.
    pub fn bind(stack: &mut S, port: u16) -> Result<Self, S::Error> {
        let mut socket = UdpClientStack::socket(stack)?;
        stack.bind(&mut socket, port)?;
        log_info!("udp: listening (port {} asked for)", port);
        Ok(Self::from_socket(socket))
    }

    /// A server over a socket the caller has already bound.
    pub fn from_socket(socket: S::UdpSocket) -> Self {
        let () = Self::CHECK;
        UdpServer {
            socket,
            rx: [0; RX],
            err: [0; MIN_REPLY_BUFFER],
            cache: ReplyCache::new(),
            name: crate::DEFAULT_NAME,
            notified: [None; NOTIFY_MEMORY],
            next_notified: 0,
            events_sent: 0,
        }
    }

    /// The same server, numbering its plain events from `start + 1`. A
    /// board whose port outlives a restart starts at a random value (its
    /// TRNG's, or a seed), so that no subscriber takes a new event for a
    /// repeat of an old one (contract 10.8 rule 3).
    pub fn with_event_seq(mut self, start: u32) -> Self {
        self.events_sent = start;
        self
    }

    /// The same server, reporting `name` in `rpc.info`.
    pub fn with_name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The bound socket (to ask the stack for its local address, say).
    pub fn socket(&self) -> &S::UdpSocket {
        &self.socket
    }

    /// The largest body a request may have: `RX - 17`.
    pub const fn max_body(&self) -> u32 {
        let room = RX - HEADER_LEN - 1;
        if room > u32::MAX as usize {
            u32::MAX
        } else {
            room as u32
        }
    }

    /// Reads and answers the datagrams waiting, at most
    /// [`DATAGRAMS_PER_POLL`], without blocking. Returns how many were read
    /// (0: idle). Errors are logged, never returned: one bad datagram or
    /// peer does not stop the server.
    pub fn poll<F: Functions + ?Sized>(&mut self, stack: &mut S, functions: &F) -> usize {
        self.poll_with(stack, functions, &mut Open, 0)
    }

    /// [`poll`](Self::poll), answering through `responder` (a
    /// [`Guard`](at_core::auth::Guard) for authentication, shared with the
    /// board's other servers, or [`Open`]); `now` is the board's clock in
    /// milliseconds (sessions age by it). Authenticated replies are
    /// remembered by the guard, by (session, seq); this server's own cache
    /// holds plain ones only.
    pub fn poll_with<F, R>(
        &mut self,
        stack: &mut S,
        functions: &F,
        responder: &mut R,
        now: u64,
    ) -> usize
    where
        F: Functions + ?Sized,
        R: Responder,
    {
        self.poll_in(stack, functions, responder, None, now)
    }

    /// [`poll_with`](Self::poll_with) for a server with topics (contract
    /// 10.3): answers `rpc.subscribe`, `rpc.unsubscribe` and `rpc.topics`
    /// from `topics` (share one table between the board's servers), then
    /// sends up to [`EVENTS_PER_POLL`] events due to UDP subscribers. A
    /// plain subscription carries [`at_core::subscriptions::UDP_CREDIT`]
    /// events per subscribe, and what goes to an address is bounded by its
    /// subscribe datagram's size (see [`at_core::subscriptions`]).
    pub fn poll_topics<F, R>(
        &mut self,
        stack: &mut S,
        functions: &F,
        responder: &mut R,
        topics: &mut dyn Topics,
        now: u64,
    ) -> usize
    where
        F: Functions + ?Sized,
        R: Responder,
    {
        self.poll_in(stack, functions, responder, Some(topics), now)
    }

    fn poll_in<F, R>(
        &mut self,
        stack: &mut S,
        functions: &F,
        responder: &mut R,
        mut topics: Option<&mut dyn Topics>,
        now: u64,
    ) -> usize
    where
        F: Functions + ?Sized,
        R: Responder,
    {
        let max_body = self.max_body();
        let info = crate::server_info(self.name, max_body, topics.is_some());
        let mut work = 0;
        for _ in 0..DATAGRAMS_PER_POLL {
            let (n, peer) = match stack.receive(&mut self.socket, &mut self.rx) {
                Ok(received) => received,
                Err(nb::Error::WouldBlock) => break,
                Err(nb::Error::Other(_)) => {
                    // ICMP errors from earlier sends surface here on some
                    // stacks; they concern one peer, not the socket.
                    log_debug!("udp: receive failed");
                    work += 1;
                    continue;
                }
            };
            work += 1;
            let bytes = &self.rx[..n];
            let parsed = if n == RX {
                Err(truncated(bytes, max_body))
            } else {
                Frame::parse(bytes, max_body)
            };
            let frame = match parsed {
                Err(e @ FrameError::SizeMismatch { .. }) => {
                    log_warn!(
                        "udp: dropped a datagram of {} bytes from port {}: size mismatch",
                        n,
                        peer.port()
                    );
                    let _ = e;
                    continue;
                }
                Err(e) if is_notify(bytes) => {
                    // A notification is never answered, whatever happens.
                    log_debug!("udp: dropped a bad notification: {}", e.code().as_str());
                    continue;
                }
                Err(e) => {
                    log_warn!(
                        "udp: bad frame from port {} (seq {}): {}",
                        peer.port(),
                        e.seq(),
                        e.code().as_str()
                    );
                    if let Some(len) = at_core::respond_to_error(&e, &mut self.err) {
                        send(stack, &mut self.socket, peer, &self.err[..len]);
                    }
                    continue;
                }
                Ok(frame) if frame.kind.is_reply() => {
                    log_debug!("udp: ignoring a reply frame (seq {})", frame.seq());
                    continue;
                }
                Ok(frame) => frame,
            };
            let seq = frame.seq();
            let plain = frame.header.flags & at_core::FLAG_AUTH == 0;
            let mut context = Context {
                origin: Origin::from(Transport::Datagram, peer),
                now,
                waited_ms: 0,
                frame_len: n,
                topics: crate::topics(&mut topics),
            };
            if frame.kind == Kind::Notify {
                let key = (peer, seq, frame.header.length, frame.header.crc);
                if plain && self.notified.contains(&Some(key)) {
                    log_debug!("udp: notification seq {} again: not run again", seq);
                    continue;
                }
                if plain {
                    self.notified[self.next_notified] = Some(key);
                    self.next_notified = (self.next_notified + 1) % NOTIFY_MEMORY;
                }
                // Its discarded reply is written where error replies go.
                let _ = responder.respond(functions, &info, &frame, &mut context, &mut self.err);
                continue;
            }
            if plain && let Some(reply) = self.cache.get(&peer, seq) {
                log_debug!("udp: seq {} again: sending the remembered reply", seq);
                send(stack, &mut self.socket, peer, reply);
                continue;
            }
            let slot = self.cache.slot();
            if let Some(len) = responder.respond(functions, &info, &frame, &mut context, slot) {
                if plain {
                    let reply = self.cache.commit(peer, seq, len);
                    send(stack, &mut self.socket, peer, reply);
                } else {
                    let reply = &slot[..len];
                    send(stack, &mut self.socket, peer, reply);
                }
            }
        }
        if let Some(t) = topics {
            work += self.send_events(stack, responder, t, now);
        }
        work
    }

    /// Sends the events due to UDP subscribers (the datagram buffer is
    /// free by now and holds each in turn).
    fn send_events<R: Responder>(
        &mut self,
        stack: &mut S,
        responder: &mut R,
        topics: &mut dyn Topics,
        now: u64,
    ) -> usize {
        let mut sent = 0;
        let datagram = |o: &Origin| o.transport == Transport::Datagram;
        for _ in 0..EVENTS_PER_POLL {
            let Some(due) = topics.take_due(now, &datagram, &mut self.rx) else {
                break;
            };
            let len =
                crate::finish_event(&due, &mut self.events_sent, responder, now, &mut self.rx);
            if let (Some(len), Some(peer)) = (len, due.to.peer) {
                send(stack, &mut self.socket, peer, &self.rx[..len]);
                sent += 1;
            }
        }
        sent
    }

    /// Closes the socket.
    pub fn close(self, stack: &mut S) {
        let _ = stack.close(self.socket);
    }
}

/// Whether a datagram's header (right magic or not) has the NOTIFY bit: a
/// bad notification is dropped, never answered (contract 10.2).
fn is_notify(bytes: &[u8]) -> bool {
    bytes
        .get(2..4)
        .is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & at_core::FLAG_NOTIFY != 0)
}

/// What to make of a datagram that filled the whole buffer (and so may have
/// been longer): never a frame.
fn truncated(bytes: &[u8], max_body: u32) -> FrameError {
    let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
        return FrameError::SizeMismatch {
            expected: HEADER_LEN,
            actual: bytes.len(),
        };
    };
    let header = Header::from_bytes(head);
    if header.magic != MAGIC {
        return FrameError::Header {
            seq: 0,
            error: HeaderError::BadMagic {
                found: header.magic,
            },
        };
    }
    if header.length > max_body {
        return FrameError::Header {
            seq: header.seq,
            error: HeaderError::TooLarge {
                length: header.length,
                limit: max_body,
            },
        };
    }
    FrameError::SizeMismatch {
        expected: HEADER_LEN + header.length as usize,
        actual: bytes.len(),
    }
}

fn send<S: UdpFullStack>(stack: &mut S, socket: &mut S::UdpSocket, peer: SocketAddr, bytes: &[u8]) {
    match stack.send_to(socket, peer, bytes) {
        Ok(()) => {}
        Err(nb::Error::WouldBlock) => {
            log_debug!("udp: reply to port {} dropped: stack busy", peer.port());
        }
        Err(nb::Error::Other(_)) => {
            log_debug!("udp: reply to port {} failed", peer.port());
        }
    }
}
