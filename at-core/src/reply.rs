//! Writing reply frames: a function's outcome, or an error, as the frame
//! that answers request `seq`. Below both the request -> reply path
//! ([`crate::service`]) and the protocol's own functions ([`crate::rpc`]),
//! which both write replies and import neither each other.

use crate::body::{ErrorBody, Reply};
use crate::error::ErrorCode;
use crate::frame::{BufferTooSmall, encode_frame_with};
use crate::header::Kind;
use crate::json::EncodeError;

/// Writes an error frame with `code` and `message` for request `seq` into
/// `out` and returns its length.
///
/// ```
/// use at_core::ErrorCode;
/// let mut out = [0u8; 128];
/// let n = at_core::write_error_frame(0, ErrorCode::BadFrame, "bad magic", &mut out).unwrap();
/// assert_eq!(&out[16..n], br#"{"status": "error", "code": "bad_frame", "message": "bad magic"}"#);
/// ```
pub fn write_error_frame(
    seq: u32,
    code: ErrorCode,
    message: &str,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    write_reply(seq, &Reply::Error(ErrorBody::new(code, message)), out)
}

/// Writes a reply frame (RESPONSE or ERROR flag as the reply says) for
/// request `seq` into `out`. A double result that is not finite becomes the
/// error `overflow`, since JSON cannot carry it; a reply too large for `out`
/// becomes the error `internal` when that fits.
pub fn write_reply(seq: u32, reply: &Reply<'_>, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let mut failure = EncodeError::BufferTooSmall;
    let written = encode_frame_with(reply.kind(), seq, out, |body| {
        reply.write(body).map_err(|e| {
            failure = e;
            BufferTooSmall
        })
    });
    if written.is_ok() {
        return written;
    }
    let (code, message) = match failure {
        EncodeError::NotFinite => (ErrorCode::Overflow, "result is not a finite number"),
        EncodeError::Unsupported => (ErrorCode::Internal, "cannot write that double"),
        EncodeError::BufferTooSmall => (ErrorCode::Internal, "reply too large"),
    };
    let fallback = Reply::Error(ErrorBody::new(code, message));
    encode_frame_with(Kind::Error, seq, out, |body| {
        fallback.write(body).map_err(|_| BufferTooSmall)
    })
}
