//! Topics and subscriptions (contract 10.3, 10.6, 10.8 rules 1 and 5): a
//! [`Topic`] handle publishes values from anywhere; each subscriber gets
//! an `Outbox` that numbers, seals and routes its event frames.
//!
//! - Plain TCP: the subscriber is the connection; its events wait in the
//!   connection's `Pipe`, a bounded queue its loop writes between replies,
//!   and end with it. Seq from 1.
//! - Plain UDP: the subscriber is the peer address; events go out of the
//!   server's socket at once, at most [`UDP_CREDIT`] per subscribe and at
//!   most 3 times the subscribe datagram's bytes (10.8 rule 1). Seq from a
//!   random non-zero value (10.8 rule 3).
//! - Sealed (TCP or UDP): the subscriber is the session; events are sealed
//!   0x0018 under `K_rep` with the session's own counter, and go where the
//!   latest verified subscribe came from (dropped while that connection is
//!   closed); the subscription ends with the session or its lease, never
//!   with a connection.
//!
//! `rpc.subscribe` and `rpc.unsubscribe` by NOTIFY do what they do by
//! REQUEST, answering nothing (a call without reply, 10.2): the client's
//! drop of a subscription sends such an unsubscribe. On shutdown every
//! subscriber gets `"end": "server"` (best effort). A server without topics
//! never creates any of this, so its call path is unchanged.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use at_core::auth::{Origin, SID_LEN, Seal, TRAILER_LEN};
use at_core::{ErrorCode, FLAG_AUTH, Frame, HEADER_LEN, Kind, Value};
use tokio::sync::Notify;

use crate::shared::wire::{Hints, mentions};

use super::auth::Auth;
use super::log_limit::protocol_warn;
use super::{Shared, Step};

/// Most subscriptions one subscriber (a TCP connection, a UDP address, a
/// session) holds at once; one more is `busy` "subscription table full" (a
/// renewal needs no slot).
pub const MAX_PER_SUBSCRIBER: usize = 4;

/// Events a plain UDP subscription gets per subscribe (contract 10.3: at
/// most 16); a renewal refills it.
pub(super) const UDP_CREDIT: u32 = 16;

/// The bytes sent to a UDP address since its latest subscribe are at most
/// this many times that datagram's size (contract 10.8 rule 1).
const AMPLIFICATION: usize = 3;

/// Subscribers by UDP address or session held at once (TCP ones are
/// bounded by the connections); one more is `busy`.
const MAX_REMOTE_SUBSCRIBERS: usize = 1024;

/// Event frames a connection's queue holds; beyond, new events are lost
/// (their `n` still counted, so the client sees the gap).
pub const EVENT_QUEUE: usize = 64;

/// A topic's name was not 1 to 64 of `[A-Za-z0-9._/-]`, or began `rpc.`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad topic name {0:?}: 1 to 64 of A-Z a-z 0-9 . _ / -, not starting with rpc.")]
pub struct TopicError(pub String);

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with("rpc.")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A topic a server publishes (contract 10.3); cheap to clone and send to
/// other tasks or threads. Once a value has been published it is the
/// topic's state: a new subscriber gets it as event 1.
///
/// ```
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use at_host::{Server, Topic};
/// let temp = Topic::new("temp", "degrees C")?;
/// let server = Server::builder()
///     .with_topic(&temp)
///     .tcp("127.0.0.1:0".parse()?)
///     .start()
///     .await?;
/// temp.publish(&21.5)?;
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Topic(Arc<TopicInner>);

struct TopicInner {
    name: String,
    doc: String,
    state: Mutex<TopicState>,
}

#[derive(Default)]
struct TopicState {
    /// The latest value published, as JSON text.
    last: Option<Arc<str>>,
    subs: Vec<Arc<Subscription>>,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic").field("name", &self.0.name).finish()
    }
}

impl Topic {
    /// A topic named `name` (1 to 64 of `[A-Za-z0-9._/-]`, not `rpc.*`)
    /// with `doc` for `rpc.topics`.
    ///
    /// ```
    /// assert!(at_host::Topic::new("temp", "").is_ok());
    /// assert!(at_host::Topic::new("rpc.x", "").is_err());
    /// ```
    pub fn new(name: &str, doc: &str) -> Result<Topic, TopicError> {
        if !valid_name(name) {
            return Err(TopicError(name.to_owned()));
        }
        Ok(Topic(Arc::new(TopicInner {
            name: name.to_owned(),
            doc: doc.to_owned(),
            state: Mutex::default(),
        })))
    }

    /// The topic's name.
    ///
    /// ```
    /// assert_eq!(at_host::Topic::new("temp", "").unwrap().name(), "temp");
    /// ```
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Publishes `value` (any serde value) to every subscriber and keeps
    /// it as the topic's state. Never waits: a subscriber whose queue is
    /// full loses the event (its `n` counts it); one with an `interval`
    /// gets only the newest value per interval.
    ///
    /// ```
    /// let t = at_host::Topic::new("calls", "").unwrap();
    /// t.publish(&3).unwrap();
    /// ```
    pub fn publish<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        let text: Arc<str> = serde_json::to_string(value)?.into();
        let subs = {
            let mut state = lock(&self.0.state);
            state.last = Some(text.clone());
            state.subs.retain(|s| !lock(&s.state).ended);
            state.subs.clone()
        };
        for sub in subs {
            sub.offer(&text);
        }
        Ok(())
    }
}

/// Ends every subscription of `topics` with an `"end": "server"` event
/// (contract 10.3), before the server closes: UDP ones are sent at once,
/// TCP ones queued for their connection's last write.
pub(super) fn end_all(topics: &[Topic]) {
    for topic in topics {
        let subs = std::mem::take(&mut lock(&topic.0.state).subs);
        for sub in subs {
            let mut state = lock(&sub.state);
            sub.end(&mut state, End::Server);
            drop(state);
            sub.outbox.forget(&sub);
        }
    }
}

/// Why a subscription's last event ends it.
#[derive(Clone, Copy)]
enum End {
    /// Its lease ran out.
    Lease,
    /// The server is shutting down.
    Server,
}

/// One (subscriber, topic) subscription.
pub(super) struct Subscription {
    topic: String,
    outbox: Arc<Outbox>,
    state: Mutex<SubState>,
}

struct SubState {
    n: u32,
    lease_until: Instant,
    interval: Duration,
    last_sent: Option<Instant>,
    pending: Option<Arc<str>>,
    timer: bool,
    ended: bool,
    /// Events left before the subscription ends (plain UDP only).
    credit: Option<u32>,
}

impl Subscription {
    fn offer(self: &Arc<Self>, value: &Arc<str>) {
        let mut state = lock(&self.state);
        if state.ended {
            return;
        }
        let now = Instant::now();
        if now >= state.lease_until {
            self.end(&mut state, End::Lease);
            return;
        }
        let due = state.last_sent.map(|t| t + state.interval);
        match due {
            Some(due) if state.interval > Duration::ZERO && now < due => {
                state.pending = Some(value.clone());
                if !state.timer {
                    state.timer = true;
                    let sub = Arc::clone(self);
                    self.outbox.runtime.spawn(async move {
                        tokio::time::sleep_until(due.into()).await;
                        let mut state = lock(&sub.state);
                        state.timer = false;
                        if let Some(value) = state.pending.take()
                            && !state.ended
                        {
                            sub.emit(&mut state, &format!("\"value\": {value}"));
                        }
                    });
                }
            }
            _ => self.emit(&mut state, &format!("\"value\": {value}")),
        }
    }

    /// Makes event `n + 1` with `member` (`"value": V` or `"end": E`).
    fn emit(&self, state: &mut SubState, member: &str) {
        state.n += 1;
        state.last_sent = Some(Instant::now());
        let body = format!(
            "{{\"topic\": \"{}\", \"n\": {}, {member}}}",
            self.topic, state.n
        );
        if self.outbox.push(body.as_bytes()) == Pushed::SessionGone {
            // The session ended (expired or evicted): so does this.
            state.ended = true;
        }
        if state.n == u32::MAX {
            state.ended = true;
        }
        if let Some(credit) = &mut state.credit {
            *credit = credit.saturating_sub(1);
            state.ended |= *credit == 0;
        }
    }

    fn end(&self, state: &mut SubState, why: End) {
        if !state.ended {
            state.pending = None;
            let member = match why {
                End::Lease => "\"end\": \"lease\"",
                End::Server => "\"end\": \"server\"",
            };
            self.emit(state, member);
            state.ended = true;
        }
    }
}

/// The event frames of one TCP connection, waiting to be written between
/// replies; closed with the connection.
#[derive(Default)]
pub(super) struct Pipe {
    queue: Mutex<VecDeque<Vec<u8>>>,
    wake: Notify,
    closed: AtomicBool,
}

impl Pipe {
    fn push(&self, frame: Vec<u8>) -> Pushed {
        let mut queue = lock(&self.queue);
        if queue.len() >= EVENT_QUEUE {
            return Pushed::Dropped;
        }
        queue.push_back(frame);
        drop(queue);
        self.wake.notify_one();
        Pushed::Sent
    }
}

/// Who a subscription belongs to (contract 10.3: the association, with
/// authentication the session).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Key {
    /// A plain TCP connection (its `Events` holds the outbox).
    Stream,
    /// A plain UDP peer address.
    Datagram(SocketAddr),
    /// A session (sealed subscriptions, on either transport).
    Session([u8; SID_LEN]),
}

/// Where a subscriber's events go.
#[derive(Clone)]
enum To {
    Stream(Arc<Pipe>),
    Datagram(SocketAddr),
}

struct Route {
    to: To,
    /// UDP: the bytes still allowed before the next subscribe.
    budget: Option<usize>,
}

/// What became of one event frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pushed {
    Sent,
    /// Lost: a full queue, a closed connection, a spent byte budget.
    Dropped,
    /// The session is gone: nothing can be sealed in it any more.
    SessionGone,
}

struct Subs {
    list: Vec<Arc<Subscription>>,
    /// Taken out of the hub (its last subscription ended): a subscribe
    /// that still got it makes a new one.
    orphan: bool,
}

/// One subscriber's subscriptions, its event counter and its route.
pub(super) struct Outbox {
    key: Key,
    /// The plain event seq (sealed ones take the session's counter).
    seq: AtomicU32,
    runtime: tokio::runtime::Handle,
    subs: Mutex<Subs>,
    route: Mutex<Route>,
    hub: Weak<Hub>,
}

impl Outbox {
    fn new(
        key: Key,
        first_seq: u32,
        route: Route,
        hub: Weak<Hub>,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Outbox> {
        Arc::new(Outbox {
            key,
            seq: AtomicU32::new(first_seq),
            runtime,
            subs: Mutex::new(Subs {
                list: Vec::new(),
                orphan: false,
            }),
            route: Mutex::new(route),
            hub,
        })
    }

    /// Numbers (or seals) the event `body` and sends or queues it.
    fn push(&self, body: &[u8]) -> Pushed {
        let sealed = match self.key {
            Key::Session(sid) => Some(sid),
            _ => None,
        };
        let mut route = lock(&self.route);
        if let To::Stream(pipe) = &route.to
            && pipe.closed.load(Ordering::Relaxed)
        {
            return Pushed::Dropped;
        }
        let plain_len = HEADER_LEN + body.len();
        let size = plain_len + if sealed.is_some() { TRAILER_LEN } else { 0 };
        if route.budget.is_some_and(|left| left < size) {
            return Pushed::Dropped;
        }
        let seq = match sealed {
            Some(_) => 0,
            None => {
                let mut seq = self.seq.fetch_add(1, Ordering::Relaxed);
                if seq == 0 {
                    seq = self.seq.fetch_add(1, Ordering::Relaxed);
                }
                seq
            }
        };
        let mut frame = vec![0u8; size];
        let Ok(mut len) = at_core::encode_frame(Kind::Notify, seq, body, &mut frame[..plain_len])
        else {
            return Pushed::Dropped;
        };
        let hub = self.hub.upgrade();
        if let Some(sid) = sealed {
            let Some(auth) = hub.as_ref().and_then(|h| h.auth.as_ref()) else {
                return Pushed::SessionGone;
            };
            let now = auth.now();
            match auth.lock().seal_server_frame(&sid, now, &mut frame, len) {
                Some(n) => len = n,
                None => return Pushed::SessionGone,
            }
        }
        frame.truncate(len);
        if let Some(left) = &mut route.budget {
            *left -= len.min(*left);
        }
        match &route.to {
            To::Stream(pipe) => pipe.push(frame),
            To::Datagram(peer) => {
                let relay = hub.as_ref().and_then(|h| lock(&h.relay).clone());
                if let Some(sent) = relay.and_then(|relay| relay(*peer, &frame)) {
                    return match sent {
                        true => Pushed::Sent,
                        false => Pushed::Dropped,
                    };
                }
                let socket = hub.and_then(|h| lock(&h.socket).clone());
                match socket.map(|s| s.send_to(&frame, *peer)) {
                    Some(Ok(_)) => Pushed::Sent,
                    _ => Pushed::Dropped,
                }
            }
        }
    }

    /// Takes `sub` out; a UDP or session subscriber left with none leaves
    /// the hub.
    fn forget(self: &Arc<Self>, sub: &Arc<Subscription>) {
        let mut subs = lock(&self.subs);
        subs.list.retain(|s| !Arc::ptr_eq(s, sub));
        if subs.list.is_empty() && self.key != Key::Stream && !subs.orphan {
            subs.orphan = true;
            if let Some(hub) = self.hub.upgrade() {
                let mut remote = lock(&hub.remote);
                if remote.get(&self.key).is_some_and(|o| Arc::ptr_eq(o, self)) {
                    remote.remove(&self.key);
                }
            }
        }
    }
}

/// A TCP connection's part: its pipe (once it subscribed, plain or
/// sealed) and its plain subscriptions, which end when this is dropped
/// (with the connection); the pipe closes then, so sealed subscriptions
/// routed here drop their events until a subscribe routes them elsewhere.
#[derive(Default)]
pub(super) struct Events {
    pipe: Option<Arc<Pipe>>,
    plain: Option<Arc<Outbox>>,
}

impl Drop for Events {
    fn drop(&mut self) {
        if let Some(pipe) = &self.pipe {
            pipe.closed.store(true, Ordering::Relaxed);
        }
        if let Some(outbox) = &self.plain {
            for sub in lock(&outbox.subs).list.drain(..) {
                lock(&sub.state).ended = true;
            }
        }
    }
}

impl Events {
    /// Waits until an event is queued (forever without subscriptions).
    pub(super) async fn ready(&self) {
        match &self.pipe {
            Some(pipe) => pipe.wake.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Moves queued events into `out[*pending..]` while room for `keep`
    /// more bytes stays (a reply's); whether some are still queued.
    pub(super) fn drain(&self, out: &mut [u8], pending: &mut usize, keep: usize) -> bool {
        let Some(pipe) = &self.pipe else { return false };
        let mut queue = lock(&pipe.queue);
        while let Some(frame) = queue.front() {
            if out.len() - *pending < frame.len() + keep {
                break;
            }
            out[*pending..*pending + frame.len()].copy_from_slice(frame);
            *pending += frame.len();
            queue.pop_front();
        }
        !queue.is_empty()
    }

    fn pipe(&mut self) -> Arc<Pipe> {
        Arc::clone(self.pipe.get_or_insert_with(Arc::default))
    }
}

/// Sends an event frame to a datagram peer of a transport other than UDP:
/// `Some(sent)` for a peer it serves, `None` for others (UDP ones).
pub(super) type Relay = Arc<dyn Fn(SocketAddr, &[u8]) -> Option<bool> + Send + Sync>;

/// Where a topic call came from.
pub(super) enum Via<'a> {
    /// A TCP connection.
    Stream(&'a mut Events),
    /// A UDP peer; `size` is the datagram's (the event bytes it buys), and
    /// `reply` whether a reply goes back (a REQUEST), after which a state
    /// topic's event 1 goes out ([`Hub::after_reply`]).
    Datagram {
        peer: SocketAddr,
        size: usize,
        reply: bool,
    },
}

/// What the transports share for topics: the subscribers by UDP address
/// and by session, the UDP socket events leave by, the guard that seals.
pub(super) struct Hub {
    topics: Vec<Topic>,
    auth: Option<Arc<Auth>>,
    socket: Mutex<Option<Arc<UdpSocket>>>,
    /// Datagram peers that are not UDP ones (MQTT callers): sends their
    /// events, `None` for a peer it does not know.
    relay: Mutex<Option<Relay>>,
    remote: Mutex<HashMap<Key, Arc<Outbox>>>,
    /// Event 1 of state topics subscribed over UDP, sent after the reply.
    later: Mutex<Vec<(Arc<Subscription>, Arc<str>)>>,
    has_later: AtomicBool,
    runtime: tokio::runtime::Handle,
    me: Weak<Hub>,
}

impl Hub {
    /// The hub of a server with `topics` and, with keys, `auth`; its
    /// timers run on the current runtime.
    pub(super) fn new(topics: Vec<Topic>, auth: Option<Arc<Auth>>) -> Arc<Hub> {
        let runtime = tokio::runtime::Handle::current();
        Arc::new_cyclic(|me| Hub {
            runtime,
            topics,
            auth,
            socket: Mutex::default(),
            relay: Mutex::default(),
            remote: Mutex::default(),
            later: Mutex::default(),
            has_later: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    /// The UDP socket events leave by (`None` once it closes).
    pub(super) fn set_socket(&self, socket: Option<Arc<UdpSocket>>) {
        *lock(&self.socket) = socket;
    }

    /// How events reach datagram peers of another transport (MQTT).
    pub(super) fn set_relay(&self, relay: Option<Relay>) {
        *lock(&self.relay) = relay;
    }

    /// Sends the state events held back until a UDP subscribe's reply had
    /// gone (called by the datagram thread after each reply).
    pub(super) fn after_reply(&self) {
        if !self.has_later.swap(false, Ordering::Relaxed) {
            return;
        }
        let later = std::mem::take(&mut *lock(&self.later));
        for (sub, value) in later {
            sub.offer(&value);
        }
    }

    /// Answers `rpc.subscribe`, `rpc.unsubscribe` and `rpc.topics` in
    /// `body` (`sid`: sealed in that session); `None` for any other body.
    fn answer(
        &self,
        seq: u32,
        body: &[u8],
        sid: Option<[u8; SID_LEN]>,
        via: Via<'_>,
        broadcast: bool,
        out: &mut [u8],
    ) -> Option<usize> {
        // Every call passes here: a body that cannot name `rpc.*` unescaped
        // (the only names matched below) is not parsed a first time.
        const PREFIX: &[u8] = b"rpc.";
        if !mentions(body, PREFIX) {
            return None;
        }
        let request = at_core::Request::parse(body).ok()?;
        let func = request.func.as_plain()?;
        if !matches!(func, "rpc.topics" | "rpc.subscribe" | "rpc.unsubscribe") {
            return None;
        }
        if broadcast {
            // Contract 10.8 rule 1: only rpc.ping and rpc.info by broadcast.
            protocol_warn!("{func} by broadcast: dropped unrun");
            return Some(0);
        }
        let args = &request.args;
        let text = match func {
            "rpc.topics" => Ok(self.list()),
            "rpc.subscribe" => self.subscribe(args, sid, via),
            _ => match args.as_slice() {
                [Value::Str(name)] => Ok(self.unsubscribe(&name.to_string(), sid, via).to_string()),
                _ => Err((ErrorCode::InvalidArguments, "expected a topic name")),
            },
        };
        match text {
            Ok(result) => {
                let body = format!("{{\"status\": \"success\", \"result\": {result}}}");
                at_core::encode_frame(Kind::Response, seq, body.as_bytes(), out).ok()
            }
            Err((code, message)) => at_core::write_error_frame(seq, code, message, out).ok(),
        }
    }

    fn list(&self) -> String {
        let list: Vec<_> = self
            .topics
            .iter()
            .map(|t| {
                format!(
                    "{{\"name\": \"{}\", \"doc\": {}}}",
                    t.0.name,
                    serde_json::to_string(&t.0.doc).unwrap_or_else(|_| "\"\"".into())
                )
            })
            .collect();
        format!("{{\"topics\": [{}], \"next\": null}}", list.join(", "))
    }

    /// The UDP or session subscriber `key`, made (routed `to`) if new and
    /// `make`; `Err` when the table of subscribers is full.
    fn remote(&self, key: Key, make: Option<&To>) -> Result<Option<Arc<Outbox>>, ()> {
        let mut remote = lock(&self.remote);
        if let Some(outbox) = remote.get(&key) {
            return Ok(Some(Arc::clone(outbox)));
        }
        let Some(to) = make else { return Ok(None) };
        if remote.len() >= MAX_REMOTE_SUBSCRIBERS {
            return Err(());
        }
        let first_seq = match key {
            // A fixed UDP port outlives a restart: a random start (10.8
            // rule 3), never 0.
            Key::Datagram(_) => {
                let mut bytes = [0u8; 4];
                crate::shared::keys::fill_random(&mut bytes);
                u32::from_be_bytes(bytes).max(1)
            }
            _ => 1,
        };
        let route = Route {
            to: to.clone(),
            budget: None,
        };
        let outbox = Outbox::new(key, first_seq, route, self.me.clone(), self.runtime.clone());
        remote.insert(key, Arc::clone(&outbox));
        Ok(Some(outbox))
    }

    fn unsubscribe(&self, name: &str, sid: Option<[u8; SID_LEN]>, via: Via<'_>) -> bool {
        let outbox = match (sid, via) {
            (Some(sid), _) => self.remote(Key::Session(sid), None).ok().flatten(),
            (None, Via::Stream(events)) => events.plain.clone(),
            (None, Via::Datagram { peer, .. }) => {
                self.remote(Key::Datagram(peer), None).ok().flatten()
            }
        };
        let Some(outbox) = outbox else { return false };
        let found = lock(&outbox.subs)
            .list
            .iter()
            .find(|s| s.topic == name)
            .cloned();
        let Some(sub) = found else { return false };
        let was = !std::mem::replace(&mut lock(&sub.state).ended, true);
        outbox.forget(&sub);
        was
    }

    fn subscribe(
        &self,
        args: &[Value<'_>],
        sid: Option<[u8; SID_LEN]>,
        via: Via<'_>,
    ) -> Result<String, (ErrorCode, &'static str)> {
        const BAD: (ErrorCode, &str) = (
            ErrorCode::InvalidArguments,
            "expected topic, lease 1..300 s, interval ms",
        );
        const FULL: (ErrorCode, &str) = (ErrorCode::Busy, "subscription table full");
        let (Some(Value::Str(name)), true) = (args.first(), args.len() <= 3) else {
            return Err(BAD);
        };
        let name = name.to_string();
        let lease = int_arg(args, 1, 60, 1..=300).ok_or(BAD)?;
        let interval = int_arg(args, 2, 0, 0..=u64::from(u32::MAX)).ok_or(BAD)?;
        if !valid_name(&name) {
            return Err(BAD);
        }
        let topic = self
            .topics
            .iter()
            .find(|t| t.0.name == name)
            .ok_or((ErrorCode::UnknownTopic, "unknown topic"))?;
        // Who subscribes, where its events go, what they may cost; a plain
        // TCP connection's own outbox.
        let mut own = None;
        let (key, to, budget, credit, reply) = match via {
            Via::Stream(events) => {
                let to = To::Stream(events.pipe());
                match sid {
                    Some(sid) => (Key::Session(sid), to, None, None, false),
                    None => {
                        let outbox = events.plain.get_or_insert_with(|| {
                            let route = Route {
                                to: to.clone(),
                                budget: None,
                            };
                            let runtime = tokio::runtime::Handle::current();
                            Outbox::new(Key::Stream, 1, route, Weak::new(), runtime)
                        });
                        own = Some(Arc::clone(outbox));
                        (Key::Stream, to, None, None, false)
                    }
                }
            }
            Via::Datagram { peer, size, reply } => {
                // Over MQTT the broker's ACLs vouch for who asked: no
                // credit and no amplification budget (contract 11).
                let udp = !crate::shared::mqtt::is_mqtt_peer(&peer);
                let budget = udp.then(|| size.saturating_mul(AMPLIFICATION));
                match sid {
                    Some(sid) => (Key::Session(sid), To::Datagram(peer), budget, None, reply),
                    None => {
                        let credit = udp.then_some(UDP_CREDIT);
                        (
                            Key::Datagram(peer),
                            To::Datagram(peer),
                            budget,
                            credit,
                            reply,
                        )
                    }
                }
            }
        };
        let lease_until = Instant::now() + Duration::from_secs(lease);
        let interval_d = Duration::from_millis(interval);
        let (sub, last) = loop {
            let outbox = match &own {
                Some(outbox) => Arc::clone(outbox),
                None => self
                    .remote(key, Some(&to))
                    .map_err(|()| FULL)?
                    .ok_or(FULL)?,
            };
            let mut subs = lock(&outbox.subs);
            if subs.orphan {
                // Its last subscription ended meanwhile: a new one.
                continue;
            }
            // The latest (verified) subscribe routes its events and, on
            // UDP, buys their bytes again.
            *lock(&outbox.route) = Route {
                to: to.clone(),
                budget,
            };
            subs.list.retain(|s| !lock(&s.state).ended);
            if let Some(sub) = subs.list.iter().find(|s| s.topic == name) {
                let mut state = lock(&sub.state);
                state.lease_until = lease_until;
                state.interval = interval_d;
                state.credit = credit;
                // The lease task already running sees the new end.
                let n = state.n;
                return Ok(result(&name, lease, interval, n, credit));
            }
            if subs.list.len() >= MAX_PER_SUBSCRIBER {
                return Err(FULL);
            }
            let sub = new_sub(&name, &outbox, lease_until, interval_d, credit);
            subs.list.push(Arc::clone(&sub));
            drop(subs);
            let last = register(topic, &sub, lease_until);
            break (sub, last);
        };
        // A state topic: its value is event 1, after the reply (on TCP
        // queued now and written after it).
        if let Some(value) = last {
            if reply {
                // After the reply, which the datagram thread sends first.
                lock(&self.later).push((sub, value));
                self.has_later.store(true, Ordering::Relaxed);
            } else {
                sub.offer(&value);
            }
        }
        Ok(result(&name, lease, interval, 0, credit))
    }
}

fn new_sub(
    name: &str,
    outbox: &Arc<Outbox>,
    lease_until: Instant,
    interval: Duration,
    credit: Option<u32>,
) -> Arc<Subscription> {
    Arc::new(Subscription {
        topic: name.to_owned(),
        outbox: Arc::clone(outbox),
        state: Mutex::new(SubState {
            n: 0,
            lease_until,
            interval,
            last_sent: None,
            pending: None,
            timer: false,
            ended: false,
            credit,
        }),
    })
}

/// Starts `sub`'s lease and adds it to `topic`; the topic's state, if any
/// (event 1).
fn register(topic: &Topic, sub: &Arc<Subscription>, lease_until: Instant) -> Option<Arc<str>> {
    spawn_lease(sub, lease_until);
    let mut state = lock(&topic.0.state);
    state.subs.push(Arc::clone(sub));
    state.last.clone()
}

fn int_arg(
    args: &[Value<'_>],
    i: usize,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Option<u64> {
    match args.get(i) {
        None | Some(Value::Null) => Some(default),
        Some(Value::Int(v)) => u64::try_from(*v).ok().filter(|v| range.contains(v)),
        Some(_) => None,
    }
}

fn result(name: &str, lease: u64, interval: u64, n: u32, credit: Option<u32>) -> String {
    let credit = credit.map_or_else(|| "null".to_owned(), |c| c.to_string());
    format!(
        "{{\"topic\": \"{name}\", \"lease\": {lease}, \"interval\": {interval}, \"n\": {n}, \"credit\": {credit}}}"
    )
}

/// Ends `sub` with an `"end": "lease"` event once its lease runs out
/// without a renewal: one task per subscription, which sleeps again when
/// a renewal moved the end (so renewals spawn nothing).
fn spawn_lease(sub: &Arc<Subscription>, until: Instant) {
    let sub = Arc::clone(sub);
    sub.outbox.runtime.clone().spawn(async move {
        let mut until = until;
        loop {
            tokio::time::sleep_until(until.into()).await;
            let mut state = lock(&sub.state);
            if !state.ended && Instant::now() < state.lease_until {
                until = state.lease_until;
                continue;
            }
            sub.end(&mut state, End::Lease);
            drop(state);
            sub.outbox.forget(&sub);
            return;
        }
    });
}

impl Shared {
    /// Answers a topic call (`rpc.subscribe`, `rpc.unsubscribe`,
    /// `rpc.topics`) in an admitted request `body`, sealing the reply when
    /// `seal` says (the subscription is then the session's); `None` for
    /// any other body, or when the server has no topics.
    pub(super) fn topic_call(
        &self,
        seq: u32,
        body: &[u8],
        seal: Option<&Seal>,
        origin: &Origin,
        via: Via<'_>,
        out: &mut [u8],
    ) -> Option<usize> {
        if self.topics.is_empty() {
            return None;
        }
        let room = Self::room(seal, out);
        let sid = seal.map(Seal::session);
        let n = self
            .hub
            .answer(seq, body, sid, via, origin.broadcast, &mut out[..room])?;
        if let Some(calls) = &self.calls {
            calls.fetch_add(1, Ordering::Relaxed);
        }
        Some(self.sealed(seal, origin, out, n))
    }

    /// The reply to a call (seq `seq`, `body` with its `hints`): a topic
    /// function's (`rpc.subscribe`, ...) when the body may name one, else
    /// [`answer_hinted`](Self::answer_hinted)'s. Its length.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_call(
        &self,
        seq: u32,
        body: &[u8],
        hints: Hints,
        seal: Option<&Seal>,
        origin: &Origin,
        via: Via<'_>,
        read_at: std::time::Instant,
        out: &mut [u8],
    ) -> usize {
        if hints.rpc
            && let Some(n) = self.topic_call(seq, body, seal, origin, via, out)
        {
            return n;
        }
        self.answer_hinted(seq, body, hints, seal, origin, read_at, out)
    }

    /// A NOTIFY frame, plain or sealed: a topic call runs as by REQUEST
    /// and answers nothing (contract 10.2; the client's drop of a
    /// subscription sends `rpc.unsubscribe` so); any other goes to
    /// [`notify`](Self::notify) or [`notify_sealed`](Self::notify_sealed).
    pub(super) fn notify_frame(
        self: &Arc<Self>,
        frame: &Frame<'_>,
        origin: &Origin,
        via: Via<'_>,
        read_at: std::time::Instant,
        runtime: &tokio::runtime::Handle,
        scratch: &mut [u8],
    ) {
        let seq = frame.seq();
        if frame.header.flags & FLAG_AUTH == 0 {
            let topical = self.auth.is_none()
                && !self.topics.is_empty()
                && self
                    .hub
                    .answer(seq, frame.body, None, via, origin.broadcast, scratch)
                    .is_some();
            if !topical {
                self.notify(seq, frame.body, origin, read_at, runtime, scratch);
            }
            return;
        }
        if self.topics.is_empty() {
            self.notify_sealed(frame, origin, read_at, runtime, scratch);
            return;
        }
        match self.admit(frame, origin, scratch, false) {
            Step::Call {
                body,
                seal,
                running,
            } => {
                let sid = seal.as_ref().map(Seal::session);
                let topical = sid.is_some()
                    && self
                        .hub
                        .answer(seq, body, sid, via, origin.broadcast, scratch)
                        .is_some();
                if topical {
                    drop(running);
                } else {
                    self.run_notification(seq, body, origin, read_at, runtime, scratch, running);
                }
            }
            _ => protocol_warn!("a sealed notification (seq {seq}) failed its checks: dropped"),
        }
    }
}
