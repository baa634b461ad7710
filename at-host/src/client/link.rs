//! What a datagram client sends its frames through: a connected UDP
//! socket, or a broker topic pair (contract section 11). Both lose, repeat
//! and reorder frames alike, so one client ([`UdpClient`](super::UdpClient))
//! retransmits, seals and matches replies for both.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::mqtt::MqttLink;
use crate::shared::error::Error;

/// One frame out, one frame in.
pub(crate) enum Link {
    /// A UDP socket connected to the server.
    Udp(UdpSocket),
    /// Through a broker to a device by name.
    Mqtt(MqttLink),
}

impl Link {
    /// Sends one frame.
    pub(crate) async fn send(&self, frame: &[u8]) -> io::Result<()> {
        match self {
            Link::Udp(socket) => socket.send(frame).await.map(drop),
            Link::Mqtt(link) => link.send(frame),
        }
    }

    /// Sends one frame if it can go now (from a `Drop`).
    pub(crate) fn try_send(&self, frame: &[u8]) -> io::Result<()> {
        match self {
            Link::Udp(socket) => socket.try_send(frame).map(drop),
            Link::Mqtt(link) => link.send(frame),
        }
    }

    /// Waits for the next frame (cancel safe); its length in `buf`.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Udp(socket) => socket.recv(buf).await,
            Link::Mqtt(link) => link.recv(buf).await,
        }
    }

    /// The local address (UDP); an MQTT link has none.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Link::Udp(socket) => socket.local_addr(),
            Link::Mqtt(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "an MQTT client has no local address",
            )),
        }
    }

    /// Whether a request `frame` may go at all: an MQTT
    /// device whose retained status says it is offline, or whose `max_body`
    /// the frame exceeds, fails it at once (contract 11.1 rule 11).
    pub(crate) fn check(&self, frame: &[u8]) -> Result<(), Error> {
        match self {
            Link::Udp(_) => Ok(()),
            Link::Mqtt(link) => link.check(frame),
        }
    }
}
