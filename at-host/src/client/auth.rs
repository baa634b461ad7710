//! The client's side of authentication (contract section 9), shared by the
//! TCP and UDP clients: the hello and its checks, sealing requests, opening
//! replies, and when to start a new session.
//!
//! What a client must not do is as important: a plain `unauthorized` is
//! unauthenticated, so the call fails and the *next* call starts a new
//! session; the failed call is never resent in a new session (a forged
//! error could otherwise make a call run twice).

use std::time::{Duration, Instant};

use at_core::auth::{ClientSession, NONCE_LEN, ReplayWindow, ReplyProblem};
use at_core::{ErrorCode, Frame, Reply};

use crate::shared::error::{Error, ProtocolError};
use crate::shared::keys::{AuthKey, fill_random};
use crate::shared::value::Value;

/// A session left idle this long is replaced before the next call.
pub(crate) const IDLE_LIMIT: Duration = Duration::from_secs(5 * 60);

/// Most sealed calls a client keeps outstanding at once: fewer than the
/// server's 64-entry replay window (contract section 9), so none falls out
/// of it.
pub(crate) const MAX_OUTSTANDING: usize = 63;

/// A client's key and its session, if it has one.
pub(crate) struct ClientAuth {
    key: AuthKey,
    live: Option<Live>,
    /// Sessions started so far: a subscription made in an older one
    /// subscribes again (contract 10.6).
    generation: u64,
}

struct Live {
    session: ClientSession,
    last: Instant,
    /// The server answered `unauthorized`: the next call starts a new
    /// session, but replies to calls still out are opened with this one.
    refused: bool,
    /// The seqs of the server's own frames (events) accepted in this
    /// session (contract section 10.6: the client's 64-entry window).
    window: ReplayWindow,
}

/// Why a frame the server sent on its own (an event) is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No AUTH bit: a client holding a key drops plain events.
    Plain,
    /// No session, another session's id, or a tag that does not verify.
    Forged,
    /// A seq the window accepted before, or older than it (or 0).
    Replayed,
}

/// A hello on its way: its request body and the client nonce.
pub(crate) struct Hello {
    pub(crate) body: Vec<u8>,
    nc: [u8; NONCE_LEN],
}

/// What a reply to an authenticated request is.
pub(crate) enum Opened {
    /// Verified: the call's result.
    Verified(Result<Value, Error>),
    /// A plain `unauthorized`: the call fails (always an `Err`); the next
    /// call starts a new session.
    Unauthorized(Result<Value, Error>),
    /// A plain `busy` or `frame_too_large`: a transport failure.
    Transport(Error),
    /// A plain `checksum_mismatch` or `bad_frame`: the request arrived
    /// damaged (UDP retransmits; TCP fails).
    Damaged(Error),
    /// No AUTH, a bad tag, another session: not from the server (UDP
    /// ignores it; TCP fails).
    Forged(Error),
}

impl ClientAuth {
    pub(crate) fn new(key: AuthKey) -> ClientAuth {
        ClientAuth {
            key,
            live: None,
            generation: 0,
        }
    }

    /// Whether a hello is due: no session, or one idle for
    /// [`IDLE_LIMIT`], or refused, or `next_seq` would pass 0xFFFFFFFF.
    /// The old session stays until the hello replaces it, for the replies
    /// of calls still out.
    pub(crate) fn needs_hello(&mut self, next_seq: u32, calls: usize) -> bool {
        let stale = self
            .live
            .as_ref()
            .is_none_or(|l| l.refused || l.last.elapsed() >= IDLE_LIMIT);
        let wraps = u64::from(next_seq) + calls as u64 > u64::from(u32::MAX);
        stale || wraps
    }

    /// A new hello request body (with a fresh client nonce).
    pub(crate) fn hello(&self) -> Hello {
        let mut nc = [0u8; NONCE_LEN];
        fill_random(&mut nc);
        let mut hex = [0u8; 2 * NONCE_LEN];
        let nc_hex = at_core::auth::hex::encode(&nc, &mut hex);
        let body = format!(
            r#"{{"func": "rpc.hello", "args": ["{}", "{nc_hex}"]}}"#,
            self.key.kid()
        );
        Hello {
            body: body.into_bytes(),
            nc,
        }
    }

    /// Takes the reply to `hello`: `Ok` starts the session; `Err(Some(e))`
    /// the hello failed (an error reply: `unauthorized` from a server
    /// without keys or with another key id, `busy`, ...); `Err(None)` the
    /// reply is no valid answer (a bad proof, a malformed body).
    pub(crate) fn accept_hello(
        &mut self,
        hello: &Hello,
        frame: &Frame<'_>,
    ) -> Result<(), Option<Error>> {
        match Reply::parse(frame.body) {
            Ok(Reply::Success(at_core::Value::Raw(raw))) => {
                let json: serde_json::Value =
                    serde_json::from_str(raw.as_str()).map_err(|_| None)?;
                let member = |name: &str| json[name].as_str().map(str::to_owned);
                let (Some(sid), Some(ns), Some(proof)) =
                    (member("session"), member("nonce"), member("proof"))
                else {
                    return Err(None);
                };
                let session =
                    ClientSession::from_hello(&self.key.as_core(), &hello.nc, &sid, &ns, &proof)
                        .ok_or(None)?;
                self.live = Some(Live {
                    session,
                    last: Instant::now(),
                    refused: false,
                    window: ReplayWindow::new(),
                });
                self.generation += 1;
                Ok(())
            }
            Ok(Reply::Error(e)) => Err(Some(Error::Remote {
                code: e.code.to_string(),
                message: e.message.to_string(),
            })),
            _ => Err(None),
        }
    }

    /// The authenticated request frame `seq` with `body`.
    pub(crate) fn seal(&mut self, seq: u32, body: &[u8]) -> Result<Vec<u8>, Error> {
        self.seal_as(at_core::Kind::Request, seq, body)
    }

    /// The authenticated frame of type `kind` (a request or a
    /// notification, contract section 10.6: under `K_req`) `seq` with
    /// `body`.
    pub(crate) fn seal_as(
        &mut self,
        kind: at_core::Kind,
        seq: u32,
        body: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let live = self
            .live
            .as_mut()
            .ok_or(Error::Protocol(ProtocolError::Broken))?;
        live.last = Instant::now();
        let mut frame = vec![0u8; at_core::HEADER_LEN + body.len() + at_core::auth::TRAILER_LEN];
        let n = live
            .session
            .seal(kind, seq, body, &mut frame)
            .map_err(|_| ProtocolError::Encode(at_core::EncodeError::BufferTooSmall))?;
        frame.truncate(n);
        Ok(frame)
    }

    /// The body of a frame the server sent on its own in this session (an
    /// event, flags 0x0018): its tag verified under `K_rep`, then its seq
    /// checked and marked in the session's window for the server's seqs.
    pub(crate) fn open_from_server<'f>(&mut self, frame: &Frame<'f>) -> Result<&'f [u8], Refused> {
        let live = self.live.as_mut().ok_or(Refused::Forged)?;
        let body = match live.session.open_reply(frame) {
            Ok(body) => body,
            Err(ReplyProblem::Plain) => return Err(Refused::Plain),
            Err(_) => return Err(Refused::Forged),
        };
        live.window
            .accept(frame.seq())
            .map_err(|_| Refused::Replayed)?;
        Ok(body)
    }

    /// Whether a session is live and usable now (no hello due), for frames
    /// that cannot wait for one (an unsubscribe sent on drop).
    pub(crate) fn is_live(&mut self, next_seq: u32) -> bool {
        !self.needs_hello(next_seq, 1)
    }

    /// Which session is live (a count of hellos accepted), and whether it
    /// is refused (the next call starts another).
    pub(crate) fn session_mark(&self) -> (u64, bool) {
        (
            self.generation,
            self.live.as_ref().is_none_or(|l| l.refused),
        )
    }

    /// What a reply to one of this session's requests is.
    pub(crate) fn open(&mut self, frame: &Frame<'_>) -> Opened {
        let Some(live) = self.live.as_mut() else {
            return Opened::Forged(ProtocolError::Broken.into());
        };
        match live.session.open_reply(frame) {
            Ok(body) => Opened::Verified(crate::shared::wire::body_to_result(body)),
            Err(ReplyProblem::Plain) => {
                let result = crate::shared::wire::body_to_result(frame.body);
                match &result {
                    Err(e) => match e.code() {
                        Some(ErrorCode::Unauthorized) => {
                            live.refused = true;
                            Opened::Unauthorized(result)
                        }
                        Some(ErrorCode::Busy | ErrorCode::FrameTooLarge) => {
                            Opened::Transport(ProtocolError::Unauthenticated(e.to_string()).into())
                        }
                        Some(ErrorCode::ChecksumMismatch | ErrorCode::BadFrame) => {
                            Opened::Damaged(ProtocolError::Unauthenticated(e.to_string()).into())
                        }
                        _ => Opened::Forged(ProtocolError::Unauthenticated(e.to_string()).into()),
                    },
                    Ok(_) => Opened::Forged(
                        ProtocolError::Unauthenticated("a success reply".into()).into(),
                    ),
                }
            }
            Err(problem) => Opened::Forged(ProtocolError::BadTag(problem).into()),
        }
    }
}
