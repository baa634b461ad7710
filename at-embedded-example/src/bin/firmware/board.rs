//! The one board-specific module, for Arm's MPS2 AN386 (Cortex-M4), as
//! QEMU's `mps2-an386` emulates it:
//! - [`Uart`], a polled driver for the CMSDK APB UART (UART0 at
//!   `0x4000_4000`), as [`embedded_io`] `Read` + `ReadReady` + `Write`;
//! - `__INTERRUPTS`, the device part of the vector table, sized for the
//!   board's 32 interrupt lines (cortex-m-rt's generic table has 240
//!   entries: 832 bytes of flash saved). Only the networked build enables
//!   one: the LAN9118's (line 13), to wake the CPU from `wfi`.
//!
//! A port to another board replaces this file (a HAL's UART implements the
//! same embedded-io traits; a PAC provides `__INTERRUPTS`).
//!
//! UART registers
//! (offsets from the base, 32 bits each):
//!
//! | offset | name | bits used |
//! |---|---|---|
//! | 0x00 | DATA | 7:0 the byte received / to send |
//! | 0x04 | STATE | 0 TX buffer full, 1 RX buffer full, 2 TX overrun, 3 RX overrun (write 1 to clear) |
//! | 0x08 | CTRL | 0 TX enable, 1 RX enable |
//! | 0x10 | BAUDDIV | clock divider, at least 16 |
//!
//! Each direction buffers one byte; QEMU holds further input back until the
//! byte is read, so nothing is lost however slowly the firmware polls. On
//! hardware, an overrun (a byte lost) is cleared and the protocol's decoder
//! resynchronises.

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};

unsafe extern "C" {
    /// cortex-m-rt's default interrupt handler (loops forever).
    fn DefaultHandler();
}

/// The interrupt lines of the AN386 image (QEMU's `num-irq`).
const INTERRUPTS: usize = 32;

/// The device-specific part of the vector table (cortex-m-rt's `device`
/// feature expects the board to provide it).
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
static __INTERRUPTS: [unsafe extern "C" fn(); INTERRUPTS] = {
    #[allow(unused_mut)]
    let mut table: [unsafe extern "C" fn(); INTERRUPTS] = [DefaultHandler; INTERRUPTS];
    #[cfg(any(feature = "net", feature = "mqtt"))]
    {
        table[crate::lan9118::LAN9118_IRQ] = crate::lan9118::lan9118_interrupt;
    }
    table
};

/// UART0's base address on MPS2 boards (AN385, AN386, AN500).
pub const UART0_BASE: usize = 0x4000_4000;

/// The divider for 115200 baud from the 25 MHz peripheral clock of the
/// MPS2 FPGA images (QEMU ignores it, but wants it at least 16).
pub const BAUDDIV_115200: u32 = 25_000_000 / 115_200;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;

const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const STATE_RX_OVERRUN: u32 = 1 << 3;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;

/// A CMSDK APB UART, polled.
pub struct Uart {
    base: usize,
}

impl Uart {
    /// Takes the UART at `base` and enables both directions.
    ///
    /// # Safety
    /// `base` must be the address of a CMSDK APB UART, and nothing else may
    /// use that UART while this value lives.
    pub unsafe fn new(base: usize, bauddiv: u32) -> Self {
        let uart = Uart { base };
        uart.write_reg(BAUDDIV, bauddiv.max(16));
        uart.write_reg(CTRL, CTRL_TX_EN | CTRL_RX_EN);
        uart
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `new`'s contract: `base + offset` is a register of a UART
        // this value owns.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write_reg(&self, offset: usize, value: u32) {
        // SAFETY: as in `read_reg`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    /// Whether a received byte is waiting.
    pub fn rx_full(&self) -> bool {
        let state = self.read_reg(STATE);
        if state & STATE_RX_OVERRUN != 0 {
            // A byte was lost; the protocol resynchronises. Clear the flag.
            self.write_reg(STATE, STATE_RX_OVERRUN);
        }
        state & STATE_RX_FULL != 0
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = Infallible;
}

impl embedded_io::Read for Uart {
    /// Waits for a byte, then takes every byte already waiting.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        while !self.rx_full() {
            core::hint::spin_loop();
        }
        let mut n = 0;
        while n < buf.len() && self.rx_full() {
            buf[n] = self.read_reg(DATA) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.rx_full())
    }
}

impl embedded_io::Write for Uart {
    /// Sends every byte, waiting for room before each.
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &byte in buf {
            while self.read_reg(STATE) & STATE_TX_FULL != 0 {
                core::hint::spin_loop();
            }
            self.write_reg(DATA, u32::from(byte));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        while self.read_reg(STATE) & STATE_TX_FULL != 0 {
            core::hint::spin_loop();
        }
        Ok(())
    }
}

/// The FPGA I/O block of MPS2 boards (AN385, AN386, AN500): `LED0` at
/// offset 0 holds one bit per user LED.
const FPGAIO_LED0: usize = 0x4002_8000;

/// Switches user LED `n` (0 or 1) on or off.
pub fn set_led(n: u32, on: bool) {
    let bit = 1 << (n & 1);
    let leds = led_register();
    let value = if on { leds | bit } else { leds & !bit };
    // SAFETY: the FPGAIO LED register of the MPS2 board, a plain read/write
    // register that nothing else in this firmware uses.
    unsafe { core::ptr::write_volatile(FPGAIO_LED0 as *mut u32, value) }
}

/// Whether user LED `n` is on, as the board reads it back.
pub fn led(n: u32) -> bool {
    led_register() & (1 << (n & 1)) != 0
}

fn led_register() -> u32 {
    // SAFETY: as in `set_led`.
    unsafe { core::ptr::read_volatile(FPGAIO_LED0 as *const u32) }
}
