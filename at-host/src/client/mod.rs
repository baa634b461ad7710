//! The client side, one module per transport:
//!
//! - [`tcp`]: [`Client`], one connection, calls one at a time or pipelined;
//! - [`udp`]: [`UdpClient`], with [`UdpConfig`] and [`UdpStats`], calls
//!   retransmitted until answered.
//!
//! Both encode requests and read replies through [`crate::wire`], and
//! authenticate through `auth` (the hello, sealing requests, opening
//! replies) when given a key; nothing here imports the server side.

mod auth;
mod tcp;
mod udp;

pub use tcp::Client;
pub use udp::{UdpClient, UdpConfig, UdpStats};
