//! The UDP serving loop: one frame per datagram, answered at most once per
//! (client address, seq) through the reply [`cache`](super::cache), and
//! error replies to bad datagrams rationed by [`Ration`]. What at-most-once
//! promises, and its bounds, are told in the public [`udp`](crate::udp)
//! module docs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use at_core::auth::{Origin, Transport};
use at_core::{Frame, FrameError, HEADER_LEN, Kind};
use log::debug;
use tokio::sync::{mpsc, watch};

use super::cache::ReplyCache;
use super::destination;
use super::log_limit::protocol_warn;
use super::topics::Via;
use super::{Cancel, Shared, Step};
use crate::shared::wire::{Hints, MAX_DATAGRAM};

/// How long the datagram thread waits in one receive before it looks at
/// `stop` again (a shutdown also wakes it at once: [`wake_on_stop`]).
pub(super) const RECEIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the datagram thread and the tasks of async functions share.
struct State {
    cache: ReplyCache,
    /// (client address, seq) of the async calls running, and how an
    /// `rpc.cancel` from that address stops each (contract 10.4).
    running: HashMap<(SocketAddr, u32), Arc<Cancel>>,
}

/// Serves calls arriving on `socket` until `stop` turns true (or its
/// sender is dropped); drops `alive` when done. Runs on a thread of its
/// own, blocking in `recvmmsg` as a plain echo server blocks in `recv`:
/// a call to a sync function is read, answered and sent without a trip
/// through the runtime. Async functions run on `runtime`, and their tasks
/// remember and send their replies themselves.
pub(super) fn serve(
    socket: std::net::UdpSocket,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
    runtime: tokio::runtime::Handle,
) {
    let socket = Arc::new(socket);
    // Events leave by this socket, until it closes.
    shared.hub.set_socket(Some(Arc::clone(&socket)));
    let max_body = shared.config.max_frame;
    // Room for any datagram, so a size check is never fooled by truncation.
    let room = MAX_DATAGRAM.max(HEADER_LEN + max_body as usize) + 1;
    let mut bufs: [Vec<u8>; destination::BATCH] = std::array::from_fn(|_| vec![0u8; room]);
    let mut got = Vec::with_capacity(destination::BATCH);
    let mut datagrams = Datagrams::new(Arc::clone(&shared), runtime, "udp");
    let pktinfo = destination::enable(&socket);
    // `stop` only ever turns true: a datagram costs a version check (an
    // atomic load), and the value (behind a lock) is read once it moved.
    let stopped_before = *stop.borrow();
    let stopped = || {
        stopped_before
            || match stop.has_changed() {
                Ok(false) => false,
                Ok(true) => *stop.borrow(),
                Err(_) => true,
            }
    };
    while !stopped() {
        if let Err(e) = destination::recv(&socket, pktinfo, &mut bufs, &mut got) {
            if !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                // ICMP errors from earlier sends surface here on some
                // systems; they concern one peer, not the socket.
                debug!("udp receive error: {e}");
            }
            continue;
        }
        if stopped() {
            break;
        }
        // Every datagram of the batch was whole by now: a deadline counts
        // from here, however long the ones before it take (contract 10.4).
        let read_at = Instant::now();
        for (received, buf) in got.iter().zip(&bufs) {
            let destination::Received { len, peer, to } = *received;
            let Some(peer) = peer else {
                debug!("udp: a datagram without a sender address: dropped");
                continue;
            };
            // Discovery: a broadcast or multicast request is answered only
            // with success, and after a random pause.
            let broadcast = to.is_some_and(destination::is_broadcast);
            log::trace!("udp from {peer} to {to:?} (broadcast: {broadcast})");
            let outlet = UdpOutlet {
                socket: Arc::clone(&socket),
                peer,
                broadcast,
            };
            datagrams.handle(&buf[..len], peer, broadcast, read_at, &outlet);
        }
    }
    // The socket closes before the server counts this thread as ended
    // (unless an async function's task still holds it).
    shared.hub.set_socket(None);
    drop(socket);
    drop(alive);
}

/// Where the replies to one datagram go: back to its sender (UDP), or to
/// its caller's reply topic (MQTT). Fresh, remembered and async replies
/// alike leave through it.
pub(super) trait Outlet: Clone + Send + Sync + 'static {
    /// Sends one reply frame.
    fn send(&self, reply: &[u8], runtime: &tokio::runtime::Handle);
}

/// A UDP datagram's sender.
#[derive(Clone)]
struct UdpOutlet {
    socket: Arc<std::net::UdpSocket>,
    peer: SocketAddr,
    broadcast: bool,
}

impl Outlet for UdpOutlet {
    /// To a request that came by broadcast or multicast (section 8) only a
    /// success goes, after a random pause; an error reply is dropped.
    fn send(&self, reply: &[u8], runtime: &tokio::runtime::Handle) {
        let peer = self.peer;
        if !self.broadcast {
            send(&self.socket, reply, peer);
        } else if Frame::parse(reply, u32::MAX).is_ok_and(|f| f.kind == Kind::Response) {
            let (socket, reply) = (Arc::clone(&self.socket), reply.to_vec());
            runtime.spawn(async move {
                tokio::time::sleep(destination::answer_delay()).await;
                send(&socket, &reply, peer);
            });
        } else {
            debug!("udp from {peer}: no error reply to a broadcast request");
        }
    }
}

/// The datagram rules of one server transport (UDP, or MQTT's one frame
/// per message): the reply cache (at-most-once by (peer, seq)), the
/// repeat memory of notifications, the ration of error replies, and the
/// one request -> reply path through [`Shared`].
pub(super) struct Datagrams {
    shared: Arc<Shared>,
    state: Arc<Mutex<State>>,
    notified: Notified,
    error_replies: Ration,
    out: Vec<u8>,
    runtime: tokio::runtime::Handle,
    /// `udp` or `mqtt`, for the logs.
    what: &'static str,
}

impl Datagrams {
    /// The rules for one transport of `shared`'s server.
    pub(super) fn new(
        shared: Arc<Shared>,
        runtime: tokio::runtime::Handle,
        what: &'static str,
    ) -> Datagrams {
        let config = &shared.config;
        let max_body = config.max_frame;
        let state = Arc::new(Mutex::new(State {
            cache: ReplyCache::new(
                config.udp_cache_entries,
                config.udp_cache_per_client,
                config.udp_cache_age,
            ),
            running: HashMap::new(),
        }));
        Datagrams {
            out: vec![0u8; (HEADER_LEN + max_body as usize).max(at_core::MIN_REPLY_BUFFER)],
            shared,
            state,
            notified: Notified::default(),
            error_replies: Ration::new(ERROR_REPLIES_PER_SECOND),
            runtime,
            what,
        }
    }

    /// Answers one datagram from `peer` (read whole at `read_at`) through
    /// `outlet`: at most once per (peer, seq).
    pub(super) fn handle(
        &mut self,
        datagram: &[u8],
        peer: SocketAddr,
        broadcast: bool,
        read_at: Instant,
        outlet: &impl Outlet,
    ) {
        let Datagrams {
            shared,
            state,
            notified,
            error_replies,
            out,
            runtime,
            what,
        } = self;
        let (shared, runtime, what) = (&*shared, &*runtime, *what);
        let len = datagram.len();
        let max_body = shared.config.max_frame;
        // One clock reading per batch: expiry and rations need no finer.
        let now = read_at;
        let reply_len = match Frame::parse(datagram, max_body) {
            Err(e @ FrameError::SizeMismatch { .. }) => {
                protocol_warn!("{what} from {peer}: dropped: {e}");
                None
            }
            Err(e) => {
                protocol_warn!("{what} from {peer}: bad frame: {e}");
                // Error replies to bad datagrams are rationed: a flood of
                // garbage (perhaps from spoofed addresses) must neither
                // crowd out real calls nor be reflected at full rate.
                if error_replies.take(now) {
                    at_core::respond_to_error(&e, out)
                } else {
                    None
                }
            }
            Ok(frame)
                if frame.kind == Kind::Notify && frame.header.flags & at_core::FLAG_AUTH == 0 =>
            {
                let key = (peer, frame.seq(), frame.header.length, frame.header.crc);
                if notified.repeat(key, now) {
                    debug!(
                        "{what} from {peer}: notification seq {} again: dropped",
                        key.1
                    );
                } else if let Some(target) = shared.cancel_of(frame.body) {
                    // Acted on at once; never answered (contract 10.4).
                    if let Some(target) = target {
                        cancel_running(state, peer, target);
                    }
                } else {
                    let origin = Origin {
                        transport: Transport::Datagram,
                        peer: Some(peer),
                        broadcast,
                    };
                    let via = Via::Datagram {
                        peer,
                        size: len,
                        reply: false,
                    };
                    shared.notify_frame(&frame, &origin, via, read_at, runtime, out);
                }
                None
            }
            Ok(frame) if frame.kind == Kind::Notify => {
                let origin = Origin {
                    transport: Transport::Datagram,
                    peer: Some(peer),
                    broadcast,
                };
                let via = Via::Datagram {
                    peer,
                    size: len,
                    reply: false,
                };
                shared.notify_frame(&frame, &origin, via, read_at, runtime, out);
                None
            }
            Ok(frame) if frame.kind != Kind::Request => {
                protocol_warn!(
                    "{what} from {peer}: ignoring a {:?} frame: servers answer requests only",
                    frame.kind
                );
                None
            }
            Ok(frame) => {
                let seq = frame.seq();
                let request = (frame.header.length, frame.header.crc);
                // Plain requests: byte-identical retransmissions get the
                // remembered reply (section 5). Authenticated ones: the
                // guard remembers by (session, seq), after the tag.
                let plain = frame.header.flags & at_core::FLAG_AUTH == 0;
                {
                    let mut state = lock(state);
                    if plain && let Some(reply) = state.cache.get(peer, seq, request, now) {
                        debug!(
                            "{what} from {peer}: seq {seq} again: resending the remembered reply"
                        );
                        outlet.send(reply, runtime);
                        return;
                    }
                    if state.running.contains_key(&(peer, seq)) {
                        debug!("{what} from {peer}: seq {seq} again while it runs: dropped");
                        return;
                    }
                }
                let origin = Origin {
                    transport: Transport::Datagram,
                    peer: Some(peer),
                    broadcast,
                };
                // A datagram never waits: a replay of a call still running
                // is dropped by the guard, and the client retransmits.
                match shared.admit(&frame, &origin, out, false) {
                    Step::Reply(n) => Some(n),
                    Step::Drop | Step::Wait(_) => None,
                    Step::Call {
                        body,
                        seal,
                        running: call,
                    } if shared.registry.calls_async(body) => {
                        let cancel = Arc::new(Cancel::default());
                        lock(state).running.insert((peer, seq), Arc::clone(&cancel));
                        let mut reply = vec![0u8; out.len()];
                        let (shared, body) = (Arc::clone(shared), body.to_vec());
                        let (state, outlet) = (Arc::clone(state), outlet.clone());
                        let handle = runtime.clone();
                        runtime.spawn(async move {
                            let n = shared
                                .answer_async(
                                    seq,
                                    &body,
                                    seal.as_ref(),
                                    &origin,
                                    read_at,
                                    &mut reply,
                                    plain.then_some(&*cancel),
                                )
                                .await;
                            drop(call);
                            let mut state = lock(&state);
                            state.running.remove(&(peer, seq));
                            if plain && n > 0 {
                                state
                                    .cache
                                    .insert(peer, seq, request, &reply[..n], Instant::now());
                            }
                            drop(state);
                            if n > 0 {
                                outlet.send(&reply[..n], &handle);
                            }
                        });
                        return;
                    }
                    Step::Call {
                        body,
                        seal,
                        running,
                    } => {
                        let via = Via::Datagram {
                            peer,
                            size: len,
                            reply: true,
                        };
                        // A call of no `rpc.` function (most) skips the
                        // cancel and topic checks, each a parse.
                        let hints = Hints::of(body);
                        let rpc = hints.rpc;
                        let cancel = match rpc.then(|| shared.cancel_of(body)).flatten() {
                            // true if the call ran (and so is stopped;
                            // unless it ends in the meantime).
                            Some(target) if plain => Some((
                                target,
                                target.is_some_and(|t| cancel_running(state, peer, t)),
                            )),
                            _ => None,
                        };
                        let n = if let Some((target, stopped)) = cancel {
                            shared.answer_cancel(seq, target, stopped, out)
                        } else {
                            shared.answer_call(
                                seq,
                                body,
                                hints,
                                seal.as_ref(),
                                &origin,
                                via,
                                read_at,
                                out,
                            )
                        };
                        drop(running);
                        if n > 0 {
                            // Sent first, remembered after: the caller
                            // need not wait for the cache. (This thread
                            // reads no datagram before it is remembered.)
                            outlet.send(&out[..n], runtime);
                            if plain {
                                lock(state).cache.insert(peer, seq, request, &out[..n], now);
                            }
                        }
                        None
                    }
                }
            }
        };
        if let Some(n) = reply_len {
            outlet.send(&out[..n], runtime);
        }
        // A state topic's event 1 follows its subscribe's reply.
        shared.hub.after_reply();
    }
}

/// How many plain notifications the repeat memory holds (contract 10.8
/// rule 7: at least 8); when full, the oldest is forgotten.
pub(super) const NOTIFY_MEMORY: usize = 64;

/// How long a plain notification is remembered (contract 10.2: 60 s).
const NOTIFY_MEMORY_AGE: Duration = Duration::from_secs(60);

/// The repeat memory of plain notifications: (address, seq, length, CRC)
/// of the latest [`NOTIFY_MEMORY`], so a repeat is never run twice.
#[derive(Default)]
struct Notified {
    seen: std::collections::VecDeque<((SocketAddr, u32, u32, u32), Instant)>,
}

impl Notified {
    /// Whether `key` came within [`NOTIFY_MEMORY_AGE`]; if not, it is
    /// remembered from now (forgetting the oldest when full).
    fn repeat(&mut self, key: (SocketAddr, u32, u32, u32), now: Instant) -> bool {
        while let Some(&(_, at)) = self.seen.front() {
            if now.duration_since(at) < NOTIFY_MEMORY_AGE {
                break;
            }
            self.seen.pop_front();
        }
        if self.seen.iter().any(|(k, _)| *k == key) {
            return true;
        }
        if self.seen.len() == NOTIFY_MEMORY {
            self.seen.pop_front();
        }
        self.seen.push_back((key, now));
        false
    }
}

/// Fires the cancel of `peer`'s async call `seq` if it runs: whether it
/// did.
fn cancel_running(state: &Mutex<State>, peer: SocketAddr, seq: u32) -> bool {
    match lock(state).running.get(&(peer, seq)) {
        Some(cancel) => {
            cancel.fire();
            true
        }
        None => false,
    }
}

/// The shared state, whatever a panicking holder left (every update is
/// one statement that cannot leave it half done).
fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wakes the datagram thread once `stop` turns true (or its sender is
/// dropped), with an empty datagram to the socket's own address, so that
/// a shutdown does not wait for [`RECEIVE_TIMEOUT`].
pub(super) async fn wake_on_stop(mut stop: watch::Receiver<bool>, addr: SocketAddr) {
    let _ = stop.wait_for(|s| *s).await;
    let to = match addr.ip() {
        ip if !ip.is_unspecified() => addr,
        std::net::IpAddr::V4(_) => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        std::net::IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
    };
    let local: SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    if let Ok(socket) = tokio::net::UdpSocket::bind(local).await {
        let _ = socket.send_to(&[], to).await;
    }
}

/// Error replies to bad datagrams sent per second at most (the contract
/// answers them "if any"); beyond this they are dropped.
pub const ERROR_REPLIES_PER_SECOND: u32 = 1000;

/// A budget of `per_second` events, refilled each second.
struct Ration {
    per_second: u32,
    left: u32,
    since: Instant,
}

impl Ration {
    fn new(per_second: u32) -> Ration {
        Ration {
            per_second,
            left: per_second,
            since: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        if now.duration_since(self.since) >= Duration::from_secs(1) {
            self.since = now;
            self.left = self.per_second;
        }
        if self.left > 0 {
            self.left -= 1;
            true
        } else {
            false
        }
    }
}

/// Sends one datagram (blocking only while the socket's send buffer is
/// full); a failure concerns that peer alone.
fn send(socket: &std::net::UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, peer) {
        debug!("udp send to {peer} failed: {e}");
    }
}
