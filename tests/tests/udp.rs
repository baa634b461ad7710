//! at-host over UDP: the calculator, bad datagrams, timeouts, and 1,000
//! calls through a relay that loses, duplicates, reorders and corrupts
//! datagrams, with a counter that proves at-most-once execution.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use at_core::{HEADER_LEN, Header, Kind, Value as V};
use at_host::{Error, Server, UdpClient, UdpConfig, Value};
use at_tests::relay::{Faults, LossyRelay};
use at_tests::*;
use tokio::net::UdpSocket;

async fn start(counter: Arc<AtomicI64>) -> (Server, SocketAddr) {
    let server = Server::builder()
        .calculator()
        .function("count", move || counter.fetch_add(1, Ordering::SeqCst) + 1)
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("server starts");
    let addr = server.udp_addr().unwrap();
    (server, addr)
}

async fn raw_exchange(socket: &UdpSocket, datagram: &[u8]) -> Option<RawReply> {
    socket.send(datagram).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    match tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(parse_reply(&buf[..n])),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calculator_over_udp() {
    let (server, addr) = start(Arc::default()).await;
    let mut c = UdpClient::connect(addr, UdpConfig::default())
        .await
        .unwrap();
    check_calculator_udp(&mut c).await;
    // Several calls in flight on one socket.
    let args: Vec<[V<'_>; 2]> = (0..50).map(|i| [V::Int(i), V::Int(i)]).collect();
    let calls: Vec<(&str, &[V<'_>])> = args.iter().map(|a| ("mul", &a[..])).collect();
    let results = c.call_many(&calls).await.unwrap();
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), Value::Int((i * i) as i64));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datagrams() {
    let (server, addr) = start(Arc::default()).await;
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(addr).await.unwrap();
    let good = calc(1, "add", "1", "2");
    // Size mismatch both ways: dropped without a reply.
    assert_eq!(raw_exchange(&s, &good[..good.len() - 1]).await, None);
    let mut long = good.clone();
    long.push(b' ');
    assert_eq!(raw_exchange(&s, &long).await, None);
    assert_eq!(raw_exchange(&s, &good[..10]).await, None);
    // Wrong magic: bad_frame with seq 0.
    let mut magic = calc(2, "add", "1", "2");
    magic[0] = b'X';
    let reply = raw_exchange(&s, &magic)
        .await
        .expect("a reply to a wrong magic");
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (0, "error bad_frame".to_owned())
    );
    // Bad CRC: checksum_mismatch with the seq.
    let mut crc = calc(3, "add", "1", "2");
    crc[HEADER_LEN] ^= 1;
    let reply = raw_exchange(&s, &crc).await.expect("a reply to a bad CRC");
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (3, "error checksum_mismatch".to_owned())
    );
    // A reply frame sent to the server: no answer.
    assert_eq!(
        raw_exchange(&s, &frame(Kind::Response, 5, b"{}")).await,
        None
    );
    // And the good one still works.
    let reply = raw_exchange(&s, &good).await.expect("a reply");
    assert_eq!(reply.outcome(), "3");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_datagrams_get_frame_too_large() {
    let server = Server::builder()
        .calculator()
        .max_frame(1024)
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(server.udp_addr().unwrap()).await.unwrap();
    let big = request(
        4,
        &format!("{{\"func\": \"add\", \"pad\": \"{}\"}}", "x".repeat(2000)),
    );
    let reply = raw_exchange(&s, &big)
        .await
        .expect("a reply to an oversize frame");
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (4, "error frame_too_large".to_owned())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_get_the_remembered_reply_without_running_again() {
    let counter = Arc::new(AtomicI64::new(0));
    let (server, addr) = start(counter.clone()).await;
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(addr).await.unwrap();
    let count = request(42, r#"{"func": "count"}"#);
    for _ in 0..5 {
        let reply = raw_exchange(&s, &count).await.expect("a reply");
        assert_eq!((reply.header.seq, reply.outcome()), (42, "1".to_owned()));
    }
    assert_eq!(counter.load(Ordering::SeqCst), 1);
    // Another seq is another call; another client with the same seq too.
    assert_eq!(
        raw_exchange(&s, &request(43, r#"{"func": "count"}"#))
            .await
            .unwrap()
            .outcome(),
        "2"
    );
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.connect(addr).await.unwrap();
    assert_eq!(raw_exchange(&other, &count).await.unwrap().outcome(), "3");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_gives_a_timeout_within_the_set_time() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = UdpConfig {
        timeout: Duration::from_millis(400),
        initial_timeout: Duration::from_millis(50),
        ..UdpConfig::default()
    };
    let c = UdpClient::connect(silent.local_addr().unwrap(), config)
        .await
        .unwrap();
    let started = Instant::now();
    let e = c.call("add", &[V::Int(1), V::Int(2)]).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // It retransmitted with backoff: 50, 100, 200 ms fit in 400 ms.
    assert!(
        (2..=4).contains(&c.stats().retransmitted),
        "{:?}",
        c.stats()
    );
    // And all attempts carried the same seq.
    let mut buf = [0u8; 1024];
    let mut seqs = Vec::new();
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(50), silent.recv_from(&mut buf)).await
    {
        seqs.push(Header::from_bytes(buf[..n][..16].try_into().unwrap()).seq);
    }
    assert!(
        seqs.len() >= 3 && seqs.iter().all(|s| *s == seqs[0]),
        "{seqs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_through_30_percent_loss_each_way_are_all_right_and_run_once() {
    let counter = Arc::new(AtomicI64::new(0));
    let (server, addr) = start(counter.clone()).await;
    let faults = Faults {
        drop: 0.30,
        duplicate: 0.05,
        reorder: 0.10,
        corrupt: 0.05,
        delay: Duration::from_millis(5),
        seed: 0xA7_2026,
    };
    let relay = LossyRelay::start(addr, faults).await;
    let config = UdpConfig {
        timeout: Duration::from_secs(60),
        initial_timeout: Duration::from_millis(10),
        max_backoff: Duration::from_millis(30),
        retries: 60,
        ..UdpConfig::default()
    };
    let c = UdpClient::connect(relay.addr, config).await.unwrap();
    let mut rng = 0x1234_5678_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 2_000_000) as i64 - 1_000_000
    };
    let mut counted = Vec::new();
    let mut calls_made = 0;
    for _batch in 0..10 {
        // 100 calls in flight: 80 additions and 20 counter calls.
        let args: Vec<[V<'_>; 2]> = (0..80).map(|_| [V::Int(next()), V::Int(next())]).collect();
        let mut calls: Vec<(&str, &[V<'_>])> = args.iter().map(|a| ("add", &a[..])).collect();
        calls.extend(std::iter::repeat_n(("count", &[][..]), 20));
        let results = c.call_many(&calls).await.unwrap();
        for (i, result) in results.into_iter().enumerate() {
            let value = result.unwrap_or_else(|e| panic!("call {i} of a batch failed: {e}"));
            if i < 80 {
                let (V::Int(a), V::Int(b)) = (args[i][0], args[i][1]) else {
                    unreachable!()
                };
                assert_eq!(value, Value::Int(a + b), "a wrong answer for add({a}, {b})");
            } else {
                let Value::Int(n) = value else {
                    panic!("count gave {value:?}")
                };
                counted.push(n);
            }
        }
        calls_made += calls.len();
    }
    assert_eq!(calls_made, 1000);
    // The counter ran exactly once per call: 200 calls, values 1..=200.
    assert_eq!(counter.load(Ordering::SeqCst), 200);
    counted.sort_unstable();
    assert_eq!(counted, (1..=200).collect::<Vec<_>>());
    let stats = c.stats();
    let s = &relay.stats;
    eprintln!(
        "relay saw {} datagrams: {} dropped, {} duplicated, {} reordered, {} corrupted; client sent {} and retransmitted {}, ignored {}",
        s.seen.load(Ordering::Relaxed),
        s.dropped.load(Ordering::Relaxed),
        s.duplicated.load(Ordering::Relaxed),
        s.reordered.load(Ordering::Relaxed),
        s.corrupted.load(Ordering::Relaxed),
        stats.sent,
        stats.retransmitted,
        stats.ignored
    );
    // The faults really happened.
    assert!(s.dropped.load(Ordering::Relaxed) > 300);
    assert!(s.corrupted.load(Ordering::Relaxed) > 20);
    assert!(stats.retransmitted > 300);
    server.shutdown().await;
}

/// UDP is served by a thread blocking in its receive; a shutdown wakes it
/// at once (it does not wait out the 1 s receive timeout), for wildcard and
/// unicast binds alike, and the socket is then closed (the port can be
/// bound again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wakes_the_datagram_thread_at_once() {
    for bind in ["127.0.0.1:0", "0.0.0.0:0", "127.0.0.1:0"] {
        let server = Server::builder()
            .calculator()
            .udp(bind.parse().unwrap())
            .start()
            .await
            .unwrap();
        let port = server.udp_addr().unwrap().port();
        let client = UdpClient::connect(("127.0.0.1", port), UdpConfig::default())
            .await
            .unwrap();
        assert_eq!(
            client.call("add", &[V::Int(1), V::Int(2)]).await.unwrap(),
            Value::Int(3)
        );
        let started = Instant::now();
        tokio::time::timeout(PATIENCE, server.shutdown())
            .await
            .expect("shutdown finishes");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "{bind}: shutdown took {took:?}"
        );
        std::net::UdpSocket::bind(("127.0.0.1", port)).expect("the port is free again");
    }
}
