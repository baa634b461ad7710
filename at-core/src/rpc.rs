//! The protocol's own functions (contract section 7), answered inside the
//! one request -> reply path so every server has them: `rpc.ping`,
//! `rpc.info` and `rpc.functions`. Names beginning with `rpc.` belong to
//! the protocol; any other `rpc.*` is `unknown_function`.
//!
//! - `rpc.ping`: no argument gives `true`, one argument gives it back.
//! - `rpc.info`: `{"protocol": 1, "server": ..., "name": ..., "auth":
//!   "off"|"required", "max_body": N, "functions": N, "ext": [...]}` from
//!   the server's [`ServerInfo`] and its function count.
//! - `rpc.functions`: `{"functions": [...], "next": N|null}`, the entries
//!   from `start` on (default 0) that fit the reply buffer, at least one
//!   while any remain (its doc is dropped if only then does it fit). Each
//!   entry is `{"name": ..., "params": [types]|null, "result": type|null,
//!   "doc": ...}`.
//! - With topics ([`crate::subscriptions`], contract 10.3):
//!   `rpc.subscribe(topic, lease?, interval?)` gives `{"topic": T, "lease":
//!   L, "interval": I, "n": N, "credit": C|null}`; `rpc.unsubscribe(topic)`
//!   `true` or `false`; `rpc.topics(start?)` pages `{"topics": [{"name":
//!   ..., "doc": ...}], "next": N|null}` as `rpc.functions` does. Without
//!   topics they are `unknown_function`, as before section 10.
//! - `rpc.cancel` is not here: a server answering one frame at a time never
//!   has a call to stop (contract 10.8 rule 11), so it does not list
//!   `cancel` and answers it `unknown_function`, as a v1 server does.
//!
//! All of it is written straight into the reply buffer: no heap, no second
//! buffer, so a device with a 192-byte reply buffer lists any number of
//! functions over several pages.

use crate::body::{ErrorBody, Reply};
use crate::context::Context;
use crate::dispatch::{Description, Functions};
use crate::error::ErrorCode;
use crate::frame::{BufferTooSmall, encode_frame_with};
use crate::header::Kind;
use crate::json::Writer;
use crate::page::{start_of, too_small, write_paged};
use crate::reply::{write_error_frame, write_reply};
use crate::subscriptions::{Subscriber, TopicCall};
use crate::value::{JsonStr, Value};

/// What `rpc.info` says about a server (besides its function count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerInfo<'a> {
    /// The implementation and its version: "at-host 0.1.0".
    pub server: &'a str,
    /// The name its operator chose (the host or board name by default).
    pub name: &'a str,
    /// Whether calls must be authenticated (contract section 9).
    pub auth_required: bool,
    /// The largest request body it accepts.
    pub max_body: u32,
    /// The parts of contract section 10 it implements, listed as `ext`.
    pub ext: Ext,
}

/// The parts of contract section 10 a server implements, which `rpc.info`
/// lists as its last member `"ext"` in the contract's order (10.1, 10.8
/// rule 11): `["notify", "events", "deadline", "cancel", "peer"]`.
///
/// ```
/// use at_core::rpc::Ext;
/// let ext = Ext::NOTIFY.with(Ext::DEADLINE);
/// assert!(ext.has(Ext::NOTIFY) && !ext.has(Ext::EVENTS));
/// assert_eq!(ext.names().collect::<Vec<_>>(), ["notify", "deadline"]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ext(u8);

impl Ext {
    /// None of section 10 (`"ext": []`).
    pub const NONE: Ext = Ext(0);
    /// Notifications are run (10.2).
    pub const NOTIFY: Ext = Ext(1);
    /// Subscriptions and events, with `rpc.topics` (10.3).
    pub const EVENTS: Ext = Ext(2);
    /// `deadline_ms` is honoured (10.4).
    pub const DEADLINE: Ext = Ext(4);
    /// `rpc.cancel` stops calls (10.4).
    pub const CANCEL: Ext = Ext(8);
    /// `rpc.peer` is accepted: a client may be called back (10.5).
    pub const PEER: Ext = Ext(16);
    /// Every part, in the contract's order.
    const ALL: [(Ext, &'static str); 5] = [
        (Ext::NOTIFY, "notify"),
        (Ext::EVENTS, "events"),
        (Ext::DEADLINE, "deadline"),
        (Ext::CANCEL, "cancel"),
        (Ext::PEER, "peer"),
    ];

    /// These parts and `other`'s.
    pub const fn with(self, other: Ext) -> Ext {
        Ext(self.0 | other.0)
    }

    /// Whether every part of `part` is here.
    pub const fn has(self, part: Ext) -> bool {
        self.0 & part.0 == part.0
    }

    /// The parts' names, in the contract's order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Ext::ALL
            .into_iter()
            .filter(move |(part, _)| self.has(*part))
            .map(|(_, name)| name)
    }

    /// Reads one name of `ext` (`None` for a name this version does not
    /// know, which a reader ignores).
    pub fn from_name(name: &str) -> Option<Ext> {
        Ext::ALL
            .into_iter()
            .find(|(_, n)| *n == name)
            .map(|(part, _)| part)
    }
}

/// One call of an `rpc.*` function.
pub(crate) struct RpcCall<'c, 'v> {
    pub(crate) func: &'c str,
    pub(crate) args: &'c [Value<'v>],
    pub(crate) seq: u32,
    /// Who asks (a subscription's key).
    pub(crate) who: Subscriber,
}

/// Answers `rpc.*` function `call.func` into `out`; the reply frame's
/// length.
pub(crate) fn answer<F: Functions + ?Sized>(
    functions: &F,
    info: &ServerInfo<'_>,
    call: &RpcCall<'_, '_>,
    context: &mut Context<'_>,
    out: &mut [u8],
) -> Option<usize> {
    let (args, seq) = (call.args, call.seq);
    let invalid = |message, out: &mut [u8]| {
        write_error_frame(seq, ErrorCode::InvalidArguments, message, out).ok()
    };
    match (call.func, context.topics.as_deref_mut()) {
        ("rpc.ping", _) => match args {
            [] => write_reply(seq, &Reply::Success(Value::Bool(true)), out).ok(),
            [value] => write_reply(seq, &Reply::Success(*value), out).ok(),
            _ => invalid("rpc.ping takes no argument or one", out),
        },
        ("rpc.info", _) => match args {
            [] => write_info(functions, info, seq, out)
                .ok()
                .or_else(|| too_small(seq, out)),
            _ => invalid("rpc.info takes no arguments", out),
        },
        ("rpc.functions", _) => {
            let Some(start) = start_of(args) else {
                return invalid("rpc.functions takes one optional integer start >= 0", out);
            };
            write_page(functions, start, seq, out)
                .ok()
                .or_else(|| too_small(seq, out))
        }
        // A server without keys (a server with keys answers hellos before
        // this path, in `auth::Guard`).
        ("rpc.hello", _) => {
            write_error_frame(seq, ErrorCode::Unauthorized, "this server has no keys", out).ok()
        }
        ("rpc.subscribe" | "rpc.unsubscribe" | "rpc.topics", Some(topics)) => {
            let call = TopicCall {
                func: call.func,
                args,
                seq,
                who: call.who,
                to: context.origin,
                request_len: context.frame_len,
                now: context.now,
            };
            topics.answer(&call, out)
        }
        _ => write_reply(
            seq,
            &Reply::Error(ErrorBody::new(
                ErrorCode::UnknownFunction,
                "unknown function",
            )),
            out,
        )
        .ok(),
    }
}

fn write_info<F: Functions + ?Sized>(
    functions: &F,
    info: &ServerInfo<'_>,
    seq: u32,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    encode_frame_with(Kind::Response, seq, out, |body| {
        let mut w = Writer::new(body);
        w.raw("{\"status\": \"success\", \"result\": {\"protocol\": 1, \"server\": ")?;
        w.string(&JsonStr::new(info.server))?;
        w.raw(", \"name\": ")?;
        w.string(&JsonStr::new(info.name))?;
        w.raw(if info.auth_required {
            ", \"auth\": \"required\", \"max_body\": "
        } else {
            ", \"auth\": \"off\", \"max_body\": "
        })?;
        w.int(i64::from(info.max_body))?;
        w.raw(", \"functions\": ")?;
        w.int(i64::try_from(functions.count()).unwrap_or(i64::MAX))?;
        w.raw(", \"ext\": [")?;
        for (i, name) in info.ext.names().enumerate() {
            w.raw(if i == 0 { "\"" } else { ", \"" })?;
            w.raw(name)?;
            w.raw("\"")?;
        }
        w.raw("]}}")?;
        Ok(w.len())
    })
}

fn write_page<F: Functions + ?Sized>(
    functions: &F,
    start: usize,
    seq: u32,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    write_paged("functions", start, seq, out, &mut |w, i, separate, doc| {
        functions
            .describe(i)
            .map(|d| write_entry(w, separate, &d, doc))
    })
}

/// One `rpc.functions` entry (after a ", " when `separate`); without its
/// doc when `doc` is false.
fn write_entry(
    w: &mut Writer<'_>,
    separate: bool,
    d: &Description<'_>,
    doc: bool,
) -> Result<(), BufferTooSmall> {
    if separate {
        w.raw(", ")?;
    }
    w.raw("{\"name\": ")?;
    w.string(&JsonStr::new(d.name))?;
    match d.signature {
        Some(sig) => {
            w.raw(", \"params\": [")?;
            for (i, t) in sig.params.iter().enumerate() {
                if i > 0 {
                    w.raw(", ")?;
                }
                w.raw("\"")?;
                w.raw(t.as_str())?;
                if sig.is_optional(i) {
                    w.raw("?")?;
                }
                w.raw("\"")?;
            }
            w.raw("], \"result\": \"")?;
            w.raw(sig.result.as_str())?;
            w.raw("\", \"doc\": ")?;
            w.string(&JsonStr::new(if doc { sig.doc } else { "" }))?;
        }
        None => w.raw(", \"params\": null, \"result\": null, \"doc\": \"\"")?,
    }
    w.raw("}")
}
