//! The clients' default deadline (contract 10.4): a call bounded by the
//! client's timeout carries it as `deadline_ms`, less a tenth (at most
//! 500 ms) for the way back; `rpc.*` calls carry none, and
//! `with_deadlines(false)` / `UdpConfig::deadlines = false` turn it off.
//! Every UDP retransmission repeats the first datagram byte for byte.

use std::time::Duration;

use at_host::{Client, UdpClient, UdpConfig};
use at_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// A TCP server that answers `n` requests with `true` and hands back the
/// request bodies.
async fn recording_tcp(n: usize) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut bodies = Vec::new();
        let (mut stream, _) = listener.accept().await.unwrap();
        for _ in 0..n {
            let mut head = [0u8; 16];
            stream.read_exact(&mut head).await.unwrap();
            let seq = u32::from_be_bytes(head[4..8].try_into().unwrap());
            let len = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
            let mut body = vec![0u8; len];
            stream.read_exact(&mut body).await.unwrap();
            bodies.push(String::from_utf8(body).unwrap());
            let reply = frame(
                at_core::Kind::Response,
                seq,
                br#"{"status": "success", "result": true}"#,
            );
            stream.write_all(&reply).await.unwrap();
        }
        bodies
    });
    (addr, task)
}

#[tokio::test]
async fn tcp_calls_carry_the_timeout_as_their_deadline() {
    let (addr, task) = recording_tcp(3).await;
    let client = Client::connect(addr, Duration::from_secs(2)).await.unwrap();
    assert!(client.call_as::<bool>("led", [true]).await.unwrap());
    assert!(client.call_as::<bool>("rpc.ping", ()).await.unwrap());
    let client = client.with_deadlines(false);
    assert!(client.call_as::<bool>("led", [true]).await.unwrap());
    assert_eq!(
        task.await.unwrap(),
        [
            r#"{"func": "led", "args": [true], "deadline_ms": 1800}"#,
            r#"{"func": "rpc.ping", "args": []}"#,
            r#"{"func": "led", "args": [true]}"#,
        ]
    );
}

#[tokio::test]
async fn udp_calls_carry_it_too_and_retransmit_the_same_bytes() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        // The first datagram goes unanswered: the client retransmits.
        let (n, _) = server.recv_from(&mut buf).await.unwrap();
        let first = buf[..n].to_vec();
        let (n, from) = server.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            buf[..n],
            first[..],
            "a retransmission repeats the bytes, D unchanged"
        );
        let seq = u32::from_be_bytes(first[4..8].try_into().unwrap());
        let reply = frame(
            at_core::Kind::Response,
            seq,
            br#"{"status": "success", "result": true}"#,
        );
        server.send_to(&reply, from).await.unwrap();
        String::from_utf8(first[16..].to_vec()).unwrap()
    });
    let config = UdpConfig {
        timeout: Duration::from_secs(10),
        initial_timeout: Duration::from_millis(50),
        ..UdpConfig::default()
    };
    let client = UdpClient::connect(addr, config).await.unwrap();
    assert!(client.call_as::<bool>("led", [true]).await.unwrap());
    assert_eq!(
        task.await.unwrap(),
        r#"{"func": "led", "args": [true], "deadline_ms": 9500}"#,
        "10 s less at most 500 ms"
    );
}
