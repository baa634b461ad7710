//! NOTIFY calls (contract 10.2, 10.8 rule 7) served by at-host: run and
//! never answered, on TCP and UDP; a plain UDP repeat is not run twice;
//! a plain NOTIFY to a server requiring authentication is dropped unrun;
//! `rpc.info` lists `notify`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use at_core::Kind;
use at_host::{AuthKey, Server};
use at_tests::*;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const KEY: &str = "demo:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

struct Served {
    server: Server,
    runs: Arc<AtomicI64>,
    /// One message per run of the async function.
    async_runs: mpsc::UnboundedReceiver<i64>,
}

async fn serve(keys: Vec<AuthKey>) -> Served {
    let runs = Arc::new(AtomicI64::new(0));
    let (tx, async_runs) = mpsc::unbounded_channel();
    let r = runs.clone();
    let server = Server::builder()
        .function("tick", move || r.fetch_add(1, Ordering::SeqCst) + 1)
        .async_function("atick", move |n: i64| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(n);
                n
            }
        })
        .keys(keys)
        .tcp("127.0.0.1:0".parse().unwrap())
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    Served {
        server,
        runs,
        async_runs,
    }
}

fn notify(seq: u32, body: &str) -> Vec<u8> {
    frame(Kind::Notify, seq, body.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_notifications_run_and_are_never_answered() {
    let mut s = serve(vec![]).await;
    let mut stream = connect(s.server.tcp_addr().unwrap()).await;
    let bytes = [
        notify(1, r#"{"func": "tick"}"#),
        notify(2, r#"{"func": "atick", "args": [7]}"#),
        // Errors are not answered either.
        notify(3, r#"{"func": "nope"}"#),
        notify(4, r#"{"func": "tick", "args": [1]}"#),
        notify(5, r#"{"func": "rpc.hello", "args": ["demo"]}"#),
        notify(6, r#"{"func": "tick", "deadline_ms": 0}"#),
        request(7, r#"{"func": "rpc.ping"}"#),
    ]
    .concat();
    write(&mut stream, &bytes).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.kind()), (7, Kind::Response));
    // The sync one ran before the ping was answered; the async one runs.
    assert_eq!(s.runs.load(Ordering::SeqCst), 1);
    let ran = tokio::time::timeout(PATIENCE, s.async_runs.recv()).await;
    assert_eq!(ran.unwrap(), Some(7));
    // And nothing else comes: the next frame is the next call's reply.
    write(&mut stream, &request(8, r#"{"func": "tick"}"#)).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (8, "2".to_owned()));
    s.server.shutdown().await;
}

async fn udp_call(socket: &UdpSocket, seq: u32, body: &str) -> RawReply {
    socket.send(&request(seq, body)).await.unwrap();
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
        .await
        .expect("a reply in time")
        .unwrap();
    parse_reply(&buf[..n])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_notifications_run_once_and_are_never_answered() {
    let mut s = serve(vec![]).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(s.server.udp_addr().unwrap()).await.unwrap();
    // Eight distinct notifications, each sent twice: each runs once.
    for round in 0..2 {
        for seq in 1..=8u32 {
            let body = format!(r#"{{"func": "tick", "args": [], "pad": {seq}}}"#);
            let _ = round;
            socket.send(&notify(seq, &body)).await.unwrap();
        }
    }
    // The same seq with other bytes is another notification.
    socket
        .send(&notify(1, r#"{"func": "tick", "args": []}"#))
        .await
        .unwrap();
    socket
        .send(&notify(9, r#"{"func": "atick", "args": [3]}"#))
        .await
        .unwrap();
    // The first datagram back is the ping's reply: nothing answered the rest.
    let reply = udp_call(&socket, 100, r#"{"func": "rpc.ping"}"#).await;
    assert_eq!((reply.header.seq, reply.kind()), (100, Kind::Response));
    assert_eq!(s.runs.load(Ordering::SeqCst), 9);
    let ran = tokio::time::timeout(PATIENCE, s.async_runs.recv()).await;
    assert_eq!(ran.unwrap(), Some(3));
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_udp_repeat_memory_forgets_its_oldest_when_full() {
    let s = serve(vec![]).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(s.server.udp_addr().unwrap()).await.unwrap();
    let first = notify(1, r#"{"func": "tick"}"#);
    socket.send(&first).await.unwrap();
    // Enough others to push the first out of any table of 8 to 1000.
    for seq in 2..=1001u32 {
        socket
            .send(&notify(seq, r#"{"func": "tick"}"#))
            .await
            .unwrap();
        if seq % 100 == 0 {
            // Paced by round trips so the receive buffer never overflows.
            let reply = udp_call(&socket, 100_000 + seq, r#"{"func": "rpc.ping"}"#).await;
            assert_eq!(reply.header.seq, 100_000 + seq);
        }
    }
    socket.send(&first).await.unwrap();
    let reply = udp_call(&socket, 1, r#"{"func": "tick"}"#).await;
    // 1001 notifications, the forgotten first one again, and this call.
    assert_eq!(reply.outcome(), "1003");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_notification_to_a_server_requiring_auth_is_dropped_unrun() {
    let s = serve(vec![AuthKey::parse(KEY).unwrap()]).await;
    let mut stream = connect(s.server.tcp_addr().unwrap()).await;
    let bytes = [
        notify(1, r#"{"func": "tick"}"#),
        request(2, r#"{"func": "rpc.ping"}"#),
    ]
    .concat();
    write(&mut stream, &bytes).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.kind()), (2, Kind::Response));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(s.server.udp_addr().unwrap()).await.unwrap();
    socket
        .send(&notify(1, r#"{"func": "tick"}"#))
        .await
        .unwrap();
    let reply = udp_call(&socket, 2, r#"{"func": "rpc.ping"}"#).await;
    assert_eq!((reply.header.seq, reply.kind()), (2, Kind::Response));
    assert_eq!(s.runs.load(Ordering::SeqCst), 0);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_info_lists_what_works() {
    let s = serve(vec![]).await;
    let mut stream = connect(s.server.tcp_addr().unwrap()).await;
    write(&mut stream, &request(1, r#"{"func": "rpc.info"}"#)).await;
    let reply = read_reply(&mut stream).await;
    assert!(
        reply
            .body
            .ends_with(r#""ext": ["notify", "deadline", "cancel", "peer"]}}"#),
        "{}",
        reply.body
    );
    s.server.shutdown().await;
}

/// A session opened by a raw `rpc.hello` over `stream`.
async fn hello(stream: &mut tokio::net::TcpStream, key: &AuthKey) -> at_core::auth::ClientSession {
    let nc: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
    let body = r#"{"func": "rpc.hello", "args": ["demo", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"]}"#;
    write(stream, &request(1, body)).await;
    let reply = read_reply(stream).await;
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let member = |name: &str| body["result"][name].as_str().unwrap().to_owned();
    at_core::auth::ClientSession::from_hello(
        &key.as_core(),
        &nc,
        &member("session"),
        &member("nonce"),
        &member("proof"),
    )
    .expect("a valid hello reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_notification_runs_once_through_the_session_window() {
    let key = AuthKey::parse(KEY).unwrap();
    let s = serve(vec![key.clone()]).await;
    let mut stream = connect(s.server.tcp_addr().unwrap()).await;
    let session = hello(&mut stream, &key).await;
    let mut sealed = [0u8; 256];
    let n = session
        .seal(Kind::Notify, 2, br#"{"func": "tick"}"#, &mut sealed)
        .unwrap();
    assert_eq!(sealed[3], 0x18);
    // A forged one (a tag byte changed, the CRC made right) is dropped.
    let mut body = sealed[16..n].to_vec();
    *body.last_mut().unwrap() ^= 1;
    let header = at_core::Header {
        flags: 0x18,
        ..at_core::Header::new(Kind::Notify, 3, &body)
    };
    let forged = [&header.to_bytes()[..], &body].concat();
    // The notification, its replay, the forged one, then a sealed call.
    let mut call = [0u8; 256];
    let m = session
        .seal_request(4, br#"{"func": "tick"}"#, &mut call)
        .unwrap();
    let bytes = [&sealed[..n], &sealed[..n], &forged[..], &call[..m]].concat();
    write(&mut stream, &bytes).await;
    // The first frame back is the call's reply: the notification ran once.
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, stream.read_exact(&mut head)).await;
    read.unwrap().unwrap();
    let header = at_core::Header::from_bytes(&head);
    assert_eq!(header.seq, 4);
    let mut whole = head.to_vec();
    whole.resize(16 + header.length as usize, 0);
    let read = tokio::time::timeout(PATIENCE, stream.read_exact(&mut whole[16..])).await;
    read.unwrap().unwrap();
    let frame = at_core::Frame::parse(&whole, u32::MAX).unwrap();
    let body = session.open_reply(&frame).unwrap();
    assert_eq!(body, br#"{"status": "success", "result": 2}"#);
    assert_eq!(s.runs.load(Ordering::SeqCst), 2);
    s.server.shutdown().await;
}
