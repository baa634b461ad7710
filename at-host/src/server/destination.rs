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
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Asks the kernel to report each datagram's destination address.
/// Failures only mean every datagram counts as unicast.
pub(super) fn enable(socket: &UdpSocket) {
    let _ = setsockopt(socket, sockopt::Ipv4PacketInfo, &true);
    let _ = setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true);
}

/// The next datagram: its length, its sender, and where it was sent to
/// (when the kernel said).
pub(super) async fn recv(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    socket
        .async_io(Interest::READABLE, || recv_now(socket, buf))
        .await
}

fn recv_now(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(nix::libc::in6_pktinfo, nix::libc::in_pktinfo);
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let peer = msg
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::other("a datagram without a sender address"))?;
    let mut destination = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            match cmsg {
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    destination = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_addr.s_addr,
                    ))));
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    let v6 = std::net::Ipv6Addr::from(info.ipi6_addr.s6_addr);
                    destination = Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4));
                }
                _ => {}
            }
        }
    }
    Ok((msg.bytes, peer, destination))
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

fn interface_broadcasts() -> Vec<Ipv4Addr> {
    let mut cached = BROADCASTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((read, addrs)) = cached.as_ref()
        && read.elapsed() < Duration::from_secs(10)
    {
        return addrs.clone();
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
    *cached = Some((Instant::now(), addrs.clone()));
    addrs
}

/// Whether a datagram sent to `destination` was a broadcast or multicast.
pub(super) fn is_broadcast(destination: IpAddr) -> bool {
    match destination {
        IpAddr::V4(ip) => {
            ip.is_broadcast() || ip.is_multicast() || interface_broadcasts().contains(&ip)
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
