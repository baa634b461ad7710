//! Unit tests of the MQTT server: the CONNECT it sends (Clean Start,
//! Session Expiry Interval 0, the will), and the link's view of a closed
//! connection and of a refused one.

use core::cell::RefCell;
use core::net::SocketAddr;
use std::boxed::Box;
use std::string::String;
use std::vec::Vec;

use at_core::auth::Open;
use at_core::calculator::CALCULATOR;
use embedded_nal::{TcpClientStack, nb};

use super::link::patch_connect;
use super::{MqttMemory, MqttServer, State, memory_size};

/// A TCP stack that records what is sent and plays back `incoming`.
#[derive(Default)]
struct Fake {
    sent: Vec<u8>,
    connects: usize,
    refuse: bool,
    sockets: usize,
    closed: usize,
    /// `receive` answers 0 bytes (the peer closed).
    eof: bool,
}

#[derive(Debug)]
struct FakeError;

impl embedded_nal::TcpError for FakeError {
    fn kind(&self) -> embedded_nal::TcpErrorKind {
        embedded_nal::TcpErrorKind::Other
    }
}

impl TcpClientStack for Fake {
    type TcpSocket = usize;
    type Error = FakeError;

    fn socket(&mut self) -> Result<usize, FakeError> {
        self.sockets += 1;
        Ok(self.sockets)
    }

    fn connect(&mut self, _: &mut usize, _: SocketAddr) -> nb::Result<(), FakeError> {
        self.connects += 1;
        match self.refuse {
            true => Err(nb::Error::Other(FakeError)),
            false => Ok(()),
        }
    }

    fn send(&mut self, _: &mut usize, buffer: &[u8]) -> nb::Result<usize, FakeError> {
        self.sent.extend_from_slice(buffer);
        Ok(buffer.len())
    }

    fn receive(&mut self, _: &mut usize, _: &mut [u8]) -> nb::Result<usize, FakeError> {
        match self.eof {
            true => Ok(0),
            false => Err(nb::Error::WouldBlock),
        }
    }

    fn close(&mut self, _: usize) -> Result<(), FakeError> {
        self.closed += 1;
        Ok(())
    }
}

const RX: usize = 1024;
const TX: usize = 256;
const MEMORY: usize = memory_size(RX, TX);

fn broker() -> SocketAddr {
    "10.0.2.2:1883".parse().unwrap()
}

/// The properties of a CONNECT: (start, end) of the property block, and
/// the index of the connect flags.
fn connect_layout(packet: &[u8]) -> (usize, usize, usize) {
    assert_eq!(packet[0], 0x10, "a CONNECT");
    let mut i = 1;
    while packet[i] & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    assert_eq!(&packet[i..i + 7], &[0, 4, b'M', b'Q', b'T', b'T', 5]);
    let flags = i + 7;
    let props_len = usize::from(packet[i + 10]);
    assert!(props_len < 0x80);
    (i + 11, i + 11 + props_len, flags)
}

#[test]
fn every_connect_has_clean_start_and_no_session_expiry() {
    let stack = RefCell::new(Fake::default());
    let mut memory = Box::new(MqttMemory::<MEMORY>::new());
    let mut server =
        MqttServer::<Fake, RX, TX, 2>::new(&stack, &mut memory, broker(), "board-1").unwrap();
    // TCP connects at the first poll, the CONNECT goes at the next.
    server.poll(&CALCULATOR, &mut Open, 0);
    server.poll(&CALCULATOR, &mut Open, 1);
    let sent = core::mem::take(&mut stack.borrow_mut().sent);
    let (start, end, flags) = connect_layout(&sent);
    // Clean Start (bit 1), a will (bit 2), will QoS 1 (bits 3-4), will
    // retain (bit 5), no user name or password.
    assert_eq!(sent[flags], 0b0010_1110, "connect flags");
    let props = &sent[start..end];
    let expiry = props
        .iter()
        .position(|b| *b == 0x11)
        .expect("Session Expiry");
    assert_eq!(&props[expiry + 1..expiry + 5], &[0, 0, 0, 0]);
    // The Maximum Packet Size is the receive buffer.
    assert_eq!(&props[..5], &[0x27, 0, 0, 0x04, 0x00]);
    // The client id is the name.
    let id = &sent[end..end + 9];
    assert_eq!(id, b"\x00\x07board-1");
    // The will: topic at/board-1/status, payload the null status frame.
    let text = String::from_utf8_lossy(&sent);
    assert!(text.contains("at/board-1/status"), "{text}");
    assert!(
        text.contains(r#"{"topic": "rpc.status", "n": 0, "value": null}"#),
        "{text}"
    );

    // The broker closes the connection before CONNACK: the server waits
    // its backoff, then connects again on a new socket, again Clean Start.
    stack.borrow_mut().eof = true;
    server.poll(&CALCULATOR, &mut Open, 10);
    assert!(matches!(server.state(), State::Waiting { retry_at: 510 }));
    stack.borrow_mut().eof = false;
    assert_eq!(server.poll(&CALCULATOR, &mut Open, 100), 0, "waits");
    assert_eq!(stack.borrow().connects, 1);
    server.poll(&CALCULATOR, &mut Open, 510);
    server.poll(&CALCULATOR, &mut Open, 511);
    server.poll(&CALCULATOR, &mut Open, 512);
    let fake = stack.borrow();
    assert_eq!(fake.connects, 2, "connected again after the backoff");
    assert!(fake.sockets >= 2, "on a new socket");
    let (start, end, flags) = connect_layout(&fake.sent);
    assert_eq!(fake.sent[flags] & 0x02, 0x02, "Clean Start again");
    let props = &fake.sent[start..end];
    let expiry = props.iter().position(|b| *b == 0x11).unwrap();
    assert_eq!(&props[expiry + 1..expiry + 5], &[0, 0, 0, 0]);
}

#[test]
fn a_refused_connection_backs_off_doubling_to_the_cap() {
    let stack = RefCell::new(Fake {
        refuse: true,
        ..Fake::default()
    });
    let mut memory = Box::new(MqttMemory::<MEMORY>::new());
    let mut server =
        MqttServer::<Fake, RX, TX, 2>::new(&stack, &mut memory, broker(), "board-2").unwrap();
    let mut now = 0;
    let mut waits = Vec::new();
    for _ in 0..10 {
        server.poll(&CALCULATOR, &mut Open, now);
        let State::Waiting { retry_at } = server.state() else {
            panic!("waiting after a refusal: {:?}", server.state());
        };
        waits.push(retry_at - now);
        now = retry_at;
    }
    assert_eq!(
        waits,
        [
            500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
        ]
    );
    let fake = stack.borrow();
    assert_eq!(fake.connects, 10);
    // Each refused socket was closed, and each attempt had a fresh one.
    assert_eq!(fake.sockets, 10);
    assert!(fake.closed >= 9);
}

#[test]
fn bad_names_are_refused() {
    let stack = RefCell::new(Fake::default());
    for name in ["", "a b", "x/y", "+", "#", &"n".repeat(65)] {
        let mut memory = Box::new(MqttMemory::<MEMORY>::new());
        let made = MqttServer::<Fake, RX, TX, 2>::new(&stack, &mut memory, broker(), name);
        assert!(made.is_err(), "{name:?}");
    }
    let mut small = Box::new(MqttMemory::<64>::new());
    let made = MqttServer::<Fake, RX, TX, 2>::new(&stack, &mut small, broker(), "ok");
    assert_eq!(made.err(), Some(super::MqttError::Memory));
}

#[test]
fn patch_connect_leaves_other_packets_alone() {
    let mut publish = [0x30, 3, 0, 1, b'a'];
    assert!(!patch_connect(&mut publish));
    assert_eq!(publish, [0x30, 3, 0, 1, b'a']);
    // A CONNECT without a Session Expiry property is not changed.
    let mut connect = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 60, 2, 0x21, 0, 1,
    ];
    let before = connect;
    assert!(!patch_connect(&mut connect));
    assert_eq!(connect, before);
    // Cut short: not changed, no panic.
    let mut short = [0x10, 0x80];
    assert!(!patch_connect(&mut short));
}

#[test]
fn no_connack_in_time_reconnects_after_one_backoff() {
    let stack = RefCell::new(Fake::default());
    let mut memory = Box::new(MqttMemory::<MEMORY>::new());
    let mut server =
        MqttServer::<Fake, RX, TX, 2>::new(&stack, &mut memory, broker(), "board-3").unwrap();
    // TCP up and the CONNECT sent; the broker never answers.
    server.poll(&CALCULATOR, &mut Open, 0);
    server.poll(&CALCULATOR, &mut Open, 1);
    assert!(matches!(server.state(), State::Connecting { since: 0 }));
    server.poll(&CALCULATOR, &mut Open, super::CONNECT_MS);
    let retry = super::CONNECT_MS + 500;
    assert_eq!(server.state(), State::Waiting { retry_at: retry });
    // After the backoff: the old connection is closed, a new one made and
    // a new CONNECT sent, without a second backoff.
    for t in 0..4 {
        server.poll(&CALCULATOR, &mut Open, retry + t);
        assert!(
            matches!(server.state(), State::Connecting { .. }),
            "{:?} at {}",
            server.state(),
            retry + t
        );
    }
    let fake = stack.borrow();
    assert_eq!(fake.connects, 2);
    assert!(fake.closed >= 1, "the stale connection was closed");
    let connects = fake.sent.iter().filter(|b| **b == 0x10).count();
    assert!(connects >= 2, "a second CONNECT");
}
