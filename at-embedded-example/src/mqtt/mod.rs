//! AT over MQTT 5 through a broker (contract section 11), the device side:
//! the board connects out to a broker and serves the calls published to
//! `<prefix>/<name>/req/<caller>`, answering each on
//! `<prefix>/<name>/rep/<caller>`.
//!
//! - **One frame per message**, as a datagram: a message whose size is not
//!   16 + `length` is dropped; a bad CRC is answered `checksum_mismatch`, a
//!   bad magic `bad_frame`, a body over `max_body` `frame_too_large`
//!   (except a NOTIFY, never answered). The broker never delivers a message
//!   larger than the receive buffer: the CONNECT announces its size as the
//!   Maximum Packet Size.
//! - **At most once**, under the UDP rules: the last `CACHE` plain replies
//!   are remembered by (caller, seq), the caller being the request topic's
//!   last level, so a retransmission or a broker's redelivery gets the
//!   remembered reply and the function runs once. Plain NOTIFY calls run
//!   at most once too ([`NOTIFY_MEMORY`] of them remembered by caller, seq,
//!   length and CRC). Sealed frames (section 9) go through the
//!   [`Responder`] (a [`Guard`](at_core::auth::Guard) remembers its sealed
//!   replies), so with a key the broker only ever carries sealed frames.
//! - **Replies** go to `<prefix>/<name>/rep/<caller>` only, QoS 0, with the
//!   request's Correlation Data (at most 8 bytes) copied.
//! - **Status**: the CONNECT carries a will (`<prefix>/<name>/status`,
//!   retained, QoS 1: a NOTIFY of seq 0 `{"topic": "rpc.status", "n": 0,
//!   "value": null}`); once connected the server subscribes to
//!   `<prefix>/<name>/req/+` and publishes the same frame, retained, QoS 1,
//!   with `value` its `rpc.info` result. [`MqttServer::announce_offline`]
//!   publishes the null one before a planned stop.
//! - **No stale calls**: Clean Start 1 and Session Expiry Interval 0 on
//!   every connection (see [`link`]).
//! - **Reconnects** after a failure or a close, waiting [`FIRST_BACKOFF_MS`]
//!   and doubling up to [`MAX_BACKOFF_MS`] (reset by a CONNACK); a
//!   connection not up (TCP and CONNACK) within [`CONNECT_MS`] is dropped.
//!
//! The server is generic over any [`TcpClientStack`], borrowed through a
//! `RefCell` for one call at a time so that the board's TCP and UDP
//! servers share the stack; minimq runs in the caller's [`MqttMemory`]
//! (no allocation).
//!
//! ```no_run
//! # fn demo<S: embedded_nal::TcpClientStack>(stack: &core::cell::RefCell<S>)
//! # where S::Error: core::fmt::Debug {
//! use at_core::auth::Open;
//! use at_core::calculator::CALCULATOR;
//! use at_embedded_example::mqtt::{MqttMemory, MqttServer, memory_size};
//!
//! // 1 KiB MQTT packets in, 256-byte AT replies, 4 remembered replies.
//! let mut memory = MqttMemory::<{ memory_size(1024, 256) }>::new();
//! let broker = "10.0.2.2:1883".parse().unwrap();
//! let mut server =
//!     MqttServer::<S, 1024, 256, 4>::new(stack, &mut memory, broker, "board-1").unwrap();
//! # let now_ms = || 0;
//! loop {
//!     server.poll(&CALCULATOR, &mut Open, now_ms());
//! }
//! # }
//! ```

pub mod link;
#[cfg(test)]
mod tests;

use core::cell::RefCell;
use core::fmt;
use core::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use at_core::auth::{Origin, Responder, Transport};
use at_core::body::Reply as ReplyBody;
use at_core::event::{Event, Payload};
use at_core::{
    Context, EncodeError, Frame, FrameError, Functions, HEADER_LEN, JsonStr, Kind,
    MIN_REPLY_BUFFER, Value,
};
use embedded_nal::TcpClientStack;
use minimq::broker::IpBroker;
use minimq::config::BufferConfig;
use minimq::mqtt_client::MqttClient;
use minimq::types::{Properties, TopicFilter};
use minimq::{ConfigBuilder, Minimq, Property, Publication, QoS, Will};

use crate::cache::ReplyCache;
use crate::logging::{log_debug, log_info, log_warn};
pub use link::{Link, LinkError, MsClock, Signals};

/// The topic prefix of contract section 11.
pub const PREFIX: &str = "at";
/// The first wait before connecting again, in ms.
pub const FIRST_BACKOFF_MS: u32 = 500;
/// The longest wait before connecting again, in ms.
pub const MAX_BACKOFF_MS: u32 = 30_000;
/// How long connecting (TCP and CONNACK) may take, in ms.
pub const CONNECT_MS: u64 = 10_000;
/// The MQTT keep-alive asked for, in seconds.
pub const KEEP_ALIVE_S: u16 = 30;
/// The most messages one poll reads.
pub const MESSAGES_PER_POLL: usize = 8;
/// How many plain notifications are remembered, so that a repeated one
/// runs at most once (contract 10.2, 10.8 rule 7).
pub const NOTIFY_MEMORY: usize = 8;
/// The longest name (an AT name, and a caller's).
pub const MAX_NAME: usize = 64;
/// The longest prefix.
pub const MAX_PREFIX: usize = 16;
/// The longest topic: `<prefix>/<name>/req/<caller>`.
pub const MAX_TOPIC: usize = MAX_PREFIX + 1 + MAX_NAME + 5 + MAX_NAME;
/// The longest user name, and the longest password, given to the broker.
pub const MAX_LOGIN: usize = 64;
/// The longest Correlation Data copied into a reply (contract 11.1 rule 11).
pub const MAX_CORRELATION: usize = 8;

/// What a PUBLISH of a request carries besides the frame, at most: fixed
/// header, topic, and the properties a caller sets (Payload Format
/// Indicator, Message Expiry Interval, Response Topic, Correlation Data),
/// with room for a subscription identifier.
pub const PUBLISH_OVERHEAD: usize =
    5 + (2 + MAX_TOPIC) + 4 + 2 + 5 + (3 + MAX_TOPIC) + (3 + MAX_CORRELATION) + 8;

/// The will's frame: `{"topic": "rpc.status", "n": 0, "value": null}`.
const OFFLINE_BODY: &[u8] = br#"{"topic": "rpc.status", "n": 0, "value": null}"#;
/// The longest will: topic, frame and lengths.
const WILL_LEN: usize = (2 + MAX_TOPIC) + (2 + HEADER_LEN + OFFLINE_BODY.len()) + 1;

/// The MQTT send buffer for replies of up to `tx` bytes.
const fn tx_packet(tx: usize) -> usize {
    PUBLISH_OVERHEAD + tx
}

/// The bytes of [`MqttMemory`] a server with `rx`-byte MQTT packets in and
/// `tx`-byte AT replies needs: the will, the receive and send buffers, and
/// room for the one QoS 1 status message awaiting its PUBACK.
pub const fn memory_size(rx: usize, tx: usize) -> usize {
    WILL_LEN + 2 * MAX_LOGIN + rx + 2 * tx_packet(tx)
}

/// A user name and password for the broker (Mosquitto's `password_file`;
/// with an ACL the user is the AT name). Sent in clear: the board has no
/// TLS, so use them on a network you trust, and the ACL to bind names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Login<'a> {
    /// The user name (at most [`MAX_LOGIN`] bytes).
    pub user: &'a str,
    /// The password (at most [`MAX_LOGIN`] bytes).
    pub password: &'a str,
}

/// Why a server could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttError {
    /// The name is not 1 to 64 of `A-Z a-z 0-9 - _ .`.
    BadName,
    /// The prefix is not 1 to 16 of `A-Z a-z 0-9 - _ .`.
    BadPrefix,
    /// The memory is too small for the buffers.
    Memory,
    /// A user name or password over [`MAX_LOGIN`] bytes.
    BadLogin,
}

impl fmt::Display for MqttError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MqttError::BadName => "a name is 1 to 64 of A-Z a-z 0-9 - _ .",
            MqttError::BadPrefix => "a topic prefix is 1 to 16 of A-Z a-z 0-9 - _ .",
            MqttError::Memory => "the MQTT memory is too small for its buffers",
            MqttError::BadLogin => "a user name or password is at most 64 bytes",
        })
    }
}

/// The memory minimq runs in (make it with [`memory_size`]), and the
/// signals between the server and its [`Link`].
pub struct MqttMemory<const BUF: usize> {
    buffer: [u8; BUF],
    signals: Signals,
}

impl<const BUF: usize> MqttMemory<BUF> {
    /// Zeroed memory.
    pub const fn new() -> Self {
        MqttMemory {
            buffer: [0; BUF],
            signals: Signals::new(),
        }
    }
}

impl<const BUF: usize> Default for MqttMemory<BUF> {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the connection to the broker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not connected: connects again at `retry_at` (ms).
    Waiting {
        /// When to connect again.
        retry_at: u64,
    },
    /// TCP and MQTT CONNECT under way since `since` (ms).
    Connecting {
        /// When it began.
        since: u64,
    },
    /// Connected (CONNACK received).
    Up {
        /// The subscription to the request topic was sent.
        subscribed: bool,
        /// The online status was published.
        announced: bool,
    },
}

/// A caller's name, as the cache and NOTIFY memory key it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Caller {
    len: u8,
    bytes: [u8; MAX_NAME],
}

impl Caller {
    fn new(name: &str) -> Option<Caller> {
        if !valid_name(name, MAX_NAME) {
            return None;
        }
        let mut bytes = [0; MAX_NAME];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(Caller {
            len: name.len() as u8,
            bytes,
        })
    }

    /// The address the caller stands for in at-core's [`Origin`] (which
    /// the guard checks a remembered sealed reply against): a 128-bit
    /// FNV-1a digest of the name as an IPv6 address.
    fn origin(&self) -> Origin {
        let name = &self.bytes[..usize::from(self.len)];
        let mut digest = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d_u128;
        for b in name {
            digest ^= u128::from(*b);
            digest = digest.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
        }
        let address = SocketAddrV6::new(Ipv6Addr::from(digest), 0, 0, 0);
        Origin::from(Transport::Datagram, SocketAddr::V6(address))
    }
}

/// 1 to `max` of `A-Z a-z 0-9 - _ .` (contract section 11).
fn valid_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `parts` joined into `buf`, as a topic.
fn join<'b>(buf: &'b mut [u8; MAX_TOPIC], parts: &[&str]) -> Option<&'b str> {
    let mut n = 0;
    for part in parts {
        let end = n + part.len();
        buf.get_mut(n..end)?.copy_from_slice(part.as_bytes());
        n = end;
    }
    core::str::from_utf8(&buf[..n]).ok()
}

type Client<'a, S> = MqttClient<'a, Link<'a, S>, MsClock<'a>, IpBroker>;

/// The server (see the module docs): MQTT packets of up to `RX` bytes in,
/// AT replies of up to `TX` bytes (at least [`MIN_REPLY_BUFFER`]), the last
/// `CACHE` plain replies remembered.
pub struct MqttServer<'a, S, const RX: usize, const TX: usize, const CACHE: usize>
where
    S: TcpClientStack,
{
    mqtt: Minimq<'a, Link<'a, S>, MsClock<'a>, IpBroker>,
    signals: &'a Signals,
    state: State,
    backoff: u32,
    /// Connections that reached CONNACK.
    connections: u32,
    served: Served<'a, TX, CACHE>,
}

/// What answering a message needs, apart from the MQTT client.
struct Served<'a, const TX: usize, const CACHE: usize> {
    prefix: &'a str,
    name: &'a str,
    max_body: u32,
    cache: ReplyCache<TX, CACHE, Caller>,
    /// Error replies to unreadable frames (never cached).
    err: [u8; MIN_REPLY_BUFFER],
    notified: [Option<(Caller, u32, u32, u32)>; NOTIFY_MEMORY],
    next_notified: usize,
}

impl<'a, S, const RX: usize, const TX: usize, const CACHE: usize> MqttServer<'a, S, RX, TX, CACHE>
where
    S: TcpClientStack,
    S::Error: fmt::Debug,
{
    const CHECK: () = {
        assert!(
            RX > PUBLISH_OVERHEAD + HEADER_LEN,
            "RX must hold a request PUBLISH"
        );
        assert!(
            TX >= MIN_REPLY_BUFFER,
            "TX must be at least MIN_REPLY_BUFFER"
        );
        assert!(CACHE > 0, "CACHE must be at least 1");
    };

    /// A server named `name` (its MQTT client id and `rpc.info` name) for
    /// the broker at `broker`, with the prefix [`PREFIX`]; connects at the
    /// first poll.
    pub fn new<const BUF: usize>(
        stack: &'a RefCell<S>,
        memory: &'a mut MqttMemory<BUF>,
        broker: SocketAddr,
        name: &'a str,
    ) -> Result<Self, MqttError> {
        Self::with_prefix(stack, memory, broker, name, PREFIX)
    }

    /// [`new`](Self::new) with another topic prefix (one per fleet).
    pub fn with_prefix<const BUF: usize>(
        stack: &'a RefCell<S>,
        memory: &'a mut MqttMemory<BUF>,
        broker: SocketAddr,
        name: &'a str,
        prefix: &'a str,
    ) -> Result<Self, MqttError> {
        Self::with_login(stack, memory, broker, name, prefix, None)
    }

    /// [`with_prefix`](Self::with_prefix), logging in to the broker with
    /// `login` when given.
    pub fn with_login<const BUF: usize>(
        stack: &'a RefCell<S>,
        memory: &'a mut MqttMemory<BUF>,
        broker: SocketAddr,
        name: &'a str,
        prefix: &'a str,
        login: Option<Login<'_>>,
    ) -> Result<Self, MqttError> {
        let () = Self::CHECK;
        if login.is_some_and(|l| l.user.len() > MAX_LOGIN || l.password.len() > MAX_LOGIN) {
            return Err(MqttError::BadLogin);
        }
        if !valid_name(name, MAX_NAME) {
            return Err(MqttError::BadName);
        }
        if !valid_name(prefix, MAX_PREFIX) {
            return Err(MqttError::BadPrefix);
        }
        if BUF < memory_size(RX, TX) {
            return Err(MqttError::Memory);
        }
        let MqttMemory { buffer, signals } = memory;
        let signals: &'a Signals = signals;
        let mut topic = [0; MAX_TOPIC];
        let status = join(&mut topic, &[prefix, "/", name, "/status"]).ok_or(MqttError::BadName)?;
        let mut frame = [0u8; HEADER_LEN + OFFLINE_BODY.len()];
        at_core::encode_frame(Kind::Notify, 0, OFFLINE_BODY, &mut frame)
            .map_err(|_| MqttError::Memory)?;
        let will = Will::new(status, &frame, &[])
            .map_err(|_| MqttError::Memory)?
            .retained()
            .qos(QoS::AtLeastOnce);
        let mut ip_broker = IpBroker::new(broker.ip());
        minimq::Broker::set_port(&mut ip_broker, broker.port());
        let mut config = ConfigBuilder::new(ip_broker, &mut buffer[..]);
        if let Some(login) = login {
            config = config
                .set_auth(login.user, login.password)
                .map_err(|_| MqttError::BadLogin)?;
        }
        let config = config
            .client_id(name)
            .map_err(|_| MqttError::BadName)?
            .keepalive_interval(KEEP_ALIVE_S)
            .will(will)
            .map_err(|_| MqttError::Memory)?
            .rx_buffer(BufferConfig::Exactly(RX))
            .tx_buffer(BufferConfig::Exactly(tx_packet(TX)));
        let mqtt = Minimq::new(Link::new(stack, signals), MsClock::new(signals), config);
        let room = RX - PUBLISH_OVERHEAD - HEADER_LEN;
        Ok(MqttServer {
            mqtt,
            signals,
            state: State::Waiting { retry_at: 0 },
            backoff: FIRST_BACKOFF_MS,
            connections: 0,
            served: Served {
                prefix,
                name,
                max_body: u32::try_from(room).unwrap_or(u32::MAX),
                cache: ReplyCache::new(),
                err: [0; MIN_REPLY_BUFFER],
                notified: [None; NOTIFY_MEMORY],
                next_notified: 0,
            },
        })
    }
}

impl<'a, S, const RX: usize, const TX: usize, const CACHE: usize> MqttServer<'a, S, RX, TX, CACHE>
where
    S: TcpClientStack,
    S::Error: fmt::Debug,
{
    /// Where the connection stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the broker accepted the connection (CONNACK).
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    /// How many connections reached CONNACK.
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// The largest request body taken: what the receive buffer holds after
    /// the topic and properties (64-character names assumed).
    pub const fn max_body(&self) -> u32 {
        self.served.max_body
    }

    /// Does what can be done now without blocking: connects (again, after
    /// the backoff), subscribes and publishes the status, and answers up to
    /// [`MESSAGES_PER_POLL`] requests through `responder` (a
    /// [`Guard`](at_core::auth::Guard) for section 9, or
    /// [`Open`](at_core::auth::Open)). `now` is the board's clock in ms.
    /// Returns the work done (0: idle). Errors are logged, never returned.
    ///
    /// Never inlined: its topic buffers then stay out of the caller's
    /// frame, which on a board is live while everything else is built.
    #[inline(never)]
    pub fn poll<F, R>(&mut self, functions: &F, responder: &mut R, now: u64) -> usize
    where
        F: Functions + ?Sized,
        R: Responder,
    {
        self.signals.set_now(now);
        match self.state {
            State::Waiting { retry_at } if now < retry_at => return 0,
            State::Waiting { .. } => {
                log_debug!("mqtt: connecting");
                self.state = State::Connecting { since: now };
            }
            State::Connecting { since } if now.saturating_sub(since) >= CONNECT_MS => {
                log_warn!("mqtt: no connection within {} ms", CONNECT_MS);
                self.fail(now);
                return 1;
            }
            _ => {}
        }
        let info = crate::server_info(self.served.name, self.served.max_body, false);
        let mut work = 0;
        let mut failed = false;
        for _ in 0..MESSAGES_PER_POLL {
            let served = &mut self.served;
            let result = self.mqtt.poll(|client, topic, payload, properties| {
                served.handle(
                    client, topic, payload, properties, functions, responder, &info, now,
                )
            });
            match result {
                Ok(Some(())) => work += 1,
                Ok(None) => break,
                // The broker kept no session (Clean Start): subscriptions
                // are made again below.
                Err(minimq::Error::SessionReset) => work += 1,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if self.signals.take_closed() || failed {
            log_warn!("mqtt: the connection to the broker failed or closed");
            self.fail(now);
            return work + 1;
        }
        let connected = self.mqtt.client().is_connected();
        match self.state {
            State::Connecting { .. } if connected => {
                log_info!("mqtt: connected");
                self.backoff = FIRST_BACKOFF_MS;
                self.connections = self.connections.wrapping_add(1);
                self.state = State::Up {
                    subscribed: false,
                    announced: false,
                };
                work += 1 + self.advance(functions, responder, &info, now);
            }
            State::Up { .. } if !connected => {
                log_warn!("mqtt: the broker stopped answering");
                self.fail(now);
                work += 1;
            }
            State::Up { .. } => work += self.advance(functions, responder, &info, now),
            _ => {}
        }
        work
    }

    /// Subscribes, then announces the online status.
    fn advance<F, R>(
        &mut self,
        functions: &F,
        responder: &mut R,
        info: &at_core::ServerInfo<'_>,
        now: u64,
    ) -> usize
    where
        F: Functions + ?Sized,
        R: Responder,
    {
        let State::Up {
            subscribed,
            announced,
        } = self.state
        else {
            return 0;
        };
        let (prefix, name) = (self.served.prefix, self.served.name);
        let client = self.mqtt.client();
        if !subscribed {
            let mut buf = [0; MAX_TOPIC];
            let Some(filter) = join(&mut buf, &[prefix, "/", name, "/req/+"]) else {
                return 0;
            };
            if client.subscribe(&[TopicFilter::new(filter)], &[]).is_ok() {
                log_debug!("mqtt: subscribed");
                self.state = State::Up {
                    subscribed: true,
                    announced,
                };
                return 1;
            }
            return 0;
        }
        if !announced && !client.subscriptions_pending() && client.can_publish(QoS::AtLeastOnce) {
            let slot = self.served.cache.slot();
            let Some(value) = info_result(functions, responder, info, now, slot) else {
                log_warn!("mqtt: rpc.info did not fit the reply buffer");
                return 0;
            };
            if publish_status(client, prefix, name, value) {
                log_info!("mqtt: online");
                self.state = State::Up {
                    subscribed,
                    announced: true,
                };
                return 1;
            }
        }
        0
    }

    /// Publishes the offline status (the will's frame, retained), as a
    /// board does before a planned stop. Returns whether it was sent (it
    /// is not while disconnected or the send buffer is busy).
    pub fn announce_offline(&mut self) -> bool {
        if !self.is_connected() {
            return false;
        }
        let (prefix, name) = (self.served.prefix, self.served.name);
        publish_status(self.mqtt.client(), prefix, name, Value::Null)
    }

    /// Drops the connection and waits before the next.
    fn fail(&mut self, now: u64) {
        self.signals.abort();
        self.state = State::Waiting {
            retry_at: now.saturating_add(u64::from(self.backoff)),
        };
        self.backoff = self.backoff.saturating_mul(2).min(MAX_BACKOFF_MS);
    }
}

/// `rpc.info`'s result, answered by `responder` into `out` (the
/// server's own description, as a caller would get it).
fn info_result<'o, F, R>(
    functions: &F,
    responder: &mut R,
    info: &at_core::ServerInfo<'_>,
    now: u64,
    out: &'o mut [u8],
) -> Option<Value<'o>>
where
    F: Functions + ?Sized,
    R: Responder,
{
    let mut request = [0u8; 48];
    let n =
        at_core::encode_frame(Kind::Request, 1, br#"{"func": "rpc.info"}"#, &mut request).ok()?;
    let frame = Frame::parse(&request[..n], 64).ok()?;
    let mut context = Context::new(Origin::SERIAL, now);
    let len = responder.respond(functions, info, &frame, &mut context, out)?;
    match ReplyBody::parse(out.get(HEADER_LEN..len)?) {
        Ok(ReplyBody::Success(value)) => Some(value),
        _ => None,
    }
}

/// Publishes the status frame (retained, QoS 1) with `value`. Returns
/// whether it was sent.
fn publish_status<S>(client: &mut Client<'_, S>, prefix: &str, name: &str, value: Value<'_>) -> bool
where
    S: TcpClientStack,
    S::Error: fmt::Debug,
{
    let mut buf = [0; MAX_TOPIC];
    let Some(topic) = join(&mut buf, &[prefix, "/", name, "/status"]) else {
        return false;
    };
    let event = Event {
        topic: JsonStr::new("rpc.status"),
        n: 0,
        payload: Payload::Value(value),
    };
    let write = |out: &mut [u8]| {
        at_core::encode_frame_with(Kind::Notify, 0, out, |body| {
            event
                .write(body)
                .map_err(|_: EncodeError| at_core::BufferTooSmall)
        })
    };
    let publication = Publication::new(topic, write)
        .qos(QoS::AtLeastOnce)
        .retain();
    client.publish(publication).is_ok()
}

impl<const TX: usize, const CACHE: usize> Served<'_, TX, CACHE> {
    /// Answers one message (see the module docs).
    #[allow(clippy::too_many_arguments)]
    fn handle<S, F, R>(
        &mut self,
        client: &mut Client<'_, S>,
        topic: &str,
        payload: &[u8],
        properties: &Properties<'_>,
        functions: &F,
        responder: &mut R,
        info: &at_core::ServerInfo<'_>,
        now: u64,
    ) where
        S: TcpClientStack,
        S::Error: fmt::Debug,
        F: Functions + ?Sized,
        R: Responder,
    {
        let Some(caller) = self.caller_of(topic) else {
            log_debug!("mqtt: a message on an unexpected topic dropped");
            return;
        };
        let Some(key) = Caller::new(caller) else {
            log_debug!("mqtt: a caller name that is not an AT name: dropped");
            return;
        };
        let mut correlation: Option<&[u8]> = None;
        for property in properties.into_iter().flatten() {
            if let Property::CorrelationData(data) = property
                && data.0.len() <= MAX_CORRELATION
            {
                correlation = Some(data.0);
            }
        }
        let reply = Reply {
            prefix: self.prefix,
            name: self.name,
            caller,
            correlation,
        };
        let frame = match Frame::parse(payload, self.max_body) {
            Err(FrameError::SizeMismatch { .. }) => {
                log_warn!(
                    "mqtt: dropped a message of {} bytes: size mismatch",
                    payload.len()
                );
                return;
            }
            Err(e) if is_notify(payload) => {
                log_debug!("mqtt: dropped a bad notification: {}", e.code().as_str());
                return;
            }
            Err(e) => {
                log_warn!("mqtt: bad frame (seq {}): {}", e.seq(), e.code().as_str());
                if let Some(len) = at_core::respond_to_error(&e, &mut self.err) {
                    reply.send(client, &self.err[..len]);
                }
                return;
            }
            Ok(frame) if frame.kind.is_reply() => {
                log_debug!("mqtt: ignoring a reply frame (seq {})", frame.seq());
                return;
            }
            Ok(frame) => frame,
        };
        let seq = frame.seq();
        let plain = frame.header.flags & at_core::FLAG_AUTH == 0;
        let mut context = Context {
            origin: key.origin(),
            now,
            waited_ms: 0,
            frame_len: payload.len(),
            topics: None,
        };
        if frame.kind == Kind::Notify {
            let remembered = (key, seq, frame.header.length, frame.header.crc);
            if plain && self.notified.contains(&Some(remembered)) {
                log_debug!("mqtt: notification seq {} again: not run again", seq);
                return;
            }
            if plain {
                self.notified[self.next_notified] = Some(remembered);
                self.next_notified = (self.next_notified + 1) % NOTIFY_MEMORY;
            }
            let _ = responder.respond(functions, info, &frame, &mut context, &mut self.err);
            return;
        }
        if plain && let Some(remembered) = self.cache.get(&key, seq) {
            log_debug!("mqtt: seq {} again: sending the remembered reply", seq);
            reply.send(client, remembered);
            return;
        }
        let slot = self.cache.slot();
        if let Some(len) = responder.respond(functions, info, &frame, &mut context, slot) {
            if plain {
                let remembered = self.cache.commit(key, seq, len);
                reply.send(client, remembered);
            } else {
                reply.send(client, &slot[..len]);
            }
        }
    }

    /// The caller of a request topic `<prefix>/<name>/req/<caller>`.
    fn caller_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic.strip_prefix(self.prefix)?.strip_prefix('/')?;
        rest.strip_prefix(self.name)?.strip_prefix("/req/")
    }
}

/// Where a reply goes: `<prefix>/<name>/rep/<caller>`, with the request's
/// Correlation Data.
struct Reply<'r> {
    prefix: &'r str,
    name: &'r str,
    caller: &'r str,
    correlation: Option<&'r [u8]>,
}

impl Reply<'_> {
    fn send<S>(&self, client: &mut Client<'_, S>, frame: &[u8])
    where
        S: TcpClientStack,
        S::Error: fmt::Debug,
    {
        let mut buf = [0; MAX_TOPIC];
        let Some(topic) = join(
            &mut buf,
            &[self.prefix, "/", self.name, "/rep/", self.caller],
        ) else {
            return;
        };
        let publication = Publication::new(topic, frame);
        let publication = match self.correlation {
            Some(data) => publication.correlate(data),
            None => publication,
        };
        if client.publish(publication).is_err() {
            // The caller retransmits and gets it from the cache.
            log_debug!("mqtt: a reply dropped: the connection is busy");
        }
    }
}

/// Whether a message's header (right magic or not) has the NOTIFY bit: a
/// bad notification is dropped, never answered (contract 10.2).
fn is_notify(bytes: &[u8]) -> bool {
    bytes
        .get(2..4)
        .is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & at_core::FLAG_NOTIFY != 0)
}
