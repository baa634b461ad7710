//! Calls towards a client (contract 10.5): a TCP client that called
//! `rpc.peer` on its connection may be called back over it.
//!
//! A connection that called `rpc.peer` gets a [`Link`], the connection
//! loop's end: requests queued by [`Peer`] handles arrive on its channel,
//! the loop numbers them from its own counter (1, 2, ...) and writes them,
//! and files each RESPONSE or ERROR it reads with the call awaiting that
//! seq. A reply to a seq nobody awaits is dropped (logged) and the
//! connection kept. When the connection ends, the link is dropped with
//! every call it holds: each caller gets [`ProtocolError::Closed`] at once.
//!
//! [`Peers`] is the server's table of them: those alive (for
//! [`Server::peers`](crate::Server::peers)) and those not yet taken by
//! [`Server::next_peer`](crate::Server::next_peer).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::shared::convert;
use crate::shared::error::{Error, ProtocolError};
use crate::shared::value::{Arg, Value};
use crate::shared::wire::{body_to_result, encode_body, mentions};

/// Most calls outstanding towards one peer at once (contract 10.8 rule
/// 8: a peer that can call back holds at most 4 owed replies); more wait
/// for a turn, within their timeout.
///
/// ```
/// assert_eq!(at_host::MAX_PEER_CALLS, 4);
/// ```
pub const MAX_PEER_CALLS: usize = 4;

/// How long a call to a peer waits for its reply unless told otherwise
/// ([`Peer::with_timeout`]).
///
/// ```
/// assert_eq!(at_host::PEER_TIMEOUT, std::time::Duration::from_secs(5));
/// ```
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Peers not yet taken by `next_peer` that are kept (older ones are
/// forgotten there, still listed by `peers`).
const UNCLAIMED: usize = 64;

/// A client connection that called `rpc.peer`, which the server may call
/// back over that connection (contract 10.5), from any task: the handle is
/// cheap to clone, and its calls take `&self`.
///
/// Calls return the same [`Error`]s as [`Client`](crate::Client)'s: the
/// peer's error reply is [`Error::Remote`]; no reply within the timeout is
/// [`Error::Timeout`] (the connection is kept: a late reply is dropped); a
/// connection that is closed, or closes while the call waits, is
/// [`ProtocolError::Closed`], at once. At most [`MAX_PEER_CALLS`] calls
/// are outstanding towards one peer; more wait for a turn. A call that
/// timed out keeps its turn until its reply comes or the connection ends
/// (the peer may still be running it), so a peer that never answers ends
/// up taking no more calls.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use at_host::{Client, Server};
/// use std::time::Duration;
///
/// let server = Server::builder().tcp("127.0.0.1:0".parse()?).start().await?;
/// // A board connects out and offers to be called back. (A Client stands
/// // in for it here: it serves no calls, so the server's call times out.)
/// let board = Client::connect(server.tcp_addr().unwrap(), Duration::from_secs(5)).await?;
/// let granted: serde_json::Value = board.call_as("rpc.peer", ()).await?;
/// assert_eq!(granted, serde_json::json!({"lease": null}));
///
/// let peer = server.next_peer().await.with_timeout(Duration::from_millis(100));
/// let late = peer.call_as::<u64>("uptime", ()).await;
/// assert!(matches!(late, Err(at_host::Error::Timeout(_))));
/// // Its connection ends: calls fail at once.
/// drop(board);
/// peer.closed().await;
/// assert!(peer.call_as::<u64>("uptime", ()).await.unwrap_err().is_transport());
/// # server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
    timeout: Duration,
}

struct Inner {
    addr: SocketAddr,
    id: u64,
    calls: mpsc::Sender<Outgoing>,
    turns: Arc<Semaphore>,
}

/// A call queued for the connection loop: its body (framed there, with the
/// loop's seq), where its reply goes, and its turn (given back when the
/// reply comes or the connection ends).
pub(super) struct Outgoing {
    body: Vec<u8>,
    reply: oneshot::Sender<Result<Value, Error>>,
    turn: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("addr", &self.inner.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Peer {
    /// The peer's address (its end of the connection).
    ///
    /// ```
    /// # async fn example(server: at_host::Server) {
    /// for peer in server.peers() {
    ///     println!("board at {}", peer.addr());
    /// }
    /// # }
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// This handle with calls bounded by `timeout` (default
    /// [`PEER_TIMEOUT`]), counted from the start of each call (which may
    /// first wait for a turn).
    ///
    /// ```
    /// # async fn example(server: at_host::Server) {
    /// let patient = server.next_peer().await.with_timeout(std::time::Duration::from_secs(30));
    /// # }
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Peer {
        self.timeout = timeout;
        self
    }

    /// True once the peer's connection has ended (calls then fail at once).
    ///
    /// ```
    /// # async fn example(server: at_host::Server) {
    /// let alive = server.peers().into_iter().filter(|p| !p.is_closed()).count();
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.calls.is_closed()
    }

    /// Waits until the peer's connection ends.
    ///
    /// ```
    /// # async fn example(server: at_host::Server) {
    /// let board = server.next_peer().await;
    /// board.closed().await;
    /// println!("{} went away", board.addr());
    /// # }
    /// ```
    pub async fn closed(&self) {
        self.inner.calls.closed().await
    }

    /// Calls `func(args)` on the peer and waits for its reply: the untyped
    /// call (see [`Arg`]).
    ///
    /// ```
    /// # async fn example(board: at_host::Peer) -> Result<(), at_host::Error> {
    /// use at_host::Value;
    /// let on = board.call("led", &[Value::Bool(true)]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn call<A: Arg>(&self, func: &str, args: &[A]) -> Result<Value, Error> {
        let body = encode_body(func, &A::to_core(args))?;
        match tokio::time::timeout(self.timeout, self.call_body(body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    /// Calls `func` with typed arguments (a tuple, array or slice of serde
    /// values) and converts the result: `peer.call_as::<u64>("uptime",
    /// ())`. A result that does not convert is [`Error::Decode`].
    ///
    /// ```
    /// # async fn example(board: at_host::Peer) -> Result<(), at_host::Error> {
    /// let uptime: u64 = board.call_as("uptime", ()).await?;
    /// let sum = board.call_as::<i64>("add", (1, 2)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        func: &str,
        args: impl Serialize,
    ) -> Result<T, Error> {
        let args = convert::to_args(func, &args)?;
        let value = self.call(func, &args).await?;
        convert::from_result(func, value)
    }

    async fn call_body(&self, body: Vec<u8>) -> Result<Value, Error> {
        let closed = || Error::Protocol(ProtocolError::Closed);
        let turn = tokio::select! {
            turn = self.inner.turns.clone().acquire_owned() => turn.map_err(|_| closed())?,
            () = self.inner.calls.closed() => return Err(closed()),
        };
        let (reply, answer) = oneshot::channel();
        let call = Outgoing { body, reply, turn };
        self.inner.calls.send(call).await.map_err(|_| closed())?;
        // Dropped unanswered (the connection ended): closed.
        answer.await.unwrap_or_else(|_| Err(closed()))
    }
}

/// The server's peers: those alive, and those not yet taken by
/// `next_peer`.
#[derive(Default)]
pub(super) struct Peers {
    table: Mutex<Table>,
    arrived: Notify,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Table {
    alive: Vec<Peer>,
    unclaimed: VecDeque<Peer>,
}

impl Peers {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every peer whose connection is alive, oldest first.
    pub(super) fn alive(&self) -> Vec<Peer> {
        self.lock().alive.clone()
    }

    /// The live peer on the connection from `addr`, if any.
    pub(super) fn find(&self, addr: SocketAddr) -> Option<Peer> {
        self.lock().alive.iter().find(|p| p.addr() == addr).cloned()
    }

    /// The oldest peer not yet taken whose connection is still alive,
    /// waiting for one.
    pub(super) async fn next(&self) -> Peer {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut table = self.lock();
                while let Some(peer) = table.unclaimed.pop_front() {
                    if !peer.is_closed() {
                        return peer;
                    }
                }
            }
            arrived.await;
        }
    }

    /// A new peer on the connection from `addr`: its handle is listed, and
    /// the connection loop gets the link.
    pub(super) fn join(self: &Arc<Self>, addr: SocketAddr) -> Link {
        let (calls, queued) = mpsc::channel(MAX_PEER_CALLS);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let peer = Peer {
            inner: Arc::new(Inner {
                addr,
                id,
                calls,
                turns: Arc::new(Semaphore::new(MAX_PEER_CALLS)),
            }),
            timeout: PEER_TIMEOUT,
        };
        {
            let mut table = self.lock();
            table.alive.push(peer.clone());
            if table.unclaimed.len() >= UNCLAIMED {
                table.unclaimed.pop_front();
            }
            table.unclaimed.push_back(peer.clone());
        }
        self.arrived.notify_waiters();
        Link {
            peers: Arc::clone(self),
            id,
            addr,
            queued,
            awaiting: HashMap::new(),
            next_seq: 1,
        }
    }
}

/// The connection loop's end of a peer: the calls to write, those awaiting
/// their reply. Dropped with the connection, which fails every call it
/// holds and takes the peer off the table.
pub(super) struct Link {
    peers: Arc<Peers>,
    id: u64,
    addr: SocketAddr,
    queued: mpsc::Receiver<Outgoing>,
    awaiting: HashMap<u32, Awaiting>,
    next_seq: u32,
}

struct Awaiting {
    reply: oneshot::Sender<Result<Value, Error>>,
    _turn: OwnedSemaphorePermit,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Closing the channel first: calls queued after this fail at once.
        self.queued.close();
        let mut table = self.peers.lock();
        table.alive.retain(|p| p.inner.id != self.id);
        table.unclaimed.retain(|p| p.inner.id != self.id);
    }
}

impl Link {
    /// Waits for a call to write; never ends while there is none.
    pub(super) async fn queued(&mut self) -> Outgoing {
        match self.queued.recv().await {
            Some(call) => call,
            // Not while the table holds a handle (until this link drops).
            None => std::future::pending().await,
        }
    }

    /// Frames `call` with the next seq into `out`: its length, or 0 if it
    /// does not fit (the call then fails with an encoding error).
    pub(super) fn write(&mut self, call: Outgoing, out: &mut [u8]) -> usize {
        let Outgoing { body, reply, turn } = call;
        if reply.is_closed() {
            // Its caller gave up before it was sent: not sent.
            return 0;
        }
        let seq = self.take_seq();
        match at_core::encode_frame(at_core::Kind::Request, seq, &body, out) {
            Ok(n) => {
                self.awaiting.insert(seq, Awaiting { reply, _turn: turn });
                n
            }
            Err(_) => {
                let e = ProtocolError::Encode(at_core::EncodeError::BufferTooSmall);
                let _ = reply.send(Err(e.into()));
                0
            }
        }
    }

    /// The next seq of the server's own counter on this connection: from
    /// 1, never 0, never one still awaited.
    fn take_seq(&mut self) -> u32 {
        loop {
            let seq = self.next_seq;
            self.next_seq = self.next_seq.checked_add(1).unwrap_or(1);
            if seq != 0 && !self.awaiting.contains_key(&seq) {
                return seq;
            }
        }
    }

    /// A RESPONSE or ERROR frame the peer sent: to the call awaiting its
    /// seq, or dropped (logged) when none does.
    pub(super) fn reply(&mut self, seq: u32, body: &[u8]) {
        match self.awaiting.remove(&seq) {
            Some(call) => {
                let _ = call.reply.send(body_to_result(body));
            }
            None => super::log_limit::protocol_warn!(
                "a reply from {} to seq {seq}, which no call awaits: dropped",
                self.addr
            ),
        }
    }
}

/// The reply to `rpc.peer` over TCP (contract 10.7, vector P2).
const GRANTED: &[u8] = br#"{"status": "success", "result": {"lease": null}}"#;

/// Answers `body` into `out` if it calls `rpc.peer`: the reply's length,
/// and whether it was granted (`{"lease": null}`: on TCP the peer lasts
/// as long as the connection). Its arguments are none, or a `lease` from 1
/// to 300, which TCP ignores (10.8 rule 11); anything else is
/// `invalid_arguments`. `None` for any other body, read only when it names
/// `rpc.peer` (or holds an escape, which might spell it).
pub(super) fn answer(seq: u32, body: &[u8], out: &mut [u8]) -> Option<(usize, bool)> {
    const NAME: &[u8] = b"rpc.peer";
    if !mentions(body, NAME) && !body.contains(&b'\\') {
        return None;
    }
    let request = at_core::Request::parse(body).ok()?;
    if request.func.as_plain() != Some("rpc.peer") {
        return None;
    }
    let lease_ok =
        |v: &at_core::Value<'_>| matches!(v, at_core::Value::Int(s) if (1..=300).contains(s));
    let n = match request.args.as_slice() {
        [] => at_core::encode_frame(at_core::Kind::Response, seq, GRANTED, out).ok()?,
        [lease] if lease_ok(lease) => {
            at_core::encode_frame(at_core::Kind::Response, seq, GRANTED, out).ok()?
        }
        _ => {
            let message = "rpc.peer takes no arguments, or a lease from 1 to 300 s";
            let code = at_core::ErrorCode::InvalidArguments;
            return Some((
                at_core::write_error_frame(seq, code, message, out).ok()?,
                false,
            ));
        }
    };
    Some((n, true))
}
