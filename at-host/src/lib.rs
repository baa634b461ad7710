//! # at-host: the AT remote-call toolkit for std hosts
//!
//! A server that calls registered functions for clients over TCP and UDP,
//! and clients for both, on tokio. Every frame is encoded, decoded and
//! answered by [`at_core`]: there is one implementation of the format.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use at_host::{Client, HandlerError, Server};
//! use std::time::Duration;
//!
//! let server = Server::builder()
//!     .calculator()
//!     .function("scale", |x: f64, k: i32| x * f64::from(k))
//!     .function("greet", |name: String, times: Option<u8>| {
//!         format!("hello {name}").repeat(usize::from(times.unwrap_or(1)))
//!     })
//!     .tcp("127.0.0.1:0".parse()?)
//!     .start()
//!     .await?;
//! let addr = server.tcp_addr().unwrap();
//!
//! let mut client = Client::connect(addr, Duration::from_secs(5)).await?;
//! let quotient: f64 = client.call_as("div", (10, 4)).await?;
//! assert_eq!(quotient, 2.5);
//! assert_eq!(client.call_as::<f64>("scale", (1.5, 4)).await?, 6.0);
//! // Arguments are checked before the function runs.
//! let e = client.call_as::<f64>("scale", (1.5, "x")).await.unwrap_err();
//! assert_eq!(e.to_string(), r#"error: invalid_arguments: argument 2: expected an integer from -2147483648 to 2147483647, got "x""#);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! A service defined once, as a trait, gives a typed client and a server:
//! see [`service`] and the README.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Source layout. `client/` and `server/` each hold one module per
// transport; neither imports the other. What both need is in `shared/`,
// below both, importing neither; what uses both sides is above them:
//
//   calculator.rs       the calculator as a #[service] trait (client + Builtin)
//   addr.rs             address parsing for the command (public)
//   client/mod.rs       Caller (what #[service] clients call through)
//   client/tcp.rs       Client
//   client/udp.rs       UdpClient, UdpConfig, UdpStats
//   client/link.rs      what UdpClient sends by: a UDP socket or a broker
//   client/mqtt.rs      MqttClient (a UdpClient through a broker)
//   client/auth.rs      the hello, sealing requests, opening replies
//   client/subscribe.rs Subscription, Update: events filed by topic
//   server/mod.rs       ServerConfig, ServerBuilder (binds), Server, ShutdownHandle
//   server/tcp.rs       accept loop, connection loop
//   server/udp.rs       datagram loop, error-reply ration
//   server/cache.rs     UDP reply cache (at-most-once)
//   server/registry.rs  Registry, Service, HandlerError, HostFunction
//   server/typed.rs     typed and async functions: Param, Returns, ...
//   server/auth.rs      sessions, the guard for authenticated requests
//   server/log_limit.rs rate-limited protocol warnings
//   server/peer.rs      Peer: calls towards a client that called rpc.peer
//   shared/wire.rs      request encoding, reply -> Result, the datagram size
//   shared/convert.rs   Value <-> serde types (typed calls and functions)
//   shared/error.rs     Error, ProtocolError
//   shared/value.rs     Value
//   shared/number.rs    Number
//   shared/keys.rs      AuthKey: pre-shared keys, key files, keygen
//   shared/mqtt.rs      MqttBroker, topics, connect options, backoff

// `#[service]` names `::at_host`; inside this crate that is us.
extern crate self as at_host;

pub mod addr;
pub mod calculator;
mod client;
mod server;
mod shared;

pub use at_core::ErrorCode;
/// Defines a service once, as a trait of `async fn`s: generates the trait
/// (implement it with `async fn`s), a typed client `NameClient` over any
/// [`Caller`] and a server `NameServer(implementation)` to pass to
/// [`ServerBuilder::service`], which registers every function with its
/// parameter types and the first paragraph of its doc (for `rpc.functions`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use at_host::{Client, Server};
///
/// #[at_host::service]
/// trait Greeter {
///     /// Says hello.
///     async fn hello(&self, name: String) -> String;
///     /// The wire name may differ from the Rust one (never `rpc.*`).
///     #[at(name = "greeter.shout")]
///     async fn shout(&self, name: String) -> String;
/// }
///
/// struct Polite;
/// impl Greeter for Polite {
///     async fn hello(&self, name: String) -> String { format!("hello, {name}") }
///     async fn shout(&self, name: String) -> String { format!("HELLO, {}", name.to_uppercase()) }
/// }
///
/// let server = Server::builder().service(GreeterServer(Polite)).tcp("127.0.0.1:0".parse()?).start().await?;
/// let client = Client::connect(server.tcp_addr().unwrap(), std::time::Duration::from_secs(5)).await?;
/// let greeter = GreeterClient::new(client);
/// assert_eq!(greeter.hello("ada".into()).await?, "hello, ada");
/// assert_eq!(greeter.shout("ada".into()).await?, "HELLO, ADA");
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub use at_host_macros::service;
pub use client::{
    Caller, Client, EndReason, Granted, MqttClient, Subscribe, SubscribeOptions, Subscription,
    UdpClient, UdpConfig, UdpStats, Update,
};
pub use server::{
    AsyncFunction, EVENT_QUEUE, HostFunction, Json, MAX_PEER_CALLS, MAX_PER_SUBSCRIBER,
    MAX_SESSIONS, PEER_TIMEOUT, Param, Params, Peer, Pending, Registry, RegistryError, Returns,
    Server, ServerBuilder, ServerConfig, Service, ShutdownHandle, Topic, TopicError, TypedFunction,
    caller_addr, caller_peer, first_paragraph, kind,
};
pub use shared::app_error::{AppError, HandlerError, ServiceError};
#[doc(hidden)]
pub use shared::convert::Shape;
pub use shared::convert::{Mismatch, decode_result, from_value, to_value};
pub use shared::error::{Error, ProtocolError};
pub use shared::keys::{AuthKey, KeyFileError};
pub use shared::mqtt::MqttBroker;
pub use shared::number::Number;
pub use shared::value::{Arg, Value};

pub mod udp {
    //! UDP: one frame per datagram, retransmission by the client, at-most-once
    //! execution on the server.
    //!
    //! # Timing (client)
    //! A request unanswered after the retransmission timeout is sent again with
    //! the same seq. The first timeout is `initial_timeout` (default 250 ms)
    //! times a random factor in [1, 1.5); each retransmission doubles it, as
    //! CoAP's (RFC 7252) ACK_TIMEOUT / ACK_RANDOM_FACTOR / MAX_RETRANSMIT scheme
    //! does, with defaults scaled for a LAN: CoAP's 2 s suits constrained radio
    //! links, while a LAN round trip is well under a millisecond, so 250 ms
    //! leaves ample room for a slow function yet recovers from a loss quickly.
    //! At most `retries` retransmissions (default 4) are sent, and the whole call
    //! never outlasts `timeout` (default 5 s): with the defaults the attempts go
    //! out at about 0, 0.3, 0.9, 2.0 and 4.3 s.
    //!
    //! # At-most-once (server)
    //! The server remembers each reply by (client address, seq) and answers a
    //! retransmission with the remembered reply, without calling the function
    //! again. The cache is bounded by age (60 s), by total entries (4096) and per
    //! client (256: its newest replies), see [`crate::ServerConfig`]; a
    //! retransmission that arrives after its entry is gone runs the function
    //! again, so clients should keep their whole retry window (5 s by
    //! default) well under the age limit. A retransmission is the same seq
    //! with the same length and CRC: a seq used again for another request (a
    //! client that restarted and counts from 1) is a new call.

    // The code is in client/udp.rs and server/udp.rs; this module keeps the
    // `at_host::udp::...` paths and the docs above in one public place.
    pub use crate::client::{UdpClient, UdpConfig, UdpStats};
    pub use crate::server::ERROR_REPLIES_PER_SECOND;
}

/// A [`Peer`] (a client that called `rpc.peer`) is called as any
/// client is: a `#[service]` client over it calls the board's functions.
///
/// ```
/// async fn uptime(board: &impl at_host::Caller) -> Result<u64, at_host::Error> {
///     board.call_as("uptime", ()).await
/// }
/// async fn ask(peer: at_host::Peer) -> Result<u64, at_host::Error> {
///     uptime(&peer).await
/// }
/// ```
impl Caller for Peer {
    fn call<A: Arg>(
        &self,
        func: &str,
        args: &[A],
    ) -> impl std::future::Future<Output = Result<Value, Error>> + Send {
        Peer::call(self, func, args)
    }

    fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        func: &str,
        args: impl serde::Serialize + Send,
    ) -> impl std::future::Future<Output = Result<T, Error>> + Send {
        Peer::call_as(self, func, args)
    }
}

/// What `#[service]`'s generated code names; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use serde::Serialize;
    pub use serde::de::DeserializeOwned;
}

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
