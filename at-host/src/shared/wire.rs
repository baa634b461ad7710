//! What the client and server sides share about the wire, above at-core's
//! frame codec: the largest UDP datagram, request encoding (into a caller's
//! buffer, or into a frame of its own), and turning a reply frame into the
//! `Result` a call returns.
//!
//! Both [`client`](crate::client) and [`server`](crate::server) may import
//! this module; it imports neither.

use at_core::{Frame, HEADER_LEN, Kind, Reply};

use crate::shared::error::{Error, ProtocolError};
use crate::shared::value::Value;

/// The largest datagram payload UDP can carry (over IPv6; IPv4's is 65507).
pub(crate) const MAX_DATAGRAM: usize = 65_527;

/// A request frame for `func(args)` with `seq`, at most 16 + `max_frame`
/// bytes.
pub(crate) fn encode_request(
    seq: u32,
    func: &str,
    args: &[at_core::Value<'_>],
    max_frame: u32,
) -> Result<Vec<u8>, Error> {
    let limit = HEADER_LEN + max_frame as usize;
    // Most requests are small: try a small buffer before the largest.
    let mut frame = vec![0u8; limit.min(1024)];
    loop {
        match encode_request_into(seq, func, args, None, &mut frame) {
            Ok(n) => {
                frame.truncate(n);
                return Ok(frame);
            }
            Err(at_core::EncodeError::BufferTooSmall) if frame.len() < limit => {
                frame = vec![0u8; limit];
            }
            Err(e) => return Err(ProtocolError::Encode(e).into()),
        }
    }
}

/// A notification frame (NOTIFY, contract section 10.2) for
/// `func(args)` with `seq`, at most 16 + `max_frame` bytes.
pub(crate) fn encode_notify(
    seq: u32,
    func: &str,
    args: &[at_core::Value<'_>],
    max_frame: u32,
) -> Result<Vec<u8>, Error> {
    let mut frame = vec![0u8; HEADER_LEN + max_frame as usize];
    let mut failure = at_core::EncodeError::BufferTooSmall;
    let n = at_core::encode_frame_with(Kind::Notify, seq, &mut frame, |body| {
        at_core::Request::write(func, args, body).map_err(|e| {
            failure = e;
            at_core::BufferTooSmall
        })
    })
    .map_err(|_| ProtocolError::Encode(failure))?;
    frame.truncate(n);
    Ok(frame)
}

/// Writes a request frame into `out`; returns its length.
pub(crate) fn encode_request_into(
    seq: u32,
    func: &str,
    args: &[at_core::Value<'_>],
    deadline_ms: Option<u32>,
    out: &mut [u8],
) -> Result<usize, at_core::EncodeError> {
    let mut failure = at_core::EncodeError::BufferTooSmall;
    at_core::encode_frame_with(Kind::Request, seq, out, |body| {
        at_core::Request::write_with_deadline(func, args, deadline_ms, body).map_err(|e| {
            failure = e;
            at_core::BufferTooSmall
        })
    })
    .map_err(|_| failure)
}

/// The body of a request for `func(args)`.
pub(crate) fn encode_body(func: &str, args: &[at_core::Value<'_>]) -> Result<Vec<u8>, Error> {
    encode_body_with_deadline(func, args, None)
}

/// The body of a request for `func(args)` with `"deadline_ms": D` last
/// when given (contract section 10.4), as vector D1 writes it.
pub(crate) fn encode_body_with_deadline(
    func: &str,
    args: &[at_core::Value<'_>],
    deadline_ms: Option<u32>,
) -> Result<Vec<u8>, Error> {
    let mut body = vec![0u8; 256];
    loop {
        match at_core::Request::write_with_deadline(func, args, deadline_ms, &mut body) {
            Ok(n) => {
                body.truncate(n);
                return Ok(body);
            }
            Err(at_core::EncodeError::BufferTooSmall) if body.len() < (1 << 26) => {
                body = vec![0u8; body.len() * 4];
            }
            Err(e) => return Err(ProtocolError::Encode(e).into()),
        }
    }
}

/// The `deadline_ms` a call bounded by `timeout` carries by default: the
/// time its caller still waits, less a tenth (at most 500 ms) for the
/// return trip (contract 10.4); none for the protocol's own `rpc.*`
/// functions, which never wait.
pub(crate) fn default_deadline(func: &str, timeout: std::time::Duration) -> Option<u32> {
    if func.starts_with("rpc.") {
        return None;
    }
    let margin = (timeout / 10).min(std::time::Duration::from_millis(500));
    Some(u32::try_from(timeout.saturating_sub(margin).as_millis()).unwrap_or(u32::MAX))
}

/// A plain frame of type `kind` with `seq` and `body`.
pub(crate) fn plain_frame(kind: Kind, seq: u32, body: &[u8]) -> Result<Vec<u8>, Error> {
    let mut frame = vec![0u8; HEADER_LEN + body.len()];
    let n = at_core::encode_frame(kind, seq, body, &mut frame)
        .map_err(|_| ProtocolError::Encode(at_core::EncodeError::BufferTooSmall))?;
    frame.truncate(n);
    Ok(frame)
}

/// The value or error a reply frame carries; a body that is not a valid
/// reply is a protocol error.
pub(crate) fn reply_to_result(frame: &Frame<'_>) -> Result<Value, Error> {
    body_to_result(frame.body)
}

/// The value or error a reply body carries.
pub(crate) fn body_to_result(body: &[u8]) -> Result<Value, Error> {
    match Reply::parse(body) {
        Ok(Reply::Success(value)) => Ok(Value::from(value)),
        Ok(Reply::Error(e)) => Err(Error::Remote {
            code: e.code.to_string(),
            message: e.message.to_string(),
        }),
        Err(e) => Err(ProtocolError::Body(e).into()),
    }
}
