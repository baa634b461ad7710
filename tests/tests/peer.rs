//! Calls in both directions on at-host's TCP server (contract 10.5, 10.8
//! rules 8 and 11, vectors P1 to P3): a client that called `rpc.peer` is
//! called back over its connection through a [`Peer`] handle. Each test's
//! raw TCP client plays the board.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use at_core::Kind;
use at_host::{AuthKey, Error, Peer, ProtocolError, Server};
use at_tests::*;
use serde_json::{Value as Json, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

const KEY: &str = "demo:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// P1: the board's `rpc.peer`, seq 1 (contract 10.7).
const P1_HEADER: [u8; 16] = hex16("41 54 00 01 00 00 00 01 00 00 00 20 20 54 29 fe");
const P1_BODY: &str = r#"{"func": "rpc.peer", "args": []}"#;
/// P2: its reply over TCP.
const P2_HEADER: [u8; 16] = hex16("41 54 00 02 00 00 00 01 00 00 00 30 5a 9a 0d 8c");
const P2_BODY: &str = r#"{"status": "success", "result": {"lease": null}}"#;
/// P3: the host calls the board, the host's seq 1.
const P3_HEADER: [u8; 16] = hex16("41 54 00 01 00 00 00 01 00 00 00 20 d2 da 20 a0");
const P3_BODY: &str = r#"{"func": "rpc.info", "args": []}"#;

/// Sixteen bytes from hex digits (spaces ignored), at compile time.
const fn hex16(text: &str) -> [u8; 16] {
    let bytes = text.as_bytes();
    let mut out = [0u8; 16];
    let (mut i, mut n) = (0, 0);
    while i < bytes.len() {
        let d = match bytes[i] {
            b'0'..=b'9' => bytes[i] - b'0',
            b'a'..=b'f' => bytes[i] - b'a' + 10,
            _ => {
                i += 1;
                continue;
            }
        };
        out[n / 2] = out[n / 2] * 16 + d;
        n += 1;
        i += 1;
    }
    assert!(n == 32, "16 bytes of hex");
    out
}

fn whole(header: [u8; 16], body: &str) -> Vec<u8> {
    let mut out = header.to_vec();
    out.extend_from_slice(body.as_bytes());
    out
}

/// A server with the calculator, `log` (lines to `logged`) and
/// `ask_back`, an async function that calls its caller's `name` back.
struct Served {
    server: Server,
    logged: mpsc::UnboundedReceiver<String>,
}

async fn serve() -> Served {
    let (tx, logged) = mpsc::unbounded_channel();
    let server = Server::builder()
        .calculator()
        .function("log", move |line: String| {
            let _ = tx.send(line);
        })
        .async_function("ask_back", || async {
            let Some(peer) = at_host::caller_peer() else {
                return Err(at_host::HandlerError::new(
                    at_host::ErrorCode::Unauthorized,
                    "call rpc.peer first",
                ));
            };
            let name = peer.call_as::<String>("name", ()).await;
            name.map_err(|e| {
                at_host::HandlerError::new(at_host::ErrorCode::Internal, e.to_string())
            })
        })
        .tcp("127.0.0.1:0".parse().unwrap())
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("start");
    Served { server, logged }
}

/// Reads exactly `n` bytes, bounded by [`PATIENCE`].
async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut buf))
        .await
        .expect("bytes in time")
        .expect("read");
    buf
}

/// Connects, sends P1 and checks that the reply is P2 byte for byte;
/// returns the board's stream and its handle on the server.
async fn board(server: &Server) -> (TcpStream, Peer) {
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    assert_eq!(request(1, P1_BODY), whole(P1_HEADER, P1_BODY), "vector P1");
    write(&mut stream, &whole(P1_HEADER, P1_BODY)).await;
    let reply = read_exact(&mut stream, 16 + P2_BODY.len()).await;
    assert_eq!(reply, whole(P2_HEADER, P2_BODY), "vector P2");
    let peer = tokio::time::timeout(PATIENCE, server.next_peer())
        .await
        .expect("a peer in time");
    assert_eq!(peer.addr(), stream.local_addr().unwrap());
    (stream, peer)
}

/// Answers the request `seq` with `result`.
async fn answer(stream: &mut TcpStream, seq: u32, result: &str) {
    let body = format!(r#"{{"status": "success", "result": {result}}}"#);
    write(stream, &frame(Kind::Response, seq, body.as_bytes())).await;
}

fn kind(reply: &RawReply) -> Kind {
    reply.header.kind().expect("a frame kind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_gets_p2_then_the_host_calls_the_board_from_seq_1() {
    let mut s = serve().await;
    let (mut stream, peer) = board(&s.server).await;
    // The board's NOTIFY log("boot ...") runs the host's log (vector N1's
    // shape), and is never answered.
    write(
        &mut stream,
        &frame(Kind::Notify, 2, br#"{"func": "log", "args": ["boot"]}"#),
    )
    .await;
    let line = tokio::time::timeout(PATIENCE, s.logged.recv())
        .await
        .unwrap();
    assert_eq!(line.as_deref(), Some("boot"));

    // The host's first call is P3, byte for byte.
    let call = tokio::spawn({
        let peer = peer.clone();
        async move { peer.call_as::<Json>("rpc.info", ()).await }
    });
    let request = read_exact(&mut stream, 16 + P3_BODY.len()).await;
    assert_eq!(request, whole(P3_HEADER, P3_BODY), "vector P3");
    answer(&mut stream, 1, r#"{"name": "board"}"#).await;
    let info = tokio::time::timeout(PATIENCE, call).await.unwrap().unwrap();
    assert_eq!(info.unwrap(), json!({"name": "board"}));

    // The next is seq 2; an error reply is the call's Remote error.
    let call = tokio::spawn({
        let peer = peer.clone();
        async move { peer.call_as::<i64>("uptime", ()).await }
    });
    let request = read_reply(&mut stream).await;
    assert_eq!((kind(&request), request.header.seq), (Kind::Request, 2));
    assert_eq!(request.body, r#"{"func": "uptime", "args": []}"#);
    let body = br#"{"status": "error", "code": "unknown_function", "message": "unknown function"}"#;
    write(&mut stream, &frame(Kind::Error, 2, body)).await;
    let e = tokio::time::timeout(PATIENCE, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), Some(at_host::ErrorCode::UnknownFunction), "{e}");

    // The board's own calls are answered as before.
    write(&mut stream, &calc(3, "add", "1", "2")).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (3, "3".to_owned()));
    assert_eq!(s.server.peers().len(), 1);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_calling_at_once_do_not_deadlock() {
    let s = serve().await;
    let (mut stream, peer) = board(&s.server).await;
    // The host calls the board; the board, before answering, calls the
    // host and gets its reply: the server reads while it awaits.
    let call = tokio::spawn({
        let peer = peer.clone();
        async move { peer.call_as::<f64>("temp", ()).await }
    });
    let host_call = read_reply(&mut stream).await;
    assert_eq!((kind(&host_call), host_call.header.seq), (Kind::Request, 1));
    write(&mut stream, &calc(2, "mul", "6", "7")).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(
        (kind(&reply), reply.header.seq, reply.outcome()),
        (Kind::Response, 2, "42".into())
    );
    answer(&mut stream, 1, "21.5").await;
    let temp = tokio::time::timeout(PATIENCE, call).await.unwrap().unwrap();
    assert_eq!(temp.unwrap(), 21.5);

    // An async function that calls its caller back: the board's request
    // waits on the host's call to the board, which the board answers
    // while its own call runs; a request meanwhile is owed busy, sent
    // after the running call's reply (10.8 rule 8).
    write(
        &mut stream,
        &request(3, r#"{"func": "ask_back", "args": []}"#),
    )
    .await;
    let back = read_reply(&mut stream).await;
    assert_eq!((kind(&back), back.header.seq), (Kind::Request, 2));
    assert_eq!(back.body, r#"{"func": "name", "args": []}"#);
    write(&mut stream, &calc(4, "add", "1", "1")).await;
    answer(&mut stream, 2, r#""bench-board""#).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(
        (reply.header.seq, reply.outcome()),
        (3, r#""bench-board""#.to_owned())
    );
    let reply = read_reply(&mut stream).await;
    assert_eq!(
        (reply.header.seq, error_code(&reply)),
        (4, Some(at_host::ErrorCode::Busy))
    );
    // And the connection goes on.
    write(&mut stream, &calc(5, "add", "1", "1")).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (5, "2".to_owned()));
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_unawaited_seqs_are_dropped_and_the_connection_kept() {
    let s = serve().await;
    let (mut stream, peer) = board(&s.server).await;
    for seq in [0, 77] {
        answer(&mut stream, seq, "true").await;
    }
    write(
        &mut stream,
        &frame(
            Kind::Error,
            9,
            br#"{"status": "error", "code": "busy", "message": "busy"}"#,
        ),
    )
    .await;
    write(
        &mut stream,
        &request(2, r#"{"func": "rpc.ping", "args": [7]}"#),
    )
    .await;
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (2, "7".to_owned()));
    // The host's calls still work: seq 77 went to no call, so the first
    // is seq 1 and only its own reply answers it.
    let call = tokio::spawn(async move { peer.call_as::<bool>("ready", ()).await });
    let host_call = read_reply(&mut stream).await;
    assert_eq!(host_call.header.seq, 1);
    answer(&mut stream, 1, "true").await;
    assert!(
        tokio::time::timeout(PATIENCE, call)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    );

    // Without rpc.peer, a reply is dropped too, the connection kept.
    let mut plain = connect(s.server.tcp_addr().unwrap()).await;
    answer(&mut plain, 1, "true").await;
    write(&mut plain, &calc(1, "sub", "5", "2")).await;
    let reply = read_reply(&mut plain).await;
    assert_eq!((reply.header.seq, reply.outcome()), (1, "3".to_owned()));
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_peer_whose_connection_closes_fails_at_once() {
    let s = serve().await;
    let (mut stream, peer) = board(&s.server).await;
    let peer = peer.with_timeout(Duration::from_secs(60));
    let started = Instant::now();
    let call = tokio::spawn({
        let peer = peer.clone();
        async move { peer.call_as::<Json>("slow", ()).await }
    });
    let host_call = read_reply(&mut stream).await;
    assert_eq!(host_call.header.seq, 1);
    drop(stream);
    let outcome = tokio::time::timeout(PATIENCE, call).await.unwrap().unwrap();
    assert!(
        matches!(outcome, Err(Error::Protocol(ProtocolError::Closed))),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    tokio::time::timeout(PATIENCE, peer.closed()).await.unwrap();
    assert!(peer.is_closed());
    // Later calls fail at once too, and the peer is off the list.
    let later = tokio::time::timeout(PATIENCE, peer.call_as::<Json>("slow", ())).await;
    assert!(
        matches!(later, Ok(Err(Error::Protocol(ProtocolError::Closed)))),
        "{later:?}"
    );
    assert!(s.server.peers().is_empty());
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_four_calls_are_outstanding_towards_a_peer() {
    let s = serve().await;
    let (mut stream, peer) = board(&s.server).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..6i64 {
        let peer = peer.clone();
        calls.spawn(async move { peer.call_as::<i64>("echo", [i]).await });
    }
    let mut seqs = Vec::new();
    for _ in 0..at_host::MAX_PEER_CALLS {
        seqs.push(read_reply(&mut stream).await.header.seq);
    }
    assert_eq!(seqs, [1, 2, 3, 4]);
    // No fifth while four are owed (a bounded look: nothing may come).
    let mut byte = [0u8; 1];
    let fifth = tokio::time::timeout(Duration::from_millis(300), stream.peek(&mut byte)).await;
    assert!(
        fifth.is_err(),
        "a fifth call came while four were outstanding"
    );
    for seq in 1..=6u32 {
        if seq > 4 {
            let next = read_reply(&mut stream).await;
            assert_eq!(next.header.seq, seq);
        }
        answer(&mut stream, seq, "0").await;
    }
    while let Some(outcome) = calls.join_next().await {
        assert_eq!(outcome.unwrap().unwrap(), 0);
    }
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rpc_peer_no_handle_appears() {
    let s = serve().await;
    let mut plain = connect(s.server.tcp_addr().unwrap()).await;
    write(&mut plain, &calc(1, "add", "1", "2")).await;
    assert_eq!(read_reply(&mut plain).await.outcome(), "3");
    assert!(s.server.peers().is_empty());
    // The next peer is the connection that called rpc.peer, not this one.
    let (board_stream, peer) = board(&s.server).await;
    assert_ne!(peer.addr(), plain.local_addr().unwrap());
    let listed: Vec<_> = s.server.peers().iter().map(Peer::addr).collect();
    assert_eq!(listed, [board_stream.local_addr().unwrap()]);
    // A second rpc.peer on the same connection is granted again, and adds
    // no handle.
    let mut board_stream = board_stream;
    write(&mut board_stream, &request(2, P1_BODY)).await;
    let again = read_reply(&mut board_stream).await;
    assert_eq!(
        (again.header.seq, again.outcome()),
        (2, r#"{"lease": null}"#.to_owned())
    );
    assert_eq!(s.server.peers().len(), 1);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_peer_arguments_and_rpc_info_ext() {
    let s = serve().await;
    let mut stream = connect(s.server.tcp_addr().unwrap()).await;
    write(
        &mut stream,
        &request(1, r#"{"func": "rpc.info", "args": []}"#),
    )
    .await;
    let info = read_reply(&mut stream).await;
    assert!(
        info.body
            .ends_with(r#""ext": ["notify", "deadline", "cancel", "peer"]}}"#),
        "{}",
        info.body
    );
    for (seq, args) in [
        (2, r#"["x"]"#),
        (3, "[0]"),
        (4, "[301]"),
        (5, "[60, 1]"),
        (6, "[1.5]"),
    ] {
        let body = format!(r#"{{"func": "rpc.peer", "args": {args}}}"#);
        write(&mut stream, &request(seq, &body)).await;
        let reply = read_reply(&mut stream).await;
        assert_eq!(
            (reply.header.seq, error_code(&reply)),
            (seq, Some(at_host::ErrorCode::InvalidArguments)),
            "{args}"
        );
    }
    assert!(s.server.peers().is_empty());
    // A lease is ignored on TCP.
    write(
        &mut stream,
        &request(7, r#"{"func": "rpc.peer", "args": [60]}"#),
    )
    .await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.body, P2_BODY);
    assert_eq!(s.server.peers().len(), 1);

    // UDP: no peers here, so no `peer` in ext and rpc.peer is unknown.
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.connect(s.server.udp_addr().unwrap()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    for (seq, body, want) in [
        (
            1,
            r#"{"func": "rpc.info", "args": []}"#,
            r#""ext": ["notify", "deadline", "cancel"]}}"#,
        ),
        (
            2,
            P1_BODY,
            r#""code": "unknown_function", "message": "unknown function"}"#,
        ),
    ] {
        udp.send(&request(seq, body)).await.unwrap();
        let n = tokio::time::timeout(PATIENCE, udp.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let reply = parse_reply(&buf[..n]);
        assert!(reply.body.ends_with(want), "{}", reply.body);
    }
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_no_peer_is_offered() {
    let server = Server::builder()
        .calculator()
        .key(AuthKey::parse(KEY).unwrap())
        .tcp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    write(
        &mut stream,
        &request(1, r#"{"func": "rpc.info", "args": []}"#),
    )
    .await;
    let info = read_reply(&mut stream).await;
    assert!(
        info.body.ends_with(r#""ext": ["notify", "deadline"]}}"#),
        "{}",
        info.body
    );
    write(&mut stream, &whole(P1_HEADER, P1_BODY)).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(error_code(&reply), Some(at_host::ErrorCode::Unauthorized));
    assert!(server.peers().is_empty());
    server.shutdown().await;
}

/// `at-host serve`'s `log(line)`: a board's NOTIFY log("boot ...") prints
/// `log from ADDR: LINE` on stdout.
#[test]
fn serve_prints_a_boards_log_line() {
    let mut child = Command::new(at_host_bin())
        .args(["serve", "--tcp", "127.0.0.1:0", "--udp", "none"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn at-host serve");
    let stdout = child.stdout.take().unwrap();
    let _guard = KillOnDrop(child);
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = lines.recv_timeout(PATIENCE).expect("a listening line");
    let addr: std::net::SocketAddr = first
        .strip_prefix("listening on tcp://")
        .unwrap_or_else(|| panic!("{first:?}"))
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = runtime.block_on(async {
        let mut stream = connect(addr).await;
        write(&mut stream, &whole(P1_HEADER, P1_BODY)).await;
        assert_eq!(
            read_exact(&mut stream, 16 + P2_BODY.len()).await,
            whole(P2_HEADER, P2_BODY)
        );
        let body = br#"{"func": "log", "args": ["boot fw 1.2\nfake line"]}"#;
        write(&mut stream, &frame(Kind::Notify, 2, body)).await;
        // A call after it: its reply shows the notification was read.
        write(&mut stream, &calc(3, "add", "1", "2")).await;
        assert_eq!(read_reply(&mut stream).await.outcome(), "3");
        let local = stream.local_addr().unwrap();
        drop(stream);
        local
    });
    let line = lines.recv_timeout(PATIENCE).expect("the log line");
    assert_eq!(line, format!("log from {local}: boot fw 1.2\\nfake line"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outlives_the_idle_timeout() {
    let server = Server::builder()
        .calculator()
        .idle_timeout(Duration::from_millis(200))
        .tcp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    // The board connects first, so it is idle longer than the other.
    let (mut stream, peer) = board(&server).await;
    let mut plain = connect(server.tcp_addr().unwrap()).await;
    read_until_closed(&mut plain).await;
    write(&mut stream, &calc(2, "add", "2", "2")).await;
    assert_eq!(read_reply(&mut stream).await.outcome(), "4");
    assert!(!peer.is_closed());
    server.shutdown().await;
    assert!(peer.is_closed());
}

/// What a board serves, as a `#[service]` trait: its client calls a peer
/// (the board's side is the raw client, so the trait goes unimplemented).
#[allow(dead_code)]
#[at_host::service]
trait Board {
    /// Seconds since boot.
    async fn uptime(&self) -> u64;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_client_calls_a_peer() {
    let s = serve().await;
    let (mut stream, peer) = board(&s.server).await;
    let call = tokio::spawn(async move { BoardClient::new(peer).uptime().await });
    let request = read_reply(&mut stream).await;
    assert_eq!(
        (kind(&request), request.header.seq, request.body.as_str()),
        (Kind::Request, 1, r#"{"func": "uptime", "args": []}"#)
    );
    answer(&mut stream, 1, "12345").await;
    let uptime = tokio::time::timeout(PATIENCE, call).await.unwrap().unwrap();
    assert_eq!(uptime.unwrap(), 12345);
    s.server.shutdown().await;
}

/// The board's own code (at-embedded-example's `CallHome`, what the
/// firmware runs with `AT_CALL_HOME`) on the desktop over
/// std-embedded-nal, calling home to this server: it is a peer, its
/// `log("boot ...")` reaches `log`, and the host calls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_boards_call_home_code_is_called_back() {
    use at_embedded_example::desktop::DesktopStack;
    use at_embedded_example::tcp::call_home::CallHome;
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut s = serve().await;
    let home = s.server.tcp_addr().unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let board = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut stack = DesktopStack::default();
            let mut call_home = CallHome::<DesktopStack, 1040, 1024>::new(home, "boot desk-board")
                .with_name("desk-board");
            let clock = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let now = u64::try_from(clock.elapsed().as_millis()).unwrap();
                let work = call_home.poll(
                    &mut stack,
                    &at_core::calculator::CALCULATOR,
                    &mut at_core::auth::Open,
                    None,
                    now,
                );
                if work == 0 {
                    // The board's idle loop (a firmware would sleep until
                    // an interrupt).
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    });
    let peer = tokio::time::timeout(PATIENCE, s.server.next_peer())
        .await
        .expect("the board calls home in time");
    let line = tokio::time::timeout(PATIENCE, s.logged.recv())
        .await
        .unwrap();
    assert_eq!(line.as_deref(), Some("boot desk-board"));
    let info: Json = peer.call_as("rpc.info", ()).await.unwrap();
    assert_eq!(info["name"], "desk-board");
    let mut sums = tokio::task::JoinSet::new();
    for i in 0..8i64 {
        let peer = peer.clone();
        sums.spawn(async move { (i, peer.call_as::<i64>("add", (i, 100)).await) });
    }
    while let Some(done) = sums.join_next().await {
        let (i, sum) = done.unwrap();
        assert_eq!(sum.unwrap(), i + 100);
    }
    let e = peer.call_as::<f64>("div", (1, 0)).await.unwrap_err();
    assert_eq!(e.code(), Some(at_host::ErrorCode::DivisionByZero), "{e}");
    // The server's shutdown closes the connection, so a board blocked in
    // a receive wakes and sees the stop.
    stop.store(true, Ordering::Relaxed);
    s.server.shutdown().await;
    board.join().unwrap();
}
