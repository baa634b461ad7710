//! at-host over TCP, on real loopback sockets with OS-chosen ports: the
//! calculator, every error code, sticky and split frames, pipelining, bad
//! peers, limits and timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use at_core::{ErrorCode, HEADER_LEN, Header, Kind, Value as V};
use at_host::{Client, Error, HandlerError, ProtocolError, Server, ServerConfig, Value};
use at_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const LOOPBACK: &str = "127.0.0.1:0";

async fn start(config: ServerConfig) -> (Server, SocketAddr) {
    let server = Server::builder()
        .calculator()
        .untyped("echo", |args| {
            Ok(args.first().cloned().unwrap_or(Value::Null))
        })
        .untyped("panic", |_| panic!("a function that panics"))
        .function("huge", || "x".repeat(100_000))
        .function("nan", || f64::NAN)
        .function("refuse", || -> Result<(), HandlerError> {
            Err(HandlerError::new(ErrorCode::Busy, "come back later"))
        })
        .config(config)
        .tcp(LOOPBACK.parse().unwrap())
        .start()
        .await
        .expect("server starts");
    let addr = server.tcp_addr().expect("tcp address");
    (server, addr)
}

async fn calculator() -> (Server, SocketAddr) {
    start(ServerConfig::default()).await
}

async fn client(addr: SocketAddr) -> Client {
    Client::connect(addr, PATIENCE)
        .await
        .expect("client connects")
}

fn code(e: &Error) -> Option<ErrorCode> {
    e.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calculator_functions_and_their_errors() {
    let (server, addr) = calculator().await;
    let mut c = client(addr).await;
    check_calculator_tcp(&mut c).await;
    let e = c.call("div", &[V::Int(1), V::Int(0)]).await.unwrap_err();
    assert_eq!(e.to_string(), "error: division_by_zero: division by zero");
    // The connection is still good after all those errors.
    assert_eq!(
        c.call("add", &[V::Int(1), V::Int(1)]).await.unwrap(),
        Value::Int(2)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_functions_panics_and_replies_that_do_not_fit() {
    let (server, addr) = calculator().await;
    let c = client(addr).await;
    let echoed = c
        .call("echo", &[V::str("héllo \"wörld\" 😀\n")])
        .await
        .unwrap();
    assert_eq!(echoed, Value::Str("héllo \"wörld\" 😀\n".into()));
    let e = c.call::<V>("panic", &[]).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Internal), "{e}");
    let e = c.call::<V>("huge", &[]).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Internal), "{e}");
    let e = c.call::<V>("nan", &[]).await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Overflow), "{e}");
    let e = c.call::<V>("refuse", &[]).await.unwrap_err();
    assert!(
        matches!(&e, Error::Remote { code, message } if code == "busy" && message == "come back later"),
        "{e}"
    );
    // Still serving after a panic.
    assert_eq!(
        c.call("mul", &[V::Int(3), V::Int(3)]).await.unwrap(),
        Value::Int(9)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_requests_in_one_write_get_two_hundred_replies_in_order() {
    let (server, addr) = calculator().await;
    let mut s = connect(addr).await;
    let wire: Vec<u8> = (1..=200u32)
        .flat_map(|i| calc(i, "add", &i.to_string(), "1000"))
        .collect();
    write(&mut s, &wire).await;
    for i in 1..=200u32 {
        let reply = read_reply(&mut s).await;
        assert_eq!(reply.header.seq, i);
        assert_eq!(reply.outcome(), (i + 1000).to_string());
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_written_a_byte_at_a_time() {
    let (server, addr) = calculator().await;
    let mut s = connect(addr).await;
    for byte in calc(7, "mul", "6", "7") {
        s.write_all(&[byte]).await.unwrap();
        s.flush().await.unwrap();
    }
    let reply = read_reply(&mut s).await;
    assert_eq!((reply.header.seq, reply.outcome()), (7, "42".to_owned()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_with_unordered_seqs_are_answered_in_request_order() {
    let (server, addr) = calculator().await;
    let mut s = connect(addr).await;
    let seqs = [500u32, 3, 77, 1, 4_000_000_000];
    for (i, seq) in seqs.iter().enumerate() {
        write(&mut s, &calc(*seq, "add", &i.to_string(), "0")).await;
    }
    for (i, seq) in seqs.iter().enumerate() {
        let reply = read_reply(&mut s).await;
        assert_eq!((reply.header.seq, reply.outcome()), (*seq, i.to_string()));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_pipelines_and_matches_replies_by_seq() {
    let (server, addr) = calculator().await;
    let c = client(addr).await;
    let mut seqs = Vec::new();
    for i in 0..64i64 {
        seqs.push(c.send("mul", &[V::Int(i), V::Int(2)]).await.unwrap());
    }
    assert_eq!(c.in_flight(), 64);
    // A call in the middle of the pipeline waits for its own reply.
    assert_eq!(
        c.call("sub", &[V::Int(1), V::Int(2)]).await.unwrap(),
        Value::Int(-1)
    );
    let mut got = std::collections::HashMap::new();
    while c.in_flight() > 0 {
        let (seq, result) = c.receive().await.unwrap();
        got.insert(seq, result.unwrap());
    }
    for (i, seq) in seqs.iter().enumerate() {
        assert_eq!(got[seq], Value::Int(2 * i as i64));
    }
    // Seqs increase per connection.
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_length_is_answered_from_the_header_and_the_connection_closed() {
    let (server, addr) = start(ServerConfig {
        max_frame: 1024,
        ..Default::default()
    })
    .await;
    let mut s = connect(addr).await;
    let header = Header {
        length: 1025,
        ..Header::new(Kind::Request, 9, b"")
    };
    // Only the header: the server must answer without waiting for a body.
    write(&mut s, &header.to_bytes()).await;
    let reply = read_reply(&mut s).await;
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (9, "error frame_too_large".to_owned())
    );
    assert!(read_until_closed(&mut s).await.is_empty());
    // A 4 GiB length is no different.
    let mut s = connect(addr).await;
    write(
        &mut s,
        &Header {
            length: u32::MAX,
            ..header
        }
        .to_bytes(),
    )
    .await;
    assert_eq!(read_reply(&mut s).await.outcome(), "error frame_too_large");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_exactly_the_limit_is_served() {
    let (server, addr) = start(ServerConfig {
        max_frame: 1024,
        ..Default::default()
    })
    .await;
    let mut s = connect(addr).await;
    let prefix = r#"{"func": "add", "args": [1, 2], "pad": ""#;
    let body = format!("{prefix}{}\"}}", "x".repeat(1024 - prefix.len() - 2));
    assert_eq!(body.len(), 1024);
    write(&mut s, &request(1, &body)).await;
    assert_eq!(read_reply(&mut s).await.outcome(), "3");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_magic_gets_bad_frame_with_seq_zero_and_a_close() {
    let (server, addr) = calculator().await;
    let mut s = connect(addr).await;
    write(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let reply = read_reply(&mut s).await;
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (0, "error bad_frame".to_owned())
    );
    assert!(read_until_closed(&mut s).await.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_crc_gets_checksum_mismatch_and_the_connection_stays_usable() {
    let (server, addr) = calculator().await;
    let mut s = connect(addr).await;
    let mut bad = calc(5, "add", "1", "2");
    bad[HEADER_LEN + 3] ^= 0x20;
    bad.extend(calc(6, "add", "2", "2"));
    write(&mut s, &bad).await;
    let first = read_reply(&mut s).await;
    assert_eq!(
        (first.header.seq, first.outcome()),
        (5, "error checksum_mismatch".to_owned())
    );
    let second = read_reply(&mut s).await;
    assert_eq!((second.header.seq, second.outcome()), (6, "4".to_owned()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_bad_request_and_bad_flags_bad_frame() {
    let (server, addr) = calculator().await;
    let mut s = connect(addr).await;
    for (seq, body) in [
        (1, "add(1, 2)"),
        (2, "{\"args\": [1]}"),
        (3, "[1, 2]"),
        (4, ""),
    ] {
        write(&mut s, &request(seq, body)).await;
        let reply = read_reply(&mut s).await;
        assert_eq!(
            (reply.header.seq, reply.outcome()),
            (seq, "error bad_request".to_owned()),
            "{body}"
        );
    }
    let mut no_kind = calc(8, "add", "1", "2");
    no_kind[3] = 0;
    write(&mut s, &no_kind).await;
    assert_eq!(read_reply(&mut s).await.outcome(), "error bad_frame");
    // A reply frame sent to a server gets no answer; the next request does.
    write(
        &mut s,
        &frame(Kind::Response, 9, br#"{"status": "success", "result": 1}"#),
    )
    .await;
    write(&mut s, &calc(10, "add", "5", "5")).await;
    let reply = read_reply(&mut s).await;
    assert_eq!((reply.header.seq, reply.outcome()), (10, "10".to_owned()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_twenty_calls_each_at_once() {
    let (server, addr) = calculator().await;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..50i64 {
        tasks.spawn(async move {
            let client = client(addr).await;
            for i in 0..20i64 {
                let got = client
                    .call("add", &[V::Int(c * 1000), V::Int(i)])
                    .await
                    .unwrap();
                assert_eq!(got, Value::Int(c * 1000 + i));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("client task");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_half_frame_does_not_delay_another_client_and_is_closed_later() {
    let config = ServerConfig {
        frame_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (server, addr) = start(config).await;
    let mut stalled = connect(addr).await;
    let half = calc(1, "add", "1", "2");
    write(&mut stalled, &half[..20]).await;
    // Another client is answered while the first one is stuck mid-frame.
    let other = client(addr).await;
    let answered = tokio::time::timeout(
        Duration::from_secs(2),
        other.call("add", &[V::Int(2), V::Int(2)]),
    )
    .await;
    assert_eq!(
        answered
            .expect("answered while another client stalls")
            .unwrap(),
        Value::Int(4)
    );
    // The stalled connection is closed by the frame timeout.
    assert!(read_until_closed(&mut stalled).await.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (server, addr) = start(config).await;
    let mut s = connect(addr).await;
    write(&mut s, &calc(1, "add", "1", "2")).await;
    assert_eq!(read_reply(&mut s).await.outcome(), "3");
    assert!(read_until_closed(&mut s).await.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_new_clients_get_busy() {
    let (server, addr) = start(ServerConfig {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    let a = client(addr).await;
    let b = client(addr).await;
    // Both are being served (so both hold a slot).
    a.call("add", &[V::Int(1), V::Int(1)]).await.unwrap();
    b.call("add", &[V::Int(1), V::Int(1)]).await.unwrap();
    let mut third = connect(addr).await;
    let reply = read_reply(&mut third).await;
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (0, "error busy".to_owned())
    );
    read_until_closed(&mut third).await;
    // The client library reports busy as a remote error.
    let fourth = client(addr).await;
    let e = fourth
        .call("add", &[V::Int(1), V::Int(1)])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Busy), "{e}");
    // A slot freed is a slot available.
    drop(a);
    let mut fifth = None;
    for _ in 0..50 {
        let c = client(addr).await;
        if c.call("add", &[V::Int(2), V::Int(2)]).await.is_ok() {
            fifth = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fifth.is_some(), "a freed slot was never reused");
    server.shutdown().await;
}

/// A TCP connection to `addr` from `from` (any of 127.0.0.0/8 is loopback
/// on Linux, so 127.0.0.2 is another address of this host).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .expect("bind a loopback source address");
    let stream = tokio::time::timeout(PATIENCE, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
}

/// One `add` call over a raw connection; its outcome ("3", "error busy").
async fn add_once(s: &mut TcpStream, seq: u32) -> String {
    write(s, &calc(seq, "add", "1", "2")).await;
    read_reply(s).await.outcome()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_per_address_that_address_gets_busy_and_others_are_served() {
    let (server, addr) = start(ServerConfig {
        max_per_address: 2,
        ..Default::default()
    })
    .await;
    let mut a = connect_from("127.0.0.1", addr).await;
    let mut b = connect_from("127.0.0.1", addr).await;
    assert_eq!(add_once(&mut a, 1).await, "3");
    assert_eq!(add_once(&mut b, 1).await, "3");
    // A third from the same address is refused exactly like over the
    // global limit: `busy` with seq 0, then closed.
    let mut third = connect_from("127.0.0.1", addr).await;
    let reply = read_reply(&mut third).await;
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (0, "error busy".to_owned())
    );
    read_until_closed(&mut third).await;
    // Another address is served, and the first two still are.
    let mut other = connect_from("127.0.0.2", addr).await;
    assert_eq!(add_once(&mut other, 1).await, "3");
    assert_eq!(add_once(&mut a, 2).await, "3");
    // A slot given back is a slot for that address again.
    drop(b);
    let mut again = None;
    for _ in 0..50 {
        let mut c = connect_from("127.0.0.1", addr).await;
        if add_once(&mut c, 1).await == "3" {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a freed per-address slot was never reused");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_closes_the_longest_idle_connection_of_the_biggest_holder() {
    let (server, addr) = start(ServerConfig {
        max_connections: 3,
        ..Default::default()
    })
    .await;
    let mut a = connect_from("127.0.0.1", addr).await;
    let mut b = connect_from("127.0.0.1", addr).await;
    let mut c = connect_from("127.0.0.1", addr).await;
    assert_eq!(add_once(&mut a, 1).await, "3");
    assert_eq!(add_once(&mut b, 1).await, "3");
    assert_eq!(add_once(&mut c, 1).await, "3");
    // a is used again: b is now the longest idle.
    assert_eq!(add_once(&mut a, 2).await, "3");
    // Every slot is taken by 127.0.0.1; a client from 127.0.0.2 is served
    // at once, and b is closed for it.
    let started = std::time::Instant::now();
    let mut newcomer = connect_from("127.0.0.2", addr).await;
    assert_eq!(add_once(&mut newcomer, 1).await, "3");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the newcomer waited {took:?}"
    );
    assert!(read_until_closed(&mut b).await.is_empty());
    assert_eq!(add_once(&mut a, 3).await, "3");
    assert_eq!(add_once(&mut c, 2).await, "3");
    // Full again; 127.0.0.1 holds 2, no more than a newcomer from it would
    // have: it is refused, nobody is closed.
    let mut refused = connect_from("127.0.0.1", addr).await;
    assert_eq!(read_reply(&mut refused).await.outcome(), "error busy");
    read_until_closed(&mut refused).await;
    assert_eq!(add_once(&mut a, 4).await, "3");
    assert_eq!(add_once(&mut c, 3).await, "3");
    assert_eq!(add_once(&mut newcomer, 2).await, "3");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_reset_half_close_or_vanish_mid_reply_do_not_hurt_the_server() {
    let (server, addr) = calculator().await;
    // Reset right after sending many requests (the replies hit a dead socket).
    let wire: Vec<u8> = (0..500u32)
        .flat_map(|i| calc(i + 1, "add", "1", "1"))
        .collect();
    for _ in 0..20 {
        let mut s = connect(addr).await;
        let _ = s.write_all(&wire).await;
        #[allow(deprecated)]
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    }
    // Half-close: send a request, shut down writing, still get the reply.
    let mut s = connect(addr).await;
    write(&mut s, &calc(3, "mul", "3", "4")).await;
    s.shutdown().await.unwrap();
    assert_eq!(read_reply(&mut s).await.outcome(), "12");
    assert!(read_until_closed(&mut s).await.is_empty());
    // Connect and leave at once.
    for _ in 0..20 {
        drop(TcpStream::connect(addr).await.unwrap());
    }
    let c = client(addr).await;
    assert_eq!(
        c.call("add", &[V::Int(40), V::Int(2)]).await.unwrap(),
        Value::Int(42)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_calls_in_flight() {
    let started = Arc::new(tokio::sync::Notify::new());
    let signal = started.clone();
    let server = Server::builder()
        .function("slow", move || {
            signal.notify_one();
            std::thread::sleep(Duration::from_millis(300));
            "done".to_owned()
        })
        .tcp(LOOPBACK.parse().unwrap())
        .start()
        .await
        .unwrap();
    let addr = server.tcp_addr().unwrap();
    let c = client(addr).await;
    let call = tokio::spawn(async move { c.call::<V>("slow", &[]).await });
    started.notified().await;
    server.shutdown().await;
    assert_eq!(call.await.unwrap().unwrap(), Value::from("done"));
    // And it no longer accepts.
    assert!(TcpStream::connect(addr).await.is_err());
}

/// A fake server that answers each request with a reply of its choosing.
async fn fake_server(reply: impl Fn(Header) -> Vec<u8> + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = [0u8; HEADER_LEN];
        use tokio::io::AsyncReadExt;
        while s.read_exact(&mut head).await.is_ok() {
            let header = Header::from_bytes(&head);
            let mut body = vec![0u8; header.length as usize];
            if s.read_exact(&mut body).await.is_err() {
                return;
            }
            if s.write_all(&reply(header)).await.is_err() {
                return;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_the_wrong_seq_or_a_bad_crc_is_an_error_never_an_answer() {
    let ok = br#"{"status": "success", "result": 30}"#;
    let addr = fake_server(move |h| frame(Kind::Response, h.seq + 1, ok)).await;
    let c = client(addr).await;
    let e = c.call("add", &[V::Int(10), V::Int(20)]).await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::UnexpectedSeq(2))),
        "{e}"
    );
    // The connection is not trusted any more.
    assert!(matches!(
        c.call::<V>("add", &[]).await,
        Err(Error::Protocol(ProtocolError::Broken))
    ));

    let addr = fake_server(move |h| {
        let mut f = frame(Kind::Response, h.seq, ok);
        f[HEADER_LEN + 30] = b'9'; // "result": 90
        f
    })
    .await;
    let c = client(addr).await;
    let e = c.call("add", &[V::Int(10), V::Int(20)]).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Protocol(ProtocolError::Frame(
                at_core::FrameError::ChecksumMismatch { .. }
            ))
        ),
        "{e}"
    );

    let addr = fake_server(move |h| frame(Kind::Response, h.seq, b"{\"status\": \"maybe\"}")).await;
    let c = client(addr).await;
    let e = c.call("add", &[V::Int(10), V::Int(20)]).await.unwrap_err();
    assert!(matches!(e, Error::Protocol(ProtocolError::Body(_))), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_the_client_out() {
    let listener = TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let timeout = Duration::from_millis(300);
    let c = Client::connect(addr, timeout).await.unwrap();
    let started = std::time::Instant::now();
    let e = c.call("add", &[V::Int(1), V::Int(2)]).await.unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    assert!(started.elapsed() >= timeout);
    assert!(started.elapsed() < PATIENCE);
}

/// `at-host serve` on one core runs on a current-thread runtime: the I/O
/// driver, every connection and every async function on one thread. An
/// async function that sleeps still holds up only its own connection (and
/// on UDP, only its own call): the others are answered meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn on_one_thread_a_sleeping_async_function_does_not_delay_other_clients() {
    const SLEEP: Duration = Duration::from_millis(600);
    let server = Server::builder()
        .calculator()
        .async_function("sleepy", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
        .tcp(LOOPBACK.parse().unwrap())
        .udp(LOOPBACK.parse().unwrap())
        .start()
        .await
        .unwrap();
    let (tcp, udp) = (server.tcp_addr().unwrap(), server.udp_addr().unwrap());
    let sleeper = client(tcp).await;
    let quick = client(tcp).await;
    let udp_sleeper = at_host::UdpClient::connect(udp, Default::default())
        .await
        .unwrap();
    let udp_quick = at_host::UdpClient::connect(udp, Default::default())
        .await
        .unwrap();
    let ms = V::Int(SLEEP.as_millis() as i64);
    let slow = async {
        let started = std::time::Instant::now();
        let (tcp, udp) = tokio::join!(
            sleeper.call("sleepy", std::slice::from_ref(&ms)),
            udp_sleeper.call("sleepy", std::slice::from_ref(&ms)),
        );
        (tcp.unwrap(), udp.unwrap(), started.elapsed())
    };
    let fast = async {
        // Let both sleeping calls reach the server first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        for _ in 0..20 {
            assert_eq!(
                quick.call("add", &[V::Int(1), V::Int(1)]).await.unwrap(),
                Value::Int(2)
            );
            assert_eq!(
                udp_quick
                    .call("add", &[V::Int(2), V::Int(2)])
                    .await
                    .unwrap(),
                Value::Int(4)
            );
        }
        started.elapsed()
    };
    let ((tcp_ms, udp_ms, slow_took), fast_took) = tokio::join!(slow, fast);
    assert_eq!((tcp_ms, udp_ms), (Value::Int(600), Value::Int(600)));
    assert!(slow_took >= SLEEP, "the async functions ran {slow_took:?}");
    assert!(
        fast_took < SLEEP / 2,
        "40 calls on other connections took {fast_took:?} while two functions slept {SLEEP:?}"
    );
    server.shutdown().await;
}
