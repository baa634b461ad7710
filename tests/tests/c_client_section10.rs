//! The C client (`peers/c/calc_client`) and contract section 10, through
//! real sockets on loopback: a call still succeeds when an event and a
//! reply to another seq come before its reply (at-host serve's `calls`
//! topic, subscribed through a relay on the client's connection);
//! `--notify` sends a notification that at-host runs once and never
//! answers, plain and sealed, over TCP and UDP (a function that reports
//! each run proves what ran); `--deadline MS` puts `deadline_ms` last in
//! the body (vector D1) and at-host answers `deadline_exceeded`.
//!
//! Without a C toolchain the tests skip (a failure under `AT_REQUIRE_ALL=1`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};

use at_core::{HEADER_LEN, Header, Kind};
use at_host::{AuthKey, Server};
use at_tests::peers::{CALL_LIMIT, calc_client, run, rust_server, text};
use at_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const KEY: &str = "demo:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Runs calc_client with `args` on a blocking thread, bounded by
/// [`CALL_LIMIT`].
async fn c_client(client: &PathBuf, args: &[&str]) -> Output {
    let mut command = Command::new(client);
    command.args(args).env_remove("AT_KEY");
    tokio::task::spawn_blocking(move || run(&mut command, CALL_LIMIT))
        .await
        .expect("calc_client runs")
}

/// (exit code, stdout, stderr) of a run.
fn outcome(out: &Output) -> (Option<i32>, String, String) {
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Reads one whole frame (header and `length` bytes) as raw bytes, bounded
/// by [`PATIENCE`].
async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut whole = vec![0u8; HEADER_LEN];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut whole))
        .await
        .expect("a frame within the patience bound")
        .expect("a frame header");
    let length = Header::from_bytes(whole[..HEADER_LEN].try_into().unwrap()).length;
    let mut body = vec![0u8; length as usize];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut body))
        .await
        .expect("a frame body within the patience bound")
        .expect("a frame body");
    whole.extend(body);
    whole
}

fn header(frame: &[u8]) -> Header {
    Header::from_bytes(frame[..HEADER_LEN].try_into().unwrap())
}

/// An in-process server with the calculator and `log(a, b)`, which reports
/// each run on the returned channel and returns a + b.
async fn log_server(keys: Vec<AuthKey>) -> (Server, mpsc::UnboundedReceiver<(i64, i64)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .calculator()
        .function("log", move |a: i64, b: i64| {
            let _ = tx.send((a, b));
            a + b
        })
        .keys(keys)
        .tcp("127.0.0.1:0".parse().unwrap())
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    (server, rx)
}

/// The next run of `log`, within [`PATIENCE`].
async fn next_run(runs: &mut mpsc::UnboundedReceiver<(i64, i64)>) -> (i64, i64) {
    tokio::time::timeout(PATIENCE, runs.recv())
        .await
        .expect("log ran within the patience bound")
        .expect("the server is up")
}

fn host_port(addr: SocketAddr) -> (String, String) {
    (addr.ip().to_string(), addr.port().to_string())
}

/// A relay between calc_client and at-host serve that, once the client's
/// request is in, subscribes to `calls` on the same upstream connection
/// and hands the client the subscribe's reply (a seq it does not await)
/// and the topic's event before the request goes on; then it relays the
/// server's frames until the call's reply. Returns (kind, seq) of each
/// frame the client was given.
async fn interleaving_relay(listener: TcpListener, upstream: SocketAddr) -> Vec<(Kind, u32)> {
    let (mut client, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("calc_client connects")
        .expect("accept");
    let call = read_frame(&mut client).await;
    let seq = header(&call).seq;
    let mut server = connect(upstream).await;
    let sub = seq.wrapping_add(1).max(1);
    write(
        &mut server,
        &request(sub, r#"{"func": "rpc.subscribe", "args": ["calls"]}"#),
    )
    .await;
    let mut given = Vec::new();
    // The subscribe's reply, then the topic's state as event 1.
    for _ in 0..2 {
        let frame = read_frame(&mut server).await;
        let h = header(&frame);
        given.push((h.kind().expect("a frame kind"), h.seq));
        write(&mut client, &frame).await;
    }
    write(&mut server, &call).await;
    loop {
        let frame = read_frame(&mut server).await;
        let h = header(&frame);
        given.push((h.kind().expect("a frame kind"), h.seq));
        write(&mut client, &frame).await;
        if h.kind() != Ok(Kind::Notify) && h.seq == seq {
            break;
        }
    }
    // Until calc_client has closed.
    let _ = read_until_closed(&mut client).await;
    given
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_call_succeeds_with_an_event_and_another_reply_before_its_reply() {
    let Some(client) = calc_client() else { return };
    let served = rust_server();
    let upstream: SocketAddr = served.tcp.parse().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (host, port) = host_port(listener.local_addr().unwrap());
    let relay = tokio::spawn(interleaving_relay(listener, upstream));
    let out = c_client(&client, &[&host, &port, "add", "10", "20"]).await;
    let given = relay.await.expect("the relay ends");
    assert_eq!(
        outcome(&out),
        (Some(0), "30\n".to_owned(), String::new()),
        "frames given: {given:?}"
    );
    // What came before the reply: the reply to the relay's subscribe (a
    // seq the client does not await) and event 1 of `calls`, in either
    // order; the reply came last.
    let mut before = given[..2].to_vec();
    before.sort_by_key(|(kind, _)| *kind == Kind::Notify);
    assert_eq!(before[0].0, Kind::Response, "{given:?}");
    assert_eq!(before[1], (Kind::Notify, 1), "{given:?}");
    assert_eq!(given.last().unwrap().0, Kind::Response, "{given:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_notify_runs_once_and_waits_for_no_reply_plain_and_sealed() {
    let Some(client) = calc_client() else { return };
    let (plain, mut plain_runs) = log_server(Vec::new()).await;
    let (tcp, udp) = (plain.tcp_addr().unwrap(), plain.udp_addr().unwrap());
    for (udp_flag, addr, a) in [(false, tcp, "1"), (true, udp, "3")] {
        let (host, port) = host_port(addr);
        let mut args = vec!["--notify"];
        if udp_flag {
            args.push("--udp");
        }
        args.extend([host.as_str(), port.as_str(), "log", a, "2"]);
        let out = c_client(&client, &args).await;
        assert_eq!(
            outcome(&out),
            (Some(0), String::new(), String::new()),
            "calc_client {args:?}"
        );
        assert_eq!(next_run(&mut plain_runs).await, (a.parse().unwrap(), 2));
    }
    // Run once: a call after them is the next run.
    let (host, port) = host_port(tcp);
    let out = c_client(&client, &[&host, &port, "log", "5", "5"]).await;
    assert_eq!(outcome(&out).1, "10\n");
    assert_eq!(next_run(&mut plain_runs).await, (5, 5));
    plain.shutdown().await;

    // A server requiring keys runs the sealed notification (0x0018 under
    // K_req, after the hello) and drops a plain one.
    let (keyed, mut keyed_runs) = log_server(vec![AuthKey::parse(KEY).unwrap()]).await;
    let (tcp, udp) = (keyed.tcp_addr().unwrap(), keyed.udp_addr().unwrap());
    for (udp_flag, addr, a) in [(false, tcp, "7"), (true, udp, "9")] {
        let (host, port) = host_port(addr);
        let mut plain_args = vec!["--notify"];
        if udp_flag {
            plain_args.push("--udp");
        }
        plain_args.extend([host.as_str(), port.as_str(), "log", "-1", "-1"]);
        let out = c_client(&client, &plain_args).await;
        assert_eq!(out.status.code(), Some(0), "calc_client {plain_args:?}");
        let mut args = vec!["--key", KEY, "--notify"];
        if udp_flag {
            args.push("--udp");
        }
        args.extend([host.as_str(), port.as_str(), "log", a, "0"]);
        let out = c_client(&client, &args).await;
        assert_eq!(
            outcome(&out),
            (Some(0), String::new(), String::new()),
            "calc_client {args:?}"
        );
        // The plain one never ran: the sealed one is the next run.
        assert_eq!(next_run(&mut keyed_runs).await, (a.parse().unwrap(), 0));
    }
    keyed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_deadline_is_written_last_and_at_host_does_not_call_past_it() {
    let Some(client) = calc_client() else { return };
    // The frame as sent: vector D1's body, with calc_client's own seq.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (host, port) = host_port(listener.local_addr().unwrap());
    let fake = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let call = read_frame(&mut stream).await;
        let h = header(&call);
        let d2 =
            br#"{"status": "error", "code": "deadline_exceeded", "message": "deadline exceeded"}"#;
        stream
            .write_all(&frame(Kind::Error, h.seq, d2))
            .await
            .unwrap();
        let _ = read_until_closed(&mut stream).await;
        call
    });
    let out = c_client(
        &client,
        &["--deadline", "0", &host, &port, "add", "10", "20"],
    )
    .await;
    let call = fake.await.unwrap();
    assert_eq!(header(&call).flags, 0x0001);
    assert_eq!(
        text(&call[HEADER_LEN..]),
        r#"{"func": "add", "args": [10, 20], "deadline_ms": 0}"#
    );
    let exceeded = (
        Some(1),
        String::new(),
        "error: deadline_exceeded: deadline exceeded\n".to_owned(),
    );
    assert_eq!(outcome(&out), exceeded);

    // at-host: deadline 0 is never met; a long one is, plain and sealed,
    // over TCP and UDP.
    let (keyed, _runs) = log_server(vec![AuthKey::parse(KEY).unwrap()]).await;
    let (plain, _plain_runs) = log_server(Vec::new()).await;
    for (server, key) in [(&plain, None), (&keyed, Some(KEY))] {
        for udp in [false, true] {
            let addr = if udp {
                server.udp_addr().unwrap()
            } else {
                server.tcp_addr().unwrap()
            };
            let (host, port) = host_port(addr);
            for (deadline, want) in [
                ("0", exceeded.clone()),
                ("60000", (Some(0), "30\n".to_owned(), String::new())),
            ] {
                let mut args = Vec::new();
                if let Some(key) = key {
                    args.extend(["--key", key]);
                }
                if udp {
                    args.push("--udp");
                }
                args.extend(["--deadline", deadline, &host, &port, "add", "10", "20"]);
                let out = c_client(&client, &args).await;
                assert_eq!(outcome(&out), want, "calc_client {args:?}");
            }
        }
    }
    // Not a deadline: usage errors, nothing sent.
    for bad in ["-1", "4294967296", "1.5", "", "x"] {
        let out = c_client(
            &client,
            &["--deadline", bad, "127.0.0.1", "1", "add", "1", "2"],
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "--deadline {bad:?}");
    }
    plain.shutdown().await;
    keyed.shutdown().await;
}
