//! Receiving a datagram together with the address it was sent to
//! (`IP_PKTINFO`, `IPV6_PKTINFO`), so the UDP loop can tell a broadcast or
//! multicast request (discovery, contract section 8) from a unicast one.
//!
//! A request that came to 255.255.255.255, to a subnet's broadcast address
//! or to a multicast group (`ff02::1`) is answered only with success, after
//! a random 0 to 100 ms; see `udp.rs`. Where the destination cannot be
//! read, a datagram counts as unicast.

use std::io;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, setsockopt, sockopt,
};
/// Asks the kernel to report each datagram's destination address, if it
/// can be other than the address bound: on a wildcard, broadcast or
/// multicast address. Returns whether it did (failures only mean every
/// datagram counts as unicast).
pub(super) fn enable(socket: &std::net::UdpSocket) -> bool {
    let bound = match socket.local_addr() {
        Ok(addr) => addr.ip().to_canonical(),
        Err(_) => return false,
    };
    let may_be_other = match bound {
        IpAddr::V4(ip) => ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast(),
        IpAddr::V6(ip) => ip.is_unspecified() || ip.is_multicast(),
    };
    if !may_be_other {
        return false;
    }
    let v4 = setsockopt(socket, sockopt::Ipv4PacketInfo, &true).is_ok();
    let v6 = setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true).is_ok();
    v4 || v6
}

/// Datagrams read by one `recvmmsg` at most.
pub(super) const BATCH: usize = 4;

/// One datagram read into the buffer of the same index.
#[derive(Clone, Copy)]
pub(super) struct Received {
    /// Its length.
    pub len: usize,
    /// Its sender (none: the kernel gave no address, the datagram is
    /// dropped).
    pub peer: Option<SocketAddr>,
    /// Where it was sent to, when the kernel said.
    pub to: Option<IpAddr>,
}

/// The next datagrams, into `bufs` and described in `got`; blocks for one
/// if none is waiting (up to the socket's read timeout: then `WouldBlock`
/// or `TimedOut`). When `pktinfo` (from [`enable`]) says the kernel tells
/// destinations, one `recvmmsg` reads them with up to [`BATCH`] datagrams;
/// else a plain `recvfrom` reads one (all a socket bound to one unicast
/// address needs, and the cheapest read there is).
pub(super) fn recv(
    socket: &std::net::UdpSocket,
    pktinfo: bool,
    bufs: &mut [Vec<u8>; BATCH],
    got: &mut Vec<Received>,
) -> io::Result<()> {
    got.clear();
    if pktinfo {
        return recv_now(socket, pktinfo, bufs, got).map(drop);
    }
    let (len, peer) = socket.recv_from(&mut bufs[0])?;
    got.push(Received {
        len,
        peer: Some(peer),
        to: None,
    });
    Ok(())
}

fn recv_now(
    socket: &std::net::UdpSocket,
    pktinfo: bool,
    bufs: &mut [Vec<u8>; BATCH],
    got: &mut Vec<Received>,
) -> io::Result<usize> {
    {
        // New headers each time: nix does not reset the lengths the kernel
        // wrote back (address, control messages) before reusing them.
        let space =
            pktinfo.then(|| nix::cmsg_space!(nix::libc::in6_pktinfo, nix::libc::in_pktinfo));
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, space);
        let headers = &mut headers;
        let mut slices = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
        let received = recvmmsg(
            socket.as_raw_fd(),
            headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )
        .map_err(io::Error::from)?;
        for msg in received {
            let peer = msg.address.as_ref().and_then(socket_addr);
            let mut to = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for cmsg in cmsgs {
                    match cmsg {
                        ControlMessageOwned::Ipv4PacketInfo(info) => {
                            to = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                                info.ipi_addr.s_addr,
                            ))));
                        }
                        ControlMessageOwned::Ipv6PacketInfo(info) => {
                            let v6 = std::net::Ipv6Addr::from(info.ipi6_addr.s6_addr);
                            to = Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4));
                        }
                        _ => {}
                    }
                }
            }
            got.push(Received {
                len: msg.bytes,
                peer,
                to,
            });
        }
        Ok(got.len())
    }
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    storage.as_sockaddr_in6().map(|v6| {
        SocketAddr::V6(std::net::SocketAddrV6::new(
            v6.ip(),
            v6.port(),
            v6.flowinfo(),
            v6.scope_id(),
        ))
    })
}

/// The broadcast addresses of this host's interfaces, re-read at most
/// every 10 s.
static BROADCASTS: Mutex<Option<(Instant, Vec<Ipv4Addr>)>> = Mutex::new(None);

/// Whether `ip` is the broadcast address of one of this host's interfaces.
fn is_interface_broadcast(ip: Ipv4Addr) -> bool {
    let mut cached = BROADCASTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((read, addrs)) = cached.as_ref()
        && read.elapsed() < Duration::from_secs(10)
    {
        return addrs.contains(&ip);
    }
    let v4 = |a: Option<SockaddrStorage>| a.and_then(|a| a.as_sockaddr_in().map(|a| a.ip()));
    let interfaces: Vec<_> = nix::ifaddrs::getifaddrs()
        .map(|ifaddrs| ifaddrs.map(|i| (v4(i.address), v4(i.broadcast))).collect())
        .unwrap_or_default();
    // Where no broadcast address is set, the C library reports the
    // interface's own address there: never take that for a broadcast.
    let own: Vec<Ipv4Addr> = interfaces.iter().filter_map(|(a, _)| *a).collect();
    let addrs: Vec<Ipv4Addr> = interfaces
        .iter()
        .filter_map(|(_, b)| *b)
        .filter(|b| !own.contains(b) && !b.is_unspecified())
        .collect();
    let found = addrs.contains(&ip);
    *cached = Some((Instant::now(), addrs));
    found
}

/// Whether a datagram sent to `destination` was a broadcast or multicast.
pub(super) fn is_broadcast(destination: IpAddr) -> bool {
    match destination {
        IpAddr::V4(ip) => {
            ip.is_broadcast()
                || ip.is_multicast()
                || (!ip.is_loopback() && is_interface_broadcast(ip))
        }
        IpAddr::V6(ip) => ip.is_multicast(),
    }
}

/// A random delay from 0 to 100 ms (so that many servers do not answer a
/// discovery at the same instant).
pub(super) fn answer_delay() -> Duration {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    Duration::from_millis(random % 101)
}
