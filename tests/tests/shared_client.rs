//! One client shared by many tasks through `&self`, over real loopback
//! sockets: concurrent calls on one TCP connection are pipelined (a peer
//! that answers nothing until it holds them all proves it) and matched by
//! seq whatever the order of the replies; concurrent UDP calls on one
//! socket are all in the server at once (a gate that opens only then
//! proves it), sealed ones too, never 64 or more outstanding; a call
//! dropped mid-flight leaves the client working; a connection lost fails
//! every waiting call at once; `UdpClient::connect` resolves names.
//!
//! A client that ran its calls one at a time fails every "proves" test:
//! the peer or the gate waits for requests that never come, and the call
//! times out (bounded by the client's timeout, a few seconds).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use at_core::{FrameDecoder, Kind};
use at_host::{AuthKey, Caller, Client, Error, ProtocolError, Server, UdpClient, UdpConfig};
use at_tests::PATIENCE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

const KEY: &str = "demo:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// How long a client waits for one call: short, so a client that does not
/// pipeline fails quickly, yet ample for loopback.
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

fn key() -> AuthKey {
    AuthKey::parse(KEY).unwrap()
}

fn udp_config(key: Option<AuthKey>) -> UdpConfig {
    UdpConfig {
        key,
        timeout: CALL_TIMEOUT,
        ..UdpConfig::default()
    }
}

/// Opens once `need` distinct callers are inside `arrive` at once (a
/// retransmitted call counts once), or when told to; records how many
/// were inside at most.
struct Gate {
    need: usize,
    arrived: watch::Sender<HashSet<i64>>,
    open: watch::Sender<bool>,
    inside: AtomicUsize,
    most: AtomicUsize,
}

impl Gate {
    fn new(need: usize) -> Arc<Gate> {
        Arc::new(Gate {
            need,
            arrived: watch::Sender::new(HashSet::new()),
            open: watch::Sender::new(false),
            inside: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        })
    }

    async fn arrive(&self, id: i64) -> i64 {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let mut arrived = self.arrived.subscribe();
        let mut open = self.open.subscribe();
        self.arrived.send_modify(|ids| {
            ids.insert(id);
        });
        tokio::select! {
            _ = arrived.wait_for(|ids| ids.len() >= self.need) => {}
            _ = open.wait_for(|open| *open) => {}
        }
        self.inside.fetch_sub(1, Ordering::SeqCst);
        id * 2
    }
}

/// A server with the calculator, `gate(id)` (see [`Gate`]) and
/// `sleep(ms)`, optionally requiring `key`.
async fn serve(gate: Arc<Gate>, keys: Vec<AuthKey>) -> Server {
    Server::builder()
        .calculator()
        .async_function("gate", move |id: i64| {
            let gate = gate.clone();
            async move { gate.arrive(id).await }
        })
        .async_function("sleep", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
        .keys(keys)
        .tcp("127.0.0.1:0".parse().unwrap())
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

/// Calls `func(i)` for every `i` in `0..n` from its own task, all through
/// the one `caller` (any transport: only [`Caller`] is used), and checks
/// every result is `2 * i`.
async fn fan_out<C: Caller + 'static>(caller: Arc<C>, func: &'static str, n: i64) {
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let caller = caller.clone();
        tasks.spawn(async move { (i, caller.call_as::<i64>(func, (i,)).await) });
    }
    let mut done = 0;
    let all = async {
        while let Some(joined) = tasks.join_next().await {
            let (i, result) = joined.unwrap();
            assert_eq!(result.unwrap(), 2 * i, "{func}({i})");
            done += 1;
        }
    };
    tokio::time::timeout(PATIENCE, all).await.unwrap();
    assert_eq!(done, n);
}

/// What the holding peer does once it has read all the requests.
#[derive(Clone, Copy)]
enum Then {
    /// Answer each with its first argument doubled, last request first.
    AnswerBackwards,
    /// Close the connection without answering.
    HangUp,
}

/// A TCP peer for one connection that reads `n` requests before it
/// answers any, then does `then`. Returns its address, and a channel that
/// says when it has all `n`.
async fn holding_peer(n: usize, then: Then) -> (SocketAddr, watch::Receiver<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (held, holding) = watch::channel(false);
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let requests = read_requests(&mut stream, n).await;
        held.send_replace(true);
        match then {
            Then::HangUp => drop(stream),
            Then::AnswerBackwards => {
                for (seq, arg) in requests.into_iter().rev() {
                    let body = format!(r#"{{"status": "success", "result": {}}}"#, arg * 2);
                    let reply = at_tests::frame(Kind::Response, seq, body.as_bytes());
                    stream.write_all(&reply).await.unwrap();
                }
                // Hold the connection open until the client is done.
                let mut rest = [0u8; 64];
                let _ = stream.read(&mut rest).await;
            }
        }
    });
    (addr, holding)
}

/// Reads `n` request frames: each one's seq and first argument.
async fn read_requests(stream: &mut TcpStream, n: usize) -> Vec<(u32, i64)> {
    let mut decoder = FrameDecoder::with_buffer(vec![0u8; 70_000].into_boxed_slice(), 65_536);
    let mut requests = Vec::with_capacity(n);
    while requests.len() < n {
        while let Some(frame) = decoder.next_frame().unwrap() {
            assert_eq!(frame.kind, Kind::Request);
            let body: serde_json::Value = serde_json::from_slice(frame.body).unwrap();
            requests.push((frame.seq(), body["args"][0].as_i64().unwrap()));
        }
        if requests.len() == n {
            break;
        }
        let got = stream.read(decoder.spare()).await.unwrap();
        if got == 0 {
            break; // the client gave up: the test fails on its results
        }
        decoder.commit(got);
    }
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tcp_calls_are_pipelined_and_matched_by_seq() {
    const N: usize = 64;
    let (addr, _) = holding_peer(N, Then::AnswerBackwards).await;
    let client = Arc::new(Client::connect(addr, CALL_TIMEOUT).await.unwrap());
    // The peer answers nothing until all 64 requests are in, and then
    // last first: only a client with all 64 in flight, matching replies by
    // seq, gets every answer right.
    fan_out(client.clone(), "double", N as i64).await;
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_a_borrowed_tcp_client_are_pipelined() {
    let (addr, _) = holding_peer(3, Then::AnswerBackwards).await;
    let client = Client::connect(addr, CALL_TIMEOUT).await.unwrap();
    let c = &client;
    let (a, b, d) = tokio::join!(
        c.call_as::<i64>("double", (1,)),
        c.call_as::<i64>("double", (2,)),
        Caller::call_as::<i64>(&c, "double", (3,)),
    );
    assert_eq!((a.unwrap(), b.unwrap(), d.unwrap()), (2, 4, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_share_one_tcp_client_against_the_server() {
    let server = serve(Gate::new(1), vec![]).await;
    let client = Arc::new(
        Client::connect(server.tcp_addr().unwrap(), CALL_TIMEOUT)
            .await
            .unwrap(),
    );
    // `gate` with a gate of one: a plain async function doubling its id.
    fan_out(client.clone(), "gate", 64).await;
    // Untyped calls through the trait, on the same client.
    let sum = Caller::call(
        &client,
        "add",
        &[at_host::Value::Int(20), at_host::Value::Int(22)],
    )
    .await
    .unwrap();
    assert_eq!(sum, at_host::Value::Int(42));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_udp_calls_are_all_in_flight_at_once() {
    const N: usize = 64;
    let gate = Gate::new(N);
    let server = serve(gate.clone(), vec![]).await;
    let client = Arc::new(
        UdpClient::connect(server.udp_addr().unwrap(), udp_config(None))
            .await
            .unwrap(),
    );
    // The gate opens only when all 64 calls are in the server at once.
    fan_out(client.clone(), "gate", N as i64).await;
    assert!(gate.most.load(Ordering::SeqCst) >= N);
    // On a borrowed client too, through tokio::join!.
    let c = &*client;
    let (a, b) = tokio::join!(
        c.call_as::<i64>("mul", (6, 7)),
        c.call_as::<f64>("div", (10, 4))
    );
    assert_eq!((a.unwrap(), b.unwrap()), (42, 2.5));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_udp_batches_share_the_socket() {
    let gate = Gate::new(6);
    let server = serve(gate, vec![]).await;
    let client = UdpClient::connect(server.udp_addr().unwrap(), udp_config(None))
        .await
        .unwrap();
    // Two batches of three; the gate needs all six at once.
    let (x, y) = tokio::join!(
        client.call_many_as::<i64, _>(&[("gate", (1,)), ("gate", (2,)), ("gate", (3,))]),
        client.call_many_as::<i64, _>(&[("gate", (4,)), ("gate", (5,)), ("gate", (6,))]),
    );
    let x: Vec<i64> = x.unwrap().into_iter().map(Result::unwrap).collect();
    let y: Vec<i64> = y.unwrap().into_iter().map(Result::unwrap).collect();
    assert_eq!((x, y), (vec![2, 4, 6], vec![8, 10, 12]));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sealed_calls_work_over_tcp_and_udp() {
    // UDP: 32 sealed calls in the server at once, all from one session
    // (the first calls race to start it).
    let gate = Gate::new(32);
    let server = serve(gate.clone(), vec![key()]).await;
    let udp = Arc::new(
        UdpClient::connect(server.udp_addr().unwrap(), udp_config(Some(key())))
            .await
            .unwrap(),
    );
    fan_out(udp.clone(), "gate", 32).await;
    // TCP: 80 sealed calls from 80 tasks on one connection, more than the
    // 63 a client keeps outstanding.
    let tcp = Arc::new(
        Client::connect(server.tcp_addr().unwrap(), CALL_TIMEOUT)
            .await
            .unwrap()
            .with_key(key()),
    );
    fan_out(tcp.clone(), "gate", 80).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_than_64_sealed_udp_calls_are_outstanding() {
    // 80 calls from 80 tasks against a gate that opens only when told: 63
    // get in (contract section 9: fewer than 64 outstanding), the rest
    // wait in the client.
    let gate = Gate::new(usize::MAX);
    let server = serve(gate.clone(), vec![key()]).await;
    let udp = Arc::new(
        UdpClient::connect(server.udp_addr().unwrap(), udp_config(Some(key())))
            .await
            .unwrap(),
    );
    let calls = tokio::spawn(fan_out(udp.clone(), "gate", 80));
    let mut arrived = gate.arrived.subscribe();
    tokio::time::timeout(PATIENCE, arrived.wait_for(|ids| ids.len() >= 63))
        .await
        .unwrap()
        .unwrap();
    // Time for more to come if the client let them: it must not.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let most = gate.most.load(Ordering::SeqCst);
    assert_eq!(most, 63, "sealed calls out at once");
    gate.open.send_replace(true);
    calls.await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_tcp_call_does_not_break_the_client() {
    let server = serve(Gate::new(1), vec![]).await;
    let client = Client::connect(server.tcp_addr().unwrap(), CALL_TIMEOUT)
        .await
        .unwrap();
    // The slow call is dropped while it reads for both; the other call
    // takes over reading, and its reply (after the dropped one's, which is
    // discarded) comes.
    let (slow, quick) = tokio::join!(
        tokio::time::timeout(
            Duration::from_millis(50),
            client.call_as::<u64>("sleep", (400,))
        ),
        async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            client.call_as::<i64>("add", (1, 2)).await
        },
    );
    assert!(slow.is_err(), "the slow call was not dropped");
    assert_eq!(quick.unwrap(), 3);
    assert_eq!(client.in_flight(), 0);
    // Dropped alone, with nobody else reading: the next call reads (and
    // discards) its reply first.
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        client.call_as::<u64>("sleep", (600,)),
    )
    .await;
    assert!(dropped.is_err());
    assert_eq!(client.in_flight(), 1, "the dropped call's reply is due");
    assert_eq!(client.call_as::<i64>("mul", (6, 7)).await.unwrap(), 42);
    assert_eq!(client.in_flight(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_sealed_tcp_call_does_not_break_the_client() {
    let server = serve(Gate::new(1), vec![key()]).await;
    let client = Client::connect(server.tcp_addr().unwrap(), CALL_TIMEOUT)
        .await
        .unwrap()
        .with_key(key());
    // Dropped mid-hello (the first call starts the session) or right
    // after: either way the next call finds the client working.
    for wait_us in [0, 100, 1_000, 10_000] {
        let _ = tokio::time::timeout(
            Duration::from_micros(wait_us),
            client.call_as::<u64>("sleep", (50,)),
        )
        .await;
        assert_eq!(client.call_as::<i64>("add", (1, 2)).await.unwrap(), 3);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_udp_call_does_not_break_the_client() {
    let server = serve(Gate::new(1), vec![]).await;
    // No retransmissions within the test's waits: every reply is the one
    // reply to one request.
    let config = UdpConfig {
        initial_timeout: Duration::from_secs(3),
        ..udp_config(None)
    };
    let client = UdpClient::connect(server.udp_addr().unwrap(), config)
        .await
        .unwrap();
    let (slow, quick) = tokio::join!(
        tokio::time::timeout(
            Duration::from_millis(50),
            client.call_as::<u64>("sleep", (300,))
        ),
        async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            client.call_as::<i64>("add", (1, 2)).await
        },
    );
    assert!(slow.is_err(), "the slow call was not dropped");
    assert_eq!(quick.unwrap(), 3);
    // The dropped call's reply comes while this longer call waits: it is
    // read and ignored, not given to this call.
    let before = client.stats().ignored;
    assert_eq!(client.call_as::<u64>("sleep", (800,)).await.unwrap(), 800);
    assert_eq!(
        client.stats().ignored,
        before + 1,
        "the late reply is read and ignored"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_fails_every_waiting_call_at_once() {
    const N: usize = 8;
    let (addr, mut holding) = holding_peer(N, Then::HangUp).await;
    // A long timeout: the calls must fail because the connection did, not
    // because they ran out of time.
    let client = Arc::new(
        Client::connect(addr, Duration::from_secs(60))
            .await
            .unwrap(),
    );
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..N as i64 {
        let client = client.clone();
        tasks.spawn(async move { client.call_as::<i64>("double", (i,)).await });
    }
    tokio::time::timeout(PATIENCE, holding.wait_for(|held| *held))
        .await
        .unwrap()
        .unwrap();
    let mut failed = 0;
    let all = async {
        while let Some(joined) = tasks.join_next().await {
            let e = joined.unwrap().unwrap_err();
            assert!(e.is_transport(), "{e}");
            failed += 1;
        }
    };
    tokio::time::timeout(PATIENCE, all).await.unwrap();
    assert_eq!(failed, N);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the calls waited for their timeout"
    );
    // And every later call fails at once.
    let e = client.call_as::<i64>("double", (1,)).await.unwrap_err();
    assert!(matches!(e, Error::Protocol(ProtocolError::Broken)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_client_connect_takes_a_name() {
    // The server listens where `localhost` resolves first, so the client,
    // which uses that address, finds it whatever this machine's hosts say.
    let local = tokio::net::lookup_host("localhost:0")
        .await
        .unwrap()
        .next()
        .unwrap();
    let server = Server::builder()
        .calculator()
        .udp(local)
        .start()
        .await
        .unwrap();
    let port = server.udp_addr().unwrap().port();
    let by_name = UdpClient::connect(format!("localhost:{port}"), udp_config(None))
        .await
        .unwrap();
    assert_eq!(by_name.call_as::<i64>("add", (1, 2)).await.unwrap(), 3);
    let by_pair = UdpClient::connect((local.ip(), port), udp_config(None))
        .await
        .unwrap();
    assert_eq!(by_pair.call_as::<i64>("add", (3, 4)).await.unwrap(), 7);
    let e = UdpClient::connect("localhost", udp_config(None))
        .await
        .err()
        .expect("a name without a port is an error");
    assert!(matches!(e, Error::Io(_)), "{e}");
    server.shutdown().await;
}
