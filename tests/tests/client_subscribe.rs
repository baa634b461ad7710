//! The clients' subscriptions (contract 10.3, 10.6, 10.8 rules 6 and 11):
//! `Client::subscribe` against in-process servers with topics (events in
//! order while calls go on, renewal past a short lease, unknown topics),
//! and against scripted servers (a gap and an end, the unsubscribe sent on
//! drop, a sealed subscription dropping plain, replayed and forged events,
//! and on UDP a renewal when half the credit is spent).

use std::time::Duration;

use at_core::auth::crypto;
use at_core::{ErrorCode, HEADER_LEN, Kind};
use at_host::{
    AuthKey, Client, EndReason, Error, Server, SubscribeOptions, Topic, UdpClient, UdpConfig,
    Update,
};
use at_tests::sealed::read_raw;
use at_tests::{PATIENCE, frame, read_reply, write};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

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

async fn client(server: &Server) -> Client {
    Client::connect(server.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap()
}

/// `sub.next()`, bounded.
async fn next<T: serde::de::DeserializeOwned>(sub: &mut at_host::Subscription<'_, T>) -> Update<T> {
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("an update in time")
        .expect("an update")
}

fn granted_body(n: u32, lease: u32, credit: &str) -> String {
    format!(
        r#"{{"status": "success", "result": {{"topic": "temp", "lease": {lease}, "interval": 0, "n": {n}, "credit": {credit}}}}}"#
    )
}

fn event(seq: u32, n: u32, value: &str) -> Vec<u8> {
    let body = format!(r#"{{"topic": "temp", "n": {n}, "value": {value}}}"#);
    frame(Kind::Notify, seq, body.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_come_in_order_while_calls_go_on() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&[&temp]).await;
    let client = client(&server).await;
    let mut sub = client.subscribe::<i64>("temp").await.unwrap();
    assert_eq!(sub.granted().n, 0);
    assert_eq!(sub.granted().credit, None);
    // The subscription waits (and reads) while calls are made on the same
    // client; then the values come.
    let (events, ()) = tokio::join!(
        async {
            let mut got = Vec::new();
            for _ in 0..5 {
                got.push(next(&mut sub).await);
            }
            got
        },
        async {
            for i in 0..20i64 {
                let sum: i64 = tokio::time::timeout(PATIENCE, client.call_as("add", (i, 1)))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(sum, i + 1);
            }
            for v in 1..=5 {
                temp.publish(&(v * 10)).unwrap();
            }
        }
    );
    let want: Vec<Update<i64>> = (1..=5)
        .map(|n| Update::Event {
            n,
            value: i64::from(n) * 10,
        })
        .collect();
    assert_eq!(events, want);
    // Calls after the events, too.
    assert_eq!(client.call_as::<i64>("mul", (6, 7)).await.unwrap(), 42);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_a_subscription_past_a_short_lease() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&[&temp]).await;
    let client = client(&server).await;
    let options = SubscribeOptions {
        lease: Duration::from_secs(2),
        interval: Duration::ZERO,
    };
    let mut sub = client.subscribe_with::<i64>("temp", options).await.unwrap();
    assert_eq!(sub.granted().lease, Duration::from_secs(2));
    // Two and a quarter leases with nothing published: without renewals
    // (each at half the lease, 1 s) the server would end the subscription
    // ("end": "lease") after one.
    let quiet = tokio::time::timeout(Duration::from_millis(4500), sub.next()).await;
    assert!(quiet.is_err(), "nothing should come: {quiet:?}");
    temp.publish(&7).unwrap();
    assert_eq!(next(&mut sub).await, Update::Event { n: 1, value: 7 });
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_topic_is_an_error_and_the_name_is_free_again() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&[&temp]).await;
    let client = client(&server).await;
    let e = client.subscribe::<i64>("nope").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownTopic), "{e}");
    let e = client.subscribe::<i64>("rpc.bad").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArguments), "{e}");
    // One subscription per topic and client.
    let held = client.subscribe::<i64>("temp").await.unwrap();
    let e = client.subscribe::<i64>("temp").await.unwrap_err();
    assert!(matches!(e, Error::Arguments { .. }), "{e}");
    drop(held);
    // Free again after the drop; the client still works.
    let _again = client.subscribe::<i64>("temp").await.unwrap();
    assert_eq!(client.call_as::<i64>("add", (1, 2)).await.unwrap(), 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_of_the_wrong_type_skips_one_event() {
    let temp = Topic::new("temp", "").unwrap();
    let server = serve(&[&temp]).await;
    let client = client(&server).await;
    let mut sub = client.subscribe::<i64>("temp").await.unwrap();
    temp.publish("warm").unwrap();
    temp.publish(&3).unwrap();
    let e = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
    assert_eq!(next(&mut sub).await, Update::Event { n: 2, value: 3 });
    server.shutdown().await;
}

/// A scripted TCP server: accepts one connection.
async fn scripted() -> (std::net::SocketAddr, tokio::task::JoinHandle<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
    (addr, accept)
}

/// Reads one plain request and answers it with `body` (success).
async fn answer(stream: &mut TcpStream, body: &str) -> String {
    let request = read_reply(stream).await;
    let reply = frame(Kind::Response, request.header.seq, body.as_bytes());
    write(stream, &reply).await;
    request.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_duplicates_other_topics_and_the_end() {
    let (addr, accept) = scripted().await;
    let server = tokio::spawn(async move {
        let mut stream = accept.await.unwrap();
        let asked = answer(&mut stream, &granted_body(0, 60, "null")).await;
        assert_eq!(
            asked,
            r#"{"func": "rpc.subscribe", "args": ["temp", 60, 0]}"#
        );
        let mut out = Vec::new();
        out.extend(event(1, 1, "1"));
        out.extend(event(2, 2, "2"));
        out.extend(event(3, 5, "5"));
        out.extend(event(4, 5, "55")); // not above the largest: dropped
        out.extend(event(5, 3, "3")); // late: dropped
        out.extend(frame(
            Kind::Notify,
            6,
            br#"{"topic": "other", "n": 6, "value": 0}"#,
        )); // not held: dropped
        out.extend(frame(
            Kind::Notify,
            7,
            br#"{"func": "add", "args": [1, 2]}"#,
        )); // a call: dropped
        out.extend(event(8, 6, "6"));
        out.extend(frame(
            Kind::Notify,
            9,
            br#"{"topic": "temp", "n": 7, "end": "topic"}"#,
        ));
        write(&mut stream, &out).await;
        stream
    });
    let client = Client::connect(addr, PATIENCE).await.unwrap();
    let mut sub = client.subscribe::<i64>("temp").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(next(&mut sub).await);
    }
    assert_eq!(
        got,
        vec![
            Update::Event { n: 1, value: 1 },
            Update::Event { n: 2, value: 2 },
            Update::Gap { first: 3, last: 4 },
            Update::Event { n: 5, value: 5 },
            Update::Event { n: 6, value: 6 },
            Update::End {
                n: 7,
                reason: EndReason::Topic
            },
        ]
    );
    assert!(matches!(next(&mut sub).await, Update::End { n: 7, .. }));
    drop(server.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_sends_unsubscribe_and_later_events_are_dropped() {
    let (addr, accept) = scripted().await;
    let server = tokio::spawn(async move {
        let mut stream = accept.await.unwrap();
        answer(&mut stream, &granted_body(0, 60, "null")).await;
        // The drop's notification.
        let unsubscribe = read_reply(&mut stream).await;
        assert_eq!(unsubscribe.header.flags, 0x0010);
        assert_eq!(
            unsubscribe.body,
            r#"{"func": "rpc.unsubscribe", "args": ["temp"]}"#
        );
        // An event sent anyway: the client no longer holds the topic.
        write(&mut stream, &event(1, 1, "111")).await;
        let ping = answer(&mut stream, r#"{"status": "success", "result": true}"#).await;
        assert!(ping.contains("rpc.ping"), "{ping}");
        // Subscribed again: a new slot, whose event 1 comes.
        answer(&mut stream, &granted_body(0, 60, "null")).await;
        write(&mut stream, &event(2, 1, "9")).await;
        stream
    });
    let client = Client::connect(addr, PATIENCE).await.unwrap();
    let sub = client.subscribe::<i64>("temp").await.unwrap();
    drop(sub);
    assert!(client.call_as::<bool>("rpc.ping", ()).await.unwrap());
    let mut sub = client.subscribe::<i64>("temp").await.unwrap();
    assert_eq!(next(&mut sub).await, Update::Event { n: 1, value: 9 });
    drop(server.await.unwrap());
}

/// A sealed frame the server sends: `flags`, `seq`, `body`, tagged under
/// `key` in session `sid` (contract section 9's trailer).
fn sealed(flags: u16, seq: u32, body: &[u8], key: &[u8; 32], sid: &[u8; 8]) -> Vec<u8> {
    let length = (body.len() + 24) as u32;
    let mut head = [0u8; 12];
    head[..2].copy_from_slice(&0x4154u16.to_be_bytes());
    head[2..4].copy_from_slice(&flags.to_be_bytes());
    head[4..8].copy_from_slice(&seq.to_be_bytes());
    head[8..12].copy_from_slice(&length.to_be_bytes());
    let tag = crypto::tag(key, &head, body, sid);
    let mut rest = body.to_vec();
    rest.extend_from_slice(sid);
    rest.extend_from_slice(&tag);
    let mut out = head.to_vec();
    out.extend_from_slice(&at_core::checksum(&rest).to_be_bytes());
    out.extend(rest);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_subscription_takes_only_verified_new_events() {
    let secret = [7u8; 32];
    let key = AuthKey::new("watcher", secret).unwrap();
    let (addr, accept) = scripted().await;
    let server = tokio::spawn(async move {
        let mut stream = accept.await.unwrap();
        // The hello, answered with a session as a server would.
        let hello = read_reply(&mut stream).await;
        let json: serde_json::Value = serde_json::from_str(&hello.body).unwrap();
        assert_eq!(json["func"], "rpc.hello");
        assert_eq!(json["args"][0], "watcher");
        let nc_hex = json["args"][1].as_str().unwrap();
        let nc: [u8; 16] =
            std::array::from_fn(|i| u8::from_str_radix(&nc_hex[2 * i..2 * i + 2], 16).unwrap());
        let ns = [0xb0u8; 16];
        let sid = [0xc0u8; 8];
        let keys = crypto::derive(&secret, "watcher", &nc, &ns);
        let proof = crypto::proof(&keys.reply, &sid);
        let body = format!(
            r#"{{"status": "success", "result": {{"session": "{}", "nonce": "{}", "proof": "{}"}}}}"#,
            hex(&sid),
            hex(&ns),
            hex(&proof)
        );
        write(
            &mut stream,
            &frame(Kind::Response, hello.header.seq, body.as_bytes()),
        )
        .await;
        // The subscribe, sealed under K_req.
        let subscribe = read_raw(&mut stream).await;
        assert_eq!(u16::from_be_bytes([subscribe[2], subscribe[3]]), 0x0009);
        let seq = u32::from_be_bytes(subscribe[4..8].try_into().unwrap());
        let body = &subscribe[HEADER_LEN..subscribe.len() - 24];
        let tag: [u8; 16] = subscribe[subscribe.len() - 16..].try_into().unwrap();
        assert!(crypto::tag_is_valid(
            &keys.request,
            subscribe[..12].try_into().unwrap(),
            body,
            &sid,
            &tag
        ));
        assert_eq!(
            body,
            br#"{"func": "rpc.subscribe", "args": ["temp", 60, 0]}"#
        );
        let reply = granted_body(0, 60, "null");
        write(
            &mut stream,
            &sealed(0x000A, seq, reply.as_bytes(), &keys.reply, &sid),
        )
        .await;
        let ev = |n: u32, v: &str| format!(r#"{{"topic": "temp", "n": {n}, "value": "{v}"}}"#);
        let mut out = Vec::new();
        out.extend(sealed(0x0018, 1, ev(1, "a").as_bytes(), &keys.reply, &sid));
        // Plain: a client holding a key drops it.
        out.extend(frame(Kind::Notify, 2, ev(2, "plain").as_bytes()));
        // Under K_req (a reflected frame): fails its tag.
        out.extend(sealed(
            0x0018,
            2,
            ev(2, "reflected").as_bytes(),
            &keys.request,
            &sid,
        ));
        out.extend(sealed(0x0018, 2, ev(2, "b").as_bytes(), &keys.reply, &sid));
        // Seq 2 again, a new n: the window drops it.
        out.extend(sealed(
            0x0018,
            2,
            ev(3, "replayed").as_bytes(),
            &keys.reply,
            &sid,
        ));
        out.extend(sealed(0x0018, 3, ev(3, "c").as_bytes(), &keys.reply, &sid));
        write(&mut stream, &out).await;
        // The unsubscribe on drop: a sealed NOTIFY (0x0018).
        let unsubscribe = read_raw(&mut stream).await;
        assert_eq!(u16::from_be_bytes([unsubscribe[2], unsubscribe[3]]), 0x0018);
        assert_eq!(
            &unsubscribe[HEADER_LEN..unsubscribe.len() - 24],
            br#"{"func": "rpc.unsubscribe", "args": ["temp"]}"#
        );
        stream
    });
    let client = Client::connect(addr, PATIENCE).await.unwrap().with_key(key);
    let mut sub = client.subscribe::<String>("temp").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut sub).await);
    }
    assert_eq!(
        got,
        ["a", "b", "c"]
            .iter()
            .zip(1..)
            .map(|(v, n)| Update::Event {
                n,
                value: v.to_string()
            })
            .collect::<Vec<_>>()
    );
    drop(sub);
    drop(
        tokio::time::timeout(PATIENCE, server)
            .await
            .unwrap()
            .unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_renews_when_half_the_credit_is_spent() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    // The responder: a subscribe granted with a credit of 4 and a long
    // lease; two events; then it waits for the renewal before two more.
    let responder = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut subscribes = Vec::new();
        let mut server_seq = 1;
        loop {
            let (len, from) = tokio::time::timeout(PATIENCE, socket.recv_from(&mut buf))
                .await
                .expect("a datagram in time")
                .unwrap();
            let got = at_core::Frame::parse(&buf[..len], u32::MAX).unwrap();
            let body = String::from_utf8(got.body.to_vec()).unwrap();
            if got.kind == Kind::Notify {
                assert_eq!(body, r#"{"func": "rpc.unsubscribe", "args": ["temp"]}"#);
                return subscribes;
            }
            assert!(body.contains("rpc.subscribe"), "{body}");
            // Padded for the event budget (10.8 rule 1).
            assert_eq!(len, 512, "{body}");
            assert!(
                body.starts_with(
                    r#"{"func": "rpc.subscribe", "args": ["temp", 60, 0], "pad": "  "#
                ),
                "{body}"
            );
            let n = 2 * subscribes.len() as u32;
            subscribes.push(body);
            let reply = frame(
                Kind::Response,
                got.seq(),
                granted_body(n, 60, "4").as_bytes(),
            );
            socket.send_to(&reply, from).await.unwrap();
            if subscribes.len() <= 2 {
                for k in 1..=2 {
                    let e = event(server_seq, n + k, &(n + k).to_string());
                    server_seq += 1;
                    socket.send_to(&e, from).await.unwrap();
                }
            }
        }
    });
    let client = UdpClient::connect(addr, UdpConfig::default())
        .await
        .unwrap();
    let mut sub = client.subscribe::<u32>("temp").await.unwrap();
    assert_eq!(sub.granted().credit, Some(4));
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next(&mut sub).await);
    }
    let want: Vec<Update<u32>> = (1..=4).map(|n| Update::Event { n, value: n }).collect();
    assert_eq!(got, want);
    drop(sub);
    let subscribes = tokio::time::timeout(PATIENCE, responder)
        .await
        .unwrap()
        .unwrap();
    // The first subscribe and one renewal (after 2 of 4 events), the same
    // request each time.
    assert_eq!(subscribes.len(), 2, "{subscribes:?}");
    assert_eq!(subscribes[0], subscribes[1]);
}

/// Reads a hello from `stream` and answers it with session `sid` (a fixed
/// server nonce) under `secret`, as a server would; returns the keys.
async fn answer_hello(
    stream: &mut TcpStream,
    secret: &[u8; 32],
    kid: &str,
    sid: &[u8; 8],
) -> crypto::SessionKeys {
    let hello = read_reply(stream).await;
    let json: serde_json::Value = serde_json::from_str(&hello.body).unwrap();
    assert_eq!(json["func"], "rpc.hello", "{}", hello.body);
    let nc_hex = json["args"][1].as_str().unwrap();
    let nc: [u8; 16] =
        std::array::from_fn(|i| u8::from_str_radix(&nc_hex[2 * i..2 * i + 2], 16).unwrap());
    let ns = [0xb0u8; 16];
    let keys = crypto::derive(secret, kid, &nc, &ns);
    let proof = crypto::proof(&keys.reply, sid);
    let body = format!(
        r#"{{"status": "success", "result": {{"session": "{}", "nonce": "{}", "proof": "{}"}}}}"#,
        hex(sid),
        hex(&ns),
        hex(&proof)
    );
    write(
        stream,
        &frame(Kind::Response, hello.header.seq, body.as_bytes()),
    )
    .await;
    keys
}

/// Reads a sealed request, checks its tag under `keys` in `sid`; its seq
/// and body.
async fn read_sealed(
    stream: &mut TcpStream,
    keys: &crypto::SessionKeys,
    sid: &[u8; 8],
) -> (u32, String) {
    let got = read_raw(stream).await;
    assert_eq!(u16::from_be_bytes([got[2], got[3]]), 0x0009);
    let seq = u32::from_be_bytes(got[4..8].try_into().unwrap());
    let body = &got[HEADER_LEN..got.len() - 24];
    assert_eq!(&got[got.len() - 24..got.len() - 16], sid);
    let tag: [u8; 16] = got[got.len() - 16..].try_into().unwrap();
    assert!(crypto::tag_is_valid(
        &keys.request,
        got[..12].try_into().unwrap(),
        body,
        sid,
        &tag
    ));
    (seq, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_subscribes_again_at_once() {
    let secret = [9u8; 32];
    let key = AuthKey::new("w", secret).unwrap();
    let (addr, accept) = scripted().await;
    let server = tokio::spawn(async move {
        let mut stream = accept.await.unwrap();
        let (sid1, sid2) = ([1u8; 8], [2u8; 8]);
        let ev = |n: u32, v: &str| format!(r#"{{"topic": "temp", "n": {n}, "value": "{v}"}}"#);
        let keys1 = answer_hello(&mut stream, &secret, "w", &sid1).await;
        let (seq, body) = read_sealed(&mut stream, &keys1, &sid1).await;
        assert!(body.contains("rpc.subscribe"), "{body}");
        let reply = granted_body(0, 60, "null");
        let mut out = sealed(0x000A, seq, reply.as_bytes(), &keys1.reply, &sid1);
        out.extend(sealed(
            0x0018,
            1,
            ev(1, "old").as_bytes(),
            &keys1.reply,
            &sid1,
        ));
        write(&mut stream, &out).await;
        // A call, refused with a plain unauthorized (the session is gone).
        let (seq, body) = read_sealed(&mut stream, &keys1, &sid1).await;
        assert!(body.contains("\"add\""), "{body}");
        let refused =
            r#"{"status": "error", "code": "unauthorized", "message": "unknown session"}"#;
        write(&mut stream, &frame(Kind::Error, seq, refused.as_bytes())).await;
        // The subscription, renewed at once in a new session.
        let keys2 = answer_hello(&mut stream, &secret, "w", &sid2).await;
        let (seq, body) = read_sealed(&mut stream, &keys2, &sid2).await;
        assert!(body.contains("rpc.subscribe"), "{body}");
        let mut out = sealed(0x000A, seq, reply.as_bytes(), &keys2.reply, &sid2);
        // The old session's events are dropped from now on.
        out.extend(sealed(
            0x0018,
            2,
            ev(2, "stale").as_bytes(),
            &keys1.reply,
            &sid1,
        ));
        out.extend(sealed(
            0x0018,
            1,
            ev(1, "new").as_bytes(),
            &keys2.reply,
            &sid2,
        ));
        write(&mut stream, &out).await;
        stream
    });
    let client = Client::connect(addr, PATIENCE).await.unwrap().with_key(key);
    let mut sub = client.subscribe::<String>("temp").await.unwrap();
    assert_eq!(
        next(&mut sub).await,
        Update::Event {
            n: 1,
            value: "old".into()
        }
    );
    let e = client.call_as::<i64>("add", (1, 2)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");
    // The new subscription starts again at n 1 (the reply's n 0 is below
    // the largest seen: 10.8 rule 11).
    assert_eq!(
        next(&mut sub).await,
        Update::Event {
            n: 1,
            value: "new".into()
        }
    );
    drop(
        tokio::time::timeout(PATIENCE, server)
            .await
            .unwrap()
            .unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_is_busy_and_the_futures_are_send() {
    let topics: Vec<Topic> = (0..5)
        .map(|i| Topic::new(&format!("t{i}"), "").unwrap())
        .collect();
    let server = serve(&topics.iter().collect::<Vec<_>>()).await;
    let client = client(&server).await;
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(client.subscribe::<i64>(&format!("t{i}")).await.unwrap());
    }
    let e = client.subscribe::<i64>("t4").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Busy), "{e}");
    fn send<T: Send>(_: &T) {}
    send(&held[0]);
    send(&held[0].next());
    send(&client.subscribe::<i64>("t4"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_starts_while_a_subscription_holds_the_reader() {
    // A hello waits until every reply of the old session is in; a
    // subscription waiting for events reads (and files) them meanwhile,
    // so the hello must not wait for the reader itself.
    let secret = [5u8; 32];
    let key = AuthKey::new("w", secret).unwrap();
    let (addr, accept) = scripted().await;
    let server = tokio::spawn(async move {
        let mut stream = accept.await.unwrap();
        let (sid1, sid2) = ([1u8; 8], [2u8; 8]);
        let keys1 = answer_hello(&mut stream, &secret, "w", &sid1).await;
        let (seq, _) = read_sealed(&mut stream, &keys1, &sid1).await;
        let reply = granted_body(0, 60, "null");
        write(
            &mut stream,
            &sealed(0x000A, seq, reply.as_bytes(), &keys1.reply, &sid1),
        )
        .await;
        let (slow, body) = read_sealed(&mut stream, &keys1, &sid1).await;
        assert!(body.contains("\"mul\""), "{body}");
        let (add, _) = read_sealed(&mut stream, &keys1, &sid1).await;
        let refused =
            r#"{"status": "error", "code": "unauthorized", "message": "unknown session"}"#;
        write(&mut stream, &frame(Kind::Error, add, refused.as_bytes())).await;
        // The old session's last reply, late: the next call's hello waits
        // for it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let product = r#"{"status": "success", "result": 42}"#;
        write(
            &mut stream,
            &sealed(0x000A, slow, product.as_bytes(), &keys1.reply, &sid1),
        )
        .await;
        let keys2 = answer_hello(&mut stream, &secret, "w", &sid2).await;
        let (add, _) = read_sealed(&mut stream, &keys2, &sid2).await;
        let sum = r#"{"status": "success", "result": 3}"#;
        write(
            &mut stream,
            &sealed(0x000A, add, sum.as_bytes(), &keys2.reply, &sid2),
        )
        .await;
        stream
    });
    let client = Client::connect(addr, PATIENCE).await.unwrap().with_key(key);
    let mut sub = client.subscribe::<i64>("temp").await.unwrap();
    let calls = async {
        // Dropped before its reply: it stays in flight.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(100),
            client.call_as::<i64>("mul", (6, 7)),
        )
        .await;
        assert!(gave_up.is_err());
        let e = client.call_as::<i64>("add", (1, 2)).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");
        client.call_as::<i64>("add", (1, 2)).await
    };
    tokio::select! {
        biased;
        // First, so that it holds the reader.
        update = sub.next() => panic!("no event was sent: {update:?}"),
        sum = calls => assert_eq!(sum.unwrap(), 3),
    }
    drop(
        tokio::time::timeout(PATIENCE, server)
            .await
            .unwrap()
            .unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sealed_events_verify_and_plain_ones_are_dropped() {
    let secret = [3u8; 32];
    let key = AuthKey::new("u", secret).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let responder = tokio::spawn(async move {
        let sid = [4u8; 8];
        let mut buf = vec![0u8; 2048];
        let mut recv = async || {
            let (len, from) = tokio::time::timeout(PATIENCE, socket.recv_from(&mut buf))
                .await
                .expect("a datagram in time")
                .unwrap();
            (buf[..len].to_vec(), from)
        };
        // The hello.
        let (hello, from) = recv().await;
        let hello = at_tests::parse_reply(&hello);
        let json: serde_json::Value = serde_json::from_str(&hello.body).unwrap();
        let nc_hex = json["args"][1].as_str().unwrap();
        let nc: [u8; 16] =
            std::array::from_fn(|i| u8::from_str_radix(&nc_hex[2 * i..2 * i + 2], 16).unwrap());
        let ns = [0xb1u8; 16];
        let keys = crypto::derive(&secret, "u", &nc, &ns);
        let proof = crypto::proof(&keys.reply, &sid);
        let body = format!(
            r#"{{"status": "success", "result": {{"session": "{}", "nonce": "{}", "proof": "{}"}}}}"#,
            hex(&sid),
            hex(&ns),
            hex(&proof)
        );
        let out = frame(Kind::Response, hello.header.seq, body.as_bytes());
        socket.send_to(&out, from).await.unwrap();
        // The sealed subscribe.
        let (subscribe, from) = recv().await;
        assert_eq!(u16::from_be_bytes([subscribe[2], subscribe[3]]), 0x0009);
        let seq = u32::from_be_bytes(subscribe[4..8].try_into().unwrap());
        let reply = granted_body(0, 60, "16");
        let ev = |n: u32, v: &str| format!(r#"{{"topic": "temp", "n": {n}, "value": "{v}"}}"#);
        for datagram in [
            sealed(0x000A, seq, reply.as_bytes(), &keys.reply, &sid),
            frame(Kind::Notify, 1, ev(1, "plain").as_bytes()),
            sealed(0x0018, 1, ev(1, "a").as_bytes(), &keys.reply, &sid),
            sealed(0x0018, 1, ev(2, "replayed").as_bytes(), &keys.reply, &sid),
            sealed(0x0018, 2, ev(2, "b").as_bytes(), &keys.reply, &sid),
        ] {
            socket.send_to(&datagram, from).await.unwrap();
        }
        // The unsubscribe on drop, sealed.
        let (unsubscribe, _) = recv().await;
        assert_eq!(u16::from_be_bytes([unsubscribe[2], unsubscribe[3]]), 0x0018);
    });
    let config = UdpConfig {
        key: Some(key),
        ..UdpConfig::default()
    };
    let client = UdpClient::connect(addr, config).await.unwrap();
    let mut sub = client.subscribe::<String>("temp").await.unwrap();
    assert_eq!(sub.granted().credit, Some(16));
    let a = next(&mut sub).await;
    let b = next(&mut sub).await;
    assert_eq!(
        (a, b),
        (
            Update::Event {
                n: 1,
                value: "a".into()
            },
            Update::Event {
                n: 2,
                value: "b".into()
            }
        )
    );
    drop(sub);
    tokio::time::timeout(PATIENCE, responder)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_renews_when_half_the_event_bytes_are_spent() {
    // A subscribe of 512 bytes buys 1536 bytes of events: with events of
    // about 316 bytes the client renews after the third, long before half
    // its credit of 16.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let big = format!("\"{}\"", "x".repeat(260));
    let value = big.clone();
    let responder = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut subscribes = 0u32;
        let mut server_seq = 1;
        loop {
            let (len, from) = tokio::time::timeout(PATIENCE, socket.recv_from(&mut buf))
                .await
                .expect("a datagram in time")
                .unwrap();
            let got = at_core::Frame::parse(&buf[..len], u32::MAX).unwrap();
            if got.kind == Kind::Notify {
                return subscribes;
            }
            let n = 3 * subscribes;
            subscribes += 1;
            let reply = frame(
                Kind::Response,
                got.seq(),
                granted_body(n, 60, "16").as_bytes(),
            );
            socket.send_to(&reply, from).await.unwrap();
            if subscribes <= 2 {
                for k in 1..=3 {
                    let e = event(server_seq, n + k, &value);
                    assert!(e.len() > 300, "{}", e.len());
                    server_seq += 1;
                    socket.send_to(&e, from).await.unwrap();
                }
            }
        }
    });
    let client = UdpClient::connect(addr, UdpConfig::default())
        .await
        .unwrap();
    let mut sub = client.subscribe::<String>("temp").await.unwrap();
    for n in 1..=6 {
        match next(&mut sub).await {
            Update::Event { n: got, value } => {
                assert_eq!((got, value.len()), (n, 260));
            }
            other => panic!("{other:?}"),
        }
    }
    drop(sub);
    let subscribes = tokio::time::timeout(PATIENCE, responder)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(subscribes, 2);
    drop(big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_given_up_before_its_reply_frees_the_topic() {
    let (addr, accept) = scripted().await;
    let server = tokio::spawn(async move {
        let mut stream = accept.await.unwrap();
        let first = read_reply(&mut stream).await;
        let second = read_reply(&mut stream).await;
        // Both answered now: the first reply is discarded.
        let mut out = frame(
            Kind::Response,
            first.header.seq,
            granted_body(0, 60, "null").as_bytes(),
        );
        out.extend(frame(
            Kind::Response,
            second.header.seq,
            granted_body(0, 60, "null").as_bytes(),
        ));
        out.extend(event(1, 1, "5"));
        write(&mut stream, &out).await;
        stream
    });
    let client = Client::connect(addr, PATIENCE).await.unwrap();
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), client.subscribe::<i64>("temp")).await;
    assert!(gave_up.is_err(), "the server does not answer yet");
    let mut sub = client.subscribe::<i64>("temp").await.unwrap();
    assert_eq!(next(&mut sub).await, Update::Event { n: 1, value: 5 });
    drop(
        tokio::time::timeout(PATIENCE, server)
            .await
            .unwrap()
            .unwrap(),
    );
}
