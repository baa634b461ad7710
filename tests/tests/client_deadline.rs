//! `deadline_ms` from the at-host clients and `at-host call --deadline`
//! (contract section 10.4), against fake servers that record the raw
//! frames: the member is written last (vector D1), and a UDP
//! retransmission repeats the request byte for byte.

use std::process::{Command, Stdio};
use std::time::Duration;

use at_host::{Client, Error, UdpClient, UdpConfig, Value};
use at_tests::at_host_bin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const D1_BODY: &[u8] = br#"{"func": "add", "args": [10, 20], "deadline_ms": 0}"#;
const D2_BODY: &[u8] =
    br#"{"status": "error", "code": "deadline_exceeded", "message": "deadline exceeded"}"#;

fn frame(kind: at_core::Kind, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 16 + body.len()];
    let n = at_core::encode_frame(kind, seq, body, &mut out).unwrap();
    out.truncate(n);
    out
}

/// A fake TCP server: reads one request, answers D2 under its seq, returns
/// the request's whole bytes.
async fn fake_tcp() -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 16];
        stream.read_exact(&mut header).await.unwrap();
        let length = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let mut body = vec![0u8; length as usize];
        stream.read_exact(&mut body).await.unwrap();
        let seq = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        stream
            .write_all(&frame(at_core::Kind::Error, seq, D2_BODY))
            .await
            .unwrap();
        let mut whole = header.to_vec();
        whole.extend_from_slice(&body);
        whole
    });
    (addr, task)
}

#[tokio::test]
async fn tcp_call_deadline_writes_deadline_ms_last() {
    let (addr, fake) = fake_tcp().await;
    let client = Client::connect(&addr, Duration::from_secs(5))
        .await
        .unwrap();
    let outcome = client
        .call_deadline("add", &[Value::Int(10), Value::Int(20)], 0)
        .await;
    match outcome {
        Err(Error::Remote { code, .. }) => assert_eq!(code, "deadline_exceeded"),
        other => panic!("{other:?}"),
    }
    // Vector D1, with this client's first seq.
    assert_eq!(
        fake.await.unwrap(),
        frame(at_core::Kind::Request, 1, D1_BODY)
    );
}

#[tokio::test]
async fn udp_retransmission_repeats_the_deadline_unchanged() {
    let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = fake.local_addr().unwrap();
    let config = UdpConfig {
        initial_timeout: Duration::from_millis(20),
        ..UdpConfig::default()
    };
    let client = UdpClient::connect(addr, config).await.unwrap();
    let call = tokio::spawn(async move {
        client
            .call_deadline("add", &[Value::Int(10), Value::Int(20)], 1500)
            .await
    });
    let mut buf = [0u8; 2048];
    // The first is left unanswered; the retransmission is answered.
    let (n, _) = fake.recv_from(&mut buf).await.unwrap();
    let first = buf[..n].to_vec();
    let (n, from) = fake.recv_from(&mut buf).await.unwrap();
    assert_eq!(buf[..n], first[..], "a retransmission repeats the bytes");
    assert!(
        first.ends_with(br#", "deadline_ms": 1500}"#),
        "{}",
        String::from_utf8_lossy(&first)
    );
    fake.send_to(
        &frame(
            at_core::Kind::Response,
            1,
            br#"{"status": "success", "result": 30}"#,
        ),
        from,
    )
    .await
    .unwrap();
    assert_eq!(call.await.unwrap().unwrap(), Value::Int(30));
}

#[tokio::test]
async fn cli_call_deadline_sends_it_and_reports_deadline_exceeded() {
    let (addr, fake) = fake_tcp().await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(at_host_bin())
            .args([
                "call",
                "--server",
                &addr,
                "--deadline",
                "0",
                "add",
                "10",
                "20",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: deadline_exceeded: deadline exceeded\n"
    );
    assert_eq!(
        fake.await.unwrap(),
        frame(at_core::Kind::Request, 1, D1_BODY)
    );
}

#[test]
fn cli_call_deadline_out_of_range_is_usage() {
    let out = Command::new(at_host_bin())
        .args(["call", "--deadline", "4294967296", "add", "1", "2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
