//! The TCP client, [`Client`]: calls one at a time, or pipelined with
//! replies matched by seq.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use at_core::{FrameDecoder, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth::{ClientAuth, Opened};
use crate::shared::convert;
use crate::shared::error::{Error, ProtocolError};
use crate::shared::keys::AuthKey;
use crate::shared::value::{Arg, Value};
use crate::shared::wire::{encode_body, encode_request_into, reply_to_result};

/// A TCP connection to an AT server.
///
/// Sequence numbers start at 1 and increase with each call. Every reply is
/// checked (magic, CRC, seq): a reply that does not match a call in flight
/// is an error, never an answer. After a transport or protocol error (a
/// timeout included, since the stream's state is then unknown) the client
/// is unusable: connect again.
///
/// ```no_run
/// # async fn example() -> Result<(), at_host::Error> {
/// use std::time::Duration;
/// let mut client = at_host::Client::connect("127.0.0.1:16724", Duration::from_secs(5)).await?;
/// let sum: i64 = client.call_as("add", (10, 20)).await?;
/// assert_eq!(sum, 30);
///
/// // Pipelining: three calls in flight, replies matched by seq.
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
/// # Ok(()) }
/// ```
pub struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    decoder: FrameDecoder<Box<[u8]>>,
    /// Requests written by `send` and not yet flushed.
    out: Vec<u8>,
    out_len: usize,
    next_seq: u32,
    in_flight: VecDeque<u32>,
    /// Replies that arrived while `call` waited for another seq.
    ready: HashMap<u32, Result<Value, Error>>,
    timeout: Duration,
    broken: bool,
    /// With a key: the session (contract section 9).
    auth: Option<ClientAuth>,
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
        Ok(Client {
            stream,
            peer,
            decoder: FrameDecoder::with_buffer(vec![0u8; room].into_boxed_slice(), max_frame),
            out: vec![0u8; room.max(at_core::MIN_REPLY_BUFFER)],
            out_len: 0,
            next_seq: 1,
            in_flight: VecDeque::new(),
            ready: HashMap::new(),
            timeout,
            broken: false,
            auth: None,
        })
    }

    /// Authenticates every call with `key` from now on (contract section
    /// 9): a session is started before the next call, and again after 5
    /// idle minutes, before seq wraps, and after a call failed
    /// `unauthorized` (that call is not resent). Every reply's tag is
    /// checked; one that does not verify fails the call and the connection.
    pub fn with_key(mut self, key: AuthKey) -> Self {
        self.auth = Some(ClientAuth::new(key));
        self
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Calls in flight (sent, reply not yet received).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len() + self.ready.len()
    }

    /// Calls `func(args)` and waits for its reply: the untyped call, for
    /// names and arguments known only at run time (see [`Arg`]).
    pub async fn call<A: Arg>(&mut self, func: &str, args: &[A]) -> Result<Value, Error> {
        let seq = self.send(func, args).await?;
        self.flush().await?;
        loop {
            if let Some(result) = self.ready.remove(&seq) {
                return result;
            }
            let (got, result) = self.receive_one().await?;
            if got == seq {
                return result;
            }
            self.ready.insert(got, result);
        }
    }

    /// Calls `func` with typed arguments and converts the result: `args` is
    /// a tuple, array or slice of serde values (`(10, 4)`, `[1.5]`, `()`),
    /// the result any `DeserializeOwned` type.
    ///
    /// ```no_run
    /// # async fn example(client: &mut at_host::Client) -> Result<(), at_host::Error> {
    /// let quotient: f64 = client.call_as("div", (10, 4)).await?;
    /// let sum = client.call_as::<i64>("add", [1, 2]).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// A result that does not convert is [`Error::Decode`], naming `func`
    /// and the type.
    pub async fn call_as<T: DeserializeOwned>(
        &mut self,
        func: &str,
        args: impl Serialize,
    ) -> Result<T, Error> {
        let args = convert::to_args(func, &args)?;
        let value = self.call(func, &args).await?;
        convert::from_result(func, value)
    }

    /// Queues a typed call without waiting and returns its seq, for
    /// pipelining; read replies with [`receive`](Self::receive) and convert
    /// each with [`decode_result`](crate::decode_result).
    pub async fn send_as(&mut self, func: &str, args: impl Serialize) -> Result<u32, Error> {
        let args = convert::to_args(func, &args)?;
        self.send(func, &args).await
    }

    /// Queues a call without waiting and returns its seq. Requests are
    /// written when the buffer fills, on [`flush`](Self::flush), or when
    /// [`receive`](Self::receive) needs a reply.
    pub async fn send<A: Arg>(&mut self, func: &str, args: &[A]) -> Result<u32, Error> {
        self.send_core(func, &A::to_core(args)).await
    }

    /// [`send`](Self::send) with the arguments in at-core's form.
    async fn send_core(&mut self, func: &str, args: &[at_core::Value<'_>]) -> Result<u32, Error> {
        self.usable()?;
        if self.auth.is_some() {
            return self.send_authenticated(func, args).await;
        }
        let seq = self.next_seq;
        let written = match encode_request_into(seq, func, args, &mut self.out[self.out_len..]) {
            Err(at_core::EncodeError::BufferTooSmall) if self.out_len > 0 => {
                self.flush().await?;
                encode_request_into(seq, func, args, &mut self.out)
            }
            other => other,
        };
        let n = written.map_err(ProtocolError::Encode)?;
        self.out_len += n;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        self.in_flight.push_back(seq);
        Ok(seq)
    }

    /// [`send`](Self::send) with a key: the hello first when one is due.
    async fn send_authenticated(
        &mut self,
        func: &str,
        args: &[at_core::Value<'_>],
    ) -> Result<u32, Error> {
        let due = match self.auth.as_mut() {
            Some(auth) => auth.needs_hello(self.next_seq, 1 + self.in_flight.len()),
            None => false,
        };
        if due {
            if !self.in_flight.is_empty() {
                // Calls of the old session are still out: they finish first.
                while !self.in_flight.is_empty() {
                    let (seq, result) = self.receive_one().await?;
                    self.ready.insert(seq, result);
                }
            }
            if u64::from(self.next_seq) + 1 > u64::from(u32::MAX) {
                self.next_seq = 1;
            }
            self.hello().await?;
        }
        let seq = self.next_seq;
        let body = encode_body(func, args)?;
        let frame = match self.auth.as_mut() {
            Some(auth) => auth.seal(seq, &body)?,
            None => return Err(ProtocolError::Broken.into()),
        };
        if self.out.len() - self.out_len < frame.len() {
            self.flush().await?;
        }
        let room = self
            .out
            .get_mut(self.out_len..self.out_len + frame.len())
            .ok_or(ProtocolError::Encode(at_core::EncodeError::BufferTooSmall))?;
        room.copy_from_slice(&frame);
        self.out_len += frame.len();
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        self.in_flight.push_back(seq);
        Ok(seq)
    }

    /// The handshake: a plain `rpc.hello`, its reply checked (the proof).
    async fn hello(&mut self) -> Result<(), Error> {
        let Some(auth) = self.auth.as_ref() else {
            return Ok(());
        };
        let hello = auth.hello();
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        let mut frame = vec![0u8; HEADER_LEN + hello.body.len()];
        let n = at_core::encode_frame(at_core::Kind::Request, seq, &hello.body, &mut frame)
            .map_err(|_| ProtocolError::Encode(at_core::EncodeError::BufferTooSmall))?;
        self.flush().await?;
        let exchange = async {
            self.stream.write_all(&frame[..n]).await?;
            loop {
                if let Some(reply) = self.decoder.next_frame().map_err(ProtocolError::Frame)? {
                    if reply.seq() != seq || !reply.kind.is_reply() {
                        return Err(Error::from(ProtocolError::UnexpectedSeq(reply.seq())));
                    }
                    let Some(auth) = self.auth.as_mut() else {
                        return Err(ProtocolError::Broken.into());
                    };
                    return match auth.accept_hello(&hello, &reply) {
                        Ok(()) => Ok(()),
                        Err(Some(e)) => Err(e),
                        Err(None) => Err(ProtocolError::BadHello.into()),
                    };
                }
                let got = self.stream.read(self.decoder.spare()).await?;
                if got == 0 {
                    return Err(ProtocolError::Closed.into());
                }
                self.decoder.commit(got);
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            // An error reply (unauthorized, busy) leaves the stream in step.
            Ok(Err(e @ Error::Remote { .. })) => Err(e),
            Ok(Err(e)) => Err(self.fail(e)),
            Ok(Ok(())) => Ok(()),
            Err(_) => Err(self.fail(Error::Timeout(self.timeout))),
        }
    }

    /// Writes every queued request.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.usable()?;
        if self.out_len == 0 {
            return Ok(());
        }
        let write = self.stream.write_all(&self.out[..self.out_len]);
        let outcome = tokio::time::timeout(self.timeout, write).await;
        self.out_len = 0;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.fail(e.into())),
            Err(_) => Err(self.fail(Error::Timeout(self.timeout))),
        }
    }

    /// The next reply of any call in flight: its seq and its result.
    pub async fn receive(&mut self) -> Result<(u32, Result<Value, Error>), Error> {
        if let Some(&seq) = self.ready.keys().next() {
            let result = self
                .ready
                .remove(&seq)
                .unwrap_or(Err(Error::Protocol(ProtocolError::Closed)));
            return Ok((seq, result));
        }
        self.flush().await?;
        self.receive_one().await
    }

    async fn receive_one(&mut self) -> Result<(u32, Result<Value, Error>), Error> {
        self.usable()?;
        if self.in_flight.is_empty() {
            return Err(ProtocolError::UnexpectedSeq(0).into()).map_err(|e| self.fail(e));
        }
        match tokio::time::timeout(self.timeout, self.read_reply()).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(self.fail(e)),
            Err(_) => Err(self.fail(Error::Timeout(self.timeout))),
        }
    }

    /// Reads until one whole reply frame is in and matches it to a call.
    async fn read_reply(&mut self) -> Result<(u32, Result<Value, Error>), Error> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    if !frame.kind.is_reply() {
                        return Err(ProtocolError::NotAReply.into());
                    }
                    let seq = frame.seq();
                    let result = match self.auth.as_mut() {
                        None => reply_to_result(&frame),
                        Some(auth) => match auth.open(&frame) {
                            Opened::Verified(result) | Opened::Unauthorized(result @ Err(_)) => {
                                result
                            }
                            Opened::Unauthorized(Ok(_)) => Err(ProtocolError::Broken.into()),
                            // On TCP anything else fails the call and the
                            // connection.
                            Opened::Transport(e) | Opened::Damaged(e) | Opened::Forged(e) => {
                                return Err(e);
                            }
                        },
                    };
                    // seq 0: the server speaks of the connection (busy, or
                    // it lost step): the answer to every call in flight.
                    if seq == 0 {
                        return Err(result
                            .err()
                            .unwrap_or(ProtocolError::UnexpectedSeq(0).into()));
                    }
                    let Some(pos) = self.in_flight.iter().position(|&s| s == seq) else {
                        return Err(ProtocolError::UnexpectedSeq(seq).into());
                    };
                    self.in_flight.remove(pos);
                    return Ok((seq, result));
                }
                Ok(None) => {}
                Err(e) => return Err(ProtocolError::Frame(e).into()),
            }
            let n = self.stream.read(self.decoder.spare()).await?;
            if n == 0 {
                return Err(ProtocolError::Closed.into());
            }
            self.decoder.commit(n);
        }
    }

    fn usable(&self) -> Result<(), Error> {
        if self.broken {
            Err(ProtocolError::Broken.into())
        } else {
            Ok(())
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.broken = true;
        e
    }
}

impl crate::client::Caller for Client {
    fn call_as<T: DeserializeOwned, A: Serialize + Send>(
        &mut self,
        func: &str,
        args: A,
    ) -> impl std::future::Future<Output = Result<T, Error>> + Send {
        Client::call_as(self, func, args)
    }
}
