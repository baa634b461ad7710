//! The byte-stream server: AT over any [`embedded_io::Read`] +
//! [`embedded_io::Write`] link (a UART, USB CDC, a pipe).
//!
//! Frames are found by at-core's [`FrameDecoder`] whatever the read
//! boundaries, and answered by [`at_core::respond`], one reply written
//! whole before the next frame is looked at (so replies keep request order).
//!
//! # Line noise
//! A serial link has no connection to close, so a stream that falls out of
//! step (a wrong magic: noise, a byte lost; or a `length` over the limit)
//! is answered once (`bad_frame` with seq 0, or `frame_too_large` with the
//! header's seq) and then **resynchronised** with
//! [`FrameDecoder::resync`]: bytes are skipped up to the next `A` `T` that
//! could start a frame. Until a frame decodes again, further out-of-step
//! errors are skipped silently, so a burst of noise costs one error reply,
//! not one per byte. A CRC mismatch leaves the stream in step: it is
//! answered `checksum_mismatch` (with the frame's seq) and decoding goes on.
//!
//! # Memory
//! `RX + TX` bytes and a few words, in the [`StreamServer`] value; `new` is
//! a `const fn`, so it can live in a `static`.

use at_core::auth::{Open, Origin, Responder, Transport};
use at_core::subscriptions::Topics;
use at_core::{Context, HEADER_LEN as HEADER};
use at_core::{FrameDecoder, Functions, HEADER_LEN, MIN_REPLY_BUFFER};
use embedded_io::{Read, ReadReady, Write};

use crate::logging::{log_debug, log_warn};

/// Why a stream server stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError<E> {
    /// The link reported an error.
    Io(E),
    /// A read returned 0 bytes: the link is closed.
    Eof,
    /// A write accepted 0 bytes: the link is closed.
    WriteZero,
}

impl<E: core::fmt::Debug> core::fmt::Display for StreamError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StreamError::Io(e) => write!(f, "i/o error: {e:?}"),
            StreamError::Eof => f.write_str("end of stream"),
            StreamError::WriteZero => f.write_str("the link accepts no more bytes"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for StreamError<E> {}

/// A server on one byte stream, with an `RX`-byte receive buffer (bodies up
/// to `RX - 16` bytes) and a `TX`-byte reply buffer (at least
/// [`MIN_REPLY_BUFFER`]).
///
/// ```
/// use at_core::{calculator::CALCULATOR, Kind};
/// use at_embedded_example::StreamServer;
///
/// // A request as it would arrive on a UART.
/// let mut wire = [0u8; 64];
/// let body = br#"{"func": "add", "args": [10, 20]}"#;
/// let n = at_core::encode_frame(Kind::Request, 1, body, &mut wire).unwrap();
///
/// let mut server = StreamServer::<256, 128>::new();
/// let mut reply = [0u8; 128];
/// let mut link = embedded_io_link(&wire[..n], &mut reply);
/// server.serve_once(&CALCULATOR, &mut link).unwrap();
/// let written = link.written();
/// assert_eq!(&reply[16..written], br#"{"status": "success", "result": 30}"#);
///
/// # fn embedded_io_link<'a>(input: &'a [u8], output: &'a mut [u8]) -> Link<'a> {
/// #     Link { input, output, written: 0 }
/// # }
/// # struct Link<'a> { input: &'a [u8], output: &'a mut [u8], written: usize }
/// # impl Link<'_> { fn written(&self) -> usize { self.written } }
/// # impl embedded_io::ErrorType for Link<'_> { type Error = core::convert::Infallible; }
/// # impl embedded_io::Read for Link<'_> {
/// #     fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
/// #         let n = buf.len().min(self.input.len());
/// #         buf[..n].copy_from_slice(&self.input[..n]);
/// #         self.input = &self.input[n..];
/// #         Ok(n)
/// #     }
/// # }
/// # impl embedded_io::Write for Link<'_> {
/// #     fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
/// #         let n = buf.len().min(self.output.len() - self.written);
/// #         self.output[self.written..self.written + n].copy_from_slice(&buf[..n]);
/// #         self.written += n;
/// #         Ok(n)
/// #     }
/// #     fn flush(&mut self) -> Result<(), Self::Error> { Ok(()) }
/// # }
/// ```
pub struct StreamServer<const RX: usize, const TX: usize> {
    decoder: FrameDecoder<[u8; RX]>,
    tx: [u8; TX],
    /// Set after answering an out-of-step error; cleared by the next good
    /// frame. While set, out-of-step errors are skipped without a reply.
    out_of_step: bool,
    name: &'static str,
    /// The seq of the last plain event sent.
    events_sent: u32,
}

impl<const RX: usize, const TX: usize> Default for StreamServer<RX, TX> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const RX: usize, const TX: usize> StreamServer<RX, TX> {
    const CHECK: () = {
        assert!(RX > HEADER_LEN, "RX must hold a header and a body");
        assert!(
            TX >= MIN_REPLY_BUFFER,
            "TX must be at least MIN_REPLY_BUFFER"
        );
    };

    /// A server with empty buffers.
    pub const fn new() -> Self {
        let () = Self::CHECK;
        StreamServer {
            decoder: FrameDecoder::new(u32::MAX),
            tx: [0; TX],
            out_of_step: false,
            name: crate::DEFAULT_NAME,
            events_sent: 0,
        }
    }

    /// The same server, reporting `name` in `rpc.info`.
    pub const fn with_name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The largest body a request may have: `RX - 16`.
    pub fn max_body(&self) -> u32 {
        self.decoder.max_body()
    }

    /// Reads once (blocking until at least one byte comes, as
    /// [`Read::read`] does), then answers every whole frame buffered.
    /// Returns how many frames were answered.
    pub fn serve_once<F, IO>(
        &mut self,
        functions: &F,
        io: &mut IO,
    ) -> Result<usize, StreamError<IO::Error>>
    where
        F: Functions + ?Sized,
        IO: Read + Write,
    {
        self.read(io)?;
        self.answer(functions, &mut Open, None, 0, io)
    }

    /// Like [`serve_once`](Self::serve_once), but reads only if the link
    /// says it would not block: returns `Ok(0)` at once when nothing came.
    pub fn poll<F, IO>(
        &mut self,
        functions: &F,
        io: &mut IO,
    ) -> Result<usize, StreamError<IO::Error>>
    where
        F: Functions + ?Sized,
        IO: Read + ReadReady + Write,
    {
        if !io.read_ready().map_err(StreamError::Io)? {
            return Ok(0);
        }
        self.serve_once(functions, io)
    }

    /// [`poll`](Self::poll), answering through `responder` (a
    /// [`Guard`](at_core::auth::Guard) shared with the board's other
    /// servers, or [`Open`]); `now` is the board's clock in milliseconds.
    /// A serial line has no addresses: a remembered reply goes to whoever
    /// is on the line.
    pub fn poll_with<F, R, IO>(
        &mut self,
        functions: &F,
        responder: &mut R,
        now: u64,
        io: &mut IO,
    ) -> Result<usize, StreamError<IO::Error>>
    where
        F: Functions + ?Sized,
        R: Responder,
        IO: Read + ReadReady + Write,
    {
        self.poll_in(functions, responder, None, now, io)
    }

    /// [`poll_with`](Self::poll_with) for a server with topics (contract
    /// 10.3): answers `rpc.subscribe`, `rpc.unsubscribe` and `rpc.topics`
    /// from `topics` (shared with the board's other servers) and writes the
    /// events due to the line's subscriptions after the replies.
    pub fn poll_topics<F, R, IO>(
        &mut self,
        functions: &F,
        responder: &mut R,
        topics: &mut dyn Topics,
        now: u64,
        io: &mut IO,
    ) -> Result<usize, StreamError<IO::Error>>
    where
        F: Functions + ?Sized,
        R: Responder,
        IO: Read + ReadReady + Write,
    {
        self.poll_in(functions, responder, Some(topics), now, io)
    }

    fn poll_in<F, R, IO>(
        &mut self,
        functions: &F,
        responder: &mut R,
        mut topics: Option<&mut dyn Topics>,
        now: u64,
        io: &mut IO,
    ) -> Result<usize, StreamError<IO::Error>>
    where
        F: Functions + ?Sized,
        R: Responder,
        IO: Read + ReadReady + Write,
    {
        let mut work = 0;
        if io.read_ready().map_err(StreamError::Io)? {
            self.read(io)?;
            work += self.answer(functions, responder, crate::topics(&mut topics), now, io)?;
        }
        if let Some(t) = topics {
            work += self.send_events(responder, t, now, io)?;
        }
        Ok(work)
    }

    /// Writes the events due to subscribers on the line.
    fn send_events<R: Responder, IO: Write>(
        &mut self,
        responder: &mut R,
        topics: &mut dyn Topics,
        now: u64,
        io: &mut IO,
    ) -> Result<usize, StreamError<IO::Error>> {
        let mut sent = 0;
        let serial = |o: &Origin| o.transport == Transport::Serial;
        while let Some(due) = topics.take_due(now, &serial, &mut self.tx) {
            let len =
                crate::finish_event(&due, &mut self.events_sent, responder, now, &mut self.tx);
            if let Some(len) = len {
                write_all(io, &self.tx[..len])?;
                sent += 1;
            }
        }
        if sent > 0 {
            io.flush().map_err(StreamError::Io)?;
        }
        Ok(sent)
    }

    /// Serves the link until it fails or closes, and says why.
    pub fn run<F, IO>(&mut self, functions: &F, io: &mut IO) -> StreamError<IO::Error>
    where
        F: Functions + ?Sized,
        IO: Read + Write,
    {
        loop {
            if let Err(e) = self.serve_once(functions, io) {
                return e;
            }
        }
    }

    fn read<IO: Read>(&mut self, io: &mut IO) -> Result<(), StreamError<IO::Error>> {
        let spare = self.decoder.spare();
        if spare.is_empty() {
            // Never after `answer`, which leaves room; resync to be sure.
            self.decoder.resync();
            return Ok(());
        }
        match io.read(spare).map_err(StreamError::Io)? {
            0 => Err(StreamError::Eof),
            n => {
                self.decoder.commit(n);
                Ok(())
            }
        }
    }

    /// Answers every whole frame buffered; returns how many.
    fn answer<F, R, IO>(
        &mut self,
        functions: &F,
        responder: &mut R,
        mut topics: Option<&mut dyn Topics>,
        now: u64,
        io: &mut IO,
    ) -> Result<usize, StreamError<IO::Error>>
    where
        F: Functions + ?Sized,
        R: Responder,
        IO: Write,
    {
        let mut answered = 0;
        let info = crate::server_info(self.name, self.decoder.max_body(), topics.is_some());
        loop {
            let len = match self.decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    self.out_of_step = false;
                    let mut context = Context {
                        origin: Origin::SERIAL,
                        now,
                        waited_ms: 0,
                        frame_len: frame.body.len() + HEADER,
                        topics: crate::topics(&mut topics),
                    };
                    match responder.respond(functions, &info, &frame, &mut context, &mut self.tx) {
                        Some(n) => n,
                        None => {
                            log_debug!("stream: nothing to answer (seq {})", frame.seq());
                            continue;
                        }
                    }
                }
                Err(e) if e.loses_sync() => {
                    let skip = self.out_of_step;
                    self.out_of_step = true;
                    // Answer from the header before resync moves past it.
                    let notify = crate::tcp::notification(&e, self.decoder.last_flags());
                    let reply = if skip || notify {
                        None
                    } else {
                        log_warn!(
                            "stream: out of step (seq {}): {}; resynchronising",
                            e.seq(),
                            e.code().as_str()
                        );
                        at_core::respond_to_error(&e, &mut self.tx)
                    };
                    let skipped = self.decoder.resync();
                    log_debug!("stream: skipped {} bytes", skipped);
                    match reply {
                        Some(n) => n,
                        None => continue,
                    }
                }
                Err(e) => {
                    self.out_of_step = false;
                    log_warn!("stream: bad frame (seq {}): {}", e.seq(), e.code().as_str());
                    if crate::tcp::notification(&e, self.decoder.last_flags()) {
                        continue;
                    }
                    match at_core::respond_to_error(&e, &mut self.tx) {
                        Some(n) => n,
                        None => continue,
                    }
                }
            };
            write_all(io, &self.tx[..len])?;
            answered += 1;
        }
        if answered > 0 {
            io.flush().map_err(StreamError::Io)?;
        }
        Ok(answered)
    }
}

/// `write_all` without its panic on a write of 0 bytes.
fn write_all<IO: Write>(io: &mut IO, mut bytes: &[u8]) -> Result<(), StreamError<IO::Error>> {
    while !bytes.is_empty() {
        match io.write(bytes).map_err(StreamError::Io)? {
            0 => return Err(StreamError::WriteZero),
            n => bytes = bytes.get(n..).unwrap_or_default(),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{code, replies, request};
    use at_core::calculator::CALCULATOR;
    use at_core::{ErrorCode, Reply, Value};
    use std::vec;
    use std::vec::Vec;

    /// A link fed from a list of reads (one chunk per `read` call).
    struct Link {
        reads: Vec<Vec<u8>>,
        written: Vec<u8>,
    }

    impl embedded_io::ErrorType for Link {
        type Error = core::convert::Infallible;
    }

    impl Read for Link {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            if self.reads.is_empty() {
                return Ok(0);
            }
            let chunk = &mut self.reads[0];
            let n = buf.len().min(chunk.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.reads.remove(0);
            }
            Ok(n)
        }
    }

    impl Write for Link {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            // One byte at a time, like a slow UART.
            self.written.extend_from_slice(&buf[..buf.len().min(1)]);
            Ok(buf.len().min(1))
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    fn serve(reads: Vec<Vec<u8>>) -> Vec<u8> {
        let mut link = Link {
            reads,
            written: Vec::new(),
        };
        let mut server = StreamServer::<128, 128>::new();
        assert_eq!(server.run(&CALCULATOR, &mut link), StreamError::Eof);
        link.written
    }

    #[test]
    fn split_and_sticky_frames() {
        let a = request(1, br#"{"func": "add", "args": [10, 20]}"#);
        let b = request(2, br#"{"func": "div", "args": [10, 4]}"#);
        let mut all = a.clone();
        all.extend_from_slice(&b);
        // Byte by byte, then both in one read.
        let mut reads: Vec<Vec<u8>> = a.iter().map(|&b| vec![b]).collect();
        reads.push(all);
        let written = serve(reads);
        let got = replies(&written);
        assert_eq!(
            got,
            [
                (1, Reply::Success(Value::Int(30))),
                (1, Reply::Success(Value::Int(30))),
                (2, Reply::Success(Value::Float(2.5))),
            ]
        );
    }

    #[test]
    fn noise_is_answered_once_then_skipped() {
        let good = request(7, br#"{"func": "mul", "args": [6, 7]}"#);
        // Noise arriving a byte at a time, with a false 'A' in it.
        let mut reads: Vec<Vec<u8>> = b"xyzA!qq".iter().map(|&b| vec![b]).collect();
        reads.push(good.clone());
        let written = serve(reads);
        let got = replies(&written);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].0, code(&got[0].1)), (0, Some(ErrorCode::BadFrame)));
        assert_eq!(got[1], (7, Reply::Success(Value::Int(42))));
    }

    #[test]
    fn crc_mismatch_keeps_the_stream_in_step() {
        let mut bad = request(3, br#"{"func": "add", "args": [1, 2]}"#);
        bad[20] ^= 0x20;
        let good = request(4, br#"{"func": "sub", "args": [1, 2]}"#);
        let written = serve(vec![bad, good]);
        let got = replies(&written);
        assert_eq!(
            (got[0].0, code(&got[0].1)),
            (3, Some(ErrorCode::ChecksumMismatch))
        );
        assert_eq!(got[1], (4, Reply::Success(Value::Int(-1))));
    }

    #[test]
    fn oversize_is_answered_then_resynchronised() {
        // A header announcing 1000 bytes (over 128 - 16), its body (which
        // holds no "AT"), then a good frame.
        let mut big = request(5, b"{}");
        big[8..12].copy_from_slice(&1000u32.to_be_bytes());
        big.truncate(16);
        let body = vec![b' '; 1000];
        let good = request(6, br#"{"func": "add", "args": [2, 2]}"#);
        let written = serve(vec![big, body, good]);
        let got = replies(&written);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            (got[0].0, code(&got[0].1)),
            (5, Some(ErrorCode::FrameTooLarge))
        );
        assert_eq!(got[1], (6, Reply::Success(Value::Int(4))));
    }

    impl embedded_io::ReadReady for Link {
        fn read_ready(&mut self) -> Result<bool, Self::Error> {
            Ok(!self.reads.is_empty())
        }
    }

    /// Events over a serial line: a subscribe answered, the state as event
    /// 1 right after it, a published value as event 2 (the line's own seq
    /// counter), a notification run and never answered, and the lease's
    /// end event.
    #[test]
    fn events_and_notifications_on_a_serial_line() {
        use at_core::auth::Open;
        use at_core::event::{End, Event, Payload};
        use at_core::Kind;
        use at_core::subscriptions::{Subscriptions, Topic};
        static TOPICS: [Topic; 1] = [Topic::state("uptime", "seconds")];
        let mut table = Subscriptions::<4, 1>::new(&TOPICS);
        table.publish("uptime", Value::Int(7)).unwrap();
        let subscribe = request(3, br#"{"func": "rpc.subscribe", "args": ["uptime", 1, 0]}"#);
        let mut notify = [0u8; 64];
        let n = at_core::encode_frame(
            Kind::Notify,
            4,
            br#"{"func": "add", "args": [1, 2]}"#,
            &mut notify,
        )
        .unwrap();
        let mut link = Link {
            reads: vec![subscribe, notify[..n].to_vec()],
            written: Vec::new(),
        };
        let mut server = StreamServer::<256, 256>::new();
        let poll = |server: &mut StreamServer<256, 256>,
                    table: &mut Subscriptions<'_, 4, 1>,
                    link: &mut Link,
                    now| {
            server
                .poll_topics(&CALCULATOR, &mut Open, table, now, link)
                .unwrap()
        };
        poll(&mut server, &mut table, &mut link, 0);
        poll(&mut server, &mut table, &mut link, 10);
        table.publish("uptime", Value::Int(8)).unwrap();
        poll(&mut server, &mut table, &mut link, 20);
        poll(&mut server, &mut table, &mut link, 1_000);
        let mut frames = Vec::new();
        let mut bytes = &link.written[..];
        while !bytes.is_empty() {
            let len = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
            frames.push(bytes[..16 + len].to_vec());
            bytes = &bytes[16 + len..];
        }
        assert_eq!(
            frames.len(),
            4,
            "reply, event 1, event 2, the end; nothing for the notification"
        );
        let reply = at_core::Frame::parse(&frames[0], 1024).unwrap();
        assert_eq!((reply.kind, reply.seq()), (Kind::Response, 3));
        let events: Vec<(u32, u32, Payload<'_>)> = frames[1..]
            .iter()
            .map(|f| {
                let frame = at_core::Frame::parse(f, 1024).unwrap();
                assert_eq!(frame.kind, Kind::Notify);
                let e = Event::parse(frame.body).unwrap();
                (frame.seq(), e.n, e.payload)
            })
            .collect();
        assert_eq!(
            events,
            [
                (1, 1, Payload::Value(Value::Int(7))),
                (2, 2, Payload::Value(Value::Int(8))),
                (3, 3, Payload::End(End::Lease)),
            ]
        );
    }
}
