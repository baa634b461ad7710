//! `at-host topics` (contract section 10.1: rpc.topics, paged as
//! rpc.functions) against a fake server that records the requests.

use std::process::{Command, Output, Stdio};

use at_tests::at_host_bin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A fake TCP server answering each request with the next of `replies`;
/// returns the request bodies.
async fn fake(replies: Vec<&'static str>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut bodies = Vec::new();
        for reply in replies {
            let mut header = [0u8; 16];
            stream.read_exact(&mut header).await.unwrap();
            let seq = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            let length = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
            let mut body = vec![0u8; length as usize];
            stream.read_exact(&mut body).await.unwrap();
            bodies.push(String::from_utf8(body).unwrap());
            let mut out = vec![0u8; 16 + reply.len()];
            let kind = if reply.contains(r#""status": "error""#) {
                at_core::Kind::Error
            } else {
                at_core::Kind::Response
            };
            let n = at_core::encode_frame(kind, seq, reply.as_bytes(), &mut out).unwrap();
            stream.write_all(&out[..n]).await.unwrap();
        }
        bodies
    });
    (addr, task)
}

const PAGE_1: &str =
    r#"{"status": "success", "result": {"topics": [{"name": "temp", "doc": "deg C"}], "next": 1}}"#;
const PAGE_2: &str = r#"{"status": "success", "result": {"topics": [{"name": "calls/count", "doc": "calls served"}], "next": null}}"#;

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(at_host_bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn topics_follows_pages_and_prints_a_table() {
    let (addr, server) = fake(vec![PAGE_1, PAGE_2]).await;
    let out = run(vec!["topics".into(), "--server".into(), addr]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "temp         deg C\ncalls/count  calls served\n"
    );
    assert_eq!(
        server.await.unwrap(),
        [
            r#"{"func": "rpc.topics", "args": [0]}"#,
            r#"{"func": "rpc.topics", "args": [1]}"#
        ]
    );
}

#[tokio::test]
async fn topics_json_prints_the_array() {
    let (addr, server) = fake(vec![PAGE_1, PAGE_2]).await;
    let out = run(vec![
        "topics".into(),
        "--json".into(),
        "--server".into(),
        addr,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[{\"name\": \"temp\", \"doc\": \"deg C\"}, {\"name\": \"calls/count\", \"doc\": \"calls served\"}]\n"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn topics_of_a_server_without_events_is_exit_1() {
    let (addr, server) = fake(vec![
        r#"{"status": "error", "code": "unknown_function", "message": "no such function: rpc.topics"}"#,
    ])
    .await;
    let out = run(vec!["topics".into(), "--server".into(), addr]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: unknown_function: no such function: rpc.topics\n"
    );
    server.await.unwrap();
}
