//! The one request -> reply path every server shares, std or embedded:
//! check the frame, read the request, call the function, write the reply
//! frame.

use crate::association::Origin;
use crate::body::Request;
use crate::context::Context;
use crate::dispatch::Functions;
use crate::error::ErrorCode;
use crate::frame::{Frame, FrameError};
use crate::header::{FLAG_AUTH, Kind};
use crate::reply::{write_error_frame, write_reply};
use crate::rpc::{Ext, ServerInfo};
use crate::subscriptions::Subscriber;

/// The longest function name a server looks up; a longer `func` is
/// `unknown_function`.
pub const MAX_FUNC_NAME: usize = 64;

/// The smallest reply buffer [`respond`] can always write an error into.
pub const MIN_REPLY_BUFFER: usize = 128;

/// The error frame answering a frame the decoder rejected, or `None` when
/// the contract says to drop it silently (a datagram of the wrong size).
pub fn respond_to_error(error: &FrameError, out: &mut [u8]) -> Option<usize> {
    let message = match error {
        FrameError::SizeMismatch { .. } => return None,
        FrameError::Header { error, .. } => match error {
            crate::HeaderError::BadMagic { .. } => "bad magic",
            crate::HeaderError::NoKind { .. } => "no message type bit in flags",
            crate::HeaderError::ManyKinds { .. } => "more than one message type bit in flags",
            crate::HeaderError::TooLarge { .. } => "frame too large",
        },
        FrameError::ChecksumMismatch { .. } => "checksum mismatch",
    };
    write_error_frame(error.seq(), error.code(), message, out).ok()
}

/// Answers one checked frame: reads the request, calls the function and
/// writes the reply frame into `out`, returning its length. Returns `None`
/// for a frame that is itself a reply (a server never answers replies, so
/// two servers cannot ping-pong errors) or when `out` is smaller than
/// [`MIN_REPLY_BUFFER`] and the reply does not fit.
///
/// ```
/// use at_core::{calculator::CALCULATOR, Frame, Kind};
/// let mut wire = [0u8; 64];
/// let n = at_core::encode_frame(Kind::Request, 1, br#"{"func": "add", "args": [10, 20]}"#, &mut wire).unwrap();
/// let frame = Frame::parse(&wire[..n], 1024).unwrap();
/// let mut out = [0u8; 128];
/// let m = at_core::respond(&CALCULATOR, &frame, &mut out).unwrap();
/// assert_eq!(&out[16..m], br#"{"status": "success", "result": 30}"#);
/// ```
pub fn respond<F: Functions + ?Sized>(
    functions: &F,
    frame: &Frame<'_>,
    out: &mut [u8],
) -> Option<usize> {
    respond_as(functions, &UNNAMED, frame, out)
}

/// What [`respond`] says of a server it knows nothing about.
const UNNAMED: ServerInfo<'static> = ServerInfo {
    server: concat!("at-core ", env!("CARGO_PKG_VERSION")),
    name: "",
    auth_required: false,
    max_body: 0,
    ext: crate::rpc::Ext::NONE,
};

/// [`respond`] for a server that describes itself: `rpc.info` answers
/// with `info` (see [`crate::rpc`]). What every server uses.
///
/// ```
/// use at_core::{calculator::CALCULATOR, Frame, Kind, ServerInfo};
/// let info = ServerInfo { server: "demo 1.0", name: "bench", auth_required: false, max_body: 496, ext: Default::default() };
/// let mut wire = [0u8; 64];
/// let n = at_core::encode_frame(Kind::Request, 1, br#"{"func": "rpc.info"}"#, &mut wire).unwrap();
/// let frame = Frame::parse(&wire[..n], 1024).unwrap();
/// let mut out = [0u8; 192];
/// let m = at_core::respond_as(&CALCULATOR, &info, &frame, &mut out).unwrap();
/// assert_eq!(
///     &out[16..m],
///     br#"{"status": "success", "result": {"protocol": 1, "server": "demo 1.0", "name": "bench", "auth": "off", "max_body": 496, "functions": 4, "ext": []}}"#
/// );
/// ```
pub fn respond_as<F: Functions + ?Sized>(
    functions: &F,
    info: &ServerInfo<'_>,
    frame: &Frame<'_>,
    out: &mut [u8],
) -> Option<usize> {
    respond_in(
        functions,
        info,
        frame,
        &mut Context::new(Origin::SERIAL, 0),
        out,
    )
}

/// [`respond_as`] with a [`Context`]: besides requests, runs a NOTIFY call
/// (when `info.ext` lists `notify`) and answers nothing for it, whatever
/// happens (contract 10.2); answers `rpc.subscribe`, `rpc.unsubscribe` and
/// `rpc.topics` from `context.topics`; honours `deadline_ms` when
/// `info.ext` lists `deadline`. `out` is the NOTIFY call's scratch too.
pub fn respond_in<F: Functions + ?Sized>(
    functions: &F,
    info: &ServerInfo<'_>,
    frame: &Frame<'_>,
    context: &mut Context<'_>,
    out: &mut [u8],
) -> Option<usize> {
    let who = Subscriber::Plain(context.origin);
    match frame.kind {
        Kind::Request if frame.header.flags & FLAG_AUTH != 0 => {
            // No session can be held here (contract section 9, step 1).
            write_error_frame(frame.seq(), ErrorCode::Unauthorized, "unknown session", out).ok()
        }
        Kind::Request => {
            respond_body_in(functions, info, frame.seq(), frame.body, who, context, out)
        }
        Kind::Notify if frame.header.flags & FLAG_AUTH == 0 => {
            run_notification(functions, info, frame.seq(), frame.body, who, context, out);
            None
        }
        _ => None,
    }
}

/// Runs the call a NOTIFY body carries (contract 10.2) and discards its
/// reply, written into `scratch`. Runs nothing when `info.ext` lacks
/// `notify` (a v1 receiver), for an event body (`topic`, no `func`), for
/// `rpc.hello`, or for a body that is no call. Returns whether it ran.
pub fn run_notification<F: Functions + ?Sized>(
    functions: &F,
    info: &ServerInfo<'_>,
    seq: u32,
    body: &[u8],
    who: Subscriber,
    context: &mut Context<'_>,
    scratch: &mut [u8],
) -> bool {
    info.ext.has(Ext::NOTIFY)
        && answer(functions, info, seq, body, who, context, scratch, true).is_some()
}

/// The request -> reply path for request `seq` with body `body` (the
/// request part of a frame, without an authentication trailer): reads the
/// request, calls the function (or answers `rpc.*`), writes the reply
/// frame into `out`. Authentication ([`crate::auth`]) calls it between its
/// checks and its sealing of the reply.
pub fn respond_body<F: Functions + ?Sized>(
    functions: &F,
    info: &ServerInfo<'_>,
    seq: u32,
    body: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let mut context = Context::new(Origin::SERIAL, 0);
    respond_body_in(
        functions,
        info,
        seq,
        body,
        Subscriber::Plain(Origin::SERIAL),
        &mut context,
        out,
    )
}

/// [`respond_body`] for subscriber `who` (the association, or the session
/// of a sealed request) with a [`Context`], as [`respond_in`] describes.
pub fn respond_body_in<F: Functions + ?Sized>(
    functions: &F,
    info: &ServerInfo<'_>,
    seq: u32,
    body: &[u8],
    who: Subscriber,
    context: &mut Context<'_>,
    out: &mut [u8],
) -> Option<usize> {
    answer(functions, info, seq, body, who, context, out, false)
}

/// Reads the request and answers it into `out`. For a notification
/// (`notify`), a body that is no call, and `rpc.hello`, run nothing and
/// give `None`.
#[allow(clippy::too_many_arguments)]
fn answer<F: Functions + ?Sized>(
    functions: &F,
    info: &ServerInfo<'_>,
    seq: u32,
    body: &[u8],
    who: Subscriber,
    context: &mut Context<'_>,
    out: &mut [u8],
    notify: bool,
) -> Option<usize> {
    let request = match Request::parse(body) {
        Ok(request) => request,
        Err(_) if notify => return None,
        Err(e) => return write_error_frame(seq, e.code(), e.message(), out).ok(),
    };
    let mut name = [0u8; MAX_FUNC_NAME];
    let Some(func) = request
        .func
        .as_plain()
        .filter(|f| f.len() <= MAX_FUNC_NAME)
        .or_else(|| request.func.unescape_into(&mut name))
    else {
        return write_error_frame(seq, ErrorCode::UnknownFunction, "unknown function", out).ok();
    };
    if notify && func == "rpc.hello" {
        return None;
    }
    if func.starts_with("rpc.") {
        let call = crate::rpc::RpcCall {
            func,
            args: &request.args,
            seq,
            who,
        };
        return crate::rpc::answer(functions, info, &call, context, out);
    }
    if let Some(deadline) = request.deadline_ms
        && info.ext.has(Ext::DEADLINE)
        && context.waited_ms >= u64::from(deadline)
    {
        return write_error_frame(seq, ErrorCode::DeadlineExceeded, "deadline exceeded", out).ok();
    }
    functions
        .call(func, &request.args, |reply| write_reply(seq, &reply, out))
        .ok()
}

/// The whole path for one frame held in `bytes` (a UDP datagram, or a frame
/// a stream decoder delimited): check it, answer it. Returns the reply
/// frame's length in `out`, or `None` when no reply is due (a wrong-size
/// datagram, or a reply frame).
///
/// ```
/// use at_core::calculator::CALCULATOR;
/// let request = [
///     0x41, 0x54, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x21, 0x0b, 0xbc, 0xd0, 0x47,
/// ];
/// let mut wire = [0u8; 49];
/// wire[..16].copy_from_slice(&request);
/// wire[16..].copy_from_slice(br#"{"func": "add", "args": [10, 20]}"#);
/// let mut out = [0u8; 128];
/// let n = at_core::respond_to_bytes(&CALCULATOR, &wire, 65536, &mut out).unwrap();
/// let reply = at_core::Frame::parse(&out[..n], 65536).unwrap();
/// assert_eq!((reply.kind, reply.seq()), (at_core::Kind::Response, 1));
/// ```
pub fn respond_to_bytes<F: Functions + ?Sized>(
    functions: &F,
    bytes: &[u8],
    max_body: u32,
    out: &mut [u8],
) -> Option<usize> {
    match Frame::parse(bytes, max_body) {
        Ok(frame) => respond(functions, &frame, out),
        Err(e) => respond_to_error(&e, out),
    }
}
