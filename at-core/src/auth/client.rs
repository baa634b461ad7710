//! The client's side of a session: checking the hello reply, tagging
//! requests, checking replies.

use super::crypto::{self, SessionKeys};
use super::hex;
use super::key::Key;
use super::{NONCE_LEN, SID_LEN, TAG_LEN, TRAILER_LEN};
use crate::frame::{BufferTooSmall, Frame};
use crate::header::{FLAG_AUTH, HEADER_LEN, Header, Kind};

/// Why a reply to an authenticated request is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyProblem {
    /// No AUTH flag: an unauthenticated reply (`busy`, `unauthorized`...).
    Plain,
    /// Too short for a trailer, or another session's id.
    WrongSession,
    /// The tag does not verify.
    BadTag,
}

/// A session a client holds after a verified hello.
#[derive(Clone)]
pub struct ClientSession {
    sid: [u8; SID_LEN],
    keys: SessionKeys,
}

impl core::fmt::Debug for ClientSession {
    /// Never shows the keys.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientSession").finish_non_exhaustive()
    }
}

impl ClientSession {
    /// The session a hello reply gives, for a hello with client nonce `nc`
    /// under `key`: the members must be lowercase hex of exactly their
    /// lengths and the proof must verify; `None` otherwise.
    pub fn from_hello(
        key: &Key<'_>,
        nc: &[u8; NONCE_LEN],
        session: &str,
        nonce: &str,
        proof: &str,
    ) -> Option<ClientSession> {
        let mut sid = [0u8; SID_LEN];
        let mut ns = [0u8; NONCE_LEN];
        let mut p = [0u8; TAG_LEN];
        hex::decode(session.as_bytes(), &mut sid, false)?;
        hex::decode(nonce.as_bytes(), &mut ns, false)?;
        hex::decode(proof.as_bytes(), &mut p, false)?;
        let keys = crypto::derive(&key.secret, key.kid, nc, &ns);
        crypto::proof_is_valid(&keys.reply, &sid, &p).then_some(ClientSession { sid, keys })
    }

    /// The session id.
    pub fn sid(&self) -> [u8; SID_LEN] {
        self.sid
    }

    /// Writes the authenticated request frame `seq` with `body` into
    /// `out`; returns its length.
    pub fn seal_request(
        &self,
        seq: u32,
        body: &[u8],
        out: &mut [u8],
    ) -> Result<usize, BufferTooSmall> {
        self.seal(Kind::Request, seq, body, out)
    }

    /// Writes an authenticated frame of type `kind` that the client sends
    /// (contract section 10.6: everything the client sends is tagged with
    /// `K_req`): a request or a notification (its seq from the client's
    /// counter), or the reply to a call the server made (the server's
    /// seq). Returns its length.
    pub fn seal(
        &self,
        kind: Kind,
        seq: u32,
        body: &[u8],
        out: &mut [u8],
    ) -> Result<usize, BufferTooSmall> {
        let total = HEADER_LEN + body.len() + TRAILER_LEN;
        let frame = out.get_mut(..total).ok_or(BufferTooSmall)?;
        let length = u32::try_from(body.len() + TRAILER_LEN).map_err(|_| BufferTooSmall)?;
        let mut header = Header {
            magic: crate::header::MAGIC,
            flags: kind.flag() | FLAG_AUTH,
            seq,
            length,
            crc: 0,
        };
        let (head, rest) = frame.split_at_mut(HEADER_LEN);
        rest[..body.len()].copy_from_slice(body);
        rest[body.len()..body.len() + SID_LEN].copy_from_slice(&self.sid);
        let mut h = [0u8; 12];
        h.copy_from_slice(&header.to_bytes()[..12]);
        let tag = crypto::tag(&self.keys.request, &h, body, &self.sid);
        rest[body.len() + SID_LEN..].copy_from_slice(&tag);
        header.crc = crate::crc::checksum(rest);
        head.copy_from_slice(&header.to_bytes());
        Ok(total)
    }

    /// The body of a frame the server sent in this session, once its AUTH
    /// flag, session id and tag (under `K_rep`, contract section 10.6)
    /// check out: a reply to one of this session's requests, an event, or
    /// a call from the server. A frame the client itself sent, reflected
    /// back, fails its tag. For the server's requests and notifications
    /// the caller still checks the seq against its own window.
    pub fn open_reply<'f>(&self, frame: &Frame<'f>) -> Result<&'f [u8], ReplyProblem> {
        if frame.header.flags & FLAG_AUTH == 0 {
            return Err(ReplyProblem::Plain);
        }
        let split = frame
            .body
            .len()
            .checked_sub(TRAILER_LEN)
            .ok_or(ReplyProblem::WrongSession)?;
        let (body, trailer) = frame.body.split_at(split);
        let (sid, tag) = trailer.split_at(SID_LEN);
        if sid != self.sid {
            return Err(ReplyProblem::WrongSession);
        }
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag);
        let mut h = [0u8; 12];
        h.copy_from_slice(&frame.header.to_bytes()[..12]);
        if crypto::tag_is_valid(&self.keys.reply, &h, body, &self.sid, &t) {
            Ok(body)
        } else {
            Err(ReplyProblem::BadTag)
        }
    }
}
