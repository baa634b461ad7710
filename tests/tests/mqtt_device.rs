//! The device's MQTT server (at-embedded-example's `mqtt` module, over
//! std-embedded-nal on the desktop: the very code a board runs over
//! smoltcp) against a real Mosquitto, called by a rumqttc v5 client
//! (contract section 11). Skips without `mosquitto`, fails so under
//! `AT_REQUIRE_ALL=1`.

mod mqtt_caller;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use at_core::auth::{CounterNonces, FixedReplies};
use at_core::calculator::{ADD, DIV, MUL, SUB};
use at_core::{CallError, Function, HEADER_LEN, Kind, Value};
use at_embedded_example::desktop::{DesktopGuard, DesktopStack as Stack};
use at_embedded_example::mqtt::{Login, MqttMemory, MqttServer, memory_size};
use at_tests::broker::{Broker, BrokerConfig, CONTRACT_ACL};
use at_tests::{PATIENCE, calc, parse_reply, request};
use mqtt_caller::{Caller, Message, hello, opened};

/// MQTT packets in: 1 KiB, as on the board.
const RX: usize = 1024;
/// AT replies: 256 bytes.
const TX: usize = 256;
const CACHE: usize = 4;
const MEMORY: usize = memory_size(RX, TX);

static COUNT: AtomicU32 = AtomicU32::new(0);

/// `count()`: how many times it ran (in this test process).
fn count<'a>(_: &[Value<'a>]) -> Result<Value<'a>, CallError> {
    Ok(Value::Int(i64::from(
        COUNT.fetch_add(1, Ordering::SeqCst) + 1,
    )))
}

static FUNCTIONS: [Function; 5] = [ADD, SUB, MUL, DIV, Function::new("count", count)];

/// The device server running in a thread of its own.
struct Device {
    stop: Arc<AtomicBool>,
    offline_first: bool,
    connections: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

impl Device {
    /// Starts a device named `name` for the broker on `port`. On
    /// [`Device::stop`] it publishes its offline status first if
    /// `offline_first`, else it just drops its connection (a crash: the
    /// broker sends the will).
    fn start(port: u16, name: &str, offline_first: bool) -> Device {
        Device::start_keyed(port, name, offline_first, None)
    }

    /// [`Device::start`], requiring section 9 authentication with `key`
    /// (the desktop servers' guard) when given.
    fn start_keyed(
        port: u16,
        name: &str,
        offline_first: bool,
        key: Option<&'static [at_core::auth::Key<'static>]>,
    ) -> Device {
        Device::start_with(port, name, offline_first, key, None)
    }

    /// [`Device::start_keyed`], logging in to the broker as `login`.
    fn start_with(
        port: u16,
        name: &str,
        offline_first: bool,
        key: Option<&'static [at_core::auth::Key<'static>]>,
        login: Option<(&str, &str)>,
    ) -> Device {
        let login = login.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU32::new(0));
        let broker: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let name = name.to_owned();
        let thread = {
            let (stop, connections) = (stop.clone(), connections.clone());
            std::thread::spawn(move || {
                let stack = RefCell::new(Stack::default());
                let mut memory = Box::new(MqttMemory::<MEMORY>::new());
                let login = login
                    .as_ref()
                    .map(|(user, password)| Login { user, password });
                let mut server = MqttServer::<Stack, RX, TX, CACHE>::with_login(
                    &stack,
                    &mut memory,
                    broker,
                    &name,
                    "at",
                    login,
                )
                .expect("a server");
                let start = Instant::now();
                let mut stopping: Option<Instant> = None;
                let mut guard = key.map(|keys| {
                    DesktopGuard::new(keys, FixedReplies::new(), CounterNonces::new(7))
                });
                loop {
                    let now = start.elapsed().as_millis() as u64;
                    let work = match guard.as_mut() {
                        Some(guard) => server.poll(&FUNCTIONS[..], guard, now),
                        None => server.poll(&FUNCTIONS[..], &mut at_core::auth::Open, now),
                    };
                    connections.store(server.connections(), Ordering::SeqCst);
                    if stop.load(Ordering::SeqCst) {
                        if !offline_first {
                            return;
                        }
                        match stopping {
                            None => {
                                if server.announce_offline() {
                                    stopping = Some(Instant::now());
                                }
                            }
                            // Time to send it and take its PUBACK.
                            Some(t) if t.elapsed() > Duration::from_millis(300) => return,
                            Some(_) => {}
                        }
                    }
                    if work == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        };
        Device {
            stop,
            offline_first,
            connections,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> u32 {
        self.connections.load(Ordering::SeqCst)
    }

    fn stop(&mut self) {
        let _ = self.offline_first;
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the device thread panicked");
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A status frame's `value`, as JSON text (`null` when offline).
fn status_value(m: &Message) -> String {
    let frame = at_core::Frame::parse(&m.payload, u32::MAX).expect("a status frame");
    assert_eq!(frame.kind, Kind::Notify, "a status is a NOTIFY");
    assert_eq!(frame.seq(), 0, "a status has seq 0");
    let event = at_core::event::Event::parse(frame.body).expect("an event body");
    assert_eq!(event.topic.as_plain(), Some("rpc.status"));
    assert_eq!(event.n, 0);
    match event.payload {
        at_core::event::Payload::Value(v) => v.to_string(),
        at_core::event::Payload::End(_) => panic!("a status has a value"),
    }
}

fn online(m: &Message) -> bool {
    status_value(m) != "null"
}

fn offline(m: &Message) -> bool {
    status_value(m) == "null"
}

/// The outcome of a reply message: the result's JSON, or `error CODE`.
fn outcome(m: &Message) -> String {
    parse_reply(&m.payload).outcome()
}

/// A started broker, or `None` when the test is skipped.
fn broker() -> Option<Broker> {
    Broker::start()
}

#[test]
fn calculator_and_status_through_the_broker() {
    let Some(broker) = broker() else { return };
    let mut device = Device::start(broker.port(), "calc-1", true);
    let mut caller = Caller::connect(broker.port(), "host-1");
    let status = caller.status("calc-1", online).expect("an online status");
    let info = status_value(&status);
    assert!(info.contains(r#""name": "calc-1""#), "{info}");
    assert!(info.contains(r#""max_body": "#), "{info}");
    assert!(info.contains(r#""ext": ["notify", "deadline"]"#), "{info}");

    let cases = [
        ("add", "10", "20", "30"),
        ("sub", "10", "20", "-10"),
        ("mul", "6", "7", "42"),
        ("div", "10", "4", "2.5"),
        ("add", "0.1", "0.2", "0.30000000000000004"),
        ("div", "1", "0", "error division_by_zero"),
        ("add", "9223372036854775807", "1", "error overflow"),
        ("pow", "2", "3", "error unknown_function"),
    ];
    for (seq, (func, a, b, want)) in (1..).zip(cases) {
        let reply = caller
            .call("calc-1", &calc(seq, func, a, b))
            .expect("a reply");
        assert_eq!(outcome(&reply), want, "{func}({a}, {b})");
        assert_eq!(parse_reply(&reply.payload).header.seq, seq);
    }
    // Correlation Data is copied.
    caller.send("calc-1", &calc(50, "add", "1", "2"), Some(b"corr-1"));
    let reply = caller.reply("calc-1").expect("a reply");
    assert_eq!(reply.correlation.as_deref(), Some(&b"corr-1"[..]));
    // rpc.info over MQTT says what the status said.
    let reply = caller
        .call("calc-1", &request(51, r#"{"func": "rpc.info"}"#))
        .expect("a reply");
    assert_eq!(outcome(&reply), info);

    // A planned stop publishes the offline status, retained.
    device.stop();
    caller
        .status("calc-1", offline)
        .expect("the offline status");
    let mut late = Caller::connect(broker.port(), "host-2");
    let retained = late.status("calc-1", |_| true).expect("a retained status");
    assert!(retained.retain && offline(&retained), "{retained:?}");
}

#[test]
fn a_duplicate_delivery_runs_once() {
    let Some(broker) = broker() else { return };
    let _device = Device::start(broker.port(), "dup-1", false);
    let mut caller = Caller::connect(broker.port(), "host-d");
    caller.status("dup-1", online).expect("online");
    let call = request(7, r#"{"func": "count", "args": []}"#);
    let first = caller.call("dup-1", &call).expect("a reply");
    let ran = outcome(&first);
    // The broker delivers the same request again (as a retransmission or
    // a QoS 1 redelivery would): the remembered reply, not a second run.
    caller.send("dup-1", &call, None);
    let again = caller.reply("dup-1").expect("the remembered reply");
    assert_eq!(again.payload, first.payload);
    // Another caller with the same seq is another association: it runs.
    let mut other = Caller::connect(broker.port(), "host-e");
    let theirs = other.call("dup-1", &call).expect("a reply");
    assert_ne!(outcome(&theirs), ran);
    // A new seq runs again.
    let next = caller
        .call("dup-1", &request(8, r#"{"func": "count", "args": []}"#))
        .expect("a reply");
    assert_ne!(outcome(&next), ran);
    assert_ne!(outcome(&next), outcome(&theirs));
    // A plain NOTIFY is never answered.
    let notify = at_tests::frame(Kind::Notify, 9, br#"{"func": "count", "args": []}"#);
    caller.send("dup-1", &notify, None);
    assert!(caller.no_reply("dup-1", Duration::from_millis(500)));
}

#[test]
fn bad_frames_and_junk() {
    let Some(broker) = broker() else { return };
    let _device = Device::start(broker.port(), "junk-1", false);
    let mut caller = Caller::connect(broker.port(), "host-j");
    caller.status("junk-1", online).expect("online");

    // A bad CRC: checksum_mismatch.
    let mut bad = calc(3, "add", "1", "2");
    bad[12] ^= 0xFF;
    caller.send("junk-1", &bad, None);
    let reply = caller.reply("junk-1").expect("a reply to a bad CRC");
    assert_eq!(outcome(&reply), "error checksum_mismatch");
    assert_eq!(parse_reply(&reply.payload).kind(), Kind::Error);

    // A wrong size (a frame cut short, one with bytes after it): dropped.
    let good = calc(4, "add", "1", "2");
    caller.send("junk-1", &good[..good.len() - 1], None);
    let mut long = good.clone();
    long.push(b' ');
    caller.send("junk-1", &long, None);
    caller.send("junk-1", b"", None);
    caller.send("junk-1", b"junk", None);
    assert!(caller.no_reply("junk-1", Duration::from_millis(500)));

    // 1 MiB of junk (larger than the device's Maximum Packet Size: the
    // broker drops it for the device) and a body over max_body.
    caller.send("junk-1", &vec![0xA5; 1 << 20], None);
    let mut big = vec![0u8; HEADER_LEN];
    big.extend(std::iter::repeat_n(b' ', 900));
    let header = at_core::Header::new(Kind::Request, 5, &big[HEADER_LEN..]);
    big[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    caller.send("junk-1", &big, None);
    let reply = caller.reply("junk-1").expect("frame_too_large");
    assert_eq!(outcome(&reply), "error frame_too_large");

    // A message on a topic with a caller that is not an AT name: dropped.
    caller.publish_raw("at/junk-1/req/bad name!", good.clone());
    // Still serving.
    let reply = caller
        .call("junk-1", &good)
        .expect("a reply after the junk");
    assert_eq!(outcome(&reply), "3");
}

#[test]
fn reconnects_after_the_broker_restarts_and_the_will_marks_it_offline() {
    let Some(mut broker) = broker() else { return };
    let mut device = Device::start(broker.port(), "re-1", false);
    let mut caller = Caller::connect(broker.port(), "host-r");
    caller.status("re-1", online).expect("online");
    assert_eq!(device.connections(), 1);
    broker.restart();
    // The device reconnects by itself (backoff from 0.5 s) and announces
    // itself again; the caller (rumqttc) reconnects too.
    let deadline = Instant::now() + PATIENCE;
    while device.connections() < 2 {
        assert!(Instant::now() < deadline, "the device did not reconnect");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut caller = Caller::connect(broker.port(), "host-r2");
    caller.status("re-1", online).expect("online again");
    let reply = caller
        .call("re-1", &calc(1, "add", "10", "20"))
        .expect("a reply after the restart");
    assert_eq!(outcome(&reply), "30");

    // The device goes away without a word: the broker's will says offline.
    device.stop();
    caller.status("re-1", offline).expect("the will");
    let mut late = Caller::connect(broker.port(), "host-r3");
    let retained = late.status("re-1", |_| true).expect("a retained status");
    assert!(retained.retain && offline(&retained), "{retained:?}");
}

/// The key of the keyed tests (`KID:HEX`).
const KEY: &str = "fleet:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

#[test]
fn with_a_key_every_call_is_sealed_end_to_end() {
    let Some(broker) = broker() else { return };
    let key: &'static at_host::AuthKey = Box::leak(Box::new(at_host::AuthKey::parse(KEY).unwrap()));
    let keys: &'static [at_core::auth::Key<'static>] =
        Box::leak(vec![key.as_core()].into_boxed_slice());
    let _device = Device::start_keyed(broker.port(), "sealed-1", false, Some(keys));
    // What the broker carries: everything under at/.
    let mut sniffer = Caller::connect(broker.port(), "sniffer");
    sniffer.subscribe_all();
    let mut caller = Caller::connect(broker.port(), "host-k");
    let status = caller.status("sealed-1", online).expect("online");
    assert!(
        status_value(&status).contains(r#""auth": "required""#),
        "{}",
        status_value(&status)
    );

    // A plain call is refused.
    let plain = caller
        .call("sealed-1", &calc(2, "add", "10", "20"))
        .expect("a reply");
    assert_eq!(outcome(&plain), "error unauthorized");
    // An unknown key id is refused.
    let wrong = request(
        3,
        r#"{"func": "rpc.hello", "args": ["other", "101112131415161718191a1b1c1d1e1f"]}"#,
    );
    let reply = caller.call("sealed-1", &wrong).expect("a reply");
    assert_eq!(outcome(&reply), "error unauthorized");

    let session = hello(&mut caller, "sealed-1", key);
    let add = at_tests::sealed::sealed(&session, 4, r#"{"func": "add", "args": [10, 20]}"#);
    let reply = caller.call("sealed-1", &add).expect("a sealed reply");
    assert_eq!(
        opened(&session, &reply),
        r#"{"status": "success", "result": 30}"#
    );

    // A frame the broker replays (the test republishes it) never runs
    // twice: the guard's remembered reply comes back.
    let count = at_tests::sealed::sealed(&session, 5, r#"{"func": "count", "args": []}"#);
    let first = caller.call("sealed-1", &count).expect("count");
    caller.send("sealed-1", &count, None);
    let again = caller.reply("sealed-1").expect("the remembered reply");
    assert_eq!(again.payload, first.payload);
    let next = at_tests::sealed::sealed(&session, 6, r#"{"func": "count", "args": []}"#);
    let next = caller.call("sealed-1", &next).expect("count");
    let n = |body: String| -> i64 {
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["result"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(n(opened(&session, &next)), n(opened(&session, &first)) + 1);
    // A tampered sealed frame is dropped, as over UDP (no oracle for
    // forgers): no reply, and it does not run.
    let mut tampered = at_tests::sealed::sealed(&session, 7, r#"{"func": "add", "args": [1, 2]}"#);
    let at = tampered.len() - 1;
    tampered[at] ^= 1;
    // (its CRC is then wrong too: fix it so only the tag is wrong)
    let body_end = tampered.len();
    let crc = at_core::checksum(&tampered[HEADER_LEN..body_end]);
    tampered[12..16].copy_from_slice(&crc.to_be_bytes());
    caller.send("sealed-1", &tampered, None);
    assert!(caller.no_reply("sealed-1", Duration::from_millis(700)));

    // What the broker saw: no key, and every call and reply after the
    // hello sealed, bar the refusals.
    let seen = sniffer.drain(Duration::from_millis(300));
    let secret = &KEY[KEY.find(':').unwrap() + 1..];
    assert!(!seen.is_empty());
    for m in &seen {
        assert!(
            !String::from_utf8_lossy(&m.payload).contains(secret),
            "the key on {}",
            m.topic
        );
        if m.topic.contains("/status") {
            continue;
        }
        let frame = at_core::Frame::parse(&m.payload, u32::MAX).expect("whole frames only");
        let sealed = frame.header.flags & at_core::FLAG_AUTH != 0;
        let body = String::from_utf8_lossy(frame.body);
        let allowed_plain = body.contains("rpc.hello")
            || body.contains("\"session\"")
            || body.contains("unauthorized")
            || frame.seq() == 2;
        assert!(
            sealed || allowed_plain,
            "a plain frame on {}: {body}",
            m.topic
        );
    }
}

#[test]
fn logs_in_and_keeps_to_the_contract_acl() {
    let users = [("acl-1", "pw-1"), ("host-a", "pw-h")];
    let config = BrokerConfig {
        users: users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect(),
        acl: Some(CONTRACT_ACL.to_owned()),
    };
    let Some(broker) = Broker::start_with(config) else {
        return;
    };
    // A wrong password: refused by the broker, retried with backoff, never
    // online, no panic.
    let mut wrong =
        Device::start_with(broker.port(), "acl-1", false, None, Some(("acl-1", "nope")));
    let mut caller = Caller::connect_as(broker.port(), "host-a", Some(("host-a", "pw-h")));
    let status = caller.next(Duration::from_secs(2), |t| t == "at/acl-1/status");
    assert!(
        status.is_none(),
        "a device with a wrong password came online"
    );
    assert_eq!(wrong.connections(), 0);
    wrong.stop();
    // The right one: online, and answering, with every topic it uses
    // allowed by the contract's ACL (a denied publish would be dropped).
    let _device = Device::start_with(broker.port(), "acl-1", false, None, Some(("acl-1", "pw-1")));
    let status = caller
        .status("acl-1", online)
        .expect("online under the ACL");
    assert!(status_value(&status).contains(r#""name": "acl-1""#));
    let reply = caller
        .call("acl-1", &calc(1, "add", "10", "20"))
        .expect("a reply under the ACL");
    assert_eq!(outcome(&reply), "30");
}
