//! `at-host bench`: calls/s and latency of AT against a raw-socket echo of
//! frames of the same size, in the same run and the same shape.
//!
//! The client runs on one thread (a current-thread runtime); an in-process
//! server (AT or echo) runs on a runtime of its own with one worker thread,
//! so the two compete for the machine's cores the same way in every
//! scenario. Pin them with `taskset` for steadier figures (docs/BENCHMARKS.md).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use at_core::Value as V;
use at_host::{Client, Server, UdpClient, UdpConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// What to measure.
pub struct Options {
    pub server: Option<SocketAddr>,
    pub udp_only: bool,
    pub connections: usize,
    pub depth: usize,
    pub calls: u64,
    pub duration: Option<Duration>,
    pub baseline: bool,
    pub json: bool,
}

/// One measured run.
struct Run {
    calls: u64,
    elapsed: Duration,
    /// Per-call latencies in nanoseconds, sorted.
    latencies: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[i] as f64 / 1000.0
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    TcpSequential,
    TcpPipelined,
    TcpConnections,
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
const ARGS: [V<'static>; 2] = [V::Int(10), V::Int(20)];

fn request_frame() -> Vec<u8> {
    let body = br#"{"func": "add", "args": [10, 20]}"#;
    let mut out = vec![0u8; 16 + body.len()];
    let _ = at_core::encode_frame(at_core::Kind::Request, 1, body, &mut out);
    out
}

/// Servers on their own runtime and thread.
struct Servers {
    at_tcp: SocketAddr,
    at_udp: SocketAddr,
    echo_tcp: SocketAddr,
    echo_udp: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn start_servers(external: Option<SocketAddr>) -> std::io::Result<Servers> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (at_tcp, at_udp) = match external {
        Some(addr) => (addr, addr),
        None => runtime.block_on(async {
            let server = Server::builder()
                .calculator()
                .tcp(loopback)
                .udp(loopback)
                .start()
                .await?;
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
    let servers = match start_servers(o.server) {
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
    let shapes: &[Shape] = if o.udp_only {
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
            "{{\"calls\": {}, \"seconds\": {:.6}, \"calls_per_sec\": {:.1}, \"p50_us\": {:.2}, \"p90_us\": {:.2}, \"p99_us\": {:.2}, \"max_us\": {:.2}}}",
            r.calls,
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
        ..*o
    };
    let _ = run_shape(
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
    run
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
    let (tcp_addr, raw_frame) = if raw {
        (s.echo_tcp, Some(&frame[..]))
    } else {
        (s.at_tcp, None)
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
            tcp(tcp_addr, raw_frame, depth, &mut run).await?;
        }
        Shape::TcpConnections => {
            let per = (o.calls / o.connections.max(1) as u64).max(1);
            let local = tokio::task::LocalSet::new();
            let results = local
                .run_until(async {
                    let mut tasks = Vec::new();
                    for _ in 0..o.connections.max(1) {
                        let raw_frame = raw_frame.map(<[u8]>::to_vec);
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
                            let r = tcp(tcp_addr, raw_frame.as_deref(), 1, &mut run).await;
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
            if raw {
                let socket = UdpSocket::bind(("127.0.0.1", 0)).await?;
                socket.connect(s.echo_udp).await?;
                let mut buf = [0u8; 512];
                run.sequential(async || -> Result<(), BoxError> {
                    socket.send(&frame).await?;
                    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
                        .await??;
                    if n != frame.len() {
                        return Err("short echo".into());
                    }
                    Ok(())
                })
                .await?;
            } else {
                let client = UdpClient::connect(s.at_udp, UdpConfig::default()).await?;
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

/// Connects to `addr`, AT's server, or the raw echo when `raw_frame` is
/// given (the frame it then sends), and makes `run`'s calls with `depth` in
/// flight: AT and raw go through the same loop, so they have the same shape.
async fn tcp(
    addr: SocketAddr,
    raw_frame: Option<&[u8]>,
    depth: usize,
    run: &mut Calls<'_>,
) -> Result<(), BoxError> {
    match raw_frame {
        None => {
            let mut client = Client::connect(addr, Duration::from_secs(10)).await?;
            run.pipelined(&mut client, depth).await
        }
        Some(frame) => {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut echo = RawTcp {
                stream,
                frame,
                reply: vec![0u8; frame.len()],
            };
            run.pipelined(&mut echo, depth).await
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

/// The baseline: writes the request frame and reads back as many bytes,
/// with no AT processing on either side.
struct RawTcp<'a> {
    stream: TcpStream,
    frame: &'a [u8],
    reply: Vec<u8>,
}

impl TcpLink for RawTcp<'_> {
    async fn send_request(&mut self) -> Result<(), BoxError> {
        self.stream.write_all(self.frame).await?;
        Ok(())
    }

    async fn receive_reply(&mut self) -> Result<(), BoxError> {
        self.stream.read_exact(&mut self.reply).await?;
        Ok(())
    }
}
