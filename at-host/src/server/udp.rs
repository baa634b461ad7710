//! The UDP serving loop: one frame per datagram, answered at most once per
//! (client address, seq) through the reply [`cache`](super::cache), and
//! error replies to bad datagrams rationed by [`Ration`]. What at-most-once
//! promises, and its bounds, are told in the public [`udp`](crate::udp)
//! module docs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use at_core::auth::{Origin, Transport};
use at_core::{Frame, FrameError, HEADER_LEN, Kind};
use log::debug;
use tokio::sync::{mpsc, watch};

use super::cache::ReplyCache;
use super::destination;
use super::log_limit::protocol_warn;
use super::{Shared, Step};
use crate::shared::wire::MAX_DATAGRAM;

/// Serves calls arriving on `socket` until `stop` turns true; drops `alive`
/// when done.
pub(super) async fn serve(
    socket: destination::Socket,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let socket = Arc::new(socket);
    // Async functions finish on tasks of their own and hand their reply
    // back here, to be remembered and sent; meanwhile a retransmission of
    // the same request is dropped (its reply is on the way).
    let (finished_tx, mut finished) = mpsc::channel::<Finished>(64);
    let mut running: HashSet<(SocketAddr, u32)> = HashSet::new();
    let config = &shared.config;
    let max_body = config.max_frame;
    // Room for any datagram, so a size check is never fooled by truncation.
    let room = MAX_DATAGRAM.max(HEADER_LEN + max_body as usize) + 1;
    let mut bufs: [Vec<u8>; destination::BATCH] = std::array::from_fn(|_| vec![0u8; room]);
    let mut got = Vec::with_capacity(destination::BATCH);
    let mut out = vec![0u8; (HEADER_LEN + max_body as usize).max(at_core::MIN_REPLY_BUFFER)];
    let mut error_replies = Ration::new(ERROR_REPLIES_PER_SECOND);
    let mut cache = ReplyCache::new(
        config.udp_cache_entries,
        config.udp_cache_per_client,
        config.udp_cache_age,
    );
    let pktinfo = destination::enable(socket.get_ref());
    // Waited for across every datagram: registered once, not once each.
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    loop {
        let event = tokio::select! {
            r = destination::recv(&socket, pktinfo, &mut bufs, &mut got) => Event::Datagrams(r),
            Some(done) = finished.recv() => Event::Finished(done),
            _ = &mut stopped => break,
        };
        match event {
            Event::Datagrams(Ok(())) => {}
            Event::Datagrams(Err(e)) => {
                // ICMP errors from earlier sends surface here on some
                // systems; they concern one peer, not the socket.
                debug!("udp receive error: {e}");
                continue;
            }
            Event::Finished(done) => {
                running.remove(&(done.peer, done.seq));
                if let Some(request) = done.request {
                    cache.insert(done.peer, done.seq, request, &done.reply, Instant::now());
                }
                if !done.reply.is_empty() {
                    answer(&socket, &done.reply, done.peer, done.broadcast).await;
                }
                continue;
            }
        }
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
            let now = Instant::now();
            let reply_len = match Frame::parse(&buf[..len], max_body) {
                Err(e @ FrameError::SizeMismatch { .. }) => {
                    protocol_warn!("udp from {peer}: dropped: {e}");
                    None
                }
                Err(e) => {
                    protocol_warn!("udp from {peer}: bad frame: {e}");
                    // Error replies to bad datagrams are rationed: a flood of
                    // garbage (perhaps from spoofed addresses) must neither
                    // crowd out real calls nor be reflected at full rate.
                    if error_replies.take(now) {
                        at_core::respond_to_error(&e, &mut out)
                    } else {
                        None
                    }
                }
                Ok(frame) if frame.kind != Kind::Request => {
                    protocol_warn!(
                        "udp from {peer}: ignoring a {:?} frame: servers answer requests only",
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
                    if plain && let Some(reply) = cache.get(peer, seq, request, now) {
                        debug!("udp from {peer}: seq {seq} again: resending the remembered reply");
                        answer(&socket, reply, peer, broadcast).await;
                        continue;
                    }
                    if running.contains(&(peer, seq)) {
                        debug!("udp from {peer}: seq {seq} again while it runs: dropped");
                        continue;
                    }
                    let origin = Origin {
                        transport: Transport::Datagram,
                        peer: Some(peer),
                        broadcast,
                    };
                    // A datagram never waits: a replay of a call still running
                    // is dropped by the guard, and the client retransmits.
                    match shared.admit(&frame, &origin, &mut out, false) {
                        Step::Reply(n) => Some(n),
                        Step::Drop | Step::Wait(_) => None,
                        Step::Call {
                            body,
                            seal,
                            running: call,
                        } if shared.registry.calls_async(body) => {
                            running.insert((peer, seq));
                            let (done, mut reply) = (finished_tx.clone(), vec![0u8; out.len()]);
                            let (shared, body) = (Arc::clone(&shared), body.to_vec());
                            tokio::spawn(async move {
                                let n = shared
                                    .answer_async(seq, &body, seal.as_ref(), &origin, &mut reply)
                                    .await;
                                reply.truncate(n);
                                drop(call);
                                let finished = Finished {
                                    peer,
                                    seq,
                                    broadcast,
                                    request: plain.then_some(request),
                                    reply,
                                };
                                let _ = done.send(finished).await;
                            });
                            continue;
                        }
                        Step::Call {
                            body,
                            seal,
                            running,
                        } => {
                            let n = shared.answer(seq, body, seal.as_ref(), &origin, &mut out);
                            drop(running);
                            if plain && n > 0 {
                                cache.insert(peer, seq, request, &out[..n], now);
                            }
                            (n > 0).then_some(n)
                        }
                    }
                }
            };
            if let Some(n) = reply_len {
                answer(&socket, &out[..n], peer, broadcast).await;
            }
        }
    }
    drop(alive);
}

/// Sends `reply` to `peer`. To a request that came by broadcast or
/// multicast (section 8) only a success goes, after a random pause; an
/// error reply is dropped. Every reply goes through here: fresh, remembered
/// and from async functions alike.
async fn answer(
    socket: &Arc<destination::Socket>,
    reply: &[u8],
    peer: SocketAddr,
    broadcast: bool,
) {
    if !broadcast {
        send(socket, reply, peer).await;
    } else if Frame::parse(reply, u32::MAX).is_ok_and(|f| f.kind == Kind::Response) {
        let (socket, reply) = (Arc::clone(socket), reply.to_vec());
        tokio::spawn(async move {
            tokio::time::sleep(destination::answer_delay()).await;
            send(&socket, &reply, peer).await;
        });
    } else {
        debug!("udp from {peer}: no error reply to a broadcast request");
    }
}

/// What woke the datagram loop.
enum Event {
    /// Datagrams read into the loop's buffers (described in `got`).
    Datagrams(std::io::Result<()>),
    Finished(Finished),
}

/// The reply of an async function, back from its task.
struct Finished {
    peer: SocketAddr,
    seq: u32,
    /// Whether the request came by broadcast or multicast.
    broadcast: bool,
    /// A plain request's (length, CRC), as the cache keys it; `None` for
    /// an authenticated one (the guard remembered its reply).
    request: Option<(u32, u32)>,
    reply: Vec<u8>,
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

async fn send(socket: &destination::Socket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = destination::send(socket, bytes, peer).await {
        debug!("udp send to {peer} failed: {e}");
    }
}
