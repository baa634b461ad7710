//! embedded-nal over smoltcp (feature `net`): [`SmoltcpStack`] implements
//! [`embedded_nal::TcpFullStack`] and [`embedded_nal::UdpFullStack`] over a
//! smoltcp [`Interface`] and a fixed set of sockets, so the very
//! [`TcpServer`](crate::TcpServer) and [`UdpServer`](crate::UdpServer) that
//! run on a PC run on any board with a smoltcp `Device`. No board code is
//! here: the board gives a `Device` (its Ethernet MAC) and a millisecond
//! clock.
//!
//! smoltcp-nal has no listening sockets (no `TcpFullStack`); this module is
//! that missing piece.
//!
//! # The TCP pool: how N clients are served
//! The stack owns `TCP` smoltcp TCP sockets (the pool). A socket that
//! `listen`s does not take one: it names a port. Every pool socket that is
//! not in use is kept in LISTEN on a listening port (smoltcp lets several
//! sockets listen on one port; a SYN goes to the first that is listening),
//! so up to `TCP` connections can open at the same instant. `accept` hands
//! out a pool socket that has left LISTEN and finished its handshake
//! (ESTABLISHED or CLOSE-WAIT), and the remaining free ones stay listening.
//! With no socket listening, smoltcp answers a SYN with RST.
//!
//! **One spare.** A server for `N` clients ([`TcpServer`](crate::TcpServer)
//! with `CLIENTS = N`) wants a pool of `N + 1`: the spare lets the
//! `N + 1`-th connection in, so that the server can answer it `busy` and
//! close it, instead of the client seeing a reset it cannot tell from a
//! dead board.
//!
//! **Close, reset, TIME-WAIT.**
//! - `close` sends FIN; the socket is *draining* (not free) until smoltcp
//!   reaches CLOSED, or TIME-WAIT. Each [`SmoltcpStack::poll`] returns
//!   drained sockets to the pool and re-arms them.
//! - When the device closes first (a `busy` refusal, a bad frame, an idle
//!   timeout), the socket is reclaimed as soon as the peer has acknowledged
//!   the FIN, that is once everything sent has arrived: in FIN-WAIT-2 (the
//!   peer has not closed its side: a silent client may never do so, and
//!   would hold the socket for ever) and in TIME-WAIT (rather than after
//!   smoltcp's 10 s: a pool of 4 cannot afford 10 s per refusal). The
//!   socket is aborted, so a peer still sending gets RST. TIME-WAIT guards
//!   against a delayed segment of the old connection landing in a new one
//!   with the same address pair; on a LAN, with smoltcp's random initial
//!   sequence numbers, that risk is accepted (as Linux accepts it with
//!   `tcp_tw_reuse`, and bounds FIN-WAIT-2 with `tcp_fin_timeout`).
//! - A reset by the peer moves the socket to CLOSED: `receive` and `send`
//!   report [`NetError::ConnectionReset`], the server closes its handle, and
//!   the socket returns to the pool on the next poll.
//! - A peer that vanishes (no FIN, no RST) is found by the socket's
//!   keep-alive and timeout ([`TcpConfig`]): smoltcp then aborts the
//!   connection, and the server sees it as a reset. Idle-but-alive peers
//!   are the server's business (its idle timeout).
//!
//! # UDP
//! `UDP` smoltcp UDP sockets; `socket` takes a free one, `close` frees it.
//! A datagram longer than the buffer given to `receive` is cut to the
//! buffer's length (as BSD sockets do), so a server notices a full buffer.
//!
//! # Memory
//! Everything is in the memory the caller provides, plus a few words per
//! socket, in two parts: [`SocketBuffers`] (every byte buffer) and
//! [`SocketSlots`] (smoltcp's socket table and the UDP packet metadata, a
//! few hundred bytes a socket), or both in one [`StackMemory`] where memory
//! is plenty (a test).
//!
//! On a device both belong in static memory, and neither should be built
//! on the stack first (a value built by a function is returned through the
//! stack before it is moved into its `static`). The byte buffers are
//! nearly all of it (2 KiB a TCP socket in the firmware) and their empty
//! value is all zeros, so a `static` of a `SocketBuffers` initialised at
//! compile time lands in `.bss`: zeroed at reset, no flash, no copy
//! (`static_cell::ConstStaticCell`, taken once). smoltcp's empty socket
//! slots and packet metadata are *not* all zeros, so a compile-time
//! `static` of them would go to `.data` and cost its size in flash too:
//! build the small [`SocketSlots`] at run time instead
//! (`static_cell::StaticCell::init_with(SocketSlots::new)`), then
//! [`SocketSlots::split`] the two. The networked firmware
//! (`src/bin/firmware/net.rs`) does exactly that; docs/EMBEDDED.md has
//! what it measured.

mod memory;
mod tcp;
mod udp;

pub use memory::{SocketBuffers, SocketSlots, StackMemory};
pub use tcp::{TcpConfig, TcpSocket};
pub use udp::UdpSocket;

use smoltcp::iface::{Interface, PollResult, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::{tcp as stcp, udp as sudp};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint};

use core::net::{IpAddr, SocketAddr};

/// What a [`SmoltcpStack`] call can fail with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// Every socket of the pool is in use.
    NoSocket,
    /// The call does not fit the socket's state (`listen` before `bind`,
    /// `accept` on a socket that does not listen, `send` before
    /// `connect`...).
    InvalidState,
    /// An address or port that cannot be used (port 0, an unspecified
    /// remote address, no route).
    Unaddressable,
    /// The connection is gone: reset by the peer, timed out, or refused.
    ConnectionReset,
    /// The peer has closed its side; nothing more can be sent.
    PipeClosed,
    /// More ports listening than the stack keeps ([`MAX_LISTENERS`]).
    TooManyListeners,
}

impl embedded_nal::TcpError for NetError {
    fn kind(&self) -> embedded_nal::TcpErrorKind {
        match self {
            NetError::PipeClosed | NetError::ConnectionReset => {
                embedded_nal::TcpErrorKind::PipeClosed
            }
            _ => embedded_nal::TcpErrorKind::Other,
        }
    }
}

/// smoltcp's endpoint for `addr`: IPv4, or an IPv4-mapped IPv6 address
/// (this stack is built with IPv4 only).
fn endpoint(addr: SocketAddr) -> Result<IpEndpoint, NetError> {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().ok_or(NetError::Unaddressable)?,
    };
    if ip.is_unspecified() || addr.port() == 0 {
        return Err(NetError::Unaddressable);
    }
    Ok(IpEndpoint::new(IpAddress::Ipv4(ip), addr.port()))
}

/// How many TCP ports can listen at once.
pub const MAX_LISTENERS: usize = 4;

/// The first local port handed out to outgoing connections and unbound UDP
/// sockets (the IANA dynamic range).
const EPHEMERAL_FIRST: u16 = 49152;

/// embedded-nal's `TcpFullStack` and `UdpFullStack` over a smoltcp
/// interface, with a pool of `TCP` TCP sockets and `UDP` UDP sockets (see
/// the [module docs](self)).
///
/// Call [`poll`](Self::poll) with the board's device and the time from the
/// main loop, before and after the servers' own polls.
pub struct SmoltcpStack<'a, const TCP: usize, const UDP: usize> {
    iface: Interface,
    sockets: SocketSet<'a>,
    tcp: tcp::Pool<TCP>,
    udp: udp::Pool<UDP>,
    next_port: u16,
}

impl<'a, const TCP: usize, const UDP: usize> SmoltcpStack<'a, TCP, UDP> {
    /// A stack over `iface`, adding the pool's sockets to `sockets` (which
    /// must have room for them, plus any the caller adds: a DHCP socket,
    /// say). Every TCP socket gets `config`'s timeouts.
    ///
    /// # Panics
    /// If `sockets` has no room for `TCP + UDP` more sockets (a sizing
    /// mistake in the firmware, found at its first start).
    pub fn new(
        iface: Interface,
        mut sockets: SocketSet<'a>,
        tcp_sockets: [stcp::Socket<'a>; TCP],
        udp_sockets: [sudp::Socket<'a>; UDP],
        config: TcpConfig,
    ) -> Self {
        let tcp = tcp::Pool::new(tcp_sockets.map(|s| sockets.add(s)), config);
        let udp = udp::Pool::new(udp_sockets.map(|s| sockets.add(s)));
        SmoltcpStack {
            iface,
            sockets,
            tcp,
            udp,
            next_port: EPHEMERAL_FIRST,
        }
    }

    /// Runs the interface: takes in the frames waiting on `device`, sends
    /// what the sockets have queued, then returns closed TCP sockets to the
    /// pool and keeps every free one listening. Returns whether anything
    /// may have changed (false: nothing to do until a frame arrives or
    /// [`poll_delay`](Self::poll_delay) passes).
    pub fn poll<D: Device + ?Sized>(&mut self, now: Instant, device: &mut D) -> bool {
        let changed = self.iface.poll(now, device, &mut self.sockets);
        let rearmed = self.tcp.maintain(&mut self.sockets);
        changed == PollResult::SocketStateChanged || rearmed
    }

    /// How long the interface can wait before its next [`poll`](Self::poll)
    /// (a retransmission, a keep-alive), when no frame arrives first.
    pub fn poll_delay(&mut self, now: Instant) -> Option<smoltcp::time::Duration> {
        self.iface.poll_delay(now, &self.sockets)
    }

    /// The interface (to set its addresses or routes, say).
    pub fn interface(&mut self) -> &mut Interface {
        &mut self.iface
    }

    /// The socket set (to add or poll other sockets, such as DHCP).
    pub fn sockets(&mut self) -> &mut SocketSet<'a> {
        &mut self.sockets
    }

    /// The interface and the socket set together (smoltcp's DHCP socket
    /// needs both).
    pub fn parts(&mut self) -> (&mut Interface, &mut SocketSet<'a>) {
        (&mut self.iface, &mut self.sockets)
    }

    /// How many TCP sockets of the pool are free or listening (not handed
    /// out and not draining).
    pub fn tcp_available(&self) -> usize {
        self.tcp.available()
    }

    /// A local port for an outgoing connection or an unbound UDP socket:
    /// the dynamic range, in turn.
    fn ephemeral_port(&mut self) -> u16 {
        let port = self.next_port;
        self.next_port = if port == u16::MAX {
            EPHEMERAL_FIRST
        } else {
            port + 1
        };
        port
    }
}

#[cfg(test)]
mod tests;
