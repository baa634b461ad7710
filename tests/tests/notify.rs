//! NOTIFY frames (contract section 10.1) before two-way AT is served:
//! every server here drops a NOTIFY unanswered and keeps the connection;
//! a NOTIFY with another type bit is `bad_frame`; the Rust clients drop an
//! event or a one-way call they never asked for and go on with their
//! calls.

use at_core::{ErrorCode, Kind};
use at_host::{Client, Server, UdpClient, UdpConfig};
use at_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};

async fn calculator() -> Server {
    Server::builder()
        .calculator()
        .tcp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_host_drops_a_notify_unanswered_and_keeps_the_connection() {
    let server = calculator().await;
    let mut stream = connect(server.tcp_addr().unwrap()).await;
    write(
        &mut stream,
        &frame(Kind::Notify, 7, br#"{"func": "add", "args": [1, 2]}"#),
    )
    .await;
    write(
        &mut stream,
        &frame(Kind::Notify, 8, br#"{"topic": "temp", "n": 1, "value": 2}"#),
    )
    .await;
    write(&mut stream, &calc(9, "add", "10", "20")).await;
    // The first frame back is the call's reply: nothing answered the two.
    let reply = read_reply(&mut stream).await;
    assert_eq!((reply.header.seq, reply.outcome()), (9, "30".to_owned()));
    // NOTIFY and REQUEST together: two type bits, bad_frame.
    let mut both = calc(10, "add", "1", "1");
    both[3] |= 0x10;
    write(&mut stream, &both).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(error_code(&reply), Some(ErrorCode::BadFrame));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_client_drops_an_event_it_did_not_ask_for() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 16];
        use tokio::io::AsyncReadExt;
        stream.read_exact(&mut head).await.unwrap();
        let header = at_core::Header::from_bytes(&head);
        let mut body = vec![0u8; header.length as usize];
        stream.read_exact(&mut body).await.unwrap();
        // An event, then the reply.
        let event = frame(
            Kind::Notify,
            1,
            br#"{"topic": "temp", "n": 1, "value": 21.5}"#,
        );
        let reply = frame(
            Kind::Response,
            header.seq,
            br#"{"status": "success", "result": 30}"#,
        );
        stream.write_all(&[event, reply].concat()).await.unwrap();
        stream
    });
    let client = Client::connect(addr, PATIENCE).await.unwrap();
    assert_eq!(client.call_as::<i64>("add", (10, 20)).await.unwrap(), 30);
    drop(peer.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_udp_client_drops_an_event_it_did_not_ask_for() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        let request = at_core::Frame::parse(&buf[..n], 4096).unwrap();
        let seq = request.seq();
        let event = frame(
            Kind::Notify,
            seq,
            br#"{"topic": "temp", "n": 1, "value": 21.5}"#,
        );
        socket.send_to(&event, from).await.unwrap();
        let reply = frame(
            Kind::Response,
            seq,
            br#"{"status": "success", "result": 30}"#,
        );
        socket.send_to(&reply, from).await.unwrap();
    });
    let client = UdpClient::connect(addr, UdpConfig::default())
        .await
        .unwrap();
    assert_eq!(client.call_as::<i64>("add", (10, 20)).await.unwrap(), 30);
    peer.await.unwrap();
}
