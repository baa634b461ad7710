//! Topics and subscriptions on TCP (contract 10.3): subscribe (vectors S1
//! and S2), events with their own seq and `n`, a state topic's event 1,
//! interval coalescing, renewal, the table of 4, unsubscribe, leases, and
//! a slow reader losing events without delaying anyone's replies.

use std::time::{Duration, Instant};

use at_core::{ErrorCode, Kind};
use at_host::{Server, Topic};
use at_tests::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

async fn serve(topics: &[&Topic]) -> Server {
    let mut builder = Server::builder().calculator();
    for t in topics {
        builder = builder.with_topic(t);
    }
    builder
        .tcp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

fn topic(name: &str) -> Topic {
    Topic::new(name, "a test topic").unwrap()
}

async fn call(stream: &mut TcpStream, seq: u32, body: &str) -> RawReply {
    write(stream, &request(seq, body)).await;
    read_reply(stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_then_events_in_order() {
    let temp = topic("temp");
    let server = serve(&[&temp]).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    let s1 = request(
        8,
        r#"{"func": "rpc.subscribe", "args": ["temp", 60, 1000]}"#,
    );
    assert_eq!(
        &s1[..16],
        b"AT\x00\x01\x00\x00\x00\x08\x00\x00\x00\x35\xdd\x29\x75\x44"
    );
    write(&mut stream, &s1).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(
        &reply.header.to_bytes(),
        b"AT\x00\x02\x00\x00\x00\x08\x00\x00\x00\x69\x32\x7e\x78\x46"
    );
    assert_eq!(
        reply.body,
        r#"{"status": "success", "result": {"topic": "temp", "lease": 60, "interval": 1000, "n": 0, "credit": null}}"#
    );
    // Interval 0 now (a renewal replaces it), then three values.
    let reply = call(
        &mut stream,
        9,
        r#"{"func": "rpc.subscribe", "args": ["temp"]}"#,
    )
    .await;
    assert!(
        reply.body.contains(r#""lease": 60, "interval": 0, "n": 0"#),
        "{}",
        reply.body
    );
    for v in [1, 2, 3] {
        temp.publish(&v).unwrap();
    }
    for n in 1..=3u32 {
        let event = read_reply(&mut stream).await;
        assert_eq!((event.kind(), event.header.seq), (Kind::Notify, n));
        assert_eq!(
            event.body,
            format!(r#"{{"topic": "temp", "n": {n}, "value": {n}}}"#)
        );
    }
    // Replies still come in between.
    let reply = call(&mut stream, 10, r#"{"func": "add", "args": [1, 2]}"#).await;
    assert_eq!((reply.header.seq, reply.outcome()), (10, "3".to_owned()));
    // Unsubscribed: no more events.
    let reply = call(
        &mut stream,
        11,
        r#"{"func": "rpc.unsubscribe", "args": ["temp"]}"#,
    )
    .await;
    assert_eq!(reply.outcome(), "true");
    temp.publish(&4).unwrap();
    let reply = call(
        &mut stream,
        12,
        r#"{"func": "rpc.unsubscribe", "args": ["temp"]}"#,
    )
    .await;
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (12, "false".to_owned())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_topic_gives_its_value_as_event_1() {
    let temp = topic("temp");
    temp.publish(&21.5).unwrap();
    let server = serve(&[&temp]).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    let reply = call(
        &mut stream,
        1,
        r#"{"func": "rpc.subscribe", "args": ["temp"]}"#,
    )
    .await;
    assert_eq!(reply.header.seq, 1);
    let event = read_reply(&mut stream).await;
    assert_eq!(event.body, r#"{"topic": "temp", "n": 1, "value": 21.5}"#);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_keeps_only_the_newest_value() {
    let temp = topic("temp");
    let server = serve(&[&temp]).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    call(
        &mut stream,
        1,
        r#"{"func": "rpc.subscribe", "args": ["temp", 60, 300]}"#,
    )
    .await;
    let started = Instant::now();
    for v in [1, 2, 3] {
        temp.publish(&v).unwrap();
    }
    let first = read_reply(&mut stream).await;
    assert_eq!(first.body, r#"{"topic": "temp", "n": 1, "value": 1}"#);
    // 2 was replaced by 3 before the interval ended: no event, no n.
    let second = read_reply(&mut stream).await;
    assert_eq!(second.body, r#"{"topic": "temp", "n": 2, "value": 3}"#);
    assert!(started.elapsed() >= Duration::from_millis(290));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_per_subscriber_bad_arguments_and_rpc_topics() {
    let ts: Vec<Topic> = (1..=5).map(|i| topic(&format!("t{i}"))).collect();
    let server = serve(&ts.iter().collect::<Vec<_>>()).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    for i in 1..=4 {
        let body = format!(r#"{{"func": "rpc.subscribe", "args": ["t{i}"]}}"#);
        assert_eq!(call(&mut stream, i, &body).await.kind(), Kind::Response);
    }
    let reply = call(
        &mut stream,
        5,
        r#"{"func": "rpc.subscribe", "args": ["t5"]}"#,
    )
    .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::Busy));
    assert!(reply.body.contains("subscription table full"));
    // A renewal needs no slot.
    let reply = call(
        &mut stream,
        6,
        r#"{"func": "rpc.subscribe", "args": ["t1", 30]}"#,
    )
    .await;
    assert!(reply.body.contains(r#""lease": 30"#), "{}", reply.body);
    for (seq, body, code) in [
        (
            7,
            r#"{"func": "rpc.subscribe", "args": ["nope"]}"#,
            ErrorCode::UnknownTopic,
        ),
        (
            8,
            r#"{"func": "rpc.subscribe", "args": ["t1", 0]}"#,
            ErrorCode::InvalidArguments,
        ),
        (
            9,
            r#"{"func": "rpc.subscribe", "args": ["t1", 301]}"#,
            ErrorCode::InvalidArguments,
        ),
        (
            10,
            r#"{"func": "rpc.subscribe", "args": ["t1", 1.5]}"#,
            ErrorCode::InvalidArguments,
        ),
        (
            11,
            r#"{"func": "rpc.subscribe", "args": ["t1", 60, -1]}"#,
            ErrorCode::InvalidArguments,
        ),
    ] {
        assert_eq!(
            error_code(&call(&mut stream, seq, body).await),
            Some(code),
            "{body}"
        );
    }
    let reply = call(&mut stream, 12, r#"{"func": "rpc.topics"}"#).await;
    assert!(
        reply.body.starts_with(
            r#"{"status": "success", "result": {"topics": [{"name": "t1", "doc": "a test topic"}, "#
        ),
        "{}",
        reply.body
    );
    let reply = call(&mut stream, 13, r#"{"func": "rpc.info"}"#).await;
    assert!(
        reply
            .body
            .ends_with(r#""ext": ["notify", "events", "deadline", "cancel", "peer"]}}"#),
        "{}",
        reply.body
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_runs_out_ends_with_an_end_event() {
    let temp = topic("temp");
    let server = serve(&[&temp]).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    call(
        &mut stream,
        1,
        r#"{"func": "rpc.subscribe", "args": ["temp", 1]}"#,
    )
    .await;
    let started = Instant::now();
    let end = read_reply(&mut stream).await;
    assert_eq!(end.body, r#"{"topic": "temp", "n": 1, "end": "lease"}"#);
    assert!(started.elapsed() >= Duration::from_millis(900));
    temp.publish(&1).unwrap();
    let reply = call(&mut stream, 2, r#"{"func": "rpc.ping"}"#).await;
    assert_eq!(reply.header.seq, 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_loses_events_and_delays_no_reply() {
    let temp = topic("temp");
    let server = serve(&[&temp]).await;
    let addr = server.tcp_addr().unwrap();
    let mut slow = connect(addr).await;
    call(
        &mut slow,
        1,
        r#"{"func": "rpc.subscribe", "args": ["temp"]}"#,
    )
    .await;
    let mut quick = connect(addr).await;
    let big = "x".repeat(4000);
    let published = 8000u32;
    for i in 0..published {
        temp.publish(&big).unwrap();
        if i % 200 == 0 {
            // Another client's calls are answered meanwhile.
            let reply = tokio::time::timeout(
                Duration::from_secs(2),
                call(&mut quick, i, r#"{"func": "rpc.ping"}"#),
            )
            .await
            .expect("a prompt reply to another client");
            assert_eq!(reply.header.seq, i);
        }
    }
    // The slow reader now calls and reads: its reply comes, after at most
    // the events its queue and socket held; then a last, marked event.
    // Some were lost: fewer events than n says.
    write(&mut slow, &request(2, r#"{"func": "rpc.ping"}"#)).await;
    let (mut events, mut replied) = (0u32, false);
    let last_n = loop {
        let mut head = [0u8; 16];
        tokio::time::timeout(PATIENCE, slow.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        let header = at_core::Header::from_bytes(&head);
        let mut body = vec![0u8; header.length as usize];
        tokio::time::timeout(PATIENCE, slow.read_exact(&mut body))
            .await
            .unwrap()
            .unwrap();
        if header.kind() == Ok(Kind::Response) {
            assert_eq!(header.seq, 2);
            replied = true;
            temp.publish("last").unwrap();
            continue;
        }
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        events += 1;
        if value["value"] == "last" {
            break value["n"].as_u64().unwrap();
        }
    };
    assert!(replied);
    assert_eq!(
        last_n,
        u64::from(published) + 1,
        "n counts every event made"
    );
    assert!(
        events < published,
        "{events} events of {published}: none lost?"
    );
    server.shutdown().await;
}

/// Reads events from `stream` until one of topic `calls` has a value of
/// at least `at_least`; returns that value.
async fn calls_reach(stream: &mut TcpStream, at_least: u64) -> u64 {
    loop {
        let event = read_reply(stream).await;
        assert_eq!(event.kind(), Kind::Notify, "{}", event.body);
        let body: serde_json::Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["topic"], "calls");
        let count = body["value"].as_u64().unwrap();
        if count >= at_least {
            return count;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_topic_counts_the_calls_answered() {
    let server = Server::builder()
        .calculator()
        .calls_topic("calls")
        .tcp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    for seq in 1..=3 {
        call(&mut stream, seq, r#"{"func": "add", "args": [1, 2]}"#).await;
    }
    let reply = call(
        &mut stream,
        4,
        r#"{"func": "rpc.subscribe", "args": ["calls"]}"#,
    )
    .await;
    assert_eq!(reply.kind(), Kind::Response, "{}", reply.body);
    // Three adds and the subscribe, published within about a second.
    assert_eq!(calls_reach(&mut stream, 4).await, 4);
    server.shutdown().await;
}

#[test]
fn at_host_serve_publishes_calls() {
    let mut serve = std::process::Command::new(at_host_bin());
    serve.args(["serve", "--tcp", "127.0.0.1:0"]);
    let (_server, addrs) = spawn_server(serve, 1);
    let addr = addrs[0].strip_prefix("tcp://").unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut stream = connect(addr).await;
        call(&mut stream, 1, r#"{"func": "add", "args": [1, 2]}"#).await;
        let reply = call(
            &mut stream,
            2,
            r#"{"func": "rpc.subscribe", "args": ["calls"]}"#,
        )
        .await;
        assert_eq!(reply.kind(), Kind::Response, "{}", reply.body);
        assert_eq!(calls_reach(&mut stream, 2).await, 2);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_keeps_the_subscription_past_its_first_lease() {
    let temp = topic("temp");
    let server = serve(&[&temp]).await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    call(
        &mut stream,
        1,
        r#"{"func": "rpc.subscribe", "args": ["temp", 1]}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let renewed = Instant::now();
    call(
        &mut stream,
        2,
        r#"{"func": "rpc.subscribe", "args": ["temp", 2]}"#,
    )
    .await;
    // Past the first lease's end: still held.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    temp.publish(&5).unwrap();
    let event = read_reply(&mut stream).await;
    assert_eq!(event.body, r#"{"topic": "temp", "n": 1, "value": 5}"#);
    let end = read_reply(&mut stream).await;
    assert_eq!(end.body, r#"{"topic": "temp", "n": 2, "end": "lease"}"#);
    assert!(renewed.elapsed() >= Duration::from_millis(1900));
    server.shutdown().await;
}
