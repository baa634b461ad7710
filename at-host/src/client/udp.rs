//! The UDP client, [`UdpClient`], with its [`UdpConfig`] and [`UdpStats`]:
//! one request per datagram, retransmitted under the same seq with a
//! jittered, doubling timeout until answered or out of time. The schedule
//! and its defaults are explained in the public [`udp`](crate::udp) module
//! docs.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use at_core::Frame;
use log::debug;
use tokio::net::{ToSocketAddrs, UdpSocket};

use super::link::Link;
use tokio::sync::{Notify, RwLock, Semaphore};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::SeqMap;
use super::auth::{ClientAuth, Hello, MAX_OUTSTANDING, Opened};
use super::subscribe::{Slot, SubscribeOptions, Subscription, Topics};
use crate::shared::convert;
use crate::shared::error::{Error, ProtocolError};
use crate::shared::keys::AuthKey;
use crate::shared::value::{Arg, Value};
use crate::shared::wire::{
    MAX_DATAGRAM, default_deadline, encode_body, encode_body_with_deadline, encode_notify,
    encode_request, plain_frame, reply_to_result,
};

/// Timing of a UDP client; see the [module docs](crate::udp).
#[derive(Clone, Debug)]
pub struct UdpConfig {
    /// Bound on the whole call, retransmissions included. Default 5 s.
    pub timeout: Duration,
    /// Whether [`UdpClient::call`] sends `timeout` as `deadline_ms` (less a
    /// tenth, at most 500 ms, for the way back; contract 10.4), so a server
    /// does not start a call its caller gave up on. Default on.
    pub deadlines: bool,
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
            deadlines: true,
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
/// Every call takes `&self`: calls from several tasks share the socket,
/// each waiting for its own replies (matched by seq, whichever call's task
/// happens to read them) on its own retransmission schedule.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use at_host::{UdpClient, UdpConfig};
/// # let server = at_host::Server::builder().calculator().udp("127.0.0.1:0".parse()?).start().await?;
/// # let port = server.udp_addr().unwrap().port();
/// let client = UdpClient::connect(("127.0.0.1", port), UdpConfig::default()).await?;
/// let sum: i64 = client.call_as("add", (10, 20)).await?;
/// assert_eq!(sum, 30);
/// // Two calls at once on the one socket.
/// let (a, b) = tokio::join!(
///     client.call_as::<i64>("mul", (6, 7)),
///     client.call_as::<f64>("div", (10, 4)),
/// );
/// assert_eq!((a?, b?), (42, 2.5));
/// // Untyped, for names and arguments known only at run time.
/// let sum = client.call("add", &[at_host::Value::Int(10), at_host::Value::Int(20)]).await?;
/// assert_eq!(sum.to_string(), "30");
/// # server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct UdpClient {
    link: Link,
    config: UdpConfig,
    /// The receive buffer: whoever holds it reads datagrams for every call.
    reader: tokio::sync::Mutex<Box<[u8]>>,
    state: Mutex<State>,
    /// With a key: calls hold it shared, a hello exclusively, so a new
    /// session starts only with no call of the old one out.
    session: RwLock<()>,
    /// With a key: fewer than 64 sealed calls outstanding (contract
    /// section 9).
    outstanding: Semaphore,
    /// The topics subscribed to: where events go.
    topics: Topics,
    /// A call whose future is dropped before its reply sends
    /// `rpc.cancel` (see [`UdpClient::cancel_on_drop`]).
    cancel_on_drop: std::sync::atomic::AtomicBool,
}

/// What the calls share, locked only between awaits.
struct State {
    next_seq: u32,
    rng: u64,
    stats: UdpStats,
    /// With a key: the session.
    auth: Option<ClientAuth>,
    /// Requests awaiting a reply, by seq: where the reply goes.
    waiting: SeqMap<Waiter>,
}

/// Where a reply goes: to the call that sent the request.
enum Waiter {
    Call(Arc<Mailbox>),
    /// A hello: its reply is checked (the proof) here.
    Hello(Hello, Arc<Mailbox>),
}

/// Where the datagrams for one call's requests are left for it, whoever
/// read them.
#[derive(Default)]
struct Mailbox {
    items: Mutex<Vec<(u32, Got)>>,
    /// Keeps a wake-up for a call not waiting yet (`notify_one`).
    posted: Notify,
}

impl Mailbox {
    fn post(&self, seq: u32, got: Got) {
        self.items().push((seq, got));
        self.posted.notify_one();
    }

    fn take(&self) -> Option<(u32, Got)> {
        let mut items = self.items();
        if items.is_empty() {
            None
        } else {
            Some(items.remove(0))
        }
    }

    fn is_empty(&self) -> bool {
        self.items().is_empty()
    }

    fn items(&self) -> MutexGuard<'_, Vec<(u32, Got)>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A datagram for one of a call's requests.
enum Got {
    /// Its answer.
    Reply(Result<Value, Error>),
    /// It arrived damaged: retransmit now.
    Resend,
}

/// What a request carries besides `func` and `args`.
#[derive(Clone, Copy)]
enum Extra {
    Nothing,
    /// `"deadline_ms"` (contract 10.4).
    Deadline(u32),
    /// An unknown member `"pad"` that makes the whole datagram this many
    /// bytes (contract 10.8 rule 1: a server sends an address at most 3
    /// times its subscribe's size).
    PadTo(usize),
}

/// The body of `func(args)` with a `"pad"` member of spaces making it
/// `size` bytes (when it is shorter); servers ignore unknown members.
fn padded_body(func: &str, args: &[at_core::Value<'_>], size: usize) -> Result<Vec<u8>, Error> {
    const MEMBER: &str = ", \"pad\": \"\"}";
    let mut body = encode_body(func, args)?;
    if body.last() == Some(&b'}') && body.len() - 1 + MEMBER.len() <= size {
        body.pop();
        let spaces = size - (body.len() + MEMBER.len());
        body.extend_from_slice(b", \"pad\": \"");
        body.resize(body.len() + spaces, b' ');
        body.extend_from_slice(b"\"}");
    }
    Ok(body)
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

/// A call's requests in [`State::waiting`], taken out when the call ends
/// (or is dropped), so late replies are ignored and nothing accumulates.
/// Dropped before the call ended (its future dropped), and with cancel on
/// drop on, it sends `rpc.cancel` for each request still unanswered
/// (contract 10.4).
struct Registered<'c> {
    client: &'c UdpClient,
    seqs: Vec<u32>,
    /// Whether the call still waits (cleared when it ends).
    waiting: bool,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut unanswered = Vec::new();
        let mut state = self.client.state();
        for seq in &self.seqs {
            if state.waiting.remove(seq).is_some() {
                unanswered.push(*seq);
            }
        }
        drop(state);
        let cancel = self.waiting
            && self
                .client
                .cancel_on_drop
                .load(std::sync::atomic::Ordering::Relaxed);
        if cancel {
            for seq in unanswered {
                let seq = at_core::Value::Int(i64::from(seq));
                self.client.notify_now("rpc.cancel", &[seq]);
            }
        }
    }
}

impl UdpClient {
    /// A client bound to an ephemeral local port, sending to `server`: an
    /// address, or anything that resolves to one (`"localhost:16724"`,
    /// `("192.168.1.20", 16724)`). UDP has no handshake to tell which of
    /// several addresses answers, so the first one resolved is used (as
    /// `std::net::UdpSocket::connect` does); pass an IP address to choose.
    pub async fn connect(
        server: impl ToSocketAddrs,
        config: UdpConfig,
    ) -> Result<UdpClient, Error> {
        let mut last = None;
        for addr in tokio::net::lookup_host(server).await? {
            match UdpClient::connect_to(addr).await {
                Ok(socket) => return Ok(UdpClient::with_link(Link::Udp(socket), config)),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the address resolved to nothing",
                )
            })
            .into())
    }

    async fn connect_to(server: SocketAddr) -> std::io::Result<UdpSocket> {
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        Ok(socket)
    }

    /// A client sending through `link`.
    pub(crate) fn with_link(link: Link, config: UdpConfig) -> UdpClient {
        let rng = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1;
        let auth = config.key.clone().map(ClientAuth::new);
        // A name outlives a restart (contract 11.1 rule 3): start at a
        // random seq, so a new process is not answered from the cache of
        // the last one's. A UDP client's fresh port needs none.
        let first_seq = match &link {
            Link::Udp(_) => 1,
            Link::Mqtt(_) => random_seq(),
        };
        UdpClient {
            link,
            reader: tokio::sync::Mutex::new(vec![0u8; MAX_DATAGRAM + 1].into_boxed_slice()),
            config,
            state: Mutex::new(State {
                next_seq: first_seq,
                rng,
                stats: UdpStats::default(),
                auth,
                waiting: SeqMap::default(),
            }),
            session: RwLock::new(()),
            outstanding: Semaphore::new(MAX_OUTSTANDING),
            topics: Topics::default(),
            cancel_on_drop: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Asks the server's `rpc.info` whether it serves `rpc.cancel`
    /// (`cancel` in its `ext`, contract 10.4) and, if it does, turns on
    /// cancel on drop: from then on, a call whose future is dropped before
    /// its reply came sends `rpc.cancel(seq)` as a NOTIFY (sealed, with a
    /// key; best effort, once) for each of its requests still unanswered,
    /// so the server stops the function if it can; later replies are
    /// ignored. Returns whether it is on. Off by default: NOTIFY frames go
    /// only to a server that lists the part (contract 10.1).
    pub async fn cancel_on_drop(&self) -> Result<bool, Error> {
        let info: serde_json::Value = self.call_as("rpc.info", ()).await?;
        let on = info["ext"]
            .as_array()
            .is_some_and(|ext| ext.iter().any(|part| part == "cancel"));
        self.cancel_on_drop
            .store(on, std::sync::atomic::Ordering::Relaxed);
        Ok(on)
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.link.local_addr()
    }

    /// Waits until what was sent has left (MQTT: written to the broker;
    /// UDP: at once), within the timeout.
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        match &self.link {
            Link::Udp(_) => Ok(()),
            Link::Mqtt(link) => link.flush(self.config.timeout).await,
        }
    }

    /// The config's bound on a whole call.
    pub(crate) fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Counters so far.
    pub fn stats(&self) -> UdpStats {
        self.state().stats
    }

    /// Calls `func(args)` and waits for its reply, retransmitting as needed:
    /// the untyped call (see [`Arg`]). The request carries the config's
    /// timeout as `deadline_ms` (less a tenth, at most 500 ms), the same
    /// bytes in every retransmission (contract 10.4; see
    /// [`UdpConfig::deadlines`]).
    pub async fn call<A: Arg>(&self, func: &str, args: &[A]) -> Result<Value, Error> {
        let args = A::to_core(args);
        let extra = match self.config.deadlines {
            true => {
                default_deadline(func, self.config.timeout).map_or(Extra::Nothing, Extra::Deadline)
            }
            false => Extra::Nothing,
        };
        let mut results = self.call_many_core(&[(func, &args)], extra).await?;
        results
            .pop()
            .unwrap_or(Err(Error::Protocol(ProtocolError::Closed)))
    }

    /// [`call`](Self::call) with `"deadline_ms": deadline_ms` in the
    /// request (contract section 10.4); every retransmission repeats the
    /// same bytes, D unchanged.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = at_host::Server::builder().calculator().udp("127.0.0.1:0".parse()?).start().await?;
    /// # let addr = server.udp_addr().unwrap();
    /// use at_host::{UdpClient, UdpConfig, Value};
    /// let client = UdpClient::connect(addr, UdpConfig::default()).await?;
    /// let sum = client.call_deadline("add", &[Value::Int(1), Value::Int(2)], 500).await?;
    /// assert_eq!(sum, Value::Int(3));
    /// # server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn call_deadline<A: Arg>(
        &self,
        func: &str,
        args: &[A],
        deadline_ms: u32,
    ) -> Result<Value, Error> {
        let args = A::to_core(args);
        let mut results = self
            .call_many_core(&[(func, &args)], Extra::Deadline(deadline_ms))
            .await?;
        results
            .pop()
            .unwrap_or(Err(Error::Protocol(ProtocolError::Closed)))
    }

    /// Calls `func` with typed arguments and converts the result, as
    /// [`Client::call_as`](crate::Client::call_as) does, retransmitting as
    /// needed.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        func: &str,
        args: impl Serialize,
    ) -> Result<T, Error> {
        let args = convert::to_args(func, &args)?;
        let value = self.call(func, &args).await?;
        convert::from_result(func, value)
    }

    /// Sends `func(args)` once as a notification (a NOTIFY datagram,
    /// contract section 10.2): the server runs it and answers nothing. Its
    /// seq comes from the request counter; it is never retransmitted and no
    /// state is kept for it. With a key it is sealed in the session (a
    /// hello first when one is due, within the config's `timeout`). `Ok`
    /// means sent, not run.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = at_host::Server::builder().calculator().udp("127.0.0.1:0".parse()?).start().await?;
    /// # let addr = server.udp_addr().unwrap();
    /// use at_host::{UdpClient, UdpConfig, Value};
    /// let client = UdpClient::connect(addr, UdpConfig::default()).await?;
    /// client.notify("add", &[Value::Int(1), Value::Int(2)]).await?;
    /// assert_eq!(client.stats().sent, 1);
    /// # server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn notify<A: Arg>(&self, func: &str, args: &[A]) -> Result<(), Error> {
        let args = A::to_core(args);
        let deadline = Instant::now() + self.config.timeout;
        let bounded = |_| Error::Timeout(self.config.timeout);
        let sealed = self.config.key.is_some();
        let (frame, _session) = loop {
            let shared = if sealed {
                let guard = tokio::time::timeout_at(deadline.into(), self.session.read())
                    .await
                    .map_err(bounded)?;
                Some(guard)
            } else {
                None
            };
            {
                let mut guard = self.state();
                let state = &mut *guard;
                let due = match state.auth.as_mut() {
                    Some(auth) => auth.needs_hello(state.next_seq, 1),
                    None => false,
                };
                if !due {
                    let seq = state.take_seq();
                    let frame = match state.auth.as_mut() {
                        Some(auth) => {
                            auth.seal_as(at_core::Kind::Notify, seq, &encode_body(func, &args)?)?
                        }
                        None => encode_notify(seq, func, &args, self.config.max_frame)?,
                    };
                    break (frame, shared);
                }
            }
            drop(shared);
            let _alone = tokio::time::timeout_at(deadline.into(), self.session.write())
                .await
                .map_err(bounded)?;
            self.hello(0, deadline).await?;
        };
        self.link.send(&frame).await?;
        self.state().stats.sent += 1;
        Ok(())
    }

    /// Sends several calls at once and waits for all their replies, each
    /// retransmitted on its own schedule; results come in the order of
    /// `calls`. The whole batch is bounded by the config's `timeout`; a call
    /// still unanswered then is [`Error::Timeout`]. With a key, a batch
    /// waits while 63 sealed calls are out (contract section 9: fewer than
    /// 64); a batch of more than 63 waits for all others to finish.
    pub async fn call_many<A: Arg>(
        &self,
        calls: &[(&str, &[A])],
    ) -> Result<Vec<Result<Value, Error>>, Error> {
        let args: Vec<_> = calls.iter().map(|(_, args)| A::to_core(args)).collect();
        let calls: Vec<(&str, &[at_core::Value<'_>])> = calls
            .iter()
            .zip(&args)
            .map(|((func, _), args)| (*func, &**args))
            .collect();
        self.call_many_core(&calls, Extra::Nothing).await
    }

    /// [`call_many`](Self::call_many) with typed arguments and results:
    /// every call returns a `T` (each converted as
    /// [`call_as`](Self::call_as) converts), in the order of `calls`.
    ///
    /// ```no_run
    /// # async fn example(client: &at_host::UdpClient) -> Result<(), at_host::Error> {
    /// let results = client.call_many_as::<f64, _>(&[("div", (10, 4)), ("mul", (6, 7))]).await?;
    /// assert_eq!(results[0].as_ref().ok(), Some(&2.5));
    /// # Ok(()) }
    /// ```
    pub async fn call_many_as<T: DeserializeOwned, A: Serialize>(
        &self,
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
        &self,
        calls: &[(&str, &[at_core::Value<'_>])],
        extra: Extra,
    ) -> Result<Vec<Result<Value, Error>>, Error> {
        let start = Instant::now();
        let deadline = start + self.config.timeout;
        let bounded = |_| Error::Timeout(self.config.timeout);
        let sealed = self.config.key.is_some();
        let _permits = if sealed {
            let n = calls.len().clamp(1, MAX_OUTSTANDING) as u32;
            let permits =
                tokio::time::timeout_at(deadline.into(), self.outstanding.acquire_many(n))
                    .await
                    .map_err(bounded)?;
            Some(permits.map_err(|_| Error::from(ProtocolError::Broken))?)
        } else {
            None
        };
        let mailbox = Arc::new(Mailbox::default());
        let mut registered = Registered {
            client: self,
            seqs: Vec::with_capacity(calls.len()),
            waiting: true,
        };
        let mut flights = SeqMap::with_capacity_and_hasher(calls.len(), Default::default());
        // Number, seal and register the requests (with a key: in a session
        // held shared; a hello first if one is due).
        let _session = loop {
            let shared = if sealed {
                let guard = tokio::time::timeout_at(deadline.into(), self.session.read())
                    .await
                    .map_err(bounded)?;
                Some(guard)
            } else {
                None
            };
            {
                let mut guard = self.state();
                let state = &mut *guard;
                let due = match state.auth.as_mut() {
                    Some(auth) => auth.needs_hello(state.next_seq, calls.len() + 1),
                    None => false,
                };
                if !due {
                    for (func, args) in calls {
                        let seq = state.take_seq();
                        // Built once: every retransmission repeats these
                        // bytes, `deadline_ms` unchanged (contract 10.4).
                        let frame = match (state.auth.as_mut(), extra) {
                            (Some(auth), Extra::Nothing) => {
                                auth.seal(seq, &encode_body(func, args)?)?
                            }
                            (Some(auth), Extra::Deadline(d)) => {
                                auth.seal(seq, &encode_body_with_deadline(func, args, Some(d))?)?
                            }
                            (Some(auth), Extra::PadTo(size)) => {
                                let room = size.saturating_sub(
                                    at_core::HEADER_LEN + at_core::auth::TRAILER_LEN,
                                );
                                auth.seal(seq, &padded_body(func, args, room)?)?
                            }
                            (None, Extra::Nothing) => {
                                encode_request(seq, func, args, self.config.max_frame)?
                            }
                            (None, Extra::Deadline(d)) => plain_frame(
                                at_core::Kind::Request,
                                seq,
                                &encode_body_with_deadline(func, args, Some(d))?,
                            )?,
                            (None, Extra::PadTo(size)) => plain_frame(
                                at_core::Kind::Request,
                                seq,
                                &padded_body(func, args, size.saturating_sub(at_core::HEADER_LEN))?,
                            )?,
                        };
                        let timeout = state.jittered(self.config.initial_timeout);
                        flights.insert(seq, InFlight::new(frame, timeout, &self.config));
                        state
                            .waiting
                            .insert(seq, Waiter::Call(Arc::clone(&mailbox)));
                        registered.seqs.push(seq);
                    }
                    break shared;
                }
            }
            drop(shared);
            let _alone = tokio::time::timeout_at(deadline.into(), self.session.write())
                .await
                .map_err(bounded)?;
            self.hello(calls.len(), deadline).await?;
        };
        for seq in &registered.seqs {
            if let Some(flight) = flights.get(seq) {
                self.link.check(&flight.frame)?;
            }
        }
        for seq in &registered.seqs {
            if let Some(flight) = flights.get(seq) {
                self.link.send(&flight.frame).await?;
                self.state().stats.sent += 1;
            }
        }
        let exchanged = self.exchange(&mut flights, &mailbox, deadline).await;
        registered.waiting = false;
        exchanged?;
        let order = registered.seqs.clone();
        drop(registered);
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
    /// Retransmits `flights` on their schedules and takes their replies
    /// from `mailbox` (reading the socket for every call while nobody else
    /// does) until all are answered or `deadline`.
    async fn exchange(
        &self,
        flights: &mut SeqMap<InFlight>,
        mailbox: &Mailbox,
        deadline: Instant,
    ) -> Result<(), Error> {
        let mut open = flights.values().filter(|f| f.result.is_none()).count();
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
                    self.link.send(&flight.frame).await?;
                    self.state().stats.retransmitted += 1;
                    flight.retries_left -= 1;
                    flight.timeout = (flight.timeout * 2).min(self.config.max_backoff);
                    flight.resend_at = now + flight.timeout;
                }
            }
            let Some((seq, got)) = mailbox.take() else {
                let wake = flights
                    .values()
                    .filter(|f| f.result.is_none() && f.retries_left > 0)
                    .map(|f| f.resend_at)
                    .min()
                    .unwrap_or(deadline)
                    .min(deadline);
                tokio::select! {
                    biased;
                    () = mailbox.posted.notified() => {}
                    mut buf = self.reader.lock() => self.read_until(&mut buf, mailbox, wake).await?,
                    () = tokio::time::sleep_until(wake.into()) => {}
                }
                continue;
            };
            let Some(flight) = flights.get_mut(&seq).filter(|f| f.result.is_none()) else {
                self.ignore(&format!("reply with seq {seq} not awaited"));
                continue;
            };
            match got {
                Got::Resend => flight.resend_at = Instant::now(),
                Got::Reply(result) => {
                    flight.result = Some(result);
                    open -= 1;
                    // Duplicates from now on are not awaited.
                    self.state().waiting.remove(&seq);
                }
            }
        }
        Ok(())
    }

    /// Reads datagrams, handing each to the call it is for, until one is
    /// for `mailbox`'s call or `wake`.
    async fn read_until(
        &self,
        buf: &mut [u8],
        mailbox: &Mailbox,
        wake: Instant,
    ) -> Result<(), Error> {
        while mailbox.is_empty() {
            match tokio::time::timeout_at(wake.into(), self.link.recv(buf)).await {
                Err(_) => break, // a retransmission or the deadline is due
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // ICMP port unreachable for an earlier datagram: the
                    // server may be restarting; retransmission decides.
                    debug!("udp: {e}");
                    break;
                }
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(n)) => self.dispatch(&buf[..n]),
            }
        }
        Ok(())
    }

    /// Hands one datagram to the call waiting for it, or counts it ignored.
    fn dispatch(&self, datagram: &[u8]) {
        let frame = match Frame::parse(datagram, self.config.max_frame) {
            Ok(frame) if frame.kind.is_reply() => frame,
            Ok(frame) if frame.kind == at_core::Kind::Notify => {
                // An event (to its subscription), or dropped.
                let mut state = self.state();
                if !self.topics.file(&frame, state.auth.as_mut()) {
                    state.stats.ignored += 1;
                }
                return;
            }
            Ok(_) => return self.ignore("a request frame"),
            Err(e) => return self.ignore(&format!("bad frame: {e}")),
        };
        let seq = frame.seq();
        let mut guard = self.state();
        let state = &mut *guard;
        let (got, mailbox) = match state.waiting.get(&seq) {
            None => {
                drop(guard);
                return self.ignore(&format!("reply with seq {seq} not awaited"));
            }
            Some(Waiter::Hello(hello, mailbox)) => {
                let accepted = match state.auth.as_mut() {
                    Some(auth) => auth.accept_hello(hello, &frame),
                    None => Err(None),
                };
                match accepted {
                    Ok(()) => (Got::Reply(Ok(Value::Null)), mailbox),
                    Err(Some(e)) => (Got::Reply(Err(e)), mailbox),
                    // Through a broker the reply topic is the device's
                    // alone (its ACL): a proof that does not verify is a
                    // wrong key, as over TCP.
                    Err(None) if matches!(self.link, Link::Mqtt(_)) => {
                        (Got::Reply(Err(ProtocolError::BadHello.into())), mailbox)
                    }
                    // A reply without a valid proof counts as not received.
                    Err(None) => {
                        state.stats.ignored += 1;
                        debug!("udp: ignoring a hello reply without a valid proof");
                        return;
                    }
                }
            }
            Some(Waiter::Call(mailbox)) => {
                let result = match state.auth.as_mut().map(|auth| auth.open(&frame)) {
                    None => reply_to_result(&frame),
                    Some(Opened::Verified(result) | Opened::Unauthorized(result)) => result,
                    Some(Opened::Transport(e)) => Err(e),
                    Some(Opened::Damaged(e)) => {
                        debug!("udp seq {seq}: {e}; retransmitting");
                        state.stats.ignored += 1;
                        mailbox.post(seq, Got::Resend);
                        return;
                    }
                    Some(Opened::Forged(e)) => {
                        state.stats.ignored += 1;
                        debug!("udp: ignoring a reply: {e}");
                        return;
                    }
                };
                (Got::Reply(result), mailbox)
            }
        };
        // The server saw our request corrupted in transit: as good as
        // lost, so retransmit now rather than report it.
        let got = match got {
            Got::Reply(Err(e @ Error::Remote { .. }))
                if matches!(
                    e.code(),
                    Some(at_core::ErrorCode::ChecksumMismatch | at_core::ErrorCode::BadFrame)
                ) =>
            {
                debug!("udp seq {seq}: the server saw it corrupted ({e}); retransmitting");
                state.stats.ignored += 1;
                Got::Resend
            }
            other => other,
        };
        mailbox.post(seq, got);
    }

    /// The handshake, retransmitted like a call until a reply with a valid
    /// proof comes (others count as not received) or `deadline`. The
    /// caller holds the session exclusively; `calls` are to follow.
    async fn hello(&self, calls: usize, deadline: Instant) -> Result<(), Error> {
        let mailbox = Arc::new(Mailbox::default());
        let mut flights = SeqMap::with_capacity_and_hasher(1, Default::default());
        let registered = {
            let mut guard = self.state();
            let state = &mut *guard;
            let Some(auth) = state.auth.as_mut() else {
                return Ok(());
            };
            // Checked again: a hello that ran while this call waited may
            // have made this one needless.
            if !auth.needs_hello(state.next_seq, calls + 1) {
                return Ok(());
            }
            if u64::from(state.next_seq) + calls as u64 + 1 > u64::from(u32::MAX) {
                state.next_seq = 1;
            }
            let hello = auth.hello();
            let seq = state.take_seq();
            let mut frame = vec![0u8; at_core::HEADER_LEN + hello.body.len()];
            let n = at_core::encode_frame(at_core::Kind::Request, seq, &hello.body, &mut frame)
                .map_err(|_| ProtocolError::Encode(at_core::EncodeError::BufferTooSmall))?;
            frame.truncate(n);
            let timeout = state.jittered(self.config.initial_timeout);
            flights.insert(seq, InFlight::new(frame, timeout, &self.config));
            state
                .waiting
                .insert(seq, Waiter::Hello(hello, Arc::clone(&mailbox)));
            // A hello is never cancelled.
            Registered {
                client: self,
                seqs: vec![seq],
                waiting: false,
            }
        };
        for flight in flights.values() {
            self.link.send(&flight.frame).await?;
            self.state().stats.sent += 1;
        }
        self.exchange(&mut flights, &mailbox, deadline).await?;
        drop(registered);
        match flights.into_values().next().and_then(|f| f.result) {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e),
            None => Err(Error::Timeout(self.config.timeout)),
        }
    }

    /// The topics this client holds.
    pub(crate) fn topics(&self) -> &Topics {
        &self.topics
    }

    /// [`call`](Self::call) with the request padded to a datagram of
    /// `size` bytes (a subscribe, for its event budget).
    pub(crate) async fn call_padded(
        &self,
        func: &str,
        args: &[Value],
        size: usize,
    ) -> Result<Value, Error> {
        let args = Value::to_core(args);
        let mut results = self
            .call_many_core(&[(func, &args)], Extra::PadTo(size))
            .await?;
        results
            .pop()
            .unwrap_or(Err(Error::Protocol(ProtocolError::Closed)))
    }

    /// With a key: which session is live, and whether it is refused.
    pub(crate) fn session_mark(&self) -> Option<(u64, bool)> {
        self.state().auth.as_ref().map(ClientAuth::session_mark)
    }

    /// Waits until `slot` has an event or `wake`: reads datagrams (handing
    /// replies to their calls and events to their subscriptions) while
    /// nobody else does.
    pub(crate) async fn pump_events(
        &self,
        slot: &Slot,
        wake: tokio::time::Instant,
    ) -> Result<(), Error> {
        let posted = slot.posted.notified();
        tokio::pin!(posted);
        posted.as_mut().enable();
        if !slot.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            () = &mut posted => {}
            () = tokio::time::sleep_until(wake) => {}
            mut buf = self.reader.lock() => {
                while slot.is_empty() {
                    match tokio::time::timeout_at(wake, self.link.recv(&mut buf)).await {
                        Err(_) => break,
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            // ICMP port unreachable: the next renewal
                            // finds out whether the server is gone.
                            debug!("udp: {e}");
                            break;
                        }
                        Ok(Err(e)) => return Err(e.into()),
                        Ok(Ok(n)) => self.dispatch(&buf[..n]),
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the notification `func(args)` once, without waiting (from a
    /// `Drop`); with a key only in a live session. Best effort: a socket
    /// that cannot take it now drops it.
    pub(crate) fn notify_now(&self, func: &str, args: &[at_core::Value<'_>]) {
        let frame = {
            let mut guard = self.state();
            let state = &mut *guard;
            let live = match state.auth.as_mut() {
                Some(auth) => auth.is_live(state.next_seq),
                None => true,
            };
            if !live {
                return;
            }
            let seq = state.take_seq();
            match state.auth.as_mut() {
                Some(auth) => encode_body(func, args)
                    .and_then(|body| auth.seal_as(at_core::Kind::Notify, seq, &body)),
                None => encode_notify(seq, func, args, self.config.max_frame),
            }
        };
        if let Ok(frame) = frame
            && self.link.try_send(&frame).is_ok()
        {
            self.state().stats.sent += 1;
        }
    }

    /// Subscribes to `topic` with the default options: see
    /// [`Subscription`]. On plain UDP the server grants a credit of events
    /// as well as a lease, and sends at most 3 times the subscribe's size
    /// in events until the next (contract 10.8 rule 1): the subscribe is
    /// padded to a 512-byte datagram (an unknown member `"pad"`), and the
    /// subscription renews when half of any of the three is spent. The
    /// subscribe and its renewals are calls (retransmitted); events are
    /// never acknowledged.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), at_host::Error> {
    /// use at_host::{UdpClient, UdpConfig, Update};
    /// let client = UdpClient::connect("192.168.1.20:16724", UdpConfig::default()).await?;
    /// let mut temp = client.subscribe::<f64>("temp").await?;
    /// while let Update::Event { n, value } = temp.next().await? {
    ///     println!("{n} {value}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe<T: DeserializeOwned>(
        &self,
        topic: &str,
    ) -> Result<Subscription<'_, T>, Error> {
        self.subscribe_with(topic, SubscribeOptions::default())
            .await
    }

    /// [`subscribe`](Self::subscribe) with a lease and an interval of one's
    /// own.
    ///
    /// ```no_run
    /// # async fn f(client: &at_host::UdpClient) -> Result<(), at_host::Error> {
    /// use std::time::Duration;
    /// let options = at_host::SubscribeOptions { lease: Duration::from_secs(20), ..Default::default() };
    /// let temp = client.subscribe_with::<f64>("temp", options).await?;
    /// # drop(temp);
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_with<T: DeserializeOwned>(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription<'_, T>, Error> {
        Subscription::start_udp(self, topic, options).await
    }

    fn ignore(&self, what: &str) {
        debug!("udp: ignoring {what}");
        self.state().stats.ignored += 1;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding it cannot leave State inconsistent in a
        // way that matters more than the panic itself.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A random seq in 1 to 2^31 (room below the wrap for a long run).
fn random_seq() -> u32 {
    let mut bytes = [0u8; 4];
    let n = match getrandom::fill(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish() as u32,
    };
    (n >> 1).max(1)
}

impl InFlight {
    fn new(frame: Vec<u8>, timeout: Duration, config: &UdpConfig) -> InFlight {
        InFlight {
            frame,
            retries_left: config.retries,
            timeout,
            resend_at: Instant::now() + timeout,
            result: None,
        }
    }
}

impl State {
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
    fn call<A: Arg>(
        &self,
        func: &str,
        args: &[A],
    ) -> impl std::future::Future<Output = Result<Value, Error>> + Send {
        UdpClient::call(self, func, args)
    }

    fn call_as<T: DeserializeOwned>(
        &self,
        func: &str,
        args: impl Serialize + Send,
    ) -> impl std::future::Future<Output = Result<T, Error>> + Send {
        UdpClient::call_as(self, func, args)
    }
}
