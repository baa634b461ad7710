//! Running the device servers on a PC (feature `std`): the very
//! [`TcpServer`] and [`UdpServer`] a board runs, over `std-embedded-nal`'s
//! `embedded-nal` implementation for std sockets.
//!
//! # How it is structured, and why
//! - **One thread per stack**: the TCP server polls in one thread, the UDP
//!   server in another, each with its own `Stack` value. A device runs
//!   both from one loop; here a slow call in one stack cannot hold up the
//!   other.
//! - **Accepted TCP sockets are made non-blocking** ([`DesktopStack`]).
//!   std-embedded-nal sets its listener non-blocking, but the sockets
//!   `accept` returns are plain blocking `TcpStream`s (Linux's `accept()`
//!   does not pass `O_NONBLOCK` on), so `receive` on an idle connection
//!   waits until the peer sends, instead of answering `WouldBlock`: one
//!   idle client would stall every other connection and every accept.
//!   [`DesktopStack`] wraps the stack and switches each accepted socket to
//!   non-blocking (and sets `TCP_NODELAY`, so small replies are not held
//!   back by Nagle's algorithm), which is what the embedded-nal contract
//!   promises and what the servers expect.
//! - **Addresses**: embedded-nal binds by port only; std-embedded-nal binds
//!   `[::]:PORT` (IPv4 too, as `::ffff:a.b.c.d`), so the IP of `--tcp` is
//!   not enforced. The real port (the OS picks one for port 0) is read
//!   from the socket; [`display_addr`] turns it into an address a client
//!   can use.
//! - An idle loop sleeps [`IDLE_SLEEP`] between polls that found nothing
//!   to do.
//! - **Topics, as the firmware's**: `uptime` (seconds since start, a state
//!   topic) and `calls` (calls answered), in one subscription table that
//!   both threads share behind a lock ([`TOPICS`], [`SUBSCRIPTIONS`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::vec::Vec;

use at_core::auth::{
    CounterNonces, FixedReplies, Guard, Key, Open, Origin, Responder, TRAILER_LEN,
};
use at_core::calculator::CALCULATOR;
use at_core::subscriptions::{
    Due, Granted, SubscribeArgs, SubscribeError, Subscriber, Subscriptions, Topic, Topics,
};
use at_core::{Functions, HEADER_LEN, Reply, Value};
use embedded_nal::{TcpClientStack, TcpFullStack, nb};
use std::sync::atomic::AtomicU32;
use std_embedded_nal::Stack;

use crate::{TcpServer, Timeouts, UdpServer};

/// Connections served at once; the next one is answered `busy`.
pub const CLIENTS: usize = 8;
/// The largest request body: 4096 bytes.
pub const MAX_BODY: usize = 4096;
/// The reply buffer per connection, and per remembered UDP reply.
pub const REPLY: usize = 1024;
/// UDP replies remembered for at-most-once execution.
pub const UDP_CACHE: usize = 32;
/// A TCP connection that makes no progress for a minute, or holds a
/// partial frame for 10 s, is closed.
pub const TIMEOUTS: Timeouts = Timeouts {
    idle: Some(60_000),
    frame: Some(10_000),
};
/// How long a loop that found nothing to do sleeps.
pub const IDLE_SLEEP: Duration = Duration::from_millis(1);

/// The topics the desktop servers offer, as the firmware does.
pub static TOPICS: [Topic; 2] = [
    Topic::state("uptime", "seconds since start"),
    Topic::new("calls", "calls answered"),
];

/// Subscriptions held at once (both transports).
pub const SUBSCRIPTIONS: usize = 32;

/// The shared table and what was last published to it.
struct Board {
    table: Subscriptions<'static, SUBSCRIPTIONS, 2>,
    second: Option<u64>,
    calls: Option<u32>,
}

impl Board {
    /// Publishes `uptime` once a second and `calls` when it changed.
    fn publish(&mut self, now: u64, calls: u32) {
        let second = now / 1000;
        if self.second != Some(second) {
            self.second = Some(second);
            let _ = self.table.publish(
                "uptime",
                Value::Int(i64::try_from(second).unwrap_or(i64::MAX)),
            );
        }
        if self.calls != Some(calls) {
            self.calls = Some(calls);
            let _ = self.table.publish("calls", Value::Int(i64::from(calls)));
        }
    }
}

/// The table behind its lock, as one thread's [`Topics`].
struct SharedTopics<'a>(&'a Mutex<Board>);

impl SharedTopics<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Topics for SharedTopics<'_> {
    fn subscribe(
        &mut self,
        who: Subscriber,
        to: Origin,
        args: &SubscribeArgs<'_>,
        request_len: usize,
        now: u64,
    ) -> Result<Granted, SubscribeError> {
        self.lock().table.subscribe(who, to, args, request_len, now)
    }

    fn unsubscribe(&mut self, who: Subscriber, topic: &str) -> bool {
        self.lock().table.unsubscribe(who, topic)
    }

    fn topic(&self, index: usize) -> Option<Topic> {
        self.lock().table.topic(index)
    }

    fn take_due(
        &mut self,
        now: u64,
        accept: &dyn Fn(&Origin) -> bool,
        out: &mut [u8],
    ) -> Option<Due> {
        self.lock().table.take_due(now, accept, out)
    }

    fn drop_subscriber(&mut self, who: Subscriber) {
        self.lock().table.drop_subscriber(who)
    }
}

/// A function table that counts the calls it answers (topic `calls`).
struct Counting<'a, F: ?Sized> {
    functions: &'a F,
    calls: Arc<AtomicU32>,
}

impl<F: Functions + ?Sized> Functions for Counting<'_, F> {
    fn call<R>(&self, func: &str, args: &[Value<'_>], reply: impl FnOnce(Reply<'_>) -> R) -> R {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.functions.call(func, args, reply)
    }

    fn count(&self) -> usize {
        self.functions.count()
    }

    fn describe(&self, index: usize) -> Option<at_core::Description<'_>> {
        self.functions.describe(index)
    }
}

/// The desktop TCP server: [`CLIENTS`] connections, bodies up to
/// [`MAX_BODY`] bytes.
pub type DesktopTcpServer = TcpServer<DesktopStack, CLIENTS, { HEADER_LEN + MAX_BODY }, REPLY>;
/// The desktop UDP server: bodies up to [`MAX_BODY`] bytes, [`UDP_CACHE`]
/// remembered replies.
pub type DesktopUdpServer = UdpServer<Stack, { HEADER_LEN + MAX_BODY + 1 }, REPLY, UDP_CACHE>;

/// std-embedded-nal's stack, with accepted TCP sockets switched to
/// non-blocking (see the [module docs](self)).
#[derive(Clone, Default)]
pub struct DesktopStack(pub Stack);

type Socket = <Stack as TcpClientStack>::TcpSocket;
type Error = <Stack as TcpClientStack>::Error;

impl TcpClientStack for DesktopStack {
    type TcpSocket = Socket;
    type Error = Error;

    fn socket(&mut self) -> Result<Socket, Error> {
        TcpClientStack::socket(&mut self.0)
    }

    fn connect(&mut self, socket: &mut Socket, remote: SocketAddr) -> nb::Result<(), Error> {
        self.0.connect(socket, remote)
    }

    fn send(&mut self, socket: &mut Socket, buffer: &[u8]) -> nb::Result<usize, Error> {
        self.0.send(socket, buffer)
    }

    fn receive(&mut self, socket: &mut Socket, buffer: &mut [u8]) -> nb::Result<usize, Error> {
        self.0.receive(socket, buffer)
    }

    fn close(&mut self, socket: Socket) -> Result<(), Error> {
        TcpClientStack::close(&mut self.0, socket)
    }
}

impl TcpFullStack for DesktopStack {
    fn bind(&mut self, socket: &mut Socket, local_port: u16) -> Result<(), Error> {
        TcpFullStack::bind(&mut self.0, socket, local_port)
    }

    fn listen(&mut self, socket: &mut Socket) -> Result<(), Error> {
        self.0.listen(socket)
    }

    fn accept(&mut self, socket: &mut Socket) -> nb::Result<(Socket, SocketAddr), Error> {
        let (accepted, peer) = self.0.accept(socket)?;
        let configured = accepted.as_raw_fd().map(|fd| {
            with_socket_fd(fd, |owned| {
                let stream = TcpStream::from(owned);
                stream.set_nonblocking(true)?;
                let _ = stream.set_nodelay(true);
                Ok(())
            })
        });
        match configured {
            Some(Ok(())) => Ok((accepted, peer)),
            // A socket that would block the whole server is refused.
            Some(Err(e)) => Err(nb::Error::Other(std_embedded_nal_error(e))),
            None => Err(nb::Error::Other(std_embedded_nal_error(io::Error::other(
                "accepted socket has no descriptor",
            )))),
        }
    }
}

fn std_embedded_nal_error(e: io::Error) -> Error {
    Error::from(e)
}

/// Calls `f` with a duplicate of the socket descriptor `fd`. Options set
/// through the duplicate (non-blocking, `TCP_NODELAY`) apply to the socket
/// itself: both descriptors name one open socket.
fn with_socket_fd<T>(fd: RawFd, f: impl FnOnce(OwnedFd) -> io::Result<T>) -> io::Result<T> {
    // SAFETY: `fd` comes from `as_raw_fd()` of a socket the caller holds by
    // reference for the whole call, so it is open while borrowed here; the
    // borrow ends before this function returns. Only the duplicate is owned
    // (and closed) by `f`.
    #[allow(unsafe_code)]
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    f(borrowed.try_clone_to_owned()?)
}

/// The address a TCP server's listening socket is bound to.
pub fn tcp_local_addr(server: &DesktopTcpServer) -> io::Result<SocketAddr> {
    let fd = server
        .listener()
        .as_raw_fd()
        .ok_or_else(|| io::Error::other("listener not bound"))?;
    with_socket_fd(fd, |owned| TcpListener::from(owned).local_addr())
}

/// The address a UDP server's socket is bound to.
pub fn udp_local_addr(server: &DesktopUdpServer) -> io::Result<SocketAddr> {
    let fd = server
        .socket()
        .as_raw_fd()
        .ok_or_else(|| io::Error::other("socket not bound"))?;
    with_socket_fd(fd, |owned| UdpSocket::from(owned).local_addr())
}

/// The address to tell clients, for a server asked to listen on
/// `requested` and bound (by std-embedded-nal, on every address) to
/// `bound`: `127.0.0.1:PORT` for a wildcard or IPv4 loopback request,
/// `[::1]:PORT` for IPv6 loopback, otherwise the requested IP with the real
/// port.
///
/// ```
/// use at_embedded_example::desktop::display_addr;
/// let bound = "[::]:40000".parse().unwrap();
/// assert_eq!(display_addr("0.0.0.0:0".parse().unwrap(), bound).to_string(), "127.0.0.1:40000");
/// assert_eq!(display_addr("127.0.0.1:0".parse().unwrap(), bound).to_string(), "127.0.0.1:40000");
/// assert_eq!(display_addr("[::1]:0".parse().unwrap(), bound).to_string(), "[::1]:40000");
/// assert_eq!(display_addr("10.1.2.3:0".parse().unwrap(), bound).to_string(), "10.1.2.3:40000");
/// ```
pub fn display_addr(requested: SocketAddr, bound: SocketAddr) -> SocketAddr {
    let ip = match requested.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(v4) if v4.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// The desktop servers, running: one thread per stack.
pub struct Running {
    tcp_addr: Option<SocketAddr>,
    udp_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Where clients reach the TCP server (see [`display_addr`]).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Where clients reach the UDP server (see [`display_addr`]).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// Stops both servers and waits for their threads.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    /// Waits for the threads (they end only when a poll loop panics, which
    /// nothing a peer sends can cause).
    pub fn wait(mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Binds the calculator servers (TCP and/or UDP; `None` for neither) and
/// starts polling each in its own thread. Both sockets are bound before
/// this returns, so clients may connect at once.
pub fn start(tcp: Option<SocketAddr>, udp: Option<SocketAddr>) -> io::Result<Running> {
    start_with(tcp, udp, &CALCULATOR)
}

/// [`start`] with a function table of the caller's (a `static` array of
/// [`at_core::Function`]s, say).
pub fn start_with<F>(
    tcp: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    functions: &'static F,
) -> io::Result<Running>
where
    F: Functions + Sync + ?Sized,
{
    start_guarded(tcp, udp, functions, None)
}

/// Sessions the desktop servers hold at once (few, as on a board).
pub const DESKTOP_SESSIONS: usize = 4;

/// The desktop servers' guard: `keys`, [`DESKTOP_SESSIONS`] sessions, 16
/// remembered replies, nonces from a counter whose "boot" part is the time
/// of start in nanoseconds (a PC has a clock that survives restarts; a
/// board uses its TRNG or a boot counter in flash).
pub type DesktopGuard = Guard<
    &'static [Key<'static>],
    CounterNonces,
    FixedReplies<16, { REPLY + TRAILER_LEN }>,
    DESKTOP_SESSIONS,
>;

/// [`start_with`], requiring authentication with `keys` (contract section
/// 9): one guard, shared by the TCP and UDP servers, so a session is good
/// on both.
pub fn start_with_keys<F>(
    tcp: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    functions: &'static F,
    keys: &'static [Key<'static>],
) -> io::Result<Running>
where
    F: Functions + Sync + ?Sized,
{
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let guard = DesktopGuard::new(keys, FixedReplies::new(), CounterNonces::new(boot));
    start_guarded(tcp, udp, functions, Some(Arc::new(Mutex::new(guard))))
}

/// A guard shared between threads: each answer holds the lock (device
/// functions are quick).
struct Locked<'a>(&'a Mutex<DesktopGuard>);

impl Responder for Locked<'_> {
    fn respond<F: Functions + ?Sized>(
        &mut self,
        functions: &F,
        info: &at_core::ServerInfo<'_>,
        frame: &at_core::Frame<'_>,
        context: &mut at_core::Context<'_>,
        out: &mut [u8],
    ) -> Option<usize> {
        self.lock().respond(functions, info, frame, context, out)
    }

    fn seal_server_frame(
        &mut self,
        sid: &[u8; at_core::auth::SID_LEN],
        now: u64,
        out: &mut [u8],
        len: usize,
    ) -> Option<usize> {
        self.lock().seal_server_frame(sid, now, out, len)
    }
}

impl Locked<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, DesktopGuard> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Answers through the guard when there is one, else plainly.
fn responder(guard: &Option<Arc<Mutex<DesktopGuard>>>) -> Either<'_> {
    match guard {
        Some(g) => Either::Guarded(Locked(g)),
        None => Either::Open(Open),
    }
}

enum Either<'a> {
    Guarded(Locked<'a>),
    Open(Open),
}

impl Responder for Either<'_> {
    fn respond<F: Functions + ?Sized>(
        &mut self,
        functions: &F,
        info: &at_core::ServerInfo<'_>,
        frame: &at_core::Frame<'_>,
        context: &mut at_core::Context<'_>,
        out: &mut [u8],
    ) -> Option<usize> {
        match self {
            Either::Guarded(g) => g.respond(functions, info, frame, context, out),
            Either::Open(o) => o.respond(functions, info, frame, context, out),
        }
    }

    fn seal_server_frame(
        &mut self,
        sid: &[u8; at_core::auth::SID_LEN],
        now: u64,
        out: &mut [u8],
        len: usize,
    ) -> Option<usize> {
        match self {
            Either::Guarded(g) => g.seal_server_frame(sid, now, out, len),
            Either::Open(_) => None,
        }
    }
}

fn start_guarded<F>(
    tcp: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    functions: &'static F,
    guard: Option<Arc<Mutex<DesktopGuard>>>,
) -> io::Result<Running>
where
    F: Functions + Sync + ?Sized,
{
    let started = Instant::now();
    let millis = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let board = Arc::new(Mutex::new(Board {
        table: Subscriptions::new(&TOPICS),
        second: None,
        calls: None,
    }));
    let calls = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut running = Running {
        tcp_addr: None,
        udp_addr: None,
        stop: stop.clone(),
        threads: Vec::new(),
    };
    if let Some(requested) = tcp {
        let mut stack = DesktopStack::default();
        let server = DesktopTcpServer::bind(&mut stack, requested.port()).map_err(|e| e.0)?;
        running.tcp_addr = Some(display_addr(requested, tcp_local_addr(&server)?));
        let (stop, guard, board) = (stop.clone(), guard.clone(), board.clone());
        let calls = calls.clone();
        running
            .threads
            .push(
                std::thread::Builder::new()
                    .name("at-tcp".into())
                    .spawn(move || {
                        let mut server = server.with_timeouts(TIMEOUTS);
                        let mut responder = responder(&guard);
                        let counting = Counting {
                            functions,
                            calls: calls.clone(),
                        };
                        poll_until_stopped(&stop, || {
                            let now = millis();
                            let mut topics = SharedTopics(&board);
                            topics.lock().publish(now, calls.load(Ordering::Relaxed));
                            server.poll_topics(
                                &mut stack,
                                &counting,
                                &mut responder,
                                &mut topics,
                                now,
                            )
                        });
                        server.close(&mut stack);
                    })?,
            );
    }
    if let Some(requested) = udp {
        let mut stack = Stack;
        let server = DesktopUdpServer::bind(&mut stack, requested.port())?;
        running.udp_addr = Some(display_addr(requested, udp_local_addr(&server)?));
        let stop = stop.clone();
        running
            .threads
            .push(
                std::thread::Builder::new()
                    .name("at-udp".into())
                    .spawn(move || {
                        let mut server = server;
                        let mut responder = responder(&guard);
                        let counting = Counting {
                            functions,
                            calls: calls.clone(),
                        };
                        poll_until_stopped(&stop, || {
                            let now = millis();
                            let mut topics = SharedTopics(&board);
                            topics.lock().publish(now, calls.load(Ordering::Relaxed));
                            server.poll_topics(
                                &mut stack,
                                &counting,
                                &mut responder,
                                &mut topics,
                                now,
                            )
                        });
                        server.close(&mut stack);
                    })?,
            );
    }
    Ok(running)
}

/// Calls `poll` until `stop` is set, sleeping [`IDLE_SLEEP`] after each
/// poll that did nothing (returned 0).
fn poll_until_stopped(stop: &AtomicBool, mut poll: impl FnMut() -> usize) {
    while !stop.load(Ordering::Relaxed) {
        if poll() == 0 {
            std::thread::sleep(IDLE_SLEEP);
        }
    }
}
