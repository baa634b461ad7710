//! Topics and subscriptions (contract 10.3), on TCP for now: a [`Topic`]
//! handle publishes values from anywhere; each connection that subscribes
//! gets an [`Outbox`], a bounded queue of event frames its loop writes
//! between replies. A server without topics never creates one, so its
//! call path is unchanged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use at_core::{ErrorCode, Kind, Value};
use tokio::sync::Notify;

/// Most subscriptions one subscriber (a TCP connection) holds at once; one
/// more is `busy` "subscription table full" (a renewal needs no slot).
pub const MAX_PER_SUBSCRIBER: usize = 4;

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

/// Why a subscription's last event ends it.
#[derive(Clone, Copy)]
enum End {
    Lease,
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
        self.outbox.push(body.as_bytes());
        if state.n == u32::MAX {
            state.ended = true;
        }
    }

    fn end(&self, state: &mut SubState, why: End) {
        let End::Lease = why;
        if !state.ended {
            state.pending = None;
            self.emit(state, "\"end\": \"lease\"");
            state.ended = true;
        }
    }
}

/// The events of one connection, waiting to be written between replies.
pub(super) struct Outbox {
    queue: Mutex<VecDeque<Vec<u8>>>,
    wake: Notify,
    /// The server's event seq for this connection, from 1.
    seq: AtomicU32,
    runtime: tokio::runtime::Handle,
    subs: Mutex<Vec<Arc<Subscription>>>,
}

impl Outbox {
    fn push(&self, body: &[u8]) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut frame = vec![0u8; at_core::HEADER_LEN + body.len()];
        if at_core::encode_frame(Kind::Notify, seq, body, &mut frame).is_err() {
            return;
        }
        let mut queue = lock(&self.queue);
        if queue.len() < EVENT_QUEUE {
            queue.push_back(frame);
            drop(queue);
            self.wake.notify_one();
        }
    }
}

/// A connection's subscriptions: none until it subscribes; every one ends
/// when this is dropped (with the connection).
#[derive(Default)]
pub(super) struct Events(Option<Arc<Outbox>>);

impl Drop for Events {
    fn drop(&mut self) {
        if let Some(outbox) = &self.0 {
            for sub in lock(&outbox.subs).drain(..) {
                lock(&sub.state).ended = true;
            }
        }
    }
}

impl Events {
    /// Waits until an event is queued (forever without subscriptions).
    pub(super) async fn ready(&self) {
        match &self.0 {
            Some(outbox) => outbox.wake.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Moves queued events into `out[*pending..]` while room for `keep`
    /// more bytes stays (a reply's); whether some are still queued.
    pub(super) fn drain(&self, out: &mut [u8], pending: &mut usize, keep: usize) -> bool {
        let Some(outbox) = &self.0 else { return false };
        let mut queue = lock(&outbox.queue);
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
}

/// Answers `rpc.subscribe`, `rpc.unsubscribe` and `rpc.topics` in `body`
/// for a connection with `events`; `None` for any other body.
pub(super) fn answer(
    topics: &[Topic],
    seq: u32,
    body: &[u8],
    events: &mut Events,
    out: &mut [u8],
) -> Option<usize> {
    let request = at_core::Request::parse(body).ok()?;
    let func = request.func.as_plain()?;
    let args = &request.args;
    let text = match func {
        "rpc.topics" => {
            let list: Vec<_> = topics
                .iter()
                .map(|t| {
                    format!(
                        "{{\"name\": \"{}\", \"doc\": {}}}",
                        t.0.name,
                        serde_json::to_string(&t.0.doc).unwrap_or_else(|_| "\"\"".into())
                    )
                })
                .collect();
            Ok(format!(
                "{{\"topics\": [{}], \"next\": null}}",
                list.join(", ")
            ))
        }
        "rpc.subscribe" => subscribe(topics, args, events),
        "rpc.unsubscribe" => match args.as_slice() {
            [Value::Str(name)] => {
                let name = name.to_string();
                let mut ended = false;
                if let Some(outbox) = &events.0 {
                    let mut subs = lock(&outbox.subs);
                    if let Some(i) = subs.iter().position(|s| s.topic == name) {
                        lock(&subs[i].state).ended = true;
                        subs.remove(i);
                        ended = true;
                    }
                }
                Ok(ended.to_string())
            }
            _ => Err((ErrorCode::InvalidArguments, "expected a topic name")),
        },
        _ => return None,
    };
    match text {
        Ok(result) => {
            let body = format!("{{\"status\": \"success\", \"result\": {result}}}");
            at_core::encode_frame(Kind::Response, seq, body.as_bytes(), out).ok()
        }
        Err((code, message)) => at_core::write_error_frame(seq, code, message, out).ok(),
    }
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

fn subscribe(
    topics: &[Topic],
    args: &[Value<'_>],
    events: &mut Events,
) -> Result<String, (ErrorCode, &'static str)> {
    const BAD: (ErrorCode, &str) = (
        ErrorCode::InvalidArguments,
        "expected topic, lease 1..300 s, interval ms",
    );
    let (Some(Value::Str(name)), true) = (args.first(), args.len() <= 3) else {
        return Err(BAD);
    };
    let name = name.to_string();
    let lease = int_arg(args, 1, 60, 1..=300).ok_or(BAD)?;
    let interval = int_arg(args, 2, 0, 0..=u64::from(u32::MAX)).ok_or(BAD)?;
    if !valid_name(&name) {
        return Err(BAD);
    }
    let topic = topics
        .iter()
        .find(|t| t.0.name == name)
        .ok_or((ErrorCode::UnknownTopic, "unknown topic"))?;
    let outbox = events.0.get_or_insert_with(|| {
        Arc::new(Outbox {
            queue: Mutex::default(),
            wake: Notify::new(),
            seq: AtomicU32::new(1),
            runtime: tokio::runtime::Handle::current(),
            subs: Mutex::default(),
        })
    });
    let lease_until = Instant::now() + Duration::from_secs(lease);
    let interval_d = Duration::from_millis(interval);
    let mut subs = lock(&outbox.subs);
    if let Some(sub) = subs.iter().find(|s| s.topic == name) {
        let mut state = lock(&sub.state);
        state.lease_until = lease_until;
        state.interval = interval_d;
        // The lease task already running sees the new end.
        let n = state.n;
        drop(state);
        return Ok(result(&name, lease, interval, n));
    }
    if subs.len() >= MAX_PER_SUBSCRIBER {
        return Err((ErrorCode::Busy, "subscription table full"));
    }
    let sub = Arc::new(Subscription {
        topic: name.clone(),
        outbox: Arc::clone(outbox),
        state: Mutex::new(SubState {
            n: 0,
            lease_until,
            interval: interval_d,
            last_sent: None,
            pending: None,
            timer: false,
            ended: false,
        }),
    });
    subs.push(Arc::clone(&sub));
    drop(subs);
    spawn_lease(&sub, lease_until);
    let last = {
        let mut state = lock(&topic.0.state);
        state.subs.push(Arc::clone(&sub));
        state.last.clone()
    };
    // A state topic: its value is event 1, queued now, written after the
    // reply (which goes out first).
    if let Some(value) = last {
        sub.offer(&value);
    }
    Ok(result(&name, lease, interval, 0))
}

fn result(name: &str, lease: u64, interval: u64, n: u32) -> String {
    format!(
        "{{\"topic\": \"{name}\", \"lease\": {lease}, \"interval\": {interval}, \"n\": {n}, \"credit\": null}}"
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
            if state.ended {
                return;
            }
            if Instant::now() < state.lease_until {
                until = state.lease_until;
                continue;
            }
            sub.end(&mut state, End::Lease);
            drop(state);
            lock(&sub.outbox.subs).retain(|s| !Arc::ptr_eq(s, &sub));
            return;
        }
    });
}
