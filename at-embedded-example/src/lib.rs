//! # at-embedded-example: the device side of the AT protocol
//!
//! Servers for the AT remote-call protocol that run on a microcontroller:
//! `#![no_std]`, no `alloc`, every buffer a fixed array sized by const
//! generics, and every request answered by at-core's one request -> reply
//! path ([`at_core::respond`], [`at_core::respond_to_error`]), so there is
//! no second implementation of the format here.
//!
//! | server | over | for |
//! |---|---|---|
//! | [`TcpServer`] | [`embedded_nal::TcpFullStack`] | Ethernet / Wi-Fi chips with a TCP stack |
//! | [`UdpServer`] | [`embedded_nal::UdpFullStack`] | the same, connectionless |
//! | [`StreamServer`] | [`embedded_io::Read`] + [`embedded_io::Write`] | a UART, USB CDC |
//! | `mqtt::MqttServer` (feature `mqtt`) | [`embedded_nal::TcpClientStack`], out to a broker | boards behind a NAT (contract section 11) |
//!
//! The network servers never block: each `poll` does what the stack can do
//! now (`nb::Error::WouldBlock` means "later") and returns, so one main loop
//! polls a TCP and a UDP server in turn:
//!
//! ```no_run
//! # fn demo<S>(stack: &mut S) -> Option<()>
//! # where S: embedded_nal::TcpFullStack + embedded_nal::UdpFullStack {
//! use at_core::calculator::CALCULATOR;
//! use at_embedded_example::{TcpServer, UdpServer};
//!
//! // 2 clients, 528-byte receive buffers (512-byte bodies), 256-byte replies.
//! let mut tcp = TcpServer::<S, 2, 528, 256>::bind(stack, 16724).ok()?;
//! // 529-byte datagrams, 256-byte replies, 4 remembered replies.
//! let mut udp = UdpServer::<S, 529, 256, 4>::bind(stack, 16724).ok()?;
//! # let now_ms = || 0;
//! loop {
//!     // `now_ms()`: the board's millisecond clock (for TCP timeouts).
//!     let work = tcp.poll(stack, &CALCULATOR, now_ms()) + udp.poll(stack, &CALCULATOR);
//!     if work == 0 {
//!         // idle: sleep until the next interrupt (cortex_m::asm::wfi()).
//!     }
//! }
//! # }
//! ```
//!
//! ## What a board must provide
//! - TCP: an implementation of [`embedded_nal::TcpFullStack`] (`socket`,
//!   `bind`, `listen`, non-blocking `accept`, `send`, `receive`, `close`).
//!   smoltcp-nal has no `TcpFullStack` (it has no listening sockets); this
//!   crate's `smoltcp_nal::SmoltcpStack` (feature `net`) provides it over
//!   any smoltcp `Device`, and a W5500 driver (`w5500-hl` style) or an
//!   ESP-AT can too.
//! - UDP: [`embedded_nal::UdpFullStack`] (`socket`, `bind`, `receive`,
//!   `send_to`, `close`); `SmoltcpStack` and smoltcp-nal have it.
//! - A serial link: [`embedded_io::Read`] + [`embedded_io::Write`] (and
//!   [`embedded_io::ReadReady`] for [`StreamServer::poll`]); most HALs'
//!   UARTs implement them. The firmware in `src/bin/firmware/` shows the
//!   one board-specific module this takes (`board.rs`: a CMSDK UART driver
//!   and the interrupt table, under 150 lines).
//!
//! ## Features
//! - `float` (default): doubles in requests (see at-core's `float`).
//! - `log`: log through the `log` facade (desktop).
//! - `defmt`: log through defmt; only on `target_os = "none"`, so host
//!   builds and `cargo test --workspace` never need a defmt logger.
//! - `std`: the `desktop` module and the `at-embedded-example` binary,
//!   which run these very servers on a PC over `std-embedded-nal`.
//! - `net`: the `smoltcp_nal` module (embedded-nal over smoltcp) and the
//!   firmware's network path (`--features net`, see docs/EMBEDDED.md).
//! - `mqtt`: the `mqtt` module (AT over MQTT 5 through a broker, with
//!   minimq), and the firmware's MQTT path (`--features mqtt`).
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

mod logging;

mod cache;
pub mod stream;
pub mod tcp;
pub mod udp;

#[cfg(any(feature = "net", feature = "mqtt"))]
pub mod smoltcp_nal;

#[cfg(feature = "mqtt")]
pub mod mqtt;

#[cfg(feature = "std")]
pub mod desktop;

#[cfg(test)]
mod test_support;

/// The implementation and version every server here reports in `rpc.info`.
pub const SERVER: &str = concat!("at-embedded-example ", env!("CARGO_PKG_VERSION"));

/// The name a server reports in `rpc.info` until given one (`with_name`).
pub const DEFAULT_NAME: &str = "at-device";

/// What `rpc.info` says of a server named `name` taking bodies up to
/// `max_body` bytes: it runs notifications and honours `deadline_ms`
/// (contract 10.2, 10.4), and with topics (`events`) offers subscriptions.
pub(crate) const fn server_info(
    name: &str,
    max_body: u32,
    events: bool,
) -> at_core::ServerInfo<'_> {
    use at_core::rpc::Ext;
    let ext = Ext::NOTIFY.with(Ext::DEADLINE);
    at_core::ServerInfo {
        server: SERVER,
        name,
        auth_required: false,
        max_body,
        ext: if events { ext.with(Ext::EVENTS) } else { ext },
    }
}

/// A shorter borrow of a server's topics, for one call (`as_deref_mut`
/// cannot shorten the trait object's own lifetime).
pub(crate) fn topics<'a>(
    topics: &'a mut Option<&mut dyn at_core::subscriptions::Topics>,
) -> Option<&'a mut dyn at_core::subscriptions::Topics> {
    match topics {
        Some(t) => Some(&mut **t),
        None => None,
    }
}

/// Finishes the event frame [`Topics::take_due`] wrote into `out`: a plain
/// one gets the association's next seq from `sent` (never 0), a sealed one
/// is sealed in its session. Its length, or `None` (the session is gone).
///
/// [`Topics::take_due`]: at_core::subscriptions::Topics::take_due
pub(crate) fn finish_event<R: at_core::auth::Responder>(
    due: &at_core::subscriptions::Due,
    sent: &mut u32,
    responder: &mut R,
    now: u64,
    out: &mut [u8],
) -> Option<usize> {
    use at_core::subscriptions::{Subscriber, set_seq};
    match due.who {
        Subscriber::Plain(_) => {
            *sent = sent.wrapping_add(1).max(1);
            set_seq(out, *sent);
            Some(due.len)
        }
        Subscriber::Session(sid) => responder.seal_server_frame(&sid, now, out, due.len),
    }
}

pub use stream::{StreamError, StreamServer};
pub use tcp::{TcpServer, Timeouts};
pub use udp::UdpServer;
