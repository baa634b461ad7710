//! The server's side of authentication on a host: at-core's
//! [`Guard`](at_core::auth::Guard) with the host's keys, the OS's CSPRNG
//! for nonces and session ids, and remembered replies on the heap. The
//! guard sits behind a mutex held only around its checks (never around a
//! function), and exists only when the server has keys: without keys the
//! request path is the one it always was.
//!
//! Authenticated calls still running are tracked by (session, seq), so that
//! the same request arriving over another TCP connection meanwhile (a
//! client that lost its connection mid-call and resent) waits for the reply
//! to be remembered and gets it, rather than `unauthorized` ("replayed").

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use at_core::auth::{
    Guard, MAX_RESENDS, NonceSource, Origin, REMEMBER_MS, ReplyStore, SID_LEN, TRAILER_LEN,
};
use at_core::{FLAG_AUTH, Frame};
use tokio::sync::watch;

use crate::shared::keys::{KeySet, fill_random};

/// Sessions a host server keeps at most.
pub const MAX_SESSIONS: usize = 1024;

/// Remembered replies a host server keeps at most.
const MAX_REMEMBERED: usize = 4096;

/// The OS's CSPRNG.
pub(super) struct OsNonces;

impl NonceSource for OsNonces {
    fn fill(&mut self, buf: &mut [u8]) {
        fill_random(buf);
    }
}

struct Remembered {
    origin: Origin,
    at: u64,
    sent: u8,
    reply: Vec<u8>,
}

/// Remembered replies on the heap, oldest dropped first.
#[derive(Default)]
pub(super) struct HostReplies {
    entries: HashMap<([u8; SID_LEN], u32), Remembered>,
    order: VecDeque<([u8; SID_LEN], u32)>,
}

impl ReplyStore for HostReplies {
    fn resend(
        &mut self,
        sid: &[u8; SID_LEN],
        seq: u32,
        origin: &Origin,
        now: u64,
    ) -> Option<&[u8]> {
        let e = self.entries.get_mut(&(*sid, seq))?;
        if now.saturating_sub(e.at) >= REMEMBER_MS
            || e.sent >= MAX_RESENDS
            || !origin.may_receive_reply_of(&e.origin)
        {
            return None;
        }
        e.sent += 1;
        Some(&e.reply)
    }

    fn remember(&mut self, sid: &[u8; SID_LEN], seq: u32, origin: &Origin, reply: &[u8], now: u64) {
        while self.order.len() >= MAX_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
        // Drop what has aged out at the front.
        while let Some(front) = self.order.front() {
            match self.entries.get(front) {
                Some(e) if now.saturating_sub(e.at) < REMEMBER_MS => break,
                _ => {
                    let old = *front;
                    self.order.pop_front();
                    self.entries.remove(&old);
                }
            }
        }
        let key = (*sid, seq);
        let entry = Remembered {
            origin: *origin,
            at: now,
            sent: 0,
            reply: reply.to_vec(),
        };
        if self.entries.insert(key, entry).is_none() {
            self.order.push_back(key);
        }
    }

    fn forget(&mut self, sid: &[u8; SID_LEN]) {
        self.entries.retain(|(s, _), _| s != sid);
        self.order.retain(|(s, _)| s != sid);
    }
}

/// A host server's guard.
pub(super) type HostGuard = Guard<KeySet, OsNonces, HostReplies, MAX_SESSIONS>;

/// A call by (session, seq).
type CallKey = ([u8; SID_LEN], u32);

/// Authenticated calls admitted and not yet answered. Each holds a
/// `watch::Sender` that is dropped when the call ends, which wakes every
/// receiver.
#[derive(Default)]
pub(super) struct Running(Arc<Mutex<HashMap<CallKey, watch::Sender<()>>>>);

/// An authenticated call running; dropping it (after its reply is
/// remembered, or when the call is abandoned) wakes whoever waits on it.
pub(super) struct RunningCall {
    calls: Arc<Mutex<HashMap<CallKey, watch::Sender<()>>>>,
    key: CallKey,
}

impl Drop for RunningCall {
    fn drop(&mut self) {
        lock(&self.calls).remove(&self.key);
    }
}

impl Running {
    /// Marks the call `seq` of session `sid` as running.
    pub(super) fn start(&self, sid: [u8; SID_LEN], seq: u32) -> RunningCall {
        let key = (sid, seq);
        lock(&self.0).insert(key, watch::channel(()).0);
        RunningCall {
            calls: Arc::clone(&self.0),
            key,
        }
    }

    /// When `frame` is an authenticated request for a call still running,
    /// what wakes when that call ends. Its tag is not checked here: the
    /// guard checks it when the frame is admitted after the wait, so a
    /// forged frame gains nothing but a wait on its own connection.
    pub(super) fn waiter(&self, frame: &Frame<'_>) -> Option<watch::Receiver<()>> {
        if frame.header.flags & FLAG_AUTH == 0 {
            return None;
        }
        let split = frame.body.len().checked_sub(TRAILER_LEN)?;
        let sid: [u8; SID_LEN] = frame.body[split..split + SID_LEN].try_into().ok()?;
        lock(&self.0)
            .get(&(sid, frame.seq()))
            .map(watch::Sender::subscribe)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The guard, the calls running, and the clock it counts milliseconds on.
pub(super) struct Auth {
    pub(super) guard: Mutex<Box<HostGuard>>,
    pub(super) running: Running,
    started: Instant,
}

impl Auth {
    pub(super) fn new(keys: KeySet) -> Auth {
        Auth {
            guard: Mutex::new(Box::new(Guard::new(keys, HostReplies::default(), OsNonces))),
            running: Running::default(),
            started: Instant::now(),
        }
    }

    /// Milliseconds since the server started.
    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The guard (a panic elsewhere while it was held leaves it usable:
    /// its state is updated in single steps).
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Box<HostGuard>> {
        lock(&self.guard)
    }
}
