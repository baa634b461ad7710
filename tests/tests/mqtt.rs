//! AT over MQTT 5 through a real Mosquitto (contract section 11), host
//! side: `at-host serve --mqtt` and in-process servers, the `MqttClient`
//! and the command line; duplicates, bad frames, junk, a broker restart,
//! the will, keys (what the broker sees) and ACLs. Each test starts its own
//! broker on a port it picks; without Mosquitto they skip (and fail under
//! `AT_REQUIRE_ALL=1`).

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use at_host::{Error, MqttBroker, MqttClient, Server, UdpConfig, Value};
use at_tests::broker::{Broker, BrokerConfig};
use at_tests::*;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

const KEY: &str = "fleet:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const WRONG_KEY: &str = "fleet:ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn config(timeout: Duration) -> UdpConfig {
    UdpConfig {
        timeout,
        ..UdpConfig::default()
    }
}

/// `at-host serve` through `broker` only, as `name` (with `extra` flags),
/// once it says it is ready.
fn serve(broker: &Broker, name: &str, extra: &[&str]) -> KillOnDrop {
    let mut command = Command::new(at_host_bin());
    command.args(["serve", "--tcp", "none", "--udp", "none", "--mqtt"]);
    command.arg(broker.url()).args(["--name", name]).args(extra);
    let (child, lines) = spawn_server(command, 1);
    assert_eq!(lines, [format!("{}/{name}", broker.url())]);
    child
}

/// Runs `at-host ARGS...` to the end.
fn at_host(args: &[&str]) -> Output {
    Command::new(at_host_bin())
        .args(args)
        .output()
        .expect("run at-host")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// An in-process server with the calculator and a counting `bump`, through
/// `broker` as `name`.
async fn server(broker: &Broker, name: &str, counter: Arc<AtomicI64>, key: bool) -> Server {
    let mut builder = Server::builder()
        .calculator()
        .function("bump", move || counter.fetch_add(1, Ordering::SeqCst) + 1)
        .async_function("nap", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
        .mqtt(MqttBroker::new(broker.url()).name(name));
    if key {
        builder = builder.key(at_host::AuthKey::parse(KEY).unwrap());
    }
    let server = builder.start().await.expect("server starts");
    tokio::time::timeout(PATIENCE, server.mqtt_ready())
        .await
        .expect("the server reaches the broker");
    server
}

/// A plain MQTT client of the test's own: everything it receives on
/// `filters` comes out of the channel as (topic, payload).
struct Raw {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Bytes)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Raw {
    async fn connect(broker: &Broker, id: &str, filters: &[&str]) -> Raw {
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.port());
        options.set_max_packet_size(Some(4 << 20));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let subscriber = client.clone();
        let task = tokio::spawn(async move {
            let mut acks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for filter in &filters {
                            let _ = subscriber.try_subscribe(filter.clone(), QoS::AtMostOnce);
                        }
                        if filters.is_empty() {
                            let _ = ready_tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks += 1;
                        if acks == filters.len() {
                            let _ = ready_tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let _ = tx.send((topic, p.payload));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(PATIENCE, ready.recv())
            .await
            .expect("the test's client subscribes");
        Raw { client, rx, task }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>, qos: QoS) {
        self.client
            .publish(topic, qos, false, payload)
            .await
            .expect("publish");
    }

    /// The next message within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<(String, Bytes)> {
        tokio::time::timeout(wait, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calculator_from_the_library_and_the_command_to_serve_mqtt() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let _serve = serve(&broker, "calc-1", &[]);
    let client = MqttClient::connect(
        &MqttBroker::new(broker.url()),
        "calc-1",
        config(Duration::from_secs(5)),
    )
    .await
    .expect("connect");
    assert!(client.name().starts_with("at-host-"));
    for (func, args, want) in calculator_cases() {
        check_case(func, &args, &want, client.call(func, &args).await);
    }
    // The same table from the command line: same output and exit codes.
    let server = format!("{}/calc-1", broker.url());
    for (func, args, want) in calculator_cases() {
        let shown: Vec<String> = args.iter().map(|a| Value::from(*a).to_string()).collect();
        let mut argv = vec!["call", "--server", &server, func];
        argv.extend(shown.iter().map(String::as_str));
        let out = at_host(&argv);
        match &want {
            Ok(value) => {
                assert_eq!(out.status.code(), Some(0), "{func}{shown:?}: {out:?}");
                assert_eq!(text(&out.stdout), value.to_string(), "{func}{shown:?}");
            }
            Err(code) => {
                assert_eq!(out.status.code(), Some(1), "{func}{shown:?}: {out:?}");
                let stderr = text(&out.stderr);
                assert!(
                    stderr.starts_with(&format!("error: {}: ", code.as_str())),
                    "{func}{shown:?}: {stderr}"
                );
            }
        }
    }
    let out = at_host(&["call", "--json", "--server", &server, "add", "1", "2"]);
    assert_eq!(text(&out.stdout), r#"{"status": "success", "result": 3}"#);
    // ping, info, list and discover.
    let out = at_host(&[
        "ping",
        "--server",
        &server,
        "--count",
        "2",
        "--interval",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("2 sent, 2 received, 0% loss"));
    let out = at_host(&["info", "--server", &server]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("name: calc-1"), "{out:?}");
    let out = at_host(&["list", "--server", &server]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("add(number, number) -> number"));
    let out = at_host(&["discover", "--mqtt", &broker.url()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("{server}  calc-1  at-host ")),
        "{lines:?}"
    );
    // A device nobody serves: exit 3 once the timeout is out.
    let started = Instant::now();
    let nobody = format!("{}/nobody", broker.url());
    let out = at_host(&[
        "call",
        "--timeout",
        "1",
        "--server",
        &nobody,
        "add",
        "1",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    // Usage errors: exit 2.
    let out = at_host(&["call", "--server", &broker.url(), "add", "1", "2"]);
    assert_eq!(out.status.code(), Some(2), "not a device address: {out:?}");
    let serve_bad = ["serve", "--tcp", "none", "--udp", "none", "--mqtt"];
    let out = at_host(&[&serve_bad[..], &[&broker.url(), "--name", "a b"]].concat());
    assert_eq!(out.status.code(), Some(2), "not a name: {out:?}");
    let out = at_host(&[&serve_bad[..], &["tcp://x", "--name", "a"]].concat());
    assert_eq!(out.status.code(), Some(2), "not a broker URL: {out:?}");
    // No broker there: exit 3 at once.
    let port = at_tests::firmware::free_port();
    let none = format!("mqtt://127.0.0.1:{port}");
    let started = Instant::now();
    let out = at_host(&["call", "--server", &format!("{none}/dev"), "add", "1", "2"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = at_host(&["discover", "--mqtt", &none]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[at_host::service]
trait Calc {
    /// a + b.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Says hello.
    async fn hello(&self, name: String) -> String;
}

struct Impl;

impl Calc for Impl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn hello(&self, name: String) -> String {
        format!("hello, {name}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_service_client_over_mqtt() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let url = MqttBroker::new(broker.url());
    let server = Server::builder()
        .service(CalcServer(Impl))
        .mqtt(url.clone().name("svc-1"))
        .start()
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, server.mqtt_ready())
        .await
        .unwrap();
    let client = MqttClient::connect(&url.name("typed-caller"), "svc-1", UdpConfig::default())
        .await
        .unwrap();
    assert_eq!(client.name(), "typed-caller");
    let calc = CalcClient::new(client);
    assert_eq!(calc.add(10, 20).await.unwrap(), 30);
    assert_eq!(calc.hello("ada".into()).await.unwrap(), "hello, ada");
    server.shutdown().await;
}

/// A plain request frame for `func` with no arguments.
fn call_frame(seq: u32, func: &str) -> Vec<u8> {
    request(seq, &format!(r#"{{"func": "{func}", "args": []}}"#))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_request_runs_once_and_gets_the_remembered_reply() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let counter = Arc::new(AtomicI64::new(0));
    let server = server(&broker, "dup-1", counter.clone(), false).await;
    let mut raw = Raw::connect(&broker, "raw-1", &["at/+/rep/raw-1"]).await;
    let frame = call_frame(7, "bump");
    let mut replies = Vec::new();
    // QoS 0 twice, then QoS 1 (a broker's redelivery is the same bytes).
    for qos in [QoS::AtMostOnce, QoS::AtMostOnce, QoS::AtLeastOnce] {
        raw.publish("at/dup-1/req/raw-1", frame.clone(), qos).await;
        let (topic, reply) = raw.next(PATIENCE).await.expect("a reply");
        assert_eq!(topic, "at/dup-1/rep/raw-1");
        replies.push(reply);
    }
    assert_eq!(counter.load(Ordering::SeqCst), 1, "bump ran once");
    assert_eq!(parse_reply(&replies[0]).outcome(), "1");
    assert!(replies.iter().all(|r| *r == replies[0]), "the same reply");
    // The same seq from another caller name is another call.
    let mut other = Raw::connect(&broker, "raw-2", &["at/+/rep/raw-2"]).await;
    other
        .publish("at/dup-1/req/raw-2", frame, QoS::AtMostOnce)
        .await;
    let (_, reply) = other.next(PATIENCE).await.expect("a reply");
    assert_eq!(parse_reply(&reply).outcome(), "2");
    assert!(
        raw.next(Duration::from_millis(200)).await.is_none(),
        "replies go to their caller only"
    );
    // A caller name outlives its process: a new client under the same name
    // starts at a random seq (contract 11.1 rule 3), so its first call runs
    // rather than being answered from the last one's cache.
    let named = MqttBroker::new(broker.url()).name("same-name");
    for want in [3, 4] {
        let client = MqttClient::connect(&named, "dup-1", UdpConfig::default())
            .await
            .unwrap();
        assert_eq!(client.call_as::<i64>("bump", ()).await.unwrap(), want);
    }
    // Many calls at once go at most 4 at a time (contract 11.1 rule 8),
    // all answered.
    let client = MqttClient::connect(&named, "dup-1", UdpConfig::default())
        .await
        .unwrap();
    let args: Vec<[at_core::Value<'_>; 2]> = (0..10)
        .map(|i| [at_core::Value::Int(i), at_core::Value::Int(i)])
        .collect();
    let calls: Vec<(&str, &[at_core::Value<'_>])> = args.iter().map(|a| ("mul", &a[..])).collect();
    let results = client.call_many(&calls).await.unwrap();
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), Value::Int((i * i) as i64));
    }
    // A notification from the command: exit 0 once written, run once.
    let out = at_host(&[
        "notify",
        "--server",
        &format!("{}/dup-1", broker.url()),
        "bump",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let until = Instant::now() + PATIENCE;
    while counter.load(Ordering::SeqCst) < 5 {
        assert!(Instant::now() < until, "the notification did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counter.load(Ordering::SeqCst), 5);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_crc_junk_and_oversized_messages() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let counter = Arc::new(AtomicI64::new(0));
    let server = server(&broker, "junk-1", counter.clone(), false).await;
    let mut raw = Raw::connect(&broker, "raw-1", &["at/+/rep/raw-1"]).await;
    // A bad CRC: checksum_mismatch, as on UDP.
    let mut bad = call_frame(3, "bump");
    let last = bad.len() - 1;
    bad[last] ^= 0x20;
    raw.publish("at/junk-1/req/raw-1", bad, QoS::AtMostOnce)
        .await;
    let (_, reply) = raw.next(PATIENCE).await.expect("an error reply");
    let reply = parse_reply(&reply);
    assert_eq!(
        error_code(&reply),
        Some(at_core::ErrorCode::ChecksumMismatch)
    );
    assert_eq!(counter.load(Ordering::SeqCst), 0);
    // A frame whose size is not 16 + length, junk, 1 MiB of junk, a
    // message on a topic that is not a request's: dropped, no reply.
    let mut short = call_frame(4, "bump");
    short.pop();
    raw.publish("at/junk-1/req/raw-1", short, QoS::AtMostOnce)
        .await;
    raw.publish("at/junk-1/req/raw-1", b"hello".to_vec(), QoS::AtMostOnce)
        .await;
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    raw.publish("at/junk-1/req/raw-1", mib, QoS::AtMostOnce)
        .await;
    let long_name = format!("at/junk-1/req/{}", "x".repeat(65));
    raw.publish(&long_name, call_frame(5, "bump"), QoS::AtMostOnce)
        .await;
    assert!(raw.next(Duration::from_millis(300)).await.is_none());
    // The server lives on: the next call works.
    let client = MqttClient::connect(
        &MqttBroker::new(broker.url()),
        "junk-1",
        UdpConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(client.call_as::<i64>("add", (1, 2)).await.unwrap(), 3);
    assert_eq!(counter.load(Ordering::SeqCst), 0);
    // A request over the device's max_body fails here (its status says
    // 65536), not sent.
    let big = "x".repeat(70_000);
    let e = client.call_as::<String>("hello", (big,)).await.unwrap_err();
    assert_eq!(e.code(), Some(at_core::ErrorCode::FrameTooLarge), "{e}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_calls_fail_cleanly_and_the_server_comes_back() {
    let Some(mut broker) = Broker::start() else {
        return;
    };
    let _serve = serve(&broker, "restart-1", &[]);
    let counter = Arc::new(AtomicI64::new(0));
    let in_process = server(&broker, "restart-2", counter, false).await;
    let url = MqttBroker::new(broker.url());
    let client = MqttClient::connect(&url, "restart-2", config(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(client.call_as::<u64>("nap", (10,)).await.unwrap(), 10);
    // A call in flight while the broker goes away: a clean timeout.
    let started = Instant::now();
    let (result, ()) = tokio::join!(client.call_as::<u64>("nap", (1000,)), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        broker.stop();
    });
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    broker.restart();
    // The command with a call in flight when the broker goes: exit 3.
    let started = Instant::now();
    let in_flight = Command::new(at_host_bin())
        .args(["call", "--timeout", "2", "--server"])
        .arg(format!("{}/restart-2", broker.url()))
        .args(["nap", "1000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.stop();
    let out = in_flight.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    // The command while the broker is away: exit 3, promptly.
    let server = format!("{}/restart-1", broker.url());
    let started = Instant::now();
    let out = at_host(&[
        "call",
        "--timeout",
        "1",
        "--server",
        &server,
        "add",
        "1",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    broker.restart();
    // Both servers (and the library client) reconnect by themselves.
    let until = Instant::now() + PATIENCE * 2;
    loop {
        let out = at_host(&[
            "call",
            "--timeout",
            "1",
            "--server",
            &server,
            "add",
            "1",
            "2",
        ]);
        if out.status.code() == Some(0) {
            assert_eq!(text(&out.stdout), "3");
            break;
        }
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert!(Instant::now() < until, "serve --mqtt did not come back");
    }
    let until = Instant::now() + PATIENCE * 2;
    loop {
        match client.call_as::<i64>("add", (2, 3)).await {
            Ok(v) => {
                assert_eq!(v, 5);
                break;
            }
            Err(Error::Timeout(_)) => assert!(Instant::now() < until, "no reconnect"),
            Err(e) => panic!("{e}"),
        }
    }
    in_process.shutdown().await;
}

/// The names `discover` finds on `broker` within a second.
async fn online(broker: &Broker) -> Vec<String> {
    MqttClient::discover(&MqttBroker::new(broker.url()), Duration::from_millis(500))
        .await
        .expect("discover")
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_online_then_will_or_clean_offline() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let serve_process = serve(&broker, "will-1", &[]);
    let in_process = server(&broker, "clean-1", Arc::default(), false).await;
    assert_eq!(online(&broker).await, ["clean-1", "will-1"]);
    // The status's value is what rpc.info says.
    let found = MqttClient::discover(&MqttBroker::new(broker.url()), Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(found[1].1["name"], "will-1");
    assert_eq!(found[1].1["max_body"], 65536);
    // Killed: the broker publishes its will (value null, retained).
    drop(serve_process);
    let until = Instant::now() + PATIENCE;
    while online(&broker).await != ["clean-1"] {
        assert!(Instant::now() < until, "the will did not come");
    }
    let mut raw = Raw::connect(&broker, "watcher", &["at/will-1/status"]).await;
    let (_, frame) = raw.next(PATIENCE).await.expect("the retained status");
    let reply = parse_reply(&frame);
    assert_eq!(reply.kind(), at_core::Kind::Notify);
    assert_eq!(reply.header.seq, 0);
    assert!(reply.body.contains(r#""value": null"#));
    // The command says offline at once (exit 3), without waiting its timeout.
    let started = Instant::now();
    let server = format!("{}/will-1", broker.url());
    let out = at_host(&[
        "call",
        "--timeout",
        "3",
        "--server",
        &server,
        "add",
        "1",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text(&out.stderr).contains("offline"), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A clean shutdown publishes the null status itself.
    in_process.shutdown().await;
    assert!(online(&broker).await.is_empty());
    let out = at_host(&["discover", "--mqtt", &broker.url(), "--timeout", "0.5"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_the_broker_sees_only_sealed_calls() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let mut sniffer = Raw::connect(&broker, "sniffer", &["at/#"]).await;
    let _serve = serve(&broker, "keyed-1", &["--key", KEY]);
    let counter = Arc::new(AtomicI64::new(0));
    let keyed = server(&broker, "keyed-2", counter.clone(), true).await;
    let server = format!("{}/keyed-1", broker.url());
    // The command, with the key and with a wrong one.
    let out = at_host(&["call", "--key", KEY, "--server", &server, "add", "10", "20"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "30".into()),
        "{out:?}"
    );
    let out = at_host(&[
        "call", "--key", WRONG_KEY, "--server", &server, "add", "1", "2",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).starts_with("error: unauthorized: "),
        "{out:?}"
    );
    let out = at_host(&["call", "--server", &server, "add", "1", "2"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).starts_with("error: unauthorized: "),
        "{out:?}"
    );
    // The library client, sealed.
    let key = at_host::AuthKey::parse(KEY).unwrap();
    let config = UdpConfig {
        key: Some(key),
        ..UdpConfig::default()
    };
    let client = MqttClient::connect(&MqttBroker::new(broker.url()), "keyed-2", config)
        .await
        .unwrap();
    assert_eq!(client.call_as::<i64>("bump", ()).await.unwrap(), 1);
    assert_eq!(client.call_as::<i64>("add", (2, 2)).await.unwrap(), 4);
    // What the broker carried: no key, and every request but the hello
    // sealed; the sealed bump, replayed, never runs again.
    let mut sealed_requests = Vec::new();
    while let Some((topic, payload)) = sniffer.next(Duration::from_millis(300)).await {
        let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!hex.contains(&KEY_HEX[..32]), "the key on {topic}");
        assert!(!payload.windows(16).any(|w| w == &KEY_HEX.as_bytes()[..16]));
        if !topic.contains("/req/") || payload.len() < at_core::HEADER_LEN {
            continue;
        }
        let frame = at_core::Frame::parse(&payload, u32::MAX).expect("a whole frame");
        if frame.header.flags & at_core::FLAG_AUTH != 0 {
            if topic.starts_with("at/keyed-2/") {
                sealed_requests.push((topic.clone(), payload.clone()));
            }
        } else {
            let body = String::from_utf8_lossy(frame.body);
            // Unsealed: only the hello, and the plain call made on purpose
            // without a key (answered unauthorized).
            assert!(
                body.contains("rpc.hello") || body.contains(r#""args": [1, 2]"#),
                "an unsealed request on {topic}: {body}"
            );
        }
    }
    assert!(sealed_requests.len() >= 2, "{sealed_requests:?}");
    let (topic, first) = &sealed_requests[0];
    let raw = Raw::connect(&broker, "replayer", &[]).await;
    raw.publish(topic, first.to_vec(), QoS::AtMostOnce).await;
    raw.publish(topic, first.to_vec(), QoS::AtLeastOnce).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counter.load(Ordering::SeqCst), 1, "a replay ran");
    assert_eq!(client.call_as::<i64>("bump", ()).await.unwrap(), 2);
    keyed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_without_rights_fails_promptly() {
    let users = [
        ("dev", "devpass"),
        ("alice", "alicepass"),
        ("mallory", "mallorypass"),
    ];
    let acl = "user dev\n\
        topic read at/dev-1/req/#\n\
        topic write at/dev-1/rep/#\n\
        topic write at/dev-1/status\n\
        user alice\n\
        topic write at/+/req/alice\n\
        topic read at/+/rep/alice\n\
        topic read at/+/status\n\
        user mallory\n\
        topic write at/other/req/mallory\n\
        topic read at/+/rep/mallory\n";
    let config = BrokerConfig {
        users: users
            .iter()
            .map(|(u, p)| ((*u).into(), (*p).into()))
            .collect(),
        acl: Some(acl.into()),
    };
    let Some(broker) = Broker::start_with(config) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("at-mqtt-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let password_file = |user: &str, password: &str| {
        let path = dir.join(user);
        std::fs::write(&path, format!("{password}\n")).unwrap();
        path.to_string_lossy().into_owned()
    };
    let dev = password_file("dev", "devpass");
    let alice = password_file("alice", "alicepass");
    let mallory = password_file("mallory", "mallorypass");
    let wrong = password_file("wrong", "nope");
    let _serve = serve(
        &broker,
        "dev-1",
        &["--mqtt-user", "dev", "--mqtt-password-file", &dev],
    );
    let server = format!("{}/dev-1", broker.url());
    let call = |user: &str, file: &str, name: &str| {
        let started = Instant::now();
        let out = Command::new(at_host_bin())
            .args(["call", "--timeout", "1", "--server", &server])
            .args(["--mqtt-user", user, "--mqtt-password-file", file])
            .args(["--mqtt-name", name, "add", "1", "2"])
            .output()
            .unwrap();
        (out, started.elapsed())
    };
    // The library client as alice: allowed.
    let broker_as = |user: &str, password: &str, name: &str| {
        MqttBroker::new(broker.url())
            .user(user, password)
            .name(name)
    };
    let alice_client = MqttClient::connect(
        &broker_as("alice", "alicepass", "alice"),
        "dev-1",
        config_1s(),
    )
    .await
    .unwrap();
    assert_eq!(alice_client.call_as::<i64>("add", (1, 2)).await.unwrap(), 3);
    // Mallory may not write dev-1's request topic: the broker drops her
    // calls, which time out (exit 3 after --timeout), never hang.
    let mallory_client = MqttClient::connect(
        &broker_as("mallory", "mallorypass", "mallory"),
        "dev-1",
        config_1s(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let e = mallory_client
        .call_as::<i64>("add", (1, 2))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A name whose reply topic she may not read: refused at connect (by
    // a broker that refuses subscriptions), else no reply comes.
    let started = Instant::now();
    match MqttClient::connect(
        &broker_as("mallory", "mallorypass", "alice2"),
        "dev-1",
        config_1s(),
    )
    .await
    {
        Ok(client) => {
            let e = client.call_as::<i64>("add", (1, 2)).await.unwrap_err();
            assert!(matches!(e, Error::Timeout(_)), "{e}");
        }
        Err(e) => assert!(e.to_string().contains("refused"), "{e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // A wrong password: a clear error, exit 3, at once.
    let (out, took) = call("alice", &wrong, "alice");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text(&out.stderr).contains("refused"), "{out:?}");
    assert!(took < Duration::from_secs(3));
    // Mallory from the command line: exit 3 promptly.
    let (out, took) = call("mallory", &mallory, "mallory");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(took < Duration::from_secs(4));
    let _ = alice;
    let _ = std::fs::remove_dir_all(&dir);
}

fn config_1s() -> UdpConfig {
    config(Duration::from_secs(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_subscription_come_on_the_reply_topic() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let temp = at_host::Topic::new("temp", "degrees").unwrap();
    let server = Server::builder()
        .calculator()
        .with_topic(&temp)
        .mqtt(MqttBroker::new(broker.url()).name("events-1"))
        .start()
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, server.mqtt_ready())
        .await
        .unwrap();
    let client = MqttClient::connect(
        &MqttBroker::new(broker.url()),
        "events-1",
        UdpConfig::default(),
    )
    .await
    .unwrap();
    let mut sub = client.subscribe::<f64>("temp").await.unwrap();
    let mut got = Vec::new();
    for i in 1..=3 {
        temp.publish(&(20.0 + f64::from(i))).unwrap();
        let update = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .expect("an event in time")
            .unwrap();
        got.push(update);
    }
    let want: Vec<at_host::Update<f64>> = (1..=3)
        .map(|n| at_host::Update::Event {
            n,
            value: 20.0 + n as f64,
        })
        .collect();
    assert_eq!(got, want);
    // Calls still work beside it.
    assert_eq!(client.call_as::<i64>("add", (1, 2)).await.unwrap(), 3);
    // Over MQTT a subscription has no credit (contract 11: the broker's
    // ACLs vouch for the subscriber), unlike plain UDP's 16.
    let granted: serde_json::Value = client.call_as("rpc.subscribe", ("temp", 60)).await.unwrap();
    assert_eq!(granted["credit"], serde_json::Value::Null, "{granted}");
    drop(sub);
    server.shutdown().await;
}

/// Runs `openssl ARGS...` in `dir`: whether it succeeded.
fn openssl(dir: &std::path::Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_a_ca_file() {
    if let Some(why) = at_tests::broker::missing_broker() {
        return skip(&why);
    }
    if !Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return skip("openssl is not installed (it makes the test's certificates)");
    }
    let dir = std::env::temp_dir().join(format!("at-mqtts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let made = openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=at-test-ca",
        ],
    ) && openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    ) && openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    assert!(made, "openssl could not make the certificates");
    // Mosquitto may drop root for its own user: it must read the key.
    use std::os::unix::fs::PermissionsExt;
    for file in ["server.key", "server.pem", "ca.pem"] {
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = at_tests::firmware::free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
         cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
        d = dir.display()
    );
    std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
    let mosquitto = match std::path::Path::new("/usr/sbin/mosquitto").exists() {
        true => "/usr/sbin/mosquitto",
        false => "mosquitto",
    };
    let _broker = KillOnDrop(
        Command::new(mosquitto)
            .arg("-c")
            .arg(dir.join("mosquitto.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mosquitto"),
    );
    let until = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ca = dir.join("ca.pem");
    let url = format!("mqtts://localhost:{port}");
    let mut broker = MqttBroker::new(&url);
    broker.ca_file = Some(ca.clone());
    let server = Server::builder()
        .calculator()
        .mqtt(broker.clone().name("tls-1"))
        .start()
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, server.mqtt_ready())
        .await
        .expect("the server reaches the broker over TLS");
    let client = MqttClient::connect(&broker, "tls-1", UdpConfig::default())
        .await
        .unwrap();
    assert_eq!(client.call_as::<i64>("add", (10, 20)).await.unwrap(), 30);
    let device = format!("{url}/tls-1");
    let ca = ca.to_string_lossy().into_owned();
    let out = at_host(&[
        "call",
        "--server",
        &device,
        "--ca-file",
        &ca,
        "add",
        "2",
        "3",
    ]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "5".into()),
        "{out:?}"
    );
    // Without the CA: the broker's certificate is not trusted, exit 3.
    let out = at_host(&[
        "call",
        "--server",
        &device,
        "--timeout",
        "2",
        "add",
        "2",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text(&out.stderr).contains("certificate"), "{out:?}");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `at-host bench fleet` (issue 19's fleet bench) works end to end on a
/// tiny fleet: 3 devices through a test-started broker, every scenario
/// measured, the JSON complete. A smoke test; the figures are the bench's.
#[test]
fn bench_fleet_smoke() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let url = broker.url();
    let out = at_host(&[
        "bench",
        "fleet",
        "--devices",
        "3",
        "--calls",
        "30",
        "--concurrency",
        "4",
        "--broker",
        &url,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["devices"], 3);
    let results = json["results"].as_array().expect("results");
    let keys: Vec<&str> = results
        .iter()
        .filter_map(|r| r["scenario"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "mqtt_sequential",
            "tcp_sequential",
            "mqtt_concurrent",
            "tcp_concurrent"
        ]
    );
    for r in results {
        assert_eq!(r["calls"], 30, "{r}");
    }
}
