//! The MQTT firmware (`--features mqtt`, contract section 11): the board
//! gets its address by DHCP, connects out to the broker given when
//! building (`AT_MQTT_BROKER`, default `10.0.2.2:1883`: the host under
//! QEMU's user network) as `AT_NAME`, and serves the calculator and its
//! typed functions through it, beside UART0; with `--features net,mqtt`
//! the TCP and UDP servers on port 16724 too. All from one poll loop that
//! sleeps (`wfi`) when there is nothing to do.
//!
//! ```text
//! AT_MQTT_BROKER=10.0.2.2:1883 AT_NAME=board-1 cargo build -p at-embedded-example \
//!     --target thumbv7em-none-eabihf --profile firmware --features mqtt
//! mosquitto -c mosquitto.conf    # listener 1883 127.0.0.1, allow_anonymous true
//! qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none \
//!     -nic user,model=lan9118 \
//!     -kernel target/thumbv7em-none-eabihf/firmware/at-embedded-firmware
//! ```
//!
//! With `AT_MQTT_USER` and `AT_MQTT_PASSWORD` it logs in to the broker
//! (Mosquitto's `password_file`; sent in clear, as the board has no TLS).
//!
//! Once it has an address the firmware writes one text line on UART0
//! (`at-embedded-firmware: listening on a.b.c.d (mqtt)`, or `... port 16724
//! (tcp, udp, mqtt)` with `net`); after that the UART carries AT frames
//! only. The broker connection is `at_embedded_example::mqtt::MqttServer`
//! over the same `SmoltcpStack` (shared through a `RefCell`, borrowed by
//! one server at a time), with one TCP socket of its own in the pool (a
//! closed one drains well within the first backoff of 0.5 s; should it not,
//! that attempt fails and the next one, after the backoff, gets it). While the
//! broker is away the other servers go on serving; the MQTT server tries
//! again after 0.5 s, doubling to 30 s.

use core::cell::RefCell;

use at_embedded_example::mqtt::{Login, MqttMemory, MqttServer, PREFIX, memory_size};
use smoltcp::time::Instant;
use static_cell::{ConstStaticCell, StaticCell};

use crate::board::Uart;
use crate::clock::Clock;
use crate::functions::{COUNTED, NAME};
use crate::lan9118::LAN9118_IRQ;
use crate::net::{self, Stack, TX};

/// MQTT packets in: 1 KiB, so requests of up to 1024 minus the topic and
/// properties (see `max_body`).
const MQTT_RX: usize = 1024;
/// Replies remembered for at-most-once execution.
const MQTT_CACHE: usize = 4;
const MEMORY: usize = memory_size(MQTT_RX, TX);

type Shared = RefCell<&'static mut Stack>;
type Server = MqttServer<'static, &'static mut Stack, MQTT_RX, TX, MQTT_CACHE>;

/// Serves the broker, the UART (and with `net` TCP and UDP) for ever.
/// Without a LAN9118 (or if it does not start), serves the UART alone.
pub fn run(
    mut uart: Uart,
    syst: cortex_m::peripheral::SYST,
    mut nvic: cortex_m::peripheral::NVIC,
) -> ! {
    let mut clock = Clock::start(syst);
    let Some(serial) = net::serial_server() else {
        net::halt()
    };
    let Some(eth) = net::start_lan9118() else {
        net::say(
            &mut uart,
            b"at-embedded-firmware: no network (LAN9118 did not start)\r\n",
        );
        loop {
            let _ = serial.run(&COUNTED, &mut uart);
        }
    };
    if !eth.link_up() {
        net::say(&mut uart, b"at-embedded-firmware: no link yet\r\n");
    }
    // SAFETY: the LAN9118's handler touches nothing the main loop holds.
    unsafe { net::nvic_enable(&mut nvic, LAN9118_IRQ) };
    let Some((stack, dhcp)) = net::start_stack(eth, clock.now()) else {
        net::halt()
    };
    if let Some((cidr, gateway)) = net::static_address() {
        net::configure(stack, cidr, gateway, &mut uart);
    }
    #[cfg(feature = "net")]
    let (Some(tcp), Some(udp)) = (net::tcp_server(stack), net::udp_server(stack, eth.mac())) else {
        net::say(
            &mut uart,
            b"at-embedded-firmware: cannot open port 16724\r\n",
        );
        net::halt()
    };
    #[cfg(feature = "net")]
    let Some(topics) = net::topics() else {
        net::halt()
    };
    #[cfg(feature = "net")]
    let mut published = net::Published::default();
    #[cfg(at_auth)]
    let Some(responder) = net::guard(eth.mac()) else {
        net::halt()
    };
    #[cfg(not(at_auth))]
    let responder = &mut at_core::auth::Open;
    let Some(shared) = share(stack) else {
        net::halt()
    };
    let Some(broker) = mqtt_server(shared) else {
        net::say(
            &mut uart,
            b"at-embedded-firmware: bad AT_MQTT_BROKER or AT_NAME\r\n",
        );
        net::halt()
    };

    loop {
        let now = clock.now();
        let at = Instant::from_millis(now as i64);
        let mut work = 0;
        let addressed = {
            let Ok(mut stack) = shared.try_borrow_mut() else {
                net::halt()
            };
            let stack: &mut Stack = &mut stack;
            work += usize::from(stack.poll(at, eth));
            if let Some(handle) = dhcp {
                work += net::poll_dhcp(stack, handle, &mut uart);
            }
            #[cfg(feature = "net")]
            {
                published.publish(topics, now);
                work += tcp.poll_topics(stack, &COUNTED, responder, topics, now);
                work += udp.poll_topics(stack, &COUNTED, responder, topics, now);
            }
            stack.interface().ipv4_addr().is_some()
        };
        // Connecting needs an address (DHCP's first lease).
        if addressed {
            work += broker.poll(&COUNTED, responder, now);
        }
        #[cfg(feature = "net")]
        let served = serial.poll_topics(&COUNTED, responder, topics, now, &mut uart);
        #[cfg(not(feature = "net"))]
        let served = serial.poll_with(&COUNTED, responder, now, &mut uart);
        work += served.unwrap_or(0);
        // Send what the servers queued.
        if let Ok(mut stack) = shared.try_borrow_mut() {
            work += usize::from(stack.poll(at, eth));
        }
        if work == 0 {
            net::sleep(eth, &uart);
        }
    }
}

/// The stack, shared between the servers and the MQTT link, in `.bss`.
#[inline(never)]
fn share(stack: &'static mut Stack) -> Option<&'static Shared> {
    static SHARED: StaticCell<Shared> = StaticCell::new();
    SHARED.try_init(RefCell::new(stack)).map(|s| &*s)
}

/// The MQTT server and its memory, in `.bss`. `None` if the build's
/// broker or name is not usable (build.rs checks both).
#[inline(never)]
fn mqtt_server(shared: &'static Shared) -> Option<&'static mut Server> {
    static MEMORY_CELL: ConstStaticCell<MqttMemory<MEMORY>> =
        ConstStaticCell::new(MqttMemory::new());
    static SERVER: StaticCell<Option<Server>> = StaticCell::new();
    let broker = env!("AT_FIRMWARE_MQTT_BROKER").parse().ok()?;
    let memory = MEMORY_CELL.try_take()?;
    SERVER
        .try_init_with(|| MqttServer::with_login(shared, memory, broker, NAME, PREFIX, LOGIN).ok())?
        .as_mut()
}

/// The broker login of the build (`AT_MQTT_USER`, `AT_MQTT_PASSWORD`).
#[cfg(at_mqtt_login)]
const LOGIN: Option<Login<'static>> = Some(Login {
    user: env!("AT_FIRMWARE_MQTT_USER"),
    password: env!("AT_FIRMWARE_MQTT_PASSWORD"),
});
#[cfg(not(at_mqtt_login))]
const LOGIN: Option<Login<'static>> = None;
