//! What minimq 0.10 runs over: [`Link`], an [`embedded_nal::TcpClientStack`]
//! that borrows a stack shared with the board's other servers (a
//! `RefCell`, borrowed for one call at a time), and [`MsClock`], the
//! board's millisecond clock as an `embedded_time::Clock`.
//!
//! The link also makes minimq 0.10 behave as contract section 11 asks,
//! where the crate alone does not:
//! - **A closed connection is noticed at once.** minimq takes a `receive`
//!   of 0 bytes for "nothing yet", so a broker that closed would be found
//!   only by its keep-alive, tens of seconds later; here a 0-byte receive
//!   and any send or receive error are `PipeClosed`, which makes minimq
//!   drop the connection, and the server reconnects after its backoff.
//! - **A fresh socket after every failure.** minimq keeps the socket whose
//!   `connect` failed and calls `connect` on it again; a smoltcp socket
//!   that was refused stays closed. The link closes the stack's socket
//!   when `connect` fails (or when the server aborts the attempt) and opens
//!   a new one at the next `connect`.
//! - **Clean Start 1 and Session Expiry Interval 0 in every CONNECT.**
//!   minimq 0.10 writes Session Expiry Interval 0xFFFFFFFF and Clean Start
//!   only on its first connection. The first bytes sent on each connection
//!   are its CONNECT; [`patch_connect`] sets both fields in a copy of them
//!   (the packet keeps its length), so that the broker keeps nothing for an
//!   offline board and no stale call runs when it comes back.

use core::cell::{Cell, RefCell};
use core::fmt;
use core::net::SocketAddr;

use embedded_nal::{TcpClientStack, TcpErrorKind, nb};
use minimq::embedded_time::{self, Instant, fraction::Fraction};

/// What the link and the server share: the clock, and what happened to the
/// connection since the server last looked.
#[derive(Debug, Default)]
pub struct Signals {
    now: Cell<u64>,
    closed: Cell<bool>,
    abort: Cell<bool>,
}

impl Signals {
    /// Nothing happened yet; the clock at 0.
    pub const fn new() -> Self {
        Signals {
            now: Cell::new(0),
            closed: Cell::new(false),
            abort: Cell::new(false),
        }
    }

    pub(crate) fn set_now(&self, now: u64) {
        self.now.set(now);
    }

    /// Whether the connection closed or failed since the last call.
    pub(crate) fn take_closed(&self) -> bool {
        self.closed.replace(false)
    }

    /// Asks the link to drop the connection at its next operation.
    pub(crate) fn abort(&self) {
        self.abort.set(true);
    }
}

/// The board's clock in milliseconds (what the server was last polled
/// with), for minimq's keep-alive.
#[derive(Clone, Copy, Debug)]
pub struct MsClock<'a>(&'a Signals);

impl<'a> MsClock<'a> {
    /// The clock of `signals`.
    pub const fn new(signals: &'a Signals) -> Self {
        MsClock(signals)
    }
}

impl embedded_time::Clock for MsClock<'_> {
    type T = u32;
    const SCALING_FACTOR: Fraction = Fraction::new(1, 1000);

    fn try_now(&self) -> Result<Instant<Self>, embedded_time::clock::Error> {
        // Wraps after 49 days; minimq compares instants with wrapping.
        Ok(Instant::new(self.0.now.get() as u32))
    }
}

/// Why a link operation failed.
#[derive(Debug)]
pub enum LinkError<E> {
    /// The stack's own error.
    Stack(E),
    /// The connection is closed (the peer closed it, or it was aborted).
    Closed,
    /// The stack was borrowed elsewhere (a board calling the server from
    /// inside another server's poll).
    Busy,
}

impl<E: fmt::Debug> fmt::Display for LinkError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Stack(e) => write!(f, "network stack: {e:?}"),
            LinkError::Closed => f.write_str("connection closed"),
            LinkError::Busy => f.write_str("network stack in use"),
        }
    }
}

impl<E: fmt::Debug> embedded_nal::TcpError for LinkError<E> {
    /// Every failure ends the connection (minimq reconnects only on
    /// `PipeClosed`).
    fn kind(&self) -> TcpErrorKind {
        TcpErrorKind::PipeClosed
    }
}

/// The borrowed stack and the socket's open connection.
type Open<'s, 'k, S> = (
    core::cell::RefMut<'s, S>,
    &'k mut <S as TcpClientStack>::TcpSocket,
);

/// A socket of a [`Link`]: the stack's socket once connecting began.
#[derive(Debug)]
pub struct LinkSocket<T> {
    inner: Option<T>,
    /// Nothing sent on this connection yet (the next send is the CONNECT).
    fresh: bool,
}

/// A TCP client stack over a shared stack (see the module docs).
pub struct Link<'a, S> {
    stack: &'a RefCell<S>,
    signals: &'a Signals,
}

impl<'a, S> Link<'a, S> {
    /// The link over `stack`, reporting to `signals`.
    pub const fn new(stack: &'a RefCell<S>, signals: &'a Signals) -> Self {
        Link { stack, signals }
    }
}

impl<S: TcpClientStack> Link<'_, S> {
    /// Closes the connection because it failed: the server is told.
    fn drop_inner(&self, stack: &mut S, socket: &mut LinkSocket<S::TcpSocket>) {
        close_inner(stack, socket);
        self.signals.closed.set(true);
    }

    /// The stack and the open connection, or why not (the connection is
    /// dropped if the server aborted it).
    fn open<'s, 'k>(
        &'s self,
        socket: &'k mut LinkSocket<S::TcpSocket>,
    ) -> Result<Open<'s, 'k, S>, LinkError<S::Error>> {
        let mut stack = self.stack.try_borrow_mut().map_err(|_| LinkError::Busy)?;
        if self.signals.abort.replace(false) {
            // The server asked for it and is already waiting its backoff:
            // not reported again.
            close_inner(&mut *stack, socket);
            return Err(LinkError::Closed);
        }
        match socket.inner.as_mut() {
            Some(inner) => Ok((stack, inner)),
            None => Err(LinkError::Closed),
        }
    }
}

impl<S: TcpClientStack> TcpClientStack for Link<'_, S>
where
    S::Error: fmt::Debug,
{
    type TcpSocket = LinkSocket<S::TcpSocket>;
    type Error = LinkError<S::Error>;

    fn socket(&mut self) -> Result<Self::TcpSocket, Self::Error> {
        Ok(LinkSocket {
            inner: None,
            fresh: true,
        })
    }

    fn connect(
        &mut self,
        socket: &mut Self::TcpSocket,
        remote: SocketAddr,
    ) -> nb::Result<(), Self::Error> {
        let mut stack = self
            .stack
            .try_borrow_mut()
            .map_err(|_| nb::Error::Other(LinkError::Busy))?;
        if self.signals.abort.replace(false) {
            close_inner(&mut *stack, socket);
        }
        let inner = match socket.inner.as_mut() {
            Some(inner) => inner,
            None => {
                let fresh = stack
                    .socket()
                    .map_err(|e| nb::Error::Other(LinkError::Stack(e)))?;
                socket.fresh = true;
                socket.inner.insert(fresh)
            }
        };
        match stack.connect(inner, remote) {
            Ok(()) => Ok(()),
            Err(nb::Error::WouldBlock) => Err(nb::Error::WouldBlock),
            Err(nb::Error::Other(e)) => {
                self.drop_inner(&mut stack, socket);
                Err(nb::Error::Other(LinkError::Stack(e)))
            }
        }
    }

    fn send(
        &mut self,
        socket: &mut Self::TcpSocket,
        buffer: &[u8],
    ) -> nb::Result<usize, Self::Error> {
        let fresh = core::mem::replace(&mut socket.fresh, false);
        let (mut stack, inner) = self.open(socket).map_err(nb::Error::Other)?;
        let sent = if fresh {
            send_connect(&mut *stack, inner, buffer)
        } else {
            stack.send(inner, buffer)
        };
        match sent {
            Ok(n) => Ok(n),
            Err(nb::Error::WouldBlock) => {
                socket.fresh = fresh;
                Err(nb::Error::WouldBlock)
            }
            Err(nb::Error::Other(_)) => {
                self.drop_inner(&mut stack, socket);
                Err(nb::Error::Other(LinkError::Closed))
            }
        }
    }

    fn receive(
        &mut self,
        socket: &mut Self::TcpSocket,
        buffer: &mut [u8],
    ) -> nb::Result<usize, Self::Error> {
        let (mut stack, inner) = self.open(socket).map_err(nb::Error::Other)?;
        match stack.receive(inner, buffer) {
            Ok(0) if !buffer.is_empty() => {
                self.drop_inner(&mut stack, socket);
                Err(nb::Error::Other(LinkError::Closed))
            }
            Ok(n) => Ok(n),
            Err(nb::Error::WouldBlock) => Err(nb::Error::WouldBlock),
            Err(nb::Error::Other(_)) => {
                self.drop_inner(&mut stack, socket);
                Err(nb::Error::Other(LinkError::Closed))
            }
        }
    }

    fn close(&mut self, mut socket: Self::TcpSocket) -> Result<(), Self::Error> {
        let mut stack = self.stack.try_borrow_mut().map_err(|_| LinkError::Busy)?;
        if let Some(inner) = socket.inner.take() {
            stack.close(inner).map_err(LinkError::Stack)?;
        }
        Ok(())
    }
}

/// Closes the stack's socket of `socket`, if it has one.
fn close_inner<S: TcpClientStack>(stack: &mut S, socket: &mut LinkSocket<S::TcpSocket>) {
    if let Some(inner) = socket.inner.take() {
        let _ = stack.close(inner);
    }
}

/// The longest CONNECT head [`patch_connect`] rewrites: fixed header (5),
/// variable header (10), property length (4) and minimq's three properties
/// (13).
const CONNECT_HEAD: usize = 32;

/// Sends the first bytes of a connection: a CONNECT gets its head patched
/// in a copy. A send that takes only part of the head (never seen: the
/// socket's buffer is empty) leaves the rest to be sent unpatched.
fn send_connect<S: TcpClientStack>(
    stack: &mut S,
    socket: &mut S::TcpSocket,
    buffer: &[u8],
) -> nb::Result<usize, S::Error> {
    let mut head = [0u8; CONNECT_HEAD];
    let n = buffer.len().min(CONNECT_HEAD);
    head[..n].copy_from_slice(&buffer[..n]);
    if !patch_connect(&mut head[..n]) {
        return stack.send(socket, buffer);
    }
    let sent = stack.send(socket, &head[..n])?;
    if sent < n || n == buffer.len() {
        return Ok(sent);
    }
    match stack.send(socket, &buffer[n..]) {
        Ok(more) => Ok(n + more),
        Err(_) => Ok(n),
    }
}

/// Sets Clean Start and a Session Expiry Interval of 0 in the start of an
/// MQTT 5 CONNECT packet as minimq 0.10 writes it (the properties Maximum
/// Packet Size, Session Expiry Interval, Receive Maximum), in place.
/// Returns whether `head` was such a CONNECT (else it is unchanged).
pub fn patch_connect(head: &mut [u8]) -> bool {
    if head.first() != Some(&0x10) {
        return false;
    }
    let Some((_, mut i)) = varint(head, 1) else {
        return false;
    };
    if head.get(i..i + 7) != Some(&[0, 4, b'M', b'Q', b'T', b'T', 5][..]) {
        return false;
    }
    let flags = i + 7;
    let Some((length, start)) = varint(head, i + 10) else {
        return false;
    };
    let end = start + length as usize;
    let mut expiry = None;
    i = start;
    while i < end {
        let size = match head.get(i) {
            Some(0x11) => {
                expiry = Some(i + 1);
                4
            }
            Some(0x27) => 4,
            Some(0x21 | 0x22) => 2,
            Some(0x17 | 0x19) => 1,
            _ => break,
        };
        i += 1 + size;
    }
    let Some(at) = expiry.filter(|at| at + 4 <= head.len()) else {
        return false;
    };
    head[flags] |= 0x02;
    head[at..at + 4].fill(0);
    true
}

/// An MQTT variable byte integer at `at`: its value and the index after it.
fn varint(bytes: &[u8], at: usize) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for k in 0..4 {
        let b = *bytes.get(at + k)?;
        value |= u32::from(b & 0x7F) << (7 * k);
        if b & 0x80 == 0 {
            return Some((value, at + k + 1));
        }
    }
    None
}
