//! The client side, one module per transport:
//!
//! - [`tcp`]: [`Client`], one connection, calls one at a time or pipelined;
//! - [`udp`]: [`UdpClient`], with [`UdpConfig`] and [`UdpStats`], calls
//!   retransmitted until answered.
//!
//! Both encode requests and read replies through `shared::wire`, and
//! authenticate through `auth` (the hello, sealing requests, opening
//! replies) when given a key; nothing here imports the server side.

mod auth;
mod tcp;
mod udp;

pub use tcp::Client;
pub use udp::{UdpClient, UdpConfig, UdpStats};

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::shared::error::Error;

/// What a generated client calls through: the TCP [`Client`](crate::Client)
/// or the [`UdpClient`](crate::UdpClient).
pub trait Caller: Send {
    /// Calls `func` with typed arguments (a tuple) and converts the result.
    fn call_as<T: DeserializeOwned, A: Serialize + Send>(
        &mut self,
        func: &str,
        args: A,
    ) -> impl Future<Output = Result<T, Error>> + Send;
}
