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
use super::slots::{Slots, Ticket};
use super::topics::Via;
use super::{ServerConfig, Shared, Step};

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
    // The idle and frame timeouts share one timer, moved only when a wait's
    // deadline comes before the timer's; when it fires early (set for an
    // earlier wait), it is set again. So a read costs a clock reading, not
    // a timer registered and removed.
    let timer = tokio::time::sleep(config.frame_timeout.min(config.idle_timeout));
    tokio::pin!(timer);
    // When the latest read ended: every whole frame buffered was whole by
    // then (the loop answers them all before reading again), so a
    // deadline counts from here (contract 10.4).
    let mut read_at = std::time::Instant::now();
    // Subscriptions (none until the peer subscribes).
    let mut events = super::topics::Events::default();
    loop {
        // Answer every whole frame buffered, batching the replies.
        let mut out_of_step = None;
        loop {
            if out.len() - pending < reply_room
                && let Err(closed) = flush(&mut stream, &out, &mut pending, config).await
            {
                return closed;
            }
            let room = &mut out[pending..pending + reply_room];
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if frame.kind == Kind::Notify {
                        // Run, never answered: the reply is written past
                        // `pending` and so never sent.
                        let runtime = tokio::runtime::Handle::current();
                        let via = Via::Stream(&mut events);
                        shared.notify_frame(&frame, &origin, via, read_at, &runtime, room);
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
                            let room = &mut out[..reply_room];
                            pending += shared
                                .answer_async(seq, body, seal.as_ref(), &origin, read_at, room)
                                .await;
                            drop(running);
                        }
                        Step::Call {
                            body,
                            seal,
                            running,
                        } => {
                            let room = &mut out[pending..pending + reply_room];
                            let via = Via::Stream(&mut events);
                            pending += match shared.topic_call(
                                seq,
                                body,
                                seal.as_ref(),
                                &origin,
                                via,
                                room,
                            ) {
                                Some(n) => n,
                                None => {
                                    shared.answer(seq, body, seal.as_ref(), &origin, read_at, room)
                                }
                            };
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
        } else {
            (config.idle_timeout, EndReason::Idle)
        };
        let now = Instant::now();
        let deadline = now + timeout;
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        ticket.idle(now.into_std());
        let read = loop {
            // Biased: the read first (the branch that is ready almost
            // always), so the timer and the shutdown waiter are polled
            // only when it is not.
            tokio::select! {
                biased;
                read = stream.read(decoder.spare()) => break Ok(Some(read)),
                () = events.ready() => break Ok(None),
                () = &mut timer => {
                    if Instant::now() >= deadline {
                        return on_timeout;
                    }
                    timer.as_mut().reset(deadline);
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
        match read {
            Ok(0) if decoder.buffered() > 0 => return EndReason::PeerClosedMidFrame,
            Ok(0) => return EndReason::PeerClosed,
            Ok(n) => decoder.commit(n),
            Err(e) => return EndReason::Io(e),
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
