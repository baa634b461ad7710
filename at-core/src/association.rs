//! Where a frame comes from: the transport and the sender's address, the
//! association of contract section 10.1 (a TCP connection, a UDP peer
//! address, a serial line). Authentication, the request -> reply path and
//! the subscription table all key on it; it depends on nothing of theirs.

use core::net::SocketAddr;

/// How a request came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP (a byte stream with connections).
    Stream,
    /// UDP.
    Datagram,
    /// A serial line (no addresses).
    Serial,
}

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The transport.
    pub transport: Transport,
    /// The sender's address (none on a serial line).
    pub peer: Option<SocketAddr>,
    /// Whether it was sent to a broadcast or multicast address.
    pub broadcast: bool,
}

impl Origin {
    /// A request over a serial line.
    pub const SERIAL: Origin = Origin {
        transport: Transport::Serial,
        peer: None,
        broadcast: false,
    };

    /// A unicast request over `transport` from `peer`.
    pub const fn from(transport: Transport, peer: SocketAddr) -> Origin {
        Origin {
            transport,
            peer: Some(peer),
            broadcast: false,
        }
    }

    /// Whether a request from `self` may get the reply remembered for one
    /// from `first`: the same host; over UDP both times, the same port too
    /// (a TCP reconnection comes from a new port).
    pub fn may_receive_reply_of(&self, first: &Origin) -> bool {
        match (self.peer, first.peer) {
            (Some(now), Some(then)) => {
                now.ip() == then.ip()
                    && (self.transport != Transport::Datagram
                        || first.transport != Transport::Datagram
                        || now.port() == then.port())
            }
            (None, None) => true,
            _ => false,
        }
    }
}
