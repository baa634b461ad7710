//! `at-host bench`: calls/s and latency of AT against a raw-socket echo of
//! frames of the same size, in the same run and the same shape.
//!
//! The client runs on one thread (a current-thread runtime); an in-process
//! server (AT or echo) runs on a runtime of its own with one worker thread,
//! so the two compete for the machine's cores the same way in every
//! scenario. Pin them with `taskset` for steadier figures (docs/BENCHMARKS.md).
//!
//! `at-host bench echo-server ADDR` is the other baseline, the plainest
//! server there is, for `scripts/bench-vs-echo.sh`: blocking `std::net`, one
//! thread per connection, run as a process of its own; `--raw` gives the
//! bench one client for both (pre-encoded requests, replies read by their
//! header), so an external AT server and the echo are called alike.

pub mod fleet;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use at_core::{HEADER_LEN, Header, Kind, Value as V};
use at_host::{AuthKey, Client, Server, UdpClient, UdpConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// What to measure.
pub struct Options {
    pub server: Option<SocketAddr>,
    pub udp_only: bool,
    /// Only this scenario.
    pub scenario: Option<Shape>,
    pub connections: usize,
    pub depth: usize,
    pub calls: u64,
    pub duration: Option<Duration>,
    pub baseline: bool,
    pub json: bool,
    /// Call the server with pre-encoded frames, reading replies by their
    /// header (works against AT and an echo alike).
    pub raw: bool,
    /// Seal every call with this key (contract section 9).
    pub key: Option<AuthKey>,
}

/// One measured run.
struct Run {
    calls: u64,
    /// Calls made before, to warm up (not in `calls`).
    warm: u64,
    elapsed: Duration,
    /// Per-call latencies in nanoseconds, sorted.
    latencies: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_us(&self, p: f64) -> f64 {
        percentile_us(&self.latencies, p)
    }
}

/// Percentile `p` (0 to 1) of sorted nanosecond `latencies`, in
/// microseconds (0 when there are none).
fn percentile_us(latencies: &[u64], p: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    let i = ((latencies.len() - 1) as f64 * p).round() as usize;
    latencies[i] as f64 / 1000.0
}

/// A benchmark scenario.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Shape {
    /// One TCP connection, one call at a time.
    TcpSequential,
    /// One TCP connection, `--depth` calls in flight.
    TcpPipelined,
    /// `--connections` TCP connections, one call at a time on each.
    TcpConnections,
    /// UDP, one call at a time.
    UdpSequential,
}

impl Shape {
    fn name(self, o: &Options) -> String {
        match self {
            Shape::TcpSequential => "tcp, 1 connection, sequential".into(),
            Shape::TcpPipelined => format!("tcp, 1 connection, {} in flight", o.depth),
            Shape::TcpConnections => format!("tcp, {} connections, sequential", o.connections),
            Shape::UdpSequential => "udp, sequential".into(),
        }
    }

    fn key(self) -> &'static str {
        match self {
            Shape::TcpSequential => "tcp_sequential",
            Shape::TcpPipelined => "tcp_pipelined",
            Shape::TcpConnections => "tcp_connections",
            Shape::UdpSequential => "udp_sequential",
        }
    }
}

/// The request every call sends: `add(10, 20)`, 49 bytes on the wire.
pub(crate) const ARGS: [V<'static>; 2] = [V::Int(10), V::Int(20)];

const REQUEST_BODY: &[u8] = br#"{"func": "add", "args": [10, 20]}"#;

/// The request frame with sequence number `seq`, written into `out`.
fn encode_request(seq: u32, out: &mut [u8]) -> usize {
    at_core::encode_frame(Kind::Request, seq, REQUEST_BODY, out).unwrap_or(0)
}

fn request_frame() -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + REQUEST_BODY.len()];
    encode_request(1, &mut out);
    out
}

/// Checks one reply read by a raw client: a whole frame, and for AT's
/// answer a success (the echo sends back the request).
fn check_reply(bytes: &[u8]) -> Result<(), BoxError> {
    let frame = at_core::Frame::parse(bytes, u32::MAX).map_err(|e| e.to_string())?;
    match frame.kind {
        Kind::Request => Ok(()),
        _ => match at_core::Reply::parse(frame.body).map_err(|e| e.to_string())? {
            at_core::Reply::Success(_) => Ok(()),
            at_core::Reply::Error(e) => Err(format!("error reply: {}", e.code).into()),
        },
    }
}

/// Servers on their own runtime and thread.
struct Servers {
    at_tcp: SocketAddr,
    at_udp: SocketAddr,
    echo_tcp: SocketAddr,
    echo_udp: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn start_servers(external: Option<SocketAddr>, key: Option<&AuthKey>) -> std::io::Result<Servers> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (at_tcp, at_udp) = match external {
        Some(addr) => (addr, addr),
        None => runtime.block_on(async {
            // The many-connections scenario comes from one address.
            let mut builder = Server::builder()
                .calculator()
                .max_per_address(usize::MAX)
                .tcp(loopback)
                .udp(loopback);
            if let Some(key) = key {
                builder = builder.key(key.clone());
            }
            let server = builder.start().await?;
            let addrs = (server.tcp_addr(), server.udp_addr());
            std::mem::forget(server.shutdown_handle());
            // The server lives as long as the runtime.
            std::mem::forget(server);
            Ok::<_, std::io::Error>((addrs.0.unwrap_or(loopback), addrs.1.unwrap_or(loopback)))
        })?,
    };
    let (echo_tcp, echo_udp) = runtime.block_on(async {
        let listener = TcpListener::bind(loopback).await?;
        let udp = UdpSocket::bind(loopback).await?;
        let addrs = (listener.local_addr()?, udp.local_addr()?);
        tokio::spawn(echo_tcp_server(listener));
        tokio::spawn(echo_udp_server(udp));
        Ok::<_, std::io::Error>(addrs)
    })?;
    Ok(Servers {
        at_tcp,
        at_udp,
        echo_tcp,
        echo_udp,
        _runtime: runtime,
    })
}

/// The raw baseline: whatever arrives goes straight back, nothing parsed.
async fn echo_tcp_server(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

async fn echo_udp_server(socket: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
        let _ = socket.send_to(&buf[..n], peer).await;
    }
}

/// Runs the benchmark; returns false if a call failed.
pub fn run(o: Options) -> bool {
    let servers = match start_servers(o.server, o.key.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: cannot start the servers: {e}");
            return false;
        }
    };
    let client_rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: {e}");
            return false;
        }
    };
    let only = o.scenario.map(|s| [s]);
    let shapes: &[Shape] = if let Some(only) = &only {
        only
    } else if o.udp_only {
        &[Shape::UdpSequential]
    } else {
        &[
            Shape::TcpSequential,
            Shape::TcpPipelined,
            Shape::TcpConnections,
            Shape::UdpSequential,
        ]
    };
    let mut results = Vec::new();
    for &shape in shapes {
        let at = client_rt.block_on(measure(&o, shape, false, &servers));
        let raw = if o.baseline {
            Some(client_rt.block_on(measure(&o, shape, true, &servers)))
        } else {
            None
        };
        match (at, raw) {
            (Ok(at), Some(Ok(raw))) => results.push((shape, at, Some(raw))),
            (Ok(at), None) => results.push((shape, at, None)),
            (Err(e), _) | (_, Some(Err(e))) => {
                eprintln!("bench: {}: {e}", shape.name(&o));
                return false;
            }
        }
    }
    if o.json {
        print_json(&o, &results);
    } else {
        print_table(&o, &results);
    }
    true
}

fn print_table(o: &Options, results: &[(Shape, Run, Option<Run>)]) {
    println!(
        "{:<40} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "scenario", "calls/s", "p50 us", "p90 us", "p99 us", "max us", "vs raw"
    );
    let row = |name: &str, r: &Run, ratio: Option<f64>| {
        println!(
            "{:<40} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>8}",
            name,
            r.rate(),
            r.percentile_us(0.50),
            r.percentile_us(0.90),
            r.percentile_us(0.99),
            r.percentile_us(1.0),
            ratio.map(|x| format!("{x:.2}x")).unwrap_or_default()
        )
    };
    for (shape, at, raw) in results {
        let name = shape.name(o);
        row(
            &format!("AT  {name}"),
            at,
            raw.as_ref().map(|r| at.rate() / r.rate()),
        );
        if let Some(raw) = raw {
            row(&format!("raw {name}"), raw, None);
        }
    }
}

fn print_json(o: &Options, results: &[(Shape, Run, Option<Run>)]) {
    let figures = |r: &Run| {
        format!(
            "{{\"calls\": {}, \"warm_calls\": {}, \"seconds\": {:.6}, \"calls_per_sec\": {:.1}, \"p50_us\": {:.2}, \"p90_us\": {:.2}, \"p99_us\": {:.2}, \"max_us\": {:.2}}}",
            r.calls,
            r.warm,
            r.elapsed.as_secs_f64(),
            r.rate(),
            r.percentile_us(0.5),
            r.percentile_us(0.9),
            r.percentile_us(0.99),
            r.percentile_us(1.0)
        )
    };
    let items: Vec<String> = results
        .iter()
        .map(|(shape, at, raw)| {
            let mut item = format!(
                "{{\"scenario\": \"{}\", \"at\": {}",
                shape.key(),
                figures(at)
            );
            if let Some(raw) = raw {
                item += &format!(
                    ", \"raw\": {}, \"ratio\": {:.4}",
                    figures(raw),
                    at.rate() / raw.rate()
                );
            }
            item + "}"
        })
        .collect();
    println!(
        "{{\"connections\": {}, \"depth\": {}, \"results\": [{}]}}",
        o.connections,
        o.depth,
        items.join(", ")
    );
}

/// Prints progress on a terminal, at most twice a second.
struct Progress {
    label: String,
    last: Instant,
    on: bool,
}

impl Progress {
    fn new(label: String) -> Progress {
        let on = std::io::stderr().is_terminal();
        Progress {
            label,
            last: Instant::now(),
            on,
        }
    }

    fn tick(&mut self, done: u64, total: u64) {
        if self.on && self.last.elapsed() >= Duration::from_millis(500) {
            self.last = Instant::now();
            eprint!("\r{}: {done}/{total} calls ", self.label);
            let _ = std::io::stderr().flush();
        }
    }

    fn done(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}

type BenchResult = Result<Run, Box<dyn std::error::Error>>;

async fn measure(o: &Options, shape: Shape, raw: bool, s: &Servers) -> BenchResult {
    let label = format!("{} {}", if raw { "raw" } else { "AT " }, shape.name(o));
    let mut progress = Progress::new(label);
    // Warm up connections, caches and branch predictors first.
    let warm = Options {
        calls: 500.min(o.calls),
        duration: None,
        key: o.key.clone(),
        ..*o
    };
    let warm = run_shape(
        &warm,
        shape,
        raw,
        s,
        &mut Progress {
            on: false,
            ..Progress::new(String::new())
        },
    )
    .await?;
    let run = run_shape(o, shape, raw, s, &mut progress).await;
    progress.done();
    run.map(|run| Run {
        warm: warm.calls,
        ..run
    })
}

async fn run_shape(
    o: &Options,
    shape: Shape,
    raw: bool,
    s: &Servers,
    progress: &mut Progress,
) -> BenchResult {
    let deadline = o.duration.map(|d| Instant::now() + d);
    let out_of_time = move || deadline.is_some_and(|d| Instant::now() >= d);
    let mut latencies = Vec::with_capacity(o.calls.min(10_000_000) as usize);
    let started = Instant::now();
    let frame = request_frame();
    let tcp_addr = if raw { s.echo_tcp } else { s.at_tcp };
    // The echo baseline is called raw; AT raw when asked, else by Client.
    let client = if raw || o.raw {
        Caller::Raw
    } else {
        Caller::At(o.key.clone())
    };
    match shape {
        Shape::TcpSequential | Shape::TcpPipelined => {
            let depth = if shape == Shape::TcpPipelined {
                o.depth.max(1)
            } else {
                1
            };
            let mut run = Calls {
                calls: o.calls,
                latencies: &mut latencies,
                out_of_time: &out_of_time,
                progress,
            };
            tcp(tcp_addr, &client, depth, &mut run).await?;
        }
        Shape::TcpConnections => {
            let per = (o.calls / o.connections.max(1) as u64).max(1);
            let local = tokio::task::LocalSet::new();
            let results = local
                .run_until(async {
                    let mut tasks = Vec::new();
                    for _ in 0..o.connections.max(1) {
                        let client = client.clone();
                        tasks.push(tokio::task::spawn_local(async move {
                            let mut lat = Vec::with_capacity(per as usize);
                            let mut quiet = Progress {
                                label: String::new(),
                                last: Instant::now(),
                                on: false,
                            };
                            let mut run = Calls {
                                calls: per,
                                latencies: &mut lat,
                                out_of_time: &|| false,
                                progress: &mut quiet,
                            };
                            let r = tcp(tcp_addr, &client, 1, &mut run).await;
                            r.map(|()| lat).map_err(|e| e.to_string())
                        }));
                    }
                    let mut all = Vec::new();
                    for t in tasks {
                        all.push(t.await);
                    }
                    all
                })
                .await;
            for r in results {
                latencies.extend(r.map_err(|e| e.to_string())??);
            }
        }
        Shape::UdpSequential => {
            let mut run = Calls {
                calls: o.calls,
                latencies: &mut latencies,
                out_of_time: &out_of_time,
                progress,
            };
            let udp_addr = if raw { s.echo_udp } else { s.at_udp };
            if let Caller::Raw = client {
                let local: SocketAddr = if udp_addr.is_ipv4() {
                    ([127, 0, 0, 1], 0).into()
                } else {
                    (std::net::Ipv6Addr::LOCALHOST, 0).into()
                };
                let socket = UdpSocket::bind(local).await?;
                socket.connect(udp_addr).await?;
                let (mut buf, mut request) = ([0u8; 512], frame.clone());
                let mut seq = 0u32;
                run.sequential(async || -> Result<(), BoxError> {
                    // A new seq each call: a repeated one would be answered
                    // from AT's reply cache (a retransmission).
                    seq = seq.wrapping_add(1);
                    let n = encode_request(seq, &mut request);
                    socket.send(&request[..n]).await?;
                    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
                        .await??;
                    check_reply(&buf[..n])
                })
                .await?;
            } else {
                let config = UdpConfig {
                    key: o.key.clone(),
                    ..UdpConfig::default()
                };
                let client = UdpClient::connect(udp_addr, config).await?;
                run.sequential(async || -> Result<(), BoxError> {
                    client.call("add", &ARGS).await?;
                    Ok(())
                })
                .await?;
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Run {
        warm: 0,
        calls: latencies.len() as u64,
        elapsed,
        latencies,
    })
}

type BoxError = Box<dyn std::error::Error>;

/// The calls one client makes and what it records of them.
struct Calls<'a> {
    /// How many calls to make (fewer if time runs out first).
    calls: u64,
    /// One latency per answered call, in nanoseconds.
    latencies: &'a mut Vec<u64>,
    out_of_time: &'a dyn Fn() -> bool,
    progress: &'a mut Progress,
}

impl Calls<'_> {
    /// Makes the calls one at a time with `call`, timing each.
    async fn sequential(
        &mut self,
        mut call: impl AsyncFnMut() -> Result<(), BoxError>,
    ) -> Result<(), BoxError> {
        for i in 0..self.calls {
            if (self.out_of_time)() {
                break;
            }
            let t = Instant::now();
            call().await?;
            self.latencies.push(t.elapsed().as_nanos() as u64);
            self.progress.tick(i + 1, self.calls);
        }
        Ok(())
    }

    /// Keeps up to `depth` requests in flight on `link` until all are
    /// answered (or time is out and the ones in flight are answered).
    async fn pipelined(&mut self, link: &mut impl TcpLink, depth: usize) -> Result<(), BoxError> {
        let mut sent_at = std::collections::VecDeque::with_capacity(depth);
        let (mut sent, mut done) = (0u64, 0u64);
        while done < self.calls {
            while sent < self.calls
                && sent_at.len() < depth
                && !((self.out_of_time)() && sent > done)
            {
                link.send_request().await?;
                sent_at.push_back(Instant::now());
                sent += 1;
            }
            link.receive_reply().await?;
            if let Some(t) = sent_at.pop_front() {
                self.latencies.push(t.elapsed().as_nanos() as u64);
            }
            done += 1;
            self.progress.tick(done, self.calls);
            if (self.out_of_time)() && sent == done {
                break;
            }
        }
        Ok(())
    }
}

/// How a scenario calls: AT's [`Client`] (sealing with the key, if any), or
/// raw frames (for the echo baselines, and for AT with `--raw`).
#[derive(Clone)]
enum Caller {
    At(Option<AuthKey>),
    Raw,
}

/// Connects to `addr` and makes `run`'s calls with `depth` in flight, as
/// `caller` says: every caller goes through the same loop, so AT and raw
/// have the same shape.
async fn tcp(
    addr: SocketAddr,
    caller: &Caller,
    depth: usize,
    run: &mut Calls<'_>,
) -> Result<(), BoxError> {
    match caller {
        Caller::At(key) => {
            let mut client = Client::connect(addr, Duration::from_secs(10)).await?;
            if let Some(key) = key {
                client = client.with_key(key.clone());
            }
            run.pipelined(&mut client, depth).await
        }
        Caller::Raw => {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut raw = RawTcp {
                stream,
                seq: 0,
                request: request_frame(),
                buf: vec![0u8; 64 * 1024],
                start: 0,
                end: 0,
            };
            run.pipelined(&mut raw, depth).await
        }
    }
}

/// A benchmarked TCP client: sends requests and reads replies separately, so
/// several can be in flight.
trait TcpLink {
    /// Writes one `add(10, 20)` request without waiting for its reply.
    async fn send_request(&mut self) -> Result<(), BoxError>;
    /// Reads the next reply; an error reply is an error.
    async fn receive_reply(&mut self) -> Result<(), BoxError>;
}

impl TcpLink for Client {
    async fn send_request(&mut self) -> Result<(), BoxError> {
        self.send("add", &ARGS).await?;
        Ok(())
    }

    async fn receive_reply(&mut self) -> Result<(), BoxError> {
        let (_, result) = self.receive().await?;
        result?;
        Ok(())
    }
}

/// The raw caller: writes the request frame (a new seq each time) and reads
/// replies by their header, as many as each read brings, with no AT code
/// on the way but the frame check.
struct RawTcp {
    stream: TcpStream,
    seq: u32,
    request: Vec<u8>,
    /// Bytes read, `buf[start..end]` not yet taken as replies.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl TcpLink for RawTcp {
    async fn send_request(&mut self) -> Result<(), BoxError> {
        self.seq = self.seq.wrapping_add(1);
        let n = encode_request(self.seq, &mut self.request);
        self.stream.write_all(&self.request[..n]).await?;
        Ok(())
    }

    async fn receive_reply(&mut self) -> Result<(), BoxError> {
        loop {
            let held = &self.buf[self.start..self.end];
            if let Some(head) = held.first_chunk::<HEADER_LEN>() {
                let whole = HEADER_LEN + Header::from_bytes(head).length as usize;
                if whole > self.buf.len() {
                    return Err("a reply larger than the bench's buffer".into());
                }
                if held.len() >= whole {
                    check_reply(&held[..whole])?;
                    self.start += whole;
                    return Ok(());
                }
            }
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.buf.len() - self.end < self.buf.len() / 2 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.end += n;
        }
    }
}

/// Largest echoed frame body, as at-host's default limit.
const ECHO_MAX_BODY: usize = at_core::DEFAULT_MAX_BODY as usize;

/// Most connections the echo serves at once (one thread each).
const ECHO_MAX_CONNECTIONS: usize = 1024;

/// `at-host bench echo-server ADDR`: the plainest server there is, a
/// baseline for `at-host serve`. Blocking `std::net`, one thread per TCP
/// connection: `read_exact` of the 16-byte header, then of the body its
/// length gives, then one `write_all` of the same bytes. UDP on the same
/// port, one thread: each datagram is sent back as it came. Prints the
/// `listening on` lines `serve` prints; serves until killed.
pub fn echo_server(addr: SocketAddr) -> std::io::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind(addr)?;
    let tcp_addr = listener.local_addr()?;
    let udp = std::net::UdpSocket::bind(tcp_addr)?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on tcp://{tcp_addr}")?;
        writeln!(stdout, "listening on udp://{}", udp.local_addr()?)?;
        stdout.flush()?;
    }
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            match udp.recv_from(&mut buf) {
                Ok((n, peer)) => {
                    let _ = udp.send_to(&buf[..n], peer);
                }
                Err(e) => eprintln!("echo-server: udp: {e}"),
            }
        }
    });
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if open.fetch_add(1, Ordering::Relaxed) >= ECHO_MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let open = Arc::clone(&open);
        std::thread::spawn(move || {
            echo_connection(stream);
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    Ok(())
}

/// Echoes whole frames on one connection until it closes (or sends a
/// length over [`ECHO_MAX_BODY`]).
fn echo_connection(mut stream: std::net::TcpStream) {
    use std::io::Read;
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; HEADER_LEN + ECHO_MAX_BODY];
    loop {
        let Some(head) = buf.first_chunk_mut::<HEADER_LEN>() else {
            return;
        };
        if stream.read_exact(head).is_err() {
            return;
        }
        let len = Header::from_bytes(head).length as usize;
        if len > ECHO_MAX_BODY {
            return;
        }
        let whole = HEADER_LEN + len;
        if stream.read_exact(&mut buf[HEADER_LEN..whole]).is_err()
            || stream.write_all(&buf[..whole]).is_err()
        {
            return;
        }
    }
}
