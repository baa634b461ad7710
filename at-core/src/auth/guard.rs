//! [`Guard`]: every check of section 9 in the one request -> reply path.
//!
//! A server with a guard answers each request in two steps, so that a
//! multi-threaded host holds its lock only around the checks, never around
//! the function: [`Guard::admit`] (the handshake, the plain-request policy,
//! and for an authenticated frame the session, tag and replay checks), then
//! the caller answers the admitted body with [`crate::respond_body`], then
//! [`Guard::seal`] tags the reply and remembers it. A device, single
//! threaded, calls [`Guard::respond`], which does all three.

use crate::association::{Origin, Transport};
use crate::auth::crypto::{self, SessionKeys};
use crate::auth::hex;
use crate::auth::key::{KeyTable, is_valid_kid};
use crate::auth::remembered::ReplyStore;
use crate::auth::session::{NonceSource, Session, SessionTable, nonce};
use crate::auth::window::{Replay, ReplayWindow};
use crate::auth::{NONCE_LEN, SID_LEN, TAG_LEN, TRAILER_LEN};
use crate::body::Request;
use crate::context::Context;
use crate::dispatch::Functions;
use crate::error::ErrorCode;
use crate::frame::{BufferTooSmall, Frame, encode_frame_with};
use crate::header::{FLAG_AUTH, HEADER_LEN, Header, Kind};
use crate::json::Writer;
use crate::reply::write_error_frame;
use crate::rpc::ServerInfo;
use crate::service::{respond_body_in, run_notification};
use crate::subscriptions::Subscriber;
use crate::value::{JsonStr, Value};

/// What to do with a request, after [`Guard::admit`].
#[derive(Debug)]
pub enum Admission<'f> {
    /// Send the reply already written (`len` bytes of `out`): a handshake,
    /// a refusal, a remembered reply.
    Reply(usize),
    /// Send nothing (a forged or replayed datagram, a broadcast hello).
    Drop,
    /// Answer `body` (with [`crate::respond_body`]), then hand the reply to
    /// [`Guard::seal`] with `seal` when there is one.
    Call {
        /// The request body, without the authentication trailer.
        body: &'f [u8],
        /// For an authenticated request: what sealing its reply needs.
        seal: Option<Seal>,
    },
}

/// What sealing the reply to an authenticated request needs.
#[derive(Clone)]
pub struct Seal {
    sid: [u8; SID_LEN],
    reply_key: [u8; 32],
    seq: u32,
}

impl Seal {
    /// The session the request came in.
    pub fn session(&self) -> [u8; SID_LEN] {
        self.sid
    }

    /// The request's seq.
    pub fn seq(&self) -> u32 {
        self.seq
    }
}

impl core::fmt::Debug for Seal {
    /// Never shows the key.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Seal")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// A server's authentication state: its keys, `SESSIONS` sessions, where
/// remembered replies go and where nonces come from. With no keys it
/// requires nothing and answers `rpc.hello` with `unauthorized`.
pub struct Guard<K: KeyTable, R: NonceSource, S: ReplyStore, const SESSIONS: usize> {
    keys: K,
    sessions: SessionTable<SESSIONS>,
    replies: S,
    nonces: R,
}

impl<K: KeyTable, R: NonceSource, S: ReplyStore, const SESSIONS: usize> Guard<K, R, S, SESSIONS> {
    /// A guard over `keys` (none: authentication off).
    pub const fn new(keys: K, replies: S, nonces: R) -> Self {
        Guard {
            keys,
            sessions: SessionTable::new(),
            replies,
            nonces,
        }
    }

    /// Whether calls must be authenticated (the server has keys).
    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The whole path for one frame on a single-threaded server:
    /// [`admit`](Self::admit), [`crate::respond_body_in`],
    /// [`seal`](Self::seal). A NOTIFY call that passes runs and gets no
    /// reply (contract 10.2, 10.6); `out` is its scratch. `None`: send
    /// nothing.
    pub fn respond<F: Functions + ?Sized>(
        &mut self,
        functions: &F,
        info: &ServerInfo<'_>,
        frame: &Frame<'_>,
        context: &mut Context<'_>,
        out: &mut [u8],
    ) -> Option<usize> {
        let info = ServerInfo {
            auth_required: self.required(),
            ..*info
        };
        let notify = frame.kind == Kind::Notify;
        if notify && frame.header.flags & FLAG_AUTH == 0 {
            // A plain notification: run only where nothing is required.
            if !self.required() {
                let who = Subscriber::Plain(context.origin);
                run_notification(functions, &info, frame.seq(), frame.body, who, context, out);
            }
            return None;
        }
        let (origin, now) = (context.origin, context.now);
        match self.admit(frame, &origin, now, out) {
            Admission::Reply(n) => (!notify).then_some(n),
            Admission::Drop => None,
            Admission::Call { body, seal } => {
                let who = match &seal {
                    Some(seal) => Subscriber::Session(seal.sid),
                    None => Subscriber::Plain(origin),
                };
                if notify {
                    run_notification(functions, &info, frame.seq(), body, who, context, out);
                    return None;
                }
                match seal {
                    None => respond_body_in(functions, &info, frame.seq(), body, who, context, out),
                    Some(seal) => {
                        let room = out.len().checked_sub(TRAILER_LEN)?;
                        let n = respond_body_in(
                            functions,
                            &info,
                            seal.seq,
                            body,
                            who,
                            context,
                            &mut out[..room],
                        )?;
                        self.seal(&seal, &origin, now, out, n)
                    }
                }
            }
        }
    }

    /// Seals a frame the server sends of its own in session `sid` (an
    /// event): the plain frame in `out[..len]` gets the session's next seq
    /// (from 1), the AUTH flag, the session id and a tag under `K_rep`
    /// (contract 10.6). `out` needs [`TRAILER_LEN`] bytes of room after it.
    /// `None` when the session is gone (its subscriptions end with it) or
    /// its counter is spent.
    pub fn seal_server_frame(
        &mut self,
        sid: &[u8; SID_LEN],
        now: u64,
        out: &mut [u8],
        len: usize,
    ) -> Option<usize> {
        let session = self.sessions.find(sid, now)?;
        let seq = session.sent.checked_add(1)?;
        session.sent = seq;
        let reply_key = session.keys.reply;
        let body_len = len.checked_sub(HEADER_LEN)?;
        let head_bytes: [u8; HEADER_LEN] = out.get(..HEADER_LEN)?.try_into().ok()?;
        let plain = Header::from_bytes(&head_bytes);
        let header = Header {
            flags: plain.flags | FLAG_AUTH,
            seq,
            length: u32::try_from(body_len + TRAILER_LEN).ok()?,
            ..plain
        };
        write_trailer(header, sid, &reply_key, out, len)
    }

    /// The checks of section 9 for one request frame, or a sealed NOTIFY
    /// (its caller runs the call and sends nothing; see the module docs).
    /// Replies it writes itself go into `out`.
    pub fn admit<'f>(
        &mut self,
        frame: &Frame<'f>,
        origin: &Origin,
        now: u64,
        out: &mut [u8],
    ) -> Admission<'f> {
        // A sealed NOTIFY passes the same checks (contract 10.6); its
        // receiver runs the call and discards what would be its reply.
        let sealed_notify = frame.kind == Kind::Notify && frame.header.flags & FLAG_AUTH != 0;
        if frame.kind != Kind::Request && !sealed_notify {
            return Admission::Drop;
        }
        if frame.header.flags & FLAG_AUTH == 0 {
            self.admit_plain(frame, origin, now, out)
        } else {
            self.admit_authenticated(frame, origin, now, out)
        }
    }

    fn admit_plain<'f>(
        &mut self,
        frame: &Frame<'f>,
        origin: &Origin,
        now: u64,
        out: &mut [u8],
    ) -> Admission<'f> {
        let seq = frame.seq();
        let call = Admission::Call {
            body: frame.body,
            seal: None,
        };
        // Without keys nothing is checked: `rpc.hello` reaches the rpc
        // functions, which refuse it.
        if !self.required() {
            return call;
        }
        // A body that is not a request is answered as usual.
        let Ok(request) = Request::parse(frame.body) else {
            return call;
        };
        let func = request.func.as_plain().unwrap_or("");
        if func == "rpc.hello" {
            if origin.broadcast {
                return Admission::Drop;
            }
            return self.hello(&request.args, seq, now, out);
        }
        if func == "rpc.ping" || func == "rpc.info" {
            return call;
        }
        refuse(seq, "authentication required", out)
    }

    fn admit_authenticated<'f>(
        &mut self,
        frame: &Frame<'f>,
        origin: &Origin,
        now: u64,
        out: &mut [u8],
    ) -> Admission<'f> {
        let seq = frame.seq();
        let stream = origin.transport == Transport::Stream;
        // 1. A trailer and a session we hold.
        let Some(split) = frame.body.len().checked_sub(TRAILER_LEN) else {
            return refuse(seq, "no authentication trailer", out);
        };
        let (body, trailer) = frame.body.split_at(split);
        let (sid_bytes, tag_bytes) = trailer.split_at(SID_LEN);
        let mut sid = [0u8; SID_LEN];
        sid.copy_from_slice(sid_bytes);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(tag_bytes);
        let Some(session) = self.sessions.find(&sid, now) else {
            return refuse(seq, "unknown session", out);
        };
        // 2. The tag, over the header as sent.
        let head = frame.header.to_bytes();
        let mut h = [0u8; 12];
        h.copy_from_slice(&head[..12]);
        if !crypto::tag_is_valid(&session.keys.request, &h, body, &sid, &tag) {
            return if stream {
                refuse(seq, "bad tag", out)
            } else {
                Admission::Drop
            };
        }
        // 3. Once only.
        if let Err(replay) = session.window.accept(seq) {
            if let Some(reply) = self.replies.resend(&sid, seq, origin, now)
                && let Some(room) = out.get_mut(..reply.len())
            {
                room.copy_from_slice(reply);
                return Admission::Reply(reply.len());
            }
            let why = match replay {
                Replay::Exhausted => "session exhausted",
                _ => "replayed",
            };
            return if stream {
                refuse(seq, why, out)
            } else {
                Admission::Drop
            };
        }
        // 4. Verified: the session is in use; the call goes ahead.
        session.used = true;
        session.last = now;
        let seal = Seal {
            sid,
            reply_key: session.keys.reply,
            seq,
        };
        if Request::parse(body).is_ok_and(|r| r.func.as_plain() == Some("rpc.hello")) {
            let room = out.len().saturating_sub(TRAILER_LEN);
            let n = write_error_frame(
                seq,
                ErrorCode::InvalidArguments,
                "rpc.hello is never authenticated",
                &mut out[..room],
            );
            return match n.ok().and_then(|n| self.seal(&seal, origin, now, out, n)) {
                Some(n) => Admission::Reply(n),
                None => Admission::Drop,
            };
        }
        Admission::Call {
            body,
            seal: Some(seal),
        }
    }

    /// Turns the plain reply frame in `out[..len]` into the authenticated
    /// reply to the sealed request (AUTH flag, session id, tag under
    /// `K_rep`, CRC over all), remembers it, and returns its length.
    /// `out` needs [`TRAILER_LEN`] bytes of room after the reply.
    pub fn seal(
        &mut self,
        seal: &Seal,
        origin: &Origin,
        now: u64,
        out: &mut [u8],
        len: usize,
    ) -> Option<usize> {
        let body_len = len.checked_sub(HEADER_LEN)?;
        let head_bytes: [u8; HEADER_LEN] = out.get(..HEADER_LEN)?.try_into().ok()?;
        let plain = Header::from_bytes(&head_bytes);
        let header = Header {
            flags: plain.flags | FLAG_AUTH,
            length: u32::try_from(body_len + TRAILER_LEN).ok()?,
            ..plain
        };
        let total = write_trailer(header, &seal.sid, &seal.reply_key, out, len)?;
        self.replies
            .remember(&seal.sid, seal.seq, origin, &out[..total], now);
        Some(total)
    }

    /// `rpc.hello`: the argument checks, the key, room for a session, then
    /// the reply with the session id, the server nonce and the proof.
    fn hello<'f, 'v>(
        &mut self,
        args: &[Value<'v>],
        seq: u32,
        now: u64,
        out: &mut [u8],
    ) -> Admission<'f> {
        if !self.required() {
            return refuse(seq, "this server has no keys", out);
        }
        fn text<'v>(v: &Value<'v>) -> Option<&'v str> {
            v.as_str().and_then(|s| s.as_plain())
        }
        let (kid, nc_hex) = match args {
            [k, n] => match (text(k), text(n)) {
                (Some(k), Some(n)) => (k, n),
                _ => {
                    return invalid(
                        seq,
                        "rpc.hello takes a key id and a nonce, two strings",
                        out,
                    );
                }
            },
            _ => {
                return invalid(
                    seq,
                    "rpc.hello takes a key id and a nonce, two strings",
                    out,
                );
            }
        };
        let mut nc = [0u8; NONCE_LEN];
        if !is_valid_kid(kid) {
            return invalid(seq, "a key id is 1 to 32 of A-Z a-z 0-9 - _ .", out);
        }
        if hex::decode(nc_hex.as_bytes(), &mut nc, false).is_none() {
            return invalid(seq, "a nonce is 32 lowercase hexadecimal digits", out);
        }
        let Some(secret) = self.keys.secret(kid) else {
            return refuse(seq, "unknown key id", out);
        };
        let Some((slot, evicted)) = self.sessions.room(now) else {
            let n = write_error_frame(seq, ErrorCode::Busy, "no room for another session", out);
            return n.map_or(Admission::Drop, Admission::Reply);
        };
        if let Some(old) = evicted {
            self.replies.forget(&old);
        }
        let ns = nonce(&mut self.nonces);
        let sid = self.sessions.fresh_sid(&mut self.nonces, now);
        let keys: SessionKeys = crypto::derive(&secret, kid, &nc, &ns);
        let proof = crypto::proof(&keys.reply, &sid);
        self.sessions.put(
            slot,
            Session {
                sid,
                keys,
                window: ReplayWindow::new(),
                last: now,
                used: false,
                sent: 0,
            },
        );
        match write_hello_reply(seq, &sid, &ns, &proof, out) {
            Ok(n) => Admission::Reply(n),
            Err(_) => Admission::Drop,
        }
    }
}

/// Appends the session id and the tag under `key` to the frame in
/// `out[..len]`, whose header becomes `header` (AUTH set, length with the
/// trailer) with the CRC over all; the sealed frame's length.
fn write_trailer(
    mut header: Header,
    sid: &[u8; SID_LEN],
    key: &[u8; 32],
    out: &mut [u8],
    len: usize,
) -> Option<usize> {
    let total = len + TRAILER_LEN;
    out.get_mut(len..len + SID_LEN)?.copy_from_slice(sid);
    let head = header.to_bytes();
    let mut h = [0u8; 12];
    h.copy_from_slice(&head[..12]);
    let tag = crypto::tag(key, &h, out.get(HEADER_LEN..len)?, sid);
    out.get_mut(len + SID_LEN..total)?.copy_from_slice(&tag);
    header.crc = crate::crc::checksum(&out[HEADER_LEN..total]);
    out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    Some(total)
}

/// `unauthorized` (never authenticated).
fn refuse<'f>(seq: u32, message: &str, out: &mut [u8]) -> Admission<'f> {
    write_error_frame(seq, ErrorCode::Unauthorized, message, out)
        .map_or(Admission::Drop, Admission::Reply)
}

fn invalid<'f>(seq: u32, message: &str, out: &mut [u8]) -> Admission<'f> {
    write_error_frame(seq, ErrorCode::InvalidArguments, message, out)
        .map_or(Admission::Drop, Admission::Reply)
}

/// `{"status": "success", "result": {"session": ..., "nonce": ..., "proof": ...}}`.
fn write_hello_reply(
    seq: u32,
    sid: &[u8; SID_LEN],
    ns: &[u8; NONCE_LEN],
    proof: &[u8; TAG_LEN],
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    encode_frame_with(Kind::Response, seq, out, |body| {
        let mut w = Writer::new(body);
        let mut hex_buf = [0u8; 2 * NONCE_LEN];
        w.raw("{\"status\": \"success\", \"result\": {\"session\": ")?;
        w.string(&JsonStr::new(hex::encode(sid, &mut hex_buf)))?;
        w.raw(", \"nonce\": ")?;
        w.string(&JsonStr::new(hex::encode(ns, &mut hex_buf)))?;
        w.raw(", \"proof\": ")?;
        w.string(&JsonStr::new(hex::encode(proof, &mut hex_buf)))?;
        w.raw("}}")?;
        Ok(w.len())
    })
}

/// What a server answers a frame with: [`Open`] (no authentication) or a
/// [`Guard`]. Device servers take one, so the same server code runs with
/// or without keys.
pub trait Responder {
    /// Answers one frame into `out` (`None`: send nothing: a reply frame, a
    /// notification, a dropped frame).
    fn respond<F: Functions + ?Sized>(
        &mut self,
        functions: &F,
        info: &ServerInfo<'_>,
        frame: &Frame<'_>,
        context: &mut Context<'_>,
        out: &mut [u8],
    ) -> Option<usize>;

    /// Seals a frame the server sends of its own in session `sid` (see
    /// [`Guard::seal_server_frame`]); `None` without sessions.
    fn seal_server_frame(
        &mut self,
        sid: &[u8; SID_LEN],
        now: u64,
        out: &mut [u8],
        len: usize,
    ) -> Option<usize> {
        let _ = (sid, now, out, len);
        None
    }
}

/// No authentication: the plain request -> reply path
/// ([`crate::respond_in`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Open;

impl Responder for Open {
    fn respond<F: Functions + ?Sized>(
        &mut self,
        functions: &F,
        info: &ServerInfo<'_>,
        frame: &Frame<'_>,
        context: &mut Context<'_>,
        out: &mut [u8],
    ) -> Option<usize> {
        crate::respond_in(functions, info, frame, context, out)
    }
}

impl<K: KeyTable, R: NonceSource, S: ReplyStore, const N: usize> Responder for Guard<K, R, S, N> {
    fn respond<F: Functions + ?Sized>(
        &mut self,
        functions: &F,
        info: &ServerInfo<'_>,
        frame: &Frame<'_>,
        context: &mut Context<'_>,
        out: &mut [u8],
    ) -> Option<usize> {
        Guard::respond(self, functions, info, frame, context, out)
    }

    fn seal_server_frame(
        &mut self,
        sid: &[u8; SID_LEN],
        now: u64,
        out: &mut [u8],
        len: usize,
    ) -> Option<usize> {
        Guard::seal_server_frame(self, sid, now, out, len)
    }
}

impl<T: Responder + ?Sized> Responder for &mut T {
    fn respond<F: Functions + ?Sized>(
        &mut self,
        functions: &F,
        info: &ServerInfo<'_>,
        frame: &Frame<'_>,
        context: &mut Context<'_>,
        out: &mut [u8],
    ) -> Option<usize> {
        (**self).respond(functions, info, frame, context, out)
    }

    fn seal_server_frame(
        &mut self,
        sid: &[u8; SID_LEN],
        now: u64,
        out: &mut [u8],
        len: usize,
    ) -> Option<usize> {
        (**self).seal_server_frame(sid, now, out, len)
    }
}
