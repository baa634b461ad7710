//! The TCP half of [`SmoltcpStack`]: the socket pool, listening ports and
//! `TcpFullStack`.

use core::net::SocketAddr;

use embedded_nal::{TcpClientStack, TcpFullStack, nb};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self as stcp, State};
use smoltcp::time::Duration;

use super::{MAX_LISTENERS, NetError, SmoltcpStack};

/// Timeouts every TCP socket of the pool gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Keep-alive probes after this much silence (smoltcp's
    /// `set_keep_alive`): finds a peer that vanished without FIN or RST.
    pub keep_alive: Option<Duration>,
    /// A connection whose peer acknowledges nothing (data, keep-alives, a
    /// FIN) for this long is aborted (smoltcp's `set_timeout`).
    pub timeout: Option<Duration>,
}

impl Default for TcpConfig {
    /// Keep-alive every 10 s, abort after 30 s without an answer.
    fn default() -> Self {
        TcpConfig {
            keep_alive: Some(Duration::from_secs(10)),
            timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// A TCP socket of a [`SmoltcpStack`]: a handle, until `connect` or
/// `accept` ties it to a socket of the pool.
#[derive(Debug)]
pub struct TcpSocket {
    role: Handle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handle {
    /// Fresh from `socket`.
    Unbound,
    /// `bind` gave it a port.
    Bound(u16),
    /// `listen` on this port: `accept` hands out pool sockets.
    Listening(u16),
    /// Pool socket `index`, connecting or connected.
    Connection(usize),
}

/// What the stack is doing with one pool socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    /// Closed, waiting to be armed.
    Free,
    /// In LISTEN (or mid-handshake) for this port.
    Armed(u16),
    /// Handed to the caller.
    Taken,
    /// Closed by the caller; back to `Free` once smoltcp is done with it.
    Draining,
}

pub(super) struct Pool<const N: usize> {
    handles: [SocketHandle; N],
    uses: [Use; N],
    listeners: [Option<u16>; MAX_LISTENERS],
    config: TcpConfig,
}

impl<const N: usize> Pool<N> {
    pub(super) fn new(handles: [SocketHandle; N], config: TcpConfig) -> Self {
        Pool {
            handles,
            uses: [Use::Free; N],
            listeners: [None; MAX_LISTENERS],
            config,
        }
    }

    pub(super) fn available(&self) -> usize {
        self.uses
            .iter()
            .filter(|u| matches!(u, Use::Free | Use::Armed(_)))
            .count()
    }

    /// Returns drained sockets to the pool and arms every free one on the
    /// listening port with the fewest listeners. Returns whether any
    /// socket changed hands.
    pub(super) fn maintain(&mut self, sockets: &mut SocketSet<'_>) -> bool {
        let mut changed = false;
        for i in 0..N {
            let socket = sockets.get_mut::<stcp::Socket>(self.handles[i]);
            match (self.uses[i], socket.state()) {
                (Use::Draining, State::Closed) => {
                    self.uses[i] = Use::Free;
                }
                (Use::Draining, State::TimeWait | State::FinWait2) => {
                    // Everything sent was acknowledged: reclaimed now,
                    // rather than after TIME-WAIT's 10 s or whenever the
                    // peer closes its side (see the module docs).
                    socket.abort();
                    self.uses[i] = Use::Free;
                }
                // A listening socket whose handshake was reset, or whose
                // port stopped listening.
                (Use::Armed(port), State::Closed) => {
                    self.uses[i] = Use::Free;
                    changed |= !self.listeners.contains(&Some(port));
                }
                _ => {}
            }
            if self.uses[i] == Use::Free
                && let Some(port) = self.least_armed_port()
            {
                let socket = sockets.get_mut::<stcp::Socket>(self.handles[i]);
                if socket.state() != State::Closed {
                    socket.abort();
                }
                if socket.listen(port).is_ok() {
                    socket.set_timeout(self.config.timeout);
                    socket.set_keep_alive(self.config.keep_alive);
                    // Replies are small and answer requests: send them now.
                    socket.set_nagle_enabled(false);
                    self.uses[i] = Use::Armed(port);
                    changed = true;
                }
            }
        }
        changed
    }

    fn least_armed_port(&self) -> Option<u16> {
        self.listeners
            .iter()
            .flatten()
            .min_by_key(|&&port| self.uses.iter().filter(|u| **u == Use::Armed(port)).count())
            .copied()
    }

    /// A pool socket for an outgoing connection: a free one, else one that
    /// is listening with no connection in progress.
    fn take_for_connect(&mut self, sockets: &mut SocketSet<'_>) -> Option<usize> {
        let free = self.uses.iter().position(|u| *u == Use::Free);
        let index = free.or_else(|| {
            (0..N).find(|&i| {
                matches!(self.uses[i], Use::Armed(_))
                    && sockets.get_mut::<stcp::Socket>(self.handles[i]).state() == State::Listen
            })
        })?;
        let socket = sockets.get_mut::<stcp::Socket>(self.handles[index]);
        socket.abort();
        socket.set_timeout(self.config.timeout);
        socket.set_keep_alive(self.config.keep_alive);
        socket.set_nagle_enabled(false);
        self.uses[index] = Use::Taken;
        Some(index)
    }
}

impl<'a, const TCP: usize, const UDP: usize> SmoltcpStack<'a, TCP, UDP> {
    /// Pool socket `index` (the pool's handles are its own TCP sockets, so
    /// `get_mut` cannot fail).
    fn tcp_socket(&mut self, index: usize) -> &mut stcp::Socket<'a> {
        self.sockets.get_mut(self.tcp.handles[index])
    }

    /// The pool socket of a connection handle.
    fn connection(&mut self, socket: &TcpSocket) -> Result<&mut stcp::Socket<'a>, NetError> {
        match socket.role {
            Handle::Connection(index) => Ok(self.tcp_socket(index)),
            _ => Err(NetError::InvalidState),
        }
    }
}

impl<const TCP: usize, const UDP: usize> TcpClientStack for SmoltcpStack<'_, TCP, UDP> {
    type TcpSocket = TcpSocket;
    type Error = NetError;

    /// A handle; no pool socket is taken until `connect` or `accept`.
    fn socket(&mut self) -> Result<TcpSocket, NetError> {
        Ok(TcpSocket {
            role: Handle::Unbound,
        })
    }

    /// Starts the connection on the first call (`WouldBlock` until the
    /// handshake is done); `ConnectionReset` if it was refused.
    fn connect(&mut self, socket: &mut TcpSocket, remote: SocketAddr) -> nb::Result<(), NetError> {
        let index = match socket.role {
            Handle::Connection(index) => index,
            Handle::Unbound | Handle::Bound(_) => {
                let local = match socket.role {
                    Handle::Bound(port) => port,
                    _ => self.ephemeral_port(),
                };
                let remote = super::endpoint(remote)?;
                let index = self
                    .tcp
                    .take_for_connect(&mut self.sockets)
                    .ok_or(nb::Error::Other(NetError::NoSocket))?;
                let handle = self.tcp.handles[index];
                let (iface, sockets) = (&mut self.iface, &mut self.sockets);
                let started =
                    sockets
                        .get_mut::<stcp::Socket>(handle)
                        .connect(iface.context(), remote, local);
                if started.is_err() {
                    self.tcp.uses[index] = Use::Free;
                    return Err(nb::Error::Other(NetError::Unaddressable));
                }
                socket.role = Handle::Connection(index);
                index
            }
            Handle::Listening(_) => return Err(nb::Error::Other(NetError::InvalidState)),
        };
        match self.tcp_socket(index).state() {
            State::Established | State::CloseWait => Ok(()),
            State::SynSent | State::SynReceived => Err(nb::Error::WouldBlock),
            _ => Err(nb::Error::Other(NetError::ConnectionReset)),
        }
    }

    /// Queues what fits in the socket's send buffer (`WouldBlock` when it
    /// is full); the next [`SmoltcpStack::poll`] sends it.
    fn send(&mut self, socket: &mut TcpSocket, buffer: &[u8]) -> nb::Result<usize, NetError> {
        let s = self.connection(socket)?;
        match s.state() {
            State::SynSent | State::SynReceived => return Err(nb::Error::WouldBlock),
            State::Closed => return Err(nb::Error::Other(NetError::ConnectionReset)),
            _ if !s.may_send() => return Err(nb::Error::Other(NetError::PipeClosed)),
            _ => {}
        }
        match s.send_slice(buffer) {
            Ok(0) if !buffer.is_empty() => Err(nb::Error::WouldBlock),
            Ok(n) => Ok(n),
            Err(_) => Err(nb::Error::Other(NetError::PipeClosed)),
        }
    }

    /// `Ok(0)` once the peer has closed and everything it sent was read;
    /// `ConnectionReset` after a reset or a timeout.
    fn receive(
        &mut self,
        socket: &mut TcpSocket,
        buffer: &mut [u8],
    ) -> nb::Result<usize, NetError> {
        let s = self.connection(socket)?;
        if s.can_recv() {
            return s
                .recv_slice(buffer)
                .map_err(|_| nb::Error::Other(NetError::ConnectionReset));
        }
        match s.state() {
            State::SynSent | State::SynReceived | State::Established => Err(nb::Error::WouldBlock),
            State::FinWait1 | State::FinWait2 => Err(nb::Error::WouldBlock),
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait => Ok(0),
            State::Closed | State::Listen => Err(nb::Error::Other(NetError::ConnectionReset)),
        }
    }

    /// A connection: sends FIN and returns the socket to the pool once
    /// smoltcp is done with it. A listening handle: stops listening.
    fn close(&mut self, socket: TcpSocket) -> Result<(), NetError> {
        match socket.role {
            Handle::Connection(index) => {
                self.tcp_socket(index).close();
                self.tcp.uses[index] = Use::Draining;
            }
            Handle::Listening(port) => {
                for listener in &mut self.tcp.listeners {
                    if *listener == Some(port) {
                        *listener = None;
                    }
                }
                for i in 0..TCP {
                    if self.tcp.uses[i] == Use::Armed(port) && self.tcp_socket(i).is_listening() {
                        self.tcp_socket(i).abort();
                        self.tcp.uses[i] = Use::Free;
                    }
                }
                self.tcp.maintain(&mut self.sockets);
            }
            Handle::Unbound | Handle::Bound(_) => {}
        }
        Ok(())
    }
}

impl<const TCP: usize, const UDP: usize> TcpFullStack for SmoltcpStack<'_, TCP, UDP> {
    fn bind(&mut self, socket: &mut TcpSocket, local_port: u16) -> Result<(), NetError> {
        if local_port == 0 {
            return Err(NetError::Unaddressable);
        }
        match socket.role {
            Handle::Unbound | Handle::Bound(_) => {
                socket.role = Handle::Bound(local_port);
                Ok(())
            }
            _ => Err(NetError::InvalidState),
        }
    }

    /// Makes the port listen: from now on every free pool socket is armed
    /// on it (at once, and again on every [`SmoltcpStack::poll`]).
    fn listen(&mut self, socket: &mut TcpSocket) -> Result<(), NetError> {
        let Handle::Bound(port) = socket.role else {
            return Err(NetError::InvalidState);
        };
        if !self.tcp.listeners.contains(&Some(port)) {
            let free = self
                .tcp
                .listeners
                .iter_mut()
                .find(|l| l.is_none())
                .ok_or(NetError::TooManyListeners)?;
            *free = Some(port);
        }
        socket.role = Handle::Listening(port);
        self.tcp.maintain(&mut self.sockets);
        Ok(())
    }

    /// A connection that finished its handshake on this port, if any
    /// (`WouldBlock` if none).
    fn accept(&mut self, socket: &mut TcpSocket) -> nb::Result<(TcpSocket, SocketAddr), NetError> {
        let Handle::Listening(port) = socket.role else {
            return Err(nb::Error::Other(NetError::InvalidState));
        };
        for index in 0..TCP {
            if self.tcp.uses[index] != Use::Armed(port) {
                continue;
            }
            let s = self.tcp_socket(index);
            if !matches!(s.state(), State::Established | State::CloseWait) {
                continue;
            }
            let Some(remote) = s.remote_endpoint() else {
                continue;
            };
            self.tcp.uses[index] = Use::Taken;
            self.tcp.maintain(&mut self.sockets);
            let handle = TcpSocket {
                role: Handle::Connection(index),
            };
            return Ok((handle, SocketAddr::from(remote)));
        }
        Err(nb::Error::WouldBlock)
    }
}
