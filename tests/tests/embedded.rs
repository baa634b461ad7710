//! The device servers of at-embedded-example (the very `TcpServer` and
//! `UdpServer` a board runs), on the desktop over std-embedded-nal, on
//! loopback with OS-chosen ports: the calculator through the at-host
//! clients, and raw sockets for what a well-behaved client never sends.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use at_core::{CallError, ErrorCode, Function, HEADER_LEN, Kind, Value as V};
use at_embedded_example::desktop::{self, CLIENTS, MAX_BODY, Running};
use at_host::{Client, UdpClient, UdpConfig, Value};
use at_tests::*;

/// Executions of `count`: how a test sees whether a function ran again.
static COUNT: AtomicI64 = AtomicI64::new(0);

fn count<'a>(_: &[V<'a>]) -> Result<V<'a>, CallError> {
    Ok(V::Int(COUNT.fetch_add(1, Ordering::SeqCst) + 1))
}

static FUNCTIONS: [Function; 5] = [
    at_core::calculator::ADD,
    at_core::calculator::SUB,
    at_core::calculator::MUL,
    at_core::calculator::DIV,
    Function::new("count", count),
];

fn start() -> Running {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    desktop::start_with(Some(loopback), Some(loopback), &FUNCTIONS).expect("servers start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calculator_and_errors_through_the_at_host_client() {
    let running = start();
    let addr = running.tcp_addr().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    let mut c = Client::connect(addr, PATIENCE).await.expect("connect");
    check_calculator_tcp(&mut c).await;
    // A body that is not a request.
    let mut raw = connect(addr).await;
    write(&mut raw, &request(5, "{\"args\": [1, 2]}")).await;
    let reply = read_reply(&mut raw).await;
    assert_eq!(reply.header.seq, 5);
    assert_eq!(error_code(&reply), Some(ErrorCode::BadRequest));
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_split_and_pipelined_frames() {
    let running = start();
    let addr = running.tcp_addr().unwrap();
    let mut raw = connect(addr).await;
    // Three frames in one write.
    let mut sticky = calc(1, "add", "1", "2");
    sticky.extend(calc(2, "mul", "3", "4"));
    sticky.extend(calc(3, "div", "1", "0"));
    write(&mut raw, &sticky).await;
    let replies = [
        read_reply(&mut raw).await,
        read_reply(&mut raw).await,
        read_reply(&mut raw).await,
    ];
    assert_eq!(
        replies.iter().map(|r| r.header.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(replies[0].outcome(), "3");
    assert_eq!(replies[1].outcome(), "12");
    assert_eq!(replies[2].outcome(), "error division_by_zero");
    // One frame in pieces: mid-header, mid-body, the rest.
    let split = calc(4, "sub", "10", "20");
    for piece in [
        &split[..7],
        &split[7..HEADER_LEN + 5],
        &split[HEADER_LEN + 5..],
    ] {
        write(&mut raw, piece).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let reply = read_reply(&mut raw).await;
    assert_eq!((reply.header.seq, reply.outcome()), (4, "-10".into()));
    // Byte by byte.
    for byte in calc(5, "add", "20", "22") {
        write(&mut raw, &[byte]).await;
    }
    let reply = read_reply(&mut raw).await;
    assert_eq!((reply.header.seq, reply.outcome()), (5, "42".into()));

    // Pipelining through the client: 200 requests before any reply.
    let c = Client::connect(addr, PATIENCE).await.expect("connect");
    let mut seqs = Vec::new();
    for i in 0..200 {
        seqs.push(c.send("add", &[V::Int(i), V::Int(1)]).await.unwrap());
    }
    c.flush().await.unwrap();
    for (i, want_seq) in seqs.into_iter().enumerate() {
        let (seq, result) = tokio::time::timeout(PATIENCE, c.receive())
            .await
            .expect("a reply in time")
            .expect("a reply");
        assert_eq!(seq, want_seq, "replies in request order");
        assert_eq!(result.unwrap(), Value::Int(i as i64 + 1));
    }
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_magic_oversize_and_bad_crc() {
    let running = start();
    let addr = running.tcp_addr().unwrap();

    // A wrong magic: bad_frame with seq 0, then the connection closes.
    let mut raw = connect(addr).await;
    let mut bad = calc(9, "add", "1", "2");
    bad[0] = b'X';
    write(&mut raw, &bad).await;
    let rest = read_until_closed(&mut raw).await;
    let reply = parse_reply(&rest);
    assert_eq!(reply.header.seq, 0);
    assert_eq!(reply.kind(), Kind::Error);
    assert_eq!(error_code(&reply), Some(ErrorCode::BadFrame));
    assert_eq!(rest.len(), HEADER_LEN + reply.header.length as usize);

    // A length over the limit: frame_too_large with the header's seq, closed.
    let mut raw = connect(addr).await;
    let mut head = calc(77, "add", "1", "2");
    head[8..12].copy_from_slice(&(MAX_BODY as u32 + 1).to_be_bytes());
    write(&mut raw, &head[..HEADER_LEN]).await;
    let rest = read_until_closed(&mut raw).await;
    let reply = parse_reply(&rest);
    assert_eq!(reply.header.seq, 77);
    assert_eq!(error_code(&reply), Some(ErrorCode::FrameTooLarge));

    // A CRC mismatch: checksum_mismatch with the seq, and the connection stays.
    let mut raw = connect(addr).await;
    let mut corrupt = calc(5, "add", "1", "2");
    corrupt[HEADER_LEN + 3] ^= 0x01;
    corrupt.extend(calc(6, "add", "2", "3"));
    write(&mut raw, &corrupt).await;
    let first = read_reply(&mut raw).await;
    assert_eq!(first.header.seq, 5);
    assert_eq!(error_code(&first), Some(ErrorCode::ChecksumMismatch));
    let second = read_reply(&mut raw).await;
    assert_eq!((second.header.seq, second.outcome()), (6, "5".into()));

    // The largest body accepted is MAX_BODY (a request padded with spaces).
    let padding = " ".repeat(MAX_BODY - r#"{"func": "add", "args": [1, 1]}"#.len());
    write(
        &mut raw,
        &request(7, &format!(r#"{{"func": "add", "args": [1, 1]}}{padding}"#)),
    )
    .await;
    let reply = read_reply(&mut raw).await;
    assert_eq!((reply.header.seq, reply.outcome()), (7, "2".into()));
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_client_limit_is_busy_and_the_others_go_on() {
    let running = start();
    let addr = running.tcp_addr().unwrap();
    let mut clients = Vec::new();
    for i in 0..CLIENTS as i64 {
        let c = Client::connect(addr, PATIENCE).await.expect("connect");
        // A reply proves the connection holds a slot.
        assert_eq!(
            c.call("add", &[V::Int(i), V::Int(0)]).await.unwrap(),
            Value::Int(i)
        );
        clients.push(c);
    }
    let mut extra = connect(addr).await;
    write(&mut extra, &calc(1, "add", "1", "1")).await;
    let rest = read_until_closed(&mut extra).await;
    let reply = parse_reply(&rest);
    assert_eq!(reply.header.seq, 0);
    assert_eq!(error_code(&reply), Some(ErrorCode::Busy));
    // The others are still served.
    for c in &mut clients {
        assert_eq!(
            c.call("mul", &[V::Int(6), V::Int(7)]).await.unwrap(),
            Value::Int(42)
        );
    }
    // A slot freed is a slot for the next client.
    drop(clients.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let c = Client::connect(addr, PATIENCE).await.expect("connect");
        match c.call("add", &[V::Int(2), V::Int(2)]).await {
            Ok(v) => {
                assert_eq!(v, Value::Int(4));
                break;
            }
            // The server may not have seen the close yet.
            Err(e) if e.code() == Some(ErrorCode::Busy) || e.code().is_none() => {
                assert!(tokio::time::Instant::now() < deadline, "no slot freed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_calls_and_duplicates_run_once() {
    let running = start();
    let addr = running.udp_addr().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    let mut c = UdpClient::connect(addr, UdpConfig::default())
        .await
        .expect("udp client");
    check_calculator_udp(&mut c).await;

    // The same request three times: one execution, three equal replies.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let exchange = |datagram: &[u8]| {
        socket.send_to(datagram, addr).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = socket.recv_from(&mut buf).expect("a reply in time");
        buf[..n].to_vec()
    };
    let before = COUNT.load(Ordering::SeqCst);
    let call = request(41, r#"{"func": "count", "args": []}"#);
    let replies: Vec<Vec<u8>> = (0..3).map(|_| exchange(&call)).collect();
    assert_eq!(replies[0], replies[1]);
    assert_eq!(replies[0], replies[2]);
    assert_eq!(parse_reply(&replies[0]).outcome(), (before + 1).to_string());
    assert_eq!(COUNT.load(Ordering::SeqCst), before + 1, "ran once");
    // A new seq runs again.
    let again = parse_reply(&exchange(&request(42, r#"{"func": "count"}"#)));
    assert_eq!(again.outcome(), (before + 2).to_string());

    // A wrong magic is answered bad_frame, seq 0; a bad CRC checksum_mismatch.
    let mut bad = calc(50, "add", "1", "2");
    bad[1] = b'X';
    let reply = parse_reply(&exchange(&bad));
    assert_eq!(
        (reply.header.seq, error_code(&reply)),
        (0, Some(ErrorCode::BadFrame))
    );
    let mut corrupt = calc(51, "add", "1", "2");
    corrupt[HEADER_LEN] ^= 0x20;
    let reply = parse_reply(&exchange(&corrupt));
    assert_eq!(
        (reply.header.seq, error_code(&reply)),
        (51, Some(ErrorCode::ChecksumMismatch))
    );
    // A datagram over the limit: frame_too_large with its seq.
    let big = request(52, &" ".repeat(MAX_BODY + 100));
    let reply = parse_reply(&exchange(&big));
    assert_eq!(
        (reply.header.seq, error_code(&reply)),
        (52, Some(ErrorCode::FrameTooLarge))
    );
    // A datagram whose size does not match its header is dropped silently:
    // the next reply is the next request's.
    let whole = calc(53, "add", "1", "2");
    socket.send_to(&whole[..whole.len() - 1], addr).unwrap();
    let reply = parse_reply(&exchange(&calc(54, "add", "2", "2")));
    assert_eq!((reply.header.seq, reply.outcome()), (54, "4".into()));
    running.stop();
}

/// The `at-embedded-example` binary, built like `at_host_bin`: prints the
/// real ports, serves `at-host call`.
#[test]
fn desktop_binary_prints_its_ports_and_serves() {
    let bin = build_bin("at-embedded-example", "at-embedded-example", &["std"]);
    let mut command = Command::new(bin);
    command.args(["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let (_server, addrs) = spawn_server(command, 2);
    let tcp = addrs[0].strip_prefix("tcp://").expect("the tcp line first");
    let udp = addrs[1].strip_prefix("udp://").expect("then the udp line");
    for addr in [tcp, udp] {
        let addr: SocketAddr = addr.parse().expect("IP:PORT");
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        assert_ne!(addr.port(), 0);
    }
    let call = |extra: &[&str], args: &[&str]| {
        let out = Command::new(at_host_bin())
            .arg("call")
            .args(extra)
            .args(args)
            .output()
            .expect("run at-host call");
        assert!(
            out.status.success(),
            "at-host call {args:?} failed: {out:?}"
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(call(&["--server", tcp], &["add", "10", "20"]), "30");
    assert_eq!(
        call(&["--udp", "--server", udp], &["div", "10", "4"]),
        "2.5"
    );
}
