//! A polled driver for the SMSC LAN9118 Ethernet controller (MPS2 boards;
//! QEMU's `-nic ...,model=lan9118`), as a [`smoltcp::phy::Device`].
//!
//! # What it does
//! - Reset, MAC address (read from the chip: QEMU's is 52:54:00:12:34:56),
//!   receiver and transmitter on, full duplex, frames for this address and
//!   broadcast only (no promiscuous mode, no multicast: the firmware speaks
//!   IPv4 only; set `MAC_CR_MCPAS` or the hash filter for IPv6).
//! - Receive: one frame at a time from the RX status and data FIFOs into a
//!   1,536-byte buffer; frames with the error bit, or too short or too long
//!   for the buffer, are read out and dropped, and counted.
//! - Transmit: one frame at a time into the TX data FIFO, after checking
//!   that it has room; TX status words are popped (and errors counted) so
//!   the status FIFO never fills.
//! - The RX interrupt (IRQ 13) is enabled only to wake the CPU from `wfi`:
//!   its handler acknowledges it, and the main loop does the work.
//! - Link state: [`Lan9118::link_up`] reads the PHY's basic status.
//!
//! # What it does not
//! - No DMA, no checksum offload, no flow control, no multicast filter, no
//!   power management, no link-change interrupt (the firmware checks the
//!   link when it starts).
//! - A full RX FIFO: the chip drops further frames and counts them in
//!   `RX_DROP` ([`Counters::rx_dropped`]); QEMU's model drops them without
//!   counting. TCP retransmits; UDP clients retransmit.
//! - QEMU's quirks (../shared/STACK-NOTES.md): the RX fast-forward does not
//!   work there, so a bad frame's words are read out, never skipped.

use core::ptr::{read_volatile, write_volatile};

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// The LAN9118's base address on MPS2 boards.
pub const LAN9118_BASE: usize = 0x4020_0000;
/// The LAN9118's interrupt line on MPS2 boards.
pub const LAN9118_IRQ: usize = 13;

/// The largest Ethernet frame handled, without FCS (1,514), rounded up.
const FRAME: usize = 1536;

// Registers (offsets from the base).
const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const TX_STATUS_FIFO: usize = 0x48;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5C;
const BYTE_TEST: usize = 0x64;
const FIFO_INT: usize = 0x68;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7C;
const TX_FIFO_INF: usize = 0x80;
const RX_DROP: usize = 0xA0;
const MAC_CSR_CMD: usize = 0xA4;
const MAC_CSR_DATA: usize = 0xA8;

const BYTE_TEST_VALUE: u32 = 0x8765_4321;
const HW_CFG_SRST: u32 = 1;
const TX_CFG_TX_ON: u32 = 1 << 1;
/// Let the TX status FIFO overrun rather than stall the transmitter.
const TX_CFG_TXSAO: u32 = 1 << 2;
/// INT_STS / INT_EN: the RX status FIFO has passed its level (a frame).
const INT_RSFL: u32 = 1 << 3;
/// IRQ_CFG: output enabled, active high, push-pull.
const IRQ_CFG_ON: u32 = (1 << 8) | (1 << 4) | 1;
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;
/// TX command A: first and last segment of a frame.
const TX_CMD_A_FIRST_LAST: u32 = (1 << 13) | (1 << 12);
/// RX and TX status: error summary.
const STATUS_ERROR: u32 = 1 << 15;

// MAC registers (through MAC_CSR_CMD / MAC_CSR_DATA).
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_MII_ACC: u32 = 6;
const MAC_MII_DATA: u32 = 7;
const MAC_CR_RXEN: u32 = 1 << 2;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_FDPX: u32 = 1 << 20;
/// The internal PHY's address, MII busy bit, and basic status's link bit.
const PHY_ADDR: u32 = 1;
const MII_BUSY: u32 = 1;
const PHY_BASIC_STATUS: u32 = 1;
const PHY_LINK_UP: u32 = 1 << 2;

/// How many register reads a wait for the chip may take.
const SPINS: u32 = 100_000;

/// Why the driver could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// BYTE_TEST did not read 0x87654321: no LAN9118 at that address.
    NotFound,
    /// The chip did not finish a reset or a MAC register access in time.
    Timeout,
}

/// What the driver has counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames received and handed to the stack.
    pub rx_frames: u32,
    /// Frames received with an error, or of a size the driver cannot take.
    pub rx_errors: u32,
    /// Frames sent.
    pub tx_frames: u32,
    /// Frames the stack gave that did not fit the TX FIFO, or whose status
    /// said error.
    pub tx_errors: u32,
}

#[derive(Clone, Copy)]
struct Regs {
    base: usize,
}

impl Regs {
    fn read(self, offset: usize) -> u32 {
        // SAFETY: `Lan9118::new`'s contract: `base` is a LAN9118 that the
        // driver owns, and `offset` is one of its registers.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write(self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    fn wait_mac(self) -> Result<(), InitError> {
        for _ in 0..SPINS {
            if self.read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0 {
                return Ok(());
            }
        }
        Err(InitError::Timeout)
    }

    fn mac_read(self, index: u32) -> Result<u32, InitError> {
        self.wait_mac()?;
        self.write(MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | index);
        self.wait_mac()?;
        Ok(self.read(MAC_CSR_DATA))
    }

    fn mac_write(self, index: u32, value: u32) -> Result<(), InitError> {
        self.wait_mac()?;
        self.write(MAC_CSR_DATA, value);
        self.write(MAC_CSR_CMD, MAC_CSR_BUSY | index);
        self.wait_mac()
    }

    /// Frames waiting in the RX status FIFO.
    fn rx_waiting(self) -> u32 {
        (self.read(RX_FIFO_INF) >> 16) & 0xFF
    }
}

/// The driver's receive and transmit buffers: all zeros when empty, so
/// a `static` of it is in `.bss` and never built on the stack.
pub struct Frames {
    rx: [u8; FRAME],
    tx: [u8; FRAME],
}

impl Frames {
    /// Zeroed buffers (a `const fn`, for a `static`).
    pub const fn new() -> Self {
        Frames {
            rx: [0; FRAME],
            tx: [0; FRAME],
        }
    }
}

/// The LAN9118, with one receive and one transmit buffer.
pub struct Lan9118 {
    regs: Regs,
    mac: [u8; 6],
    frames: &'static mut Frames,
    counters: Counters,
}

impl Lan9118 {
    /// Resets the chip at `base` and starts it (see the module docs), with
    /// `frames` as its buffers.
    ///
    /// # Safety
    /// `base` must be the address of a LAN9118, and nothing else may use it
    /// while this value lives.
    pub unsafe fn new(base: usize, frames: &'static mut Frames) -> Result<Self, InitError> {
        let regs = Regs { base };
        if regs.read(BYTE_TEST) != BYTE_TEST_VALUE {
            return Err(InitError::NotFound);
        }
        regs.write(HW_CFG, HW_CFG_SRST);
        if !(0..SPINS).any(|_| regs.read(HW_CFG) & HW_CFG_SRST == 0) {
            return Err(InitError::Timeout);
        }
        let low = regs.mac_read(MAC_ADDRL)?.to_le_bytes();
        let high = regs.mac_read(MAC_ADDRH)?.to_le_bytes();
        let mac = [low[0], low[1], low[2], low[3], high[0], high[1]];
        regs.mac_write(MAC_CR, MAC_CR_RXEN | MAC_CR_TXEN | MAC_CR_FDPX)?;
        regs.write(TX_CFG, TX_CFG_TX_ON | TX_CFG_TXSAO);
        // An interrupt for every frame received (RX status level 0).
        regs.write(FIFO_INT, regs.read(FIFO_INT) & !0xFF);
        regs.write(INT_STS, u32::MAX);
        regs.write(INT_EN, INT_RSFL);
        regs.write(IRQ_CFG, IRQ_CFG_ON);
        Ok(Lan9118 {
            regs,
            mac,
            frames,
            counters: Counters::default(),
        })
    }

    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// What the driver has counted (for a board's diagnostics; this
    /// firmware does not report them yet).
    #[allow(dead_code)]
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Frames the chip dropped for lack of room in its RX FIFO (the
    /// `RX_DROP` counter; reading it clears it on hardware).
    #[allow(dead_code)]
    pub fn rx_dropped(&self) -> u32 {
        self.regs.read(RX_DROP)
    }

    /// Whether the PHY reports a link.
    pub fn link_up(&self) -> bool {
        let regs = self.regs;
        let status = regs
            .mac_write(
                MAC_MII_ACC,
                (PHY_ADDR << 11) | (PHY_BASIC_STATUS << 6) | MII_BUSY,
            )
            .and_then(|()| {
                (0..SPINS)
                    .find(|_| matches!(regs.mac_read(MAC_MII_ACC), Ok(v) if v & MII_BUSY == 0))
                    .ok_or(InitError::Timeout)?;
                regs.mac_read(MAC_MII_DATA)
            });
        matches!(status, Ok(s) if s & PHY_LINK_UP != 0)
    }

    /// Whether a received frame is waiting (for the idle check before
    /// `wfi`).
    pub fn rx_waiting(&self) -> bool {
        self.regs.rx_waiting() > 0
    }

    /// Reads the next good frame into the receive buffer and returns its
    /// length without FCS; drops (and counts) bad ones.
    fn receive_frame(&mut self) -> Option<usize> {
        while self.regs.rx_waiting() > 0 {
            let status = self.regs.read(RX_STATUS_FIFO);
            let length = ((status >> 16) & 0x3FFF) as usize;
            let words = length.div_ceil(4);
            let good = status & STATUS_ERROR == 0 && length > 14 + 4 && length <= FRAME;
            for i in 0..words {
                let word = self.regs.read(RX_DATA_FIFO).to_le_bytes();
                if good {
                    let at = i * 4;
                    let n = (length - at).min(4);
                    self.frames.rx[at..at + n].copy_from_slice(&word[..n]);
                }
            }
            if good {
                self.counters.rx_frames = self.counters.rx_frames.wrapping_add(1);
                return Some(length - 4);
            }
            self.counters.rx_errors = self.counters.rx_errors.wrapping_add(1);
        }
        None
    }

    /// Pops the TX status words waiting, counting errors.
    fn drain_tx_status(&mut self) {
        while (self.regs.read(TX_FIFO_INF) >> 16) & 0xFF > 0 {
            if self.regs.read(TX_STATUS_FIFO) & STATUS_ERROR != 0 {
                self.counters.tx_errors = self.counters.tx_errors.wrapping_add(1);
            }
        }
    }
}

/// Acknowledges the LAN9118's interrupt: it only wakes the CPU from `wfi`
/// (the main loop reads the frames).
pub extern "C" fn lan9118_interrupt() {
    Regs { base: LAN9118_BASE }.write(INT_STS, INT_RSFL);
}

impl phy::Device for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let length = self.receive_frame()?;
        let Lan9118 {
            regs,
            frames,
            counters,
            ..
        } = self;
        let Frames { rx, tx } = &mut **frames;
        Some((
            RxToken {
                frame: &rx[..length],
            },
            TxToken {
                regs: *regs,
                buffer: tx,
                counters,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        self.drain_tx_status();
        Some(TxToken {
            regs: self.regs,
            buffer: &mut self.frames.tx,
            counters: &mut self.counters,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(1);
        caps
    }
}

/// A frame received.
pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Room for a frame to send.
pub struct TxToken<'a> {
    regs: Regs,
    buffer: &'a mut [u8; FRAME],
    counters: &'a mut Counters,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(FRAME);
        let result = f(&mut self.buffer[..len]);
        // Free space in the TX data FIFO (bytes), with 8 for the commands.
        let free = (self.regs.read(TX_FIFO_INF) & 0xFFFF) as usize;
        if free < len + 8 {
            self.counters.tx_errors = self.counters.tx_errors.wrapping_add(1);
            return result;
        }
        let length = len as u32;
        self.regs.write(TX_DATA_FIFO, TX_CMD_A_FIRST_LAST | length);
        self.regs.write(TX_DATA_FIFO, (length << 16) | length);
        for chunk in self.buffer[..len].chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.regs.write(TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        self.counters.tx_frames = self.counters.tx_frames.wrapping_add(1);
        result
    }
}
