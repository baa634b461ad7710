//! The firmware's millisecond clock: SysTick interrupts count
//! milliseconds, [`Clock::now`] widens the count to 64 bits. The tick also
//! wakes the CPU from `wfi` once a millisecond, so timers run while idle.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;

/// The SysTick reload for a 1 ms tick from the 25 MHz core clock of the
/// MPS2 FPGA images (QEMU's mps2-an386 runs SysTick at that rate too).
const SYSTICK_RELOAD_1MS: u32 = 25_000 - 1;

/// Milliseconds since start, wrapping every 49.7 days.
static TICKS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// Milliseconds since [`Clock::start`], as a 64-bit count that never wraps.
pub struct Clock {
    last: u32,
    high: u64,
}

impl Clock {
    /// Starts SysTick at 1 kHz (taking it over for good).
    pub fn start(mut syst: SYST) -> Self {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(SYSTICK_RELOAD_1MS);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        Clock { last: 0, high: 0 }
    }

    /// Milliseconds since start. Call it at least every 49 days (the main
    /// loop does, every millisecond at least).
    pub fn now(&mut self) -> u64 {
        let ticks = TICKS.load(Ordering::Relaxed);
        if ticks < self.last {
            self.high += 1 << 32;
        }
        self.last = ticks;
        self.high | u64::from(ticks)
    }
}
