//! Authentication (contract section 9) through real sockets on loopback:
//! the at-host client and server over TCP and UDP, the Python peer as
//! client and server against them, raw frames replayed and tampered with
//! (a counter function proves what ran), and the command line's key flags.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use at_core::{ErrorCode, HEADER_LEN};
use at_host::{AuthKey, Client, Error, Server, UdpClient, UdpConfig};
use at_tests::peers::{CALL_LIMIT, PythonPeer, calc_client, python, run, text};
use at_tests::sealed::{code, raw_session, read_raw, sealed};
use at_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

const KEY: &str = "demo:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const OTHER: &str = "demo:ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn key() -> AuthKey {
    AuthKey::parse(KEY).unwrap()
}

struct Served {
    server: Server,
    count: Arc<AtomicI64>,
    tcp: SocketAddr,
    udp: SocketAddr,
}

async fn serve(keys: Vec<AuthKey>) -> Served {
    let count = Arc::new(AtomicI64::new(0));
    let counter = Arc::clone(&count);
    let server = Server::builder()
        .calculator()
        .function("count", move || counter.fetch_add(1, Ordering::SeqCst) + 1)
        .keys(keys)
        .tcp("127.0.0.1:0".parse().unwrap())
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let (tcp, udp) = (server.tcp_addr().unwrap(), server.udp_addr().unwrap());
    Served {
        server,
        count,
        tcp,
        udp,
    }
}

fn udp_config(key: Option<AuthKey>) -> UdpConfig {
    UdpConfig {
        key,
        timeout: Duration::from_secs(3),
        ..UdpConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_and_server_authenticate_over_tcp_and_udp() {
    let s = serve(vec![key()]).await;
    let mut tcp = Client::connect(s.tcp, PATIENCE)
        .await
        .unwrap()
        .with_key(key());
    check_calculator_tcp(&mut tcp).await;
    assert_eq!(tcp.call_as::<i64>("count", ()).await.unwrap(), 1);
    let mut udp = UdpClient::connect(s.udp, udp_config(Some(key())))
        .await
        .unwrap();
    check_calculator_udp(&mut udp).await;
    assert_eq!(udp.call_as::<i64>("count", ()).await.unwrap(), 2);
    // Pipelined authenticated calls.
    for i in 0..20i64 {
        tcp.send_as("add", (i, i)).await.unwrap();
    }
    for _ in 0..20 {
        let (_, result) = tcp.receive().await.unwrap();
        assert!(result.is_ok());
    }
    // Plain: rpc.ping and rpc.info yes, anything else unauthorized.
    let plain = Client::connect(s.tcp, PATIENCE).await.unwrap();
    assert!(plain.call_as::<bool>("rpc.ping", ()).await.unwrap());
    let info: serde_json::Value = plain.call_as("rpc.info", ()).await.unwrap();
    assert_eq!(info["auth"], "required");
    let e = plain.call_as::<i64>("add", (1, 2)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
    let e = plain.call_as::<i64>("count", ()).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
    assert_eq!(s.count.load(Ordering::SeqCst), 2, "no plain call ran");
    // A wrong key: the server's proof does not verify.
    let wrong = Client::connect(s.tcp, PATIENCE)
        .await
        .unwrap()
        .with_key(AuthKey::parse(OTHER).unwrap());
    let e = wrong.call_as::<i64>("count", ()).await.unwrap_err();
    assert!(
        matches!(e, Error::Protocol(at_host::ProtocolError::BadHello)),
        "{e:?}"
    );
    let wrong = UdpClient::connect(s.udp, udp_config(Some(AuthKey::parse(OTHER).unwrap())))
        .await
        .unwrap();
    let e = wrong.call_as::<i64>("count", ()).await.unwrap_err();
    assert!(
        matches!(e, Error::Timeout(_)),
        "a reply that does not verify counts as not received: {e:?}"
    );
    // An unknown key id: unauthorized.
    let stranger = AuthKey::parse(&KEY.replace("demo", "stranger")).unwrap();
    let c = Client::connect(s.tcp, PATIENCE)
        .await
        .unwrap()
        .with_key(stranger);
    assert_eq!(
        c.call_as::<i64>("count", ()).await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
    assert_eq!(s.count.load(Ordering::SeqCst), 2);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_key_refuses_a_server_without_keys() {
    let s = serve(vec![]).await;
    let c = Client::connect(s.tcp, PATIENCE)
        .await
        .unwrap()
        .with_key(key());
    let e = c.call_as::<i64>("count", ()).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");
    let u = UdpClient::connect(s.udp, udp_config(Some(key())))
        .await
        .unwrap();
    assert_eq!(
        u.call_as::<i64>("count", ()).await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
    assert_eq!(s.count.load(Ordering::SeqCst), 0);
}

/// A client that lost its TCP connection mid-call and sends the same
/// sealed frame on a new one, while the call still runs, waits and gets
/// the call's reply (not `unauthorized`); the function runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_resent_on_a_new_connection_while_it_runs_gets_its_reply() {
    let (started, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let runs = Arc::new(AtomicI64::new(0));
    let (s, g, r) = (started.clone(), gate.clone(), runs.clone());
    let server = Server::builder()
        .async_function("gated", move || {
            let (s, g, r) = (s.clone(), g.clone(), r.clone());
            async move {
                s.notify_one();
                g.notified().await;
                r.fetch_add(1, Ordering::SeqCst) + 1
            }
        })
        .keys(vec![key()])
        .tcp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let addr = server.tcp_addr().unwrap();
    let mut first = connect(addr).await;
    let session = raw_session(&mut first, &key()).await;
    let call = sealed(&session, 2, r#"{"func": "gated"}"#);
    first.write_all(&call).await.unwrap();
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the call starts");

    let mut second = connect(addr).await;
    second.write_all(&call).await.unwrap();
    // While the call runs, the resent frame gets nothing yet (it used to
    // get "replayed" at once).
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte)).await;
    assert!(early.is_err(), "an answer before the call ended: {early:?}");
    gate.notify_one();
    let reply = read_raw(&mut first).await;
    assert_eq!(code(&reply), "success");
    assert_eq!(read_raw(&mut second).await, reply, "the remembered reply");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the function ran once");
    server.shutdown().await;
}

fn recrc(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = at_core::checksum(&frame[HEADER_LEN..]);
    frame[12..16].copy_from_slice(&crc.to_be_bytes());
    frame
}

async fn udp_exchange(socket: &UdpSocket, frame: &[u8], to: SocketAddr) -> Option<Vec<u8>> {
    socket.send_to(frame, to).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_and_tampering_never_run_a_function_twice() {
    let s = serve(vec![key()]).await;
    let mut conn = connect(s.tcp).await;
    conn.set_nodelay(true).unwrap();
    let session = raw_session(&mut conn, &key()).await;
    let call = sealed(&session, 2, r#"{"func": "count"}"#);
    conn.write_all(&call).await.unwrap();
    let first = read_raw(&mut conn).await;
    assert_eq!(code(&first), "success");
    assert_eq!(s.count.load(Ordering::SeqCst), 1);

    // The same frame on the same connection: the remembered reply.
    conn.write_all(&call).await.unwrap();
    assert_eq!(read_raw(&mut conn).await, first);
    // On a new connection (a client that lost its connection mid-call).
    let mut again = connect(s.tcp).await;
    again.write_all(&call).await.unwrap();
    assert_eq!(read_raw(&mut again).await, first);
    // Over UDP from the same host: the remembered reply once more (4 in all).
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(
        udp_exchange(&socket, &call, s.udp).await,
        Some(first.clone())
    );
    conn.write_all(&call).await.unwrap();
    assert_eq!(read_raw(&mut conn).await, first);
    // A fifth time: refused on TCP, dropped on UDP; never run.
    conn.write_all(&call).await.unwrap();
    assert_eq!(code(&read_raw(&mut conn).await), "unauthorized");
    assert_eq!(udp_exchange(&socket, &call, s.udp).await, None);
    assert_eq!(s.count.load(Ordering::SeqCst), 1, "the replays never ran");

    // A UDP call, retransmitted from the same address: its reply; from
    // another address: nothing.
    let udp_call = sealed(&session, 3, r#"{"func": "count"}"#);
    let reply = udp_exchange(&socket, &udp_call, s.udp).await.unwrap();
    assert_eq!(code(&reply), "success");
    assert_eq!(udp_exchange(&socket, &udp_call, s.udp).await, Some(reply));
    let elsewhere = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(udp_exchange(&elsewhere, &udp_call, s.udp).await, None);
    assert_eq!(s.count.load(Ordering::SeqCst), 2);

    // Tampered: body, seq, length, flags, a truncated trailer, an unknown
    // session. TCP: unauthorized (unauthenticated); UDP: dropped (forged
    // tags) or unauthorized (unknown session).
    let good = sealed(&session, 10, r#"{"func": "count"}"#);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut body = good.clone();
    body[HEADER_LEN + 3] ^= 0x01;
    cases.push(("body", recrc(body)));
    let mut seq = good.clone();
    seq[7] ^= 0x02;
    cases.push(("seq", recrc(seq)));
    let mut flags = good.clone();
    flags[2] ^= 0x40;
    cases.push(("flags", recrc(flags)));
    let mut short = good[..good.len() - 1].to_vec();
    let length = (short.len() - HEADER_LEN) as u32;
    short[8..12].copy_from_slice(&length.to_be_bytes());
    cases.push(("length and trailer", recrc(short)));
    let mut unknown = good.clone();
    let sid_at = good.len() - 24;
    unknown[sid_at] ^= 0xff;
    cases.push(("unknown session", recrc(unknown)));
    for (what, frame) in &cases {
        conn.write_all(frame).await.unwrap();
        let reply = read_raw(&mut conn).await;
        assert_eq!(code(&reply), "unauthorized", "{what}");
        assert_eq!(
            reply[3] & 0x08,
            0,
            "{what}: the refusal is not authenticated"
        );
        let reply = udp_exchange(&socket, frame, s.udp).await;
        match *what {
            // The trailer moved by a byte: its session id is unknown
            // (step 1 answers, as for an unknown session).
            "unknown session" | "length and trailer" => {
                assert_eq!(
                    reply.map(|r| code(&r)),
                    Some("unauthorized".into()),
                    "{what}"
                )
            }
            _ => assert!(reply.is_none(), "{what}: a forged datagram gets no reply"),
        }
    }
    assert_eq!(s.count.load(Ordering::SeqCst), 2, "nothing tampered ran");
    // The untouched frame runs, once.
    conn.write_all(&good).await.unwrap();
    assert_eq!(code(&read_raw(&mut conn).await), "success");
    assert_eq!(s.count.load(Ordering::SeqCst), 3);
    s.server.shutdown().await;
}

fn python_client(
    python: &PythonPeer,
    addr: SocketAddr,
    udp: bool,
    key: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    let mut command = python.command();
    command.arg("call").arg("--server").arg(addr.to_string());
    if udp {
        command.arg("--udp");
    }
    if let Some(key) = key {
        command.args(["--key", key]);
    }
    run(command.args(args), CALL_LIMIT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_against_the_rust_server() {
    let Some(py) = python() else { return };
    let s = serve(vec![key()]).await;
    for (udp, addr) in [(false, s.tcp), (true, s.udp)] {
        let out = tokio::task::spawn_blocking(move || {
            python_client(py, addr, udp, Some(KEY), &["add", "10", "20"])
        })
        .await
        .unwrap();
        assert_eq!(
            (out.status.code(), text(&out.stdout)),
            (Some(0), "30\n".into()),
            "{out:?}"
        );
        let out = tokio::task::spawn_blocking(move || {
            python_client(py, addr, udp, None, &["add", "10", "20"])
        })
        .await
        .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            text(&out.stderr).starts_with("error: unauthorized: "),
            "{out:?}"
        );
    }
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_against_the_python_server() {
    let Some(py) = python() else { return };
    let mut serve = py.command();
    serve.args([
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--key",
        KEY,
    ]);
    let (_guard, addrs) = spawn_server(serve, 2);
    let tcp: SocketAddr = addrs[0].strip_prefix("tcp://").unwrap().parse().unwrap();
    let udp: SocketAddr = addrs[1].strip_prefix("udp://").unwrap().parse().unwrap();
    let mut c = Client::connect(tcp, PATIENCE)
        .await
        .unwrap()
        .with_key(key());
    check_calculator_tcp(&mut c).await;
    let mut u = UdpClient::connect(udp, udp_config(Some(key())))
        .await
        .unwrap();
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
}

fn at_host(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    run(
        Command::new(at_host_bin())
            .args(args)
            .envs(env.iter().copied()),
        CALL_LIMIT,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_with_keys() {
    let dir = std::env::temp_dir().join(format!("at-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    std::fs::write(&file, format!("# bench keys\n{}\n\nspare 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", KEY.replace(':', " "))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file_arg = file.to_str().unwrap().to_owned();
    // A key file readable by others is refused (usage error).
    let out = tokio::task::spawn_blocking({
        let f = file_arg.clone();
        move || {
            at_host(
                &[
                    "serve",
                    "--tcp",
                    "127.0.0.1:0",
                    "--udp",
                    "none",
                    "--key-file",
                    &f,
                ],
                &[],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("readable by group or others"),
        "{out:?}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut serve = Command::new(at_host_bin());
    serve.args([
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--key-file",
        &file_arg,
    ]);
    let (_server, addrs) = spawn_server(serve, 2);
    let tcp = addrs[0].strip_prefix("tcp://").unwrap().to_owned();
    let udp = addrs[1].strip_prefix("udp://").unwrap().to_owned();
    let outcome = |args: Vec<String>, env: Vec<(String, String)>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            at_host(&args, &env)
        })
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // --key-file (its first key), --key, AT_KEY; TCP and UDP.
    let out = outcome(
        s(&[
            "call",
            "--server",
            &tcp,
            "--key-file",
            &file_arg,
            "add",
            "10",
            "20",
        ]),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "30\n".into()),
        "{out:?}"
    );
    let out = outcome(
        s(&[
            "call", "--udp", "--server", &udp, "--key", KEY, "div", "10", "4",
        ]),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(text(&out.stdout), "2.5\n", "{out:?}");
    let out = outcome(
        s(&["call", "--server", &tcp, "mul", "6", "7"]),
        vec![("AT_KEY".into(), KEY.into())],
    )
    .await
    .unwrap();
    assert_eq!(text(&out.stdout), "42\n", "{out:?}");
    // Without a key: unauthorized, exit 1.
    let out = outcome(s(&["call", "--server", &tcp, "add", "10", "20"]), vec![])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: unauthorized: "),
        "{out:?}"
    );
    // The right key id with another key: the server's proof does not
    // verify. TCP: exit 1, as the Python and C clients say it; UDP: the
    // bad hello counts as not received, so the call times out (exit 3).
    // info says it as call does.
    for args in [
        &["call", "--server", &tcp, "--key", OTHER, "add", "10", "20"][..],
        &["info", "--server", &tcp, "--key", OTHER][..],
    ] {
        let out = outcome(s(args), vec![]).await.unwrap();
        assert_eq!(
            (out.status.code(), text(&out.stderr)),
            (
                Some(1),
                "error: unauthorized: the server's proof does not verify: it does not hold this key\n"
                    .into()
            ),
            "{args:?}"
        );
    }
    let out = outcome(
        s(&[
            "call",
            "--udp",
            "--timeout",
            "0.5",
            "--server",
            &udp,
            "--key",
            OTHER,
            "add",
            "10",
            "20",
        ]),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // A malformed key: exit 2, naming the problem, never the key.
    let secretish = "demo:0011223344556677889900112233445566778899001122334455667788zz";
    let out = outcome(
        s(&[
            "call", "--server", &tcp, "--key", secretish, "add", "1", "2",
        ]),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("hexadecimal"), "{stderr}");
    assert!(!stderr.contains("00112233"), "the key leaked: {stderr}");
    // keygen: a fresh key each time.
    let a = outcome(s(&["keygen", "bench-1"]), vec![]).await.unwrap();
    let b = outcome(s(&["keygen", "bench-1"]), vec![]).await.unwrap();
    let (a, b) = (text(&a.stdout), text(&b.stdout));
    assert!(
        a.starts_with("bench-1:") && a.trim().len() == "bench-1:".len() + 64,
        "{a}"
    );
    assert_ne!(a, b);
    assert!(AuthKey::parse(a.trim()).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A UDP forwarder for one client: datagrams from the client go to the
/// server `target` names at that moment, replies come back. Lets a test
/// swap the server behind a client's address without reusing a port.
async fn switchable_forwarder(target: Arc<std::sync::Mutex<SocketAddr>>) -> SocketAddr {
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut a, mut b) = ([0u8; 2048], [0u8; 2048]);
        let mut client = None;
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut a) => {
                    client = Some(from);
                    let to = *target.lock().unwrap();
                    let _ = back.send_to(&a[..n], to).await;
                }
                Ok((n, _)) = back.recv_from(&mut b) => {
                    if let Some(c) = client {
                        let _ = front.send_to(&b[..n], c).await;
                    }
                }
            }
        }
    });
    addr
}

/// A session the server lost (it restarted): the call fails `unauthorized`
/// and does not run; the client does not resend it, and its next call
/// starts a new session and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_unauthorized_the_next_call_starts_a_new_session() {
    let first = serve(vec![key()]).await;
    let target = Arc::new(std::sync::Mutex::new(first.udp));
    let front = switchable_forwarder(Arc::clone(&target)).await;
    let c = UdpClient::connect(front, udp_config(Some(key())))
        .await
        .unwrap();
    assert_eq!(c.call_as::<i64>("count", ()).await.unwrap(), 1);
    first.server.shutdown().await;
    // A new server behind the same address: it holds no session.
    let second = serve(vec![key()]).await;
    *target.lock().unwrap() = second.udp;
    let e = c.call_as::<i64>("count", ()).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");
    assert_eq!(
        second.count.load(Ordering::SeqCst),
        0,
        "the refused call did not run, nor was it resent"
    );
    assert_eq!(
        c.call_as::<i64>("count", ()).await.unwrap(),
        1,
        "a new session"
    );
    second.server.shutdown().await;
}

/// The C client with a key against the Rust server, TCP and UDP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_client_against_the_rust_server() {
    let Some(client) = tokio::task::spawn_blocking(calc_client).await.unwrap() else {
        return;
    };
    let s = serve(vec![key()]).await;
    for (udp, addr) in [(false, s.tcp), (true, s.udp)] {
        let c = |key: Option<&'static str>, args: &'static [&'static str]| {
            let client = client.clone();
            tokio::task::spawn_blocking(move || {
                let mut command = Command::new(&client);
                if udp {
                    command.arg("--udp");
                }
                if let Some(key) = key {
                    command.args(["--key", key]);
                }
                command
                    .args(["127.0.0.1", &addr.port().to_string()])
                    .args(args);
                run(&mut command, CALL_LIMIT)
            })
        };
        let out = c(Some(KEY), &["add", "10", "20"]).await.unwrap();
        assert_eq!(
            (out.status.code(), text(&out.stdout)),
            (Some(0), "30\n".into()),
            "{out:?}"
        );
        let out = c(Some(KEY), &["div", "1", "0"]).await.unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(text(&out.stderr).contains("division_by_zero"), "{out:?}");
        let out = c(None, &["add", "1", "2"]).await.unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            text(&out.stderr).starts_with("error: unauthorized: "),
            "{out:?}"
        );
    }
    s.server.shutdown().await;
}
