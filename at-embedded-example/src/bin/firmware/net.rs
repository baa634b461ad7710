//! The networked firmware (`--features net`): the calculator on TCP and UDP
//! port 16724 through the board's LAN9118 and smoltcp, and on UART0, all
//! from one poll loop that sleeps (`wfi`) when there is nothing to do.
//!
//! ```text
//! cargo build -p at-embedded-example --target thumbv7em-none-eabihf --profile firmware --features net
//! qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none \
//!     -nic user,model=lan9118,hostfwd=tcp:127.0.0.1:16724-:16724,hostfwd=udp:127.0.0.1:16724-:16724 \
//!     -kernel target/thumbv7em-none-eabihf/firmware/at-embedded-firmware
//! at-host call --server 127.0.0.1:16724 add 10 20
//! ```
//!
//! The address comes from DHCP, or from `AT_STATIC_IP` (`a.b.c.d/len`) and
//! `AT_GATEWAY` set when building. Once it has one, the firmware writes one
//! text line on UART0 (`at-embedded-firmware: listening on a.b.c.d port
//! 16724 (tcp, udp)`), and through defmt when that is on; after that line
//! the UART carries AT frames only.
//!
//! Build-time settings (environment variables read by `option_env!`):
//! `AT_NAME` (what `rpc.info` reports; default `mps2-an386`),
//! `AT_STATIC_IP`, `AT_GATEWAY`, `AT_IDLE_TIMEOUT_MS` (a TCP connection
//! with no traffic for this long is closed; default 60 s) and
//! `AT_FRAME_TIMEOUT_MS` (a partial frame held this long; default 5 s),
//! and `AT_CALL_HOME` (`a.b.c.d:port`): at boot the firmware connects out
//! to that host, calls `rpc.peer` there, sends `log("boot NAME")` and
//! serves the host's calls on that connection, reconnecting with backoff
//! (`at_embedded_example::tcp::call_home`; one more TCP socket).
//!
//! With `--features mqtt` the `mqtt` module runs the loop instead and uses
//! the parts here (the TCP and UDP servers only with `net` too).
#![cfg_attr(feature = "mqtt", allow(dead_code, unused_imports))]

use at_core::HEADER_LEN;
use at_embedded_example::smoltcp_nal::{SmoltcpStack, SocketBuffers, SocketSlots, TcpConfig};
use at_embedded_example::{StreamServer, TcpServer, Timeouts, UdpServer};
use core::net::Ipv4Addr;
use embedded_io::Write;
use smoltcp::iface::{Config, Interface, SocketHandle};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Cidr};
use static_cell::{ConstStaticCell, StaticCell};

use crate::board::Uart;
use crate::clock::Clock;
use crate::functions::{COUNTED, NAME, TOPICS};
use crate::lan9118::{Frames, LAN9118_BASE, LAN9118_IRQ, Lan9118};

/// The AT port, TCP and UDP.
const PORT: u16 = 16724;
/// TCP connections served at once; one more is let in to be told `busy`.
pub const CLIENTS: usize = 3;
/// TCP sockets: the clients, the spare, the connection home, and the
/// broker's (one: a closed one drains within the reconnection backoff).
const TCP_SOCKETS: usize = SERVER_SOCKETS + CALL_HOME_SOCKETS + MQTT_SOCKETS;
#[cfg(feature = "net")]
const SERVER_SOCKETS: usize = CLIENTS + 1;
#[cfg(not(feature = "net"))]
const SERVER_SOCKETS: usize = 0;
#[cfg(feature = "mqtt")]
const MQTT_SOCKETS: usize = 1;
#[cfg(not(feature = "mqtt"))]
const MQTT_SOCKETS: usize = 0;
#[cfg(at_call_home)]
const CALL_HOME_SOCKETS: usize = 1;
#[cfg(not(at_call_home))]
const CALL_HOME_SOCKETS: usize = 0;
/// Each TCP socket's receive and send buffer (a frame of the largest size
/// fits twice).
const TCP_BUF: usize = 1024;
/// UDP: one socket, four datagrams of up to 1 KiB in each direction.
const UDP_BUF: usize = 1024;
const UDP_PACKETS: usize = 4;
/// The pool, the UDP socket and DHCP.
const SOCKETS: usize = TCP_SOCKETS + 1 + 1;

/// The largest request body (as on the UART).
const MAX_BODY: usize = 496;
const RX: usize = HEADER_LEN + MAX_BODY;
/// The reply buffer: `rpc.info` with its `ext` (219 bytes with a key) and
/// an authentication trailer fit.
pub(crate) const TX: usize = 224 + at_core::auth::TRAILER_LEN;
/// UDP replies remembered for at-most-once execution.
const UDP_CACHE: usize = 4;
/// Subscriptions held at once, over every transport (4 per subscriber).
const SUBSCRIPTIONS: usize = 8;

pub(crate) type Topics = at_core::subscriptions::Subscriptions<'static, SUBSCRIPTIONS, 2>;

/// Authentication (`AT_KEY` when building): the key, 16 sessions, 4
/// remembered replies, and nonces from a counter. QEMU's board has neither
/// an RNG nor non-volatile memory, so the "boot counter" here is the
/// SysTick phase and the MAC at start: it may repeat after a reset, which
/// the contract's nonce rule forbids. A real board takes its TRNG (or a
/// boot counter kept in flash) instead. See docs/SECURITY.md.
#[cfg(at_auth)]
pub(crate) mod auth {
    use at_core::auth::{CounterNonces, FixedReplies, Guard, Key};

    /// The key from the build (checked by build.rs).
    pub const KEY: &str = env!("AT_FIRMWARE_KEY");
    /// Sessions held at once. A session that carried a call keeps its slot
    /// for at least 60 s (the contract's policy), so this bounds how many
    /// short-lived clients (command-line calls) a minute get in.
    pub const SESSIONS: usize = 16;
    /// Replies remembered for retransmissions and reconnections.
    pub const REMEMBERED: usize = 4;

    /// The firmware's guard.
    pub type FirmwareGuard =
        Guard<[Key<'static>; 1], CounterNonces, FixedReplies<REMEMBERED, { super::TX }>, SESSIONS>;
}

type Slots = SocketSlots<SOCKETS, 1, UDP_PACKETS>;
type Buffers = SocketBuffers<TCP_SOCKETS, TCP_BUF, 1, UDP_BUF>;
pub(crate) type Stack = SmoltcpStack<'static, TCP_SOCKETS, 1>;
type Tcp = TcpServer<Stack, CLIENTS, RX, TX>;
type Udp = UdpServer<Stack, { RX + 1 }, TX, UDP_CACHE>;

/// Milliseconds from a build-time variable, or `default`.
const fn millis(value: Option<&str>, default: u32) -> u32 {
    let Some(text) = value else {
        return default;
    };
    let bytes = text.as_bytes();
    let mut n: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let digit = bytes[i].wrapping_sub(b'0');
        assert!(digit < 10, "a timeout is a number of milliseconds");
        n = n * 10 + digit as u32;
        i += 1;
    }
    n
}

const TIMEOUTS: Timeouts = Timeouts {
    idle: Some(millis(option_env!("AT_IDLE_TIMEOUT_MS"), 60_000)),
    frame: Some(millis(option_env!("AT_FRAME_TIMEOUT_MS"), 5_000)),
};

/// Serves the network and the UART for ever. Without a LAN9118 (or if it
/// does not start), serves the UART alone.
///
/// Everything long-lived is static (`.bss`), and each part is built in a
/// function of its own (never inlined), so that its temporaries are gone
/// from the stack before the next part is built and while serving: the
/// start-up peak is the largest part, not their sum (docs/EMBEDDED.md).
#[cfg(not(feature = "mqtt"))]
pub fn run(
    mut uart: Uart,
    syst: cortex_m::peripheral::SYST,
    mut nvic: cortex_m::peripheral::NVIC,
) -> ! {
    let mut clock = Clock::start(syst);
    let Some(serial) = serial_server() else {
        halt()
    };
    let Some(eth) = start_lan9118() else {
        say(
            &mut uart,
            b"at-embedded-firmware: no network (LAN9118 did not start)\r\n",
        );
        loop {
            let _ = serial.run(&COUNTED, &mut uart);
        }
    };
    if !eth.link_up() {
        say(&mut uart, b"at-embedded-firmware: no link yet\r\n");
    }
    // The chip's interrupt only wakes the CPU (see lan9118.rs).
    // SAFETY: its handler touches nothing the main loop holds.
    unsafe { nvic_enable(&mut nvic, LAN9118_IRQ) };

    let Some((stack, dhcp)) = start_stack(eth, clock.now()) else {
        halt()
    };
    if let Some((cidr, gateway)) = static_address() {
        configure(stack, cidr, gateway, &mut uart);
    }
    let (Some(tcp), Some(udp)) = (tcp_server(stack), udp_server(stack, eth.mac())) else {
        say(
            &mut uart,
            b"at-embedded-firmware: cannot open port 16724\r\n",
        );
        halt()
    };
    #[cfg(at_auth)]
    let Some(responder) = guard(eth.mac()) else {
        halt()
    };
    #[cfg(not(at_auth))]
    let responder = &mut at_core::auth::Open;
    let Some(topics) = topics() else { halt() };
    #[cfg(at_call_home)]
    let Some(home) = call_home() else { halt() };
    let mut published = Published::default();

    loop {
        let now = clock.now();
        let at = Instant::from_millis(now as i64);
        let mut work = usize::from(stack.poll(at, eth));
        if let Some(handle) = dhcp {
            work += poll_dhcp(stack, handle, &mut uart);
        }
        published.publish(topics, now);
        work += tcp.poll_topics(stack, &COUNTED, responder, topics, now);
        work += udp.poll_topics(stack, &COUNTED, responder, topics, now);
        #[cfg(at_call_home)]
        if stack.interface().ipv4_addr().is_some() {
            work += home.poll(stack, &COUNTED, responder, Some(&mut *topics), now);
        }
        work += serial
            .poll_topics(&COUNTED, responder, topics, now, &mut uart)
            .unwrap_or(0);
        // Send what the servers queued.
        work += usize::from(stack.poll(at, eth));
        if work == 0 {
            sleep(eth, &uart);
        }
    }
}

/// What the topics last said: `uptime` once a second, `calls` when it
/// changed.
#[derive(Default)]
pub(crate) struct Published {
    second: Option<u64>,
    calls: Option<u32>,
}

impl Published {
    pub(crate) fn publish(&mut self, topics: &mut Topics, now: u64) {
        use at_core::Value;
        let second = now / 1000;
        if self.second != Some(second) {
            self.second = Some(second);
            let _ = topics.publish("uptime", Value::Int(second as i64));
        }
        let calls = crate::functions::calls();
        if self.calls != Some(calls) {
            self.calls = Some(calls);
            let _ = topics.publish("calls", Value::Int(i64::from(calls)));
        }
    }
}

/// The connection home (`AT_CALL_HOME`), in `.bss`.
#[cfg(at_call_home)]
#[inline(never)]
fn call_home() -> Option<&'static mut at_embedded_example::tcp::call_home::CallHome<Stack, RX, TX>>
{
    use at_embedded_example::tcp::call_home::CallHome;
    static HOME: StaticCell<CallHome<Stack, RX, TX>> = StaticCell::new();
    let home = env!("AT_FIRMWARE_CALL_HOME").parse().ok()?;
    let line = env!("AT_FIRMWARE_BOOT_LINE");
    HOME.try_init_with(|| CallHome::new(home, line).with_name(NAME))
}

/// The subscription table, in `.bss`.
#[inline(never)]
pub(crate) fn topics() -> Option<&'static mut Topics> {
    static TOPIC_TABLE: StaticCell<Topics> = StaticCell::new();
    TOPIC_TABLE.try_init_with(|| Topics::new(&TOPICS))
}

/// The UART server, in `.bss`. `None` only if taken twice.
#[inline(never)]
pub(crate) fn serial_server() -> Option<&'static mut StreamServer<RX, TX>> {
    static SERIAL: StaticCell<StreamServer<RX, TX>> = StaticCell::new();
    SERIAL.try_init_with(|| StreamServer::new().with_name(NAME))
}

/// The LAN9118, started, with its frame buffers in `.bss`; `None` if there
/// is none or it does not start.
#[inline(never)]
pub(crate) fn start_lan9118() -> Option<&'static mut Lan9118> {
    static FRAMES: ConstStaticCell<Frames> = ConstStaticCell::new(Frames::new());
    static ETH: StaticCell<Lan9118> = StaticCell::new();
    let frames = FRAMES.try_take()?;
    // SAFETY: the board's LAN9118, used by nothing else.
    let eth = unsafe { Lan9118::new(LAN9118_BASE, frames) }.ok()?;
    ETH.try_init(eth)
}

/// smoltcp over `eth`, with the sockets' memory in `.bss`, and the DHCP
/// socket unless the build gave a static address.
#[inline(never)]
pub(crate) fn start_stack(
    eth: &mut Lan9118,
    now: u64,
) -> Option<(&'static mut Stack, Option<SocketHandle>)> {
    static BUFFERS: ConstStaticCell<Buffers> = ConstStaticCell::new(Buffers::new());
    static SLOTS: StaticCell<Slots> = StaticCell::new();
    static STACK: StaticCell<Stack> = StaticCell::new();
    let mac = eth.mac();
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    // No RNG on this board: the seed (TCP initial sequence numbers, DHCP
    // transaction ids) comes from the MAC and the SysTick phase at start.
    config.random_seed = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
        ^ u64::from(cortex_m::peripheral::SYST::get_current()) << 40;
    let iface = Interface::new(config, eth, Instant::from_millis(now as i64));
    let buffers = BUFFERS.try_take()?;
    let slots = SLOTS.try_init_with(Slots::new)?;
    let (mut sockets, tcp_sockets, udp_sockets) = slots.split(buffers);
    let dhcp = match static_address() {
        Some(_) => None,
        None => Some(sockets.add(dhcpv4::Socket::new())),
    };
    let config = TcpConfig::default();
    let stack = STACK
        .try_init_with(|| SmoltcpStack::new(iface, sockets, tcp_sockets, udp_sockets, config))?;
    Some((stack, dhcp))
}

/// The TCP server on [`PORT`], in `.bss`.
#[inline(never)]
pub(crate) fn tcp_server(stack: &mut Stack) -> Option<&'static mut Tcp> {
    static TCP: StaticCell<Option<Tcp>> = StaticCell::new();
    TCP.try_init_with(|| {
        TcpServer::bind(stack, PORT)
            .ok()
            .map(|s| s.with_timeouts(TIMEOUTS).with_name(NAME))
    })?
    .as_mut()
}

/// The UDP server on [`PORT`], in `.bss`. Its plain events are numbered
/// from a start that differs from boot to boot (the MAC and the SysTick
/// phase: no RNG here), so a subscriber never takes a new event for a
/// repeat (contract 10.8 rule 3).
#[inline(never)]
pub(crate) fn udp_server(stack: &mut Stack, mac: [u8; 6]) -> Option<&'static mut Udp> {
    static UDP: StaticCell<Option<Udp>> = StaticCell::new();
    let start = u32::from_le_bytes([mac[2], mac[3], mac[4], mac[5]])
        ^ cortex_m::peripheral::SYST::get_current() << 8;
    UDP.try_init_with(|| {
        UdpServer::bind(stack, PORT)
            .ok()
            .map(|s| s.with_name(NAME).with_event_seq(start))
    })?
    .as_mut()
}

/// The guard of the build's key, in `.bss`.
#[cfg(at_auth)]
#[inline(never)]
pub(crate) fn guard(mac: [u8; 6]) -> Option<&'static mut auth::FirmwareGuard> {
    static GUARD: StaticCell<auth::FirmwareGuard> = StaticCell::new();
    let key = at_core::auth::Key::parse(auth::KEY).ok()?;
    let boot = u64::from(cortex_m::peripheral::SYST::get_current())
        ^ u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0]) << 16;
    let nonces = at_core::auth::CounterNonces::new(boot);
    GUARD.try_init_with(|| {
        auth::FirmwareGuard::new([key], at_core::auth::FixedReplies::new(), nonces)
    })
}

/// Enables interrupt line `irq` in the NVIC.
///
/// # Safety
/// Its handler must be sound to run at any time.
pub(crate) unsafe fn nvic_enable(nvic: &mut cortex_m::peripheral::NVIC, irq: usize) {
    // SAFETY: writing one bit of ISER enables one line, nothing else.
    unsafe { nvic.iser[irq / 32].write(1 << (irq % 32)) };
}

/// Handles DHCP's news: a new lease sets the address and route and is
/// reported; a lost one clears them.
pub(crate) fn poll_dhcp(stack: &mut Stack, handle: SocketHandle, uart: &mut Uart) -> usize {
    let had_address = stack.interface().ipv4_addr().is_some();
    let lease = match stack.sockets().get_mut::<dhcpv4::Socket>(handle).poll() {
        None => return 0,
        Some(dhcpv4::Event::Configured(lease)) => Some((lease.address, lease.router)),
        // Also sent once at start, before any lease: nothing to clear.
        Some(dhcpv4::Event::Deconfigured) if !had_address => return 0,
        Some(dhcpv4::Event::Deconfigured) => None,
    };
    match lease {
        Some((address, router)) => {
            configure(stack, address, router, uart);
            1
        }
        None => {
            stack.interface().update_ip_addrs(|addrs| addrs.clear());
            let _ = stack.interface().routes_mut().remove_default_ipv4_route();
            say(uart, b"at-embedded-firmware: address lost\r\n");
            1
        }
    }
}

/// Sets the interface's address and default route, and reports them.
pub(crate) fn configure(
    stack: &mut Stack,
    cidr: Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
    uart: &mut Uart,
) {
    let iface = stack.interface();
    iface.update_ip_addrs(|addrs| {
        addrs.clear();
        let _ = addrs.push(IpCidr::Ipv4(cidr));
    });
    match gateway {
        Some(router) => {
            let _ = iface.routes_mut().add_default_ipv4_route(router);
        }
        None => {
            let _ = iface.routes_mut().remove_default_ipv4_route();
        }
    }
    let ip = cidr.address().octets();
    #[cfg(feature = "defmt")]
    defmt::info!(
        "listening on {}.{}.{}.{} port 16724 (tcp, udp)",
        ip[0],
        ip[1],
        ip[2],
        ip[3]
    );
    say(uart, b"at-embedded-firmware: listening on ");
    for (i, octet) in ip.iter().enumerate() {
        if i > 0 {
            say(uart, b".");
        }
        say_number(uart, *octet);
    }
    say(uart, SERVING);
}

/// What the address line says is served on it.
#[cfg(not(feature = "mqtt"))]
const SERVING: &[u8] = b" port 16724 (tcp, udp)\r\n";
#[cfg(all(feature = "mqtt", feature = "net"))]
const SERVING: &[u8] = b" port 16724 (tcp, udp, mqtt)\r\n";
#[cfg(all(feature = "mqtt", not(feature = "net")))]
const SERVING: &[u8] = b" (mqtt)\r\n";

/// The build-time static address (`AT_STATIC_IP`, `AT_GATEWAY`), if set
/// and well-formed.
pub(crate) fn static_address() -> Option<(Ipv4Cidr, Option<Ipv4Addr>)> {
    let (ip, prefix) = option_env!("AT_STATIC_IP")?.split_once('/')?;
    let cidr = Ipv4Cidr::new(ip.parse().ok()?, prefix.parse().ok().filter(|p| *p <= 32)?);
    let gateway = option_env!("AT_GATEWAY").and_then(|g| g.parse().ok());
    Some((cidr, gateway))
}

pub(crate) fn say(uart: &mut Uart, text: &[u8]) {
    let _ = uart.write_all(text);
}

fn say_number(uart: &mut Uart, n: u8) {
    let digits = [n / 100, n / 10 % 10, n % 10];
    let skip = if n >= 100 {
        0
    } else if n >= 10 {
        1
    } else {
        2
    };
    for d in &digits[skip..] {
        say(uart, &[b'0' + d]);
    }
}

/// Sleeps until the next frame, byte or millisecond tick. With interrupts
/// masked, a frame that came since the last poll still wakes `wfi` (its
/// interrupt is pending).
pub(crate) fn sleep(eth: &Lan9118, uart: &Uart) {
    cortex_m::interrupt::free(|_| {
        if !eth.rx_waiting() && !uart.rx_full() {
            cortex_m::asm::wfi();
        }
    });
}

pub(crate) fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}
