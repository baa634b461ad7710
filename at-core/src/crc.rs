//! CRC-32/ISO-HDLC (the CRC of zlib, Ethernet and PNG) over frame bodies.
//!
//! By default a 1 KiB table is used (about 400 MB/s on a desktop core, small
//! enough for firmware); the `fast-crc` feature switches to crc32fast (16 KiB
//! of slice-by-16 tables, about 4 GB/s; carry-less multiplication on long
//! inputs only in a build whose target features include it, as crc32fast
//! is used without `std` and so without detection at run time; on a
//! 33-byte body 91 instructions against 158 for the `crc` crate's
//! slice-by-16), and `small-crc` to none
//! at all (bit by bit, about 140 MB/s on a desktop; for the smallest
//! firmware). `fast-crc` wins when both are on.

#[cfg(not(feature = "fast-crc"))]
use crc::{CRC_32_ISO_HDLC, Crc};

#[cfg(not(any(feature = "fast-crc", feature = "small-crc")))]
type Implementation = crc::Table<1>;
#[cfg(all(feature = "small-crc", not(feature = "fast-crc")))]
type Implementation = crc::NoTable;
#[cfg(not(feature = "fast-crc"))]
static CRC32: Crc<u32, Implementation> = Crc::<u32, Implementation>::new(&CRC_32_ISO_HDLC);

/// The CRC-32/ISO-HDLC of `bytes`: equal to Python's `zlib.crc32(bytes)`.
///
/// ```
/// assert_eq!(at_core::checksum(b"123456789"), 0xCBF4_3926);
/// assert_eq!(at_core::checksum(b""), 0);
/// ```
pub fn checksum(bytes: &[u8]) -> u32 {
    #[cfg(feature = "fast-crc")]
    return crc32fast::hash(bytes);
    #[cfg(not(feature = "fast-crc"))]
    CRC32.checksum(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_values() {
        assert_eq!(super::checksum(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::checksum(b""), 0);
        assert_eq!(
            super::checksum(br#"{"func": "add", "args": [10, 20]}"#),
            0x0BBC_D047
        );
    }
}
