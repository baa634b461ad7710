//! Contract section 9 in at-core: the vectors byte for byte (keys, proof,
//! the hello and its reply, authenticated calls and replies, from the
//! server's and the client's side), then every refusal with a counter
//! function that proves whether it ran: wrong key, tampering with body,
//! seq, length or flags, a truncated trailer, an unknown session, replays
//! (same transport, another, after the remembered reply is gone),
//! remembered replies only at the original address and at most 4 times,
//! the plain-request policy, and the session table under a flood of hellos.

use std::cell::Cell;
use std::net::SocketAddr;

use at_core::auth::{
    ClientSession, FixedReplies, Guard, Key, NonceSource, Origin, ReplyProblem, Transport, crypto,
};
use at_core::calculator::{ADD, DIV};
use at_core::{CallError, Context, Frame, Function, Kind, ServerInfo, Value};

fn hex(text: &str) -> Vec<u8> {
    let digits: String = text.split_whitespace().collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

const KEY: &str = "demo:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const NC: [u8; 16] = [
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
];

fn hello_request() -> Vec<u8> {
    hex("41 54 00 01 00 00 00 01 00 00 00 4b e5 9b 50 43
         7b 22 66 75 6e 63 22 3a 20 22 72 70 63 2e 68 65
         6c 6c 6f 22 2c 20 22 61 72 67 73 22 3a 20 5b 22
         64 65 6d 6f 22 2c 20 22 61 30 61 31 61 32 61 33
         61 34 61 35 61 36 61 37 61 38 61 39 61 61 61 62
         61 63 61 64 61 65 61 66 22 5d 7d")
}

fn hello_reply() -> Vec<u8> {
    hex("41 54 00 02 00 00 00 01 00 00 00 9a c6 98 e3 b0
         7b 22 73 74 61 74 75 73 22 3a 20 22 73 75 63 63
         65 73 73 22 2c 20 22 72 65 73 75 6c 74 22 3a 20
         7b 22 73 65 73 73 69 6f 6e 22 3a 20 22 63 30 63
         31 63 32 63 33 63 34 63 35 63 36 63 37 22 2c 20
         22 6e 6f 6e 63 65 22 3a 20 22 62 30 62 31 62 32
         62 33 62 34 62 35 62 36 62 37 62 38 62 39 62 61
         62 62 62 63 62 64 62 65 62 66 22 2c 20 22 70 72
         6f 6f 66 22 3a 20 22 65 35 64 65 61 36 36 65 66
         36 37 32 32 66 37 39 66 34 64 30 32 36 33 38 32
         65 64 32 34 32 62 32 22 7d 7d")
}

fn add_request() -> Vec<u8> {
    hex("41 54 00 09 00 00 00 02 00 00 00 39 62 72 e5 0f
         7b 22 66 75 6e 63 22 3a 20 22 61 64 64 22 2c 20
         22 61 72 67 73 22 3a 20 5b 31 30 2c 20 32 30 5d
         7d c0 c1 c2 c3 c4 c5 c6 c7 62 19 ac 0e 7a 6f db
         0f 3f aa c4 7d 20 f4 2c 37")
}

fn add_reply() -> Vec<u8> {
    hex("41 54 00 0a 00 00 00 02 00 00 00 3b dc 1b f5 9a
         7b 22 73 74 61 74 75 73 22 3a 20 22 73 75 63 63
         65 73 73 22 2c 20 22 72 65 73 75 6c 74 22 3a 20
         33 30 7d c0 c1 c2 c3 c4 c5 c6 c7 6e 82 f4 b7 9e
         41 b5 23 5e 62 69 60 a5 d5 b4 4b")
}

fn div_request() -> Vec<u8> {
    hex("41 54 00 09 00 00 00 03 00 00 00 37 3d aa 15 bc
         7b 22 66 75 6e 63 22 3a 20 22 64 69 76 22 2c 20
         22 61 72 67 73 22 3a 20 5b 31 2c 20 30 5d 7d c0
         c1 c2 c3 c4 c5 c6 c7 27 43 72 5f a7 ad 7e f4 dd
         ed e1 b0 17 b7 12 5c")
}

fn div_reply() -> Vec<u8> {
    hex("41 54 00 0c 00 00 00 03 00 00 00 66 65 74 43 c8
         7b 22 73 74 61 74 75 73 22 3a 20 22 65 72 72 6f
         72 22 2c 20 22 63 6f 64 65 22 3a 20 22 64 69 76
         69 73 69 6f 6e 5f 62 79 5f 7a 65 72 6f 22 2c 20
         22 6d 65 73 73 61 67 65 22 3a 20 22 64 69 76 69
         73 69 6f 6e 20 62 79 20 7a 65 72 6f 22 7d c0 c1
         c2 c3 c4 c5 c6 c7 86 57 9b d2 97 ce b7 9d 32 08
         74 fb 1c b7 4c 3c")
}

/// Nonces b0..bf, then session ids c0..c7, c8..cf, ... as the vectors
/// (and a fresh id for every later session).
struct Scripted(u8);

impl NonceSource for Scripted {
    fn fill(&mut self, buf: &mut [u8]) {
        let base = if buf.len() == 16 { 0xb0 } else { 0xc0 };
        for (i, b) in buf.iter_mut().enumerate() {
            *b = base + i as u8;
        }
        if buf.len() == 8 {
            buf[7] = buf[7].wrapping_add(self.0);
            self.0 = self.0.wrapping_add(8);
        }
    }
}

thread_local! {
    static COUNT: Cell<i64> = const { Cell::new(0) };
}

fn count<'a>(_: &[Value<'a>]) -> Result<Value<'a>, CallError> {
    COUNT.with(|c| c.set(c.get() + 1));
    Ok(Value::Int(COUNT.with(Cell::get)))
}

static FUNCTIONS: [Function; 3] = [ADD, DIV, Function::new("count", count)];

const INFO: ServerInfo<'static> = ServerInfo {
    server: "test",
    name: "t",
    auth_required: false,
    max_body: 4096,
    ext: at_core::rpc::Ext::NONE,
};

type TestGuard = Guard<&'static [Key<'static>], Scripted, FixedReplies<8, 512>, 4>;

/// The one key, parsed once (a static, so Miri's leak check is satisfied).
fn keys() -> &'static [Key<'static>] {
    static KEYS: std::sync::OnceLock<[Key<'static>; 1]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| [Key::parse(KEY).unwrap()])
}

fn guard() -> TestGuard {
    Guard::new(keys(), FixedReplies::new(), Scripted(0))
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], port))
}

const TCP: Origin = Origin {
    transport: Transport::Stream,
    peer: Some(SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(192, 0, 2, 7),
        4000,
    ))),
    broadcast: false,
};

fn udp(port: u16) -> Origin {
    Origin::from(Transport::Datagram, peer(port))
}

/// Sends `bytes` to `guard` from `origin` at time `now`: the reply, if any.
fn send(guard: &mut TestGuard, bytes: &[u8], origin: &Origin, now: u64) -> Option<Vec<u8>> {
    let frame = Frame::parse(bytes, 4096).expect("a well-formed frame");
    let mut out = [0u8; 1024];
    guard
        .respond(
            &FUNCTIONS,
            &INFO,
            &frame,
            &mut Context::new(*origin, now),
            &mut out,
        )
        .map(|n| out[..n].to_vec())
}

fn code_of(reply: &[u8]) -> String {
    let frame = Frame::parse(reply, u32::MAX).unwrap();
    let text = String::from_utf8_lossy(frame.body).into_owned();
    text.split("\"code\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("success")
        .to_owned()
}

#[test]
fn keys_and_proof() {
    let key = Key::parse(KEY).unwrap();
    let ns: [u8; 16] = std::array::from_fn(|i| 0xb0 + i as u8);
    let keys = crypto::derive(&key.secret, "demo", &NC, &ns);
    assert_eq!(
        keys.request.to_vec(),
        hex("078a338e7c9a7cb26f514ace9492a0a274fd87ca376842fb11d414cb712e1b2e")
    );
    assert_eq!(
        keys.reply.to_vec(),
        hex("85218bd4b82a71a034757104a2297bf1e7eec1ba00d6166cbc6d9ff717c3fc24")
    );
    let sid: [u8; 8] = std::array::from_fn(|i| 0xc0 + i as u8);
    assert_eq!(
        crypto::proof(&keys.reply, &sid).to_vec(),
        hex("e5dea66ef6722f79f4d026382ed242b2")
    );
}

#[test]
fn the_server_writes_the_vectors_byte_for_byte() {
    let mut g = guard();
    assert_eq!(send(&mut g, &hello_request(), &TCP, 0), Some(hello_reply()));
    assert_eq!(send(&mut g, &add_request(), &TCP, 1), Some(add_reply()));
    assert_eq!(send(&mut g, &div_request(), &TCP, 2), Some(div_reply()));
}

#[test]
fn the_client_writes_and_reads_the_vectors() {
    let key = Key::parse(KEY).unwrap();
    let session = ClientSession::from_hello(
        &key,
        &NC,
        "c0c1c2c3c4c5c6c7",
        "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
        "e5dea66ef6722f79f4d026382ed242b2",
    )
    .expect("the proof verifies");
    let mut out = [0u8; 256];
    let n = session
        .seal_request(2, br#"{"func": "add", "args": [10, 20]}"#, &mut out)
        .unwrap();
    assert_eq!(out[..n].to_vec(), add_request());
    let n = session
        .seal_request(3, br#"{"func": "div", "args": [1, 0]}"#, &mut out)
        .unwrap();
    assert_eq!(out[..n].to_vec(), div_request());
    let reply = add_reply();
    let frame = Frame::parse(&reply, 4096).unwrap();
    assert_eq!(
        session.open_reply(&frame),
        Ok(&br#"{"status": "success", "result": 30}"#[..])
    );
    // Any byte changed (header as sent, body, session id, tag) fails.
    for i in [2, 7, 20, 52, 60] {
        let mut bad = add_reply();
        bad[i] ^= 0x01;
        // Keep the CRC right, so that only the tag can tell.
        let crc = at_core::checksum(&bad[16..]);
        bad[12..16].copy_from_slice(&crc.to_be_bytes());
        let frame = Frame::parse(&bad, 4096).unwrap();
        assert!(session.open_reply(&frame).is_err(), "byte {i}");
    }
    // A plain reply is not accepted as an authenticated one.
    let hello = hello_reply();
    let plain = Frame::parse(&hello, 4096).unwrap();
    assert_eq!(session.open_reply(&plain), Err(ReplyProblem::Plain));
    // Bad proofs, bad hex.
    assert!(
        ClientSession::from_hello(
            &key,
            &NC,
            "c0c1c2c3c4c5c6c7",
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
            "e5dea66ef6722f79f4d026382ed242b3"
        )
        .is_none()
    );
    assert!(
        ClientSession::from_hello(
            &key,
            &NC,
            "C0C1C2C3C4C5C6C7",
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
            "e5dea66ef6722f79f4d026382ed242b2"
        )
        .is_none()
    );
}

/// A session set up with the vectors' hello; the client's side of it.
fn session(g: &mut TestGuard) -> ClientSession {
    send(g, &hello_request(), &TCP, 0).unwrap();
    let key = Key::parse(KEY).unwrap();
    ClientSession::from_hello(
        &key,
        &NC,
        "c0c1c2c3c4c5c6c7",
        "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
        "e5dea66ef6722f79f4d026382ed242b2",
    )
    .unwrap()
}

fn sealed(s: &ClientSession, seq: u32, body: &str) -> Vec<u8> {
    let mut out = [0u8; 512];
    let n = s.seal_request(seq, body.as_bytes(), &mut out).unwrap();
    out[..n].to_vec()
}

/// Fixes the CRC after tampering, so the frame reaches the tag check.
fn recrc(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = at_core::checksum(&frame[16..]);
    frame[12..16].copy_from_slice(&crc.to_be_bytes());
    frame
}

fn runs() -> i64 {
    COUNT.with(Cell::get)
}

#[test]
fn tampered_frames_never_run() {
    let mut g = guard();
    let s = session(&mut g);
    let good = sealed(&s, 5, r#"{"func": "count"}"#);
    let before = runs();
    // A changed body, seq, length or flag; a truncated trailer.
    let mut cases = Vec::new();
    let mut body = good.clone();
    body[20] ^= 0x20;
    cases.push(("body", recrc(body)));
    let mut seq = good.clone();
    seq[7] ^= 0x01;
    cases.push(("seq", recrc(seq)));
    let mut flags = good.clone();
    flags[2] |= 0x80;
    cases.push(("reserved flag", recrc(flags)));
    let mut tag = good.clone();
    let last = tag.len() - 1;
    tag[last] ^= 0x01;
    cases.push(("tag", recrc(tag)));
    let mut short = good[..good.len() - 1].to_vec();
    let length = (short.len() - 16) as u32;
    short[8..12].copy_from_slice(&length.to_be_bytes());
    cases.push(("length and trailer", recrc(short)));
    for (what, frame) in &cases {
        // TCP: unauthorized, unauthenticated.
        let reply = send(&mut g, frame, &TCP, 10).unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(code_of(&reply), "unauthorized", "{what}");
        assert_eq!(reply[3] & 0x08, 0, "{what}: the refusal carries no AUTH");
        // UDP: dropped, except an unknown session (step 1 answers).
        let reply = send(&mut g, frame, &udp(4000), 10);
        assert!(
            reply.is_none() || *what == "length and trailer",
            "{what}: {reply:?}"
        );
    }
    assert_eq!(runs(), before, "nothing ran");
    // The good frame still runs once.
    let reply = send(&mut g, &good, &TCP, 11).unwrap();
    assert_eq!(code_of(&reply), "success");
    assert_eq!(runs(), before + 1);
}

#[test]
fn wrong_key_and_unknown_session() {
    let mut g = guard();
    // A client with another key for the same kid: the server's proof fails
    // on its side, and its requests fail the tag check.
    send(&mut g, &hello_request(), &TCP, 0).unwrap();
    let other = Key::parse("demo:ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
        .unwrap();
    assert!(
        ClientSession::from_hello(
            &other,
            &NC,
            "c0c1c2c3c4c5c6c7",
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
            "e5dea66ef6722f79f4d026382ed242b2"
        )
        .is_none()
    );
    // A session the server never issued.
    let mut forged = add_request();
    forged[49] = 0xee; // the session id's first byte
    let forged = recrc(forged);
    let reply = send(&mut g, &forged, &udp(1), 1).unwrap();
    assert_eq!(code_of(&reply), "unauthorized");
    // An unknown kid, and bad hello arguments.
    let hello = |args: &str| {
        let body = format!(r#"{{"func": "rpc.hello", "args": {args}}}"#);
        let mut frame = at_core::Header::new(Kind::Request, 9, body.as_bytes())
            .to_bytes()
            .to_vec();
        frame.extend_from_slice(body.as_bytes());
        frame
    };
    let nc = r#""a0a1a2a3a4a5a6a7a8a9aaabacadaeaf""#;
    let reply = send(&mut g, &hello(&format!(r#"["nobody", {nc}]"#)), &TCP, 2).unwrap();
    assert_eq!(code_of(&reply), "unauthorized");
    for bad in [
        r#"["demo"]"#.to_owned(),
        format!(r#"["demo", {nc}, 1]"#),
        format!(r#"["de mo", {nc}]"#),
        r#"["demo", "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF"]"#.to_owned(),
        r#"["demo", "a0a1"]"#.to_owned(),
        format!(r#"[1, {nc}]"#),
    ] {
        let reply = send(&mut g, &hello(&bad), &TCP, 2).unwrap();
        assert_eq!(code_of(&reply), "invalid_arguments", "{bad}");
    }
    // A hello by broadcast gets nothing.
    let broadcast = Origin {
        broadcast: true,
        ..udp(7)
    };
    assert!(send(&mut g, &hello_request(), &broadcast, 3).is_none());
}

#[test]
fn replays_never_run_twice() {
    let mut g = guard();
    let s = session(&mut g);
    let call = sealed(&s, 7, r#"{"func": "count"}"#);
    let before = runs();
    let first = send(&mut g, &call, &udp(5000), 1).unwrap();
    assert_eq!(runs(), before + 1);
    // The same datagram again from the same address: the remembered reply,
    // at most 4 times; then dropped.
    for _ in 0..4 {
        assert_eq!(send(&mut g, &call, &udp(5000), 2), Some(first.clone()));
    }
    assert_eq!(send(&mut g, &call, &udp(5000), 2), None);
    // From another address: never the reply; dropped (UDP), refused (TCP).
    assert_eq!(send(&mut g, &call, &udp(5001), 2), None);
    let elsewhere = Origin::from(Transport::Stream, SocketAddr::from(([192, 0, 2, 99], 1)));
    assert_eq!(
        code_of(&send(&mut g, &call, &elsewhere, 2).unwrap()),
        "unauthorized"
    );
    assert_eq!(runs(), before + 1);

    // A call lost with its TCP connection: the same frame on a new
    // connection (another port) gets the answer without a second run.
    let call = sealed(&s, 8, r#"{"func": "count"}"#);
    let first = send(&mut g, &call, &TCP, 3).unwrap();
    let reconnected = Origin::from(Transport::Stream, peer(4999));
    assert_eq!(send(&mut g, &call, &reconnected, 4), Some(first));
    assert_eq!(runs(), before + 2);

    // After the remembered reply has expired: refused, never run.
    let later = 3 + at_core::auth::REMEMBER_MS;
    assert_eq!(
        code_of(&send(&mut g, &call, &TCP, later).unwrap()),
        "unauthorized"
    );
    assert_eq!(send(&mut g, &call, &udp(4000), later), None);
    assert_eq!(runs(), before + 2);

    // Older than the window: refused.
    let call = sealed(&s, 100, r#"{"func": "count"}"#);
    send(&mut g, &call, &TCP, 5).unwrap();
    let old = sealed(&s, 20, r#"{"func": "count"}"#);
    assert_eq!(
        code_of(&send(&mut g, &old, &TCP, 6).unwrap()),
        "unauthorized"
    );
    assert_eq!(runs(), before + 3);
}

#[test]
fn plain_requests_to_a_server_with_keys() {
    let mut g = guard();
    let plain = |body: &str| {
        let mut frame = at_core::Header::new(Kind::Request, 3, body.as_bytes())
            .to_bytes()
            .to_vec();
        frame.extend_from_slice(body.as_bytes());
        frame
    };
    let before = runs();
    assert_eq!(
        code_of(&send(&mut g, &plain(r#"{"func": "count"}"#), &TCP, 0).unwrap()),
        "unauthorized"
    );
    assert_eq!(
        code_of(
            &send(
                &mut g,
                &plain(r#"{"func": "add", "args": [1, 2]}"#),
                &TCP,
                0
            )
            .unwrap()
        ),
        "unauthorized"
    );
    assert_eq!(runs(), before);
    assert_eq!(
        code_of(&send(&mut g, &plain(r#"{"func": "rpc.ping"}"#), &TCP, 0).unwrap()),
        "success"
    );
    let info = send(&mut g, &plain(r#"{"func": "rpc.info"}"#), &TCP, 0).unwrap();
    assert!(String::from_utf8_lossy(&info).contains(r#""auth": "required""#));
    // rpc.hello inside an authenticated frame: invalid_arguments.
    let s = session(&mut g);
    let hello = sealed(
        &s,
        4,
        r#"{"func": "rpc.hello", "args": ["demo", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"]}"#,
    );
    let reply = send(&mut g, &hello, &TCP, 1).unwrap();
    assert_eq!(code_of(&reply), "invalid_arguments");
    assert_ne!(reply[3] & 0x08, 0, "an authenticated answer");

    // A server without keys: hello is unauthorized, calls go as usual.
    let mut open: TestGuard = Guard::new(&[][..], FixedReplies::new(), Scripted(0));
    assert_eq!(
        code_of(&send(&mut open, &hello_request(), &TCP, 0).unwrap()),
        "unauthorized"
    );
    assert_eq!(
        code_of(
            &send(
                &mut open,
                &plain(r#"{"func": "add", "args": [1, 2]}"#),
                &TCP,
                0
            )
            .unwrap()
        ),
        "success"
    );
    assert_eq!(
        code_of(&send(&mut open, &add_request(), &TCP, 0).unwrap()),
        "unauthorized"
    );
}

#[test]
fn a_hello_flood_never_evicts_a_session_in_use() {
    let mut g = guard();
    let s = session(&mut g);
    // Used: a verified request.
    send(&mut g, &sealed(&s, 1, r#"{"func": "count"}"#), &TCP, 1).unwrap();
    // 100 hellos into a table of 4 (10 under Miri, where each hello's
    // HKDF and HMAC take seconds): they evict each other, never it.
    let flood = if cfg!(miri) { 10 } else { 100 };
    for i in 0..flood {
        let reply = send(&mut g, &hello_request(), &TCP, 2 + i).unwrap();
        assert_eq!(code_of(&reply), "success", "hello {i}");
    }
    let reply = send(&mut g, &sealed(&s, 2, r#"{"func": "count"}"#), &TCP, 200).unwrap();
    assert_eq!(
        code_of(&reply),
        "success",
        "the used session survived the flood"
    );
    // Four used sessions fill the table: a fifth hello is busy until one
    // has been idle 60 s.
    let mut g = guard();
    for i in 0..4u32 {
        let reply = send(&mut g, &hello_request(), &TCP, 0).unwrap();
        let sid = sid_of(&reply);
        let s = ClientSession::from_hello(
            &Key::parse(KEY).unwrap(),
            &NC,
            &sid,
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
            &proof_of(&reply),
        )
        .unwrap();
        send(
            &mut g,
            &sealed(&s, 1, r#"{"func": "count"}"#),
            &TCP,
            u64::from(i),
        )
        .unwrap();
    }
    assert_eq!(
        code_of(&send(&mut g, &hello_request(), &TCP, 10).unwrap()),
        "busy"
    );
    let idle = 10 + at_core::auth::SESSION_MIN_IDLE_MS;
    assert_eq!(
        code_of(&send(&mut g, &hello_request(), &TCP, idle).unwrap()),
        "success"
    );
}

fn member(reply: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(&reply[16..]).into_owned();
    text.split(&format!("\"{name}\": \""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned()
}

fn sid_of(reply: &[u8]) -> String {
    member(reply, "session")
}

fn proof_of(reply: &[u8]) -> String {
    member(reply, "proof")
}
