//! Notifications from the at-host clients and the `at-host notify` command
//! (contract section 10.2), against fake servers that record the raw frames:
//! a NOTIFY frame (flags 0x0010) with a call body, its seq taken from the
//! request counter, never answered and never retransmitted.

use std::process::{Command, Stdio};
use std::time::Duration;

use at_host::{Client, UdpClient, UdpConfig, Value};
use at_tests::at_host_bin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// One frame as (flags, seq, body), read from a TCP stream.
async fn read_frame(stream: &mut tokio::net::TcpStream) -> (u16, u32, Vec<u8>) {
    let mut header = [0u8; 16];
    stream.read_exact(&mut header).await.unwrap();
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let seq = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let length = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    let mut body = vec![0u8; length as usize];
    stream.read_exact(&mut body).await.unwrap();
    (flags, seq, body)
}

fn datagram(bytes: &[u8]) -> (u16, u32, Vec<u8>) {
    let flags = u16::from_be_bytes([bytes[2], bytes[3]]);
    let seq = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    (flags, seq, bytes[16..].to_vec())
}

fn response(seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 16 + body.len()];
    let n = at_core::encode_frame(at_core::Kind::Response, seq, body, &mut out).unwrap();
    out.truncate(n);
    out
}

const LOG_BOOT: &[u8] = br#"{"func": "log", "args": ["boot"]}"#;
/// The call after the notification: its deadline is the client's 5 s
/// timeout less 500 ms (the clients' default, contract 10.4).
const ADD: &[u8] = br#"{"func": "add", "args": [1, 2], "deadline_ms": 4500}"#;

#[tokio::test]
async fn tcp_notify_is_a_notify_frame_with_the_next_seq_and_no_reply() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let notify = read_frame(&mut stream).await;
        let call = read_frame(&mut stream).await;
        stream
            .write_all(&response(call.1, br#"{"status": "success", "result": 3}"#))
            .await
            .unwrap();
        (notify, call)
    });
    let client = Client::connect(addr, Duration::from_secs(5)).await.unwrap();
    client
        .notify("log", &[Value::Str("boot".into())])
        .await
        .unwrap();
    assert_eq!(client.in_flight(), 0, "a notification keeps no state");
    let sum: i64 = client.call_as("add", (1, 2)).await.unwrap();
    assert_eq!(sum, 3);
    let (notify, call) = fake.await.unwrap();
    assert_eq!(notify, (0x0010, 1, LOG_BOOT.to_vec()));
    assert_eq!(call, (0x0001, 2, ADD.to_vec()));
}

#[tokio::test]
async fn udp_notify_is_sent_once_with_the_next_seq() {
    let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = fake.local_addr().unwrap();
    let config = UdpConfig {
        initial_timeout: Duration::from_millis(50),
        ..UdpConfig::default()
    };
    let client = UdpClient::connect(addr, config).await.unwrap();
    client
        .notify("log", &[Value::Str("boot".into())])
        .await
        .unwrap();
    let call = tokio::spawn(async move { client.call_as::<i64>("add", (1, 2)).await });
    let mut buf = [0u8; 2048];
    let (n, from) = fake.recv_from(&mut buf).await.unwrap();
    assert_eq!(datagram(&buf[..n]), (0x0010, 1, LOG_BOOT.to_vec()));
    // The next datagram is the call (seq 2), not a retransmitted NOTIFY.
    let (n, _) = fake.recv_from(&mut buf).await.unwrap();
    assert_eq!(datagram(&buf[..n]), (0x0001, 2, ADD.to_vec()));
    fake.send_to(&response(2, br#"{"status": "success", "result": 3}"#), from)
        .await
        .unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 3);
}

#[tokio::test]
async fn cli_notify_sends_one_notify_and_exits_0_over_tcp_and_udp() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = listener.local_addr().unwrap().to_string();
    let fake = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_frame(&mut stream).await
    });
    let out = tokio::task::spawn_blocking(move || {
        Command::new(at_host_bin())
            .args(["notify", "--server", &tcp, "log", "boot"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty());
    assert_eq!(fake.await.unwrap(), (0x0010, 1, LOG_BOOT.to_vec()));

    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp = socket.local_addr().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(at_host_bin())
            .args(["notify", "--udp", "--server", &udp, "add", "-1", "2"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).await.unwrap();
    assert_eq!(
        datagram(&buf[..n]),
        (0x0010, 1, br#"{"func": "add", "args": [-1, 2]}"#.to_vec())
    );
}

#[test]
fn cli_notify_to_nobody_is_exit_3() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = Command::new(at_host_bin())
        .args(["notify", "--server", &port.to_string(), "log", "x"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("transport error: "));
}
