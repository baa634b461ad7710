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

/// Whether `name`'s bytes occur in `body`: the quick test that lets a
/// request path skip parsing a body for a name it cannot hold. Compares
/// the rest of `name` only where its first byte is (a plain `windows`
/// search calls `memcmp` at every offset).
pub(crate) fn mentions(body: &[u8], name: &[u8]) -> bool {
    let Some((&first, rest)) = name.split_first() else {
        return true;
    };
    body.windows(name.len())
        .any(|w| w[0] == first && w[1..] == *rest)
}

/// What one pass over a request body tells of the names it may hold, so
/// that the request path parses it once (to answer it) unless it may be
/// more: `rpc` if `rpc.` occurs (`rpc.cancel`, `rpc.subscribe`, ...),
/// `deadline` if `deadline_ms` does. A backslash sets both, since an escape
/// may spell either.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Hints {
    /// The body may call an `rpc.` function.
    pub rpc: bool,
    /// The body may hold a `deadline_ms` member.
    pub deadline: bool,
}

impl Hints {
    /// The hints of `body`.
    pub(crate) fn of(body: &[u8]) -> Hints {
        // `.` and `_` are rare in a call's body (`rpc.` and `deadline_ms`
        // hold one each): the names are looked for only where they occur.
        let [dot, underscore, backslash] = holds(body, [b'.', b'_', b'\\']);
        Hints {
            rpc: backslash || (dot && mentions(body, b"rpc.")),
            deadline: backslash || (underscore && mentions(body, b"deadline_ms")),
        }
    }
}

/// Which of the bytes `wanted` occur in `bytes`, in one pass of eight bytes
/// at a time.
pub(crate) fn holds<const N: usize>(bytes: &[u8], wanted: [u8; N]) -> [bool; N] {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Some byte of `word` is zero (exact for "any": the borrow can flag a
    // byte above a real zero byte, never a word without one).
    let zero_in = |word: u64| word.wrapping_sub(LOW) & !word & HIGH != 0;
    let mut found = [false; N];
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    for word in words {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        for (hit, &byte) in found.iter_mut().zip(&wanted) {
            *hit |= zero_in(word ^ (LOW * u64::from(byte)));
        }
    }
    for byte in tail {
        for (hit, &w) in found.iter_mut().zip(&wanted) {
            *hit |= *byte == w;
        }
    }
    found
}

#[cfg(test)]
mod mentions_tests {
    use super::{Hints, holds, mentions};

    #[test]
    fn holds_finds_bytes_in_words_and_tails() {
        assert_eq!(holds(b"", [b'.']), [false]);
        assert_eq!(holds(b"abcdefgh.", [b'.', b'a', b'z']), [true, true, false]);
        assert_eq!(holds(b"abc.efghijk", [b'.', b'k']), [true, true]);
        // A byte one above a match (the borrow's false flag) is no match.
        assert_eq!(
            holds(b"\x01\x00\x01\x01\x01\x01\x01\x01", [b'\x01', b'\x02']),
            [true, false]
        );
        for n in 0..40 {
            let mut bytes = vec![b'x'; n];
            assert_eq!(holds(&bytes, [b'.']), [false]);
            if n > 0 {
                bytes[n - 1] = b'.';
                assert_eq!(holds(&bytes, [b'.']), [true]);
            }
        }
    }

    #[test]
    fn hints_see_rpc_names_deadlines_and_escapes() {
        let of = |body: &[u8]| {
            let h = Hints::of(body);
            (h.rpc, h.deadline)
        };
        assert_eq!(of(br#"{"func": "add", "args": [10, 20]}"#), (false, false));
        assert_eq!(of(br#"{"func": "rpc.cancel", "args": [3]}"#), (true, false));
        assert_eq!(of(br#"{"func": "add", "deadline_ms": 5}"#), (false, true));
        assert_eq!(of(br#"{"func": "rp\u0063.topics"}"#), (true, true));
        assert_eq!(of(b"rpc"), (false, false));
        assert_eq!(of(b"deadline_m"), (false, false));
        assert_eq!(of(b"...............rpc."), (true, false));
        assert_eq!(of(b"xxxxxxxdeadline_ms"), (false, true));
        assert_eq!(of(b""), (false, false));
    }

    /// The quick search finds what a search per name finds.
    #[test]
    fn hints_agree_with_a_plain_search() {
        use proptest::prelude::*;
        let plain = |body: &[u8]| {
            let has = |name: &[u8]| body.windows(name.len()).any(|w| w == name);
            let escaped = body.contains(&b'\\');
            Hints {
                rpc: escaped || has(b"rpc."),
                deadline: escaped || has(b"deadline_ms"),
            }
        };
        let pieces = prop::sample::select(vec![
            &b"rpc."[..],
            b"rp",
            b"c.",
            b"deadline_ms",
            b"deadline",
            b"_ms",
            b"\\",
            b"r",
            b"d",
            b"x",
            b"{\"func\": ",
            b"\x80",
            b"\xff",
        ]);
        proptest!(|(parts in prop::collection::vec(pieces, 0..24))| {
            let body = parts.concat();
            prop_assert_eq!(Hints::of(&body), plain(&body));
        });
    }

    #[test]
    fn finds_a_name_anywhere_and_nothing_else() {
        let body = br#"{"func": "rpc.cancel", "args": [3]}"#;
        assert!(mentions(body, b"rpc.cancel"));
        assert!(mentions(body, b"{"));
        assert!(mentions(body, b"[3]}"));
        assert!(!mentions(body, b"rpc.cancelled"));
        assert!(!mentions(body, b"deadline_ms"));
        assert!(!mentions(b"rpc", b"rpc."));
        assert!(mentions(b"", b""));
    }
}
