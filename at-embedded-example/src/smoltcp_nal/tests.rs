//! [`SmoltcpStack`] on the host: two smoltcp interfaces (a server at
//! 10.0.0.1, a client at 10.0.0.2) joined by an in-memory Ethernet wire,
//! every `TcpFullStack` / `UdpFullStack` call, the pool's edges (a full
//! pool, reset, TIME-WAIT, a peer that vanishes), and the device
//! `TcpServer` answering through it.

use std::boxed::Box;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::vec::Vec;

use core::net::SocketAddr;

use at_core::calculator::CALCULATOR;
use at_core::{Frame, HEADER_LEN, Header, Kind};
use embedded_nal::{TcpClientStack, TcpFullStack, nb};
use smoltcp::iface::{Config, Interface};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};

use super::*;
use crate::{TcpServer, Timeouts};

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// One end of the wire: sends into `out`, receives from `inp`. While `cut`
/// is set, frames sent are lost (a cable pulled).
struct End {
    inp: Queue,
    out: Queue,
    cut: Rc<RefCell<bool>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a End);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = std::vec![0; len];
        let r = f(&mut frame);
        if !*self.0.cut.borrow() {
            self.0.out.borrow_mut().push_back(frame);
        }
        r
    }
}

impl phy::Device for End {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.inp.borrow_mut().pop_front()?;
        Some((Rx(frame), Tx(self)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

const SERVER_POOL: usize = 3;
const CLIENT_POOL: usize = 5;
type ServerStack = SmoltcpStack<'static, SERVER_POOL, 2>;
type ClientStack = SmoltcpStack<'static, CLIENT_POOL, 2>;

fn stack<const TCP: usize>(
    device: &mut End,
    mac: u8,
    ip: [u8; 4],
    config: TcpConfig,
) -> SmoltcpStack<'static, TCP, 2> {
    let hw = EthernetAddress([0x02, 0, 0, 0, 0, mac]);
    let mut iface = Interface::new(Config::new(hw.into()), device, Instant::ZERO);
    iface.update_ip_addrs(|addrs| {
        addrs
            .push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24))
            .unwrap();
    });
    // The server's memory in two parts, as the firmware keeps it; the
    // client's in one `StackMemory`.
    let (sockets, tcp, udp) = if mac == 1 {
        let slots: &'static mut SocketSlots<8, 2, 4> = Box::leak(Box::new(SocketSlots::new()));
        let buffers: &'static mut SocketBuffers<TCP, 1024, 2, 1024> =
            Box::leak(Box::new(SocketBuffers::new()));
        slots.split(buffers)
    } else {
        let memory: &'static mut StackMemory<8, TCP, 1024, 2, 1024, 4> =
            Box::leak(Box::new(StackMemory::new()));
        memory.split()
    };
    SmoltcpStack::new(iface, sockets, tcp, udp, config)
}

#[test]
fn memory_split_gives_every_socket_its_own_buffers() {
    let slots: &'static mut SocketSlots<4, 2, 3> = Box::leak(Box::new(SocketSlots::new()));
    let buffers: &'static mut SocketBuffers<2, 512, 2, 256> =
        Box::leak(Box::new(SocketBuffers::new()));
    let (mut set, tcp, udp) = slots.split(buffers);
    for socket in &tcp {
        assert_eq!((socket.recv_capacity(), socket.send_capacity()), (512, 512));
    }
    for socket in &udp {
        assert_eq!(
            (
                socket.payload_recv_capacity(),
                socket.payload_send_capacity()
            ),
            (256, 256)
        );
        assert_eq!(
            (socket.packet_recv_capacity(), socket.packet_send_capacity()),
            (3, 3)
        );
    }
    // Exactly `SOCKETS` slots: the four sockets fit, a fifth would not.
    for socket in tcp {
        set.add(socket);
    }
    for socket in udp {
        set.add(socket);
    }
    assert_eq!(set.iter().count(), 4);
    // The byte buffers are all that `SocketBuffers` holds.
    assert_eq!(
        size_of::<SocketBuffers<2, 512, 2, 256>>(),
        2 * 2 * 512 + 2 * 2 * 256
    );
}

const SERVER: [u8; 4] = [10, 0, 0, 1];
const PORT: u16 = 16724;

fn server_addr(port: u16) -> SocketAddr {
    SocketAddr::from((SERVER, port))
}

/// Both hosts and the wire, with a clock that the test moves.
struct Net {
    server: ServerStack,
    client: ClientStack,
    server_end: End,
    client_end: End,
    cut: Rc<RefCell<bool>>,
    now: Instant,
}

impl Net {
    fn new(server_config: TcpConfig) -> Self {
        let a: Queue = Rc::default();
        let b: Queue = Rc::default();
        let cut = Rc::new(RefCell::new(false));
        let mut server_end = End {
            inp: a.clone(),
            out: b.clone(),
            cut: cut.clone(),
        };
        let mut client_end = End {
            inp: b,
            out: a,
            cut: cut.clone(),
        };
        let server = stack(&mut server_end, 1, SERVER, server_config);
        let client = stack(&mut client_end, 2, [10, 0, 0, 2], TcpConfig::default());
        Net {
            server,
            client,
            server_end,
            client_end,
            cut,
            now: Instant::ZERO,
        }
    }

    /// Runs both interfaces, 1 ms at a time, until the wire is quiet.
    fn pump(&mut self) {
        for _ in 0..200 {
            self.now += Duration::from_millis(1);
            self.server.poll(self.now, &mut self.server_end);
            self.client.poll(self.now, &mut self.client_end);
            if self.server_end.inp.borrow().is_empty() && self.client_end.inp.borrow().is_empty() {
                return;
            }
        }
    }

    /// Lets `ms` milliseconds pass, pumping as it goes.
    fn wait(&mut self, ms: u64) {
        let until = self.now + Duration::from_millis(ms);
        while self.now < until {
            self.now += Duration::from_millis(10);
            self.server.poll(self.now, &mut self.server_end);
            self.client.poll(self.now, &mut self.client_end);
            self.pump();
        }
    }

    fn listen(&mut self, port: u16) -> TcpSocket {
        let mut listener = TcpClientStack::socket(&mut self.server).unwrap();
        self.server.bind(&mut listener, port).unwrap();
        self.server.listen(&mut listener).unwrap();
        listener
    }

    /// A client connection, finished (or refused).
    fn connect(&mut self, port: u16) -> Result<TcpSocket, NetError> {
        let mut socket = TcpClientStack::socket(&mut self.client).unwrap();
        for _ in 0..50 {
            match self.client.connect(&mut socket, server_addr(port)) {
                Ok(()) => return Ok(socket),
                Err(nb::Error::WouldBlock) => self.pump(),
                Err(nb::Error::Other(e)) => return Err(e),
            }
        }
        panic!("connect never finished");
    }

    fn accept(
        &mut self,
        listener: &mut TcpSocket,
    ) -> nb::Result<(TcpSocket, SocketAddr), NetError> {
        self.server.accept(listener)
    }
}

fn receive_all<S: TcpClientStack>(stack: &mut S, socket: &mut S::TcpSocket) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match stack.receive(socket, &mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn connect_accept_exchange_and_close() {
    let mut net = Net::new(TcpConfig::default());
    let mut listener = net.listen(PORT);
    assert_eq!(net.server.tcp_available(), SERVER_POOL);
    assert!(matches!(
        net.accept(&mut listener),
        Err(nb::Error::WouldBlock)
    ));

    let mut client = net.connect(PORT).unwrap();
    let (mut conn, peer) = net.accept(&mut listener).unwrap();
    assert_eq!(peer.ip(), core::net::IpAddr::from([10, 0, 0, 2]));
    assert_eq!(net.server.tcp_available(), SERVER_POOL - 1);

    // Client to server, and back.
    assert!(matches!(
        net.server.receive(&mut conn, &mut [0; 8]),
        Err(nb::Error::WouldBlock)
    ));
    assert_eq!(net.client.send(&mut client, b"hello").unwrap(), 5);
    net.pump();
    assert_eq!(receive_all(&mut net.server, &mut conn), b"hello");
    assert_eq!(net.server.send(&mut conn, b"world!").unwrap(), 6);
    net.pump();
    assert_eq!(receive_all(&mut net.client, &mut client), b"world!");

    // The client closes first: the server reads end of stream, closes, and
    // the socket comes back to the pool.
    net.client.close(client).unwrap();
    net.pump();
    assert_eq!(net.server.receive(&mut conn, &mut [0; 8]), Ok(0));
    net.server.close(conn).unwrap();
    net.pump();
    net.wait(20);
    assert_eq!(net.server.tcp_available(), SERVER_POOL);
    assert_eq!(net.client.tcp_available(), CLIENT_POOL);

    // Stop listening: new connections are refused.
    net.server.close(listener).unwrap();
    assert_eq!(net.connect(PORT).err(), Some(NetError::ConnectionReset));
}

#[test]
fn a_full_pool_refuses_then_recovers() {
    let mut net = Net::new(TcpConfig::default());
    let mut listener = net.listen(PORT);
    let mut clients = Vec::new();
    for _ in 0..SERVER_POOL {
        clients.push(net.connect(PORT).unwrap());
    }
    net.pump();
    let mut conns: Vec<_> = (0..SERVER_POOL)
        .map(|_| net.accept(&mut listener).unwrap().0)
        .collect();
    assert_eq!(net.server.tcp_available(), 0);
    // One more: nothing listens, smoltcp answers RST.
    assert_eq!(net.connect(PORT).err(), Some(NetError::ConnectionReset));

    // One connection ends: its socket listens again and takes a new client.
    let client = clients.pop().unwrap();
    net.client.close(client).unwrap();
    net.pump();
    let mut conn = conns.pop().unwrap();
    assert_eq!(net.server.receive(&mut conn, &mut [0; 8]), Ok(0));
    net.server.close(conn).unwrap();
    net.wait(20);
    assert_eq!(net.server.tcp_available(), 1);
    let _again = net.connect(PORT).unwrap();
    assert!(net.accept(&mut listener).is_ok());
}

#[test]
fn connect_with_every_socket_taken_is_no_socket() {
    let mut net = Net::new(TcpConfig::default());
    let _listener = net.listen(PORT);
    // Connections under way hold the client's sockets (no pump: SYN-SENT).
    let mut held = Vec::new();
    for _ in 0..CLIENT_POOL {
        let mut socket = TcpClientStack::socket(&mut net.client).unwrap();
        match net.client.connect(&mut socket, server_addr(PORT)) {
            Ok(()) | Err(nb::Error::WouldBlock) => held.push(socket),
            Err(nb::Error::Other(e)) => panic!("connect: {e:?}"),
        }
    }
    let mut one_more = TcpClientStack::socket(&mut net.client).unwrap();
    assert_eq!(
        net.client.connect(&mut one_more, server_addr(PORT)),
        Err(nb::Error::Other(NetError::NoSocket))
    );
    // Closing one gives its socket back.
    net.client.close(held.pop().unwrap()).unwrap();
    net.wait(20);
    assert!(matches!(
        net.client.connect(&mut one_more, server_addr(PORT)),
        Ok(()) | Err(nb::Error::WouldBlock)
    ));
}

#[test]
fn a_reset_connection_is_reported_and_its_socket_returns() {
    let mut net = Net::new(TcpConfig::default());
    let mut listener = net.listen(PORT);
    let _client = net.connect(PORT).unwrap();
    let (mut conn, _) = net.accept(&mut listener).unwrap();
    // The client's side aborts: RST.
    for (_, socket) in net.client.sockets().iter_mut() {
        if let smoltcp::socket::Socket::Tcp(tcp) = socket {
            tcp.abort();
        }
    }
    net.pump();
    assert_eq!(
        net.server.receive(&mut conn, &mut [0; 8]),
        Err(nb::Error::Other(NetError::ConnectionReset))
    );
    assert_eq!(
        net.server.send(&mut conn, b"x"),
        Err(nb::Error::Other(NetError::ConnectionReset))
    );
    net.server.close(conn).unwrap();
    net.pump();
    assert_eq!(net.server.tcp_available(), SERVER_POOL);
    // Accept after reset.
    let _next = net.connect(PORT).unwrap();
    assert!(net.accept(&mut listener).is_ok());
}

#[test]
fn time_wait_does_not_hold_the_pool() {
    let mut net = Net::new(TcpConfig::default());
    let mut listener = net.listen(PORT);
    let mut client = net.connect(PORT).unwrap();
    let (conn, _) = net.accept(&mut listener).unwrap();
    // The server closes first (a refusal, a timeout): its socket would sit
    // in TIME-WAIT for 10 s.
    net.server.close(conn).unwrap();
    net.pump();
    assert_eq!(net.client.receive(&mut client, &mut [0; 8]), Ok(0));
    net.client.close(client).unwrap();
    net.pump();
    net.wait(20);
    assert_eq!(net.server.tcp_available(), SERVER_POOL);
}

#[test]
fn a_peer_that_never_closes_its_side_does_not_hold_the_pool() {
    let mut net = Net::new(TcpConfig::default());
    let mut listener = net.listen(PORT);
    let mut client = net.connect(PORT).unwrap();
    let (mut conn, _) = net.accept(&mut listener).unwrap();
    net.server.send(&mut conn, b"bye").unwrap();
    // The server closes (an idle timeout, say); the client reads it all but
    // never closes: the server's socket reaches FIN-WAIT-2 and stays there.
    net.server.close(conn).unwrap();
    net.wait(20);
    assert_eq!(receive_all(&mut net.client, &mut client), b"bye");
    assert_eq!(net.client.receive(&mut client, &mut [0; 8]), Ok(0));
    assert_eq!(net.server.tcp_available(), SERVER_POOL);
    let _next = net.connect(PORT).unwrap();
    assert!(net.accept(&mut listener).is_ok());
}

#[test]
fn a_vanished_peer_is_timed_out() {
    let config = TcpConfig {
        keep_alive: Some(Duration::from_millis(500)),
        timeout: Some(Duration::from_millis(1500)),
    };
    let mut net = Net::new(config);
    let mut listener = net.listen(PORT);
    let _client = net.connect(PORT).unwrap();
    let (mut conn, _) = net.accept(&mut listener).unwrap();
    // The cable is pulled: no FIN, no RST, nothing.
    *net.cut.borrow_mut() = true;
    net.wait(1000);
    assert!(matches!(
        net.server.receive(&mut conn, &mut [0; 8]),
        Err(nb::Error::WouldBlock)
    ));
    net.wait(2000);
    assert_eq!(
        net.server.receive(&mut conn, &mut [0; 8]),
        Err(nb::Error::Other(NetError::ConnectionReset))
    );
    net.server.close(conn).unwrap();
    net.wait(20);
    assert_eq!(net.server.tcp_available(), SERVER_POOL);
}

#[test]
fn tcp_calls_out_of_order_are_refused() {
    let mut net = Net::new(TcpConfig::default());
    let mut socket = TcpClientStack::socket(&mut net.server).unwrap();
    assert_eq!(net.server.listen(&mut socket), Err(NetError::InvalidState));
    assert_eq!(
        net.server.bind(&mut socket, 0),
        Err(NetError::Unaddressable)
    );
    assert_eq!(
        net.server.accept(&mut socket).err(),
        Some(nb::Error::Other(NetError::InvalidState))
    );
    assert_eq!(
        net.server.send(&mut socket, b"x"),
        Err(nb::Error::Other(NetError::InvalidState))
    );
    assert_eq!(
        net.server.receive(&mut socket, &mut [0; 4]),
        Err(nb::Error::Other(NetError::InvalidState))
    );
    assert_eq!(
        net.client
            .connect(&mut socket, SocketAddr::from(([0, 0, 0, 0], 80))),
        Err(nb::Error::Other(NetError::Unaddressable))
    );
    // Listening on more ports than the stack keeps.
    for port in 1..=MAX_LISTENERS as u16 {
        net.listen(port);
    }
    let mut extra = TcpClientStack::socket(&mut net.server).unwrap();
    net.server.bind(&mut extra, 999).unwrap();
    assert_eq!(
        net.server.listen(&mut extra),
        Err(NetError::TooManyListeners)
    );
}

/// The device TCP server over this stack: calls answered, the client past
/// the limit told `busy` (the spare socket lets it in), and an idle client
/// closed after its timeout.
#[test]
fn tcp_server_over_smoltcp() {
    let mut net = Net::new(TcpConfig::default());
    // 2 clients in a pool of 3: one spare.
    let mut server = TcpServer::<ServerStack, 2, 528, 256>::bind(&mut net.server, PORT)
        .unwrap()
        .with_timeouts(Timeouts {
            idle: Some(500),
            frame: None,
        });
    let mut poll = |net: &mut Net| {
        for _ in 0..5 {
            let now = net.now.total_millis() as u64;
            server.poll(&mut net.server, &CALCULATOR, now);
            net.pump();
        }
    };
    let request = |seq: u32| {
        let body = br#"{"func": "add", "args": [10, 20]}"#;
        let mut frame = Header::new(Kind::Request, seq, body).to_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    };
    let mut clients = Vec::new();
    for seq in 1..=3 {
        let mut client = net.connect(PORT).unwrap();
        net.client.send(&mut client, &request(seq)).unwrap();
        net.pump();
        poll(&mut net);
        clients.push(client);
    }
    let mut replies = Vec::new();
    for client in &mut clients {
        replies.push(receive_all(&mut net.client, client));
    }
    for reply in &replies[..2] {
        let frame = Frame::parse(reply, u32::MAX).unwrap();
        assert_eq!(frame.body, br#"{"status": "success", "result": 30}"#);
    }
    let busy = Frame::parse(&replies[2], u32::MAX).unwrap();
    assert_eq!(busy.kind, Kind::Error);
    assert!(
        core::str::from_utf8(busy.body)
            .unwrap()
            .contains(r#""code": "busy""#)
    );
    assert!(replies[2].len() > HEADER_LEN);

    // Idle clients are closed after 500 ms, and their slots serve again.
    net.wait(600);
    poll(&mut net);
    for client in &mut clients[..2] {
        assert_eq!(net.client.receive(client, &mut [0; 8]), Ok(0));
    }
    for client in clients {
        net.client.close(client).unwrap();
    }
    net.wait(20);
    poll(&mut net);
    assert_eq!(server.connections(), 0);
    assert_eq!(net.server.tcp_available(), SERVER_POOL);
}

mod udp {
    use embedded_nal::{UdpClientStack, UdpFullStack, nb};

    use super::{Net, NetError, PORT, TcpConfig, server_addr};

    #[test]
    fn udp_every_call() {
        let mut net = Net::new(TcpConfig::default());
        let mut server = UdpClientStack::socket(&mut net.server).unwrap();
        assert_eq!(
            net.server.bind(&mut server, 0),
            Err(NetError::Unaddressable)
        );
        net.server.bind(&mut server, PORT).unwrap();
        assert_eq!(
            net.server.bind(&mut server, PORT + 1),
            Err(NetError::InvalidState)
        );
        let mut buf = [0u8; 16];
        assert_eq!(
            net.server.receive(&mut server, &mut buf),
            Err(nb::Error::WouldBlock)
        );

        // connect + send, receive, send_to back.
        let mut client = UdpClientStack::socket(&mut net.client).unwrap();
        assert_eq!(
            net.client.send(&mut client, b"x"),
            Err(nb::Error::Other(NetError::InvalidState))
        );
        net.client.connect(&mut client, server_addr(PORT)).unwrap();
        net.client.send(&mut client, b"ping").unwrap();
        net.pump();
        let (n, from) = net.server.receive(&mut server, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from.ip(), core::net::IpAddr::from([10, 0, 0, 2]));
        net.server.send_to(&mut server, from, b"pong").unwrap();
        net.pump();
        let (n, from) = net.client.receive(&mut client, &mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], server_addr(PORT)));

        // A datagram longer than the buffer is cut to the buffer.
        net.client.send(&mut client, &[7; 40]).unwrap();
        net.pump();
        assert_eq!(net.server.receive(&mut server, &mut buf).unwrap().0, 16);

        // The pool: two sockets, then none; close frees one.
        let second = UdpClientStack::socket(&mut net.server).unwrap();
        assert_eq!(
            UdpClientStack::socket(&mut net.server).err(),
            Some(NetError::NoSocket)
        );
        net.server.close(second).unwrap();
        let again = UdpClientStack::socket(&mut net.server).unwrap();
        net.server.close(again).unwrap();
        net.server.close(server).unwrap();
    }

    #[test]
    fn send_to_from_an_unbound_socket_binds_an_ephemeral_port() {
        let mut net = Net::new(TcpConfig::default());
        let mut server = UdpClientStack::socket(&mut net.server).unwrap();
        net.server.bind(&mut server, PORT).unwrap();
        let mut client = UdpClientStack::socket(&mut net.client).unwrap();
        net.client
            .send_to(&mut client, server_addr(PORT), b"hi")
            .unwrap();
        net.pump();
        let mut buf = [0u8; 16];
        let (n, from) = net.server.receive(&mut server, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_ne!(from.port(), 0, "an ephemeral port, not 0");
        // The reply finds the socket on that port.
        net.server.send_to(&mut server, from, b"ho").unwrap();
        net.pump();
        let (n, _) = net.client.receive(&mut client, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ho");
    }
}
