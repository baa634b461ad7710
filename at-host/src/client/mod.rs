//! The client side, one module per transport:
//!
//! - [`tcp`]: [`Client`], one connection shared by reference, calls
//!   pipelined with replies matched by seq;
//! - [`udp`]: [`UdpClient`], with [`UdpConfig`] and [`UdpStats`], calls
//!   retransmitted until answered;
//! - [`mqtt`]: [`MqttClient`], the UDP client's calls through a broker
//!   (contract section 11), over the `link` a datagram client sends by.
//!
//! - [`subscribe`]: [`Subscription`] (contract 10.3), on either client,
//!   with [`Update`], [`EndReason`], [`SubscribeOptions`] and [`Granted`].
//!
//! Both encode requests and read replies through `shared::wire`, and
//! authenticate through `auth` (the hello, sealing requests, opening
//! replies) when given a key; nothing here imports the server side.
//! [`Caller`] is what both have in common, and [`Subscribe`] for topics.

mod auth;
mod link;
mod mqtt;
mod subscribe;
mod tcp;
mod udp;

pub use mqtt::MqttClient;
pub use subscribe::{EndReason, Granted, SubscribeOptions, Subscription, Update};
pub use tcp::Client;
pub use udp::{UdpClient, UdpConfig, UdpStats};

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::shared::error::Error;
use crate::shared::value::{Arg, Value};

/// A client of any transport: the TCP [`Client`](crate::Client), the
/// [`UdpClient`](crate::UdpClient), the [`MqttClient`](crate::MqttClient), or a reference or [`Arc`] of one.
/// Generated `#[service]` clients call through it; so can code that should
/// not care how calls travel.
///
/// Calls take `&self`, so one client serves many tasks at once, and their
/// futures are `Send`, so they can be spawned.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use at_host::{Caller, Client, Server, UdpClient, UdpConfig, Value};
///
/// /// Works over TCP and UDP alike.
/// async fn quarter(caller: &impl Caller, x: i64) -> Result<f64, at_host::Error> {
///     caller.call_as::<f64>("div", (x, 4)).await
/// }
///
/// let server = Server::builder()
///     .calculator()
///     .tcp("127.0.0.1:0".parse()?)
///     .udp("127.0.0.1:0".parse()?)
///     .start()
///     .await?;
/// let tcp = Client::connect(server.tcp_addr().unwrap(), std::time::Duration::from_secs(5)).await?;
/// let udp = UdpClient::connect(server.udp_addr().unwrap(), UdpConfig::default()).await?;
/// assert_eq!(quarter(&tcp, 10).await?, 2.5);
/// assert_eq!(quarter(&udp, 10).await?, 2.5);
/// // Untyped.
/// let sum = Caller::call(&udp, "add", &[Value::Int(1), Value::Int(2)]).await?;
/// assert_eq!(sum, Value::Int(3));
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub trait Caller: Send + Sync {
    /// Calls `func(args)` and waits for its reply: the untyped call, for
    /// names and arguments known only at run time (see [`Arg`]).
    fn call<A: Arg>(
        &self,
        func: &str,
        args: &[A],
    ) -> impl Future<Output = Result<Value, Error>> + Send;

    /// Calls `func` with typed arguments (a tuple, array or slice of serde
    /// values) and converts the result to `T`:
    /// `caller.call_as::<f64>("div", (10, 4))`.
    fn call_as<T: DeserializeOwned>(
        &self,
        func: &str,
        args: impl Serialize + Send,
    ) -> impl Future<Output = Result<T, Error>> + Send;
}

/// A client that can subscribe to a server's topics (contract 10.3): the
/// TCP [`Client`] and the [`UdpClient`]. The clients `#[at_host::service]`
/// generates subscribe through it.
pub trait Subscribe: Send + Sync {
    /// Subscribes to `topic`, its events read as `T` (see
    /// [`Client::subscribe`]).
    fn subscribe<T: DeserializeOwned + Send>(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<Subscription<'_, T>, Error>> + Send;
}

impl Subscribe for Client {
    fn subscribe<T: DeserializeOwned + Send>(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<Subscription<'_, T>, Error>> + Send {
        Client::subscribe(self, topic)
    }
}

impl Subscribe for UdpClient {
    fn subscribe<T: DeserializeOwned + Send>(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<Subscription<'_, T>, Error>> + Send {
        UdpClient::subscribe(self, topic)
    }
}

impl Subscribe for MqttClient {
    fn subscribe<T: DeserializeOwned + Send>(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<Subscription<'_, T>, Error>> + Send {
        MqttClient::subscribe(self, topic)
    }
}

impl<C: Subscribe> Subscribe for std::sync::Arc<C> {
    fn subscribe<T: DeserializeOwned + Send>(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<Subscription<'_, T>, Error>> + Send {
        (**self).subscribe(topic)
    }
}

impl<C: Subscribe> Subscribe for &C {
    fn subscribe<T: DeserializeOwned + Send>(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<Subscription<'_, T>, Error>> + Send {
        (**self).subscribe(topic)
    }
}

/// A caller behind a reference or an `Arc` calls as the caller itself.
macro_rules! forward_caller {
    ($($pointer:ty),*) => {$(
        impl<C: Caller> Caller for $pointer {
            fn call<A: Arg>(
                &self,
                func: &str,
                args: &[A],
            ) -> impl Future<Output = Result<Value, Error>> + Send {
                (**self).call(func, args)
            }

            fn call_as<T: DeserializeOwned>(
                &self,
                func: &str,
                args: impl Serialize + Send,
            ) -> impl Future<Output = Result<T, Error>> + Send {
                (**self).call_as(func, args)
            }
        }
    )*};
}

forward_caller!(&C, Arc<C>);

/// A map keyed by the seqs a client numbered its own requests with.
pub(crate) type SeqMap<V> = HashMap<u32, V, BuildHasherDefault<SeqHasher>>;

/// Fibonacci hashing of a seq: far cheaper than SipHash, and safe here,
/// since only seqs the client chose itself are ever in the map (a peer's
/// seq is only looked up), so no peer can make entries collide.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(FIBONACCI);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// 2^64 divided by the golden ratio, odd.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;
