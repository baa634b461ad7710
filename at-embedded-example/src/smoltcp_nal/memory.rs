//! [`StackMemory`]: every buffer a [`SmoltcpStack`](super::SmoltcpStack)
//! needs, in one value with fixed sizes, for a `static`.

use smoltcp::iface::{SocketSet, SocketStorage};
use smoltcp::socket::{tcp, udp};

struct TcpBuffers<const B: usize> {
    rx: [u8; B],
    tx: [u8; B],
}

struct UdpBuffers<const B: usize, const P: usize> {
    rx_meta: [udp::PacketMetadata; P],
    rx: [u8; B],
    tx_meta: [udp::PacketMetadata; P],
    tx: [u8; B],
}

/// Socket storage for `SOCKETS` sockets in all, `TCP` TCP sockets with
/// `TCP_BUF`-byte receive and send buffers, and `UDP` UDP sockets with
/// `UDP_BUF`-byte receive and send buffers holding up to `UDP_PACKETS`
/// datagrams each.
///
/// `SOCKETS` is at least `TCP + UDP`, plus one for each socket the caller
/// adds itself (smoltcp's DHCP socket, say). The size of this value is
/// about `TCP * 2 * TCP_BUF + UDP * 2 * (UDP_BUF + 32 * UDP_PACKETS)`
/// bytes.
pub struct StackMemory<
    const SOCKETS: usize,
    const TCP: usize,
    const TCP_BUF: usize,
    const UDP: usize,
    const UDP_BUF: usize,
    const UDP_PACKETS: usize,
> {
    storage: [SocketStorage<'static>; SOCKETS],
    tcp: [TcpBuffers<TCP_BUF>; TCP],
    udp: [UdpBuffers<UDP_BUF, UDP_PACKETS>; UDP],
}

impl<
    const SOCKETS: usize,
    const TCP: usize,
    const TCP_BUF: usize,
    const UDP: usize,
    const UDP_BUF: usize,
    const UDP_PACKETS: usize,
> StackMemory<SOCKETS, TCP, TCP_BUF, UDP, UDP_BUF, UDP_PACKETS>
{
    const CHECK: () = assert!(SOCKETS >= TCP + UDP, "SOCKETS must be at least TCP + UDP");

    /// Empty buffers (a `const fn`, for a `static`).
    pub const fn new() -> Self {
        let () = Self::CHECK;
        StackMemory {
            storage: [SocketStorage::EMPTY; SOCKETS],
            tcp: [const {
                TcpBuffers {
                    rx: [0; TCP_BUF],
                    tx: [0; TCP_BUF],
                }
            }; TCP],
            udp: [const {
                UdpBuffers {
                    rx_meta: [udp::PacketMetadata::EMPTY; UDP_PACKETS],
                    rx: [0; UDP_BUF],
                    tx_meta: [udp::PacketMetadata::EMPTY; UDP_PACKETS],
                    tx: [0; UDP_BUF],
                }
            }; UDP],
        }
    }

    /// The socket set and the sockets, borrowing these buffers for good:
    /// what [`SmoltcpStack::new`](super::SmoltcpStack::new) takes. A
    /// firmware takes the `&'static mut` from `cortex_m::singleton!`; a
    /// test from `Box::leak`.
    pub fn split(
        &'static mut self,
    ) -> (
        SocketSet<'static>,
        [tcp::Socket<'static>; TCP],
        [udp::Socket<'static>; UDP],
    ) {
        let set = SocketSet::new(&mut self.storage[..]);
        let tcp = self.tcp.each_mut().map(|b| {
            tcp::Socket::new(
                tcp::SocketBuffer::new(&mut b.rx[..]),
                tcp::SocketBuffer::new(&mut b.tx[..]),
            )
        });
        let udp = self.udp.each_mut().map(|b| {
            udp::Socket::new(
                udp::PacketBuffer::new(&mut b.rx_meta[..], &mut b.rx[..]),
                udp::PacketBuffer::new(&mut b.tx_meta[..], &mut b.tx[..]),
            )
        });
        (set, tcp, udp)
    }
}

impl<
    const SOCKETS: usize,
    const TCP: usize,
    const TCP_BUF: usize,
    const UDP: usize,
    const UDP_BUF: usize,
    const UDP_PACKETS: usize,
> Default for StackMemory<SOCKETS, TCP, TCP_BUF, UDP, UDP_BUF, UDP_PACKETS>
{
    fn default() -> Self {
        Self::new()
    }
}
