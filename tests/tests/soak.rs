//! Resource bounds under abuse: 1,000 idle connections, and an adversarial
//! soak with well-behaved and hostile clients side by side.
//!
//! The soak runs `AT_SOAK_SECS` seconds (default 8; docs/ROBUSTNESS.md
//! reports a 60 s run: `AT_SOAK_SECS=60 cargo test --release -p at-tests
//! --test soak -- --nocapture`).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use at_core::{HEADER_LEN, Header, Kind, Value as V};
use at_host::{Client, UdpClient, UdpConfig, Value};
use at_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Resident memory (KiB) and open file descriptors of a process.
fn usage(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// Makes sure this process may open `n` descriptors (raising the soft
/// limit with `prlimit` if needed); false if it cannot.
fn ensure_fd_limit(n: u64) -> bool {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: Option<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    if soft.is_some_and(|s| s >= n) {
        return true;
    }
    let pid = std::process::id().to_string();
    Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={n}:{n}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// `at-host serve` in its own process, with room for many descriptors.
fn serve(extra: &[&str]) -> (KillOnDrop, SocketAddr, Option<SocketAddr>) {
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=8192:8192")
        .arg(at_host_bin())
        .args(["-q", "serve", "--tcp", "127.0.0.1:0"]);
    cmd.args(extra);
    let with_udp = !extra.contains(&"none");
    let (guard, addrs) = spawn_server(cmd, if with_udp { 2 } else { 1 });
    let tcp = addrs[0].trim_start_matches("tcp://").parse().unwrap();
    let udp = addrs
        .get(1)
        .map(|a| a.trim_start_matches("udp://").parse().unwrap());
    (guard, tcp, udp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_holds_1000_idle_connections_and_still_answers_a_new_client() {
    if !std::path::Path::new("/proc/self/fd").exists() {
        return skip("needs /proc to count descriptors");
    }
    if !ensure_fd_limit(4096) {
        return skip("cannot raise this process's descriptor limit to 4096");
    }
    let (server, addr, _) = serve(&["--udp", "none"]);
    let pid = server.0.id();
    let (_, fds_before) = usage(pid).expect("server usage");
    // From 20 loopback addresses (127.0.1.1 to 127.0.1.20, all of
    // 127.0.0.0/8 is loopback on Linux), 50 each: within the default limit
    // of 64 connections per address.
    let mut idle = Vec::with_capacity(1000);
    for i in 0..1000u16 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let from = std::net::Ipv4Addr::new(127, 0, 1, (1 + i % 20) as u8);
        socket
            .bind((from, 0).into())
            .expect("bind a loopback source address");
        idle.push(socket.connect(addr).await.expect("connect an idle client"));
    }
    // Every one of them is accepted and held (each is a descriptor).
    let mut held = 0;
    for _ in 0..200 {
        held = usage(pid)
            .map(|u| u.1)
            .unwrap_or(0)
            .saturating_sub(fds_before);
        if held >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(held >= 1000, "the server holds {held} of 1000 connections");
    let (rss_kib, _) = usage(pid).unwrap();
    // A new client is still answered.
    let client = Client::connect(addr, PATIENCE).await.unwrap();
    assert_eq!(
        client.call("add", &[V::Int(10), V::Int(20)]).await.unwrap(),
        Value::Int(30)
    );
    eprintln!("1000 idle connections held: server RSS {rss_kib} KiB, {held} more descriptors");
    // And they are all released when the clients go.
    drop(idle);
    drop(client);
    let mut fds_after = usize::MAX;
    for _ in 0..200 {
        fds_after = usage(pid).unwrap().1;
        if fds_after <= fds_before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        fds_after <= fds_before + 2,
        "descriptors before {fds_before}, after {fds_after}"
    );
}

/// Counters the soak reports.
#[derive(Default)]
struct Tally {
    good_calls: AtomicU64,
    wrong: AtomicU64,
    failed: AtomicU64,
    busy: AtomicU64,
    hostile_actions: AtomicU64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

async fn good_tcp(addr: SocketAddr, seed: u64, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut rng = Rng(seed);
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        let c = match client.as_mut() {
            Some(c) => c,
            None => match Client::connect(addr, Duration::from_secs(5)).await {
                Ok(c) => client.insert(c),
                Err(_) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        let (a, b) = (
            (rng.next() % 1_000_000) as i64,
            (rng.next() % 1_000_000) as i64 - 500_000,
        );
        match c.call("add", &[V::Int(a), V::Int(b)]).await {
            Ok(v) if v == Value::Int(a + b) => tally.good_calls.fetch_add(1, Ordering::Relaxed),
            Ok(_) => tally.wrong.fetch_add(1, Ordering::Relaxed),
            Err(e) if e.code() == Some(at_core::ErrorCode::Busy) => {
                client = None;
                tally.busy.fetch_add(1, Ordering::Relaxed)
            }
            Err(e) => {
                eprintln!("well-behaved TCP call failed: {e}");
                client = None;
                tally.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

async fn good_udp(addr: SocketAddr, seed: u64, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut rng = Rng(seed);
    let Ok(c) = UdpClient::connect(addr, UdpConfig::default()).await else {
        tally.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        let (a, b) = (
            (rng.next() % 1000) as i64 + 1,
            (rng.next() % 1000) as i64 + 1,
        );
        match c.call("mul", &[V::Int(a), V::Int(b)]).await {
            Ok(v) if v == Value::Int(a * b) => tally.good_calls.fetch_add(1, Ordering::Relaxed),
            Ok(_) => tally.wrong.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                eprintln!("well-behaved UDP call failed: {e}");
                tally.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

async fn drain(stream: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
}

async fn hostile(
    kind: usize,
    tcp: SocketAddr,
    udp: SocketAddr,
    seed: u64,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut rng = Rng(seed);
    while !stop.load(Ordering::Relaxed) {
        tally.hostile_actions.fetch_add(1, Ordering::Relaxed);
        match kind {
            // Random bytes.
            0 => {
                if let Ok(mut s) = TcpStream::connect(tcp).await {
                    let n = 16 + (rng.next() % 4096) as usize;
                    let _ = s.write_all(&rng.bytes(n)).await;
                    drain(&mut s, Duration::from_secs(2)).await;
                }
            }
            // Wrong magic: another protocol.
            1 => {
                if let Ok(mut s) = TcpStream::connect(tcp).await {
                    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: at\r\n\r\n").await;
                    drain(&mut s, Duration::from_secs(2)).await;
                }
            }
            // Oversize lengths.
            2 => {
                if let Ok(mut s) = TcpStream::connect(tcp).await {
                    let h = Header {
                        length: 0x4000_0000 + (rng.next() % 1000) as u32,
                        ..Header::new(Kind::Request, 1, b"")
                    };
                    let _ = s.write_all(&h.to_bytes()).await;
                    let _ = s.write_all(&rng.bytes(8192)).await;
                    drain(&mut s, Duration::from_secs(2)).await;
                }
            }
            // Half a frame, then silence until the server gives up on us.
            3 => {
                if let Ok(mut s) = TcpStream::connect(tcp).await {
                    let f = calc(1, "add", "1", "2");
                    let _ = s.write_all(&f[..HEADER_LEN + 3]).await;
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf))
                            .await
                        {
                            Ok(Ok(0)) | Ok(Err(_)) => break,
                            _ => {}
                        }
                    }
                }
            }
            // Connect and reset at once.
            4 => {
                if let Ok(s) = TcpStream::connect(tcp).await {
                    #[allow(deprecated)]
                    let _ = s.set_linger(Some(Duration::ZERO));
                    drop(s);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // UDP garbage, in bursts (about 5,000 datagrams a second per
            // task; three tasks flood).
            5 => {
                if let Ok(s) = UdpSocket::bind("127.0.0.1:0").await {
                    for _ in 0..50 {
                        let n = (rng.next() % 1400) as usize;
                        let mut d = rng.bytes(n);
                        if n >= 2 && rng.next().is_multiple_of(2) {
                            d[..2].copy_from_slice(b"AT");
                        }
                        let _ = s.send_to(&d, udp).await;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            // Slow writer: a valid frame a byte every 5 ms.
            _ => {
                if let Ok(mut s) = TcpStream::connect(tcp).await {
                    let f = calc(9, "sub", "50", "8");
                    for b in f {
                        if stop.load(Ordering::Relaxed) || s.write_all(&[b]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let mut head = [0u8; HEADER_LEN];
                    if let Ok(Ok(_)) =
                        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await
                    {
                        let h = Header::from_bytes(&head);
                        let mut body = vec![0u8; h.length.min(4096) as usize];
                        if s.read_exact(&mut body).await.is_ok()
                            && body != br#"{"status": "success", "result": 42}"#
                        {
                            tally.wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_soak_keeps_answers_right_and_resources_bounded() {
    if !std::path::Path::new("/proc/self/status").exists() {
        return skip("needs /proc to read memory and descriptors");
    }
    let seconds: u64 = std::env::var("AT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let (server, tcp, udp) = serve(&["--udp", "127.0.0.1:0"]);
    let udp = udp.expect("udp address");
    let pid = server.0.id();
    let start = usage(pid).expect("server usage");
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20u64 {
        let (stop, tally) = (stop.clone(), tally.clone());
        if i < 10 {
            tasks.spawn(good_tcp(tcp, 0x9E37 + i, stop, tally));
        } else {
            tasks.spawn(good_udp(udp, 0x7F4A + i, stop, tally));
        }
    }
    for i in 0..20usize {
        tasks.spawn(hostile(
            i % 7,
            tcp,
            udp,
            0xC0FFEE + i as u64,
            stop.clone(),
            tally.clone(),
        ));
    }
    let began = Instant::now();
    let mut samples = Vec::new();
    while began.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(u) = usage(pid) {
            samples.push(u);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let drained = tokio::time::timeout(Duration::from_secs(15), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    assert!(drained.is_ok(), "clients did not stop within 15 s");
    // Let the server close what the clients left.
    let mut end = usage(pid).expect("server usage");
    for _ in 0..100 {
        if end.1 <= start.1 + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        end = usage(pid).expect("server usage");
    }
    let half = samples.len() / 2;
    let max_rss = |s: &[(u64, usize)]| s.iter().map(|u| u.0).max().unwrap_or(0);
    let (first_half, second_half) = (max_rss(&samples[..half]), max_rss(&samples[half..]));
    let max_fds = samples.iter().map(|u| u.1).max().unwrap_or(0);
    let t = &tally;
    eprintln!(
        "soak {seconds} s: {} well-behaved calls, {} wrong, {} failed, {} busy; {} hostile actions; \
         server RSS {} KiB at start, max {} KiB (first half) / {} KiB (second half), {} KiB at end; \
         descriptors {} at start, max {}, {} at end",
        t.good_calls.load(Ordering::Relaxed),
        t.wrong.load(Ordering::Relaxed),
        t.failed.load(Ordering::Relaxed),
        t.busy.load(Ordering::Relaxed),
        t.hostile_actions.load(Ordering::Relaxed),
        start.0,
        first_half,
        second_half,
        end.0,
        start.1,
        max_fds,
        end.1
    );
    assert_eq!(t.wrong.load(Ordering::Relaxed), 0, "wrong answers");
    assert_eq!(
        t.failed.load(Ordering::Relaxed),
        0,
        "failed well-behaved calls"
    );
    assert!(
        t.good_calls.load(Ordering::Relaxed) > 100 * seconds,
        "too few well-behaved calls went through"
    );
    // Bounded: the server gives back every descriptor, and memory stops
    // growing once the load is steady.
    assert!(
        end.1 <= start.1 + 2,
        "descriptors: {} at start, {} at end",
        start.1,
        end.1
    );
    assert!(
        second_half <= first_half + first_half / 4 + 4096,
        "RSS grew: {first_half} KiB -> {second_half} KiB"
    );
    // Still serving.
    let c = Client::connect(tcp, PATIENCE).await.unwrap();
    assert_eq!(
        c.call("add", &[V::Int(1), V::Int(1)]).await.unwrap(),
        Value::Int(2)
    );
}
