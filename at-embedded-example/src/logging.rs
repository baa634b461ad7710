//! Logging that costs nothing unless asked for: `defmt` on a device (feature
//! `defmt`, `target_os = "none"` only), the `log` facade on a desktop
//! (feature `log`), neither by default.
//!
//! Messages use only `{}` with integers and `&str`, which both defmt and
//! `core::fmt` format.

macro_rules! emit {
    ($level:ident, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(all(feature = "defmt", target_os = "none"))]
        defmt::$level!($fmt $(, $arg)*);
        #[cfg(feature = "log")]
        ::log::$level!($fmt $(, $arg)*);
        #[cfg(not(any(all(feature = "defmt", target_os = "none"), feature = "log")))]
        {
            $(let _ = &$arg;)*
        }
    }};
}

macro_rules! log_debug {
    ($($t:tt)*) => { $crate::logging::emit!(debug, $($t)*) };
}

macro_rules! log_info {
    ($($t:tt)*) => { $crate::logging::emit!(info, $($t)*) };
}

macro_rules! log_warn {
    ($($t:tt)*) => { $crate::logging::emit!(warn, $($t)*) };
}

pub(crate) use {emit, log_debug, log_info, log_warn};
