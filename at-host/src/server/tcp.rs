//! The TCP side of the server: the accept loop (with the connection limits
//! of [`Slots`] and `busy` refusals) and the loop serving one connection,
//! which answers every whole frame buffered with one write.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use at_core::auth::{Origin, Transport};
use at_core::{ErrorCode, FrameDecoder, HEADER_LEN, Kind};
use log::{info, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::log_limit::protocol_warn;
use super::peer::{Link, Outgoing};
use super::slots::{Slots, Ticket};
use super::topics::Via;
use super::woken::Woken;
use super::{ServerConfig, Shared, Step};
use crate::shared::wire::{Hints, holds, mentions};

/// Accepts connections until `stop` turns true, serving each on its own
/// task within the limits of [`Slots`]; drops `alive` when done.
pub(super) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let slots = Slots::new(shared.config.max_connections, shared.config.max_per_address);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly so
                // the loop does not spin, then keep serving.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let alive = alive.clone();
        match slots.admit(peer.ip()) {
            Ok(ticket) => {
                let (shared, stop) = (shared.clone(), stop.clone());
                tokio::spawn(async move {
                    info!("connection from {peer}");
                    let reason = serve_connection(stream, peer, &shared, stop, &ticket).await;
                    info!("connection from {peer} closed: {reason}");
                    drop((ticket, alive));
                });
            }
            Err(refusal) => {
                protocol_warn!("refusing {peer}: {refusal}");
                let timeout = shared.config.frame_timeout;
                tokio::spawn(async move {
                    refuse_busy(stream, timeout).await;
                    drop(alive);
                });
            }
        }
    }
}

async fn refuse_busy(mut stream: TcpStream, timeout: Duration) {
    let mut out = [0u8; at_core::MIN_REPLY_BUFFER];
    if let Ok(n) = at_core::write_error_frame(0, ErrorCode::Busy, "server busy", &mut out) {
        let _ = tokio::time::timeout(timeout, stream.write_all(&out[..n])).await;
    }
    linger_close(stream).await;
}

/// Closes a connection so that what was written reaches the peer: send FIN,
/// then read and discard what the peer still sends for a short, bounded
/// while (closing with unread data would send RST, which can destroy the
/// error reply in the peer's receive buffer).
async fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut drained = 0usize;
    while drained < 1 << 20 {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// Why a connection ended, for the log.
enum EndReason {
    PeerClosed,
    PeerClosedMidFrame,
    Idle,
    FrameTimeout,
    WriteTimeout,
    Io(io::Error),
    OutOfStep(at_core::FrameError),
    Shutdown,
    Evicted,
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::PeerClosed => f.write_str("by the peer"),
            EndReason::PeerClosedMidFrame => f.write_str("by the peer in the middle of a frame"),
            EndReason::Idle => f.write_str("idle timeout"),
            EndReason::FrameTimeout => f.write_str("timeout in the middle of a frame"),
            EndReason::WriteTimeout => f.write_str("peer does not read its replies"),
            EndReason::Io(e) => write!(f, "{e}"),
            EndReason::OutOfStep(e) => write!(f, "stream out of step ({e})"),
            EndReason::Shutdown => f.write_str("server shutting down"),
            EndReason::Evicted => {
                f.write_str("longest idle of the busiest address, closed for a newcomer")
            }
        }
    }
}

/// Serves one TCP connection: read, answer every whole frame buffered with
/// one write, repeat.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    stop: watch::Receiver<bool>,
    ticket: &Ticket,
) -> EndReason {
    let _ = stream.set_nodelay(true);
    let config = &shared.config;
    let max_body = config.max_frame;
    let frame_room = HEADER_LEN + max_body as usize;
    // Zeroed allocations: pages are only touched as bytes arrive, so idle
    // connections cost little memory.
    let mut decoder = FrameDecoder::with_buffer(vec![0u8; frame_room].into_boxed_slice(), max_body);
    // A reply may be as large as the largest frame a peer accepts, no more.
    let reply_room = frame_room.max(at_core::MIN_REPLY_BUFFER);
    let mut out = vec![0u8; 2 * reply_room];
    let mut pending = 0usize;
    let origin = Origin::from(Transport::Stream, peer);
    // Shutdown and eviction, waited for across every read: registered
    // once per connection, not once per read.
    let mut stopping = stop.clone();
    let ended = async {
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => EndReason::Shutdown,
            () = ticket.evicted() => EndReason::Evicted,
        }
    };
    tokio::pin!(ended);
    // Polled only when woken: the select below polls every branch each
    // time, and these two almost never complete.
    let mut ended = Woken::new(ended);
    // The idle and frame timeouts share one timer, moved only when a wait's
    // deadline comes before the timer's; when it fires early (set for an
    // earlier wait), it is set again. So a read costs a clock reading, not
    // a timer registered and removed.
    let timer = tokio::time::sleep(config.frame_timeout.min(config.idle_timeout));
    tokio::pin!(timer);
    let mut timer = Woken::new(timer);
    // When the latest read ended: every whole frame buffered was whole by
    // then (the loop answers them all before reading again), so a
    // deadline counts from here (contract 10.4).
    let mut read_at = std::time::Instant::now();
    // Subscriptions (none until the peer subscribes).
    let mut events = super::topics::Events::default();
    // Calls towards the client, once it called rpc.peer (contract 10.5).
    let mut link: Option<Link> = None;
    // The calls cancels stopped or cancelled before they started, until
    // those cancels are taken in order (contract 10.4).
    let mut cancels = Cancels::default();
    // Frames read while an async call ran were whole only at that read:
    // once no more than `.0` bytes are buffered, the frames left count
    // their deadline from `.1` (oldest first).
    let mut late: Vec<(usize, std::time::Instant)> = Vec::new();
    loop {
        // Answer every whole frame buffered, batching the replies.
        let mut out_of_step = None;
        loop {
            if out.len() - pending < reply_room
                && let Err(closed) = flush(&mut stream, &out, &mut pending, config).await
            {
                return closed;
            }
            while let Some(&(bytes, at)) = late.first()
                && decoder.buffered() <= bytes
            {
                read_at = at;
                late.remove(0);
            }
            let room = &mut out[pending..pending + reply_room];
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if frame.kind == Kind::Notify
                        && frame.header.flags & at_core::FLAG_AUTH == 0
                        && let Some(target) = shared.cancel_of(frame.body)
                    {
                        // A cancel whose call has ended (any it stopped
                        // was stopped on arrival): nothing left to do.
                        if let Some(target) = target {
                            cancels.forget(target);
                        }
                        continue;
                    }
                    if frame.kind == Kind::Notify {
                        // Run, never answered: the reply is written past
                        // `pending` and so never sent.
                        let runtime = tokio::runtime::Handle::current();
                        let via = Via::Stream(&mut events);
                        shared.notify_frame(&frame, &origin, via, read_at, &runtime, room);
                        continue;
                    }
                    if matches!(frame.kind, Kind::Response | Kind::Error) {
                        match link.as_mut() {
                            Some(link) if frame.header.flags & at_core::FLAG_AUTH == 0 => {
                                link.reply(frame.seq(), frame.body)
                            }
                            _ => protocol_warn!(
                                "ignoring a {:?} frame (seq {}) from {peer}: no call awaits it",
                                frame.kind,
                                frame.seq()
                            ),
                        }
                        continue;
                    }
                    if frame.kind != Kind::Request {
                        protocol_warn!(
                            "ignoring a {:?} frame (seq {}): servers answer requests only",
                            frame.kind,
                            frame.seq()
                        );
                        continue;
                    }
                    let seq = frame.seq();
                    if frame.header.flags & at_core::FLAG_AUTH == 0 && cancels.take_queued(seq) {
                        // Cancelled while it waited behind a running call:
                        // never called (contract 10.4).
                        pending += super::cancelled_reply(seq, room);
                        continue;
                    }
                    let mut step = shared.admit(&frame, &origin, room, true);
                    if let Step::Wait(mut done) = step {
                        // The same authenticated call runs for another
                        // connection (this client lost that one and sent
                        // it again): wait for its reply to be remembered,
                        // as long as an idle connection is kept.
                        if let Err(closed) = flush(&mut stream, &out, &mut pending, config).await {
                            return closed;
                        }
                        tokio::select! {
                            _ = tokio::time::timeout(config.idle_timeout, done.changed()) => {}
                            reason = &mut ended => return reason,
                        }
                        step = shared.admit(&frame, &origin, &mut out[..reply_room], false);
                    }
                    match step {
                        Step::Reply(n) => pending += n,
                        Step::Drop | Step::Wait(_) => {}
                        Step::Call {
                            body,
                            seal,
                            running,
                        } if shared.registry.calls_async(body) => {
                            // Replies leave in request order: the batch so
                            // far goes first, so it does not wait on the
                            // function (this connection waits; the others
                            // do not).
                            if let Err(closed) =
                                flush(&mut stream, &out, &mut pending, config).await
                            {
                                return closed;
                            }
                            if let Some(link) = link.as_mut() {
                                // A peer: the connection keeps reading
                                // while the function runs, which may call
                                // the peer back (contract 10.5).
                                let body = body.to_vec();
                                let plain = seal.is_none();
                                let cancel = super::Cancel::default();
                                let call = async {
                                    let mut reply = vec![0u8; reply_room];
                                    let n = shared
                                        .answer_async(
                                            seq,
                                            &body,
                                            seal.as_ref(),
                                            &origin,
                                            read_at,
                                            &mut reply,
                                            Some(&cancel),
                                        )
                                        .await;
                                    reply.truncate(n);
                                    reply
                                };
                                let waiting = Waiting {
                                    stream: &mut stream,
                                    decoder: &mut decoder,
                                    out: &mut out,
                                    link,
                                    shared,
                                    origin: &origin,
                                    running: plain.then_some((seq, &cancel)),
                                };
                                match waiting.serve(call).await {
                                    Ok(()) => {}
                                    Err(reason) => return reason,
                                }
                                drop(running);
                                continue;
                            }
                            // Not a peer: the connection keeps reading
                            // into its decoder while the function runs,
                            // and looks among the frames buffered for an
                            // rpc.cancel naming it (contract 10.4); they
                            // are answered in order once it ends.
                            let body = body.to_vec();
                            let plain = seal.is_none();
                            let cancel = super::Cancel::default();
                            // The batch was flushed: the reply goes first.
                            let room = &mut out[..reply_room];
                            let call = shared.answer_async(
                                seq,
                                &body,
                                seal.as_ref(),
                                &origin,
                                read_at,
                                room,
                                Some(&cancel),
                            );
                            let running_call = plain.then_some((seq, &cancel));
                            let before = decoder.buffered();
                            let ran = match read_while(
                                call,
                                &mut stream,
                                &mut decoder,
                                shared,
                                running_call,
                                &mut cancels,
                            )
                            .await
                            {
                                Ok(ran) => ran,
                                Err(reason) => return reason,
                            };
                            if let Some(at) = ran.last_read {
                                let read = decoder.buffered() - before;
                                for entry in &mut late {
                                    entry.0 += read;
                                }
                                late.push((decoder.buffered() - ran.whole_before, at));
                            }
                            if cancel.stopped() {
                                cancels.stopped(seq);
                            }
                            pending += ran.reply;
                            drop(running);
                        }
                        Step::Call {
                            body,
                            seal,
                            running,
                        } => {
                            let room = &mut out[pending..pending + reply_room];
                            // A call of no `rpc.` function (most) skips the
                            // checks below, each a parse.
                            let hints = Hints::of(body);
                            let rpc = hints.rpc;
                            if rpc && let Some(target) = shared.cancel_of(body) {
                                // In order: true only for a call a cancel
                                // stopped on arrival (contract 10.4).
                                let stopped = target.is_some_and(|t| cancels.forget(t));
                                pending += shared.answer_cancel(seq, target, stopped, room);
                                drop(running);
                                continue;
                            }
                            if rpc
                                && shared.auth.is_none()
                                && let Some(answer) = super::peer::answer(seq, body, room)
                            {
                                // rpc.peer: from now on this client may be
                                // called back here (contract 10.5).
                                let (n, granted) = answer;
                                if granted && link.is_none() {
                                    info!("{peer} may be called back (rpc.peer)");
                                    link = Some(shared.peers.join(peer));
                                    keep_alive(&stream);
                                }
                                pending += n;
                                drop(running);
                                continue;
                            }
                            let via = Via::Stream(&mut events);
                            pending += shared.answer_call(
                                seq,
                                body,
                                hints,
                                seal.as_ref(),
                                &origin,
                                via,
                                read_at,
                                room,
                            );
                            drop(running);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    protocol_warn!("bad frame from {peer}: {e}");
                    if let Some(n) = at_core::respond_to_error(&e, room) {
                        pending += n;
                    }
                    if e.loses_sync() {
                        out_of_step = Some(e);
                        break;
                    }
                }
            }
        }
        // Events go with the replies, the batch as it fills; while they
        // wait, the queue of each subscription is bounded (the rest lost).
        loop {
            let more = events.drain(&mut out, &mut pending, reply_room);
            if let Err(closed) = flush(&mut stream, &out, &mut pending, config).await {
                return closed;
            }
            if !more {
                break;
            }
        }
        if let Some(e) = out_of_step {
            linger_close(stream).await;
            return EndReason::OutOfStep(e);
        }
        if *stop.borrow() {
            farewell(&mut stream, &events, &mut out, reply_room, config).await;
            return EndReason::Shutdown;
        }
        let (timeout, on_timeout) = if decoder.buffered() > 0 {
            (config.frame_timeout, EndReason::FrameTimeout)
        } else if link.is_some() {
            // A peer waits to be called: TCP keepalive watches it instead.
            (PEER_IDLE_TIMEOUT, EndReason::Idle)
        } else {
            (config.idle_timeout, EndReason::Idle)
        };
        let now = Instant::now();
        let deadline = now + timeout;
        if deadline < timer.get_mut().deadline() {
            timer.get_mut().as_mut().reset(deadline);
            timer.poll_next_time();
        }
        ticket.idle(now.into_std());
        let read = loop {
            // Biased: the read first (the branch that is ready almost
            // always), so the timer and the shutdown waiter are polled
            // only when it is not.
            tokio::select! {
                biased;
                // A peer's calls first: at most 4 are outstanding, so they
                // never hold up the reads for long, and a peer that keeps
                // sending cannot hold them up.
                call = queued(&mut link) => {
                    // The server's own calls go out with the next batch.
                    pending += link_write(&mut link, call, &mut out[pending..pending + reply_room]);
                    break Ok(None);
                }
                read = stream.read(decoder.spare()) => break Ok(Some(read)),
                () = events.ready() => break Ok(None),
                () = &mut timer => {
                    if Instant::now() >= deadline {
                        return on_timeout;
                    }
                    timer.get_mut().as_mut().reset(deadline);
                    timer.poll_next_time();
                }
                reason = &mut ended => break Err(reason),
            }
        };
        let read = match read {
            Err(reason) => {
                if matches!(reason, EndReason::Shutdown) {
                    farewell(&mut stream, &events, &mut out, reply_room, config).await;
                }
                return reason;
            }
            Ok(read) => read,
        };
        let Some(read) = read else {
            // Events queued: written with the next batch (there is no
            // frame to answer, so at once).
            continue;
        };
        ticket.busy();
        read_at = std::time::Instant::now();
        // Every whole frame was answered before this read.
        late.clear();
        match read {
            Ok(0) if decoder.buffered() > 0 => return EndReason::PeerClosedMidFrame,
            Ok(0) => return EndReason::PeerClosed,
            Ok(n) => decoder.commit(n),
            Err(e) => return EndReason::Io(e),
        }
    }
}

/// Runs `call` (an async function's) to its reply while the connection
/// keeps reading into `decoder`: after each read the whole frames
/// buffered are looked at, not taken (they are answered in order once the
/// call ends), for a plain `rpc.cancel` naming `running` (fired at once)
/// or a request buffered before it (cancelled before it starts). A full
/// buffer, or the peer's end of the stream, stops the reading (the reply
/// still goes out).
async fn read_while<T>(
    call: impl std::future::Future<Output = T>,
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder<Box<[u8]>>,
    shared: &Shared,
    running: Option<(u32, &super::Cancel)>,
    cancels: &mut Cancels,
) -> Result<Ran<T>, EndReason> {
    tokio::pin!(call);
    // What is buffered now is passed over for the name once (not every
    // read: most calls are not async); then each read as it comes.
    cancels.scan(decoder.buffered_bytes(), true);
    // Looked at only when a cancel may be buffered (most often none is).
    let mut whole_before = match cancels.may_be_buffered() {
        true => Some(look_ahead(decoder, shared, running, cancels)),
        false => None,
    };
    let mut last_read = None;
    let mut reading = true;
    loop {
        let room = !decoder.spare().is_empty();
        tokio::select! {
            reply = &mut call => {
                return Ok(Ran {
                    reply,
                    whole_before: whole_before.unwrap_or(0),
                    last_read,
                })
            }
            read = stream.read(decoder.spare()), if reading && room => match read {
                // Read again (and seen to be closed) after the reply.
                Ok(0) => reading = false,
                Ok(n) => {
                    if whole_before.is_none() {
                        // Before the read: what was whole until now.
                        whole_before = Some(whole_bytes(decoder));
                    }
                    cancels.scan(&decoder.spare()[..n], false);
                    decoder.commit(n);
                    last_read = Some(std::time::Instant::now());
                    if cancels.may_be_buffered() {
                        look_ahead(decoder, shared, running, cancels);
                    }
                }
                Err(e) => return Err(EndReason::Io(e)),
            },
        }
    }
}

/// What [`read_while`] did.
struct Ran<T> {
    /// The call's outcome (its reply's length).
    reply: T,
    /// Bytes of the whole frames buffered when the call started.
    whole_before: usize,
    /// When the latest read while the call ran ended (none: no read).
    last_read: Option<std::time::Instant>,
}

/// Looks at the whole frames `decoder` buffers, leaving them there, for
/// plain `rpc.cancel`s (REQUEST or NOTIFY): one naming `running` fires
/// its cancel; one naming a plain request buffered before it marks that
/// request cancelled. Sealed frames are not looked at.
/// Returns how many bytes the whole frames take.
fn look_ahead(
    decoder: &FrameDecoder<Box<[u8]>>,
    shared: &Shared,
    running: Option<(u32, &super::Cancel)>,
    cancels: &mut Cancels,
) -> usize {
    if decoder.buffered() < HEADER_LEN {
        return 0;
    }
    // A copy of the decoder, so the frames stay for their turn.
    let mut peek = decoder.clone();
    let mut queued: Vec<u32> = Vec::new();
    loop {
        let frame = match peek.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) if e.loses_sync() => break,
            Err(_) => continue,
        };
        let plain = frame.header.flags & at_core::FLAG_AUTH == 0;
        if !plain || !matches!(frame.kind, Kind::Request | Kind::Notify) {
            continue;
        }
        match shared.cancel_of(frame.body) {
            Some(Some(target)) => match running {
                Some((seq, cancel)) if seq == target => cancel.fire(),
                _ if queued.contains(&target) => cancels.queued(target),
                _ => {}
            },
            Some(None) => {}
            None if frame.kind == Kind::Request && queued.len() < MAX_CANCELS => {
                queued.push(frame.seq())
            }
            None => {}
        }
    }
    decoder.buffered() - peek.buffered()
}

/// How many bytes the whole frames `decoder` buffers take (a frame that
/// puts the stream out of step, and what follows, not counted).
fn whole_bytes(decoder: &FrameDecoder<Box<[u8]>>) -> usize {
    if decoder.buffered() < HEADER_LEN {
        return 0;
    }
    let mut peek = decoder.clone();
    loop {
        match peek.next_frame() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) if e.loses_sync() => break,
            Err(_) => {}
        }
    }
    decoder.buffered() - peek.buffered()
}

/// Most seqs [`Cancels`] holds of each kind (a client keeps few calls
/// outstanding; past this, a cancel of a queued call is not acted on).
const MAX_CANCELS: usize = 64;

/// What the cancels looked at ahead of their turn did, for when they and
/// the calls they name are taken in order.
#[derive(Default)]
struct Cancels {
    /// Calls a cancel stopped: its REQUEST answers `true`.
    stopped: Vec<u32>,
    /// Requests buffered, not started, that a cancel named: answered
    /// `cancelled` unrun.
    queued: Vec<u32>,
    /// Whether the bytes buffered may hold an `rpc.cancel` (they spell
    /// it, or hold an escape, which might), so that the frames are looked
    /// at only then.
    spelled: bool,
    /// The last bytes read (`tail_len` of them), for a name split
    /// between two reads.
    tail: [u8; CANCEL_NAME.len() - 1],
    tail_len: usize,
}

/// What a body spells to name `rpc.cancel`, unless escaped.
const CANCEL_NAME: &[u8] = b"rpc.cancel";

impl Cancels {
    /// Notes `bytes`, read after those noted so far (`fresh`: they are all
    /// the decoder buffers, and what was noted before is forgotten).
    fn scan(&mut self, bytes: &[u8], fresh: bool) {
        const KEEP: usize = CANCEL_NAME.len() - 1;
        if fresh {
            self.spelled = false;
            self.tail_len = 0;
        }
        if self.spelled {
            return;
        }
        // The name split between the last read and this one.
        let mut joined = [0u8; 2 * KEEP];
        let head = &bytes[..bytes.len().min(KEEP)];
        joined[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        joined[self.tail_len..self.tail_len + head.len()].copy_from_slice(head);
        let joined = &joined[..self.tail_len + head.len()];
        // The name holds a `.`, rare in a call: most reads are passed over
        // eight bytes at a time.
        let [dot, backslash] = holds(bytes, [b'.', b'\\']);
        self.spelled = backslash
            || (dot && mentions(bytes, CANCEL_NAME))
            || (holds(joined, [b'.']) == [true] && mentions(joined, CANCEL_NAME));
        // The new tail: the last KEEP bytes of what was read so far.
        let last = &joined[joined.len().saturating_sub(KEEP)..];
        let last = if bytes.len() >= KEEP {
            &bytes[bytes.len() - KEEP..]
        } else {
            last
        };
        self.tail[..last.len()].copy_from_slice(last);
        self.tail_len = last.len();
    }

    /// Whether a cancel may be among the frames buffered.
    fn may_be_buffered(&self) -> bool {
        self.spelled
    }

    fn stopped(&mut self, seq: u32) {
        if !self.stopped.contains(&seq) && self.stopped.len() < MAX_CANCELS {
            self.stopped.push(seq);
        }
    }

    fn queued(&mut self, seq: u32) {
        if !self.queued.contains(&seq) && self.queued.len() < MAX_CANCELS {
            self.queued.push(seq);
        }
    }

    /// Whether request `seq` is to be answered `cancelled` unrun (it then
    /// counts as stopped).
    fn take_queued(&mut self, seq: u32) -> bool {
        match self.queued.iter().position(|&s| s == seq) {
            Some(i) => {
                self.queued.swap_remove(i);
                self.stopped(seq);
                true
            }
            None => false,
        }
    }

    /// Takes the cancel of `seq` in its turn: whether it stopped it.
    fn forget(&mut self, seq: u32) -> bool {
        match self.stopped.iter().position(|&s| s == seq) {
            Some(i) => {
                self.stopped.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// Writes the events still queued (the `"end": "server"` ones of a
/// shutdown), best effort, before the connection closes.
async fn farewell(
    stream: &mut TcpStream,
    events: &super::topics::Events,
    out: &mut [u8],
    reply_room: usize,
    config: &ServerConfig,
) {
    let mut pending = 0;
    loop {
        let more = events.drain(out, &mut pending, reply_room);
        if flush(stream, out, &mut pending, config).await.is_err() || !more {
            return;
        }
    }
}

/// Writes the replies batched in `out[..*pending]`, if any, and empties
/// the batch.
async fn flush(
    stream: &mut TcpStream,
    out: &[u8],
    pending: &mut usize,
    config: &ServerConfig,
) -> Result<(), EndReason> {
    if *pending == 0 {
        return Ok(());
    }
    // Most often the socket takes it all at once: no timer then.
    let written = match stream.try_write(&out[..*pending]) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(EndReason::Io(e)),
    };
    if written == *pending {
        *pending = 0;
        return Ok(());
    }
    let rest = &out[written..*pending];
    match tokio::time::timeout(config.frame_timeout, stream.write_all(rest)).await {
        Ok(Ok(())) => {
            *pending = 0;
            Ok(())
        }
        Ok(Err(e)) => Err(EndReason::Io(e)),
        Err(_) => Err(EndReason::WriteTimeout),
    }
}

/// The next call queued for the peer of `link`; never, without one.
async fn queued(link: &mut Option<Link>) -> Outgoing {
    match link {
        Some(link) => link.queued().await,
        None => std::future::pending().await,
    }
}

/// Frames `call` into `out`: its length. Only called with a link.
fn link_write(link: &mut Option<Link>, call: Outgoing, out: &mut [u8]) -> usize {
    match link {
        Some(link) => link.write(call, out),
        None => 0,
    }
}

/// A connection to a peer while one of its calls to an async function
/// runs: the connection keeps reading, so that replies to the server's
/// calls reach them (the function may await one), notifications run, and
/// requests get `busy`, sent after the running call's reply in order
/// (contract 10.8 rule 8); more than [`OWED_BUSY`] owed, it stops
/// reading until the call ends. As for any call, a shutdown or an
/// eviction waits until the call is answered.
struct Waiting<'a> {
    stream: &'a mut TcpStream,
    decoder: &'a mut at_core::FrameDecoder<Box<[u8]>>,
    out: &'a mut Vec<u8>,
    link: &'a mut Link,
    shared: &'a Arc<Shared>,
    origin: &'a Origin,
    /// The seq of the call running and its cancel, for a plain call.
    running: Option<(u32, &'a super::Cancel)>,
}

/// A reply owed to a request a peer sent while its call ran.
enum Owed {
    /// An error (`busy`, or what was wrong with the frame).
    Error(ErrorCode),
    /// A REQUEST `rpc.cancel` naming this seq (`None`: no seq): `true`
    /// if it stopped the running call.
    Cancel(Option<u32>),
}

/// Requests a peer sends while its async call runs that are owed `busy`
/// before the connection stops reading (contract 10.8 rule 8: a caller
/// keeps at most 4 outstanding).
const OWED_BUSY: usize = 4;

impl Waiting<'_> {
    /// Runs `call` to its reply, serving the connection meanwhile, then
    /// writes the reply and the `busy` replies owed.
    async fn serve(
        mut self,
        call: impl std::future::Future<Output = Vec<u8>>,
    ) -> Result<(), EndReason> {
        tokio::pin!(call);
        let config = &self.shared.config;
        let mut owed: Vec<(u32, Owed)> = Vec::new();
        let mut calls_out = 0usize;
        let reply = loop {
            // Frames buffered (replies to route, requests to owe busy).
            if owed.len() < OWED_BUSY {
                self.take_frames(&mut owed)?;
            }
            if calls_out > 0 {
                let mut written = calls_out;
                flush(&mut *self.stream, self.out.as_slice(), &mut written, config).await?;
                calls_out = 0;
            }
            let reading = owed.len() < OWED_BUSY;
            tokio::select! {
                reply = &mut call => break reply,
                read = self.stream.read(self.decoder.spare()), if reading => match read {
                    Ok(0) => return Err(EndReason::PeerClosed),
                    Ok(n) => self.decoder.commit(n),
                    Err(e) => return Err(EndReason::Io(e)),
                },
                queued = self.link.queued() => {
                    let room = self.out.len() / 2;
                    calls_out = self.link.write(queued, &mut self.out[..room]);
                }
            }
        };
        let mut n = reply.len();
        self.out[..n].copy_from_slice(&reply);
        for (seq, owed) in owed {
            let code = match owed {
                Owed::Error(code) => code,
                Owed::Cancel(target) => {
                    let stopped = match self.running {
                        Some((running, cancel)) => target == Some(running) && cancel.stopped(),
                        None => false,
                    };
                    n += self
                        .shared
                        .answer_cancel(seq, target, stopped, &mut self.out[n..]);
                    continue;
                }
            };
            let message = match code {
                ErrorCode::Busy => "busy: a call is running",
                other => other.default_message(),
            };
            n += at_core::write_error_frame(seq, code, message, &mut self.out[n..]).unwrap_or(0);
        }
        flush(&mut *self.stream, self.out.as_slice(), &mut n, config).await
    }

    /// Takes the whole frames buffered while fewer than [`OWED_BUSY`] are
    /// owed: replies to their calls, notifications run, requests owed
    /// `busy`. A frame that puts the stream out of step ends the
    /// connection.
    fn take_frames(&mut self, owed: &mut Vec<(u32, Owed)>) -> Result<(), EndReason> {
        let runtime = tokio::runtime::Handle::current();
        let mut scratch = [0u8; at_core::MIN_REPLY_BUFFER];
        while owed.len() < OWED_BUSY {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => match frame.kind {
                    Kind::Response | Kind::Error
                        if frame.header.flags & at_core::FLAG_AUTH == 0 =>
                    {
                        self.link.reply(frame.seq(), frame.body)
                    }
                    Kind::Notify | Kind::Request
                        if frame.header.flags & at_core::FLAG_AUTH == 0
                            && let Some(target) = self.shared.cancel_of(frame.body) =>
                    {
                        // Acted on at once (contract 10.4); a REQUEST
                        // one is answered after the call's reply.
                        if let Some((seq, cancel)) = self.running
                            && target == Some(seq)
                        {
                            cancel.fire();
                        }
                        if frame.kind == Kind::Request {
                            owed.push((frame.seq(), Owed::Cancel(target)));
                        }
                    }
                    Kind::Notify if frame.header.flags & at_core::FLAG_AUTH == 0 => {
                        let now = std::time::Instant::now();
                        self.shared.notify(
                            frame.seq(),
                            frame.body,
                            self.origin,
                            now,
                            &runtime,
                            &mut scratch,
                        )
                    }
                    Kind::Request => owed.push((frame.seq(), Owed::Error(ErrorCode::Busy))),
                    _ => protocol_warn!(
                        "ignoring a {:?} frame (seq {}) while a call runs",
                        frame.kind,
                        frame.seq()
                    ),
                },
                Ok(None) => return Ok(()),
                Err(e) if e.loses_sync() => return Err(EndReason::OutOfStep(e)),
                Err(e) => {
                    protocol_warn!("bad frame while a call runs: {e}");
                    // A CRC mismatch and the like: answered in order (a
                    // notification never).
                    if self.decoder.last_flags() & at_core::FLAG_NOTIFY == 0 {
                        owed.push((e.seq(), Owed::Error(e.code())));
                    }
                }
            }
        }
        Ok(())
    }
}

/// How long a peer's connection (one that called `rpc.peer`) may stay
/// silent: a board waiting to be called says nothing for long, so the
/// idle timeout does not apply to it; TCP keepalive finds one that
/// vanished (see [`keep_alive`]).
const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Turns on TCP keepalive for a peer's connection: after 60 s without a
/// byte the kernel probes every 10 s and, after 3 unanswered (where the
/// system lets the count be set), closes the connection, which fails the
/// calls waiting on it.
fn keep_alive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        windows
    ))]
    let keepalive = keepalive.with_interval(Duration::from_secs(10));
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
    let keepalive = keepalive.with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        log::debug!("cannot turn on TCP keepalive for a peer: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::Cancels;

    #[test]
    fn a_cancel_name_is_seen_whole_or_split_between_reads() {
        let body = br#"{"func": "rpc.cancel", "args": [11]}"#;
        for split in 0..body.len() {
            let mut cancels = Cancels::default();
            cancels.scan(b"earlier bytes", true);
            cancels.scan(&body[..split], false);
            cancels.scan(&body[split..], false);
            assert!(cancels.may_be_buffered(), "split at {split}");
        }
        // Split in three, the middle read shorter than the name.
        let mut cancels = Cancels::default();
        cancels.scan(b"xx rpc", true);
        cancels.scan(b".ca", false);
        cancels.scan(b"ncel yy", false);
        assert!(cancels.may_be_buffered());
        // Other calls: nothing to look at; a fresh buffer forgets.
        let mut cancels = Cancels::default();
        cancels.scan(br#"{"func": "rpc.info"}"#, true);
        cancels.scan(br#"{"func": "add", "args": [1, 2]}"#, false);
        assert!(!cancels.may_be_buffered());
        cancels.scan(br#"\u0072pc.cancel"#, false);
        assert!(cancels.may_be_buffered());
        cancels.scan(b"add", true);
        assert!(!cancels.may_be_buffered());
    }
}
