//! The TCP client, [`Client`]: calls through `&self` from any number of
//! tasks at once, pipelined on one connection with replies matched by seq.
//!
//! The stream is split. The writer half sits under one async lock with
//! the seq counter and the output buffer: a call takes it to number,
//! encode (seal) and write its request, then lets go. The reader half
//! sits under another: whoever waits for a reply reads, filing each reply
//! it reads with the call it belongs to (a oneshot channel), until its own
//! has come; then the next waiter takes over. A call that is dropped
//! leaves its entry behind, so its reply, when it comes, is read and
//! discarded; nothing else waits on it.
//!
//! Events (NOTIFY frames, contract 10.3) are filed by whoever reads them
//! with their subscription (`subscribe.rs`); a subscription waiting for
//! events reads too, filing replies to their calls meanwhile. So a hello
//! that must wait for the old session's replies waits for them to be
//! filed (`drained`), not for the reader, which a subscription may hold
//! for long.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use at_core::{Frame, FrameDecoder, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::SeqMap;
use super::auth::{ClientAuth, Hello, MAX_OUTSTANDING, Opened};
use super::subscribe::{Slot, SubscribeOptions, Subscription, Topics};
use crate::shared::convert;
use crate::shared::error::{Error, ProtocolError};
use crate::shared::keys::AuthKey;
use crate::shared::value::{Arg, Value};
use crate::shared::wire::{
    default_deadline, encode_body, encode_body_with_deadline, encode_notify, encode_request_into,
    plain_frame, reply_to_result,
};

/// A TCP connection to an AT server, shared by reference.
///
/// Every call takes `&self`: put the client in an [`Arc`] (or borrow
/// it) and call from as many tasks as you like. Concurrent calls are
/// pipelined: each request is written as soon as its call starts, and
/// each reply goes to its call, in whatever order the replies come.
///
/// Sequence numbers start at 1 and increase with each request. Every reply
/// is checked (magic, CRC, seq): a reply that does not match a request in
/// flight is an error, never an answer. After a transport or protocol
/// error (a timeout included, since the stream's state is then unknown)
/// the client is unusable: every call waiting fails at once, every later
/// call fails with [`ProtocolError::Broken`]; connect again. A call future
/// that is dropped (a `select!` or a `tokio::time::timeout` of the
/// caller's own) is no error: its reply is discarded when it comes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// # let server = at_host::Server::builder().calculator().tcp("127.0.0.1:0".parse()?).start().await?;
/// # let addr = server.tcp_addr().unwrap();
/// let client = Arc::new(at_host::Client::connect(addr, Duration::from_secs(5)).await?);
/// let sum: i64 = client.call_as("add", (10, 20)).await?;
/// assert_eq!(sum, 30);
///
/// // Calls from several tasks, in flight together on the one connection.
/// let mut tasks = tokio::task::JoinSet::new();
/// for i in 0..8i64 {
///     let client = client.clone();
///     tasks.spawn(async move { client.call_as::<i64>("mul", (i, 2)).await });
/// }
/// while let Some(product) = tasks.join_next().await {
///     assert_eq!(product?? % 2, 0);
/// }
///
/// // Or by hand: three requests queued, then the replies read one by one.
/// let seqs = [
///     client.send_as("mul", (6, 7)).await?,
///     client.send_as("div", (1, 0)).await?,
///     client.send_as("sub", (1, 2)).await?,
/// ];
/// client.flush().await?;
/// for _ in seqs {
///     let (seq, result) = client.receive().await?;
///     match at_host::decode_result::<f64>("pipelined", result) {
///         Ok(x) => println!("seq {seq}: {x}"),
///         Err(e) => println!("seq {seq}: {e}"),
///     }
/// }
///
/// // Untyped, for names and arguments known only at run time.
/// use at_host::Value;
/// let sum = client.call("add", &[Value::Int(10), Value::Int(20)]).await?;
/// assert_eq!(sum, Value::Int(30));
/// # server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Client {
    peer: SocketAddr,
    timeout: Duration,
    /// Calls carry the timeout as `deadline_ms`.
    deadlines: bool,
    writer: tokio::sync::Mutex<Writer>,
    reader: tokio::sync::Mutex<Reader>,
    state: Mutex<State>,
    broken: AtomicBool,
    /// Wakes [`Client::receive`] when a reply of a `send` is filed, or the
    /// client breaks.
    queued: Notify,
    /// With a key: fewer than 64 sealed calls outstanding (contract
    /// section 9).
    outstanding: Arc<Semaphore>,
    /// The topics subscribed to: where events go.
    topics: Topics,
    /// Wakes a hello waiting for the old session's replies when the last
    /// one is filed (or the client breaks).
    drained: Notify,
    /// Notifications queued by a subscription dropped while the writer was
    /// busy ([`State::deferred`] holds them): written with the next frame.
    deferred: AtomicBool,
    /// A call whose future is dropped before its reply sends
    /// `rpc.cancel` (see [`Client::cancel_on_drop`]).
    cancel_on_drop: AtomicBool,
}

/// Sends `rpc.cancel(seq)` when a call's future is dropped before its
/// reply came, if [`Client::cancel_on_drop`] is on (contract 10.4).
struct CancelOnDrop<'a> {
    client: &'a Client,
    /// `None` once the call has its outcome.
    seq: Option<u32>,
}

impl CancelOnDrop<'_> {
    fn disarm(mut self) {
        self.seq = None;
    }
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq
            && self.client.cancel_on_drop.load(Ordering::Relaxed)
        {
            let seq = at_core::Value::Int(i64::from(seq));
            self.client.notify_now("rpc.cancel", &[seq]);
        }
    }
}

/// The writing side: whoever holds it numbers and writes requests.
struct Writer {
    half: OwnedWriteHalf,
    /// Requests queued: `out[written..len]` is still to be written (a
    /// write cancelled part way leaves its rest here for the next one).
    out: Vec<u8>,
    written: usize,
    len: usize,
    next_seq: u32,
}

/// The reading side: whoever holds it reads replies for everyone.
struct Reader {
    half: OwnedReadHalf,
    decoder: FrameDecoder<Box<[u8]>>,
}

/// What both sides share, locked only between awaits.
struct State {
    /// Requests queued or written whose reply has not come, by seq.
    in_flight: SeqMap<Waiter>,
    /// Replies of [`Client::send`]s, for [`Client::receive`], in the
    /// order they came.
    ready: VecDeque<Received>,
    /// How many of `in_flight` are [`Waiter::Queued`].
    queued: usize,
    /// With a key: the session (contract section 9).
    auth: Option<ClientAuth>,
    /// Notification bodies still to number and write (see
    /// [`Client::deferred`]).
    deferred: Vec<Vec<u8>>,
}

/// A reply to a [`Client::send`]: its seq and its result.
type Received = (u32, Result<Value, Error>);

/// Where the reply to a request goes.
enum Waiter {
    /// A call waits for it (if the call was dropped, nobody: discarded).
    Call {
        reply: oneshot::Sender<Result<Value, Error>>,
        /// Held until the reply comes (sealed calls only).
        _permit: Option<OwnedSemaphorePermit>,
    },
    /// A [`Client::send`]: to [`State::ready`].
    Queued,
    /// A hello: its reply starts the session (whoever reads it), then
    /// goes to the caller that sent it, as `Null` or its error.
    Hello {
        hello: Hello,
        reply: oneshot::Sender<Result<Value, Error>>,
    },
}

impl Client {
    /// Connects to `addr` within `timeout`, which then also bounds each
    /// call. Replies up to 65536 body bytes are accepted.
    pub async fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> Result<Client, Error> {
        Client::connect_with(addr, timeout, at_core::DEFAULT_MAX_BODY).await
    }

    /// [`connect`](Self::connect) with a frame limit other than 65536.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        timeout: Duration,
        max_frame: u32,
    ) -> Result<Client, Error> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let room = HEADER_LEN + max_frame as usize;
        let (read_half, write_half) = stream.into_split();
        Ok(Client {
            peer,
            timeout,
            deadlines: true,
            writer: tokio::sync::Mutex::new(Writer {
                half: write_half,
                out: vec![0u8; room.max(at_core::MIN_REPLY_BUFFER)],
                written: 0,
                len: 0,
                next_seq: 1,
            }),
            reader: tokio::sync::Mutex::new(Reader {
                half: read_half,
                decoder: FrameDecoder::with_buffer(vec![0u8; room].into_boxed_slice(), max_frame),
            }),
            state: Mutex::new(State {
                in_flight: SeqMap::default(),
                ready: VecDeque::new(),
                queued: 0,
                auth: None,
                deferred: Vec::new(),
            }),
            broken: AtomicBool::new(false),
            queued: Notify::new(),
            outstanding: Arc::new(Semaphore::new(MAX_OUTSTANDING)),
            topics: Topics::default(),
            drained: Notify::new(),
            deferred: AtomicBool::new(false),
            cancel_on_drop: AtomicBool::new(false),
        })
    }

    /// Whether [`call`](Self::call) and [`call_as`](Self::call_as) send the
    /// client's timeout as `deadline_ms` (on by default).
    pub fn with_deadlines(mut self, on: bool) -> Self {
        self.deadlines = on;
        self
    }

    /// Authenticates every call with `key` from now on (contract section
    /// 9): a session is started before the next call, and again after 5
    /// idle minutes, before seq wraps, and after a call failed
    /// `unauthorized` (that call is not resent). A new session starts only
    /// once every call of the old one has its reply; fewer than 64 sealed
    /// calls are in flight at once (more wait). Every reply's tag is
    /// checked; one that does not verify fails the call and the connection.
    pub fn with_key(mut self, key: AuthKey) -> Self {
        self.state_mut().auth = Some(ClientAuth::new(key));
        self
    }

    /// Asks the server's `rpc.info` whether it serves `rpc.cancel`
    /// (`cancel` in its `ext`, contract 10.4) and, if it does, turns on
    /// cancel on drop: from then on, a call whose future is dropped before
    /// its reply came (a `tokio::time::timeout` around it, a `select!`
    /// that took another branch) sends `rpc.cancel(seq)` as a NOTIFY
    /// (sealed, with a key), so the server stops the function if it can;
    /// the reply that still comes for that seq is dropped. Returns
    /// whether it is on. Off by default: NOTIFY frames go only to a
    /// server that lists the part (contract 10.1).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = at_host::Server::builder().tcp("127.0.0.1:0".parse()?).start().await?;
    /// # let addr = server.tcp_addr().unwrap();
    /// let client = at_host::Client::connect(addr, std::time::Duration::from_secs(5)).await?;
    /// assert!(client.cancel_on_drop().await?);
    /// # server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn cancel_on_drop(&self) -> Result<bool, Error> {
        let info: serde_json::Value = self.call_as("rpc.info", ()).await?;
        let on = info["ext"]
            .as_array()
            .is_some_and(|ext| ext.iter().any(|part| part == "cancel"));
        self.cancel_on_drop.store(on, Ordering::Relaxed);
        Ok(on)
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Requests in flight (sent or queued, reply not yet taken): calls
    /// waiting, calls dropped whose reply has not come, and
    /// [`send`](Self::send)s whose reply [`receive`](Self::receive) has not
    /// returned.
    pub fn in_flight(&self) -> usize {
        let state = self.state();
        state.in_flight.len() + state.ready.len()
    }

    /// Calls `func(args)` and waits for its reply: the untyped call, for
    /// names and arguments known only at run time (see [`Arg`]).
    ///
    /// Bounded by the client's timeout, from the start of the call (which
    /// may first wait for a turn to write, or for a new session). The
    /// request carries that timeout as its `deadline_ms`, less a tenth (at
    /// most 500 ms) for the way back (contract 10.4), so a server that is
    /// behind does not start work nobody waits for (off with
    /// [`with_deadlines`](Self::with_deadlines); `rpc.*` calls carry none).
    pub async fn call<A: Arg>(&self, func: &str, args: &[A]) -> Result<Value, Error> {
        let args = A::to_core(args);
        let deadline = match self.deadlines {
            true => default_deadline(func, self.timeout),
            false => None,
        };
        match tokio::time::timeout(self.timeout, self.call_core(func, &args, deadline)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.fail(Error::Timeout(self.timeout))),
        }
    }

    /// [`call`](Self::call) with `"deadline_ms": deadline_ms` in the
    /// request (contract section 10.4): a server listing `deadline` does not
    /// start the function once that many ms have passed since the frame
    /// came (0: never), and answers `deadline_exceeded`. The call is still
    /// bounded by the client's timeout.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = at_host::Server::builder().calculator().tcp("127.0.0.1:0".parse()?).start().await?;
    /// # let addr = server.tcp_addr().unwrap();
    /// use at_host::Value;
    /// let client = at_host::Client::connect(addr, std::time::Duration::from_secs(5)).await?;
    /// // This server ignores deadlines (its rpc.info lists no `deadline`).
    /// let sum = client.call_deadline("add", &[Value::Int(1), Value::Int(2)], 500).await?;
    /// assert_eq!(sum, Value::Int(3));
    /// # server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn call_deadline<A: Arg>(
        &self,
        func: &str,
        args: &[A],
        deadline_ms: u32,
    ) -> Result<Value, Error> {
        let args = A::to_core(args);
        let call = self.call_core(func, &args, Some(deadline_ms));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.fail(Error::Timeout(self.timeout))),
        }
    }

    /// Calls `func` with typed arguments and converts the result: `args` is
    /// a tuple, array or slice of serde values (`(10, 4)`, `[1.5]`, `()`),
    /// the result any `DeserializeOwned` type.
    ///
    /// ```no_run
    /// # async fn example(client: &at_host::Client) -> Result<(), at_host::Error> {
    /// let quotient: f64 = client.call_as("div", (10, 4)).await?;
    /// let sum = client.call_as::<i64>("add", [1, 2]).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// A result that does not convert is [`Error::Decode`], naming `func`
    /// and the type.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        func: &str,
        args: impl Serialize,
    ) -> Result<T, Error> {
        let args = convert::to_args(func, &args)?;
        let value = self.call(func, &args).await?;
        convert::from_result(func, value)
    }

    /// Queues a typed call without waiting and returns its seq, for
    /// pipelining by hand; read replies with [`receive`](Self::receive) and
    /// convert each with [`decode_result`](crate::decode_result).
    pub async fn send_as(&self, func: &str, args: impl Serialize) -> Result<u32, Error> {
        let args = convert::to_args(func, &args)?;
        self.send(func, &args).await
    }

    /// Queues a call without waiting and returns its seq; its reply is
    /// for [`receive`](Self::receive). Requests are written when the
    /// buffer fills, on [`flush`](Self::flush), when
    /// [`receive`](Self::receive) needs a reply, or with the next call.
    /// With a key, keep fewer than 64 outstanding (contract section 9).
    pub async fn send<A: Arg>(&self, func: &str, args: &[A]) -> Result<u32, Error> {
        let args = A::to_core(args);
        let mut writer = self.writer().await;
        self.queue(&mut writer, func, &args, Waiter::Queued, None)
            .await
    }

    /// Writes every queued request.
    pub async fn flush(&self) -> Result<(), Error> {
        let mut writer = self.writer().await;
        match tokio::time::timeout(self.timeout, self.write_out(&mut writer)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.fail(Error::Timeout(self.timeout))),
        }
    }

    /// The next reply to a [`send`](Self::send): its seq and its result.
    /// Replies come in the order they arrive, which need not be the order
    /// of the sends. With no `send` awaiting a reply, this is
    /// [`ProtocolError::UnexpectedSeq`]`(0)` at once.
    pub async fn receive(&self) -> Result<(u32, Result<Value, Error>), Error> {
        if let Some(pair) = self.state().ready.pop_front() {
            return Ok(pair);
        }
        self.flush().await?;
        match tokio::time::timeout(self.timeout, self.receive_core()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.fail(Error::Timeout(self.timeout))),
        }
    }

    async fn receive_core(&self) -> Result<Received, Error> {
        loop {
            // Uncontended (the usual case): read without registering.
            if let Ok(mut reader) = self.reader.try_lock() {
                return self.receive_reading(&mut reader).await;
            }
            let filed = self.queued.notified();
            tokio::pin!(filed);
            filed.as_mut().enable();
            if let Some(pair) = self.take_queued()? {
                return Ok(pair);
            }
            tokio::select! {
                biased;
                () = &mut filed => {}
                mut reader = self.reader.lock() => {
                    return self.receive_reading(&mut reader).await;
                }
            }
        }
    }

    /// [`receive`](Self::receive) with the reader held: reads until a reply
    /// of a `send` is filed.
    async fn receive_reading(&self, reader: &mut Reader) -> Result<Received, Error> {
        loop {
            if let Some(pair) = self.take_queued()? {
                return Ok(pair);
            }
            self.read_one(reader).await?;
        }
    }

    /// The first reply of a `send` filed, if any; an error if none is
    /// awaited either.
    fn take_queued(&self) -> Result<Option<Received>, Error> {
        let mut state = self.state();
        if let Some(pair) = state.ready.pop_front() {
            return Ok(Some(pair));
        }
        let awaited = state.queued > 0;
        drop(state);
        self.usable()?;
        if awaited {
            Ok(None)
        } else {
            // Nothing to receive: an error, but the stream is fine.
            Err(ProtocolError::UnexpectedSeq(0).into())
        }
    }

    /// [`call`](Self::call) with the arguments in at-core's form, unbounded.
    async fn call_core(
        &self,
        func: &str,
        args: &[at_core::Value<'_>],
        deadline_ms: Option<u32>,
    ) -> Result<Value, Error> {
        let sealed = self.state().auth.is_some();
        let permit = if sealed {
            let permit = self.outstanding.clone().acquire_owned().await;
            Some(permit.map_err(|_| Error::from(ProtocolError::Broken))?)
        } else {
            None
        };
        let (reply, rx) = oneshot::channel();
        let mut writer = self.writer().await;
        let waiter = Waiter::Call {
            reply,
            _permit: permit,
        };
        let seq = self
            .queue(&mut writer, func, args, waiter, deadline_ms)
            .await?;
        // From here, a call dropped before its reply cancels it.
        let guard = CancelOnDrop {
            client: self,
            seq: Some(seq),
        };
        self.write_out(&mut writer).await?;
        drop(writer);
        let outcome = self.wait(rx).await;
        guard.disarm();
        outcome
    }

    /// Waits for the reply `rx` is for, reading (and filing) replies while
    /// nobody else does.
    async fn wait(&self, mut rx: oneshot::Receiver<Result<Value, Error>>) -> Result<Value, Error> {
        // Either another reader files the reply, or this call gets to read
        // and reads until it has it.
        let mut reader = match self.reader.try_lock() {
            // Uncontended (the usual case): read without registering.
            Ok(reader) => reader,
            Err(_) => tokio::select! {
                biased;
                reply = &mut rx => return reply.unwrap_or(Err(ProtocolError::Broken.into())),
                reader = self.reader.lock() => reader,
            },
        };
        loop {
            match rx.try_recv() {
                Ok(reply) => return reply,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(ProtocolError::Broken.into());
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            self.read_one(&mut reader).await?;
        }
    }

    /// Sends `func(args)` as a notification (a NOTIFY frame, contract
    /// section 10.2): the server runs it and answers nothing. Its seq comes
    /// from the request counter; no state is kept for it. With a key it is
    /// sealed in the session (started first when one is due). `Ok` means
    /// written, not run: a caller that must know calls it instead.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = at_host::Server::builder().calculator().tcp("127.0.0.1:0".parse()?).start().await?;
    /// # let addr = server.tcp_addr().unwrap();
    /// use at_host::Value;
    /// let client = at_host::Client::connect(addr, std::time::Duration::from_secs(5)).await?;
    /// client.notify("add", &[Value::Int(1), Value::Int(2)]).await?;
    /// // The connection goes on serving calls.
    /// assert_eq!(client.call_as::<i64>("add", (1, 2)).await?, 3);
    /// # server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn notify<A: Arg>(&self, func: &str, args: &[A]) -> Result<(), Error> {
        let args = A::to_core(args);
        match tokio::time::timeout(self.timeout, self.notify_core(func, &args)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.fail(Error::Timeout(self.timeout))),
        }
    }

    async fn notify_core(&self, func: &str, args: &[at_core::Value<'_>]) -> Result<(), Error> {
        self.usable()?;
        let mut writer = self.writer().await;
        let sealed = self.state().auth.is_some();
        if sealed {
            self.renew_session(&mut writer).await?;
        }
        let seq = writer.next_seq;
        let frame = if sealed {
            let body = encode_body(func, args)?;
            match self.state().auth.as_mut() {
                Some(auth) => auth.seal_as(at_core::Kind::Notify, seq, &body)?,
                None => return Err(ProtocolError::Broken.into()),
            }
        } else {
            let limit = writer.out.len().saturating_sub(HEADER_LEN) as u32;
            encode_notify(seq, func, args, limit)?
        };
        if writer.out.len() - writer.len < frame.len() {
            self.write_buffered(&mut writer).await?;
        }
        let at = writer.len;
        let room = writer
            .out
            .get_mut(at..at + frame.len())
            .ok_or(ProtocolError::Encode(at_core::EncodeError::BufferTooSmall))?;
        room.copy_from_slice(&frame);
        writer.len += frame.len();
        writer.next_seq = writer.next_seq.wrapping_add(1).max(1);
        self.write_out(&mut writer).await
    }

    /// Numbers and encodes (seals) one request into the writer's buffer,
    /// and enters it in flight. With a key, starts a session first when
    /// one is due.
    async fn queue(
        &self,
        writer: &mut Writer,
        func: &str,
        args: &[at_core::Value<'_>],
        waiter: Waiter,
        deadline_ms: Option<u32>,
    ) -> Result<u32, Error> {
        self.usable()?;
        let sealed = self.state().auth.is_some();
        if sealed {
            self.renew_session(writer).await?;
            let seq = writer.next_seq;
            let body = encode_body_with_deadline(func, args, deadline_ms)?;
            let frame = match self.state().auth.as_mut() {
                Some(auth) => auth.seal(seq, &body)?,
                None => return Err(ProtocolError::Broken.into()),
            };
            if writer.out.len() - writer.len < frame.len() {
                self.write_buffered(writer).await?;
            }
            let at = writer.len;
            let room = writer
                .out
                .get_mut(at..at + frame.len())
                .ok_or(ProtocolError::Encode(at_core::EncodeError::BufferTooSmall))?;
            room.copy_from_slice(&frame);
            writer.len += frame.len();
        } else {
            let seq = writer.next_seq;
            let at = writer.len;
            let out = &mut writer.out[at..];
            let written = match encode_request_into(seq, func, args, deadline_ms, out) {
                Err(at_core::EncodeError::BufferTooSmall) if writer.len > 0 => {
                    self.write_buffered(writer).await?;
                    encode_request_into(seq, func, args, deadline_ms, &mut writer.out)
                }
                other => other,
            };
            writer.len += written.map_err(ProtocolError::Encode)?;
        }
        let seq = writer.next_seq;
        writer.next_seq = writer.next_seq.wrapping_add(1).max(1);
        let mut state = self.state();
        state.queued += usize::from(matches!(waiter, Waiter::Queued));
        state.in_flight.insert(seq, waiter);
        Ok(seq)
    }

    /// With a key: the hello, when one is due, once every request of the
    /// old session has its reply (the writer is held, so none starts).
    async fn renew_session(&self, writer: &mut Writer) -> Result<(), Error> {
        let mut drained = false;
        loop {
            let due = {
                let mut state = self.state();
                let calls = 1 + state.in_flight.len();
                match state.auth.as_mut() {
                    Some(auth) => auth.needs_hello(writer.next_seq, calls),
                    None => false,
                }
            };
            if !due {
                return Ok(());
            }
            if drained {
                break;
            }
            self.write_out(writer).await?;
            // Whoever reads files the old session's replies: a
            // subscription waiting for events may hold the reader for long,
            // so wait for the last reply or for the reader, whichever first.
            loop {
                let drained = self.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if self.state().in_flight.is_empty() {
                    break;
                }
                self.usable()?;
                tokio::select! {
                    biased;
                    () = &mut drained => {}
                    mut reader = self.reader.lock() => {
                        while !self.state().in_flight.is_empty() {
                            self.read_one(&mut reader).await?;
                        }
                        break;
                    }
                }
            }
            // Draining may have filed the reply of a hello whose caller
            // was dropped: due again?
            drained = true;
        }
        if u64::from(writer.next_seq) + 1 > u64::from(u32::MAX) {
            writer.next_seq = 1;
        }
        let Some(hello) = self.state().auth.as_ref().map(ClientAuth::hello) else {
            return Ok(());
        };
        let seq = writer.next_seq;
        let n = at_core::encode_frame(
            at_core::Kind::Request,
            seq,
            &hello.body,
            &mut writer.out[writer.len..],
        )
        .map_err(|_| ProtocolError::Encode(at_core::EncodeError::BufferTooSmall))?;
        writer.len += n;
        writer.next_seq = writer.next_seq.wrapping_add(1).max(1);
        let (reply, rx) = oneshot::channel();
        self.state()
            .in_flight
            .insert(seq, Waiter::Hello { hello, reply });
        self.write_out(writer).await?;
        self.wait(rx).await.map(drop)
    }
    /// Writes every queued request, and the notifications deferred (see
    /// [`Client::deferred`]), numbered after them. A write cancelled part
    /// way leaves the rest queued, so the stream stays in step.
    async fn write_out(&self, writer: &mut Writer) -> Result<(), Error> {
        // Twice at most: notifications deferred while this write ran go
        // with it.
        for _ in 0..2 {
            if self.deferred.load(Ordering::Acquire) {
                self.append_deferred(writer);
            }
            self.write_buffered(writer).await?;
            if !self.deferred.load(Ordering::Acquire) {
                break;
            }
        }
        Ok(())
    }

    /// Writes what the buffer holds, nothing more: for making room while a
    /// frame whose seq is taken waits to go in.
    async fn write_buffered(&self, writer: &mut Writer) -> Result<(), Error> {
        self.usable()?;
        while writer.written < writer.len {
            let pending = &writer.out[writer.written..writer.len];
            match writer.half.write(pending).await {
                Ok(0) => {
                    let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                    return Err(self.fail(e.into()));
                }
                Ok(n) => writer.written += n,
                Err(e) => return Err(self.fail(e.into())),
            }
        }
        writer.written = 0;
        writer.len = 0;
        Ok(())
    }

    /// Numbers (seals) and queues the deferred notifications that fit.
    fn append_deferred(&self, writer: &mut Writer) {
        let mut state = self.state();
        let bodies = std::mem::take(&mut state.deferred);
        let mut rest = Vec::new();
        for body in bodies {
            if !self.append_notify(&mut state, writer, &body) {
                rest.push(body);
            }
        }
        self.deferred.store(!rest.is_empty(), Ordering::Release);
        state.deferred = rest;
    }

    /// Numbers (with a key: seals in the live session) and queues the
    /// notification `body`; false when it does not fit the buffer now.
    /// Without a live session it is dropped (true): its subscription was
    /// made in a session the server no longer holds, or is ending.
    fn append_notify(&self, state: &mut State, writer: &mut Writer, body: &[u8]) -> bool {
        let seq = writer.next_seq;
        let frame = match state.auth.as_mut() {
            Some(auth) => {
                if !auth.is_live(seq) {
                    return true;
                }
                auth.seal_as(at_core::Kind::Notify, seq, body)
            }
            None => plain_frame(at_core::Kind::Notify, seq, body),
        };
        let Ok(frame) = frame else { return true };
        let Some(room) = writer.out.get_mut(writer.len..writer.len + frame.len()) else {
            return false;
        };
        room.copy_from_slice(&frame);
        writer.len += frame.len();
        writer.next_seq = writer.next_seq.wrapping_add(1).max(1);
        true
    }

    /// Sends the notification `func(args)` without waiting (from a
    /// `Drop`): written at once when the writer is free and the socket
    /// takes it, else queued for the next write.
    pub(crate) fn notify_now(&self, func: &str, args: &[at_core::Value<'_>]) {
        if self.usable().is_err() {
            return;
        }
        let Ok(body) = encode_body(func, args) else {
            return;
        };
        let Ok(mut writer) = self.writer.try_lock() else {
            self.state().deferred.push(body);
            self.deferred.store(true, Ordering::Release);
            return;
        };
        let mut state = self.state();
        if !self.append_notify(&mut state, &mut writer, &body) {
            state.deferred.push(body);
            self.deferred.store(true, Ordering::Release);
        }
        drop(state);
        while writer.written < writer.len {
            let at = writer.written;
            let len = writer.len;
            match writer.half.try_write(&writer.out[at..len]) {
                Ok(0) => break,
                Ok(n) => writer.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.fail(e.into());
                    return;
                }
            }
        }
        if writer.written == writer.len {
            writer.written = 0;
            writer.len = 0;
        }
    }

    /// The topics this client holds.
    pub(crate) fn topics(&self) -> &Topics {
        &self.topics
    }

    /// With a key: which session is live, and whether it is refused.
    pub(crate) fn session_mark(&self) -> Option<(u64, bool)> {
        self.state().auth.as_ref().map(ClientAuth::session_mark)
    }

    /// Waits until `slot` has an event or `wake`: reads (filing replies to
    /// their calls and events to their subscriptions) while nobody else
    /// does.
    pub(crate) async fn pump_events(
        &self,
        slot: &Slot,
        wake: tokio::time::Instant,
    ) -> Result<(), Error> {
        self.usable()?;
        let posted = slot.posted.notified();
        tokio::pin!(posted);
        posted.as_mut().enable();
        if !slot.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            () = &mut posted => Ok(()),
            () = tokio::time::sleep_until(wake) => Ok(()),
            mut reader = self.reader.lock() => {
                let read = async {
                    while slot.is_empty() {
                        self.read_one(&mut reader).await?;
                    }
                    Ok(())
                };
                tokio::select! {
                    biased;
                    read = read => read,
                    () = tokio::time::sleep_until(wake) => Ok(()),
                }
            }
        }
    }

    /// Subscribes to `topic` with the default options (a lease of 60 s,
    /// renewed at half; every event): see [`Subscription`]. Values convert
    /// to `T` (`serde_json::Value` takes any).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use at_host::{Client, Server, Update};
    /// let server = Server::builder().calls_topic("calls").calculator().tcp("127.0.0.1:0".parse()?).start().await?;
    /// let client = Client::connect(server.tcp_addr().unwrap(), std::time::Duration::from_secs(5)).await?;
    /// let mut calls = client.subscribe::<u64>("calls").await?;
    /// client.call_as::<i64>("add", (1, 2)).await?;
    /// // The server publishes its count of calls answered once a second.
    /// let Update::Event { value, .. } = calls.next().await? else { panic!() };
    /// assert!(value >= 1);
    /// // A topic the server lacks:
    /// let e = client.subscribe::<u64>("nope").await.unwrap_err();
    /// assert_eq!(e.code(), Some(at_host::ErrorCode::UnknownTopic));
    /// # server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn subscribe<T: DeserializeOwned>(
        &self,
        topic: &str,
    ) -> Result<Subscription<'_, T>, Error> {
        self.subscribe_with(topic, SubscribeOptions::default())
            .await
    }

    /// [`subscribe`](Self::subscribe) with a lease and an interval of one's
    /// own.
    ///
    /// ```no_run
    /// # async fn f(client: &at_host::Client) -> Result<(), at_host::Error> {
    /// use std::time::Duration;
    /// let options = at_host::SubscribeOptions { lease: Duration::from_secs(10), interval: Duration::from_millis(500) };
    /// let mut temp = client.subscribe_with::<f64>("temp", options).await?;
    /// # let _ = temp.next().await?;
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_with<T: DeserializeOwned>(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription<'_, T>, Error> {
        Subscription::start_tcp(self, topic, options).await
    }

    /// Reads until one whole reply frame is in and files it.
    async fn read_one(&self, reader: &mut Reader) -> Result<(), Error> {
        self.usable()?;
        loop {
            match reader.decoder.next_frame() {
                Ok(Some(frame)) => {
                    let filed = self.file(&frame);
                    return filed.map_err(|e| self.fail(e));
                }
                Ok(None) => {}
                Err(e) => return Err(self.fail(ProtocolError::Frame(e).into())),
            }
            match reader.half.read(reader.decoder.spare()).await {
                Ok(0) => return Err(self.fail(ProtocolError::Closed.into())),
                Ok(n) => reader.decoder.commit(n),
                Err(e) => return Err(self.fail(e.into())),
            }
        }
    }

    /// Gives a reply to the request it answers. An `Err` breaks the
    /// connection.
    fn file(&self, frame: &Frame<'_>) -> Result<(), Error> {
        if frame.kind == at_core::Kind::Notify {
            // An event (to its subscription), or anything else (a one-way
            // call, an event of a topic not held): dropped, the connection
            // kept (contract section 10).
            let mut state = self.state();
            self.topics.file(frame, state.auth.as_mut());
            return Ok(());
        }
        if !frame.kind.is_reply() {
            return Err(ProtocolError::NotAReply.into());
        }
        let seq = frame.seq();
        let mut state = self.state();
        if seq != 0 && matches!(state.in_flight.get(&seq), Some(Waiter::Hello { .. })) {
            let Some(Waiter::Hello { hello, reply }) = state.in_flight.remove(&seq) else {
                return Err(ProtocolError::Broken.into());
            };
            let accepted = match state.auth.as_mut() {
                Some(auth) => auth.accept_hello(&hello, frame),
                None => Err(Some(ProtocolError::Broken.into())),
            };
            if state.in_flight.is_empty() {
                self.drained.notify_waiters();
            }
            return match accepted {
                Ok(()) => {
                    let _ = reply.send(Ok(Value::Null));
                    Ok(())
                }
                // An error reply (unauthorized, busy) leaves the stream in
                // step: the hello fails, not the connection.
                Err(Some(e @ Error::Remote { .. })) => {
                    let _ = reply.send(Err(e));
                    Ok(())
                }
                Err(Some(e)) => Err(e),
                Err(None) => Err(ProtocolError::BadHello.into()),
            };
        }
        let result = match state.auth.as_mut() {
            None => reply_to_result(frame),
            Some(auth) => match auth.open(frame) {
                Opened::Verified(result) | Opened::Unauthorized(result @ Err(_)) => result,
                Opened::Unauthorized(Ok(_)) => return Err(ProtocolError::Broken.into()),
                // On TCP anything else fails the call and the connection.
                Opened::Transport(e) | Opened::Damaged(e) | Opened::Forged(e) => return Err(e),
            },
        };
        // seq 0: the server speaks of the connection (busy, or it lost
        // step): the answer to every call in flight.
        if seq == 0 {
            return Err(result
                .err()
                .unwrap_or(ProtocolError::UnexpectedSeq(0).into()));
        }
        let waiter = state.in_flight.remove(&seq);
        if state.in_flight.is_empty() {
            self.drained.notify_waiters();
        }
        match waiter {
            None => Err(ProtocolError::UnexpectedSeq(seq).into()),
            Some(Waiter::Call { reply, .. }) => {
                // A dropped call's reply is discarded.
                let _ = reply.send(result);
                Ok(())
            }
            Some(Waiter::Hello { .. }) => Err(ProtocolError::Broken.into()),
            Some(Waiter::Queued) => {
                state.queued -= 1;
                state.ready.push_back((seq, result));
                drop(state);
                self.queued.notify_waiters();
                Ok(())
            }
        }
    }

    /// The writer, without queueing for it when it is free.
    async fn writer(&self) -> tokio::sync::MutexGuard<'_, Writer> {
        match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(_) => self.writer.lock().await,
        }
    }

    fn usable(&self) -> Result<(), Error> {
        if self.broken.load(Ordering::Acquire) {
            Err(ProtocolError::Broken.into())
        } else {
            Ok(())
        }
    }

    /// Marks the client unusable and fails every call waiting (their
    /// channels close); returns `e` for the caller that met it.
    fn fail(&self, e: Error) -> Error {
        self.broken.store(true, Ordering::Release);
        let mut state = self.state();
        let dropped = std::mem::take(&mut state.in_flight);
        state.queued = 0;
        drop(state);
        drop(dropped);
        self.outstanding.close();
        self.queued.notify_waiters();
        self.drained.notify_waiters();
        e
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding it cannot leave State inconsistent in a
        // way that matters more than the panic itself.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&mut self) -> &mut State {
        self.state.get_mut().unwrap_or_else(|p| p.into_inner())
    }
}

impl crate::client::Caller for Client {
    fn call<A: Arg>(
        &self,
        func: &str,
        args: &[A],
    ) -> impl std::future::Future<Output = Result<Value, Error>> + Send {
        Client::call(self, func, args)
    }

    fn call_as<T: DeserializeOwned>(
        &self,
        func: &str,
        args: impl Serialize + Send,
    ) -> impl std::future::Future<Output = Result<T, Error>> + Send {
        Client::call_as(self, func, args)
    }
}
