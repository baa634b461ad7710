//! Calling home (contract 10.5): a board behind a NAT connects out to its
//! host, calls `rpc.peer` there, sends a `log` notification, and then
//! serves the host's calls on that same connection, exactly as a
//! [`TcpServer`](super::TcpServer) serves an accepted one. A connection
//! that fails, is refused or closes is made again after a backoff that
//! doubles from [`FIRST_BACKOFF_MS`] up to [`MAX_BACKOFF_MS`] (reset once a
//! `rpc.peer` succeeds), so a host that restarts finds its boards again.
//!
//! On the wire (vectors P1 to P3): the board's `rpc.peer` is its request
//! seq 1, the notification `log("boot ...")` seq 2; the host calls with
//! its own counter, and the board answers each call as a server does.
//!
//! ```no_run
//! # fn demo<S: embedded_nal::TcpFullStack>(stack: &mut S) {
//! use at_core::auth::Open;
//! use at_core::calculator::CALCULATOR;
//! use at_embedded_example::tcp::call_home::CallHome;
//!
//! let host = "10.0.2.2:16724".parse().unwrap();
//! let mut home = CallHome::<S, 528, 256>::new(host, "boot demo-board");
//! # let now_ms = || 0;
//! loop {
//!     home.poll(stack, &CALCULATOR, &mut Open, None, now_ms());
//! }
//! # }
//! ```

use core::net::SocketAddr;

use at_core::auth::{Origin, Responder, Transport};
use at_core::body::Request;
use at_core::subscriptions::Topics;
use at_core::{EncodeError, Functions, JsonStr, Kind, Reply, Value, encode_frame_with};
use embedded_nal::{TcpFullStack, nb};

use super::{End, Slot, close, send_event, service};
use crate::logging::{log_info, log_warn};

/// The first wait before connecting again, in ms.
pub const FIRST_BACKOFF_MS: u32 = 1_000;
/// The longest wait before connecting again, in ms.
pub const MAX_BACKOFF_MS: u32 = 60_000;
/// How long connecting and the `rpc.peer` reply may take, in ms.
pub const GREETING_MS: u64 = 10_000;

/// Where the connection home stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not connected: connects again at `retry_at` (ms).
    Waiting {
        /// When to connect again.
        retry_at: u64,
    },
    /// The TCP handshake is under way (since `since`, ms).
    Connecting {
        /// When it began.
        since: u64,
    },
    /// `rpc.peer` sent, its reply awaited (since `since`, ms).
    Greeting {
        /// When it began.
        since: u64,
    },
    /// The host may call: the board serves its calls.
    Serving,
}

/// A connection home: the host at `remote`, an `RX`-byte receive buffer
/// and a `TX`-byte reply buffer, as a [`TcpServer`](super::TcpServer)'s
/// slot has.
pub struct CallHome<S: TcpFullStack, const RX: usize, const TX: usize> {
    remote: SocketAddr,
    line: &'static str,
    name: &'static str,
    slot: Slot<S::TcpSocket, RX, TX>,
    state: State,
    backoff: u32,
    /// Connections home that reached `Serving`.
    greeted: u32,
}

impl<S: TcpFullStack, const RX: usize, const TX: usize> CallHome<S, RX, TX> {
    /// Calls home to `remote`, sending `log(line)` once `rpc.peer` is
    /// accepted; connects at the first poll.
    pub const fn new(remote: SocketAddr, line: &'static str) -> Self {
        CallHome {
            remote,
            line,
            name: crate::DEFAULT_NAME,
            slot: Slot::EMPTY,
            state: State::Waiting { retry_at: 0 },
            backoff: FIRST_BACKOFF_MS,
            greeted: 0,
        }
    }

    /// The same, reporting `name` in `rpc.info`.
    pub const fn with_name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Where it stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// How many times a connection home was accepted (`rpc.peer`).
    pub fn greeted(&self) -> u32 {
        self.greeted
    }

    /// Does what can be done now without blocking: connects (again, after
    /// the backoff), greets, serves the host's calls (and, with `topics`,
    /// events of subscriptions made over this connection). `now` is the
    /// board's clock in ms. Returns the work done (0: idle).
    pub fn poll<F, R>(
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
        match self.state {
            State::Waiting { retry_at } if now >= retry_at => self.connect(stack, now),
            State::Waiting { .. } => 0,
            State::Connecting { since } => self.connecting(stack, since, now),
            State::Greeting { since } => self.greeting(stack, since, now),
            State::Serving => {
                let info = crate::server_info(self.name, self.max_body(), topics.is_some());
                let slot = &mut self.slot;
                let mut work = service(
                    slot,
                    stack,
                    functions,
                    &info,
                    responder,
                    crate::topics(&mut topics),
                    now,
                );
                if let Some(t) = topics {
                    work += send_event(slot, stack, responder, t, now);
                }
                if slot.socket.is_none() {
                    log_warn!("call home: the connection closed");
                    self.wait(now);
                }
                work
            }
        }
    }

    /// The largest body a call from the host may have: `RX - 16`.
    const fn max_body(&self) -> u32 {
        let room = RX - at_core::HEADER_LEN;
        if room > u32::MAX as usize {
            u32::MAX
        } else {
            room as u32
        }
    }

    fn connect(&mut self, stack: &mut S, now: u64) -> usize {
        match stack.socket() {
            Ok(socket) => {
                self.slot.reset(now);
                self.slot.socket = Some(socket);
                self.slot.origin = Origin::from(Transport::Stream, self.remote);
                self.state = State::Connecting { since: now };
                self.connecting(stack, now, now)
            }
            Err(_) => {
                log_warn!("call home: no socket");
                self.wait(now);
                1
            }
        }
    }

    fn connecting(&mut self, stack: &mut S, since: u64, now: u64) -> usize {
        let Some(socket) = self.slot.socket.as_mut() else {
            self.wait(now);
            return 1;
        };
        match stack.connect(socket, self.remote) {
            Ok(()) => {
                // P1: the board's rpc.peer, its request seq 1.
                let body = br#"{"func": "rpc.peer", "args": []}"#;
                match at_core::encode_frame(Kind::Request, 1, body, &mut self.slot.tx) {
                    Ok(len) => {
                        self.slot.len = len;
                        self.state = State::Greeting { since: now };
                    }
                    Err(_) => self.fail(stack, now),
                }
                1
            }
            Err(nb::Error::WouldBlock) if now.saturating_sub(since) < GREETING_MS => 0,
            Err(_) => {
                log_warn!("call home: connecting failed");
                self.fail(stack, now);
                1
            }
        }
    }

    /// Sends `rpc.peer`, then waits for its reply; frames that come before
    /// it (none should) are dropped.
    fn greeting(&mut self, stack: &mut S, since: u64, now: u64) -> usize {
        let slot = &mut self.slot;
        let Some(socket) = slot.socket.as_mut() else {
            self.wait(now);
            return 1;
        };
        let mut work = 0;
        if slot.sent < slot.len {
            match stack.send(socket, &slot.tx[slot.sent..slot.len]) {
                Ok(n) => {
                    slot.sent += n;
                    work += 1;
                }
                Err(nb::Error::WouldBlock) => {}
                Err(nb::Error::Other(_)) => {
                    self.fail(stack, now);
                    return 1;
                }
            }
            if slot.sent == slot.len {
                slot.sent = 0;
                slot.len = 0;
            }
        }
        match stack.receive(socket, slot.decoder.spare()) {
            Ok(0) | Err(nb::Error::Other(_)) => {
                self.fail(stack, now);
                return 1;
            }
            Ok(n) => {
                slot.decoder.commit(n);
                work += 1;
            }
            Err(nb::Error::WouldBlock) => {}
        }
        let accepted = match slot.decoder.next_frame() {
            Ok(Some(frame)) if frame.kind.is_reply() && frame.seq() == 1 => {
                Some(matches!(Reply::parse(frame.body), Ok(Reply::Success(_))))
            }
            Ok(Some(_)) => None,
            Ok(None) => None,
            Err(_) => Some(false),
        };
        match accepted {
            Some(true) => {
                // Served from now on; the boot line goes first, seq 2.
                let line = [Value::Str(JsonStr::new(self.line))];
                let written = encode_frame_with(Kind::Notify, 2, &mut slot.tx, |b| {
                    Request::write("log", &line, b)
                        .map_err(|_: EncodeError| at_core::BufferTooSmall)
                });
                slot.sent = 0;
                slot.len = written.unwrap_or(0);
                slot.last_progress = now;
                self.backoff = FIRST_BACKOFF_MS;
                self.greeted = self.greeted.wrapping_add(1);
                self.state = State::Serving;
                log_info!("call home: the host accepted rpc.peer");
                work + 1
            }
            Some(false) => {
                log_warn!("call home: the host refused rpc.peer");
                self.fail(stack, now);
                1
            }
            None if now.saturating_sub(since) >= GREETING_MS => {
                log_warn!("call home: no answer to rpc.peer");
                self.fail(stack, now);
                1
            }
            None => work,
        }
    }

    /// Closes the connection and waits.
    fn fail(&mut self, stack: &mut S, now: u64) {
        close(&mut self.slot, stack, End::PeerClosed, None);
        self.wait(now);
    }

    fn wait(&mut self, now: u64) {
        self.state = State::Waiting {
            retry_at: now.saturating_add(u64::from(self.backoff)),
        };
        self.backoff = self.backoff.saturating_mul(2).min(MAX_BACKOFF_MS);
    }
}
