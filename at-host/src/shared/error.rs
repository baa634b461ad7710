//! The errors a call can end in.

use std::io;

use at_core::ErrorCode;

/// Why a call did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error reply.
    #[error("error: {code}: {message}")]
    Remote {
        /// The reply's `code` (see [`Error::code`]).
        code: String,
        /// The reply's `message`.
        message: String,
    },
    /// No reply came in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The connection or socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol: the reply cannot be trusted.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A typed call's arguments are not a tuple, array or slice of values
    /// (nothing was sent).
    #[error("arguments of {func}: {reason}")]
    Arguments {
        /// The function called.
        func: String,
        /// What is wrong with them.
        reason: String,
    },
    /// A typed call's result does not convert to the type asked for.
    #[error("result of {func}: expected {expected}, got {got} ({reason})")]
    Decode {
        /// The function called.
        func: String,
        /// The Rust type asked for.
        expected: &'static str,
        /// The result as JSON.
        got: String,
        /// Why it does not convert.
        reason: String,
    },
}

impl Error {
    /// The error code of a remote error, if it is one the contract defines.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Remote { code, .. } => ErrorCode::from_name(code),
            _ => None,
        }
    }

    /// True for errors about the transport (timeout, I/O, protocol), as
    /// opposed to the server's answer.
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Timeout(_) | Error::Io(_) | Error::Protocol(_))
    }
}

/// Ways a peer can break the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A reply frame was malformed (bad magic, CRC mismatch, ...).
    #[error("bad reply frame: {0}")]
    Frame(at_core::FrameError),
    /// A reply body was not a valid reply.
    #[error("bad reply body: {0}")]
    Body(at_core::BodyError),
    /// A reply carried a seq no call is waiting for.
    #[error("reply with unexpected seq {0}")]
    UnexpectedSeq(u32),
    /// A frame that is not a reply arrived where a reply was due.
    #[error("a request frame arrived where a reply was due")]
    NotAReply,
    /// The peer closed the connection with calls in flight.
    #[error("connection closed by the peer")]
    Closed,
    /// An earlier error left this connection unusable; connect again.
    #[error("connection unusable after an earlier error")]
    Broken,
    /// An unauthenticated reply to an authenticated request (contract
    /// section 9: a transport failure, never the call's answer).
    #[error("unauthenticated reply to an authenticated call: {0}")]
    Unauthenticated(String),
    /// A reply whose session or tag does not verify.
    #[error("a reply that does not verify: {0:?}")]
    BadTag(at_core::auth::ReplyProblem),
    /// The server does not prove it holds the key (a bad hello reply).
    #[error("the server's hello reply does not verify")]
    BadHello,
    /// The request could not be encoded (too large for the frame limit, or
    /// a double that is not finite).
    #[error("request cannot be encoded: {0}")]
    Encode(at_core::EncodeError),
}
