//! A limit on protocol warnings: a peer sending garbage as fast as it can
//! must not turn into a log written as fast as the disk allows.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Protocol warnings logged per second at most; the rest are counted and
/// reported in one line when the next second starts.
pub(crate) const PER_SECOND: u64 = 20;

pub(crate) struct Limiter {
    second: AtomicU64,
    in_second: AtomicU64,
    suppressed: AtomicU64,
}

pub(crate) static PROTOCOL: Limiter = Limiter {
    second: AtomicU64::new(0),
    in_second: AtomicU64::new(0),
    suppressed: AtomicU64::new(0),
};

impl Limiter {
    /// True when one more warning may be logged now.
    pub(crate) fn allow(&self) -> bool {
        static START: OnceLock<Instant> = OnceLock::new();
        let now = START.get_or_init(Instant::now).elapsed().as_secs() + 1;
        let seen = self.second.load(Ordering::Relaxed);
        if seen != now
            && self
                .second
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.in_second.store(0, Ordering::Relaxed);
            let dropped = self.suppressed.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                log::warn!(
                    "{dropped} more protocol warnings were not logged (over {PER_SECOND} a second)"
                );
            }
        }
        if self.in_second.fetch_add(1, Ordering::Relaxed) < PER_SECOND {
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// `log::warn!` for protocol errors, rate-limited by [`PROTOCOL`].
macro_rules! protocol_warn {
    ($($arg:tt)*) => {
        if log::log_enabled!(log::Level::Warn) && $crate::server::log_limit::PROTOCOL.allow() {
            log::warn!($($arg)*);
        }
    };
}
pub(crate) use protocol_warn;
