//! The UDP client, [`UdpClient`], with its [`UdpConfig`] and [`UdpStats`]:
//! one request per datagram, retransmitted under the same seq with a
//! jittered, doubling timeout until answered or out of time. The schedule
//! and its defaults are explained in the public [`udp`](crate::udp) module
//! docs.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use at_core::Frame;
use log::debug;
use tokio::net::UdpSocket;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth::{ClientAuth, Opened};
use crate::shared::convert;
use crate::shared::error::{Error, ProtocolError};
use crate::shared::keys::AuthKey;
use crate::shared::value::{Arg, Value};
use crate::shared::wire::{MAX_DATAGRAM, encode_body, encode_request, reply_to_result};

/// Timing of a UDP client; see the [module docs](crate::udp).
#[derive(Clone, Debug)]
pub struct UdpConfig {
    /// Bound on the whole call, retransmissions included. Default 5 s.
    pub timeout: Duration,
    /// The first retransmission timeout (before jitter). Default 250 ms.
    pub initial_timeout: Duration,
    /// Most retransmissions per call. Default 4.
    pub retries: u32,
    /// Cap on one retransmission timeout, however often it has doubled.
    /// Default 4 s (more than the default timeout allows, so no cap applies
    /// with the other defaults).
    pub max_backoff: Duration,
    /// Largest reply body accepted. Default 65536.
    pub max_frame: u32,
    /// With a key, every call is authenticated (contract section 9); a
    /// reply that does not verify counts as not received.
    pub key: Option<AuthKey>,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            timeout: Duration::from_secs(5),
            initial_timeout: Duration::from_millis(250),
            retries: 4,
            max_backoff: Duration::from_secs(4),
            max_frame: at_core::DEFAULT_MAX_BODY,
            key: None,
        }
    }
}

/// A UDP client: calls over a socket connected to one server, retransmitted
/// until answered.
///
/// ```no_run
/// # async fn example() -> Result<(), at_host::Error> {
/// use at_host::{UdpClient, UdpConfig};
/// let mut client = UdpClient::connect("127.0.0.1:16724".parse().unwrap(), UdpConfig::default()).await?;
/// let sum: i64 = client.call_as("add", (10, 20)).await?;
/// assert_eq!(sum, 30);
/// // Untyped, for names and arguments known only at run time.
/// let sum = client.call("add", &[at_host::Value::Int(10), at_host::Value::Int(20)]).await?;
/// assert_eq!(sum.to_string(), "30");
/// # Ok(()) }
/// ```
pub struct UdpClient {
    socket: UdpSocket,
    config: UdpConfig,
    next_seq: u32,
    rng: u64,
    recv_buf: Vec<u8>,
    stats: UdpStats,
    /// With a key: the session.
    auth: Option<ClientAuth>,
}

/// Counters of a UDP client, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Requests sent the first time.
    pub sent: u64,
    /// Retransmissions.
    pub retransmitted: u64,
    /// Datagrams ignored: other seqs, late duplicates, corrupt frames.
    pub ignored: u64,
}

struct InFlight {
    frame: Vec<u8>,
    retries_left: u32,
    timeout: Duration,
    resend_at: Instant,
    result: Option<Result<Value, Error>>,
}

impl UdpClient {
    /// A client bound to an ephemeral local port, sending to `server`.
    pub async fn connect(server: SocketAddr, config: UdpConfig) -> Result<UdpClient, Error> {
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        let rng = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1;
        let auth = config.key.clone().map(ClientAuth::new);
        Ok(UdpClient {
            socket,
            recv_buf: vec![0u8; MAX_DATAGRAM + 1],
            auth,
            config,
            next_seq: 1,
            rng,
            stats: UdpStats::default(),
        })
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Counters so far.
    pub fn stats(&self) -> UdpStats {
        self.stats
    }

    /// Calls `func(args)` and waits for its reply, retransmitting as needed:
    /// the untyped call (see [`Arg`]).
    pub async fn call<A: Arg>(&mut self, func: &str, args: &[A]) -> Result<Value, Error> {
        let args = A::to_core(args);
        let mut results = self.call_many_core(&[(func, &args)]).await?;
        results
            .pop()
            .unwrap_or(Err(Error::Protocol(ProtocolError::Closed)))
    }

    /// Calls `func` with typed arguments and converts the result, as
    /// [`Client::call_as`](crate::Client::call_as) does, retransmitting as
    /// needed.
    pub async fn call_as<T: DeserializeOwned>(
        &mut self,
        func: &str,
        args: impl Serialize,
    ) -> Result<T, Error> {
        let args = convert::to_args(func, &args)?;
        let value = self.call(func, &args).await?;
        convert::from_result(func, value)
    }

    /// Sends several calls at once and waits for all their replies, each
    /// retransmitted on its own schedule; results come in the order of
    /// `calls`. The whole batch is bounded by the config's `timeout`; a call
    /// still unanswered then is [`Error::Timeout`].
    pub async fn call_many<A: Arg>(
        &mut self,
        calls: &[(&str, &[A])],
    ) -> Result<Vec<Result<Value, Error>>, Error> {
        let args: Vec<_> = calls.iter().map(|(_, args)| A::to_core(args)).collect();
        let calls: Vec<(&str, &[at_core::Value<'_>])> = calls
            .iter()
            .zip(&args)
            .map(|((func, _), args)| (*func, &**args))
            .collect();
        self.call_many_core(&calls).await
    }

    /// [`call_many`](Self::call_many) with typed arguments and results:
    /// every call returns a `T` (each converted as
    /// [`call_as`](Self::call_as) converts), in the order of `calls`.
    ///
    /// ```no_run
    /// # async fn example(client: &mut at_host::UdpClient) -> Result<(), at_host::Error> {
    /// let results = client.call_many_as::<f64, _>(&[("div", (10, 4)), ("mul", (6, 7))]).await?;
    /// assert_eq!(results[0].as_ref().ok(), Some(&2.5));
    /// # Ok(()) }
    /// ```
    pub async fn call_many_as<T: DeserializeOwned, A: Serialize>(
        &mut self,
        calls: &[(&str, A)],
    ) -> Result<Vec<Result<T, Error>>, Error> {
        let mut args = Vec::with_capacity(calls.len());
        for (func, a) in calls {
            args.push(convert::to_args(func, a)?);
        }
        let untyped: Vec<(&str, &[Value])> = calls
            .iter()
            .zip(&args)
            .map(|((func, _), a)| (*func, &a[..]))
            .collect();
        let results = self.call_many(&untyped).await?;
        Ok(calls
            .iter()
            .zip(results)
            .map(|((func, _), result)| convert::from_result(func, result?))
            .collect())
    }

    /// [`call_many`](Self::call_many) with the arguments in at-core's form.
    async fn call_many_core(
        &mut self,
        calls: &[(&str, &[at_core::Value<'_>])],
    ) -> Result<Vec<Result<Value, Error>>, Error> {
        let start = Instant::now();
        let deadline = start + self.config.timeout;
        let mut order = Vec::with_capacity(calls.len());
        let mut flights: HashMap<u32, InFlight> = HashMap::with_capacity(calls.len());
        if let Some(auth) = self.auth.as_mut()
            && auth.needs_hello(self.next_seq, calls.len() + 1)
        {
            if u64::from(self.next_seq) + calls.len() as u64 + 1 > u64::from(u32::MAX) {
                self.next_seq = 1;
            }
            self.hello(deadline).await?;
        }
        for (func, args) in calls {
            let seq = self.take_seq();
            let frame = match self.auth.as_mut() {
                Some(auth) => auth.seal(seq, &encode_body(func, args)?)?,
                None => encode_request(seq, func, args, self.config.max_frame)?,
            };
            let timeout = self.jittered(self.config.initial_timeout);
            self.socket.send(&frame).await?;
            self.stats.sent += 1;
            flights.insert(
                seq,
                InFlight {
                    frame,
                    retries_left: self.config.retries,
                    timeout,
                    resend_at: Instant::now() + timeout,
                    result: None,
                },
            );
            order.push(seq);
        }
        let mut open = flights.len();
        while open > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Retransmit what is due.
            for (seq, flight) in flights.iter_mut().filter(|(_, f)| f.result.is_none()) {
                if flight.resend_at <= now && flight.retries_left > 0 {
                    debug!(
                        "udp seq {seq}: no reply after {:?}, retransmitting",
                        flight.timeout
                    );
                    self.socket.send(&flight.frame).await?;
                    self.stats.retransmitted += 1;
                    flight.retries_left -= 1;
                    flight.timeout = (flight.timeout * 2).min(self.config.max_backoff);
                    flight.resend_at = now + flight.timeout;
                }
            }
            let wake = flights
                .values()
                .filter(|f| f.result.is_none() && f.retries_left > 0)
                .map(|f| f.resend_at)
                .min()
                .unwrap_or(deadline)
                .min(deadline);
            let received =
                match tokio::time::timeout_at(wake.into(), self.socket.recv(&mut self.recv_buf))
                    .await
                {
                    Err(_) => continue, // a retransmission or the deadline is due
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        // ICMP port unreachable for an earlier datagram: the
                        // server may be restarting; retransmission decides.
                        debug!("udp: {e}");
                        continue;
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Ok(Ok(n)) => n,
                };
            let frame = match Frame::parse(&self.recv_buf[..received], self.config.max_frame) {
                Ok(frame) if frame.kind.is_reply() => frame,
                Ok(_) => {
                    self.ignore("a request frame");
                    continue;
                }
                Err(e) => {
                    self.ignore(&format!("bad frame: {e}"));
                    continue;
                }
            };
            let Some(flight) = flights.get_mut(&frame.seq()).filter(|f| f.result.is_none()) else {
                self.ignore(&format!("reply with seq {} not awaited", frame.seq()));
                continue;
            };
            let result = match self.auth.as_mut().map(|auth| auth.open(&frame)) {
                None => reply_to_result(&frame),
                Some(Opened::Verified(result) | Opened::Unauthorized(result)) => result,
                Some(Opened::Transport(e)) => Err(e),
                Some(Opened::Damaged(e)) => {
                    debug!("udp seq {}: {e}; retransmitting", frame.seq());
                    flight.resend_at = Instant::now();
                    self.stats.ignored += 1;
                    continue;
                }
                Some(Opened::Forged(e)) => {
                    self.stats.ignored += 1;
                    debug!("udp: ignoring a reply: {e}");
                    continue;
                }
            };
            // The server saw our request corrupted in transit: as good as
            // lost, so retransmit now rather than report it.
            if let Err(e @ Error::Remote { .. }) = &result
                && matches!(
                    e.code(),
                    Some(at_core::ErrorCode::ChecksumMismatch | at_core::ErrorCode::BadFrame)
                )
            {
                debug!(
                    "udp seq {}: the server saw it corrupted ({e}); retransmitting",
                    frame.seq()
                );
                flight.resend_at = Instant::now();
                self.stats.ignored += 1;
                continue;
            }
            flight.result = Some(result);
            open -= 1;
        }
        let waited = start.elapsed();
        Ok(order
            .into_iter()
            .map(|seq| {
                flights
                    .remove(&seq)
                    .and_then(|f| f.result)
                    .unwrap_or(Err(Error::Timeout(waited)))
            })
            .collect())
    }

    /// The handshake, retransmitted like a call until a reply with a
    /// valid proof comes (others count as not received) or `deadline`.
    async fn hello(&mut self, deadline: Instant) -> Result<(), Error> {
        let Some(auth) = self.auth.as_ref() else {
            return Ok(());
        };
        let hello = auth.hello();
        let seq = self.take_seq();
        let mut frame = vec![0u8; at_core::HEADER_LEN + hello.body.len()];
        let n = at_core::encode_frame(at_core::Kind::Request, seq, &hello.body, &mut frame)
            .map_err(|_| ProtocolError::Encode(at_core::EncodeError::BufferTooSmall))?;
        frame.truncate(n);
        let mut timeout = self.jittered(self.config.initial_timeout);
        let mut retries = self.config.retries;
        self.socket.send(&frame).await?;
        self.stats.sent += 1;
        let mut resend_at = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(self.config.timeout));
            }
            if now >= resend_at && retries > 0 {
                self.socket.send(&frame).await?;
                self.stats.retransmitted += 1;
                retries -= 1;
                timeout = (timeout * 2).min(self.config.max_backoff);
                resend_at = now + timeout;
            }
            let wake = if retries > 0 {
                resend_at.min(deadline)
            } else {
                deadline
            };
            let received =
                match tokio::time::timeout_at(wake.into(), self.socket.recv(&mut self.recv_buf))
                    .await
                {
                    Err(_) => continue,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Ok(Err(e)) => return Err(e.into()),
                    Ok(Ok(n)) => n,
                };
            let Ok(reply) = Frame::parse(&self.recv_buf[..received], self.config.max_frame) else {
                continue;
            };
            if reply.seq() != seq || !reply.kind.is_reply() {
                continue;
            }
            let Some(auth) = self.auth.as_mut() else {
                return Ok(());
            };
            match auth.accept_hello(&hello, &reply) {
                Ok(()) => return Ok(()),
                Err(Some(e)) => return Err(e),
                // A reply without a valid proof counts as not received.
                Err(None) => self.stats.ignored += 1,
            }
        }
    }

    fn ignore(&mut self, what: &str) {
        debug!("udp: ignoring {what}");
        self.stats.ignored += 1;
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        seq
    }

    /// `base` times a random factor in [1, 1.5).
    fn jittered(&mut self, base: Duration) -> Duration {
        // xorshift64: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 + 0.5 * unit)
    }
}

impl crate::client::Caller for UdpClient {
    fn call_as<T: DeserializeOwned, A: Serialize + Send>(
        &mut self,
        func: &str,
        args: A,
    ) -> impl std::future::Future<Output = Result<T, Error>> + Send {
        UdpClient::call_as(self, func, args)
    }
}
