//! The memory a [`SmoltcpStack`](super::SmoltcpStack) needs, with fixed
//! sizes, in two parts: [`SocketBuffers`] (every byte buffer, all zeros)
//! and [`SocketSlots`] (the socket table and the UDP packet metadata, a
//! few hundred bytes a socket). [`StackMemory`] holds both in one value.
//! Why two parts: see the [module docs](super#memory).

use smoltcp::iface::{SocketSet, SocketStorage};
use smoltcp::socket::{tcp, udp};

struct TcpBuffers<const B: usize> {
    rx: [u8; B],
    tx: [u8; B],
}

struct UdpBuffers<const B: usize> {
    rx: [u8; B],
    tx: [u8; B],
}

struct UdpMeta<const P: usize> {
    rx: [udp::PacketMetadata; P],
    tx: [udp::PacketMetadata; P],
}

/// The byte buffers of `TCP` TCP sockets (`TCP_BUF` bytes to receive and
/// as many to send, each) and `UDP` UDP sockets (`UDP_BUF` bytes each
/// way): `TCP * 2 * TCP_BUF + UDP * 2 * UDP_BUF` bytes, all zeros when
/// empty, so that a `static` of it takes no flash.
///
/// ```
/// use at_embedded_example::smoltcp_nal::SocketBuffers;
/// // Four TCP sockets with 1 KiB each way and one UDP socket: 10 KiB.
/// assert_eq!(size_of::<SocketBuffers<4, 1024, 1, 1024>>(), 10 * 1024);
/// ```
pub struct SocketBuffers<
    const TCP: usize,
    const TCP_BUF: usize,
    const UDP: usize,
    const UDP_BUF: usize,
> {
    tcp: [TcpBuffers<TCP_BUF>; TCP],
    udp: [UdpBuffers<UDP_BUF>; UDP],
}

impl<const TCP: usize, const TCP_BUF: usize, const UDP: usize, const UDP_BUF: usize>
    SocketBuffers<TCP, TCP_BUF, UDP, UDP_BUF>
{
    /// Zeroed buffers (a `const fn`, for a `static`).
    pub const fn new() -> Self {
        SocketBuffers {
            tcp: [const {
                TcpBuffers {
                    rx: [0; TCP_BUF],
                    tx: [0; TCP_BUF],
                }
            }; TCP],
            udp: [const {
                UdpBuffers {
                    rx: [0; UDP_BUF],
                    tx: [0; UDP_BUF],
                }
            }; UDP],
        }
    }
}

impl<const TCP: usize, const TCP_BUF: usize, const UDP: usize, const UDP_BUF: usize> Default
    for SocketBuffers<TCP, TCP_BUF, UDP, UDP_BUF>
{
    fn default() -> Self {
        Self::new()
    }
}

/// smoltcp's socket table (`SOCKETS` slots) and the packet metadata of
/// `UDP` UDP sockets (`UDP_PACKETS` datagrams each way, each): about
/// `SOCKETS * 340 + UDP * UDP_PACKETS * 32` bytes on a 32-bit target.
///
/// `SOCKETS` is at least the number of TCP and UDP sockets the stack has,
/// plus one for each socket the caller adds itself (smoltcp's DHCP socket,
/// say). Not all zeros when empty: build it at run time (see the
/// [module docs](super#memory)).
pub struct SocketSlots<const SOCKETS: usize, const UDP: usize, const UDP_PACKETS: usize> {
    storage: [SocketStorage<'static>; SOCKETS],
    udp: [UdpMeta<UDP_PACKETS>; UDP],
}

impl<const SOCKETS: usize, const UDP: usize, const UDP_PACKETS: usize>
    SocketSlots<SOCKETS, UDP, UDP_PACKETS>
{
    /// Empty slots.
    pub const fn new() -> Self {
        SocketSlots {
            storage: [SocketStorage::EMPTY; SOCKETS],
            udp: [const {
                UdpMeta {
                    rx: [udp::PacketMetadata::EMPTY; UDP_PACKETS],
                    tx: [udp::PacketMetadata::EMPTY; UDP_PACKETS],
                }
            }; UDP],
        }
    }

    /// The socket set and the sockets over these slots and `buffers`,
    /// borrowing both for good: what
    /// [`SmoltcpStack::new`](super::SmoltcpStack::new) takes. A firmware
    /// takes the two `&'static mut` from `cortex_m::singleton!` (or a
    /// `static_cell`); a test from `Box::leak`.
    ///
    /// # Panics
    /// At compile time (a `const` check), if `SOCKETS < TCP + UDP`.
    pub fn split<const TCP: usize, const TCP_BUF: usize, const UDP_BUF: usize>(
        &'static mut self,
        buffers: &'static mut SocketBuffers<TCP, TCP_BUF, UDP, UDP_BUF>,
    ) -> (
        SocketSet<'static>,
        [tcp::Socket<'static>; TCP],
        [udp::Socket<'static>; UDP],
    ) {
        let () = Check::<SOCKETS, TCP, UDP>::ROOM;
        let set = SocketSet::new(&mut self.storage[..]);
        let tcp = buffers.tcp.each_mut().map(|b| {
            tcp::Socket::new(
                tcp::SocketBuffer::new(&mut b.rx[..]),
                tcp::SocketBuffer::new(&mut b.tx[..]),
            )
        });
        let mut meta = self.udp.iter_mut();
        let udp = buffers.udp.each_mut().map(|b| {
            // One metadata pair per buffer pair: both arrays are `UDP`
            // long, so `None` never happens.
            let (rx_meta, tx_meta): (&mut [_], &mut [_]) = match meta.next() {
                Some(m) => (&mut m.rx[..], &mut m.tx[..]),
                None => (&mut [], &mut []),
            };
            udp::Socket::new(
                udp::PacketBuffer::new(rx_meta, &mut b.rx[..]),
                udp::PacketBuffer::new(tx_meta, &mut b.tx[..]),
            )
        });
        (set, tcp, udp)
    }
}

impl<const SOCKETS: usize, const UDP: usize, const UDP_PACKETS: usize> Default
    for SocketSlots<SOCKETS, UDP, UDP_PACKETS>
{
    fn default() -> Self {
        Self::new()
    }
}

/// The compile-time check of [`SocketSlots::split`].
struct Check<const SOCKETS: usize, const TCP: usize, const UDP: usize>;

impl<const SOCKETS: usize, const TCP: usize, const UDP: usize> Check<SOCKETS, TCP, UDP> {
    const ROOM: () = assert!(SOCKETS >= TCP + UDP, "SOCKETS must be at least TCP + UDP");
}

/// Both parts in one value: [`SocketSlots`] for `SOCKETS` sockets in all,
/// and [`SocketBuffers`] for `TCP` TCP sockets with `TCP_BUF`-byte receive
/// and send buffers and `UDP` UDP sockets with `UDP_BUF`-byte buffers
/// holding up to `UDP_PACKETS` datagrams each. Convenient where memory is
/// plenty (a test leaks a `Box` of it); a firmware keeps the two parts
/// apart (see the [module docs](super#memory)).
pub struct StackMemory<
    const SOCKETS: usize,
    const TCP: usize,
    const TCP_BUF: usize,
    const UDP: usize,
    const UDP_BUF: usize,
    const UDP_PACKETS: usize,
> {
    /// The socket table and the UDP packet metadata.
    pub slots: SocketSlots<SOCKETS, UDP, UDP_PACKETS>,
    /// The byte buffers.
    pub buffers: SocketBuffers<TCP, TCP_BUF, UDP, UDP_BUF>,
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
    /// Empty memory (a `const fn`).
    pub const fn new() -> Self {
        StackMemory {
            slots: SocketSlots::new(),
            buffers: SocketBuffers::new(),
        }
    }

    /// The socket set and the sockets, borrowing this memory for good
    /// ([`SocketSlots::split`]).
    pub fn split(
        &'static mut self,
    ) -> (
        SocketSet<'static>,
        [tcp::Socket<'static>; TCP],
        [udp::Socket<'static>; UDP],
    ) {
        self.slots.split(&mut self.buffers)
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
