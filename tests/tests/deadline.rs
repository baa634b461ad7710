//! `deadline_ms` (contract 10.4) at at-host: counted from when the whole
//! frame was read, checked when the function would start (D = 0: always
//! `deadline_exceeded`, the function not run, as for a call queued behind
//! a slow one on TCP), and a running async function stopped at its
//! deadline answering `cancelled`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use at_core::{ErrorCode, Kind};
use at_host::Server;
use at_tests::*;
use tokio::net::UdpSocket;

async fn serve(runs: Arc<AtomicI64>, dropped: Arc<AtomicI64>) -> Server {
    Server::builder()
        .calculator()
        .function("tick", move || runs.fetch_add(1, Ordering::SeqCst) + 1)
        .function("slow", |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        })
        .async_function("sleep", move |ms: u64| {
            // Counts its own drop: proof the future was stopped.
            struct OnDrop(Arc<AtomicI64>);
            impl Drop for OnDrop {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let guard = OnDrop(dropped.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                std::mem::forget(guard);
                ms
            }
        })
        .tcp("127.0.0.1:0".parse().unwrap())
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

fn counters() -> (Arc<AtomicI64>, Arc<AtomicI64>) {
    (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_zero_is_exceeded_and_the_function_never_runs() {
    let (runs, dropped) = counters();
    let server = serve(runs.clone(), dropped).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    // Vectors D1 and D2 (contract 10.7), byte for byte.
    let d1 = request(10, r#"{"func": "add", "args": [10, 20], "deadline_ms": 0}"#);
    assert_eq!(
        &d1[..16],
        b"AT\x00\x01\x00\x00\x00\x0a\x00\x00\x00\x33\xac\xd2\x25\x8e"
    );
    write(&mut stream, &d1).await;
    let mut head = [0u8; 16];
    let reply = read_reply(&mut stream).await;
    head.copy_from_slice(&reply.header.to_bytes());
    assert_eq!(
        &head,
        b"AT\x00\x04\x00\x00\x00\x0a\x00\x00\x00\x50\xd0\xf5\x35\x5e"
    );
    assert_eq!(
        reply.body,
        r#"{"status": "error", "code": "deadline_exceeded", "message": "deadline exceeded"}"#
    );
    write(
        &mut stream,
        &request(11, r#"{"func": "tick", "deadline_ms": 0}"#),
    )
    .await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(error_code(&reply), Some(ErrorCode::DeadlineExceeded));
    // And on UDP.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.udp_addr().unwrap()).await.unwrap();
    for (seq, func) in [(1, "tick"), (2, "sleep")] {
        let body = format!(r#"{{"func": "{func}", "args": [], "deadline_ms": 0}}"#);
        socket.send(&request(seq, &body)).await.unwrap();
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let reply = parse_reply(&buf[..n]);
        assert_eq!(reply.header.seq, seq);
        assert_eq!(error_code(&reply), Some(ErrorCode::DeadlineExceeded));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // A generous deadline changes nothing.
    write(
        &mut stream,
        &request(12, r#"{"func": "tick", "deadline_ms": 60000}"#),
    )
    .await;
    assert_eq!(read_reply(&mut stream).await.outcome(), "1");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_queued_behind_a_slow_one_misses_its_deadline() {
    let (runs, dropped) = counters();
    let server = serve(runs.clone(), dropped).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    let bytes = [
        request(1, r#"{"func": "slow", "args": [300]}"#),
        request(2, r#"{"func": "tick", "deadline_ms": 100}"#),
        request(3, r#"{"func": "sleep", "args": [1], "deadline_ms": 100}"#),
        request(4, r#"{"func": "tick", "deadline_ms": 60000}"#),
    ]
    .concat();
    write(&mut stream, &bytes).await;
    assert_eq!(read_reply(&mut stream).await.outcome(), "300");
    for seq in [2, 3] {
        let reply = read_reply(&mut stream).await;
        assert_eq!(reply.header.seq, seq);
        assert_eq!(error_code(&reply), Some(ErrorCode::DeadlineExceeded));
    }
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (4, "1".to_owned()));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_async_function_is_stopped_at_its_deadline() {
    let (runs, dropped) = counters();
    let server = serve(runs, dropped.clone()).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    let started = Instant::now();
    let body = r#"{"func": "sleep", "args": [30000], "deadline_ms": 200}"#;
    write(&mut stream, &request(1, body)).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.kind(), Kind::Error);
    assert_eq!(error_code(&reply), Some(ErrorCode::Cancelled));
    assert!(started.elapsed() < PATIENCE);
    // The future was dropped, not left running.
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    // The connection goes on.
    write(
        &mut stream,
        &request(2, r#"{"func": "sleep", "args": [1], "deadline_ms": 60000}"#),
    )
    .await;
    assert_eq!(read_reply(&mut stream).await.outcome(), "1");
    server.shutdown().await;
}
