//! Event bodies (contract section 10.3): what a server pushes to a
//! subscriber in a NOTIFY frame, `{"topic": "temp", "n": 17, "value":
//! 21.5}`, or, as a subscription's last event, `{"topic": "temp", "n": 18,
//! "end": "lease"}`. Read without allocating, written in the contract's
//! canonical form (members in that order, `", "` and `": "`).
//!
//! ```
//! use at_core::event::{Event, Payload};
//! use at_core::{JsonStr, Value};
//!
//! let event = Event { topic: JsonStr::new("temp"), n: 1, payload: Payload::Value(Value::Float(21.5)) };
//! let mut out = [0u8; 64];
//! let len = event.write(&mut out).unwrap();
//! assert_eq!(&out[..len], br#"{"topic": "temp", "n": 1, "value": 21.5}"#);
//! assert_eq!(Event::parse(&out[..len]), Ok(event));
//! ```

use crate::body::{object_start, set_once, utf8};
use crate::error::BodyError;
use crate::json::{EncodeError, Reader, Scalar, Writer};
use crate::value::{JsonStr, Value};

/// Why a subscription's last event ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Its lease, its credit or its `n` is spent (`"lease"`).
    Lease,
    /// The server withdrew the topic (`"topic"`).
    Topic,
    /// The server is shutting down (`"server"`).
    Server,
}

impl End {
    /// The contract's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            End::Lease => "lease",
            End::Topic => "topic",
            End::Server => "server",
        }
    }

    fn from_name(name: JsonStr<'_>) -> Option<End> {
        [End::Lease, End::Topic, End::Server]
            .into_iter()
            .find(|e| name == e.as_str())
    }
}

/// What an event carries: the topic's new value, or the end of the
/// subscription.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Payload<'a> {
    /// `"value"`: any JSON value (an array or object as raw JSON).
    Value(Value<'a>),
    /// `"end"`: the subscription's last event.
    End(End),
}

/// One event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event<'a> {
    /// The topic.
    pub topic: JsonStr<'a>,
    /// The subscription's event counter: 1 for the first, up by one with
    /// each event made for it (a gap is loss); 0 only in status frames
    /// (contract section 11).
    pub n: u32,
    /// The value, or the end.
    pub payload: Payload<'a>,
}

impl<'a> Event<'a> {
    /// Reads an event body: an object with a string `topic`, an integer
    /// `n` (0 to 4294967295) and exactly one of `value` and `end`; unknown
    /// members are ignored.
    pub fn parse(body: &'a [u8]) -> Result<Event<'a>, BodyError> {
        let mut reader = Reader::new(utf8(body)?);
        object_start(&mut reader)?;
        let mut topic = None;
        let mut n = None;
        let mut value = None;
        let mut end = None;
        let mut overflow = false;
        reader.object(|reader, key| {
            if key == "topic" {
                if reader.peek() != Some(b'"') {
                    reader.skip()?;
                    return Err(BodyError::WrongType { member: "topic" });
                }
                set_once(&mut topic, reader.string()?, "topic")
            } else if key == "n" {
                let wrong = BodyError::WrongType { member: "n" };
                match reader.value()? {
                    Scalar::Value(Value::Int(i)) => {
                        set_once(&mut n, u32::try_from(i).map_err(|_| wrong)?, "n")
                    }
                    _ => Err(wrong),
                }
            } else if key == "value" {
                match reader.value()? {
                    Scalar::Value(v) => set_once(&mut value, v, "value"),
                    Scalar::BigInt => {
                        overflow = true;
                        Ok(())
                    }
                    Scalar::NoFloat => Err(BodyError::FloatUnsupported),
                }
            } else if key == "end" {
                let wrong = BodyError::WrongType { member: "end" };
                if reader.peek() != Some(b'"') {
                    reader.skip()?;
                    return Err(wrong);
                }
                let name = reader.string()?;
                set_once(&mut end, End::from_name(name).ok_or(wrong)?, "end")
            } else {
                reader.skip()
            }
        })?;
        reader.expect_end()?;
        if overflow {
            return Err(BodyError::IntegerOverflow);
        }
        let topic = topic.ok_or(BodyError::Missing { member: "topic" })?;
        let n = n.ok_or(BodyError::Missing { member: "n" })?;
        let payload = match (value, end) {
            (Some(v), None) => Payload::Value(v),
            (None, Some(e)) => Payload::End(e),
            (None, None) => return Err(BodyError::Missing { member: "value" }),
            (Some(_), Some(_)) => return Err(BodyError::Duplicate { member: "end" }),
        };
        Ok(Event { topic, n, payload })
    }

    /// Writes the event body into `out` and returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(out);
        w.raw("{\"topic\": ")?;
        w.string(&self.topic)?;
        w.raw(", \"n\": ")?;
        w.int(i64::from(self.n))?;
        match self.payload {
            Payload::Value(v) => {
                w.raw(", \"value\": ")?;
                w.value(&v)?;
            }
            Payload::End(e) => {
                w.raw(", \"end\": \"")?;
                w.raw(e.as_str())?;
                w.raw("\"")?;
            }
        }
        w.raw("}")?;
        Ok(w.len())
    }
}

/// A NOTIFY frame's body (contract section 10.2): a call nobody answers
/// (it has `func`) or an event (`topic` and no `func`).
#[derive(Clone, Debug, PartialEq)]
// No heap to box the request in, and a call needs its request whole anyway:
// the enum is a Request's size, as reading a request is.
#[allow(clippy::large_enum_variant)]
pub enum OneWay<'a> {
    /// A call, with a request body.
    Call(crate::body::Request<'a>),
    /// An event.
    Event(Event<'a>),
}

impl<'a> OneWay<'a> {
    /// Reads a NOTIFY body: a call if it has `func`, else an event if it
    /// has `topic`; anything else is an error (the receiver drops it).
    pub fn parse(body: &'a [u8]) -> Result<OneWay<'a>, BodyError> {
        match crate::body::Request::parse(body) {
            Err(BodyError::Missing { member: "func" }) => Event::parse(body).map(OneWay::Event),
            other => other.map(OneWay::Call),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_reject_what_the_contract_does_not_allow() {
        let end = Event {
            topic: JsonStr::new("calls"),
            n: 4_294_967_295,
            payload: Payload::End(End::Lease),
        };
        let mut out = [0u8; 80];
        let len = end.write(&mut out).unwrap();
        assert_eq!(
            &out[..len],
            br#"{"topic": "calls", "n": 4294967295, "end": "lease"}"#
        );
        assert_eq!(Event::parse(&out[..len]), Ok(end));
        let raw =
            Event::parse(br#"{"n": 2, "value": [1, {"a": 2}], "x": null, "topic": "t"}"#).unwrap();
        assert_eq!(
            raw.payload,
            Payload::Value(Value::parse("[1, {\"a\": 2}]").unwrap())
        );
        for bad in [
            &br#"{"topic": "t", "n": -1, "value": 1}"#[..],
            br#"{"topic": "t", "n": 4294967296, "value": 1}"#,
            br#"{"topic": "t", "n": 1.0, "value": 1}"#,
            br#"{"topic": 5, "n": 1, "value": 1}"#,
            br#"{"topic": "t", "n": 1}"#,
            br#"{"topic": "t", "n": 1, "value": 1, "end": "lease"}"#,
            br#"{"topic": "t", "n": 1, "end": "later"}"#,
            br#"{"n": 1, "value": 1}"#,
            br#"{"topic": "t", "value": 1}"#,
        ] {
            assert!(
                Event::parse(bad).is_err(),
                "{}",
                core::str::from_utf8(bad).unwrap()
            );
        }
    }

    #[test]
    fn a_notify_body_is_a_call_or_an_event() {
        assert!(matches!(
            OneWay::parse(br#"{"func": "log", "args": ["boot"]}"#),
            Ok(OneWay::Call(r)) if r.func == "log"
        ));
        assert!(matches!(
            OneWay::parse(br#"{"topic": "temp", "n": 1, "value": 21}"#),
            Ok(OneWay::Event(e)) if e.n == 1
        ));
        assert!(OneWay::parse(br#"{"other": 1}"#).is_err());
    }
}
