//! The TCP server: a listening socket and a fixed number of client slots,
//! polled without blocking over any [`embedded_nal::TcpFullStack`].
//!
//! # Per connection
//! - Bytes go into an at-core [`FrameDecoder`] of `RX` bytes, so frames are
//!   found by their header's `length` whatever the read boundaries: a read
//!   may end mid-header or mid-body (`WouldBlock` in the middle of a frame
//!   just means "later"), or hold several frames.
//! - Each whole frame is answered by [`at_core::respond`] into the slot's
//!   `TX`-byte reply buffer, then sent. A send that takes only part of the
//!   reply (the stack's send buffer is full) leaves the unsent tail in the
//!   slot; the next poll sends it before anything else, and **no request is
//!   read or answered on that connection while a reply is pending**. Replies
//!   therefore leave in request order, and a client that does not read its
//!   replies only stalls itself.
//! - A CRC mismatch is answered `checksum_mismatch` and the connection
//!   stays. A wrong magic (`bad_frame`, seq 0) or a `length` over the limit
//!   (`frame_too_large`, the header's seq) is answered, and once that reply
//!   is out the connection is closed: the stream is out of step.
//! - The body limit is `RX - 16`: a frame always fits the receive buffer.
//!
//! # Timeouts
//! With [`Timeouts`] set ([`TcpServer::with_timeouts`]), a connection that
//! makes no progress is closed: one that has sent nothing and been sent
//! nothing for `idle` ms (a client that connected and went quiet, or a
//! laptop unplugged mid-session), and one that has held a partial frame
//! for `frame` ms (a client that stalled mid-frame). Time comes from the
//! caller: [`TcpServer::poll`] takes the board's clock in milliseconds, so
//! the server needs no timer of its own. A peer that vanished is closed by
//! the same rule; the stack's keep-alive finds it too.
//!
//! # Over the limit
//! A connection accepted while all `CLIENTS` slots are taken is answered
//! `busy` (seq 0) and closed at once.
//!
//! # Fairness
//! One poll answers at most [`FRAMES_PER_POLL`] frames and makes at most
//! [`READS_PER_POLL`] reads per connection, so a client that pipelines
//! thousands of requests cannot starve the others.
//!
//! # Memory
//! `CLIENTS * (RX + TX + a few words)` plus the sockets, all inside the
//! [`TcpServer`] value: put it in a `static` (or on the stack of `main`) on
//! a device.

use at_core::auth::{Open, Origin, Responder, Transport};
use at_core::subscriptions::{Subscriber, Topics};
use at_core::{Context, ErrorCode, FrameDecoder, Functions, HEADER_LEN, MIN_REPLY_BUFFER};
use embedded_nal::{TcpClientStack, TcpFullStack, nb};

use crate::logging::{log_debug, log_info, log_warn};

/// The most frames one poll answers on one connection.
pub const FRAMES_PER_POLL: usize = 8;

/// The most reads one poll makes on one connection.
pub const READS_PER_POLL: usize = 4;

/// How many polls a connection being closed after an out-of-step error gets
/// to send its last reply before it is closed anyway.
pub const CLOSE_POLLS: u8 = 64;

/// How long a connection may make no progress before it is closed, in
/// milliseconds (`None`: no limit). See the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// No byte in or out, and no partial frame buffered, for this long.
    pub idle: Option<u32>,
    /// A partial frame buffered for this long.
    pub frame: Option<u32>,
}

/// One client slot: a socket (when in use) and its buffers. The buffers stay
/// in place when the slot is reused, so accepting moves no large value.
struct Slot<T, const RX: usize, const TX: usize> {
    socket: Option<T>,
    /// Where the connection comes from (for authenticated replies, which
    /// are sent again only to their request's host).
    origin: Origin,
    decoder: FrameDecoder<[u8; RX]>,
    /// The reply being sent: `tx[sent..len]` is still to go.
    tx: [u8; TX],
    sent: usize,
    len: usize,
    /// `Some(polls left)` once the connection is to close after the reply
    /// in `tx` is out.
    closing: Option<u8>,
    /// When (ms) a byte last came in or went out.
    last_progress: u64,
    /// When (ms) the partial frame now buffered began.
    frame_started: Option<u64>,
    /// The seq of the last event sent on this connection (plain ones).
    events_sent: u32,
}

impl<T, const RX: usize, const TX: usize> Slot<T, RX, TX> {
    const EMPTY: Self = Slot {
        socket: None,
        origin: Origin::SERIAL,
        decoder: FrameDecoder::new(u32::MAX),
        tx: [0; TX],
        sent: 0,
        len: 0,
        closing: None,
        last_progress: 0,
        frame_started: None,
        events_sent: 0,
    };

    fn reset(&mut self, now: u64) {
        self.decoder.clear();
        self.sent = 0;
        self.len = 0;
        self.closing = None;
        self.last_progress = now;
        self.frame_started = None;
        self.events_sent = 0;
    }

    /// Whether the connection has gone without progress past a limit.
    fn timed_out(&self, timeouts: Timeouts, now: u64) -> Option<End> {
        let since = |t: u64| now.saturating_sub(t);
        if let (Some(started), Some(limit)) = (self.frame_started, timeouts.frame)
            && since(started) >= u64::from(limit)
        {
            return Some(End::FrameTimeout);
        }
        match timeouts.idle {
            Some(limit) if since(self.last_progress) >= u64::from(limit) => Some(End::IdleTimeout),
            _ => None,
        }
    }
}

/// Why a connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    PeerClosed,
    OutOfStep,
    ReceiveFailed,
    SendFailed,
    CloseTimeout,
    IdleTimeout,
    FrameTimeout,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::PeerClosed => "peer closed",
            End::OutOfStep => "out of step after a bad frame",
            End::ReceiveFailed => "receive failed",
            End::SendFailed => "send failed",
            End::CloseTimeout => "last reply not sent in time",
            End::IdleTimeout => "idle too long",
            End::FrameTimeout => "a partial frame stalled",
        }
    }
}

/// A TCP server for up to `CLIENTS` connections at a time, with an
/// `RX`-byte receive buffer (bodies up to `RX - 16` bytes) and a `TX`-byte
/// reply buffer per connection (`TX` at least [`MIN_REPLY_BUFFER`]; a reply
/// that does not fit is answered `internal`).
///
/// Create it with [`TcpServer::bind`], then call [`TcpServer::poll`] from
/// the main loop.
pub struct TcpServer<S: TcpFullStack, const CLIENTS: usize, const RX: usize, const TX: usize> {
    listener: S::TcpSocket,
    slots: [Slot<S::TcpSocket, RX, TX>; CLIENTS],
    timeouts: Timeouts,
    name: &'static str,
}

impl<S: TcpFullStack, const CLIENTS: usize, const RX: usize, const TX: usize>
    TcpServer<S, CLIENTS, RX, TX>
{
    const CHECK: () = {
        assert!(CLIENTS > 0, "CLIENTS must be at least 1");
        assert!(RX > HEADER_LEN, "RX must hold a header and a body");
        assert!(
            TX >= MIN_REPLY_BUFFER,
            "TX must be at least MIN_REPLY_BUFFER"
        );
    };

    /// Opens a listening socket on `port` (all addresses) and returns the
    /// server, with every slot free.
    pub fn bind(stack: &mut S, port: u16) -> Result<Self, S::Error> {
        let mut listener = TcpClientStack::socket(stack)?;
        stack.bind(&mut listener, port)?;
        stack.listen(&mut listener)?;
        log_info!("tcp: listening (port {} asked for)", port);
        Ok(Self::from_listener(listener))
    }

    /// A server over a socket the caller has already bound and set
    /// listening.
    pub fn from_listener(listener: S::TcpSocket) -> Self {
        let () = Self::CHECK;
        TcpServer {
            listener,
            slots: [const { Slot::EMPTY }; CLIENTS],
            timeouts: Timeouts::default(),
            name: crate::DEFAULT_NAME,
        }
    }

    /// The same server, reporting `name` in `rpc.info`.
    pub fn with_name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The same server, closing connections that make no progress (see
    /// [`Timeouts`]).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The listening socket (to ask the stack for its local address, say).
    pub fn listener(&self) -> &S::TcpSocket {
        &self.listener
    }

    /// The largest body a request may have: `RX - 16`.
    pub const fn max_body(&self) -> u32 {
        let room = RX - HEADER_LEN;
        if room > u32::MAX as usize {
            u32::MAX
        } else {
            room as u32
        }
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        self.slots.iter().filter(|s| s.socket.is_some()).count()
    }

    /// Does what can be done now without blocking: accepts waiting
    /// connections, sends pending replies, reads and answers requests, and
    /// closes connections that ended or timed out. `now` is the board's
    /// clock in milliseconds (any origin; it must not go backwards); it only
    /// matters with [`Timeouts`]. Returns how many things happened (accepts,
    /// reads, sends, frames answered, closes): 0 means idle, so the caller
    /// may sleep.
    ///
    /// Errors of one connection close that connection and are logged; an
    /// `accept` error is logged. Nothing a peer sends makes this panic.
    pub fn poll<F: Functions + ?Sized>(&mut self, stack: &mut S, functions: &F, now: u64) -> usize {
        self.poll_with(stack, functions, &mut Open, now)
    }

    /// [`poll`](Self::poll), answering through `responder`: a
    /// [`Guard`](at_core::auth::Guard) for authentication (contract section
    /// 9; share one guard between a board's servers, so a session is good
    /// on every transport), or [`Open`].
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
    /// from `topics` (share one table between the board's servers), and
    /// sends each connection the events due to it, one at a time, only
    /// while no reply is waiting to go: a reply is never queued behind more
    /// than the one event being sent. A connection's plain subscriptions
    /// end with it; sealed ones go to where their session's latest
    /// verified subscribe came from, and are lost while that is closed.
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
        let mut work = self.accept_all(stack, now);
        let info = crate::server_info(self.name, self.max_body(), topics.is_some());
        for slot in &mut self.slots {
            work += service(
                slot,
                stack,
                functions,
                &info,
                responder,
                crate::topics(&mut topics),
                now,
            );
            if slot.socket.is_some()
                && let Some(reason) = slot.timed_out(self.timeouts, now)
            {
                work += close(slot, stack, reason, crate::topics(&mut topics));
            }
            if let Some(t) = crate::topics(&mut topics) {
                work += send_event(slot, stack, responder, t, now);
            }
        }
        if let Some(t) = topics {
            // Events towards connections that are gone: taken (lost, in
            // their n) so that leases still run out.
            let live = |o: &Origin| {
                self.slots
                    .iter()
                    .any(|s| s.socket.is_some() && s.origin == *o)
            };
            let mut scratch = [0u8; MIN_REPLY_BUFFER];
            while t
                .take_due(
                    now,
                    &|o| o.transport == Transport::Stream && !live(o),
                    &mut scratch,
                )
                .is_some()
            {}
        }
        work
    }

    /// Closes every connection and the listening socket.
    pub fn close(mut self, stack: &mut S) {
        for slot in &mut self.slots {
            if let Some(socket) = slot.socket.take() {
                let _ = stack.close(socket);
            }
            slot.reset(0);
        }
        let _ = stack.close(self.listener);
    }

    fn accept_all(&mut self, stack: &mut S, now: u64) -> usize {
        let mut work = 0;
        // Bounded: at most one round of the slots (and one refusal) per poll.
        for _ in 0..=CLIENTS {
            match stack.accept(&mut self.listener) {
                Ok((socket, peer)) => {
                    work += 1;
                    match self.slots.iter_mut().find(|s| s.socket.is_none()) {
                        Some(slot) => {
                            log_debug!("tcp: accepted a connection from port {}", peer.port());
                            slot.reset(now);
                            slot.socket = Some(socket);
                            slot.origin = Origin::from(Transport::Stream, peer);
                        }
                        None => {
                            log_warn!(
                                "tcp: refusing a connection from port {}: all {} slots busy",
                                peer.port(),
                                CLIENTS
                            );
                            refuse(stack, socket);
                        }
                    }
                }
                Err(nb::Error::WouldBlock) => break,
                Err(nb::Error::Other(_)) => {
                    log_warn!("tcp: accept failed");
                    break;
                }
            }
        }
        work
    }
}

/// Answers `busy` (seq 0) on a connection there is no room for, and closes it.
fn refuse<S: TcpFullStack>(stack: &mut S, mut socket: S::TcpSocket) {
    let mut out = [0u8; MIN_REPLY_BUFFER];
    if let Ok(n) = at_core::write_error_frame(0, ErrorCode::Busy, "too many connections", &mut out)
    {
        // Best effort: a new connection's send buffer is empty.
        let _ = stack.send(&mut socket, &out[..n]);
    }
    discard_input(stack, &mut socket, &mut out);
    let _ = stack.close(socket);
}

/// Reads and drops what the peer already sent (without waiting), so that
/// closing does not reset the connection under the last reply.
fn discard_input<S: TcpFullStack>(stack: &mut S, socket: &mut S::TcpSocket, scratch: &mut [u8]) {
    for _ in 0..READS_PER_POLL {
        match stack.receive(socket, scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Serves one slot: flush, answer, read, in that order, within the poll's
/// budget. Returns the work done.
fn service<S, F, R, const RX: usize, const TX: usize>(
    slot: &mut Slot<S::TcpSocket, RX, TX>,
    stack: &mut S,
    functions: &F,
    info: &at_core::ServerInfo<'_>,
    responder: &mut R,
    mut topics: Option<&mut dyn Topics>,
    now: u64,
) -> usize
where
    S: TcpFullStack,
    F: Functions + ?Sized,
    R: Responder,
{
    if slot.socket.is_none() {
        return 0;
    }
    if let Some(polls) = &mut slot.closing {
        if *polls == 0 {
            return close(slot, stack, End::CloseTimeout, topics);
        }
        *polls -= 1;
    }
    let Slot {
        socket,
        origin,
        decoder,
        tx,
        sent,
        len,
        closing,
        last_progress,
        frame_started,
        events_sent: _,
    } = slot;
    let Some(sock) = socket.as_mut() else {
        return 0;
    };
    let mut work = 0;
    let mut frames = 0;
    let mut reads = 0;
    let end = loop {
        // 1. The pending reply goes first; nothing is read until it is out.
        if *sent < *len {
            match stack.send(sock, &tx[*sent..*len]) {
                Ok(n) if n > 0 => {
                    work += 1;
                    *last_progress = now;
                    *sent += n;
                    if *sent < *len {
                        // The send buffer is full: keep the tail for later.
                        break None;
                    }
                    *sent = 0;
                    *len = 0;
                }
                Ok(_) | Err(nb::Error::WouldBlock) => break None,
                Err(nb::Error::Other(_)) => break Some(End::SendFailed),
            }
        }
        if closing.is_some() {
            break Some(End::OutOfStep);
        }
        if frames == FRAMES_PER_POLL {
            break None;
        }
        // 2. Answer the next whole frame buffered.
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                frames += 1;
                work += 1;
                let mut context = Context {
                    origin: *origin,
                    now,
                    waited_ms: 0,
                    frame_len: frame.body.len() + HEADER_LEN,
                    topics: crate::topics(&mut topics),
                };
                match responder.respond(functions, info, &frame, &mut context, tx) {
                    Some(n) => *len = n,
                    None => log_debug!("tcp: nothing to answer (seq {})", frame.seq()),
                }
            }
            Err(e) => {
                frames += 1;
                work += 1;
                log_warn!("tcp: bad frame (seq {}): {}", e.seq(), e.code().as_str());
                if !notification(&e, decoder.last_flags())
                    && let Some(n) = at_core::respond_to_error(&e, tx)
                {
                    *len = n;
                }
                if e.loses_sync() {
                    *closing = Some(CLOSE_POLLS);
                }
            }
            // 3. Nothing whole buffered: read.
            Ok(None) => {
                if reads == READS_PER_POLL {
                    break None;
                }
                reads += 1;
                let spare = decoder.spare();
                if spare.is_empty() {
                    // The decoder guarantees room after Ok(None); never here.
                    break Some(End::ReceiveFailed);
                }
                match stack.receive(sock, spare) {
                    Ok(0) => break Some(End::PeerClosed),
                    Ok(n) => {
                        work += 1;
                        *last_progress = now;
                        decoder.commit(n);
                    }
                    Err(nb::Error::WouldBlock) => break None,
                    Err(nb::Error::Other(_)) => break Some(End::ReceiveFailed),
                }
            }
        }
    };
    // A partial frame's clock starts when its first byte is buffered (or
    // when the frame before it was taken out whole).
    *frame_started = match (decoder.buffered(), *frame_started) {
        (0, _) => None,
        (_, Some(started)) if frames == 0 => Some(started),
        _ => Some(now),
    };
    match end {
        Some(reason) => work + close(slot, stack, reason, topics),
        None => work,
    }
}

/// Whether a bad frame was a notification (its header read, with the
/// NOTIFY bit): never answered, whatever happens (contract 10.2); one that
/// puts the stream out of step still closes it.
pub(crate) fn notification(e: &at_core::FrameError, flags: u16) -> bool {
    let magic = matches!(
        e,
        at_core::FrameError::Header {
            error: at_core::HeaderError::BadMagic { .. },
            ..
        }
    );
    !magic && flags & at_core::FLAG_NOTIFY != 0
}

/// Sends the connection the next event due to it, if nothing else is
/// waiting to go: the event becomes the slot's pending frame.
fn send_event<S, R, const RX: usize, const TX: usize>(
    slot: &mut Slot<S::TcpSocket, RX, TX>,
    stack: &mut S,
    responder: &mut R,
    topics: &mut dyn Topics,
    now: u64,
) -> usize
where
    S: TcpFullStack,
    R: Responder,
{
    if slot.socket.is_none() || slot.closing.is_some() || slot.sent < slot.len {
        return 0;
    }
    let origin = slot.origin;
    let Some(due) = topics.take_due(now, &|o| *o == origin, &mut slot.tx) else {
        return 0;
    };
    let len = crate::finish_event(&due, &mut slot.events_sent, responder, now, &mut slot.tx);
    let Some(len) = len else { return 0 };
    slot.sent = 0;
    slot.len = len;
    let Some(sock) = slot.socket.as_mut() else {
        return 0;
    };
    match stack.send(sock, &slot.tx[..len]) {
        Ok(n) => {
            slot.sent = n;
            if n == len {
                slot.sent = 0;
                slot.len = 0;
            }
            slot.last_progress = now;
            1
        }
        // Left pending: the next poll sends it before anything else.
        Err(_) => 0,
    }
}

fn close<S: TcpFullStack, const RX: usize, const TX: usize>(
    slot: &mut Slot<S::TcpSocket, RX, TX>,
    stack: &mut S,
    reason: End,
    topics: Option<&mut dyn Topics>,
) -> usize {
    let Some(mut socket) = slot.socket.take() else {
        return 0;
    };
    if let Some(t) = topics {
        t.drop_subscriber(Subscriber::Plain(slot.origin));
    }
    match reason {
        End::PeerClosed => log_debug!("tcp: connection closed: {}", reason.as_str()),
        _ => log_info!("tcp: closing a connection: {}", reason.as_str()),
    }
    if reason == End::OutOfStep {
        slot.decoder.clear();
        discard_input(stack, &mut socket, slot.decoder.spare());
    }
    let _ = stack.close(socket);
    slot.reset(0);
    1
}

pub mod call_home;

#[cfg(test)]
mod tests;
