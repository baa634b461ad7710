//! Topics and subscriptions on a device (contract section 10.3): a fixed
//! table of `N` subscriptions to `T` topics, leases counted on the clock the
//! board passes in, and the events that are due, written straight into the
//! caller's buffer.
//!
//! - A firmware declares its [`Topic`]s in a `static` array and calls
//!   [`Subscriptions::publish`] with a topic and its new value whenever it
//!   has one; nothing is sent then.
//! - The servers answer `rpc.subscribe`, `rpc.unsubscribe` and `rpc.topics`
//!   through the [`Topics`] trait (in the one request -> reply path), and
//!   after serving their requests ask [`Subscriptions::take_due`] for the
//!   events due on their transport, which they send.
//! - `interval` coalescing keeps only the newest value: a subscription has
//!   at most one event pending, carrying the topic's latest value when it
//!   leaves. A replaced value takes no `n`; an event taken but not sent (a
//!   slow reader) does, so the subscriber sees the gap.
//! - A subscriber holds at most [`PER_SUBSCRIBER`] subscriptions; one more,
//!   or one more than `N` in all, is `busy`. A renewal needs no new slot.
//! - Plain UDP: at most [`UDP_CREDIT`] events per subscribe, and the frames
//!   sent towards a UDP address total at most [`AMPLIFICATION`] times the
//!   size of its last subscribe datagram (contract 10.8 rule 1); past that
//!   the subscription ends without a last event.
//!
//! ```
//! use at_core::association::Origin;
//! use at_core::subscriptions::{Subscriber, Subscriptions, Topic, Topics, SubscribeArgs};
//! use at_core::Value;
//!
//! static TOPICS: [Topic; 1] = [Topic::state("uptime", "seconds since boot")];
//! let mut table = Subscriptions::<4, 1>::new(&TOPICS);
//! table.publish("uptime", Value::Int(7)).unwrap();
//! let args = SubscribeArgs { topic: "uptime", lease: 60, interval: 0 };
//! let granted = table.subscribe(Subscriber::Plain(Origin::SERIAL), Origin::SERIAL, &args, 60, 0).unwrap();
//! assert_eq!((granted.lease, granted.n, granted.credit), (60, 0, None));
//! // A state topic's value is event 1, right away.
//! let mut out = [0u8; 96];
//! let due = table.take_due(0, &|_| true, &mut out).unwrap();
//! assert_eq!(&out[16..due.len], br#"{"topic": "uptime", "n": 1, "value": 7}"#);
//! assert!(table.take_due(0, &|_| true, &mut out).is_none());
//! ```

use crate::association::{Origin, Transport};
use crate::body::Reply;
use crate::error::ErrorCode;
use crate::event::{End, Event, Payload};
use crate::frame::{BufferTooSmall, encode_frame_with};
use crate::header::Kind;
use crate::json::Writer;
use crate::page::{start_of, too_small, write_paged};
use crate::reply::{write_error_frame, write_reply};
use crate::value::{JsonStr, Value};

/// A session id's length (section 9's `SID`).
pub const SESSION_ID_LEN: usize = 8;
/// What sealing adds to a frame: the session id and a 16-byte tag
/// (section 9's trailer).
pub const SEALED_EXTRA: usize = SESSION_ID_LEN + 16;

/// The most subscriptions one subscriber holds (the contract's SHOULD).
pub const PER_SUBSCRIBER: usize = 4;
/// Events a plain UDP subscription carries per subscribe.
pub const UDP_CREDIT: u32 = 16;
/// How many times its subscribe datagram's size the frames sent towards a
/// UDP address may total (contract 10.8 rule 1).
pub const AMPLIFICATION: u32 = 3;
/// The lease when `rpc.subscribe` names none, in seconds.
pub const DEFAULT_LEASE_S: u32 = 60;
/// The longest lease, in seconds.
pub const MAX_LEASE_S: u32 = 300;

/// A topic a server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topic {
    /// Its name: 1 to 64 ASCII letters, digits, `-`, `_`, `.` or `/`.
    pub name: &'static str,
    /// One line for people, listed by `rpc.topics`.
    pub doc: &'static str,
    /// Whether it has a state: a new subscriber gets the latest value as
    /// event 1, right after the reply.
    pub state: bool,
}

impl Topic {
    /// A topic of events (a new subscriber waits for the next one).
    ///
    /// # Panics
    /// On a name the contract does not allow, or an `rpc.` name: in a
    /// `static` table, at compile time.
    pub const fn new(name: &'static str, doc: &'static str) -> Topic {
        assert!(
            is_valid_topic(name) && !crate::dispatch::is_reserved(name),
            "a topic is 1 to 64 of A-Z a-z 0-9 - _ . / and not rpc.*"
        );
        Topic {
            name,
            doc,
            state: false,
        }
    }

    /// A topic with a state (a new subscriber gets the latest value at
    /// once). Panics as [`Topic::new`] does.
    pub const fn state(name: &'static str, doc: &'static str) -> Topic {
        let topic = Topic::new(name, doc);
        Topic {
            state: true,
            ..topic
        }
    }
}

/// Whether `name` is a topic name the contract allows: 1 to 64 ASCII
/// letters, digits, `-`, `_`, `.` or `/`.
pub const fn is_valid_topic(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 64 {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.' || c == b'/') {
            return false;
        }
        i += 1;
    }
    true
}

/// Who holds a subscription: the request's association, or with
/// authentication its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscriber {
    /// A plain subscription: the connection, UDP address or serial line.
    Plain(Origin),
    /// A sealed subscription: the session it was made in.
    Session([u8; SESSION_ID_LEN]),
}

/// `rpc.subscribe`'s arguments, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscribeArgs<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The lease asked for, in seconds (1 to 300).
    pub lease: u32,
    /// The interval asked for, in milliseconds.
    pub interval: u32,
}

impl<'a> SubscribeArgs<'a> {
    /// Reads `[topic, lease?, interval?]`.
    pub fn parse(args: &[Value<'a>]) -> Result<SubscribeArgs<'a>, SubscribeError> {
        let usage = SubscribeError::InvalidArguments(
            "rpc.subscribe takes topic, lease (1 to 300 s), interval (ms)",
        );
        let (topic, lease, interval) = match args {
            [t] => (t, None, None),
            [t, l] => (t, Some(l), None),
            [t, l, i] => (t, Some(l), Some(i)),
            _ => return Err(usage),
        };
        let topic = topic
            .as_str()
            .and_then(|s| s.as_plain())
            .filter(|s| is_valid_topic(s))
            .ok_or(usage)?;
        let lease = match lease {
            None => DEFAULT_LEASE_S,
            Some(Value::Int(l)) if (1..=i64::from(MAX_LEASE_S)).contains(l) => *l as u32,
            Some(_) => return Err(usage),
        };
        let interval = match interval {
            None => 0,
            Some(Value::Int(i)) => u32::try_from(*i).map_err(|_| usage)?,
            Some(_) => return Err(usage),
        };
        Ok(SubscribeArgs {
            topic,
            lease,
            interval,
        })
    }
}

/// What `rpc.subscribe` granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The lease, in seconds.
    pub lease: u32,
    /// The interval, in milliseconds.
    pub interval: u32,
    /// `n` of the last event made for the subscription (0 when new).
    pub n: u32,
    /// Events left (plain UDP), else `None`.
    pub credit: Option<u32>,
}

/// Why `rpc.subscribe` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeError {
    /// Bad arguments (`invalid_arguments`), with the message.
    InvalidArguments(&'static str),
    /// The server has no such topic (`unknown_topic`).
    UnknownTopic,
    /// The table, or the subscriber's share of it, is full (`busy`).
    Full,
}

impl SubscribeError {
    /// The error code and message of the reply.
    pub fn reply(self) -> (ErrorCode, &'static str) {
        match self {
            SubscribeError::InvalidArguments(m) => (ErrorCode::InvalidArguments, m),
            SubscribeError::UnknownTopic => (ErrorCode::UnknownTopic, "unknown topic"),
            SubscribeError::Full => (ErrorCode::Busy, "subscription table full"),
        }
    }
}

/// A call of `rpc.subscribe`, `rpc.unsubscribe` or `rpc.topics`, as the
/// request -> reply path hands it to [`Topics::answer`].
#[derive(Clone, Copy, Debug)]
pub struct TopicCall<'c, 'v> {
    /// The function.
    pub func: &'c str,
    /// Its arguments.
    pub args: &'c [Value<'v>],
    /// The request's seq.
    pub seq: u32,
    /// Who asks.
    pub who: Subscriber,
    /// Where the request came from (where events go).
    pub to: Origin,
    /// The request's size as it came.
    pub request_len: usize,
    /// The board's clock, in ms.
    pub now: u64,
}

/// What the request -> reply path asks of a server's topics: `rpc.subscribe`,
/// `rpc.unsubscribe` and `rpc.topics`, and the events due. [`Subscriptions`]
/// implements it. (The answering is a method here, so a server without
/// topics links none of it.)
pub trait Topics {
    /// Answers `call` (one of the three functions) into `out`: the reply
    /// frame's length.
    fn answer(&mut self, call: &TopicCall<'_, '_>, out: &mut [u8]) -> Option<usize> {
        let (args, seq) = (call.args, call.seq);
        let invalid = |message, out: &mut [u8]| {
            write_error_frame(seq, ErrorCode::InvalidArguments, message, out).ok()
        };
        match call.func {
            "rpc.subscribe" => {
                let granted = SubscribeArgs::parse(args).and_then(|a| {
                    let g = self.subscribe(call.who, call.to, &a, call.request_len, call.now);
                    g.map(|g| (a.topic, g))
                });
                match granted {
                    Ok((topic, g)) => write_granted(topic, &g, seq, out)
                        .ok()
                        .or_else(|| too_small(seq, out)),
                    Err(e) => {
                        let (code, message) = e.reply();
                        write_error_frame(seq, code, message, out).ok()
                    }
                }
            }
            "rpc.unsubscribe" => match args {
                [Value::Str(t)] => {
                    let ended = t.as_plain().is_some_and(|t| self.unsubscribe(call.who, t));
                    write_reply(seq, &Reply::Success(Value::Bool(ended)), out).ok()
                }
                _ => invalid("rpc.unsubscribe takes a topic", out),
            },
            _ => {
                let Some(start) = start_of(args) else {
                    return invalid("rpc.topics takes one optional integer start >= 0", out);
                };
                write_paged("topics", start, seq, out, &mut |w, i, separate, doc| {
                    self.topic(i).map(|t| write_topic(w, separate, &t, doc))
                })
                .ok()
                .or_else(|| too_small(seq, out))
            }
        }
    }

    /// Makes or renews the subscription of `who` to `args.topic`; events go
    /// to `to`. `request_len` is the size of the request as it came (its
    /// datagram's, on UDP); `now` the board's clock in ms.
    fn subscribe(
        &mut self,
        who: Subscriber,
        to: Origin,
        args: &SubscribeArgs<'_>,
        request_len: usize,
        now: u64,
    ) -> Result<Granted, SubscribeError>;

    /// Ends the subscription of `who` to `topic`; whether there was one.
    fn unsubscribe(&mut self, who: Subscriber, topic: &str) -> bool;

    /// Topic `index` in a stable order, for `rpc.topics`.
    fn topic(&self, index: usize) -> Option<Topic>;

    /// The next event due at `now` towards a destination `accept` takes:
    /// written as a whole plain frame (seq 0: the caller sets it) into
    /// `out`. Counts it in its subscription's `n` at once: an event the
    /// caller then cannot send is lost, and the subscriber sees the gap.
    /// A lease that ran out gives the `"end": "lease"` event; a spent
    /// credit, a frame over the amplification budget or one `out` cannot
    /// hold ends the subscription without one. `None`: nothing due.
    fn take_due(
        &mut self,
        now: u64,
        accept: &dyn Fn(&Origin) -> bool,
        out: &mut [u8],
    ) -> Option<Due>;

    /// Ends every subscription of `who` (its connection closed).
    fn drop_subscriber(&mut self, who: Subscriber);
}

/// An event [`Subscriptions::take_due`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// Its subscriber: a plain frame gets the association's next seq
    /// ([`set_seq`]), a sealed one is sealed in the session
    /// ([`crate::auth::Guard::seal_server_frame`]).
    pub who: Subscriber,
    /// Where it goes.
    pub to: Origin,
    /// The plain frame's length in the buffer (its seq still 0).
    pub len: usize,
}

/// Writes `seq` into the header of the frame in `frame` (the CRC covers
/// the body only, so it stays right).
pub fn set_seq(frame: &mut [u8], seq: u32) {
    if let Some(field) = frame.get_mut(4..8) {
        field.copy_from_slice(&seq.to_be_bytes());
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    who: Subscriber,
    to: Origin,
    topic: u8,
    /// When the lease runs out (ms).
    expires: u64,
    interval: u32,
    /// The earliest time the next event may leave (ms).
    next_at: u64,
    n: u32,
    /// A value is waiting to leave.
    pending: bool,
    /// Events left (plain UDP).
    credit: Option<u32>,
    /// Bytes left towards a UDP address.
    budget: Option<u32>,
}

/// A fixed table of up to `N` subscriptions to `T` topics, with the latest
/// value of each topic. Put it in a `static` on a device and share it
/// between the board's servers, as the guard is.
pub struct Subscriptions<'t, const N: usize, const T: usize> {
    topics: &'t [Topic; T],
    latest: [Option<Value<'static>>; T],
    entries: [Option<Entry>; N],
}

impl<'t, const N: usize, const T: usize> Subscriptions<'t, N, T> {
    const CHECK: () = assert!(T <= u8::MAX as usize, "at most 255 topics");

    /// An empty table over `topics`.
    pub const fn new(topics: &'t [Topic; T]) -> Self {
        let () = Self::CHECK;
        Subscriptions {
            topics,
            latest: [None; T],
            entries: [None; N],
        }
    }

    /// How many subscriptions are held.
    pub fn len(&self) -> usize {
        self.entries.iter().flatten().count()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new value of `topic`: kept as its latest (its state), and due to
    /// every subscriber of it (replacing a value still waiting).
    pub fn publish(&mut self, topic: &str, value: Value<'static>) -> Result<(), UnknownTopic> {
        let index = self.index(topic).ok_or(UnknownTopic)?;
        self.latest[index] = Some(value);
        for e in self.entries.iter_mut().flatten() {
            if usize::from(e.topic) == index {
                e.pending = true;
            }
        }
        Ok(())
    }

    /// The earliest time (ms) an event may become due (a lease end or an
    /// interval's end with a value waiting), for a board that sleeps.
    pub fn next_deadline(&self) -> Option<u64> {
        self.entries
            .iter()
            .flatten()
            .map(|e| match e.pending {
                true => e.next_at.min(e.expires),
                false => e.expires,
            })
            .min()
    }

    fn index(&self, topic: &str) -> Option<usize> {
        self.topics.iter().position(|t| t.name == topic)
    }
}

impl<const N: usize, const T: usize> Topics for Subscriptions<'_, N, T> {
    fn subscribe(
        &mut self,
        who: Subscriber,
        to: Origin,
        args: &SubscribeArgs<'_>,
        request_len: usize,
        now: u64,
    ) -> Result<Granted, SubscribeError> {
        let index = self.index(args.topic).ok_or(SubscribeError::UnknownTopic)?;
        let datagram = to.transport == Transport::Datagram;
        let plain_udp = datagram && matches!(who, Subscriber::Plain(_));
        let credit = plain_udp.then_some(UDP_CREDIT);
        let budget = datagram.then(|| {
            u32::try_from(request_len)
                .unwrap_or(u32::MAX)
                .saturating_mul(AMPLIFICATION)
        });
        let expires = now.saturating_add(u64::from(args.lease) * 1000);
        let held = |e: &Entry| e.who == who && usize::from(e.topic) == index;
        if let Some(e) = self.entries.iter_mut().flatten().find(|e| held(e)) {
            // A renewal: lease restarted, interval replaced, n kept.
            e.to = to;
            e.expires = expires;
            e.interval = args.interval;
            e.credit = credit;
            e.budget = budget;
            return Ok(Granted {
                lease: args.lease,
                interval: args.interval,
                n: e.n,
                credit,
            });
        }
        let mine = self
            .entries
            .iter()
            .flatten()
            .filter(|e| e.who == who)
            .count();
        if mine >= PER_SUBSCRIBER {
            return Err(SubscribeError::Full);
        }
        let slot = self
            .entries
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(SubscribeError::Full)?;
        let state = self.topics[index].state && self.latest[index].is_some();
        *slot = Some(Entry {
            who,
            to,
            topic: index as u8,
            expires,
            interval: args.interval,
            next_at: now,
            n: 0,
            pending: state,
            credit,
            budget,
        });
        Ok(Granted {
            lease: args.lease,
            interval: args.interval,
            n: 0,
            credit,
        })
    }

    fn unsubscribe(&mut self, who: Subscriber, topic: &str) -> bool {
        let Some(index) = self.index(topic) else {
            return false;
        };
        for slot in &mut self.entries {
            if slot.is_some_and(|e| e.who == who && usize::from(e.topic) == index) {
                *slot = None;
                return true;
            }
        }
        false
    }

    fn topic(&self, index: usize) -> Option<Topic> {
        self.topics.get(index).copied()
    }

    fn drop_subscriber(&mut self, who: Subscriber) {
        for slot in &mut self.entries {
            if slot.is_some_and(|e| e.who == who) {
                *slot = None;
            }
        }
    }

    fn take_due(
        &mut self,
        now: u64,
        accept: &dyn Fn(&Origin) -> bool,
        out: &mut [u8],
    ) -> Option<Due> {
        for slot in &mut self.entries {
            let Some(e) = slot.as_mut() else { continue };
            if !accept(&e.to) {
                continue;
            }
            let expired = now >= e.expires;
            if !(expired || e.pending && now >= e.next_at) {
                continue;
            }
            let topic = self.topics[usize::from(e.topic)];
            let value = self.latest[usize::from(e.topic)];
            let payload = match (expired, value) {
                (false, Some(v)) => Payload::Value(v),
                (false, None) => {
                    // Pending with no value: never published; nothing to send.
                    e.pending = false;
                    continue;
                }
                (true, _) => Payload::End(End::Lease),
            };
            e.n = e.n.saturating_add(1);
            e.pending = false;
            e.next_at = now.saturating_add(u64::from(e.interval));
            let event = Event {
                topic: JsonStr::new(topic.name),
                n: e.n,
                payload,
            };
            let written = encode_frame_with(Kind::Notify, 0, out, |body| {
                event.write(body).map_err(|_| crate::frame::BufferTooSmall)
            });
            let sealed = matches!(e.who, Subscriber::Session(_));
            let cost = written
                .ok()
                .map(|len| len + if sealed { SEALED_EXTRA } else { 0 });
            let mut ends = expired || e.n == u32::MAX;
            if let Some(credit) = &mut e.credit {
                *credit = credit.saturating_sub(1);
                ends |= *credit == 0;
            }
            let affordable = match (&mut e.budget, cost) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(budget), Some(cost)) => {
                    match budget.checked_sub(u32::try_from(cost).unwrap_or(u32::MAX)) {
                        Some(left) => {
                            *budget = left;
                            true
                        }
                        None => false,
                    }
                }
            };
            let due = Due {
                who: e.who,
                to: e.to,
                len: written.unwrap_or(0),
            };
            if ends || !affordable {
                *slot = None;
            }
            if affordable {
                return Some(due);
            }
        }
        None
    }
}

/// `rpc.subscribe`'s result, members in the contract's order.
fn write_granted(
    topic: &str,
    g: &Granted,
    seq: u32,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    encode_frame_with(Kind::Response, seq, out, |body| {
        let mut w = Writer::new(body);
        w.raw("{\"status\": \"success\", \"result\": {\"topic\": ")?;
        w.string(&JsonStr::new(topic))?;
        w.raw(", \"lease\": ")?;
        w.int(i64::from(g.lease))?;
        w.raw(", \"interval\": ")?;
        w.int(i64::from(g.interval))?;
        w.raw(", \"n\": ")?;
        w.int(i64::from(g.n))?;
        w.raw(", \"credit\": ")?;
        match g.credit {
            Some(c) => w.int(i64::from(c))?,
            None => w.raw("null")?,
        }
        w.raw("}}")?;
        Ok(w.len())
    })
}

/// One `rpc.topics` entry.
fn write_topic(
    w: &mut Writer<'_>,
    separate: bool,
    t: &Topic,
    doc: bool,
) -> Result<(), BufferTooSmall> {
    if separate {
        w.raw(", ")?;
    }
    w.raw("{\"name\": ")?;
    w.string(&JsonStr::new(t.name))?;
    w.raw(", \"doc\": ")?;
    w.string(&JsonStr::new(if doc { t.doc } else { "" }))?;
    w.raw("}")
}

/// [`Subscriptions::publish`] named a topic the table does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownTopic;

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::SocketAddr;

    static TOPICS: [Topic; 2] = [
        Topic::state("uptime", "seconds since boot"),
        Topic::new("calls", "calls answered"),
    ];

    fn udp(port: u16) -> Origin {
        let addr = SocketAddr::from(([10, 0, 2, 2], port));
        Origin::from(Transport::Datagram, addr)
    }

    fn args(topic: &str, lease: u32, interval: u32) -> SubscribeArgs<'_> {
        SubscribeArgs {
            topic,
            lease,
            interval,
        }
    }

    fn body(out: &[u8], due: Due) -> &str {
        core::str::from_utf8(&out[16..due.len]).unwrap()
    }

    #[test]
    fn arguments_are_checked() {
        let t = Value::Str(JsonStr::new("temp"));
        let bad = |a: &[Value<'_>]| SubscribeArgs::parse(a).is_err();
        assert_eq!(SubscribeArgs::parse(&[t]).unwrap(), args("temp", 60, 0));
        assert!(bad(&[]));
        assert!(bad(&[t, Value::Int(0)]));
        assert!(bad(&[t, Value::Int(301)]));
        assert!(bad(&[t, Value::Int(60), Value::Int(-1)]));
        assert!(bad(&[t, Value::Float(6.5)]));
        assert!(bad(&[Value::Str(JsonStr::new("no space"))]));
        assert!(bad(&[Value::Int(1)]));
    }

    #[test]
    fn n_counts_every_event_and_coalescing_keeps_the_newest() {
        let mut t = Subscriptions::<4, 2>::new(&TOPICS);
        let who = Subscriber::Plain(Origin::SERIAL);
        let g = t.subscribe(who, Origin::SERIAL, &args("calls", 60, 1000), 60, 0);
        assert_eq!(g.unwrap().n, 0);
        let mut out = [0u8; 128];
        assert!(
            t.take_due(0, &|_| true, &mut out).is_none(),
            "no state, no value"
        );
        t.publish("calls", Value::Int(1)).unwrap();
        let due = t.take_due(0, &|_| true, &mut out).unwrap();
        assert_eq!(body(&out, due), r#"{"topic": "calls", "n": 1, "value": 1}"#);
        // Within the interval: values replace each other, none leaves.
        t.publish("calls", Value::Int(2)).unwrap();
        t.publish("calls", Value::Int(3)).unwrap();
        assert!(t.take_due(999, &|_| true, &mut out).is_none());
        let due = t.take_due(1000, &|_| true, &mut out).unwrap();
        assert_eq!(body(&out, due), r#"{"topic": "calls", "n": 2, "value": 3}"#);
        // A renewal keeps n.
        let g = t.subscribe(who, Origin::SERIAL, &args("calls", 60, 0), 60, 2000);
        assert_eq!(g.unwrap().n, 2);
    }

    #[test]
    fn a_lease_ends_with_an_end_event_and_renewal_keeps_it() {
        let mut t = Subscriptions::<4, 2>::new(&TOPICS);
        let who = Subscriber::Plain(Origin::SERIAL);
        t.subscribe(who, Origin::SERIAL, &args("calls", 2, 0), 60, 0)
            .unwrap();
        let mut out = [0u8; 128];
        t.subscribe(who, Origin::SERIAL, &args("calls", 2, 0), 60, 1500)
            .unwrap();
        assert!(t.take_due(3000, &|_| true, &mut out).is_none(), "renewed");
        let due = t.take_due(3500, &|_| true, &mut out).unwrap();
        assert_eq!(
            body(&out, due),
            r#"{"topic": "calls", "n": 1, "end": "lease"}"#
        );
        assert!(t.is_empty());
    }

    #[test]
    fn the_table_and_a_subscribers_share_are_bounded() {
        static MANY: [Topic; 6] = [
            Topic::new("a", ""),
            Topic::new("b", ""),
            Topic::new("c", ""),
            Topic::new("d", ""),
            Topic::new("e", ""),
            Topic::new("f", ""),
        ];
        let mut t = Subscriptions::<5, 6>::new(&MANY);
        let one = Subscriber::Plain(udp(1));
        for name in ["a", "b", "c", "d"] {
            t.subscribe(one, udp(1), &args(name, 60, 0), 60, 0).unwrap();
        }
        let e = t.subscribe(one, udp(1), &args("e", 60, 0), 60, 0);
        assert_eq!(e, Err(SubscribeError::Full), "four per subscriber");
        assert!(
            t.subscribe(one, udp(1), &args("a", 60, 0), 60, 0).is_ok(),
            "renewal"
        );
        let two = Subscriber::Plain(udp(2));
        t.subscribe(two, udp(2), &args("e", 60, 0), 60, 0).unwrap();
        let f = t.subscribe(two, udp(2), &args("f", 60, 0), 60, 0);
        assert_eq!(f, Err(SubscribeError::Full), "five in all");
        assert_eq!(
            t.subscribe(two, udp(2), &args("zz", 60, 0), 60, 0),
            Err(SubscribeError::UnknownTopic)
        );
        assert!(t.unsubscribe(one, "a") && !t.unsubscribe(one, "a"));
    }

    #[test]
    fn plain_udp_ends_after_its_credit_and_its_budget() {
        let mut t = Subscriptions::<4, 2>::new(&TOPICS);
        let who = Subscriber::Plain(udp(9));
        let g = t.subscribe(who, udp(9), &args("calls", 60, 0), 1000, 0);
        assert_eq!(g.unwrap().credit, Some(UDP_CREDIT));
        let mut out = [0u8; 128];
        let mut sent = 0;
        for i in 0..40 {
            t.publish("calls", Value::Int(i)).unwrap();
            if t.take_due(0, &|_| true, &mut out).is_some() {
                sent += 1;
            }
        }
        assert_eq!(sent, UDP_CREDIT);
        assert!(t.is_empty());
        // A small subscribe datagram: 3 x 60 bytes pays for 3 events of 57.
        t.subscribe(who, udp(9), &args("calls", 60, 0), 60, 0)
            .unwrap();
        let mut sent = 0;
        for i in 0..10 {
            t.publish("calls", Value::Int(i)).unwrap();
            if t.take_due(0, &|_| true, &mut out).is_some() {
                sent += 1;
            }
        }
        assert_eq!(sent, 3);
        assert!(t.is_empty());
    }

    #[test]
    fn take_due_serves_only_the_destinations_asked_for() {
        let mut t = Subscriptions::<4, 2>::new(&TOPICS);
        t.publish("uptime", Value::Int(5)).unwrap();
        let (a, b) = (Subscriber::Plain(udp(1)), Subscriber::Plain(Origin::SERIAL));
        t.subscribe(a, udp(1), &args("uptime", 60, 0), 100, 0)
            .unwrap();
        t.subscribe(b, Origin::SERIAL, &args("uptime", 60, 0), 100, 0)
            .unwrap();
        let mut out = [0u8; 128];
        let serial = |o: &Origin| o.transport == Transport::Serial;
        let due = t.take_due(0, &serial, &mut out).unwrap();
        assert_eq!(due.who, b);
        assert!(t.take_due(0, &serial, &mut out).is_none());
        t.drop_subscriber(a);
        assert_eq!(t.len(), 1);
    }
}
