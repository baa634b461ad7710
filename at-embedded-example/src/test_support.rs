//! Helpers the unit tests of the servers share: building request frames and
//! reading back the reply frames a server wrote.

use at_core::{ErrorCode, Frame, Kind, Reply};
use std::vec::Vec;

/// The request frame for `body` with sequence number `seq`.
pub(crate) fn request(seq: u32, body: impl AsRef<[u8]>) -> Vec<u8> {
    let mut out = [0u8; 256];
    let n = at_core::encode_frame(Kind::Request, seq, body.as_ref(), &mut out).unwrap();
    out[..n].to_vec()
}

/// Splits the bytes a server wrote into (seq, reply) pairs.
pub(crate) fn replies(mut bytes: &[u8]) -> Vec<(u32, Reply<'_>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let frame = Frame::parse(&bytes[..16 + len], 1 << 20).unwrap();
        out.push((frame.seq(), Reply::parse(frame.body).unwrap()));
        bytes = &bytes[16 + len..];
    }
    out
}

/// The error code of an error reply, `None` for a success.
pub(crate) fn code(reply: &Reply<'_>) -> Option<ErrorCode> {
    match reply {
        Reply::Error(e) => e.error_code(),
        Reply::Success(_) => None,
    }
}
