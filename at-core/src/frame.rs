//! Whole frames: a checked [`Frame`] view over bytes, the encoder, and the
//! errors a received frame can have.

use core::fmt;

use crate::error::ErrorCode;
use crate::header::{HEADER_LEN, Header, HeaderError, Kind};

/// A received frame whose header and CRC have been checked: a header and a
/// body borrowed from the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The checked header.
    pub header: Header,
    /// The kind read from the header's flags.
    pub kind: Kind,
    /// Exactly `header.length` body bytes whose CRC matches `header.crc`.
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The sequence number.
    pub fn seq(&self) -> u32 {
        self.header.seq
    }

    /// Checks one whole frame held in `bytes`, as one UDP datagram carries
    /// it: the size must be exactly 16 + `length`.
    ///
    /// ```
    /// use at_core::{Frame, FrameError, Kind};
    /// let mut buf = [0u8; 64];
    /// let n = at_core::encode_frame(Kind::Request, 9, b"{}", &mut buf).unwrap();
    /// let frame = Frame::parse(&buf[..n], 1024).unwrap();
    /// assert_eq!((frame.seq(), frame.body), (9, &b"{}"[..]));
    /// assert!(matches!(
    ///     Frame::parse(&buf[..n - 1], 1024),
    ///     Err(FrameError::SizeMismatch { .. })
    /// ));
    /// ```
    pub fn parse(bytes: &'a [u8], max_body: u32) -> Result<Frame<'a>, FrameError> {
        let Some((head, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(FrameError::SizeMismatch {
                expected: HEADER_LEN,
                actual: bytes.len(),
            });
        };
        let header = Header::from_bytes(head);
        if header.magic != crate::MAGIC {
            return Err(FrameError::Header {
                seq: 0,
                error: HeaderError::BadMagic {
                    found: header.magic,
                },
            });
        }
        // The size check needs only the length field, and says nothing of
        // the content: a truncated datagram is dropped, never answered.
        let expected = HEADER_LEN.saturating_add(header.length as usize);
        if expected != bytes.len() {
            return Err(FrameError::SizeMismatch {
                expected,
                actual: bytes.len(),
            });
        }
        Frame::check(header, body, max_body)
    }

    /// Checks a header (length limit, kind) and a body of exactly
    /// `header.length` bytes against the header's CRC.
    pub(crate) fn check(
        header: Header,
        body: &'a [u8],
        max_body: u32,
    ) -> Result<Frame<'a>, FrameError> {
        let seq = header.seq;
        let kind = header
            .check(max_body)
            .map_err(|error| FrameError::Header { seq, error })?;
        let computed = crate::checksum(body);
        if computed != header.crc {
            return Err(FrameError::ChecksumMismatch {
                seq,
                expected: header.crc,
                computed,
            });
        }
        Ok(Frame { header, kind, body })
    }
}

/// What is wrong with a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The header is wrong (see [`HeaderError`]).
    Header {
        /// The header's seq, or 0 when the magic was wrong (the header could
        /// not be read).
        seq: u32,
        /// What is wrong.
        error: HeaderError,
    },
    /// The body's CRC-32 differs from the header's.
    ChecksumMismatch {
        /// The header's seq.
        seq: u32,
        /// The CRC the header announced.
        expected: u32,
        /// The CRC of the body received.
        computed: u32,
    },
    /// A datagram whose size is not 16 + `length` (datagrams only).
    SizeMismatch {
        /// 16 + the header's `length` (or 16 when the datagram is shorter than a header).
        expected: usize,
        /// The datagram's size.
        actual: usize,
    },
}

impl FrameError {
    /// The seq an error reply should carry: the header's, or 0 where the
    /// header could not be read.
    pub fn seq(&self) -> u32 {
        match *self {
            FrameError::Header { seq, .. } | FrameError::ChecksumMismatch { seq, .. } => seq,
            FrameError::SizeMismatch { .. } => 0,
        }
    }

    /// The error code a reply to this frame carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::Header {
                error: HeaderError::TooLarge { .. },
                ..
            } => ErrorCode::FrameTooLarge,
            FrameError::Header { .. } | FrameError::SizeMismatch { .. } => ErrorCode::BadFrame,
            FrameError::ChecksumMismatch { .. } => ErrorCode::ChecksumMismatch,
        }
    }

    /// True when a byte stream cannot stay in step after this error (wrong
    /// magic, or a length over the limit whose body is never read): a TCP
    /// server replies and closes; a serial link resynchronises.
    pub fn loses_sync(&self) -> bool {
        matches!(
            self,
            FrameError::Header {
                error: HeaderError::BadMagic { .. } | HeaderError::TooLarge { .. },
                ..
            }
        )
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::Header { seq, error } => write!(f, "{error} (seq {seq})"),
            FrameError::ChecksumMismatch {
                seq,
                expected,
                computed,
            } => write!(
                f,
                "checksum mismatch (seq {seq}): header says 0x{expected:08x}, body has 0x{computed:08x}"
            ),
            FrameError::SizeMismatch { expected, actual } => write!(
                f,
                "datagram of {actual} bytes where the header announces {expected}"
            ),
        }
    }
}

impl core::error::Error for FrameError {}

/// The output buffer is too small for what was to be written into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall;

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output buffer too small")
    }
}

impl core::error::Error for BufferTooSmall {}

/// Writes a frame (header + `body`) into `out` and returns its length.
///
/// ```
/// use at_core::Kind;
/// let body = br#"{"func": "add", "args": [10, 20]}"#;
/// let mut out = [0u8; 64];
/// let n = at_core::encode_frame(Kind::Request, 1, body, &mut out).unwrap();
/// assert_eq!(n, 49);
/// assert_eq!(&out[..16], &[0x41, 0x54, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0x21, 0x0b, 0xbc, 0xd0, 0x47]);
/// assert!(at_core::encode_frame(Kind::Request, 1, body, &mut out[..48]).is_err());
/// ```
pub fn encode_frame(
    kind: Kind,
    seq: u32,
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let total = HEADER_LEN.checked_add(body.len()).ok_or(BufferTooSmall)?;
    if u32::try_from(body.len()).is_err() {
        return Err(BufferTooSmall);
    }
    let dest = out.get_mut(..total).ok_or(BufferTooSmall)?;
    dest[HEADER_LEN..].copy_from_slice(body);
    dest[..HEADER_LEN].copy_from_slice(&Header::new(kind, seq, body).to_bytes());
    Ok(total)
}

/// Writes a frame whose body `write_body` produces in place, straight into
/// `out` after the header, so nothing is copied twice. `write_body` gets the
/// space after the header and returns how many bytes it wrote.
///
/// ```
/// use at_core::Kind;
/// let mut out = [0u8; 64];
/// let n = at_core::encode_frame_with(Kind::Response, 3, &mut out, |body| {
///     body.get_mut(..2).ok_or(at_core::BufferTooSmall)?.copy_from_slice(b"{}");
///     Ok(2)
/// })
/// .unwrap();
/// assert_eq!(&out[16..n], b"{}");
/// ```
pub fn encode_frame_with(
    kind: Kind,
    seq: u32,
    out: &mut [u8],
    write_body: impl FnOnce(&mut [u8]) -> Result<usize, BufferTooSmall>,
) -> Result<usize, BufferTooSmall> {
    let body_len = write_body(out.get_mut(HEADER_LEN..).ok_or(BufferTooSmall)?)?;
    finish_frame(kind, seq, out, body_len)
}

/// Puts the header in front of the `body_len` bytes of body already in
/// `out` after it. Not generic and never inlined: every caller of
/// [`encode_frame_with`] shares this one copy (a device counts bytes).
#[inline(never)]
fn finish_frame(
    kind: Kind,
    seq: u32,
    out: &mut [u8],
    body_len: usize,
) -> Result<usize, BufferTooSmall> {
    let total = HEADER_LEN.checked_add(body_len).ok_or(BufferTooSmall)?;
    let (head, body) = out
        .get_mut(..total)
        .ok_or(BufferTooSmall)?
        .split_at_mut(HEADER_LEN);
    let header = Header::new(kind, seq, body);
    if header.length as usize != body_len {
        return Err(BufferTooSmall);
    }
    head.copy_from_slice(&header.to_bytes());
    Ok(total)
}
