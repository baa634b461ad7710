//! Contract section 10 at the device servers (the very `TcpServer`,
//! `UdpServer` and at-core subscription table a board runs, on the desktop
//! over std-embedded-nal, loopback, OS-chosen ports): subscriptions and
//! events over TCP and UDP, plain and sealed; notifications that run and
//! are never answered; `deadline_ms` 0. Raw frames, so every byte the
//! contract fixes is checked.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use at_core::event::{End, Event, Payload};
use at_core::{CallError, Frame, Function, HEADER_LEN, Kind, Value as V};
use at_embedded_example::desktop::{self, Running};
use at_host::AuthKey;
use at_tests::sealed::{raw_session, read_raw, sealed};
use at_tests::*;
use tokio::net::TcpStream;

const KEY: &str = "bench:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Runs of `count`, per test (each test names its own counter).
static RUNS_NOTIFY: AtomicI64 = AtomicI64::new(0);
static RUNS_DEADLINE: AtomicI64 = AtomicI64::new(0);

fn count_notify<'a>(_: &[V<'a>]) -> Result<V<'a>, CallError> {
    Ok(V::Int(RUNS_NOTIFY.fetch_add(1, Ordering::SeqCst) + 1))
}

fn count_deadline<'a>(_: &[V<'a>]) -> Result<V<'a>, CallError> {
    Ok(V::Int(RUNS_DEADLINE.fetch_add(1, Ordering::SeqCst) + 1))
}

static NOTIFY_TABLE: [Function; 2] = [
    at_core::calculator::ADD,
    Function::new("count", count_notify),
];
static DEADLINE_TABLE: [Function; 2] = [
    at_core::calculator::ADD,
    Function::new("count", count_deadline),
];

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn start() -> Running {
    desktop::start(Some(loopback()), Some(loopback())).expect("servers start")
}

fn keys() -> &'static [at_core::auth::Key<'static>] {
    Box::leak(Box::new([at_core::auth::Key::parse(KEY).unwrap()]))
}

/// A frame read whole, checked.
fn parse(bytes: &[u8]) -> Frame<'_> {
    Frame::parse(bytes, u32::MAX).expect("a well-formed frame")
}

/// The event a plain NOTIFY frame carries.
fn event_of(bytes: &[u8]) -> Event<'_> {
    let frame = parse(bytes);
    assert_eq!(frame.kind, Kind::Notify, "an event frame");
    Event::parse(frame.body).expect("an event body")
}

fn int(p: &Payload<'_>) -> i64 {
    match p {
        Payload::Value(V::Int(i)) => *i,
        other => panic!("an integer value, not {other:?}"),
    }
}

async fn subscribe(stream: &mut TcpStream, seq: u32, args: &str) -> serde_json::Value {
    let body = format!(r#"{{"func": "rpc.subscribe", "args": [{args}]}}"#);
    write(stream, &request(seq, &body)).await;
    let reply = read_reply(stream).await;
    assert_eq!(reply.header.seq, seq);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_info_lists_what_the_device_servers_implement() {
    let running = start();
    let mut s = connect(running.tcp_addr().unwrap()).await;
    write(&mut s, &request(1, r#"{"func": "rpc.info"}"#)).await;
    let reply = read_reply(&mut s).await;
    assert!(
        reply
            .body
            .ends_with(r#""ext": ["notify", "events", "deadline"]}}"#),
        "{}",
        reply.body
    );
    write(&mut s, &request(2, r#"{"func": "rpc.topics"}"#)).await;
    assert_eq!(
        read_reply(&mut s).await.body,
        r#"{"status": "success", "result": {"topics": [{"name": "uptime", "doc": "seconds since start"}, {"name": "calls", "doc": "calls answered"}], "next": null}}"#
    );
    write(
        &mut s,
        &request(3, r#"{"func": "rpc.topics", "args": [1]}"#),
    )
    .await;
    assert!(
        read_reply(&mut s)
            .await
            .body
            .contains(r#"[{"name": "calls""#)
    );
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_state_topic_gives_event_1_at_once_then_contiguous_n() {
    let running = start();
    let mut s = connect(running.tcp_addr().unwrap()).await;
    let json = subscribe(&mut s, 8, r#""uptime", 60, 0"#).await;
    assert_eq!(
        json["result"],
        serde_json::json!({"topic": "uptime", "lease": 60, "interval": 0, "n": 0, "credit": null})
    );
    // Event 1, the state, right after the reply; then one a second.
    let mut last = None;
    for n in 1..=3u32 {
        let raw = read_raw(&mut s).await;
        assert_eq!(parse(&raw).seq(), n, "the connection's own seq, from 1");
        let e = event_of(&raw);
        assert_eq!((e.topic.as_plain(), e.n), (Some("uptime"), n));
        let value = int(&e.payload);
        if let Some(previous) = last {
            assert!(value > previous, "uptime grows: {previous} then {value}");
        }
        last = Some(value);
    }
    // Calls on the same connection still get their replies.
    write(&mut s, &calc(20, "add", "1", "2")).await;
    let reply = loop {
        let raw = read_raw(&mut s).await;
        if parse(&raw).kind != Kind::Notify {
            break parse_reply(&raw);
        }
    };
    assert_eq!((reply.header.seq, reply.outcome()), (20, "3".to_string()));
    // Unsubscribed: true once, then false; no more events come.
    write(
        &mut s,
        &request(21, r#"{"func": "rpc.unsubscribe", "args": ["uptime"]}"#),
    )
    .await;
    let reply = loop {
        let raw = read_raw(&mut s).await;
        if parse(&raw).kind != Kind::Notify {
            break parse_reply(&raw);
        }
    };
    assert_eq!(reply.outcome(), "true");
    write(
        &mut s,
        &request(22, r#"{"func": "rpc.unsubscribe", "args": ["uptime"]}"#),
    )
    .await;
    assert_eq!(read_reply(&mut s).await.outcome(), "false");
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_coalesce_to_the_newest_value_under_an_interval() {
    let running = start();
    let addr = running.tcp_addr().unwrap();
    let mut watcher = connect(addr).await;
    let json = subscribe(&mut watcher, 1, r#""calls", 60, 1500"#).await;
    assert_eq!(json["result"]["interval"], 1500);
    let mut caller = connect(addr).await;
    for seq in 1..=5 {
        write(&mut caller, &calc(seq, "add", "1", "1")).await;
        assert_eq!(read_reply(&mut caller).await.outcome(), "2");
    }
    // The first call's count leaves at once; the other four are replaced
    // by the newest while the interval runs, then leave as one event.
    let first = read_raw(&mut watcher).await;
    let first = event_of(&first);
    assert_eq!(first.n, 1);
    let second_raw = read_raw(&mut watcher).await;
    let second = event_of(&second_raw);
    assert_eq!(
        (second.n, int(&second.payload)),
        (2, 5),
        "n 2 carries the newest count"
    );
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_arguments_and_topics_are_checked() {
    let running = start();
    let mut s = connect(running.tcp_addr().unwrap()).await;
    for (args, code) in [
        (r#""nope""#, "unknown_topic"),
        (r#""uptime", 0"#, "invalid_arguments"),
        (r#""uptime", 301"#, "invalid_arguments"),
        (r#""uptime", 60, -1"#, "invalid_arguments"),
        (r#""bad topic""#, "invalid_arguments"),
        ("", "invalid_arguments"),
    ] {
        let json = subscribe(&mut s, 5, args).await;
        assert_eq!(json["code"], code, "rpc.subscribe({args})");
    }
    running.stop();
}

/// One datagram from `socket`, bounded.
fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).expect("a datagram in time");
    buf[..n].to_vec()
}

#[test]
fn udp_subscription_carries_a_credit_and_ends_with_its_lease() {
    let running = start();
    let socket = UdpSocket::bind(loopback()).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    socket.connect(running.udp_addr().unwrap()).unwrap();
    // A padded subscribe (10.8 rule 1: events may total 3 times it).
    let pad = "x".repeat(300);
    let body = format!(r#"{{"func": "rpc.subscribe", "args": ["uptime", 1, 0], "pad": "{pad}"}}"#);
    socket.send(&request(9, &body)).unwrap();
    let reply = parse_reply(&recv(&socket));
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["result"]["credit"], 16, "{}", reply.body);
    assert_eq!(json["result"]["lease"], 1);
    let started = Instant::now();
    let mut ns = Vec::new();
    let end = loop {
        let raw = recv(&socket);
        let e = event_of(&raw);
        ns.push(e.n);
        if let Payload::End(end) = e.payload {
            break end;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the lease ends it"
        );
    };
    assert_eq!(end, End::Lease);
    let expected: Vec<u32> = (1..=ns.len() as u32).collect();
    assert_eq!(ns, expected, "n contiguous, the end event last");
    // Nothing after the end.
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(socket.recv(&mut buf).is_err(), "no event after the end");
    running.stop();
}

#[test]
fn a_small_plain_udp_subscribe_buys_only_three_times_its_size() {
    let running = start();
    let socket = UdpSocket::bind(loopback()).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(2500)))
        .unwrap();
    socket.connect(running.udp_addr().unwrap()).unwrap();
    // 16 + 54 = 70 bytes: 210 bytes of events, three of about 60.
    let body = r#"{"func": "rpc.subscribe", "args": ["uptime", 60, 0]}"#;
    socket.send(&request(3, body)).unwrap();
    let _reply = recv(&socket);
    let mut events = 0;
    let mut buf = [0u8; 256];
    while socket.recv(&mut buf).is_ok() {
        events += 1;
        assert!(events <= 3, "the amplification budget bounds the events");
    }
    assert!(events >= 1, "the state came");
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_events_verify_under_k_rep_and_a_reflected_one_fails() {
    let running = desktop::start_with_keys(
        Some(loopback()),
        None,
        &at_core::calculator::CALCULATOR,
        keys(),
    )
    .unwrap();
    let mut s = connect(running.tcp_addr().unwrap()).await;
    let key = AuthKey::parse(KEY).unwrap();
    let session = raw_session(&mut s, &key).await;
    // A plain subscribe is refused where authentication is required.
    let json = subscribe(&mut s, 2, r#""uptime""#).await;
    assert_eq!(json["code"], "unauthorized");
    write(
        &mut s,
        &sealed(
            &session,
            3,
            r#"{"func": "rpc.subscribe", "args": ["uptime", 60, 0]}"#,
        ),
    )
    .await;
    let reply = read_raw(&mut s).await;
    assert_eq!(at_tests::sealed::code(&reply), "success");
    let mut seqs = Vec::new();
    for n in 1..=2u32 {
        let raw = read_raw(&mut s).await;
        let frame = parse(&raw);
        assert_eq!(frame.header.flags, 0x0018, "a sealed event");
        let body = session
            .open_reply(&frame)
            .expect("tag under K_rep verifies");
        let e = Event::parse(body).unwrap();
        assert_eq!(e.n, n);
        seqs.push(frame.seq());
        if n == 2 {
            // Reflected to the server, the event fails its tag there (it
            // is under K_rep, the server checks K_req): dropped, as any
            // sealed NOTIFY that fails; the connection goes on.
            write(&mut s, &raw).await;
        }
    }
    assert_eq!(seqs, [1, 2], "the session's own counter, from 1");
    write(
        &mut s,
        &sealed(&session, 4, r#"{"func": "add", "args": [2, 2]}"#),
    )
    .await;
    let reply = loop {
        let raw = read_raw(&mut s).await;
        if parse(&raw).kind != Kind::Notify {
            break raw;
        }
    };
    assert_eq!(at_tests::sealed::sealed_result(&reply), 4);
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_run_once_and_are_never_answered() {
    let running = desktop::start_with(Some(loopback()), Some(loopback()), &NOTIFY_TABLE).unwrap();
    let mut s = connect(running.tcp_addr().unwrap()).await;
    let notify = |seq, body: &str| frame(Kind::Notify, seq, body.as_bytes());
    // Unanswered: a good one, an unknown function, a bad CRC.
    write(&mut s, &notify(7, r#"{"func": "count", "args": []}"#)).await;
    write(&mut s, &notify(8, r#"{"func": "nope", "args": []}"#)).await;
    let mut bad = notify(9, r#"{"func": "count", "args": []}"#);
    bad[HEADER_LEN] ^= 1;
    write(&mut s, &bad).await;
    write(&mut s, &request(10, r#"{"func": "count", "args": []}"#)).await;
    let reply = read_reply(&mut s).await;
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (10, "2".to_string()),
        "only seq 10 is answered; count ran once before"
    );
    // UDP: a repeated notification runs once.
    let socket = UdpSocket::bind(loopback()).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    socket.connect(running.udp_addr().unwrap()).unwrap();
    let once = notify(11, r#"{"func": "count", "args": []}"#);
    socket.send(&once).unwrap();
    socket.send(&once).unwrap();
    socket
        .send(&request(12, r#"{"func": "count", "args": []}"#))
        .unwrap();
    let reply = parse_reply(&recv(&socket));
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (12, "4".to_string()),
        "the repeat did not run"
    );
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_zero_is_exceeded_and_the_function_never_runs() {
    let running = desktop::start_with(Some(loopback()), None, &DEADLINE_TABLE).unwrap();
    let mut s = connect(running.tcp_addr().unwrap()).await;
    write(
        &mut s,
        &request(10, r#"{"func": "count", "args": [], "deadline_ms": 0}"#),
    )
    .await;
    let reply = read_reply(&mut s).await;
    assert_eq!(reply.outcome(), "error deadline_exceeded");
    // Vector D1 -> D2, byte for byte.
    write(
        &mut s,
        &request(10, r#"{"func": "add", "args": [10, 20], "deadline_ms": 0}"#),
    )
    .await;
    let reply = read_raw(&mut s).await;
    assert_eq!(
        hex(&reply[..HEADER_LEN]),
        "415400040000000a00000050d0f5355e"
    );
    write(
        &mut s,
        &request(11, r#"{"func": "count", "args": [], "deadline_ms": 5000}"#),
    )
    .await;
    assert_eq!(
        read_reply(&mut s).await.outcome(),
        "1",
        "count ran once, with time to spare"
    );
    assert_eq!(RUNS_DEADLINE.load(Ordering::SeqCst), 1);
    running.stop();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
