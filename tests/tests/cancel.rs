//! `rpc.cancel` (contract 10.4) at at-host: a cancel naming a running
//! async call stops it (its future dropped: counted) and the call's one
//! reply is `cancelled` (vectors C1, C2); a cancel that comes too late
//! leaves the result; a REQUEST cancel answers `true`/`false`; calls
//! pipelined behind a running one keep their replies and order, and one
//! cancelled while it waits is never called; a client whose call future
//! is dropped cancels it; the same on UDP, where a retransmission of the
//! cancelled call gets the remembered `cancelled`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use at_core::{ErrorCode, Kind};
use at_host::{Client, Server, UdpClient, UdpConfig};
use at_tests::*;
use tokio::net::UdpSocket;

/// Counters of the test functions: `hold` started, `hold` stopped (its
/// future dropped unfinished), `tick` run.
#[derive(Clone, Default)]
struct Counters {
    started: Arc<AtomicI64>,
    dropped: Arc<AtomicI64>,
    ticks: Arc<AtomicI64>,
}

async fn serve(c: &Counters) -> Server {
    let (started, dropped, ticks) = (c.started.clone(), c.dropped.clone(), c.ticks.clone());
    Server::builder()
        .calculator()
        .function("tick", move || ticks.fetch_add(1, Ordering::SeqCst) + 1)
        // Runs until stopped, or `ms` ms (0: for ever).
        .async_function("hold", move |ms: u64| {
            struct OnDrop(Arc<AtomicI64>);
            impl Drop for OnDrop {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let guard = OnDrop(dropped.clone());
            let started = started.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                match ms {
                    0 => std::future::pending::<()>().await,
                    ms => tokio::time::sleep(Duration::from_millis(ms)).await,
                }
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

/// Waits, bounded by [`PATIENCE`], until `counter` reaches `want`.
async fn reach(counter: &AtomicI64, want: i64) {
    let until = Instant::now() + PATIENCE;
    while counter.load(Ordering::SeqCst) < want {
        assert!(
            Instant::now() < until,
            "counter at {} after {PATIENCE:?}, not {want}",
            counter.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

const C1_HEADER: &[u8] = b"AT\x00\x10\x00\x00\x00\x0c\x00\x00\x00\x24\xa6\x21\x02\x0b";
const C1_BODY: &str = r#"{"func": "rpc.cancel", "args": [11]}"#;
const C2_HEADER: &[u8] = b"AT\x00\x04\x00\x00\x00\x0b\x00\x00\x00\x40\x35\x9e\x8e\xd7";
const C2_BODY: &str = r#"{"status": "error", "code": "cancelled", "message": "cancelled"}"#;

fn c1() -> Vec<u8> {
    let c1 = frame(Kind::Notify, 12, C1_BODY.as_bytes());
    assert_eq!(&c1[..16], C1_HEADER);
    c1
}

fn cancel_request(seq: u32, target: u32) -> Vec<u8> {
    request(
        seq,
        &format!(r#"{{"func": "rpc.cancel", "args": [{target}]}}"#),
    )
}

fn cancel_notify(seq: u32, target: u32) -> Vec<u8> {
    let body = format!(r#"{{"func": "rpc.cancel", "args": [{target}]}}"#);
    frame(Kind::Notify, seq, body.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_cancel_stops_a_running_async_call_vectors_c1_c2() {
    let c = Counters::default();
    let server = serve(&c).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    write(
        &mut stream,
        &request(11, r#"{"func": "hold", "args": [0]}"#),
    )
    .await;
    reach(&c.started, 1).await;
    write(&mut stream, &c1()).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(&reply.header.to_bytes()[..], C2_HEADER);
    assert_eq!(reply.body, C2_BODY);
    reach(&c.dropped, 1).await;
    // The connection goes on, and the NOTIFY got no reply of its own.
    write(&mut stream, &calc(13, "add", "1", "2")).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (13, "3".to_owned()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancel_answers_true_or_false_and_a_late_one_leaves_the_result() {
    let c = Counters::default();
    let server = serve(&c).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    // Too late: the call has its result; the cancel answers false.
    write(&mut stream, &calc(1, "add", "10", "20")).await;
    assert_eq!(read_reply(&mut stream).await.outcome(), "30");
    write(&mut stream, &cancel_request(2, 1)).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (2, "false".to_owned()));
    // An async call that finished: the same.
    write(&mut stream, &request(3, r#"{"func": "hold", "args": [1]}"#)).await;
    assert_eq!(read_reply(&mut stream).await.outcome(), "1");
    write(&mut stream, &cancel_request(4, 3)).await;
    assert_eq!(read_reply(&mut stream).await.outcome(), "false");
    // Unknown seq: false.
    write(&mut stream, &cancel_request(5, 999)).await;
    assert_eq!(read_reply(&mut stream).await.outcome(), "false");
    // Running: stopped, its reply cancelled, then the cancel's true.
    write(&mut stream, &request(6, r#"{"func": "hold", "args": [0]}"#)).await;
    reach(&c.started, 2).await;
    write(&mut stream, &cancel_request(7, 6)).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.header.seq, 6);
    assert_eq!(error_code(&reply), Some(ErrorCode::Cancelled));
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (7, "true".to_owned()));
    reach(&c.dropped, 1).await;
    // Not one seq: invalid_arguments.
    write(
        &mut stream,
        &request(8, r#"{"func": "rpc.cancel", "args": ["x"]}"#),
    )
    .await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(error_code(&reply), Some(ErrorCode::InvalidArguments));
    assert_eq!(c.dropped.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_keep_their_replies_and_a_queued_one_cancelled_never_runs() {
    let c = Counters::default();
    let server = serve(&c).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    // Behind a running call that finishes: normal replies, in order.
    let bytes = [
        request(1, r#"{"func": "hold", "args": [50]}"#),
        calc(2, "add", "1", "1"),
        request(3, r#"{"func": "tick"}"#),
        calc(4, "mul", "3", "4"),
    ]
    .concat();
    write(&mut stream, &bytes).await;
    for (seq, want) in [(1, "50"), (2, "2"), (3, "1"), (4, "12")] {
        let reply = read_reply(&mut stream).await;
        assert_eq!((reply.header.seq, reply.outcome()), (seq, want.to_owned()));
    }
    // Behind a running call: 6 and 8 wait; 8 is cancelled before it
    // starts (by REQUEST), then the running 5 (by NOTIFY).
    write(&mut stream, &request(5, r#"{"func": "hold", "args": [0]}"#)).await;
    reach(&c.started, 2).await;
    let bytes = [
        calc(6, "add", "2", "3"),
        request(8, r#"{"func": "tick"}"#),
        cancel_request(9, 8),
        calc(10, "sub", "9", "4"),
        cancel_request(11, 8),
        cancel_notify(12, 5),
        cancel_request(13, 5),
    ]
    .concat();
    write(&mut stream, &bytes).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.header.seq, 5);
    assert_eq!(error_code(&reply), Some(ErrorCode::Cancelled));
    for (seq, want) in [
        (6, "5"),
        (8, "error cancelled"),
        (9, "true"),
        (10, "5"),
        // Each call is stopped by its first cancel; a second one finds it
        // ended.
        (11, "false"),
        (13, "false"),
    ] {
        let reply = read_reply(&mut stream).await;
        assert_eq!((reply.header.seq, reply.outcome()), (seq, want.to_owned()));
    }
    reach(&c.dropped, 1).await;
    // tick ran once (seq 3), never for seq 8.
    assert_eq!(c.ticks.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

/// A cancel that arrives in the same read as the call it names, behind
/// it, is found when the call starts (the buffered bytes are looked at
/// then, not each read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_read_with_its_call_stops_it() {
    let c = Counters::default();
    let server = serve(&c).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    // `hold` with 0 runs until it is cancelled.
    let bytes = [
        request(1, r#"{"func": "hold", "args": [0]}"#),
        cancel_notify(2, 1),
        calc(3, "add", "1", "2"),
    ]
    .concat();
    write(&mut stream, &bytes).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.header.seq, 1);
    assert_eq!(error_code(&reply), Some(ErrorCode::Cancelled));
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (3, "3".to_owned()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_info_lists_cancel() {
    let c = Counters::default();
    let server = serve(&c).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    write(&mut stream, &request(1, r#"{"func": "rpc.info"}"#)).await;
    let reply = read_reply(&mut stream).await;
    assert!(
        reply
            .body
            .ends_with(r#""ext": ["notify", "deadline", "cancel", "peer"]}}"#),
        "{}",
        reply.body
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_call_stops_the_function() {
    let c = Counters::default();
    let server = serve(&c).await;
    let client = Client::connect(server.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    // Off until the server is known to list cancel.
    assert!(client.cancel_on_drop().await.unwrap());
    let call = client.call_as::<u64>("hold", (0,));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), call)
            .await
            .is_err()
    );
    reach(&c.dropped, 1).await;
    assert_eq!(c.started.load(Ordering::SeqCst), 1);
    // The cancelled call's reply is dropped; the client goes on.
    let sum: i64 = client.call_as("add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    let sum: i64 = client.call_as("add", (4, 5)).await.unwrap();
    assert_eq!(sum, 9);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cancel_on_drop_a_dropped_call_runs_on() {
    let c = Counters::default();
    let server = serve(&c).await;
    let client = Client::connect(server.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    let call = client.call_as::<u64>("hold", (300,));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .is_err()
    );
    // The next call waits behind the held one, which finishes.
    let sum: i64 = client.call_as("add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    assert_eq!(c.dropped.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

async fn udp(server: &Server) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.udp_addr().unwrap()).await.unwrap();
    socket
}

async fn recv(socket: &UdpSocket) -> RawReply {
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
        .await
        .expect("a datagram in time")
        .unwrap();
    parse_reply(&buf[..n])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_a_cancelled_call_answers_cancelled_and_again_on_retransmission() {
    let c = Counters::default();
    let server = serve(&c).await;
    let socket = udp(&server).await;
    let call = request(11, r#"{"func": "hold", "args": [0]}"#);
    socket.send(&call).await.unwrap();
    reach(&c.started, 1).await;
    socket.send(&c1()).await.unwrap();
    let reply = recv(&socket).await;
    assert_eq!(&reply.header.to_bytes()[..], C2_HEADER);
    assert_eq!(reply.body, C2_BODY);
    reach(&c.dropped, 1).await;
    // The same bytes again: the remembered reply, the function not rerun.
    socket.send(&call).await.unwrap();
    let again = recv(&socket).await;
    assert_eq!(again, reply);
    assert_eq!(c.started.load(Ordering::SeqCst), 1);

    // By REQUEST: true for the running call, false for an unknown one.
    socket
        .send(&request(20, r#"{"func": "hold", "args": [0]}"#))
        .await
        .unwrap();
    reach(&c.started, 2).await;
    socket.send(&cancel_request(21, 20)).await.unwrap();
    let mut got = [recv(&socket).await, recv(&socket).await];
    got.sort_by_key(|r| r.header.seq);
    assert_eq!(got[0].header.seq, 20);
    assert_eq!(error_code(&got[0]), Some(ErrorCode::Cancelled));
    assert_eq!(
        (got[1].header.seq, got[1].outcome()),
        (21, "true".to_owned())
    );
    socket.send(&cancel_request(22, 99)).await.unwrap();
    let reply = recv(&socket).await;
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (22, "false".to_owned())
    );
    reach(&c.dropped, 2).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_a_dropped_client_call_stops_the_function() {
    let c = Counters::default();
    let server = serve(&c).await;
    let config = UdpConfig {
        timeout: PATIENCE,
        ..UdpConfig::default()
    };
    let client = UdpClient::connect(server.udp_addr().unwrap(), config)
        .await
        .unwrap();
    assert!(client.cancel_on_drop().await.unwrap());
    let call = client.call_as::<u64>("hold", (0,));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), call)
            .await
            .is_err()
    );
    reach(&c.dropped, 1).await;
    let sum: i64 = client.call_as("add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_connection_cancels_too() {
    let c = Counters::default();
    let server = serve(&c).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    write(
        &mut stream,
        &request(1, r#"{"func": "rpc.peer", "args": []}"#),
    )
    .await;
    assert_eq!(
        read_reply(&mut stream).await.outcome(),
        r#"{"lease": null}"#
    );
    // By NOTIFY.
    write(&mut stream, &request(2, r#"{"func": "hold", "args": [0]}"#)).await;
    reach(&c.started, 1).await;
    write(&mut stream, &cancel_notify(3, 2)).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.header.seq, 2);
    assert_eq!(error_code(&reply), Some(ErrorCode::Cancelled));
    // By REQUEST: answered after the call's reply, in order.
    write(&mut stream, &request(4, r#"{"func": "hold", "args": [0]}"#)).await;
    reach(&c.started, 2).await;
    write(&mut stream, &cancel_request(5, 4)).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.header.seq, 4);
    assert_eq!(error_code(&reply), Some(ErrorCode::Cancelled));
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (5, "true".to_owned()));
    reach(&c.dropped, 2).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_read_while_another_runs_counts_its_deadline_from_its_arrival() {
    let c = Counters::default();
    let server = serve(&c).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    write(
        &mut stream,
        &request(1, r#"{"func": "hold", "args": [1000]}"#),
    )
    .await;
    reach(&c.started, 1).await;
    // Arrives 500 ms after the first, waits behind it ~500 ms more: within
    // its 800 ms (counted from the first call's read, it would not be).
    tokio::time::sleep(Duration::from_millis(500)).await;
    write(
        &mut stream,
        &request(2, r#"{"func": "tick", "deadline_ms": 800}"#),
    )
    .await;
    assert_eq!(read_reply(&mut stream).await.outcome(), "1000");
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (2, "1".to_owned()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_names_a_call_of_its_own_association_only() {
    let c = Counters::default();
    let server = serve(&c).await;
    let mut a = connect(server.tcp_addr().unwrap()).await;
    let mut b = connect(server.tcp_addr().unwrap()).await;
    write(&mut a, &request(11, r#"{"func": "hold", "args": [0]}"#)).await;
    reach(&c.started, 1).await;
    // Another connection's cancel of seq 11: false, nothing stopped.
    write(&mut b, &cancel_request(12, 11)).await;
    assert_eq!(read_reply(&mut b).await.outcome(), "false");
    assert_eq!(c.dropped.load(Ordering::SeqCst), 0);
    write(&mut a, &c1()).await;
    assert_eq!(read_reply(&mut a).await.body, C2_BODY);
    // The same on UDP: another address's cancel stops nothing.
    let (x, y) = (udp(&server).await, udp(&server).await);
    x.send(&request(11, r#"{"func": "hold", "args": [0]}"#))
        .await
        .unwrap();
    reach(&c.started, 2).await;
    y.send(&cancel_request(12, 11)).await.unwrap();
    assert_eq!(recv(&y).await.outcome(), "false");
    assert_eq!(c.dropped.load(Ordering::SeqCst), 1);
    x.send(&c1()).await.unwrap();
    assert_eq!(recv(&x).await.body, C2_BODY);
    reach(&c.dropped, 2).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_call_that_times_out_cancels_it() {
    let c = Counters::default();
    let server = serve(&c).await;
    let client = Client::connect(server.tcp_addr().unwrap(), Duration::from_millis(300))
        .await
        .unwrap()
        .with_deadlines(false);
    assert!(client.cancel_on_drop().await.unwrap());
    let outcome = client.call_as::<u64>("hold", (0,)).await;
    assert!(
        matches!(outcome, Err(at_host::Error::Timeout(_))),
        "{outcome:?}"
    );
    reach(&c.dropped, 1).await;
    server.shutdown().await;
}
