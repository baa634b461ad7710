//! # at-host: the AT remote-call toolkit for std hosts
//!
//! A server that calls registered functions for clients over TCP and UDP,
//! and clients for both, on tokio. Every frame is encoded, decoded and
//! answered by [`at_core`]: there is one implementation of the format.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use at_host::{Client, Server, Value};
//! use std::time::Duration;
//!
//! let server = Server::builder()
//!     .calculator()
//!     .function("echo", |args| Ok(args.first().copied().map(Value::from).unwrap_or(Value::Null)))
//!     .tcp("127.0.0.1:0".parse()?)
//!     .start()
//!     .await?;
//! let addr = server.tcp_addr().unwrap();
//!
//! let mut client = Client::connect(addr, Duration::from_secs(5)).await?;
//! let quotient = client.call("div", &[at_core::Value::Int(10), at_core::Value::Int(4)]).await?;
//! assert_eq!(quotient, Value::Float(2.5));
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
mod cache;
mod client;
mod error;
mod log_limit;
mod registry;
mod server;
pub mod udp;
mod value;

pub use client::Client;
pub use error::{Error, ProtocolError};
pub use registry::{HandlerError, HostFunction, Registry};
pub use server::{Server, ServerBuilder, ServerConfig, ShutdownHandle};
pub use udp::{UdpClient, UdpConfig, UdpStats};
pub use value::Value;

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
