//! # at-core: the AT remote-call protocol, without `std`, `alloc` or `unsafe`
//!
//! A client sends a function name and arguments in a frame; a server runs the
//! function and sends back the result. This crate is everything both sides
//! share, byte for byte as the contract (`docs/PROTOCOL.md`) says:
//!
//! | module | what |
//! |---|---|
//! | [`header`] | the 16-byte big-endian header, its flags and errors |
//! | [`crc`] | CRC-32/ISO-HDLC (zlib's) of bodies |
//! | [`frame`] | a checked frame view, the frame encoder |
//! | [`decoder`] | the incremental decoder for byte streams (TCP, UART) |
//! | [`value`], [`body`] | arguments, results, request and reply bodies (JSON) |
//! | [`dispatch`], [`calculator`] | function tables and the four calculator functions |
//! | [`typed`], [`signature`] | typed functions (`fn led(on: bool)`) in tables, and their signatures |
//! | [`service`] | the one request -> reply path every server uses |
//! | [`rpc`] | the protocol's own functions: `rpc.ping`, `rpc.info`, `rpc.functions`, ... |
//! | [`event`], [`subscriptions`] | event bodies; topics and a fixed subscription table (contract 10.3) |
//! | [`association`], [`context`] | where a frame came from; what the path knows of it besides its bytes |
//! | [`auth`] | authentication with pre-shared keys: keys, tags, sessions, the [`auth::Guard`] |
//!
//! ## Guarantees
//! - No heap: every buffer is the caller's (or a const-generic array), and
//!   the `tests` crate proves decoding and dispatch allocate nothing under a
//!   counting allocator. Builds for `thumbv7em-none-eabihf`.
//! - No panics on any input: parsers return errors, arithmetic is checked.
//! - No recursion: JSON nesting is validated with a 64-bit stack, at most
//!   [`json::MAX_DEPTH`] deep.
//!
//! ## Cargo features
//! - `float` (on by default): numbers with a fraction or exponent are read
//!   as doubles with core's correctly rounded `f64` parser. Turning it off
//!   (`default-features = false`) saves about 10 KiB of flash on a
//!   Cortex-M: such a number is then validated but not converted, and a
//!   request carrying one as an argument is answered `invalid_arguments`
//!   with the message "this server takes integers only"
//!   ([`BodyError::FloatUnsupported`]); it may still appear in members the
//!   reader ignores. Integer arithmetic and double *results* (`div(10, 4)`
//!   is `2.5`) work either way: doubles are still written.
//! - `small-float` (off; acts with `float`): read doubles with a compact
//!   exact big-integer algorithm instead of core's table-driven one: the
//!   same results, about 14 KiB less flash, slower and about 1.2 KiB of
//!   stack. For firmware.
//! - `fast-crc` (off): crc32fast (16 KiB of tables) instead of a 1 KiB table, for hosts.
//! - `small-crc` (off): no CRC table (bit by bit), 1 KiB less flash.
//!
//! ## Example: a whole server step
//! ```
//! use at_core::{calculator::CALCULATOR, FrameDecoder, Kind, Reply, Request, Value};
//!
//! // Client: write a request frame.
//! let mut body = [0u8; 64];
//! let n = Request::write("div", &[Value::Int(10), Value::Int(4)], &mut body).unwrap();
//! let mut wire = [0u8; 128];
//! let len = at_core::encode_frame(Kind::Request, 7, &body[..n], &mut wire).unwrap();
//!
//! // Server: bytes arrive in any chunking; answer each whole frame.
//! let mut decoder = FrameDecoder::<[u8; 256]>::new(240);
//! decoder.push(&wire[..len]);
//! let frame = decoder.next_frame().unwrap().unwrap();
//! let mut out = [0u8; 128];
//! let reply_len = at_core::respond(&CALCULATOR, &frame, &mut out).unwrap();
//!
//! // Client: read the reply.
//! let reply = at_core::Frame::parse(&out[..reply_len], 1024).unwrap();
//! assert_eq!(reply.seq(), 7);
//! assert_eq!(Reply::parse(reply.body).unwrap(), Reply::Success(Value::Float(2.5)));
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod association;
pub mod auth;
pub mod body;
pub mod calculator;
pub mod context;
pub mod crc;
pub mod decoder;
pub mod dispatch;
pub mod error;
pub mod event;
mod float;
pub mod frame;
pub mod header;
pub mod json;
mod page;
pub mod reply;
pub mod rpc;
pub mod service;
pub mod signature;
pub mod subscriptions;
pub mod typed;
pub mod value;

pub use body::{BodyError, ErrorBody, MAX_ARGS, Reply, Request};
pub use context::Context;
pub use crc::checksum;
pub use decoder::FrameDecoder;
pub use dispatch::{Description, Function, Functions, Handler};
pub use error::{CallError, ErrorCode};
pub use frame::{BufferTooSmall, Frame, FrameError, encode_frame, encode_frame_with};
pub use header::{
    FLAG_AUTH, FLAG_ERROR, FLAG_NOTIFY, FLAG_REQUEST, FLAG_RESPONSE, HEADER_LEN, Header,
    HeaderError, KIND_MASK, Kind, MAGIC,
};
pub use json::EncodeError;
pub use reply::{write_error_frame, write_reply};
pub use rpc::ServerInfo;
pub use service::{
    MAX_FUNC_NAME, MIN_REPLY_BUFFER, respond, respond_as, respond_body, respond_body_in,
    respond_in, respond_to_bytes, respond_to_error, run_notification,
};
pub use signature::{Signature, Type, optional_mask};
pub use value::{JsonStr, RawJson, Value};

/// The default port, for TCP and UDP alike: 16724 (0x4154).
pub const DEFAULT_PORT: u16 = 16724;

/// The default largest body a receiver accepts: 65536 bytes.
pub const DEFAULT_MAX_BODY: u32 = 65536;
