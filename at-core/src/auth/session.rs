//! The server's sessions: a fixed table with the contract's policy for
//! making room, and where nonces and session ids come from.

use super::crypto::SessionKeys;
use super::window::ReplayWindow;
use super::{NONCE_LEN, SID_LEN};

/// A session is kept at least this long after its last verified request
/// (or its hello, while it has carried none).
pub const SESSION_LIFETIME_MS: u64 = 10 * 60 * 1000;

/// A session that carried a verified request may make room for a new one
/// only after this long without one.
pub const SESSION_MIN_IDLE_MS: u64 = 60 * 1000;

/// Where the server's nonces and session ids come from: a CSPRNG, a TRNG,
/// or [`CounterNonces`]. Nonces must never repeat under one key, reboots
/// included (contract section 9).
pub trait NonceSource {
    /// Fills `buf` with fresh bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// The contract's scheme for a device without a random source: an 8-byte
/// boot counter (kept in non-volatile memory and incremented before use)
/// followed by an 8-byte counter. Session ids are the counter alone.
#[derive(Clone, Debug)]
pub struct CounterNonces {
    boot: u64,
    count: u64,
}

impl CounterNonces {
    /// Nonces for boot number `boot` (the caller persists the counter and
    /// increments it before every boot).
    pub const fn new(boot: u64) -> Self {
        CounterNonces { boot, count: 0 }
    }
}

impl NonceSource for CounterNonces {
    fn fill(&mut self, buf: &mut [u8]) {
        self.count = self.count.wrapping_add(1);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.boot.to_be_bytes());
        bytes[8..].copy_from_slice(&self.count.to_be_bytes());
        let tail = if buf.len() >= 16 {
            &bytes[..]
        } else {
            &bytes[16 - buf.len()..]
        };
        let n = buf.len().min(tail.len());
        buf[..n].copy_from_slice(&tail[..n]);
    }
}

/// One session.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) sid: [u8; SID_LEN],
    pub(crate) keys: SessionKeys,
    pub(crate) window: ReplayWindow,
    /// When it was made, or last carried a verified request (ms).
    pub(crate) last: u64,
    /// Whether a verified request came in it.
    pub(crate) used: bool,
    /// The seq of the last frame the server sent of its own in this
    /// session (events; contract 10.6: the server's counter starts at 1).
    pub(crate) sent: u32,
}

/// Up to `N` sessions.
#[derive(Clone, Debug)]
pub(crate) struct SessionTable<const N: usize> {
    slots: [Option<Session>; N],
}

impl<const N: usize> SessionTable<N> {
    pub(crate) const fn new() -> Self {
        SessionTable {
            slots: [const { None }; N],
        }
    }

    /// The live session `sid`.
    pub(crate) fn find(&mut self, sid: &[u8; SID_LEN], now: u64) -> Option<&mut Session> {
        self.slots
            .iter_mut()
            .flatten()
            .find(|s| s.sid == *sid && !expired(s, now))
    }

    fn holds(&self, sid: &[u8; SID_LEN], now: u64) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|s| s.sid == *sid && !expired(s, now))
    }

    /// A slot for a new session: a free or expired one, else the least
    /// recently used that never carried a verified request, else the least
    /// recently used idle for at least [`SESSION_MIN_IDLE_MS`]; `None` if
    /// none qualifies. Returns the slot and the id of the session it held
    /// (whose remembered replies go with it).
    pub(crate) fn room(&self, now: u64) -> Option<(usize, Option<[u8; SID_LEN]>)> {
        let held = |i: usize| self.slots[i].as_ref().map(|s| s.sid);
        if let Some(i) = (0..N).find(|&i| self.slots[i].as_ref().is_none_or(|s| expired(s, now))) {
            return Some((i, held(i)));
        }
        let lru = |pick: &dyn Fn(&Session) -> bool| {
            (0..N)
                .filter(|&i| self.slots[i].as_ref().is_some_and(pick))
                .min_by_key(|&i| self.slots[i].as_ref().map_or(0, |s| s.last))
        };
        lru(&|s| !s.used)
            .or_else(|| lru(&|s| now.saturating_sub(s.last) >= SESSION_MIN_IDLE_MS))
            .map(|i| (i, held(i)))
    }

    /// A session id not held by a live session, from `nonces` (at most 8
    /// draws; a 64-bit id repeats only by a broken source).
    pub(crate) fn fresh_sid(&self, nonces: &mut impl NonceSource, now: u64) -> [u8; SID_LEN] {
        let mut sid = [0u8; SID_LEN];
        for _ in 0..8 {
            nonces.fill(&mut sid);
            if !self.holds(&sid, now) {
                break;
            }
        }
        sid
    }

    pub(crate) fn put(&mut self, slot: usize, session: Session) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some(session);
        }
    }
}

fn expired(s: &Session, now: u64) -> bool {
    now.saturating_sub(s.last) >= SESSION_LIFETIME_MS
}

/// A fresh server nonce.
pub(crate) fn nonce(nonces: &mut impl NonceSource) -> [u8; NONCE_LEN] {
    let mut ns = [0u8; NONCE_LEN];
    nonces.fill(&mut ns);
    ns
}
