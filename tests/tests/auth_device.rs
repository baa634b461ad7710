//! Authentication on the device servers (at-core's Guard in the very
//! TcpServer and UdpServer a board runs), on the desktop: clients
//! authenticate over TCP and UDP with one session good on both, plain calls
//! are refused, and session churn: more clients than the 4 session slots,
//! each calling repeatedly, plus a flood of hellos: a session in use is
//! never evicted, calls fail only as the contract allows (a `busy` hello
//! when every slot holds a session in use), and the failures and
//! re-handshakes are counted and reported.

use std::net::SocketAddr;

use at_core::{ErrorCode, Function};
use at_embedded_example::desktop;
use at_host::{AuthKey, Client, UdpClient, UdpConfig};
use at_tests::*;

const KEY: &str = "demo:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

static FUNCTIONS: [Function; 4] = [
    at_core::calculator::ADD,
    at_core::calculator::SUB,
    at_core::calculator::MUL,
    at_core::calculator::DIV,
];

fn keys() -> &'static [at_core::auth::Key<'static>] {
    Box::leak(Box::new([at_core::auth::Key::parse(KEY).unwrap()]))
}

fn start() -> desktop::Running {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    desktop::start_with_keys(Some(loopback), Some(loopback), &FUNCTIONS, keys()).unwrap()
}

fn key() -> AuthKey {
    AuthKey::parse(KEY).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_servers_authenticate_over_tcp_and_udp() {
    let running = start();
    let (tcp, udp) = (running.tcp_addr().unwrap(), running.udp_addr().unwrap());
    let mut c = Client::connect(tcp, PATIENCE)
        .await
        .unwrap()
        .with_key(key());
    check_calculator_tcp(&mut c).await;
    let config = UdpConfig {
        key: Some(key()),
        ..UdpConfig::default()
    };
    let mut u = UdpClient::connect(udp, config).await.unwrap();
    check_calculator_udp(&mut u).await;
    let plain = Client::connect(tcp, PATIENCE).await.unwrap();
    assert_eq!(
        plain
            .call_as::<i64>("add", (1, 2))
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Unauthorized)
    );
    assert!(plain.call_as::<bool>("rpc.ping", ()).await.unwrap());
    let info: serde_json::Value = plain.call_as("rpc.info", ()).await.unwrap();
    assert_eq!(info["auth"], "required");
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_churn_never_evicts_a_session_in_use() {
    let running = start();
    let tcp = running.tcp_addr().unwrap();
    // 4 long-lived clients take the 4 slots and keep calling.
    let mut holders = Vec::new();
    for _ in 0..desktop::DESKTOP_SESSIONS {
        let c = Client::connect(tcp, PATIENCE)
            .await
            .unwrap()
            .with_key(key());
        assert_eq!(c.call_as::<i64>("add", (1, 1)).await.unwrap(), 2);
        holders.push(c);
    }
    // 6 more clients and a flood of hellos meanwhile.
    let (mut busy, mut other_failures, mut served) = (0, 0, 0);
    for round in 0..10i64 {
        for _ in 0..6 {
            let c = Client::connect(tcp, PATIENCE)
                .await
                .unwrap()
                .with_key(key());
            match c.call_as::<i64>("add", (round, 1)).await {
                Ok(v) => {
                    assert_eq!(v, round + 1);
                    served += 1;
                }
                Err(e) if e.code() == Some(ErrorCode::Busy) => busy += 1,
                Err(e) => {
                    other_failures += 1;
                    eprintln!("unexpected failure: {e}");
                }
            }
        }
        for holder in &mut holders {
            // A session in use is never evicted: every call succeeds.
            assert_eq!(
                holder.call_as::<i64>("add", (round, 2)).await.unwrap(),
                round + 2
            );
        }
    }
    eprintln!(
        "churn: 4 sessions in use and 60 newcomers: {served} newcomers served, {busy} told busy at hello, {other_failures} other failures; every held session's 40 calls succeeded"
    );
    assert_eq!(other_failures, 0, "calls fail only as the contract allows");
    assert_eq!(busy + served, 60);
    assert!(busy > 0, "a full table answers hellos busy");
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_make_room_and_clients_handshake_again() {
    // Sessions that never carried a call are evicted first: 8 clients that
    // only handshake (a hello flood) cannot lock out a 9th that calls.
    let running = start();
    let tcp = running.tcp_addr().unwrap();
    let mut flood = 0;
    for _ in 0..8 {
        let mut raw = connect(tcp).await;
        let body = r#"{"func": "rpc.hello", "args": ["demo", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"]}"#;
        write(&mut raw, &request(1, body)).await;
        let reply = read_reply(&mut raw).await;
        assert_eq!(error_code(&reply), None, "{}", reply.body);
        flood += 1;
    }
    let c = Client::connect(tcp, PATIENCE)
        .await
        .unwrap()
        .with_key(key());
    assert_eq!(c.call_as::<i64>("mul", (6, 7)).await.unwrap(), 42);
    eprintln!("{flood} unused sessions made room for a client that calls");
    running.stop();
}

/// The Python and C clients with a key against the device servers, TCP and
/// UDP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_c_clients_against_the_device_servers() {
    use at_tests::peers::{CALL_LIMIT, calc_client, python, run, text};
    use std::process::Command;
    let running = start();
    let (tcp, udp) = (running.tcp_addr().unwrap(), running.udp_addr().unwrap());
    let outputs = tokio::task::spawn_blocking(move || {
        let mut outputs = Vec::new();
        for (flag, addr) in [(None, tcp), (Some("--udp"), udp)] {
            if let Some(py) = python() {
                let mut call = py.command();
                call.arg("call").args(flag);
                call.args([
                    "--server",
                    &addr.to_string(),
                    "--key",
                    KEY,
                    "add",
                    "10",
                    "20",
                ]);
                outputs.push(("python", run(&mut call, CALL_LIMIT)));
            }
            if let Some(c) = calc_client() {
                let mut call = Command::new(c);
                call.args(flag).args([
                    "--key",
                    KEY,
                    "127.0.0.1",
                    &addr.port().to_string(),
                    "add",
                    "10",
                    "20",
                ]);
                outputs.push(("c", run(&mut call, CALL_LIMIT)));
            }
        }
        outputs
    })
    .await
    .unwrap();
    for (who, out) in outputs {
        assert_eq!(
            (out.status.code(), text(&out.stdout)),
            (Some(0), "30\n".to_owned()),
            "{who}: {out:?}"
        );
    }
    running.stop();
}
