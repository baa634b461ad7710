//! Authenticated frames made by hand (contract section 9): a session from
//! a hello over a raw socket, requests sealed under it, and replies read
//! whole, for tests that replay and tamper with them.

use at_core::HEADER_LEN;
use at_core::auth::ClientSession;
use at_host::AuthKey;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::{PATIENCE, read_reply, request, write};

/// The HMAC trailer of an authenticated frame: SID and tag.
const TRAILER: usize = 24;

/// A session made by hand: the hello (seq 1, `key`'s id, a fixed client
/// nonce) over `stream`, the server's proof checked under `key`.
pub async fn raw_session(stream: &mut TcpStream, key: &AuthKey) -> ClientSession {
    let nc: [u8; 16] = std::array::from_fn(|i| 0x10 + i as u8);
    let body = format!(
        r#"{{"func": "rpc.hello", "args": ["{}", "101112131415161718191a1b1c1d1e1f"]}}"#,
        key.kid()
    );
    write(stream, &request(1, &body)).await;
    let reply = read_reply(stream).await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let r = &json["result"];
    assert!(r.is_object(), "the hello answered: {}", reply.body);
    ClientSession::from_hello(
        &key.as_core(),
        &nc,
        r["session"].as_str().unwrap(),
        r["nonce"].as_str().unwrap(),
        r["proof"].as_str().unwrap(),
    )
    .expect("the server's proof verifies")
}

/// The request `body` with `seq`, sealed under `session`.
pub fn sealed(session: &ClientSession, seq: u32, body: &str) -> Vec<u8> {
    let mut out = vec![0u8; 1024];
    let n = session
        .seal_request(seq, body.as_bytes(), &mut out)
        .unwrap();
    out.truncate(n);
    out
}

/// One whole frame from `stream`, header and all.
pub async fn read_raw(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; HEADER_LEN];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    let len = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
    let mut frame = head.to_vec();
    frame.resize(HEADER_LEN + len, 0);
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut frame[HEADER_LEN..]))
        .await
        .unwrap()
        .unwrap();
    frame
}

/// A reply frame's outcome: "success" or its error code.
pub fn code(frame: &[u8]) -> String {
    let body = String::from_utf8_lossy(&frame[HEADER_LEN..]).into_owned();
    if frame[3] & 0x04 == 0 {
        return "success".into();
    }
    body.split("\"code\": \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("?")
        .to_owned()
}

/// An authenticated success reply's `result` (its body without the
/// trailer).
pub fn sealed_result(frame: &[u8]) -> serde_json::Value {
    let body = &frame[HEADER_LEN..frame.len() - TRAILER];
    let json: serde_json::Value = serde_json::from_slice(body).expect("a JSON body");
    json["result"].clone()
}
