//! The TCP server over a scripted mock `TcpFullStack`: reads that stop
//! mid-frame (`WouldBlock`), sends that take only part of a reply, and the
//! contract's errors.

use super::*;
use crate::test_support::{code, replies, request};
use at_core::calculator::CALCULATOR;
use at_core::{ErrorCode, Reply, Value};
use core::net::SocketAddr;
use std::collections::VecDeque;
use std::vec::Vec;

#[derive(Debug)]
struct MockError;

impl embedded_nal::TcpError for MockError {
    fn kind(&self) -> embedded_nal::TcpErrorKind {
        embedded_nal::TcpErrorKind::Other
    }
}

#[derive(Debug, PartialEq)]
enum Socket {
    Fresh,
    Listener,
    Conn(usize),
}

/// What the next `receive` on a connection gets.
enum In {
    Data(Vec<u8>),
    WouldBlock,
    Eof,
}

/// What the next `send` on a connection does.
enum Out {
    /// Accept at most this many bytes.
    Take(usize),
    WouldBlock,
}

#[derive(Default)]
struct Conn {
    inbound: VecDeque<In>,
    plan: VecDeque<Out>,
    sent: Vec<u8>,
    receive_calls: usize,
    closed: bool,
}

#[derive(Default)]
struct Mock {
    conns: Vec<Conn>,
    /// Connections waiting in the listen queue.
    backlog: VecDeque<usize>,
}

impl Mock {
    /// A connection that `accept` will hand out.
    fn connect(&mut self) -> usize {
        self.conns.push(Conn::default());
        let id = self.conns.len() - 1;
        self.backlog.push_back(id);
        id
    }

    fn conn(&mut self, socket: &Socket) -> &mut Conn {
        match socket {
            Socket::Conn(id) => &mut self.conns[*id],
            other => panic!("not a connection: {other:?}"),
        }
    }
}

impl TcpClientStack for Mock {
    type TcpSocket = Socket;
    type Error = MockError;

    fn socket(&mut self) -> Result<Socket, MockError> {
        Ok(Socket::Fresh)
    }

    fn connect(&mut self, _: &mut Socket, _: SocketAddr) -> nb::Result<(), MockError> {
        Err(nb::Error::Other(MockError))
    }

    fn send(&mut self, socket: &mut Socket, buffer: &[u8]) -> nb::Result<usize, MockError> {
        let conn = self.conn(socket);
        assert!(!conn.closed, "send on a closed socket");
        let n = match conn.plan.pop_front() {
            None => buffer.len(),
            Some(Out::Take(k)) => k.min(buffer.len()),
            Some(Out::WouldBlock) => return Err(nb::Error::WouldBlock),
        };
        conn.sent.extend_from_slice(&buffer[..n]);
        Ok(n)
    }

    fn receive(&mut self, socket: &mut Socket, buffer: &mut [u8]) -> nb::Result<usize, MockError> {
        let conn = self.conn(socket);
        assert!(!conn.closed, "receive on a closed socket");
        conn.receive_calls += 1;
        match conn.inbound.pop_front() {
            None | Some(In::WouldBlock) => Err(nb::Error::WouldBlock),
            Some(In::Eof) => {
                conn.inbound.push_front(In::Eof);
                Ok(0)
            }
            Some(In::Data(mut data)) => {
                let n = buffer.len().min(data.len());
                buffer[..n].copy_from_slice(&data[..n]);
                data.drain(..n);
                if !data.is_empty() {
                    conn.inbound.push_front(In::Data(data));
                }
                Ok(n)
            }
        }
    }

    fn close(&mut self, socket: Socket) -> Result<(), MockError> {
        if let Socket::Conn(id) = socket {
            self.conns[id].closed = true;
        }
        Ok(())
    }
}

impl TcpFullStack for Mock {
    fn bind(&mut self, socket: &mut Socket, _: u16) -> Result<(), MockError> {
        *socket = Socket::Listener;
        Ok(())
    }

    fn listen(&mut self, _: &mut Socket) -> Result<(), MockError> {
        Ok(())
    }

    fn accept(&mut self, socket: &mut Socket) -> nb::Result<(Socket, SocketAddr), MockError> {
        assert_eq!(*socket, Socket::Listener);
        match self.backlog.pop_front() {
            Some(id) => Ok((Socket::Conn(id), SocketAddr::from(([10, 0, 0, 1], 40000)))),
            None => Err(nb::Error::WouldBlock),
        }
    }
}

type Server = TcpServer<Mock, 2, 144, 128>;

/// The reply at-core itself gives to `frame`: the oracle.
fn expected(frame: &[u8]) -> Vec<u8> {
    let mut out = [0u8; 256];
    let n = at_core::respond_to_bytes(&CALCULATOR, frame, 1 << 20, &mut out).unwrap();
    out[..n].to_vec()
}

fn poll_n(server: &mut Server, stack: &mut Mock, n: usize) {
    for _ in 0..n {
        server.poll(stack, &CALCULATOR, 0);
    }
}

#[test]
fn would_block_mid_frame() {
    let mut stack = Mock::default();
    let mut server = Server::bind(&mut stack, 16724).unwrap();
    let id = stack.connect();
    let a = request(1, r#"{"func": "add", "args": [10, 20]}"#);
    let b = request(2, r#"{"func": "div", "args": [10, 4]}"#);
    let conn = &mut stack.conns[id];
    // Mid-header, then mid-body of `a` glued to the start of `b`, then the rest.
    conn.inbound.push_back(In::Data(a[..10].to_vec()));
    conn.inbound.push_back(In::WouldBlock);
    conn.inbound.push_back(In::WouldBlock);
    let mut glued = a[10..].to_vec();
    glued.extend_from_slice(&b[..20]);
    conn.inbound.push_back(In::Data(glued));
    conn.inbound.push_back(In::WouldBlock);
    conn.inbound.push_back(In::Data(b[20..].to_vec()));

    server.poll(&mut stack, &CALCULATOR, 0);
    assert_eq!(server.connections(), 1);
    assert!(stack.conns[id].sent.is_empty(), "nothing whole yet");
    poll_n(&mut server, &mut stack, 5);

    let mut want = expected(&a);
    want.extend_from_slice(&expected(&b));
    assert_eq!(stack.conns[id].sent, want);
    let got = replies(&stack.conns[id].sent);
    assert_eq!(got[0], (1, Reply::Success(Value::Int(30))));
    assert_eq!(got[1], (2, Reply::Success(Value::Float(2.5))));
    assert!(!stack.conns[id].closed);
}

#[test]
fn full_send_buffer_keeps_the_tail_and_reads_nothing_meanwhile() {
    let mut stack = Mock::default();
    let mut server = Server::bind(&mut stack, 16724).unwrap();
    let id = stack.connect();
    let frames = [
        request(1, r#"{"func": "add", "args": [1, 2]}"#),
        request(2, r#"{"func": "sub", "args": [1, 2]}"#),
        request(3, r#"{"func": "mul", "args": [3, 4]}"#),
    ];
    let pipelined: Vec<u8> = frames.concat();
    let late = request(4, r#"{"func": "div", "args": [1, 0]}"#);
    let conn = &mut stack.conns[id];
    conn.inbound.push_back(In::Data(pipelined));
    conn.inbound.push_back(In::Data(late.clone()));
    // The first reply goes out 5 bytes, then the buffer is full for 3 polls,
    // then 7 bytes, then full again; after that everything is taken.
    conn.plan.push_back(Out::Take(5));
    conn.plan.push_back(Out::WouldBlock);
    conn.plan.push_back(Out::WouldBlock);
    conn.plan.push_back(Out::WouldBlock);
    conn.plan.push_back(Out::Take(7));
    conn.plan.push_back(Out::WouldBlock);

    server.poll(&mut stack, &CALCULATOR, 0);
    assert_eq!(stack.conns[id].sent.len(), 5, "a partial send");
    assert_eq!(stack.conns[id].receive_calls, 1);
    for _ in 0..3 {
        server.poll(&mut stack, &CALCULATOR, 0);
        assert_eq!(stack.conns[id].sent.len(), 5, "the buffer is still full");
        assert_eq!(
            stack.conns[id].receive_calls, 1,
            "no read while a reply is pending"
        );
    }
    server.poll(&mut stack, &CALCULATOR, 0);
    assert_eq!(stack.conns[id].sent.len(), 12, "the tail, resumed");
    assert_eq!(stack.conns[id].receive_calls, 1);
    poll_n(&mut server, &mut stack, 4);

    let mut want: Vec<u8> = frames.iter().flat_map(|f| expected(f)).collect();
    want.extend_from_slice(&expected(&late));
    assert_eq!(stack.conns[id].sent, want, "every reply whole, in order");
    let got = replies(&stack.conns[id].sent);
    assert_eq!(
        got.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(code(&got[3].1), Some(ErrorCode::DivisionByZero));
}

#[test]
fn bad_magic_is_answered_with_seq_0_then_closed() {
    let mut stack = Mock::default();
    let mut server = Server::bind(&mut stack, 16724).unwrap();
    let id = stack.connect();
    let mut bad = request(9, r#"{"func": "add", "args": [1, 2]}"#);
    bad[0] = b'X';
    stack.conns[id].inbound.push_back(In::Data(bad));
    poll_n(&mut server, &mut stack, 2);
    let got = replies(&stack.conns[id].sent);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, code(&got[0].1)), (0, Some(ErrorCode::BadFrame)));
    assert!(stack.conns[id].closed);
    assert_eq!(server.connections(), 0);
}

#[test]
fn oversize_is_answered_then_closed() {
    let mut stack = Mock::default();
    let mut server = Server::bind(&mut stack, 16724).unwrap();
    let id = stack.connect();
    let mut big = request(77, "{}");
    big[8..12].copy_from_slice(&129u32.to_be_bytes()); // over 144 - 16
    big.truncate(16);
    // The reply cannot go out at first: the close waits for it.
    stack.conns[id].plan.push_back(Out::WouldBlock);
    stack.conns[id].inbound.push_back(In::Data(big));
    server.poll(&mut stack, &CALCULATOR, 0);
    assert!(!stack.conns[id].closed, "closed before the reply was out");
    server.poll(&mut stack, &CALCULATOR, 0);
    let got = replies(&stack.conns[id].sent);
    assert_eq!(
        (got[0].0, code(&got[0].1)),
        (77, Some(ErrorCode::FrameTooLarge))
    );
    assert!(stack.conns[id].closed);
}

#[test]
fn a_crc_mismatch_keeps_the_connection() {
    let mut stack = Mock::default();
    let mut server = Server::bind(&mut stack, 16724).unwrap();
    let id = stack.connect();
    let mut bad = request(5, r#"{"func": "add", "args": [1, 2]}"#);
    bad[30] ^= 1;
    let good = request(6, r#"{"func": "add", "args": [2, 3]}"#);
    stack.conns[id]
        .inbound
        .push_back(In::Data([bad, good].concat()));
    poll_n(&mut server, &mut stack, 2);
    let got = replies(&stack.conns[id].sent);
    assert_eq!(
        (got[0].0, code(&got[0].1)),
        (5, Some(ErrorCode::ChecksumMismatch))
    );
    assert_eq!(got[1], (6, Reply::Success(Value::Int(5))));
    assert!(!stack.conns[id].closed);
}

#[test]
fn over_the_limit_is_busy_and_the_others_go_on() {
    let mut stack = Mock::default();
    let mut server = Server::bind(&mut stack, 16724).unwrap();
    let first = stack.connect();
    let second = stack.connect();
    let third = stack.connect();
    stack.conns[third]
        .inbound
        .push_back(In::Data(request(1, r#"{"func": "add", "args": [1, 1]}"#)));
    server.poll(&mut stack, &CALCULATOR, 0);
    assert_eq!(server.connections(), 2);
    let got = replies(&stack.conns[third].sent);
    assert_eq!((got[0].0, code(&got[0].1)), (0, Some(ErrorCode::Busy)));
    assert!(stack.conns[third].closed);

    // The first two are served; when one leaves, its slot is free again.
    stack.conns[first]
        .inbound
        .push_back(In::Data(request(2, r#"{"func": "mul", "args": [2, 21]}"#)));
    stack.conns[second].inbound.push_back(In::Eof);
    server.poll(&mut stack, &CALCULATOR, 0);
    assert_eq!(
        replies(&stack.conns[first].sent),
        [(2, Reply::Success(Value::Int(42)))]
    );
    assert!(stack.conns[second].closed);
    assert_eq!(server.connections(), 1);
    let fourth = stack.connect();
    server.poll(&mut stack, &CALCULATOR, 0);
    assert_eq!(server.connections(), 2);
    assert!(!stack.conns[fourth].closed);
}

#[test]
fn one_poll_answers_a_bounded_number_of_frames() {
    let mut stack = Mock::default();
    let mut server = Server::bind(&mut stack, 16724).unwrap();
    let id = stack.connect();
    let many: Vec<u8> = (0..FRAMES_PER_POLL as u32 + 3)
        .flat_map(|seq| request(seq, r#"{"func": "add", "args": [0, 0]}"#))
        .collect();
    for chunk in many.chunks(100) {
        stack.conns[id].inbound.push_back(In::Data(chunk.to_vec()));
    }
    server.poll(&mut stack, &CALCULATOR, 0);
    assert!(replies(&stack.conns[id].sent).len() <= FRAMES_PER_POLL);
    poll_n(&mut server, &mut stack, 10);
    assert_eq!(replies(&stack.conns[id].sent).len(), FRAMES_PER_POLL + 3);
}
