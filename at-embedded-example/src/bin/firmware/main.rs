//! `at-embedded-firmware`: the AT calculator server on a Cortex-M4, over
//! UART0 of Arm's MPS2 AN386 board, which QEMU emulates
//! (`qemu-system-arm -machine mps2-an386`).
//!
//! ```text
//! cargo build -p at-embedded-example --target thumbv7em-none-eabihf --profile firmware
//! qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none \
//!     -serial tcp:127.0.0.1:5555,server=on,wait=on \
//!     -kernel target/thumbv7em-none-eabihf/firmware/at-embedded-firmware
//! at-host call --server 127.0.0.1:5555 add 10 20
//! ```
//!
//! Everything but the `board` module is board-independent: the server is
//! at-embedded-example's
//! [`StreamServer`](at_embedded_example::StreamServer), answering with
//! at-core's calculator (and `count`, see `functions`). Its buffers live in `.bss` (see docs/EMBEDDED.md for the
//! measured budget). With the `defmt` feature the firmware logs through
//! semihosting (run QEMU with `-semihosting-config enable=on,target=native`
//! and decode with `defmt-print -e <elf>`).
//!
//! With `--features net` it serves the network too, from the same loop: see
//! the `net` module (DHCP, TCP and UDP on port 16724 through the LAN9118).
//! With `--features mqtt` it connects out to an MQTT broker and serves
//! through it (the `mqtt` module); `--features net,mqtt` does both.
//!
//! Built for a host, this binary only says what it is for.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod board;
#[cfg(all(target_os = "none", any(feature = "net", feature = "mqtt")))]
mod clock;
#[cfg(target_os = "none")]
mod functions;
#[cfg(all(target_os = "none", any(feature = "net", feature = "mqtt")))]
mod lan9118;
#[cfg(all(target_os = "none", feature = "mqtt"))]
mod mqtt;
#[cfg(all(target_os = "none", any(feature = "net", feature = "mqtt")))]
mod net;

#[cfg(all(target_os = "none", not(any(feature = "net", feature = "mqtt"))))]
mod device {
    use at_core::HEADER_LEN;
    use at_embedded_example::StreamServer;
    use cortex_m_rt::entry;
    #[cfg(feature = "defmt")]
    use defmt_semihosting as _;
    use panic_halt as _;

    use crate::board::{BAUDDIV_115200, UART0_BASE, Uart};

    /// The largest request body: 496 bytes (a calculator request is ~50).
    const MAX_BODY: usize = 496;
    /// The receive buffer: one whole frame.
    const RX: usize = HEADER_LEN + MAX_BODY;
    /// The reply buffer: any calculator reply or error fits in 128 bytes;
    /// `rpc.info` with its `ext` takes 209.
    const TX: usize = 224;

    #[entry]
    fn main() -> ! {
        // SAFETY: UART0 of the MPS2 board, used by nothing else.
        let mut uart = unsafe { Uart::new(UART0_BASE, BAUDDIV_115200) };
        // In `.bss`, so `size` shows the buffers; taken once, so never None.
        let Some(server) = cortex_m::singleton!(: StreamServer<RX, TX> = StreamServer::new().with_name(crate::functions::NAME))
        else {
            loop {
                cortex_m::asm::wfi();
            }
        };
        #[cfg(feature = "defmt")]
        defmt::info!("AT calculator on UART0: bodies up to {} bytes", MAX_BODY);
        loop {
            // Returns only if the link fails or closes, which this UART
            // never does; serve on regardless.
            let _stopped = server.run(&crate::functions::COUNTED, &mut uart);
        }
    }
}

#[cfg(all(target_os = "none", any(feature = "net", feature = "mqtt")))]
mod device_net {
    use cortex_m_rt::entry;
    #[cfg(feature = "defmt")]
    use defmt_semihosting as _;
    use panic_halt as _;

    use crate::board::{BAUDDIV_115200, UART0_BASE, Uart};

    #[entry]
    fn main() -> ! {
        // SAFETY: UART0 of the MPS2 board, used by nothing else.
        let uart = unsafe { Uart::new(UART0_BASE, BAUDDIV_115200) };
        let Some(core) = cortex_m::Peripherals::take() else {
            loop {
                cortex_m::asm::wfi();
            }
        };
        #[cfg(not(feature = "mqtt"))]
        let run = crate::net::run;
        #[cfg(feature = "mqtt")]
        let run = crate::mqtt::run;
        run(uart, core.SYST, core.NVIC)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "at-embedded-firmware runs on a Cortex-M4: build it with \
         `cargo build -p at-embedded-example --target thumbv7em-none-eabihf --profile firmware` \
         and run it under qemu-system-arm -machine mps2-an386 (see docs/EMBEDDED.md)"
    );
    std::process::exit(2);
}
