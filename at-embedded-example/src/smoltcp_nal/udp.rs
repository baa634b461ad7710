//! The UDP half of [`SmoltcpStack`]: `UdpFullStack` over a fixed set of
//! smoltcp UDP sockets.

use core::net::SocketAddr;

use embedded_nal::{UdpClientStack, UdpFullStack, nb};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp as sudp;

use super::{NetError, SmoltcpStack};

/// A UDP socket of a [`SmoltcpStack`].
#[derive(Debug)]
pub struct UdpSocket {
    index: usize,
    /// Where `send` goes (set by `connect`).
    remote: Option<SocketAddr>,
}

pub(super) struct Pool<const N: usize> {
    handles: [SocketHandle; N],
    taken: [bool; N],
}

impl<const N: usize> Pool<N> {
    pub(super) fn new(handles: [SocketHandle; N]) -> Self {
        Pool {
            handles,
            taken: [false; N],
        }
    }
}

impl<'a, const TCP: usize, const UDP: usize> SmoltcpStack<'a, TCP, UDP> {
    /// The smoltcp socket of a handle (the pool's handles are its own UDP
    /// sockets, so `get_mut` cannot fail).
    fn udp_socket(&mut self, socket: &UdpSocket) -> &mut sudp::Socket<'a> {
        self.sockets.get_mut(self.udp.handles[socket.index])
    }
}

impl<const TCP: usize, const UDP: usize> UdpClientStack for SmoltcpStack<'_, TCP, UDP> {
    type UdpSocket = UdpSocket;
    type Error = NetError;

    /// Takes a free UDP socket (`NoSocket` if all are taken).
    fn socket(&mut self) -> Result<UdpSocket, NetError> {
        let index = self
            .udp
            .taken
            .iter()
            .position(|taken| !taken)
            .ok_or(NetError::NoSocket)?;
        self.udp.taken[index] = true;
        Ok(UdpSocket {
            index,
            remote: None,
        })
    }

    /// Sets where `send` goes; binds an ephemeral port if unbound.
    fn connect(&mut self, socket: &mut UdpSocket, remote: SocketAddr) -> Result<(), NetError> {
        super::endpoint(remote)?;
        if !self.udp_socket(socket).is_open() {
            let port = self.ephemeral_port();
            self.udp_socket(socket)
                .bind(port)
                .map_err(|_| NetError::InvalidState)?;
        }
        socket.remote = Some(remote);
        Ok(())
    }

    fn send(&mut self, socket: &mut UdpSocket, buffer: &[u8]) -> nb::Result<(), NetError> {
        let remote = socket.remote.ok_or(NetError::InvalidState)?;
        self.send_to(socket, remote, buffer)
    }

    /// The next datagram and its sender; one longer than `buffer` is cut
    /// to `buffer.len()` bytes.
    fn receive(
        &mut self,
        socket: &mut UdpSocket,
        buffer: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), NetError> {
        let s = self.udp_socket(socket);
        if !s.is_open() {
            return Err(nb::Error::Other(NetError::InvalidState));
        }
        match s.recv() {
            Ok((payload, meta)) => {
                let n = payload.len().min(buffer.len());
                buffer[..n].copy_from_slice(&payload[..n]);
                Ok((n, SocketAddr::from(meta.endpoint)))
            }
            Err(_) => Err(nb::Error::WouldBlock),
        }
    }

    fn close(&mut self, socket: UdpSocket) -> Result<(), NetError> {
        self.udp_socket(&socket).close();
        self.udp.taken[socket.index] = false;
        Ok(())
    }
}

impl<const TCP: usize, const UDP: usize> UdpFullStack for SmoltcpStack<'_, TCP, UDP> {
    fn bind(&mut self, socket: &mut UdpSocket, local_port: u16) -> Result<(), NetError> {
        if local_port == 0 {
            return Err(NetError::Unaddressable);
        }
        let s = self.udp_socket(socket);
        if s.is_open() {
            return Err(NetError::InvalidState);
        }
        s.bind(local_port).map_err(|_| NetError::InvalidState)
    }

    /// Queues the datagram (`WouldBlock` while the send buffer is full);
    /// the next [`SmoltcpStack::poll`] sends it.
    fn send_to(
        &mut self,
        socket: &mut UdpSocket,
        remote: SocketAddr,
        buffer: &[u8],
    ) -> nb::Result<(), NetError> {
        let remote = super::endpoint(remote)?;
        if !self.udp_socket(socket).is_open() {
            let port = self.ephemeral_port();
            self.udp_socket(socket)
                .bind(port)
                .map_err(|_| NetError::InvalidState)?;
        }
        match self.udp_socket(socket).send_slice(buffer, remote) {
            Ok(()) => Ok(()),
            Err(sudp::SendError::BufferFull) => Err(nb::Error::WouldBlock),
            Err(sudp::SendError::Unaddressable) => Err(nb::Error::Other(NetError::Unaddressable)),
        }
    }
}
