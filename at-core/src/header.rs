//! The 16-byte frame header: a plain [`Header`] and its big-endian wire form.
//!
//! ```text
//! offset  size  field   meaning
//!      0     2  magic   always 0x4154 ("AT")
//!      2     2  flags   REQUEST 0x0001 | RESPONSE 0x0002 | ERROR 0x0004
//!                       | NOTIFY 0x0010 (one type bit), AUTH 0x0008
//!      4     4  seq     chosen by the requester, echoed in the reply
//!      8     4  length  body bytes after the header
//!     12     4  crc     CRC-32/ISO-HDLC of the body
//! ```
//! All fields are unsigned big-endian integers.

use core::fmt;

/// Size of the header on the wire, in bytes.
pub const HEADER_LEN: usize = 16;

/// The magic number that starts every frame: the ASCII bytes `A`, `T`.
pub const MAGIC: u16 = 0x4154;

/// Flag bit of a request (a call from a client).
pub const FLAG_REQUEST: u16 = 0x0001;
/// Flag bit of a successful reply.
pub const FLAG_RESPONSE: u16 = 0x0002;
/// Flag bit of a failed reply.
pub const FLAG_ERROR: u16 = 0x0004;
/// Flag: the frame is authenticated (contract section 9); not a type bit.
pub const FLAG_AUTH: u16 = 0x0008;
/// Flag bit of a one-way frame: a call that gets no reply, or an event
/// (contract section 10).
pub const FLAG_NOTIFY: u16 = 0x0010;
/// The four message-type bits; all other bits but [`FLAG_AUTH`] are
/// reserved and ignored.
pub const KIND_MASK: u16 = FLAG_REQUEST | FLAG_RESPONSE | FLAG_ERROR | FLAG_NOTIFY;

/// The type of a frame: exactly one of the four type bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A call from a client (flag `0x0001`).
    Request,
    /// A successful reply (flag `0x0002`).
    Response,
    /// A failed reply (flag `0x0004`); the body says why.
    Error,
    /// A one-way frame (flag `0x0010`): a call nobody answers (its body
    /// has `func`) or an event (`topic`), contract section 10.
    Notify,
}

impl Kind {
    /// The flag bit of this kind.
    pub const fn flag(self) -> u16 {
        match self {
            Kind::Request => FLAG_REQUEST,
            Kind::Response => FLAG_RESPONSE,
            Kind::Error => FLAG_ERROR,
            Kind::Notify => FLAG_NOTIFY,
        }
    }

    /// Reads the kind from a flags field, ignoring reserved bits.
    pub const fn from_flags(flags: u16) -> Result<Kind, HeaderError> {
        match flags & KIND_MASK {
            FLAG_REQUEST => Ok(Kind::Request),
            FLAG_RESPONSE => Ok(Kind::Response),
            FLAG_ERROR => Ok(Kind::Error),
            FLAG_NOTIFY => Ok(Kind::Notify),
            0 => Err(HeaderError::NoKind { flags }),
            _ => Err(HeaderError::ManyKinds { flags }),
        }
    }

    /// True for the two reply kinds.
    pub const fn is_reply(self) -> bool {
        matches!(self, Kind::Response | Kind::Error)
    }
}

/// Each way a header can be wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The first two bytes are not `0x4154`: the peer does not speak AT, or
    /// the byte stream is out of step.
    BadMagic {
        /// The 16-bit value found instead.
        found: u16,
    },
    /// None of the three type bits is set.
    NoKind {
        /// The whole flags field.
        flags: u16,
    },
    /// More than one of the three type bits is set.
    ManyKinds {
        /// The whole flags field.
        flags: u16,
    },
    /// `length` is over the receiver's limit.
    TooLarge {
        /// The body length the header announced.
        length: u32,
        /// The receiver's limit.
        limit: u32,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HeaderError::BadMagic { found } => {
                write!(f, "bad magic 0x{found:04x} (expected 0x{MAGIC:04x})")
            }
            HeaderError::NoKind { flags } => write!(f, "no type bit in flags 0x{flags:04x}"),
            HeaderError::ManyKinds { flags } => {
                write!(f, "more than one type bit in flags 0x{flags:04x}")
            }
            HeaderError::TooLarge { length, limit } => {
                write!(f, "body length {length} is over the limit of {limit}")
            }
        }
    }
}

impl core::error::Error for HeaderError {}

/// A frame header, field by field, in host byte order.
///
/// The layout mirrors the C `at_header_t` (`#[repr(C)]`, 16 bytes, no
/// padding), but the wire form is always produced by [`Header::to_bytes`],
/// which writes each field big-endian.
///
/// ```
/// use at_core::{Header, Kind};
/// let body = br#"{"func": "add", "args": [10, 20]}"#;
/// let header = Header::new(Kind::Request, 1, body);
/// assert_eq!(header.length, 33);
/// assert_eq!(header.crc, 0x0BBC_D047);
/// let bytes = header.to_bytes();
/// assert_eq!(&bytes[..4], &[0x41, 0x54, 0x00, 0x01]);
/// assert_eq!(Header::from_bytes(&bytes), header);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Always [`MAGIC`] in a valid frame.
    pub magic: u16,
    /// Message type bits and reserved bits.
    pub flags: u16,
    /// Sequence number, echoed in the reply.
    pub seq: u32,
    /// Number of body bytes after the header.
    pub length: u32,
    /// CRC-32/ISO-HDLC of the body.
    pub crc: u32,
}

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_LEN);

impl Header {
    /// The header of a frame of `kind` with this `seq` around `body`:
    /// magic set, reserved bits clear, `length` and `crc` computed.
    ///
    /// A body longer than `u32::MAX` cannot be framed; its length saturates,
    /// which no receiver accepts.
    pub fn new(kind: Kind, seq: u32, body: &[u8]) -> Header {
        Header {
            magic: MAGIC,
            flags: kind.flag(),
            seq,
            length: u32::try_from(body.len()).unwrap_or(u32::MAX),
            crc: crate::crc::checksum(body),
        }
    }

    /// The big-endian wire form.
    pub const fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let m = self.magic.to_be_bytes();
        let f = self.flags.to_be_bytes();
        let s = self.seq.to_be_bytes();
        let l = self.length.to_be_bytes();
        let c = self.crc.to_be_bytes();
        [
            m[0], m[1], f[0], f[1], s[0], s[1], s[2], s[3], l[0], l[1], l[2], l[3], c[0], c[1],
            c[2], c[3],
        ]
    }

    /// Reads the fields from the wire form without checking them.
    pub const fn from_bytes(bytes: &[u8; HEADER_LEN]) -> Header {
        Header {
            magic: u16::from_be_bytes([bytes[0], bytes[1]]),
            flags: u16::from_be_bytes([bytes[2], bytes[3]]),
            seq: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            length: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            crc: u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
        }
    }

    /// Reads and checks a header: magic, exactly one type bit, and `length`
    /// at most `max_body`. Checks run in that order.
    pub const fn parse(bytes: &[u8; HEADER_LEN], max_body: u32) -> Result<Header, HeaderError> {
        let header = Header::from_bytes(bytes);
        match header.check(max_body) {
            Ok(_) => Ok(header),
            Err(e) => Err(e),
        }
    }

    /// Checks magic, type bits and length (in that order) and returns the kind.
    pub const fn check(&self, max_body: u32) -> Result<Kind, HeaderError> {
        if self.magic != MAGIC {
            return Err(HeaderError::BadMagic { found: self.magic });
        }
        let kind = match Kind::from_flags(self.flags) {
            Ok(kind) => kind,
            Err(e) => return Err(e),
        };
        if self.length > max_body {
            return Err(HeaderError::TooLarge {
                length: self.length,
                limit: max_body,
            });
        }
        Ok(kind)
    }

    /// The message kind from the flags.
    pub const fn kind(&self) -> Result<Kind, HeaderError> {
        Kind::from_flags(self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_vector_header() {
        let h = Header {
            magic: MAGIC,
            flags: FLAG_REQUEST,
            seq: 1,
            length: 33,
            crc: 0x0bbc_d047,
        };
        assert_eq!(
            h.to_bytes(),
            [
                0x41, 0x54, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x21, 0x0b, 0xbc,
                0xd0, 0x47
            ]
        );
    }

    #[test]
    fn each_header_error() {
        let good = Header::new(Kind::Request, 7, b"{}");
        assert_eq!(good.check(100), Ok(Kind::Request));
        let bad_magic = Header {
            magic: 0x5441,
            ..good
        };
        assert_eq!(
            bad_magic.check(100),
            Err(HeaderError::BadMagic { found: 0x5441 })
        );
        let none = Header {
            flags: 0x0100,
            ..good
        };
        assert_eq!(none.check(100), Err(HeaderError::NoKind { flags: 0x0100 }));
        let many = Header {
            flags: 0x0003,
            ..good
        };
        assert_eq!(many.check(100), Err(HeaderError::ManyKinds { flags: 3 }));
        assert_eq!(
            good.check(1),
            Err(HeaderError::TooLarge {
                length: 2,
                limit: 1
            })
        );
    }

    #[test]
    fn reserved_bits_are_ignored() {
        let h = Header {
            flags: 0x8002,
            ..Header::new(Kind::Response, 1, b"")
        };
        assert_eq!(h.check(0), Ok(Kind::Response));
    }

    #[test]
    fn magic_is_checked_before_length_and_kind() {
        let h = Header {
            magic: 0,
            flags: 0,
            seq: 0,
            length: u32::MAX,
            crc: 0,
        };
        assert!(matches!(h.check(10), Err(HeaderError::BadMagic { .. })));
    }
}
