//! The plainest AT server there is: at-core's request -> reply path on
//! std's blocking sockets, serving the calculator. One thread per TCP
//! connection (one `read` takes every frame buffered, one `write` sends
//! their replies) and one thread for UDP (`recv_from`, answer,
//! `send_to`). No runtime, no allocation per call.
//!
//! ```text
//! cargo run --release -p at-core --features fast-crc --example std_server -- 127.0.0.1:7000
//! at-host call --server 127.0.0.1:7000 add 10 20
//! ```
//!
//! It is the floor `at-host serve` is measured against in
//! docs/BENCHMARKS.md (`scripts/bench-vs-echo.sh --at-server ...`), and a
//! start for a PC-side server without tokio. What it leaves out, which
//! `at-host serve` has: the UDP reply cache that makes a resent call run
//! at most once (contract section 5; the calculator's functions can run
//! twice with no harm, other functions may not), keys (section 9), NOTIFY,
//! events, deadlines, cancels and calls back (section 10), async
//! functions, and limits on connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use at_core::calculator::CALCULATOR;
use at_core::{Frame, FrameDecoder, HEADER_LEN, ServerInfo};

/// The largest body taken over TCP.
const MAX_BODY: u32 = 64 * 1024;
/// The largest UDP payload (IPv4).
const MAX_DATAGRAM: usize = 65_507;
/// A connection with nothing to say for this long is closed.
const IDLE: Duration = Duration::from_secs(300);

const INFO: ServerInfo<'static> = ServerInfo {
    server: concat!("at-core std_server ", env!("CARGO_PKG_VERSION")),
    name: "",
    auth_required: false,
    max_body: MAX_BODY,
    ext: at_core::rpc::Ext::NONE,
};

fn main() {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: std_server ADDR (for example 127.0.0.1:7000)");
        std::process::exit(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("std_server: {addr}: {e}");
            std::process::exit(2);
        }
    };
    let (listener, socket) = match (TcpListener::bind(addr), UdpSocket::bind(addr)) {
        (Ok(listener), Ok(socket)) => (listener, socket),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("std_server: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on tcp {addr}");
    println!("listening on udp {addr}");
    std::thread::spawn(move || serve_udp(&socket));
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                std::thread::spawn(move || serve_tcp(stream));
            }
            // Out of file descriptors and the like: back off, go on.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Answers one TCP connection until it closes, goes quiet for [`IDLE`],
/// or loses frame sync.
fn serve_tcp(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE));
    let mut decoder = FrameDecoder::with_buffer(
        vec![0u8; HEADER_LEN + MAX_BODY as usize].into_boxed_slice(),
        MAX_BODY,
    );
    // Room for a batch of replies: each fits in `reply_room`.
    let reply_room = HEADER_LEN + MAX_BODY as usize;
    let mut out = vec![0u8; 2 * reply_room];
    loop {
        let n = match stream.read(decoder.spare()) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.commit(n);
        let mut pending = 0;
        let mut lost_sync = false;
        loop {
            if out.len() - pending < reply_room {
                if stream.write_all(&out[..pending]).is_err() {
                    return;
                }
                pending = 0;
            }
            let room = &mut out[pending..pending + reply_room];
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(m) = at_core::respond_as(&CALCULATOR, &INFO, &frame, room) {
                        pending += m;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if let Some(m) = at_core::respond_to_error(&e, room) {
                        pending += m;
                    }
                    if e.loses_sync() {
                        lost_sync = true;
                        break;
                    }
                }
            }
        }
        if stream.write_all(&out[..pending]).is_err() || lost_sync {
            return;
        }
    }
}

/// Answers datagrams, one at a time, for as long as the socket works.
fn serve_udp(socket: &UdpSocket) {
    // One byte more than a datagram can hold, so a truncated read is seen.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut out = vec![0u8; MAX_DATAGRAM];
    let max_body = (MAX_DATAGRAM - HEADER_LEN) as u32;
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            // An ICMP error from an earlier send concerns one peer only.
            continue;
        };
        let reply = match Frame::parse(&buf[..n], max_body) {
            Ok(frame) => at_core::respond_as(&CALCULATOR, &INFO, &frame, &mut out),
            Err(e) => at_core::respond_to_error(&e, &mut out),
        };
        if let Some(m) = reply {
            let _ = socket.send_to(&out[..m], peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request frame for `func(10, 20)` with sequence number `seq`.
    fn request(seq: u32, func: &str) -> Vec<u8> {
        let body = format!(r#"{{"func": "{func}", "args": [10, 20]}}"#);
        let mut wire = vec![0u8; HEADER_LEN + body.len()];
        let n = at_core::encode_frame(at_core::Kind::Request, seq, body.as_bytes(), &mut wire)
            .expect("a small frame fits");
        wire.truncate(n);
        wire
    }

    fn body_of(frame: &[u8]) -> &str {
        std::str::from_utf8(&frame[HEADER_LEN..]).expect("a UTF-8 body")
    }

    #[test]
    fn answers_pipelined_calls_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            serve_tcp(stream);
        });
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // Two calls in one write: two replies, in order.
        let bytes = [request(1, "add"), request(2, "nosuch")].concat();
        stream.write_all(&bytes).expect("write");
        let mut decoder = FrameDecoder::<[u8; 256]>::new(200);
        let mut replies = Vec::new();
        while replies.len() < 2 {
            let n = stream.read(decoder.spare()).expect("read");
            assert!(n > 0, "closed early");
            decoder.commit(n);
            while let Some(frame) = decoder.next_frame().expect("a good frame") {
                replies.push((frame.seq(), frame.kind, frame.body.to_vec()));
            }
        }
        assert_eq!(replies[0].0, 1);
        assert_eq!(replies[0].2, br#"{"status": "success", "result": 30}"#);
        assert_eq!((replies[1].0, replies[1].1), (2, at_core::Kind::Error));
    }

    #[test]
    fn answers_a_call_over_udp_and_drops_a_truncated_one() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("address");
        std::thread::spawn(move || serve_udp(&server));
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // A datagram shorter than its header says is dropped unanswered.
        let short = request(7, "add");
        client
            .send_to(&short[..short.len() - 1], addr)
            .expect("send");
        client.send_to(&request(8, "mul"), addr).expect("send");
        let mut buf = [0u8; 256];
        let n = client.recv(&mut buf).expect("a reply");
        let reply = Frame::parse(&buf[..n], 200).expect("a good frame");
        assert_eq!(reply.seq(), 8);
        assert_eq!(
            body_of(&buf[..n]),
            r#"{"status": "success", "result": 200}"#
        );
    }
}
