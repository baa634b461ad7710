//! Subscriptions from the client's side (contract 10.3, 10.6 and rules 4,
//! 6 and 11 of 10.8): [`Subscription`], what it yields ([`Update`],
//! [`EndReason`]), how it asks ([`SubscribeOptions`]) and what it was
//! granted ([`Granted`]).
//!
//! Both clients read for whoever waits ("whoever waits reads"), so events
//! are filed by whichever task reads the frame: a call waiting for its
//! reply files the events it reads into their subscription's queue, and a
//! subscription waiting for events files the replies it reads to their
//! calls. Nothing here spawns a task.
//!
//! Events are filed by topic into a [`Slot`]; one whose `n` is not above
//! the largest seen, or whose topic no subscription of this client holds,
//! is dropped. Gaps in `n` are reported when the subscription takes the
//! next event. A client holding a key drops plain events and checks a
//! sealed one's tag under `K_rep` and its seq against the session's
//! window for the server's seqs (`ClientAuth::open_from_server`).

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use at_core::Frame;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::auth::ClientAuth;
use super::tcp::Client;
use super::udp::UdpClient;
use crate::shared::convert;
use crate::shared::error::Error;
use crate::shared::value::Value;

/// Events one subscription keeps queued while nobody takes them; beyond,
/// the oldest is dropped (and reported as a gap).
const MAX_QUEUED: usize = 256;

/// The size a UDP subscribe is padded to (an unknown member `"pad"`):
/// a server sends an address at most 3 times its subscribe's size in
/// events until the next one (contract 10.8 rule 1), so 1536 bytes here.
/// Small enough for a device with a 1 KiB datagram buffer.
pub(crate) const SUBSCRIBE_DATAGRAM: usize = 512;

/// Rule 1's factor.
const AMPLIFICATION: usize = 3;

/// What a subscription asks for (contract 10.3): the lease, renewed
/// automatically at half of what the server grants, and the least time
/// between two events (the server then sends only the newest value).
///
/// ```
/// use std::time::Duration;
/// use at_host::SubscribeOptions;
/// let options = SubscribeOptions {
///     lease: Duration::from_secs(10),
///     interval: Duration::from_millis(250),
/// };
/// assert_eq!(SubscribeOptions::default().lease, Duration::from_secs(60));
/// # let _ = options;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// The lease asked for, sent in whole seconds (rounded up, 1 to 300).
    /// Default 60 s.
    pub lease: Duration,
    /// The least time between events, sent in ms (rounded down, at most
    /// 4294967295). Default 0: every event.
    pub interval: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            lease: Duration::from_secs(60),
            interval: Duration::ZERO,
        }
    }
}

impl SubscribeOptions {
    /// The lease in the seconds sent: rounded up, 1 to 300.
    fn lease_secs(&self) -> i64 {
        let secs = self.lease.as_secs() + u64::from(self.lease.subsec_nanos() > 0);
        secs.clamp(1, 300) as i64
    }

    /// The interval in the ms sent.
    fn interval_ms(&self) -> i64 {
        self.interval.as_millis().min(u128::from(u32::MAX)) as i64
    }
}

/// What the server granted, from the reply to the latest subscribe (the
/// first or a renewal).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = at_host::Server::builder().topic("temp", "").tcp("127.0.0.1:0".parse()?).start().await?;
/// # let addr = server.tcp_addr().unwrap();
/// let client = at_host::Client::connect(addr, std::time::Duration::from_secs(5)).await?;
/// let subscription = client.subscribe::<f64>("temp").await?;
/// let granted = subscription.granted();
/// assert_eq!(granted.lease, std::time::Duration::from_secs(60));
/// assert_eq!(granted.credit, None); // only plain UDP has a credit
/// # server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The lease granted (at most the one asked for).
    pub lease: Duration,
    /// The interval granted (at least the one asked for).
    pub interval: Duration,
    /// The `n` of the last event the server had sent (0 when new).
    pub n: u32,
    /// Events left on plain UDP before the subscription ends unless
    /// renewed; `None` elsewhere.
    pub credit: Option<u32>,
}

/// Why the server ended a subscription (its last event's `"end"`).
///
/// ```
/// assert_eq!(at_host::EndReason::Lease.to_string(), "lease");
/// assert_eq!(at_host::EndReason::from_name("server"), at_host::EndReason::Server);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The lease, the credit or `n` was spent (`"lease"`).
    Lease,
    /// The server withdrew the topic (`"topic"`).
    Topic,
    /// The server is shutting down (`"server"`).
    Server,
    /// A reason this version does not know, as the server wrote it.
    Other(String),
}

impl EndReason {
    /// The reason named `name` on the wire.
    ///
    /// ```
    /// use at_host::EndReason;
    /// assert_eq!(EndReason::from_name("topic"), EndReason::Topic);
    /// assert_eq!(EndReason::from_name("later"), EndReason::Other("later".into()));
    /// ```
    pub fn from_name(name: &str) -> EndReason {
        match name {
            "lease" => EndReason::Lease,
            "topic" => EndReason::Topic,
            "server" => EndReason::Server,
            other => EndReason::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndReason::Lease => "lease",
            EndReason::Topic => "topic",
            EndReason::Server => "server",
            EndReason::Other(name) => name,
        })
    }
}

/// What [`Subscription::next`] yields.
///
/// ```
/// use at_host::Update;
/// let shown = |u: &Update<i64>| match u {
///     Update::Event { n, value } => format!("{n} {value}"),
///     Update::Gap { first, last } => format!("gap: events {first} to {last} lost"),
///     Update::End { reason, .. } => format!("end: {reason}"),
/// };
/// assert_eq!(shown(&Update::Gap { first: 3, last: 4 }), "gap: events 3 to 4 lost");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Update<T> {
    /// Event `n` with the topic's value.
    Event {
        /// The event's `n`.
        n: u32,
        /// Its value.
        value: T,
    },
    /// Events `first` to `last` never came (lost in transit, dropped by
    /// the server for a slow reader, or by this client's full queue).
    Gap {
        /// The first event lost.
        first: u32,
        /// The last event lost.
        last: u32,
    },
    /// The server ended the subscription with event `n`; every later
    /// [`next`](Subscription::next) yields this again.
    End {
        /// The last event's `n`.
        n: u32,
        /// Why.
        reason: EndReason,
    },
}

/// An event as filed, before its value is converted.
enum Raw {
    Value(u32, serde_json::Value),
    End(u32, EndReason),
}

impl Raw {
    fn n(&self) -> u32 {
        match self {
            Raw::Value(n, _) | Raw::End(n, _) => *n,
        }
    }
}

/// One held topic: its queue of events and the `n`s seen.
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    /// Wakes the subscription when an event is filed (a permit is kept
    /// for one not waiting yet).
    pub(crate) posted: Notify,
}

#[derive(Default)]
struct SlotState {
    queue: VecDeque<Raw>,
    /// The largest `n` filed (events not above it are dropped).
    largest: u32,
    /// The largest `n` handed out (or reported lost).
    delivered: u32,
    /// The largest event frame filed, in bytes (for a UDP event budget).
    largest_frame: usize,
}

impl Slot {
    pub(crate) fn is_empty(&self) -> bool {
        self.state().queue.is_empty()
    }

    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The topics a client holds, by name.
#[derive(Default)]
pub(crate) struct Topics {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Topics {
    /// Holds `topic` from now on (contract 10.8 rule 11: from the moment
    /// the subscribe is sent); an error if this client holds it already
    /// (a subscription is keyed by subscriber and topic).
    fn hold(&self, topic: &str) -> Result<Arc<Slot>, Error> {
        let mut slots = self.slots();
        if slots.contains_key(topic) {
            return Err(Error::Arguments {
                func: "rpc.subscribe".into(),
                reason: format!("this client already holds a subscription to {topic:?}"),
            });
        }
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::default()),
            posted: Notify::new(),
        });
        slots.insert(topic.to_owned(), Arc::clone(&slot));
        Ok(slot)
    }

    fn release(&self, topic: &str) {
        self.slots().remove(topic);
    }

    /// Files the NOTIFY `frame` from the server: with `auth` (a key), only
    /// a sealed one that verifies and is no replay; without, only a plain
    /// one. Anything that is no event of a held topic with a new `n` is
    /// dropped (and logged at debug level); returns whether it was filed.
    pub(crate) fn file(&self, frame: &Frame<'_>, auth: Option<&mut ClientAuth>) -> bool {
        let body = match auth {
            Some(auth) => match auth.open_from_server(frame) {
                Ok(body) => body,
                Err(why) => {
                    log::debug!("dropping a NOTIFY frame (seq {}): {why:?}", frame.seq());
                    return false;
                }
            },
            None if frame.header.flags & at_core::FLAG_AUTH != 0 => {
                log::debug!(
                    "dropping a sealed NOTIFY frame (seq {}) without a key",
                    frame.seq()
                );
                return false;
            }
            None => frame.body,
        };
        self.file_body(body, at_core::HEADER_LEN + frame.body.len())
    }

    fn file_body(&self, body: &[u8], frame_len: usize) -> bool {
        let Ok(serde_json::Value::Object(mut event)) = serde_json::from_slice(body) else {
            log::debug!("dropping a NOTIFY frame whose body is no JSON object");
            return false;
        };
        if event.contains_key("func") {
            log::debug!("dropping a notification call: this client serves nothing");
            return false;
        }
        let topic = match event.remove("topic") {
            Some(serde_json::Value::String(topic)) => Some(topic),
            _ => None,
        };
        let n = event
            .get("n")
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        let (Some(topic), Some(n)) = (topic, n) else {
            log::debug!("dropping an event without a topic or n");
            return false;
        };
        let Some(slot) = self.slots().get(&topic).cloned() else {
            log::debug!("dropping an event of {topic:?}, a topic this client does not hold");
            return false;
        };
        let raw = match (event.remove("value"), event.get("end")) {
            (Some(value), None) => Raw::Value(n, value),
            (None, Some(serde_json::Value::String(end))) => Raw::End(n, EndReason::from_name(end)),
            _ => {
                log::debug!("dropping an event with neither a value nor an end");
                return false;
            }
        };
        let mut state = slot.state();
        if n <= state.largest {
            log::debug!(
                "dropping event {n} of {topic:?}: not above {}",
                state.largest
            );
            return false;
        }
        state.largest = n;
        state.largest_frame = state.largest_frame.max(frame_len);
        state.queue.push_back(raw);
        if state.queue.len() > MAX_QUEUED {
            state.queue.pop_front();
        }
        drop(state);
        slot.posted.notify_one();
        true
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The client a subscription is on.
#[derive(Clone, Copy)]
enum Link<'c> {
    Tcp(&'c Client),
    Udp(&'c UdpClient),
}

impl Link<'_> {
    fn topics(&self) -> &Topics {
        match self {
            Link::Tcp(c) => c.topics(),
            Link::Udp(c) => c.topics(),
        }
    }

    fn session_mark(&self) -> Option<(u64, bool)> {
        match self {
            Link::Tcp(c) => c.session_mark(),
            Link::Udp(c) => c.session_mark(),
        }
    }

    /// `rpc.subscribe` with `args`; on UDP padded to
    /// [`SUBSCRIBE_DATAGRAM`] bytes.
    async fn subscribe(&self, args: &[Value]) -> Result<Value, Error> {
        match self {
            Link::Tcp(c) => c.call("rpc.subscribe", args).await,
            Link::Udp(c) => {
                c.call_padded("rpc.subscribe", args, SUBSCRIBE_DATAGRAM)
                    .await
            }
        }
    }

    /// The event bytes a subscribe buys (UDP only).
    fn budget(&self) -> Option<usize> {
        match self {
            Link::Tcp(_) => None,
            Link::Udp(_) => Some(AMPLIFICATION * SUBSCRIBE_DATAGRAM),
        }
    }

    async fn pump(&self, slot: &Slot, wake: Instant) -> Result<(), Error> {
        match self {
            Link::Tcp(c) => c.pump_events(slot, wake).await,
            Link::Udp(c) => c.pump_events(slot, wake).await,
        }
    }

    fn notify_now(&self, func: &str, args: &[at_core::Value<'_>]) {
        match self {
            Link::Tcp(c) => c.notify_now(func, args),
            Link::Udp(c) => c.notify_now(func, args),
        }
    }
}

/// The result of `rpc.subscribe`.
#[derive(Deserialize)]
struct GrantWire {
    lease: u64,
    interval: u64,
    n: u32,
    credit: Option<u32>,
}

/// A subscription to one topic (contract 10.3), made with
/// [`Client::subscribe`](crate::Client::subscribe) or
/// [`UdpClient::subscribe`](crate::UdpClient::subscribe): its events, with
/// values converted to `T`, come from [`next`](Self::next).
///
/// - The lease is renewed at half of what the server granted, on plain
///   UDP also when half the credit is spent, and on UDP when half the
///   event bytes a subscribe buys are (a UDP subscribe is padded to 512
///   bytes, so a server may send 1536 bytes of events until the next:
///   contract 10.8 rule 1), while [`next`](Self::next) is awaited (or when
///   it is next called): keep calling it.
/// - Events whose `n` is not above the largest seen, or of a topic not
///   held, are dropped; a gap in `n` is [`Update::Gap`].
/// - The client goes on serving calls (from other tasks, or between two
///   `next`s) while the subscription is open; whichever waits reads.
/// - With a key, events must be sealed in the client's session (0x0018,
///   tag under `K_rep`, seq in the session's window); plain ones are
///   dropped.
/// - Dropping it sends `rpc.unsubscribe` as a notification (best effort:
///   written at once if the connection is free, else with the next frame
///   written) and drops any later event of the topic.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use at_host::{Client, Server, Update};
/// let server = Server::builder().calculator().topic("temp", "deg C").tcp("127.0.0.1:0".parse()?).start().await?;
/// let client = Client::connect(server.tcp_addr().unwrap(), std::time::Duration::from_secs(5)).await?;
/// let mut temp = client.subscribe::<f64>("temp").await?;
/// server.topic("temp").unwrap().publish(&21.5)?;
/// assert_eq!(temp.next().await?, Update::Event { n: 1, value: 21.5 });
/// // Calls go on meanwhile.
/// assert_eq!(client.call_as::<i64>("add", (1, 2)).await?, 3);
/// drop(temp); // rpc.unsubscribe
/// # server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Subscription<'c, T> {
    link: Link<'c>,
    topic: String,
    slot: Arc<Slot>,
    options: SubscribeOptions,
    granted: Granted,
    /// When the lease is renewed next.
    renew_at: Instant,
    /// The `n` at the latest grant: the credit counts from it.
    base_n: u32,
    /// With a key: the session of the latest grant (a subscription made
    /// in an older one subscribes again at once).
    session: Option<u64>,
    ended: Option<(u32, EndReason)>,
    _values: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Subscription<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .field("granted", &self.granted)
            .finish_non_exhaustive()
    }
}

impl<'c, T: DeserializeOwned> Subscription<'c, T> {
    pub(crate) async fn start_tcp(
        client: &'c Client,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Self, Error> {
        Self::start(Link::Tcp(client), topic, options).await
    }

    pub(crate) async fn start_udp(
        client: &'c UdpClient,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Self, Error> {
        Self::start(Link::Udp(client), topic, options).await
    }

    async fn start(link: Link<'c>, topic: &str, options: SubscribeOptions) -> Result<Self, Error> {
        let slot = link.topics().hold(topic)?;
        // Released if the subscribe fails or this future is dropped.
        let held = Held {
            topics: link.topics(),
            topic,
        };
        let sent = Instant::now();
        let value = link.subscribe(&args(topic, &options)).await?;
        std::mem::forget(held);
        let mut subscription = Subscription {
            link,
            topic: topic.to_owned(),
            slot,
            options,
            granted: Granted {
                lease: options.lease,
                interval: options.interval,
                n: 0,
                credit: None,
            },
            renew_at: sent,
            base_n: 0,
            session: None,
            ended: None,
            _values: PhantomData,
        };
        // On failure the drop releases the topic (and unsubscribes).
        subscription.grant(value, sent, true)?;
        Ok(subscription)
    }

    /// The topic.
    ///
    /// ```no_run
    /// # async fn f(client: &at_host::Client) -> Result<(), at_host::Error> {
    /// let subscription = client.subscribe::<i64>("calls").await?;
    /// assert_eq!(subscription.topic(), "calls");
    /// # Ok(()) }
    /// ```
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// What the server granted at the latest subscribe or renewal.
    ///
    /// ```no_run
    /// # async fn f(client: &at_host::UdpClient) -> Result<(), at_host::Error> {
    /// let subscription = client.subscribe::<f64>("temp").await?;
    /// println!("lease {:?}, credit {:?}", subscription.granted().lease, subscription.granted().credit);
    /// # Ok(()) }
    /// ```
    pub fn granted(&self) -> Granted {
        self.granted
    }

    /// The next update: an event, a gap, or the end. Waits for it,
    /// renewing the lease when due (a renewal that fails is this call's
    /// error; the next call tries again soon). An `Err` from the
    /// transport (the server went away) means the client is unusable; one
    /// converting a value ([`Error::Decode`]) only skips that event.
    ///
    /// Cancel-safe: an event filed is kept for the next call.
    ///
    /// ```no_run
    /// # async fn f(client: &at_host::Client) -> Result<(), at_host::Error> {
    /// use at_host::Update;
    /// let mut calls = client.subscribe::<u64>("calls").await?;
    /// loop {
    ///     match calls.next().await? {
    ///         Update::Event { n, value } => println!("{n} {value}"),
    ///         Update::Gap { first, last } => eprintln!("gap: events {first} to {last} lost"),
    ///         Update::End { reason, .. } => break eprintln!("end: {reason}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Result<Update<T>, Error> {
        loop {
            if let Some((n, reason)) = &self.ended {
                return Ok(Update::End {
                    n: *n,
                    reason: reason.clone(),
                });
            }
            if let Some(update) = self.take() {
                return update;
            }
            if self.renewal_due() {
                self.renew().await?;
                continue;
            }
            self.link.pump(&self.slot, self.renew_at).await?;
        }
    }

    /// The next update already filed, if any.
    fn take(&mut self) -> Option<Result<Update<T>, Error>> {
        let mut state = self.slot.state();
        let n = state.queue.front()?.n();
        if u64::from(n) > u64::from(state.delivered) + 1 {
            let gap = Update::Gap {
                first: state.delivered + 1,
                last: n - 1,
            };
            state.delivered = n - 1;
            return Some(Ok(gap));
        }
        let raw = state.queue.pop_front()?;
        state.delivered = state.delivered.max(n);
        drop(state);
        Some(match raw {
            Raw::Value(n, value) => {
                let got = value.to_string();
                serde_json::from_value::<T>(value)
                    .map(|value| Update::Event { n, value })
                    .map_err(|e| Error::Decode {
                        func: format!("event {n} of {}", self.topic),
                        expected: std::any::type_name::<T>(),
                        got,
                        reason: e.to_string(),
                    })
            }
            Raw::End(n, reason) => {
                self.ended = Some((n, reason.clone()));
                Ok(Update::End { n, reason })
            }
        })
    }

    /// Half the lease has passed, or (plain UDP) half the credit is spent,
    /// or (with a key) the session it was made in is no longer the live
    /// one or was refused: the renewal then subscribes in a new session
    /// (10.6, 10.8 rule 6).
    fn renewal_due(&self) -> bool {
        if Instant::now() >= self.renew_at {
            return true;
        }
        if let Some((generation, refused)) = self.link.session_mark()
            && (refused || Some(generation) != self.session)
        {
            return true;
        }
        let (used, largest_frame) = {
            let state = self.slot.state();
            (
                state.largest.saturating_sub(self.base_n),
                state.largest_frame,
            )
        };
        // UDP: half the bytes the subscribe bought, counting every event
        // since (lost ones too) at the largest size seen.
        if let Some(budget) = self.link.budget()
            && 2 * (used as usize).saturating_mul(largest_frame) >= budget
        {
            return true;
        }
        match self.granted.credit {
            Some(credit) if credit > 0 => credit.saturating_sub(used) <= credit / 2,
            _ => false,
        }
    }

    /// Subscribes again (a renewal: lease restarted, credit refilled). One
    /// that fails `unauthorized` is tried once more at once, in a new
    /// session (10.8 rule 6); any other failure retries soon.
    async fn renew(&mut self) -> Result<(), Error> {
        let args = args(&self.topic, &self.options);
        let mut sent = Instant::now();
        let mut outcome = self.link.subscribe(&args).await;
        if matches!(&outcome, Err(e) if e.code() == Some(at_core::ErrorCode::Unauthorized)) {
            sent = Instant::now();
            outcome = self.link.subscribe(&args).await;
        }
        match outcome.and_then(|value| self.grant(value, sent, false)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let soon = (self.granted.lease / 4)
                    .clamp(Duration::from_millis(100), Duration::from_secs(1));
                self.renew_at = Instant::now() + soon;
                // Credit spent: wait for the time, not the credit.
                self.base_n = self.slot.state().largest;
                Err(e)
            }
        }
    }

    /// Takes the reply to a subscribe sent at `sent`.
    fn grant(&mut self, value: Value, sent: Instant, first: bool) -> Result<(), Error> {
        let wire: GrantWire = convert::from_result("rpc.subscribe", value)?;
        self.session = self.link.session_mark().map(|(generation, _)| generation);
        let lease = Duration::from_secs(wire.lease.clamp(1, 300));
        self.granted = Granted {
            lease,
            interval: Duration::from_millis(wire.interval),
            n: wire.n,
            credit: wire.credit,
        };
        self.renew_at = sent + lease / 2;
        self.base_n = wire.n;
        let mut state = self.slot.state();
        if wire.n < state.largest {
            // The server's subscription is not the one whose events we
            // saw (10.8 rule 11).
            state.largest = wire.n;
            state.delivered = wire.n;
        } else if first {
            // Events up to n were sent before we held the topic.
            state.largest = wire.n;
            state.delivered = state.delivered.max(wire.n);
        }
        Ok(())
    }
}

impl<T> Drop for Subscription<'_, T> {
    fn drop(&mut self) {
        self.link.topics().release(&self.topic);
        if self.ended.is_none() {
            let topic = [at_core::Value::str(&self.topic)];
            self.link.notify_now("rpc.unsubscribe", &topic);
        }
    }
}

/// A topic held while its first subscribe is out.
struct Held<'a> {
    topics: &'a Topics,
    topic: &'a str,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.topics.release(self.topic);
    }
}

fn args(topic: &str, options: &SubscribeOptions) -> [Value; 3] {
    [
        Value::Str(topic.to_owned()),
        Value::Int(options.lease_secs()),
        Value::Int(options.interval_ms()),
    ]
}
