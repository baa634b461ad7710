//! The at-host server's topics beyond plain TCP (contract 10.3, 10.6, 10.8
//! rules 1, 3 and 5): `rpc.subscribe` and `rpc.unsubscribe` by NOTIFY,
//! sealed subscriptions keyed by the session (events 0x0018 under K_rep,
//! the session's counter from 1, routed to the latest verified subscribe,
//! kept across a closed connection), plain UDP (credit 16, the 3x byte
//! budget, a random non-zero event seq, the lease), sealed UDP, the
//! `"end": "server"` of a shutdown, and `at-host watch --key` / `--udp`
//! against `at-host serve --key`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use at_core::auth::ClientSession;
use at_core::{Frame, Kind};
use at_host::{AuthKey, Client, Server, Topic, UdpClient, UdpConfig, Update};
use at_tests::sealed::{raw_session, read_raw, sealed, sealed_result};
use at_tests::*;
use tokio::net::{TcpStream, UdpSocket};

const KEY: &str = "watch:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn key() -> AuthKey {
    AuthKey::parse(KEY).unwrap()
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn serve(topic: &Topic, keys: bool) -> Server {
    let mut builder = Server::builder()
        .calculator()
        .with_topic(topic)
        .tcp(loopback())
        .udp(loopback());
    if keys {
        builder = builder.key(key());
    }
    builder.start().await.unwrap()
}

async fn call(stream: &mut TcpStream, seq: u32, body: &str) -> RawReply {
    write(stream, &request(seq, body)).await;
    read_reply(stream).await
}

/// The next event of `sub`, bounded.
async fn event(sub: &mut at_host::Subscription<'_, i64>) -> (u32, i64) {
    match tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("an update in time")
        .expect("an update")
    {
        Update::Event { n, value } => (n, value),
        other => panic!("an event, not {other:?}"),
    }
}

/// One datagram, bounded.
async fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
        .await
        .expect("a datagram in time")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn udp_socket(server: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(loopback()).await.unwrap();
    socket.connect(server).await.unwrap();
    socket
}

/// A sealed frame's body (its trailer checked under K_rep).
fn open<'f>(session: &ClientSession, frame: &'f [u8]) -> &'f [u8] {
    let frame = Frame::parse(frame, u32::MAX).expect("a frame");
    session.open_reply(&frame).expect("sealed under K_rep")
}

fn seq_of(frame: &[u8]) -> u32 {
    u32::from_be_bytes(frame[4..8].try_into().unwrap())
}

fn flags_of(frame: &[u8]) -> u16 {
    u16::from_be_bytes(frame[2..4].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_unsubscribe_ends_it_and_a_notify_subscribe_subscribes() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&temp, false).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    // By NOTIFY: subscribed, nothing answered (the add's reply comes first).
    let subscribe = r#"{"func": "rpc.subscribe", "args": ["temp"]}"#;
    write(&mut stream, &frame(Kind::Notify, 1, subscribe.as_bytes())).await;
    let reply = call(&mut stream, 2, r#"{"func": "add", "args": [1, 2]}"#).await;
    assert_eq!((reply.header.seq, reply.outcome()), (2, "3".to_owned()));
    temp.publish(&7).unwrap();
    let got = read_reply(&mut stream).await;
    assert_eq!((got.kind(), got.header.seq), (Kind::Notify, 1));
    assert_eq!(got.body, r#"{"topic": "temp", "n": 1, "value": 7}"#);
    // Unsubscribed by NOTIFY: a REQUEST finds nothing left to end.
    let unsubscribe = r#"{"func": "rpc.unsubscribe", "args": ["temp"]}"#;
    write(&mut stream, &frame(Kind::Notify, 3, unsubscribe.as_bytes())).await;
    let reply = call(&mut stream, 4, unsubscribe).await;
    assert_eq!((reply.header.seq, reply.outcome()), (4, "false".to_owned()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_client_subscription_ends_it_on_the_server() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&temp, false).await;
    let client = Client::connect(server.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    let mut sub = client.subscribe::<i64>("temp").await.unwrap();
    temp.publish(&1).unwrap();
    assert_eq!(event(&mut sub).await, (1, 1));
    drop(sub);
    // The drop's NOTIFY went first on the connection.
    let held: bool = client.call_as("rpc.unsubscribe", ("temp",)).await.unwrap();
    assert!(!held, "the drop ended the subscription");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_events_on_tcp_keyed_by_the_session() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&temp, true).await;
    let addr = server.tcp_addr().unwrap();
    // The client API: it checks every seal and seq itself.
    let client = Client::connect(addr, PATIENCE)
        .await
        .unwrap()
        .with_key(key());
    let mut sub = client.subscribe::<i64>("temp").await.unwrap();
    assert_eq!(sub.granted().credit, None);
    for v in 1..=3 {
        temp.publish(&v).unwrap();
        assert_eq!(event(&mut sub).await, (v as u32, v));
    }
    drop(sub);
    let held: bool = client.call_as("rpc.unsubscribe", ("temp",)).await.unwrap();
    assert!(!held, "the drop's sealed NOTIFY ended it");

    // Raw frames: 0x0018 under K_rep, the session's own counter from 1.
    let mut a = connect(addr).await;
    let session = raw_session(&mut a, &key()).await;
    let subscribe = r#"{"func": "rpc.subscribe", "args": ["temp"]}"#;
    write(&mut a, &sealed(&session, 2, subscribe)).await;
    let reply = read_raw(&mut a).await;
    assert_eq!(sealed_result(&reply)["n"], 0, "{reply:?}");
    // The topic's state (3) is event 1, then a new value.
    let got = read_raw(&mut a).await;
    assert_eq!((flags_of(&got), seq_of(&got)), (0x0018, 1));
    assert_eq!(
        open(&session, &got),
        br#"{"topic": "temp", "n": 1, "value": 3}"#
    );
    temp.publish(&10).unwrap();
    let got = read_raw(&mut a).await;
    assert_eq!((flags_of(&got), seq_of(&got)), (0x0018, 2));
    assert_eq!(
        open(&session, &got),
        br#"{"topic": "temp", "n": 2, "value": 10}"#
    );
    // The connection closes: the subscription is the session's, it stays
    // (its events meanwhile are dropped, their n counted).
    drop(a);
    let mut b = connect(addr).await;
    // A renewal over the new connection routes the events there.
    write(&mut b, &sealed(&session, 3, subscribe)).await;
    let reply = read_raw(&mut b).await;
    assert!(
        sealed_result(&reply)["n"].as_u64().unwrap() >= 1,
        "{reply:?}"
    );
    temp.publish(&11).unwrap();
    let got = read_raw(&mut b).await;
    assert_eq!(flags_of(&got), 0x0018);
    let body = String::from_utf8_lossy(open(&session, &got)).into_owned();
    assert!(body.ends_with(r#""value": 11}"#), "{body}");
    assert!(seq_of(&got) >= 3, "the session's counter goes on");
    // A plain subscribe to a server with keys is unauthorized.
    let reply = call(&mut b, 9, subscribe).await;
    assert_eq!(error_code(&reply), Some(at_core::ErrorCode::Unauthorized));
    // A sealed unsubscribe by REQUEST over this connection ends it.
    write(
        &mut b,
        &sealed(
            &session,
            4,
            r#"{"func": "rpc.unsubscribe", "args": ["temp"]}"#,
        ),
    )
    .await;
    let reply = read_raw(&mut b).await;
    assert_eq!(sealed_result(&reply), serde_json::json!(true));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_udp_renews_past_its_credit() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&temp, false).await;
    let client = UdpClient::connect(server.udp_addr().unwrap(), UdpConfig::default())
        .await
        .unwrap();
    let info = client
        .call("rpc.info", &[] as &[at_host::Value])
        .await
        .unwrap();
    assert!(
        format!("{info:?}").contains("events"),
        "ext lists events: {info:?}"
    );
    let mut sub = client.subscribe::<i64>("temp").await.unwrap();
    assert_eq!(sub.granted().credit, Some(16));
    // Twice the credit: only renewals (at half of it) keep it going.
    for v in 1..=34 {
        temp.publish(&v).unwrap();
        assert_eq!(event(&mut sub).await, (v as u32, v));
    }
    drop(sub);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_udp_events_stay_within_3x_the_subscribe() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&temp, false).await;
    let socket = udp_socket(server.udp_addr().unwrap()).await;
    let subscribe = request(1, r#"{"func": "rpc.subscribe", "args": ["temp"]}"#);
    socket.send(&subscribe).await.unwrap();
    let reply = parse_reply(&recv(&socket).await);
    assert!(
        reply.body.contains(r#""n": 0, "credit": 16}"#),
        "{}",
        reply.body
    );
    // Ten events made; those sent fit in 3 times the subscribe's bytes.
    for v in 0..10 {
        temp.publish(&v).unwrap();
    }
    // The ping's reply comes after every event sent (sent at publish).
    socket
        .send(&request(2, r#"{"func": "rpc.ping"}"#))
        .await
        .unwrap();
    let (mut bytes, mut seqs, mut ns) = (0, Vec::new(), Vec::new());
    loop {
        let datagram = recv(&socket).await;
        let got = parse_reply(&datagram);
        if got.kind() == Kind::Response {
            assert_eq!(got.header.seq, 2);
            break;
        }
        assert_eq!(got.kind(), Kind::Notify);
        bytes += datagram.len();
        seqs.push(got.header.seq);
        let json: serde_json::Value = serde_json::from_str(&got.body).unwrap();
        ns.push(json["n"].as_u64().unwrap());
    }
    assert!(
        bytes <= 3 * subscribe.len(),
        "{bytes} bytes for a {}-byte subscribe",
        subscribe.len()
    );
    assert!(!ns.is_empty() && ns.len() < 10, "{ns:?}");
    assert_eq!(ns[0], 1);
    // The plain event counter: never 0, one step per frame sent.
    assert!(seqs.iter().all(|&s| s != 0), "{seqs:?}");
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0].wrapping_add(1), "{seqs:?}");
    }
    // A padded subscribe (a renewal) buys more: the next event comes, its
    // n counting the dropped ones.
    let padded = format!(
        r#"{{"func": "rpc.subscribe", "args": ["temp"], "pad": "{}"}}"#,
        "x".repeat(400)
    );
    socket.send(&request(3, &padded)).await.unwrap();
    let reply = parse_reply(&recv(&socket).await);
    assert!(
        reply.body.contains(r#""n": 10, "credit": 16}"#),
        "{}",
        reply.body
    );
    temp.publish(&99).unwrap();
    let got = parse_reply(&recv(&socket).await);
    assert_eq!(got.body, r#"{"topic": "temp", "n": 11, "value": 99}"#);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_lease_runs_out_and_a_state_comes_after_the_reply() {
    let temp = Topic::new("temp", "").unwrap();
    temp.publish(&5).unwrap();
    let server = serve(&temp, false).await;
    let socket = udp_socket(server.udp_addr().unwrap()).await;
    socket
        .send(&request(
            1,
            r#"{"func": "rpc.subscribe", "args": ["temp", 1], "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
        ))
        .await
        .unwrap();
    let reply = parse_reply(&recv(&socket).await);
    assert_eq!((reply.kind(), reply.header.seq), (Kind::Response, 1));
    let first = parse_reply(&recv(&socket).await);
    assert_eq!(first.body, r#"{"topic": "temp", "n": 1, "value": 5}"#);
    // No renewal: the lease ends it, with an end event.
    let end = parse_reply(&recv(&socket).await);
    assert_eq!(end.body, r#"{"topic": "temp", "n": 2, "end": "lease"}"#);
    assert_eq!(end.header.seq, first.header.seq.wrapping_add(1));
    socket
        .send(&request(
            2,
            r#"{"func": "rpc.unsubscribe", "args": ["temp"]}"#,
        ))
        .await
        .unwrap();
    let reply = parse_reply(&recv(&socket).await);
    assert_eq!(reply.outcome(), "false");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_udp_events_from_the_session_counter() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&temp, true).await;
    let config = UdpConfig {
        key: Some(key()),
        ..UdpConfig::default()
    };
    let client = UdpClient::connect(server.udp_addr().unwrap(), config)
        .await
        .unwrap();
    let mut sub = client.subscribe::<i64>("temp").await.unwrap();
    assert_eq!(sub.granted().credit, None);
    // Past what one padded subscribe buys: renewals refill the bytes.
    for v in 1..=40 {
        temp.publish(&v).unwrap();
        assert_eq!(event(&mut sub).await, (v as u32, v));
    }
    drop(sub);
    let held: bool = client.call_as("rpc.unsubscribe", ("temp",)).await.unwrap();
    assert!(!held, "the drop's sealed NOTIFY ended it");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_every_subscription_with_end_server() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&temp, false).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    let reply = call(
        &mut stream,
        1,
        r#"{"func": "rpc.subscribe", "args": ["temp"]}"#,
    )
    .await;
    assert_eq!(reply.kind(), Kind::Response);
    let socket = udp_socket(server.udp_addr().unwrap()).await;
    socket
        .send(&request(
            1,
            r#"{"func": "rpc.subscribe", "args": ["temp"], "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
        ))
        .await
        .unwrap();
    assert_eq!(parse_reply(&recv(&socket).await).kind(), Kind::Response);
    tokio::time::timeout(PATIENCE, server.shutdown())
        .await
        .unwrap();
    let end = r#"{"topic": "temp", "n": 1, "end": "server"}"#;
    assert_eq!(read_reply(&mut stream).await.body, end);
    assert_eq!(parse_reply(&recv(&socket).await).body, end);
    // Then the connection closes.
    assert!(read_until_closed(&mut stream).await.is_empty());
}

/// `at-host watch ARGS`, bounded; its output.
async fn watch(args: Vec<String>) -> std::process::Output {
    let child = tokio::task::spawn_blocking(move || {
        Command::new(at_host_bin())
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    tokio::time::timeout(PATIENCE, child)
        .await
        .expect("at-host watch exits in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_a_key_against_serve_with_a_key_on_both_transports() {
    let mut serve = Command::new(at_host_bin());
    serve.args([
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--key",
        KEY,
    ]);
    let (_server, addrs) = spawn_server(serve, 2);
    let tcp = addrs[0].strip_prefix("tcp://").unwrap().to_owned();
    let udp = addrs[1].strip_prefix("udp://").unwrap().to_owned();
    for (server, udp) in [(tcp, false), (udp, true)] {
        let mut args = vec!["--server".to_owned(), server];
        if udp {
            args.push("--udp".into());
        }
        // The calls topic: its state, then the count with the subscribe.
        for a in ["--key", KEY, "--count", "2", "calls"] {
            args.push(a.into());
        }
        let out = watch(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "udp {udp}: {stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "udp {udp}: {stdout}");
        assert!(
            lines[0].starts_with("1 ") && lines[1].starts_with("2 "),
            "{stdout}"
        );
    }
    // Without the key, refused.
    let out = watch(vec![
        "--server".into(),
        addrs[0][6..].to_owned(),
        "calls".into(),
    ])
    .await;
    assert_ne!(out.status.code(), Some(0));
}
