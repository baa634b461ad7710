//! Authentication with pre-shared keys (contract section 9), for servers
//! and clients, without heap or `unsafe`: key derivation, tags and proofs
//! ([`crypto`], on RustCrypto's `hmac`, `sha2` and `hkdf`), the replay
//! window, the session table and its policy, remembered replies, and
//! [`Guard`], which puts every check in the one request -> reply path.
//! Clients use [`ClientSession`].
//!
//! What it gives: integrity and authenticity of requests and replies,
//! mutual authentication, and no request running twice. What it does not:
//! confidentiality (arguments and results travel in clear), and protection
//! against flooding. See docs/SECURITY.md.
//!
//! Randomness comes from the caller through [`NonceSource`]: the host's
//! CSPRNG, a board's TRNG, or [`CounterNonces`] (a boot counter kept in
//! non-volatile memory, as the contract allows).

pub mod crypto;
pub mod hex;

mod client;
mod guard;
mod key;
mod remembered;
mod session;
mod window;

pub use crate::association::{Origin, Transport};
pub use client::{ClientSession, ReplyProblem};
pub use guard::{Admission, Guard, Open, Responder, Seal};
pub use key::{Key, KeyError, KeyTable, is_valid_kid};
pub use remembered::{FixedReplies, MAX_RESENDS, REMEMBER_MS, ReplyStore};
pub use session::{CounterNonces, NonceSource, SESSION_LIFETIME_MS, SESSION_MIN_IDLE_MS};
pub use window::{Replay, ReplayWindow};

/// A key's length in bytes.
pub const KEY_LEN: usize = 32;
/// A nonce's length in bytes.
pub const NONCE_LEN: usize = 16;
/// A session id's length in bytes.
pub const SID_LEN: usize = 8;
/// A tag's (and a proof's) length in bytes.
pub const TAG_LEN: usize = 16;
/// What an authenticated frame carries after its body: the session id and
/// the tag.
pub const TRAILER_LEN: usize = SID_LEN + TAG_LEN;

// The subscription table keys sessions and counts sealed frames with these.
const _: () = assert!(SID_LEN == crate::subscriptions::SESSION_ID_LEN);
const _: () = assert!(TRAILER_LEN == crate::subscriptions::SEALED_EXTRA);
